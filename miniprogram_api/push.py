"""`/wechat/push`: the mini-program's message push (消息推送), in WeChat's own protocol."""

from __future__ import annotations

from handlers.base import BaseHandler, endpoint
from models.policy import PUBLIC
from models.wechat_push import PushQuery, PushSettings


class WeChatPushHandler(BaseHandler):
    """Called by WeChat's servers, not by a person: the signature is the authentication, and
    accepted requests are answered in plain text (refusals keep the error envelope)."""

    access = PUBLIC
    # Subscribe-message events are a few hundred bytes; nothing WeChat pushes comes near this.
    max_body_bytes = 64 * 1024

    def _settings(self) -> PushSettings:
        return PushSettings(self.ctx.push_token, self.ctx.push_aes_key, self.ctx.wechat_appid)

    def _query(self) -> PushQuery:
        arg = self.get_query_argument
        return PushQuery(
            signature=arg("signature", ""),
            timestamp=arg("timestamp", ""),
            nonce=arg("nonce", ""),
            msg_signature=arg("msg_signature", ""),
            encrypt_type=arg("encrypt_type", ""),
        )

    def _plain(self, text: str) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(text)

    @endpoint(
        "WeChat's check of the push URL: answers `echostr` (text/plain) when `signature` over "
        "the Token, `timestamp` and `nonce` is valid",
        errors=(400, 403),
        tags=("wechat",),
    )
    async def get(self) -> None:
        echo = await self.ctx.wechat_push.echo(
            self._settings(), self._query(), self.get_query_argument("echostr", "")
        )
        self._plain(echo)

    @endpoint(
        "A signed (in safe mode encrypted) push from WeChat, JSON or XML; answers `success` "
        "(text/plain). Unsigned, stale or replayed pushes are refused",
        errors=(400, 403, 413),
        tags=("wechat",),
    )
    async def post(self) -> None:
        await self.ctx.wechat_push.receive(
            self._settings(),
            self._query(),
            self.raw_body(),
            request_id=self.request_id,
            remote_ip=self.request.remote_ip,
        )
        self._plain("success")


routes = [(r"/wechat/push", WeChatPushHandler)]

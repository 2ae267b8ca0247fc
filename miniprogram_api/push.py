"""`/wechat/push`: the mini-program's message push (消息推送), in WeChat's own protocol."""

from __future__ import annotations

from handlers.base import BaseHandler, endpoint
from handlers.query import QueryArgs, matching, one_of, query, query_args
from models.policy import PUBLIC
from models.wechat_push import PushQuery, PushSettings

# The forms WeChat's servers send (as models/wechat_push.py checks them after the signature):
# a value outside them cannot be WeChat's, and is refused (422) before any signature is computed.
# None is required: an unsigned request is still WeChat's to refuse (403 bad_signature).
_SHA1 = r"^[0-9a-f]{40}$"
_SIGNED = (
    matching("signature", "sha1 over the sorted Token, timestamp and nonce", _SHA1),
    matching(
        "timestamp",
        "Seconds since the epoch, within five minutes of the server's clock",
        r"^[0-9]{1,10}$",
    ),
    matching("nonce", "Random, used once (a replay is refused)", r"^[A-Za-z0-9_-]{1,64}$"),
)
_ECHOSTR = matching(
    "echostr", "What to answer when the signature is valid", r"^[\x21-\x7e]{1,256}$"
)
_OPENID = matching(
    "openid",
    "The user the push concerns (read from the message, never from here)",
    r"^[A-Za-z0-9_-]{1,64}$",
)
_ENCRYPT_TYPE = one_of("encrypt_type", ("aes",), "`aes` in safe mode; absent in plaintext mode")
_MSG_SIGNATURE = matching(
    "msg_signature", "Safe mode: sha1 over the sorted Token, timestamp, nonce and ciphertext", _SHA1
)


class WeChatPushHandler(BaseHandler):
    """Called by WeChat's servers, not by a person: the signature is the authentication, and
    accepted requests are answered in plain text (refusals keep the error envelope)."""

    access = PUBLIC
    # Subscribe-message events are a few hundred bytes; nothing WeChat pushes comes near this.
    max_body_bytes = 64 * 1024

    def _settings(self) -> PushSettings:
        return PushSettings(self.ctx.push_token, self.ctx.push_aes_key, self.ctx.wechat_appid)

    @staticmethod
    def _query(args: QueryArgs, *safe_mode: str) -> PushQuery:
        """The signed triple, and the safe-mode parameters named in `safe_mode`; an absent
        parameter is the empty string the service checks for."""
        given = {name: args[name] or "" for name in ("signature", "timestamp", "nonce", *safe_mode)}
        return PushQuery(**given)

    def _plain(self, text: str) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(text)

    @endpoint(
        "WeChat's check of the push URL: answers `echostr` (text/plain) when `signature` over "
        "the Token, `timestamp` and `nonce` is valid",
        errors=(400, 403),
        tags=("wechat",),
    )
    @query(*_SIGNED, _ECHOSTR)
    async def get(self) -> None:
        args = query_args(self)
        echo = await self.ctx.wechat_push.echo(
            self._settings(), self._query(args), args["echostr"] or ""
        )
        self._plain(echo)

    @endpoint(
        "A signed (in safe mode encrypted) push from WeChat, JSON or XML; answers `success` "
        "(text/plain). Unsigned, stale or replayed pushes are refused",
        errors=(400, 403, 413),
        tags=("wechat",),
    )
    @query(*_SIGNED, _OPENID, _ENCRYPT_TYPE, _MSG_SIGNATURE)
    async def post(self) -> None:
        args = query_args(self)
        await self.ctx.wechat_push.receive(
            self._settings(),
            self._query(args, "encrypt_type", "msg_signature"),
            self.raw_body(),
            request_id=self.request_id,
            remote_ip=self.request.remote_ip,
        )
        self._plain("success")


routes = [(r"/wechat/push", WeChatPushHandler)]

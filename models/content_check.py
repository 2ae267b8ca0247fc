"""Free text a mini-program user writes (a leave reason, a note) is checked with WeChat's
msgSecCheck v2 where enabled, as WeChat's platform rules ask of user-generated content."""

from __future__ import annotations

import logging

from models.audit import AuditContext
from models.errors import InvalidInput
from models.mp_accounts import MpAccountService
from models.wechat import WeChatError, WeChatPort, WeChatUnavailable

log = logging.getLogger("anbang.content_check")


class ContentCheckService:
    def __init__(self, wechat: WeChatPort, accounts: MpAccountService, enabled: bool):
        self._wechat = wechat
        self._accounts = accounts
        self.enabled = enabled

    async def check(self, ctx: AuditContext, fields: dict[str, str]) -> None:
        """Refuse text WeChat judges risky (422 naming the field). WeChat being down does not
        block a person's leave request: the text is kept and a worker reads it anyway."""
        if not self.enabled or ctx.identity.wechat_user_id is None:
            return
        openid = await self._accounts.openid(ctx.identity.wechat_user_id)
        if openid is None:
            return
        for name, text in fields.items():
            if not text.strip():
                continue
            try:
                safe = await self._wechat.text_is_safe(openid, text)
            except (WeChatError, WeChatUnavailable) as exc:
                log.warning(
                    "content check unavailable", extra={"fields": {"error": type(exc).__name__}}
                )
                return
            if not safe:
                raise InvalidInput(
                    "The text was refused by WeChat's content check.",
                    code="content_refused",
                    details=[{"field": name}],
                    message_zh="内容含有不当信息，请修改后重试。",
                )

"""Notifications: every message to a person or worker is recorded in-app; the notifier port may
also push it (WeChat subscribe message, SMS). A failed push never loses the message."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any, Protocol

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.errors import DuplicateKeyError

from models.clock import LOCAL_TZ, Clock
from models.store import CollectionSpec, Store

log = logging.getLogger("anbang.notifications")

MESSAGES = CollectionSpec(
    "messages",
    (
        IndexModel([("recipient", ASCENDING), ("created_at", DESCENDING)]),
        IndexModel(
            [("dedupe_key", ASCENDING)],
            unique=True,
            partialFilterExpression={"dedupe_key": {"$type": "string"}},
        ),
    ),
)

# What a person reads, in Chinese.
KIND_NAMES = {
    "remote_checkin": "远程签到",
    "in_person_report": "到司法所报到",
    "written_report": "提交书面汇报",
    "education": "教育学习",
    "community_service": "公益活动",
    "drug_test": "尿检",
    "medical_reexam": "病情复查",
    "mental_followup": "随访",
    "counseling": "心理辅导",
    "contact": "帮教联系",
}


class NotifierPort(Protocol):
    """Pushes a recorded message outside the app; answers whether it was delivered."""

    async def push(self, recipient: str, title: str, body: str, data: dict[str, Any]) -> bool: ...


class LocalNotifier:
    """The development and test adapter: nothing leaves the machine; the in-app copy is all."""

    def __init__(self) -> None:
        self.pushed: list[tuple[str, str]] = []

    async def push(self, recipient: str, title: str, body: str, data: dict[str, Any]) -> bool:
        self.pushed.append((recipient, title))
        return True


DELIVERIES = CollectionSpec(
    "deliveries",
    (
        # Per-user rate limits look at one user's recent sends.
        IndexModel([("user_id", ASCENDING), ("at", DESCENDING)]),
        IndexModel([("recipient", ASCENDING), ("at", DESCENDING)]),
    ),
)


class DeliveryLog:
    """Every attempt to push a message outside the app (WeChat, SMS) and how it ended; no
    message text, no openid, no phone number."""

    collections = (DELIVERIES,)

    def __init__(self, store: Store, clock: Clock):
        self._deliveries = store.collection(DELIVERIES)
        self._clock = clock

    async def record(
        self,
        recipient: str,
        user_id: str | None,
        channel: str,
        template: str | None,
        outcome: str,
        detail: str | None = None,
    ) -> None:
        await self._deliveries.insert_one(
            {
                "recipient": recipient,
                "user_id": user_id,
                "channel": channel,
                "template": template,
                "outcome": outcome,
                "detail": detail,
                "at": self._clock.now(),
            }
        )

    async def sent_since(self, user_id: str, since: dt.datetime) -> int:
        return await self._deliveries.count_documents(
            {"user_id": user_id, "outcome": "sent", "at": {"$gte": since}}
        )

    async def for_recipient(self, recipient: str, limit: int = 100) -> list[dict[str, Any]]:
        cursor = self._deliveries.find({"recipient": recipient}).sort("at", DESCENDING)
        return [doc async for doc in cursor.limit(limit)]


class NotificationService:
    collections = (MESSAGES,)

    def __init__(self, store: Store, clock: Clock, notifier: NotifierPort):
        self._messages = store.collection(MESSAGES)
        self._clock = clock
        self._notifier = notifier

    async def send(
        self,
        recipient: str,
        title: str,
        body: str,
        *,
        data: dict[str, Any] | None = None,
        dedupe_key: str | None = None,
    ) -> bool:
        """Record the message (once per `dedupe_key`) and push it; False when it was already
        sent. A push that fails is marked so and retried by nobody: the in-app copy stands."""
        doc = {
            "_id": ObjectId(),
            "recipient": recipient,
            "title": title,
            "body": body,
            "data": data or {},
            "created_at": self._clock.now(),
            "read_at": None,
            "delivery": "pending",
        }
        if dedupe_key is not None:
            doc["dedupe_key"] = dedupe_key
        try:
            await self._messages.insert_one(doc)
        except DuplicateKeyError:
            return False
        try:
            delivered = await self._notifier.push(recipient, title, body, data or {})
        except Exception as exc:
            # The notifier (WeChat, SMS) being down must never fail the caller (a sweep).
            log.warning("push failed", extra={"fields": {"exception": type(exc).__name__}})
            delivered = False
        await self._messages.update_one(
            {"_id": doc["_id"]}, {"$set": {"delivery": "pushed" if delivered else "in_app"}}
        )
        return True

    async def for_recipient(self, recipient: str, limit: int = 100) -> list[dict[str, Any]]:
        cursor = self._messages.find({"recipient": recipient}).sort("created_at", DESCENDING)
        return [doc async for doc in cursor.limit(limit)]


def reminder_text(kind: str, start: dt.datetime, end: dt.datetime) -> tuple[str, str]:
    """Title and body of a reminder before a window opens, in the person's local time."""
    name = KIND_NAMES.get(kind, kind)
    local_start = start.astimezone(LOCAL_TZ)
    local_end = end.astimezone(LOCAL_TZ)
    return (
        f"{name}提醒",
        f"您的{name}将于{local_start:%m月%d日 %H:%M}开始，请在{local_end:%m月%d日 %H:%M}前完成。",
    )

"""Notifications: every message to a person or worker is recorded in-app; the notifier port may
also push it (WeChat subscribe message, SMS). A failed push never loses the message. A message
about a person's case (a decision notice) is sealed with the person's key and queued: the jobs
process pushes it, so a decision never waits on WeChat."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from bson import ObjectId
from bson.errors import InvalidId
from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument
from pymongo.errors import DuplicateKeyError

from models.clock import LOCAL_TZ, Clock
from models.codec import FieldCodec, IntegrityError, Shredded
from models.errors import NotFound
from models.store import CollectionSpec, Store
from models.telemetry import DeliveryObserver, NullTelemetry

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
        # The jobs process finds what is left to push.
        IndexModel([("delivery", ASCENDING), ("created_at", ASCENDING)]),
    ),
)
# Sealed message texts live here (key rotation re-seals them: `sealed_fields`).
SEALED = "enc"
# A push claimed by a jobs process that died is tried again after this long.
CLAIM_TIMEOUT = dt.timedelta(minutes=10)
# Who may read a message to `subject:<id>`: the person, and a bound guardian where the law lets
# the guardian be told (see models/decision_notices.py). Older messages carry no audience and
# reach both, as before.
AUDIENCE_ALL = ("subject", "guardian")

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
    # Where each attempt's outcome is reported (the process's metrics); nowhere by default.
    _observer: DeliveryObserver = NullTelemetry()

    def __init__(self, store: Store, clock: Clock):
        self._deliveries = store.collection(DELIVERIES)
        self._clock = clock

    def report_to(self, observer: DeliveryObserver) -> None:
        self._observer = observer

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
        self._observer.delivery_attempted(channel, outcome)

    async def sent_since(self, user_id: str, since: dt.datetime) -> int:
        return await self._deliveries.count_documents(
            {"user_id": user_id, "outcome": "sent", "at": {"$gte": since}}
        )

    async def for_recipient(self, recipient: str, limit: int = 100) -> list[dict[str, Any]]:
        cursor = self._deliveries.find({"recipient": recipient}).sort("at", DESCENDING)
        return [doc async for doc in cursor.limit(limit)]


@dataclass(frozen=True)
class MessageView:
    """One message as its reader sees it: texts opened, what it is about."""

    id: str
    kind: str | None
    title: str
    body: str
    created_at: dt.datetime
    read_at: dt.datetime | None
    ref: dict[str, str] | None


class NotificationService:
    collections = (MESSAGES,)
    # Where this service keeps fields sealed with a subject's data key (for key rotation).
    sealed_fields = ((MESSAGES.name, SEALED),)

    def __init__(
        self,
        store: Store,
        clock: Clock,
        notifier: NotifierPort,
        codec: FieldCodec | None = None,
    ):
        self._messages = store.collection(MESSAGES)
        self._clock = clock
        self._notifier = notifier
        self._codec = codec

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
        doc: dict[str, Any] = {
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
        await self._push(doc["_id"], recipient, title, body, data or {})
        return True

    async def _push(
        self, message_id: ObjectId, recipient: str, title: str, body: str, data: dict[str, Any]
    ) -> None:
        try:
            delivered = await self._notifier.push(recipient, title, body, data)
        except Exception as exc:
            # The notifier (WeChat, SMS) being down must never fail the caller (a sweep).
            log.warning("push failed", extra={"fields": {"exception": type(exc).__name__}})
            delivered = False
        await self._messages.update_one(
            {"_id": message_id}, {"$set": {"delivery": "pushed" if delivered else "in_app"}}
        )

    async def record_sealed(
        self,
        *,
        subject_id: str,
        key_id: str | None,
        kind: str,
        title: str,
        body: str,
        ref: dict[str, str],
        audience: tuple[str, ...],
        urgent: bool,
        dedupe_key: str,
    ) -> bool:
        """A message about the person's case, its texts sealed with the person's key and its
        push queued for the jobs process; once per `dedupe_key` (False: recorded already)."""
        if self._codec is None:
            raise RuntimeError("sealed messages need the field codec")
        message_id = ObjectId()
        mid = str(message_id)
        doc = {
            "_id": message_id,
            "recipient": f"subject:{subject_id}",
            "subject_id": subject_id,
            "kind": kind,
            SEALED: {
                "title": await self._codec.seal(
                    subject_id, key_id, MESSAGES.name, mid, "title", title
                ),
                "body": await self._codec.seal(
                    subject_id, key_id, MESSAGES.name, mid, "body", body
                ),
            },
            "ref": dict(ref),
            "audience": list(audience),
            "data": {"template": "decision", "urgent": urgent, "audience": list(audience)},
            "created_at": self._clock.now(),
            "read_at": None,
            "delivery": "queued",
            "dedupe_key": dedupe_key,
        }
        try:
            await self._messages.insert_one(doc)
        except DuplicateKeyError:
            return False
        return True

    async def deliver_queued(self, limit: int = 200) -> dict[str, int]:
        """Push queued messages (the jobs process, whose notifier reaches WeChat and SMS). Each
        is claimed first, so two processes never push one message twice; a claim left by a
        process that died is taken again after `CLAIM_TIMEOUT`."""
        pushed = 0
        for _ in range(limit):
            now = self._clock.now()
            doc = await self._messages.find_one_and_update(
                {
                    "$or": [
                        {"delivery": "queued"},
                        {"delivery": "pushing", "claimed_at": {"$lt": now - CLAIM_TIMEOUT}},
                    ]
                },
                {"$set": {"delivery": "pushing", "claimed_at": now}},
                sort=[("created_at", ASCENDING)],
                return_document=ReturnDocument.AFTER,
            )
            if doc is None:
                break
            try:
                title, body = await self._texts(doc)
            except (Shredded, IntegrityError):
                # Erased with the person's file (or unreadable): nothing to push.
                await self._messages.update_one(
                    {"_id": doc["_id"]}, {"$set": {"delivery": "in_app"}}
                )
                continue
            await self._push(doc["_id"], doc["recipient"], title, body, dict(doc.get("data") or {}))
            pushed += 1
        return {"pushed": pushed}

    async def _texts(self, doc: dict[str, Any]) -> tuple[str, str]:
        sealed = doc.get(SEALED)
        if not sealed:
            return doc["title"], doc["body"]
        assert self._codec is not None
        mid = str(doc["_id"])
        opened = await self._codec.open_fields(MESSAGES.name, mid, sealed)
        return str(opened["title"]), str(opened["body"])

    async def for_recipient(self, recipient: str, limit: int = 100) -> list[dict[str, Any]]:
        cursor = self._messages.find({"recipient": recipient}).sort("created_at", DESCENDING)
        return [doc async for doc in cursor.limit(limit)]

    @staticmethod
    def _for_reader(recipient: str, reader: str) -> dict[str, Any]:
        # A message without an audience (a reminder) reaches everyone bound to the file.
        return {
            "recipient": recipient,
            "$or": [{"audience": {"$exists": False}}, {"audience": reader}],
        }

    async def inbox(self, recipient: str, reader: str, limit: int = 100) -> list[MessageView]:
        """The messages `reader` (`subject` or `guardian`) may read, newest first, opened."""
        cursor = (
            self._messages.find(self._for_reader(recipient, reader))
            .sort("created_at", DESCENDING)
            .limit(limit)
        )
        views = []
        async for doc in cursor:
            try:
                views.append(await self._view(doc, reader))
            except Shredded:
                continue  # erased with the person's file: nothing left to show
        return views

    async def mark_read(self, recipient: str, reader: str, message_id: str) -> MessageView:
        """Mark one of the reader's own messages read (again: unchanged); anyone else's: 404."""
        try:
            oid = ObjectId(message_id)
        except (InvalidId, TypeError):
            raise NotFound("No such message.", message_zh="未找到该消息。") from None
        query = self._for_reader(recipient, reader) | {"_id": oid}
        # Each reader's own: a guardian opening a notice does not mark it read for the person.
        await self._messages.update_one(
            query | {f"read.{reader}": {"$exists": False}},
            {"$set": {f"read.{reader}": self._clock.now()}},
        )
        doc = await self._messages.find_one(query)
        if doc is None:
            raise NotFound("No such message.", message_zh="未找到该消息。")
        return await self._view(doc, reader)

    async def _view(self, doc: dict[str, Any], reader: str) -> MessageView:
        title, body = await self._texts(doc)
        ref = doc.get("ref")
        return MessageView(
            id=str(doc["_id"]),
            kind=doc.get("kind"),
            title=title,
            body=body,
            created_at=doc["created_at"],
            read_at=(doc.get("read") or {}).get(reader) or doc.get("read_at"),
            ref={"type": str(ref["type"]), "id": str(ref["id"])} if ref else None,
        )


def reminder_text(kind: str, start: dt.datetime, end: dt.datetime) -> tuple[str, str]:
    """Title and body of a reminder before a window opens, in the person's local time."""
    name = KIND_NAMES.get(kind, kind)
    local_start = start.astimezone(LOCAL_TZ)
    local_end = end.astimezone(LOCAL_TZ)
    return (
        f"{name}提醒",
        f"您的{name}将于{local_start:%m月%d日 %H:%M}开始，请在{local_end:%m月%d日 %H:%M}前完成。",
    )

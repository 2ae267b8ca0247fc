"""Idempotency keys for mini-program writes: a retry (the same key and request) answers what the
first request answered; the same key with another request is a conflict. Phones on a weak
signal resend; a resend must never file a second leave request."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from typing import Any

from pymongo import ASCENDING, IndexModel
from pymongo.errors import DuplicateKeyError

from models.clock import Clock
from models.codec import FieldCodec, trail_key_id
from models.errors import Conflict, InvalidInput
from models.store import CollectionSpec, Store

IDEMPOTENCY = CollectionSpec(
    "idempotency_keys",
    # A client retries within minutes or hours; a day later the key is forgotten.
    (IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0),),
)
KEY_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")
KEEP_FOR = dt.timedelta(hours=24)
# A first request that neither finished nor released its key within this long died (a killed
# process, a lost database): a retry takes the key over rather than waiting a day.
ABANDONED_AFTER = dt.timedelta(seconds=60)


@dataclass(frozen=True)
class StoredAnswer:
    status: int
    body: bytes


def fingerprint(method: str, path: str, body: bytes) -> str:
    # A hash of the request: the record never holds the body itself (it may be personal data).
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), body):
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


class IdempotencyService:
    collections = (IDEMPOTENCY,)

    def __init__(self, store: Store, clock: Clock, codec: FieldCodec):
        self._keys = store.collection(IDEMPOTENCY)
        self._clock = clock
        self._codec = codec

    @staticmethod
    def check_key(key: str) -> None:
        if not KEY_PATTERN.match(key):
            raise InvalidInput(
                "An Idempotency-Key has 8 to 128 letters, digits or ._:- characters.",
                code="invalid_idempotency_key",
                details=[{"field": "Idempotency-Key"}],
                message_zh="请求编号（Idempotency-Key）格式不正确。",
            )

    async def begin(self, owner: str, key: str, print_: str) -> StoredAnswer | None:
        """Claim the key for this request; None when it is new (go ahead), the stored answer
        for a retry. A retry while the first is still running, or another request under the
        same key, is refused."""
        self.check_key(key)
        record_id = f"{owner}:{key}"
        now = self._clock.now()
        try:
            await self._keys.insert_one(
                {
                    "_id": record_id,
                    "fingerprint": print_,
                    "state": "running",
                    "created_at": now,
                    "expires_at": now + KEEP_FOR,
                }
            )
            return None
        except DuplicateKeyError:
            pass
        doc: dict[str, Any] | None = await self._keys.find_one({"_id": record_id})
        if doc is None:  # expired between the two calls: treat as new
            return await self.begin(owner, key, print_)
        if doc["fingerprint"] != print_:
            raise Conflict(
                "This Idempotency-Key was used for another request.",
                code="idempotency_conflict",
                message_zh="该请求编号已用于另一次提交。",
            )
        if doc["state"] != "done" and doc["created_at"] < now - ABANDONED_AFTER:
            taken = await self._keys.update_one(
                {"_id": record_id, "state": "running", "created_at": doc["created_at"]},
                {"$set": {"created_at": now, "expires_at": now + KEEP_FOR}},
            )
            if taken.modified_count == 1:
                return None
        if doc["state"] != "done":
            raise Conflict(
                "The first request with this key is still being handled.",
                code="idempotency_in_progress",
                message_zh="请求正在处理中，请稍后重试。",
            )
        # The answer may hold personal data (a destination, a note): kept sealed.
        body = await self._codec.open("idempotency_keys", record_id, "body", doc["body"])
        return StoredAnswer(int(doc["status"]), body.encode("utf-8"))

    async def release(self, owner: str, key: str) -> None:
        """The request failed (a refusal, an outage): the key may be used again."""
        await self._keys.delete_one({"_id": f"{owner}:{key}", "state": "running"})

    async def finish(
        self, owner: str, key: str, status: int, body: bytes, subject_id: str | None = None
    ) -> None:
        """Keep a success for replay. A refusal (4xx) releases the key: the client may fix
        the request and send it again under the same key. An answer about a person
        (`subject_id`) is sealed under that person's key, so shredding them erases it at once
        rather than when the key expires a day later."""
        record_id = f"{owner}:{key}"
        if 200 <= status < 300:
            text = body.decode("utf-8")
            about: dict[str, Any] = {}
            if subject_id is None:
                sealed = await self._codec.seal_secret("idempotency_keys", record_id, "body", text)
            else:
                about = {"subject_id": subject_id}
                sealed = await self._codec.seal(
                    subject_id,
                    trail_key_id(subject_id),
                    "idempotency_keys",
                    record_id,
                    "body",
                    text,
                )
            await self._keys.update_one(
                {"_id": record_id},
                {"$set": {"state": "done", "status": status, "body": sealed, **about}},
            )
        else:
            await self._keys.delete_one({"_id": record_id, "state": "running"})

"""阳光之家 assistance: a person's request for help (housing, food, a job, training, legal aid,
benefits), filed from the mini-program or by a worker, opening a referral in state `requested`.
The referral workflow, resources and capacity build on these records."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, IndexModel

from models.audit import AuditContext, AuditService
from models.clock import Clock
from models.codec import FieldCodec
from models.errors import Forbidden, InvalidInput
from models.store import CollectionSpec, Store
from models.subjects import SubjectService, SubjectStatus

REFERRALS = CollectionSpec(
    "referrals",
    (
        # A station's queue: requests in its subtree by state.
        IndexModel([("org_path", ASCENDING), ("status", ASCENDING), ("created_at", ASCENDING)]),
        IndexModel([("subject_id", ASCENDING), ("created_at", ASCENDING)]),
    ),
)


class Need(enum.StrEnum):
    HOUSING = "housing"
    FOOD = "food"
    JOB = "job"
    TRAINING = "training"
    LEGAL = "legal"
    BENEFITS = "benefits"


class ReferralStatus(enum.StrEnum):
    REQUESTED = "requested"


@dataclass
class ReferralView:
    id: str
    subject_id: str
    needs: list[str]
    status: str
    channel: str


class AssistanceService:
    collections = (REFERRALS,)
    sealed_fields = (("referrals", None),)

    def __init__(
        self,
        store: Store,
        clock: Clock,
        audit: AuditService,
        codec: FieldCodec,
        subjects: SubjectService,
    ):
        self._referrals = store.collection(REFERRALS)
        self._clock = clock
        self._audit = audit
        self._codec = codec
        self._subjects = subjects

    async def request_from_subject(
        self, ctx: AuditContext, needs: list[str], note: str
    ) -> ReferralView:
        """The person (or guardian) asks for help; the station sees it in its queue."""
        subject_id = ctx.identity.subject_id
        subject = await self._subjects.document(subject_id) if subject_id else None
        if subject is None or subject.get("status") == SubjectStatus.SHREDDED:
            raise Forbidden("Only a bound person asks for help.", code="not_a_subject")
        wanted = list(dict.fromkeys(needs))
        if not wanted:
            raise InvalidInput(
                "Name at least one need.", details=[{"field": "needs"}], message_zh="请选择需求。"
            )
        referral_id = ObjectId()
        rid = str(referral_id)
        now = self._clock.now()
        doc: dict[str, Any] = {
            "_id": referral_id,
            "subject_id": subject_id,
            "org_id": str(subject["org_id"]),
            "org_path": list(subject["org_path"]),
            "needs": wanted,
            "note": await self._codec.seal(
                str(subject_id), subject.get("dek_id"), "referrals", rid, "note", note.strip()
            ),
            "status": str(ReferralStatus.REQUESTED),
            "channel": "miniprogram",
            "requested_by": ctx.identity.user_id,
            "history": [{"status": str(ReferralStatus.REQUESTED), "at": now}],
            "created_at": now,
            "updated_at": now,
        }
        async with self._audit.change(
            ctx,
            "assistance.request",
            resource="referral",
            resource_id=rid,
            subject_id=subject_id,
            details={"needs": wanted, "channel": "miniprogram"},
        ):
            await self._referrals.insert_one(doc)
        return ReferralView(rid, str(subject_id), wanted, doc["status"], doc["channel"])

"""Counseling sessions: a counselor, a room or a facility, and a time, never double-booked.

Each booking claims its resources in 15-minute slots under a unique index, in the same
transaction as the session: two bookings that overlap on any resource cannot both commit, on one
database or under concurrent requests. A booking is also an obligation of the person's.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure

from models.audit import AuditContext, AuditService
from models.clock import LOCAL_TZ, Clock
from models.codec import FieldCodec
from models.decision_notices import DecisionNoticeService, NoticeKind, moment_text
from models.errors import Conflict, InvalidInput, NotFound
from models.ids import parse_id
from models.obligations import ObligationService
from models.policy import Role
from models.scope import ScopeService
from models.store import CollectionSpec, Store
from models.subjects import SubjectService

SESSIONS = CollectionSpec(
    "counseling_sessions",
    (
        IndexModel([("subject_id", ASCENDING), ("start", ASCENDING)]),
        IndexModel([("counselor_id", ASCENDING), ("start", ASCENDING)]),
    ),
)
# One document per resource per 15 minutes booked: its _id is the lock.
CLAIMS = CollectionSpec("booking_claims", (IndexModel([("session_id", ASCENDING)]),))

SLOT = dt.timedelta(minutes=15)
LONGEST = dt.timedelta(hours=4)
COUNSELOR_ROLES = frozenset({Role.SOCIAL_WORKER, Role.HEALTH_WORKER, Role.STATION_OFFICER})
# The hours (local time) within which free slots are offered for booking.
DAY_OPENS = dt.time(8, 0)
DAY_CLOSES = dt.time(18, 0)
# Counsellors and rooms offered at most: a station's staff, not a county's directory.
MOST_OFFERED = 200
# How many of a station's latest bookings name the rooms it uses.
ROOMS_FROM_LAST = 2000


@dataclass
class SessionView:
    id: str
    subject_id: str
    counselor_id: str
    room: str | None
    facility_id: str | None
    start: dt.datetime
    end: dt.datetime
    status: str
    notes: str | None = None


@dataclass
class Offer:
    """A counsellor (or a room) and the starts at which a session of the asked length fits."""

    id: str | None
    name: str
    role: str | None
    free: list[dt.datetime]


@dataclass
class Availability:
    date: dt.date
    minutes: int
    counselors: list[Offer]
    rooms: list[Offer]


def _slots(start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    slots, moment = [], start
    while moment < end:
        slots.append(moment)
        moment += SLOT
    return slots


def _aligned(moment: dt.datetime) -> bool:
    return moment.second == 0 and moment.microsecond == 0 and moment.minute % 15 == 0


class CounselingService:
    collections = (SESSIONS, CLAIMS)
    # Where this service keeps fields sealed with a subject's data key (for key rotation).
    sealed_fields = (("counseling_sessions", None),)

    def __init__(
        self,
        store: Store,
        clock: Clock,
        audit: AuditService,
        codec: FieldCodec,
        subjects: SubjectService,
        obligations: ObligationService,
        staff_lookup: Any,
        *,
        notices: DecisionNoticeService,
        staff_in_scope: Any = None,
        scope: ScopeService,
    ):
        self._notices = notices
        # `StaffService.list(identity, cursor, limit)`: the accounts in the caller's subtree.
        self._staff_in_scope = staff_in_scope
        self._store = store
        self._sessions = store.collection(SESSIONS)
        self._claims = store.collection(CLAIMS)
        self._clock = clock
        self._audit = audit
        self._codec = codec
        self._subjects = subjects
        self._scope = scope
        self._obligations = obligations
        self._staff_lookup = staff_lookup

    async def book(
        self,
        ctx: AuditContext,
        subject_id: str,
        *,
        counselor_id: str,
        start: dt.datetime,
        end: dt.datetime,
        room: str | None,
        facility_id: str | None,
    ) -> SessionView:
        subject = await self._scope.require(ctx, subject_id, "counseling.manage")
        start, end = start.astimezone(dt.UTC), end.astimezone(dt.UTC)
        if not (_aligned(start) and _aligned(end)):
            raise InvalidInput(
                "Sessions start and end on a quarter hour.", details=[{"field": "start"}]
            )
        if end <= start or end - start > LONGEST:
            raise InvalidInput(
                "A session lasts from 15 minutes to 4 hours.", details=[{"field": "end"}]
            )
        if start <= self._clock.now():
            raise InvalidInput("A session is booked ahead of time.", details=[{"field": "start"}])
        counselor = await self._staff_lookup(counselor_id)
        if (
            counselor is None
            or counselor.get("disabled")
            or counselor["role"] not in COUNSELOR_ROLES
            or not ctx.identity.reaches(counselor["org_path"])
        ):
            raise InvalidInput(
                "Choose an active counselor in your scope.", details=[{"field": "counselor_id"}]
            )
        resources = [f"counselor:{counselor_id}"]
        if room:
            # Rooms are named within the subject's station.
            resources.append(f"room:{subject['org_id']}:{room.strip()}")
        if facility_id:
            resources.append(f"facility:{facility_id}")
        session_id = ObjectId()
        doc = {
            "_id": session_id,
            "subject_id": subject_id,
            "org_path": subject["org_path"],
            "counselor_id": counselor_id,
            "room": room.strip() if room else None,
            "facility_id": facility_id,
            "start": start,
            "end": end,
            "status": "booked",
            "notes": None,
            "booked_by": ctx.identity.user_id,
            "created_at": self._clock.now(),
        }
        claims = [
            {"_id": f"{resource}:{slot:%Y%m%dT%H%M}", "session_id": str(session_id)}
            for resource in resources
            for slot in _slots(start, end)
        ]
        async with self._audit.change(
            ctx,
            "counseling.book",
            resource="counseling",
            resource_id=str(session_id),
            subject_id=subject_id,
            details={"counselor_id": counselor_id},
        ):
            try:
                async with self._store.transaction() as session:
                    await self._claims.insert_many(claims, ordered=True, session=session)
                    await self._sessions.insert_one(doc, session=session)
            except DuplicateKeyError:
                raise self._double_booked() from None
            except BulkWriteError as exc:
                if any(e.get("code") == 11000 for e in exc.details.get("writeErrors", [])):
                    raise self._double_booked() from None
                raise
            except OperationFailure as exc:
                # Two overlapping bookings in flight at once: the loser's transaction aborts.
                if exc.has_error_label("TransientTransactionError") or exc.code in (11000, 112):
                    raise self._double_booked() from None
                raise
        await self._obligations.schedule_one_off(
            subject, key=f"counseling:{session_id}", kind="counseling", start=start, end=end
        )
        await self._notices.notify(
            NoticeKind.COUNSELING_BOOKED,
            doc["subject_id"],
            "counseling_session",
            str(session_id),
            fields={"start": moment_text(start), "end_time": f"{end.astimezone(LOCAL_TZ):%H:%M}"},
        )
        return await self._view(doc)

    @staticmethod
    def _double_booked() -> Conflict:
        return Conflict(
            "The counselor, room or facility is booked at that time.", code="double_booked"
        )

    async def _load(self, ctx: AuditContext, session_id: str) -> dict[str, Any]:
        doc = await self._sessions.find_one({"_id": parse_id(session_id, "session")})
        if doc is None:
            raise NotFound("No such session.")
        await self._scope.require(ctx, doc["subject_id"], "counseling.manage")
        return doc

    async def record_attendance(
        self, ctx: AuditContext, session_id: str, attended: bool, notes: str | None
    ) -> SessionView:
        doc = await self._load(ctx, session_id)
        if doc["status"] != "booked":
            raise Conflict(
                "Attendance is recorded once, for a booked session.",
                code="invalid_transition",
                details={"status": doc["status"]},
            )
        sealed = (
            await self._codec.seal(
                doc["subject_id"], None, "counseling_sessions", session_id, "notes", notes
            )
            if notes
            else None
        )
        status = "attended" if attended else "no_show"
        async with self._audit.change(
            ctx,
            "counseling.attendance",
            resource="counseling",
            resource_id=session_id,
            subject_id=doc["subject_id"],
            details={"status": status},
        ):
            updated = await self._sessions.find_one_and_update(
                {"_id": doc["_id"], "status": "booked"},
                {"$set": {"status": status, "notes": sealed, "recorded_by": ctx.identity.user_id}},
                return_document=ReturnDocument.AFTER,
            )
            if updated is None:
                raise Conflict("The session changed meanwhile.", code="invalid_transition")
            await self._obligations.complete_one_off(f"counseling:{session_id}", attended)
        return await self._view(updated)

    async def cancel(self, ctx: AuditContext, session_id: str) -> SessionView:
        doc = await self._load(ctx, session_id)
        if doc["status"] != "booked":
            raise Conflict(
                "Only a booked session can be cancelled.",
                code="invalid_transition",
                details={"status": doc["status"]},
            )
        async with self._audit.change(
            ctx,
            "counseling.cancel",
            resource="counseling",
            resource_id=session_id,
            subject_id=doc["subject_id"],
        ):
            updated = await self._sessions.find_one_and_update(
                {"_id": doc["_id"], "status": "booked"},
                {"$set": {"status": "cancelled"}},
                return_document=ReturnDocument.AFTER,
            )
            # The slots are free again for someone else.
            await self._claims.delete_many({"session_id": session_id})
            await self._obligations.cancel_one_off(f"counseling:{session_id}")
        await self._notices.notify(
            NoticeKind.COUNSELING_CANCELLED,
            doc["subject_id"],
            "counseling_session",
            session_id,
            fields={"start": moment_text(doc["start"])},
        )
        return await self._view(updated or doc)

    async def sessions(self, ctx: AuditContext, subject_id: str, limit: int) -> list[SessionView]:
        """A person's sessions, the latest start first (notes as stored for the file's roles)."""
        await self._scope.require(ctx, subject_id, "counseling.read")
        cursor = self._sessions.find({"subject_id": subject_id}).sort("start", -1).limit(limit)
        views = [await self._view(doc) async for doc in cursor]
        await self._audit.record(
            ctx,
            "counseling.read",
            resource="counseling",
            subject_id=subject_id,
            details={"count": len(views)},
        )
        return views

    async def availability(
        self, ctx: AuditContext, subject_id: str, day: dt.date, minutes: int
    ) -> Availability:
        """Who can counsel this person on `day`, in which rooms, and when a session of `minutes`
        fits: the starts at which every 15-minute slot of the counsellor (or the room) is free.
        Rooms are those already named for the person's station (a new one is typed once)."""
        subject = await self._scope.require(ctx, subject_id, "counseling.read")
        if minutes <= 0 or minutes % 15 or dt.timedelta(minutes=minutes) > LONGEST:
            raise InvalidInput(
                "A session lasts from 15 minutes to 4 hours, in quarter hours.",
                details=[{"field": "minutes"}],
            )
        length = dt.timedelta(minutes=minutes)
        opens = dt.datetime.combine(day, DAY_OPENS, LOCAL_TZ).astimezone(dt.UTC)
        closes = dt.datetime.combine(day, DAY_CLOSES, LOCAL_TZ).astimezone(dt.UTC)
        now = self._clock.now()
        starts = [s for s in _slots(opens, closes - length + SLOT) if s > now]
        counselors: list[dict[str, Any]] = []
        if self._staff_in_scope is not None:
            accounts, _ = await self._staff_in_scope(ctx.identity, None, MOST_OFFERED)
            counselors = [
                {"id": a.id, "name": a.name, "role": a.role}
                for a in accounts
                if a.role in COUNSELOR_ROLES and not a.disabled
            ]
        # The rooms named in the station's recent bookings (the latest ones first).
        named = self._sessions.find(
            {"org_path": str(subject["org_id"]), "room": {"$ne": None}}, {"room": 1}
        ).sort("start", -1)
        rooms = sorted({str(doc["room"]) async for doc in named.limit(ROOMS_FROM_LAST)})[
            :MOST_OFFERED
        ]
        resources = [f"counselor:{c['id']}" for c in counselors]
        resources += [f"room:{subject['org_id']}:{r}" for r in rooms]
        candidates = [
            f"{resource}:{slot:%Y%m%dT%H%M}"
            for resource in resources
            for slot in _slots(opens, closes)
        ]
        taken: set[str] = set()
        if candidates:
            taken = {
                str(doc["_id"])
                async for doc in self._claims.find({"_id": {"$in": candidates}}, {"_id": 1})
            }

        def free(resource: str) -> list[dt.datetime]:
            return [
                start
                for start in starts
                if not any(
                    f"{resource}:{slot:%Y%m%dT%H%M}" in taken
                    for slot in _slots(start, start + length)
                )
            ]

        return Availability(
            date=day,
            minutes=minutes,
            counselors=[
                Offer(c["id"], c["name"], c["role"], free(f"counselor:{c['id']}"))
                for c in sorted(counselors, key=lambda c: c["name"])
            ],
            rooms=[Offer(None, r, None, free(f"room:{subject['org_id']}:{r}")) for r in rooms],
        )

    async def _view(self, doc: dict[str, Any]) -> SessionView:
        notes = None
        if doc.get("notes") is not None:
            notes = await self._codec.open(
                "counseling_sessions", str(doc["_id"]), "notes", doc["notes"]
            )
        return SessionView(
            id=str(doc["_id"]),
            subject_id=doc["subject_id"],
            counselor_id=doc["counselor_id"],
            room=doc.get("room"),
            facility_id=doc.get("facility_id"),
            start=doc["start"],
            end=doc["end"],
            status=doc["status"],
            notes=notes,
        )

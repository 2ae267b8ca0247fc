"""Check-ins (信息化核查): evidence a 司法所 can rely on.

A check-in is classified by the server's arrival time against the person's check-in window and
permitted area; the device's capture time and other suspicious signals only raise flags, and a
flagged check-in waits for the station's review. Coordinates are sealed with the person's key.

The hot path costs two database round trips: the person's recent check-ins (one indexed read),
and one ordered batch (a client bulkWrite; separate commands on servers before 8.0) of the audit
entry, the check-in itself (its idempotency key is a unique index, so concurrent duplicates
yield one record, and a duplicate stops the batch) and the conditional update of its window.
What changes rarely
(the case file's key and place, windows, leave and e-location in force, areas) is read with
concurrent indexed finds when the person signs in and kept for 30 s per process.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument
from pymongo.errors import DuplicateKeyError

from models.attachments import AttachmentInfo
from models.audit import AuditContext, AuditService
from models.checkin_state import AHEAD_DAYS, CheckinStates
from models.clock import LOCAL_TZ, Clock, local_midnight, stored_precision
from models.codec import FieldCodec
from models.decision_notices import DecisionNoticeService, NoticeKind, moment_text, reason_text
from models.elocation import ElocationService
from models.errors import Conflict, Forbidden, InvalidInput, NotFound
from models.geo import Area, Point, distance_m, gcj02_to_wgs84
from models.identity import Identity
from models.leave import LeaveService
from models.obligations import Evidence, ObligationService, OccurrenceStatus
from models.orgs import OrgKind, OrgService
from models.policy import Policy as AccessPolicy
from models.policy import Scope
from models.rules import EffectiveRules, RulesService
from models.sessions import SessionService
from models.staff import StaffService
from models.store import CollectionSpec, OrderedWriteError, Store, Write
from models.subjects import SubjectService, SubjectStatus
from models.telemetry import CheckinObserver, NullTelemetry
from models.uploads import UploadService

CHECKINS = CollectionSpec(
    "checkins",
    (
        # The idempotency key, per person: a retry finds the first answer; a concurrent
        # duplicate fails on insert, so there is one record whatever the race.
        IndexModel([("idem", ASCENDING)], unique=True),
        # Recent check-ins of a person (jumps, device changes, reused photos).
        IndexModel([("subject_id", ASCENDING), ("arrived_at", DESCENDING)]),
        # The sweep's question before marking windows missed: any check-in stored for them?
        IndexModel([("occurrence_id", ASCENDING)]),
        # The review queue of a station: flagged check-ins waiting, oldest first.
        IndexModel([("review_pending", ASCENDING), ("arrived_at", ASCENDING)], sparse=True),
        # The console's list of reviews decided today (a day's range of decision times).
        IndexModel([("review.at", DESCENDING)], sparse=True),
    ),
)
# A person's check-ins the state keeps whole (replays of a retry, the last place and device),
# and how many of their photos' digests it keeps to tell a photo used again.
RECENT = 5
PHOTOS_KEPT = 30
RECENT_FIELDS = {
    "idem": 1,
    "fingerprint": 1,
    "answer": 1,
    "arrived_at": 1,
    "captured_at": 1,
    "location": 1,
    "accuracy": 1,
    "device": 1,
    "photo_digest": 1,
    "audit_entry": 1,
}
MAX_GRACE_HOURS = 168  # the upper bound of `checkin.offline_grace_hours`
IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")
# The person's earlier check-ins drawn beside one under review.
RECENT_SHOWN = 5


class CheckinStatus(enum.StrEnum):
    ON_TIME = "on_time"
    LATE = "late"
    OUTSIDE_AREA = "outside_area"
    REJECTED = "rejected"


class Flag(enum.StrEnum):
    IMPOSSIBLE_TRAVEL = "impossible_travel"  # faster than a vehicle since the last check-in
    LOW_ACCURACY = "low_accuracy"  # the location is less precise than the rule allows
    CLOCK_SKEW = "clock_skew"  # the device's capture time is far from the arrival time
    OFFLINE = "offline"  # captured in a window that closed before it arrived
    PHOTO_REUSED = "photo_reused"  # the same photo as an earlier check-in
    DEVICE_CHANGED = "device_changed"  # another device than the last check-in's
    FACE_REVIEW = "face_review"  # face verification asks a person to look
    FACE_MISMATCH = "face_mismatch"  # face verification says it is someone else
    NO_AREA = "no_area"  # no permitted area is set for the person's station or county


class FaceVerdict(enum.StrEnum):
    MATCH = "match"
    MISMATCH = "mismatch"
    MANUAL_REVIEW = "manual_review"


class FaceVerificationPort(Protocol):
    """Compares a check-in photo with the person's file photo."""

    async def verify(self, subject_id: str, attachment_id: str) -> FaceVerdict: ...


class LocalFaceVerifier:
    """No face model runs locally: every photo goes to a person (the station's review)."""

    async def verify(self, subject_id: str, attachment_id: str) -> FaceVerdict:
        return FaceVerdict.MANUAL_REVIEW


@dataclass(frozen=True)
class CheckinInput:
    lat: float
    lng: float
    coord_type: str  # wgs84 | gcj02
    accuracy: float
    captured_at: dt.datetime
    obligation_id: str | None = None
    photo_upload_id: str | None = None
    device_id: str | None = None

    def fingerprint_text(self) -> str:
        body = {
            "lat": self.lat,
            "lng": self.lng,
            "coord_type": self.coord_type,
            "accuracy": self.accuracy,
            "captured_at": self.captured_at.astimezone(dt.UTC).isoformat(),
            "obligation_id": self.obligation_id,
            "photo_upload_id": self.photo_upload_id,
            "device_id": self.device_id,
        }
        return json.dumps(body, sort_keys=True)


@dataclass
class CheckinAnswer:
    id: str
    status: str
    flags: list[str]
    obligation_id: str | None
    obligation_status: str | None
    review: str | None
    arrived_at: dt.datetime

    def as_doc(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "flags": self.flags,
            "obligation_id": self.obligation_id,
            "obligation_status": self.obligation_status,
            "review": self.review,
            "arrived_at": self.arrived_at,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> CheckinAnswer:
        return cls(**doc)


@dataclass
class ReviewItem:
    id: str
    subject_id: str
    subject_name: str | None
    status: str
    flags: list[str]
    obligation_id: str | None
    arrived_at: dt.datetime
    captured_at: dt.datetime
    distance_m: float | None
    accuracy: float
    has_photo: bool


@dataclass
class OwnCheckin:
    """A check-in as its person reads it: no coordinates, device or flags (the flags are the
    station's fraud signals, not the person's business)."""

    id: str
    arrived_at: dt.datetime
    status: str
    obligation_id: str | None
    # None (no review needed), "pending", "accepted" or "rejected".
    review: str | None
    review_comment: str | None
    reviewed_at: dt.datetime | None


@dataclass
class _Context:
    """What one read gathered for a decision."""

    subject: dict[str, Any] | None = None
    recent: list[dict[str, Any]] = field(default_factory=list)
    photos: set[str] = field(default_factory=set)
    windows: list[dict[str, Any]] = field(default_factory=list)
    leave: list[dict[str, Any]] = field(default_factory=list)
    elocation: list[dict[str, Any]] = field(default_factory=list)
    org_areas: list[dict[str, Any]] = field(default_factory=list)


def _idempotency_conflict() -> Conflict:
    return Conflict(
        "This Idempotency-Key was used for another request.",
        code="idempotency_conflict",
        message_zh="该请求编号已用于另一次提交，请重新签到。",
    )


def _choose(
    windows: list[dict[str, Any]], captured: dt.datetime, now: dt.datetime
) -> dict[str, Any] | None:
    """The window open now, or (an offline upload) the recently closed one its capture time
    falls in. A device clock is trusted for choosing the window only; arrival decides."""
    recently_closed = [
        w
        for w in windows
        if w["window_end"] <= now and w["window_start"] <= captured < w["window_end"]
    ]
    if recently_closed and captured < now - dt.timedelta(minutes=1):
        return recently_closed[0]
    return next((w for w in windows if w["window_start"] <= now < w["window_end"]), None)


class CheckinService:
    collections = (CHECKINS,)
    sealed_fields = (("checkins", None),)

    def __init__(
        self,
        store: Store,
        clock: Clock,
        audit: AuditService,
        codec: FieldCodec,
        subjects: SubjectService,
        obligations: ObligationService,
        orgs: OrgService,
        leave: LeaveService,
        elocation: ElocationService,
        rules: RulesService,
        uploads: UploadService,
        face: FaceVerificationPort,
        policy: AccessPolicy,
        staff: StaffService | None = None,
        *,
        notices: DecisionNoticeService,
        states: CheckinStates,
        sessions: SessionService,
    ):
        self._checkins = store.collection(CHECKINS)
        self._states = states
        self._sessions = sessions
        self._notices = notices
        self._clock = clock
        self._audit = audit
        self._codec = codec
        self._subjects = subjects
        self._obligations = obligations
        self._orgs = orgs
        self._leave = leave
        self._elocation = elocation
        self._rules = rules
        self._uploads = uploads
        self._face = face
        self._policy = policy
        # Reviewers are named by the console's decided list; None (tools): no names.
        self._staff = staff

    async def evidence_for(self, occurrence_ids: list[str]) -> dict[str, Evidence]:
        """Check-ins stored for windows the sweep is about to mark missed (their request died
        between storing the check-in and updating the window): the first that counts wins."""
        found: dict[str, Evidence] = {}
        cursor = self._checkins.find(
            {
                "occurrence_id": {"$in": occurrence_ids},
                "answer.obligation_status": {"$ne": None},
                # A check-in the station rejected meets nothing.
                "status": {"$ne": str(CheckinStatus.REJECTED)},
            },
            {"occurrence_id": 1, "answer": 1, "review": 1},
        ).sort("arrived_at", ASCENDING)
        async for doc in cursor:
            answer = doc["answer"]
            accepted = (doc.get("review") or {}).get("state") == "accepted"
            if accepted:
                late = answer["status"] == CheckinStatus.LATE
                evidence = Evidence(
                    doc["_id"], OccurrenceStatus.LATE if late else OccurrenceStatus.DONE, False
                )
            else:
                evidence = Evidence(
                    doc["_id"],
                    OccurrenceStatus(answer["obligation_status"]),
                    answer["review"] is not None,
                )
            if doc["occurrence_id"] not in found or not evidence.needs_review:
                found[doc["occurrence_id"]] = evidence
        return found

    # What each new check-in is reported to (the process's metrics); nothing by default.
    _observer: CheckinObserver = NullTelemetry()

    def report_to(self, observer: CheckinObserver) -> None:
        self._observer = observer

    async def review_backlog(self) -> tuple[int, dt.datetime | None]:
        """How many check-ins await a station's review, and when the oldest arrived (for the
        metrics scrape: two reads on the review-queue index, never on a request's path)."""
        waiting = {"review_pending": True}
        count = await self._checkins.count_documents(waiting)
        oldest = await self._checkins.find_one(
            waiting, {"arrived_at": 1}, sort=[("arrived_at", ASCENDING)]
        )
        return count, oldest["arrived_at"] if oldest else None

    # --- recording -------------------------------------------------------------------------

    async def record(self, ctx: AuditContext, key: str, data: CheckinInput) -> CheckinAnswer:
        """Record one check-in for the calling person; the same key answers the first result."""
        subject_id = ctx.identity.subject_id
        if subject_id is None:
            raise Forbidden("Only a bound person checks in.", code="not_a_subject")
        if not IDEMPOTENCY_KEY.match(key or ""):
            raise InvalidInput(
                "Send an Idempotency-Key of 8 to 128 letters, digits or ._:- characters.",
                code="idempotency_key_required",
                details=[{"field": "Idempotency-Key"}],
                message_zh="缺少或无效的请求编号（Idempotency-Key）。",
            )
        idem = f"{subject_id}:{key}"
        fingerprint = await self._codec.blind_index("checkin-request", data.fingerprint_text())
        # A retry answers `arrived_at` as read back from the database (milliseconds): the first
        # answer says the same, byte for byte.
        now = stored_precision(self._clock.now())
        org_id = ctx.identity.org_id
        rules = await self._rules.for_org(org_id) if org_id else None
        grace = dt.timedelta(hours=rules.int("checkin.offline_grace_hours") if rules else 72)
        context = await self._context(subject_id, now, grace)

        for previous in context.recent:
            if previous["idem"] == idem:
                return await self._replay(ctx, previous, fingerprint)

        subject = context.subject
        if subject is None or subject.get("status") == SubjectStatus.SHREDDED:
            raise Forbidden("This case file is closed.", code="not_a_subject")
        if rules is None or str(subject["org_id"]) != org_id:
            # The file moved since the session was opened: its rules are the new station's.
            rules = await self._rules.for_org(str(subject["org_id"]))
        window = await self._window_for(subject_id, data, now, grace, context.windows)
        arrived_late = now >= window["window_end"]

        point = Point(data.lat, data.lng)
        if data.coord_type == "gcj02":
            point = gcj02_to_wgs84(point)
        area = await self._area(context, rules, window.get("org_path") or subject["org_path"])
        flags: list[Flag] = []
        if area is None:
            flags.append(Flag.NO_AREA)
        inside = area.contains(point) if area is not None else True
        flags.extend(await self._signals(data, point, now, window, context.recent, rules))

        photo_attachment: str | None = None
        photo_digest: str | None = None
        verdict: FaceVerdict | None = None
        if data.photo_upload_id is not None:
            ref = await self._uploads.resolve(subject_id, data.photo_upload_id)
            if ref is None:
                raise InvalidInput(
                    "No such upload.",
                    code="unknown_upload",
                    details=[{"field": "photo_upload_id"}],
                    message_zh="照片不存在或不属于您，请重新上传。",
                )
            photo_attachment, photo_digest = ref.attachment_id, ref.digest
            if photo_digest in context.photos:
                flags.append(Flag.PHOTO_REUSED)
            verdict = await self._face.verify(subject_id, photo_attachment)
            if verdict is FaceVerdict.MANUAL_REVIEW:
                flags.append(Flag.FACE_REVIEW)
            elif verdict is FaceVerdict.MISMATCH:
                flags.append(Flag.FACE_MISMATCH)

        if verdict is FaceVerdict.MISMATCH:
            status = CheckinStatus.REJECTED
        elif not inside:
            status = CheckinStatus.OUTSIDE_AREA
        elif arrived_late:
            status = CheckinStatus.LATE
        else:
            status = CheckinStatus.ON_TIME
        needs_review = bool(flags) or status is CheckinStatus.OUTSIDE_AREA
        if status is CheckinStatus.REJECTED:
            occurrence_status = None
        elif needs_review:
            occurrence_status = OccurrenceStatus.PENDING_REVIEW
        else:
            occurrence_status = OccurrenceStatus.LATE if arrived_late else OccurrenceStatus.DONE

        checkin_id = str(ObjectId())
        answer = CheckinAnswer(
            id=checkin_id,
            status=str(status),
            flags=[str(f) for f in dict.fromkeys(flags)],
            obligation_id=str(window["_id"]),
            obligation_status=str(occurrence_status) if occurrence_status else None,
            review="pending" if needs_review else None,
            arrived_at=now,
        )
        location = await self._codec.seal(
            subject_id,
            subject.get("dek_id"),
            "checkins",
            checkin_id,
            "location",
            {
                "lat": point.lat,
                "lng": point.lng,
                "accuracy": data.accuracy,
                "coord_type": data.coord_type,
                "distance_m": self._distance(area, point),
            },
        )
        document: dict[str, Any] = {
            "_id": checkin_id,
            "idem": idem,
            "fingerprint": fingerprint,
            "subject_id": subject_id,
            "org_path": list(window.get("org_path") or subject["org_path"]),
            "program_id": window.get("program_id"),
            "occurrence_id": str(window["_id"]),
            "location": location,
            "accuracy": data.accuracy,
            "arrived_at": now,
            "captured_at": data.captured_at.astimezone(dt.UTC),
            "status": str(status),
            "flags": answer.flags,
            "device": (
                await self._codec.blind_index("device", data.device_id) if data.device_id else None
            ),
            "photo_id": photo_attachment,
            "photo_digest": photo_digest,
            "face": str(verdict) if verdict else None,
            "answer": answer.as_doc(),
            "rules_version": rules.version,
        }
        if needs_review:
            document["review_pending"] = True

        def writes(entry: str) -> list[Write]:
            # The audit entry goes first (record_with), then the check-in naming it, then its
            # window, then the person's state: a duplicate key stops the batch before the
            # window or the state is touched.
            stored = {**document, "audit_entry": entry}
            batch = [Write(CHECKINS.name, stored)]
            if occurrence_status is not None:
                batch.append(
                    self._obligations.checkin_write(
                        str(window["_id"]), checkin_id, occurrence_status, needs_review
                    )
                )
            seen = self._sessions.seen_write(ctx.identity, now)
            if seen is not None:
                batch.append(seen)
            recent = {k: stored[k] for k in ("_id", *RECENT_FIELDS)}
            batch.append(
                self._states.checkin_write(subject_id, recent, RECENT, photo_digest, PHOTOS_KEPT)
            )
            return batch

        try:
            await self._audit.record_with(
                ctx,
                "checkins.record",
                writes,
                resource="checkin",
                resource_id=checkin_id,
                subject_id=subject_id,
                details={"status": str(status), "flags": answer.flags},
            )
        except OrderedWriteError as exc:
            if not (exc.index == 1 and isinstance(exc.cause, DuplicateKeyError)):
                raise exc.cause from None
            existing = await self._checkins.find_one({"idem": idem})
            if existing is None:
                raise exc.cause from None
            return await self._replay(ctx, existing, fingerprint)
        if occurrence_status is not None:
            await self._obligations.checkin_written(window)
        self._observer.checkin_recorded(answer.status, answer.flags)
        return answer

    async def _replay(
        self, ctx: AuditContext, previous: dict[str, Any], fingerprint: str
    ) -> CheckinAnswer:
        """A retry: the first answer, after making sure its effect on the obligation landed
        (the first attempt may have died between storing the check-in and the update). The
        audit trail says the check-in stands, whatever the first attempt could record."""
        if previous["fingerprint"] != fingerprint:
            raise _idempotency_conflict()
        answer = CheckinAnswer.from_doc(previous["answer"])
        await self._audit.record(
            ctx,
            "checkins.record.outcome",
            resource="checkin",
            resource_id=answer.id,
            subject_id=ctx.identity.subject_id,
            outcome="ok",
            details={"entry": previous.get("audit_entry"), "replay": True},
        )
        if answer.obligation_status and answer.obligation_id:
            await self._obligations.apply_checkin(
                answer.obligation_id,
                answer.id,
                OccurrenceStatus(answer.obligation_status),
                answer.review is not None,
            )
        return answer

    async def prefetch(self, identity: Identity) -> None:
        """At login: make sure this person's check-in state is built (and their key unwrapped),
        so the check-in that follows reads one document and writes one batch."""
        if identity.subject_id is None or identity.role != "subject":
            return
        await self._context(identity.subject_id, self._clock.now(), dt.timedelta(0))

    async def _context(self, subject_id: str, now: dt.datetime, grace: dt.timedelta) -> _Context:
        """The person's check-in state (`models.checkin_state`), built from its sources when
        there is none, it was marked stale, or it is too old to hold tomorrow's windows."""
        stored = await self._states.read(subject_id)
        if self._states.usable(stored, now):
            state = stored
        else:
            built = await self._build_state(subject_id, now)
            if built is None:
                return _Context()
            await self._states.keep(subject_id, stored, built)
            state = built
        self._codec.adopt_key(state.get("key"))
        subject = state["subject"]
        org_areas = await self._orgs.areas_on(subject["org_path"])
        return _Context(
            subject=subject,
            recent=list(state.get("recent") or []),
            photos=set(state.get("photos") or []),
            windows=[w for w in state["windows"] if w["window_end"] > now - grace],
            leave=state["leave"],
            elocation=state["elocation"],
            org_areas=org_areas,
        )

    async def _build_state(self, subject_id: str, now: dt.datetime) -> dict[str, Any] | None:
        """A person's check-in state read from its sources, with concurrent indexed finds (each
        owning service answers for its own collection); None if there is no such file."""
        subject = await self._subjects.document(subject_id)
        if subject is None:
            return None
        today = now.astimezone(LOCAL_TZ).date()
        ahead = today + dt.timedelta(days=AHEAD_DAYS)
        # Enough for every check-in while the state serves, offline ones included.
        since = now - dt.timedelta(hours=MAX_GRACE_HOURS)
        windows, leave, elocation, recent, key = await asyncio.gather(
            self._obligations.checkin_windows(subject_id, since, local_midnight(ahead)),
            self._leave.in_force(subject_id, today, ahead),
            self._elocation.in_force(subject_id, today, ahead),
            self._checkins.find({"subject_id": subject_id}, RECENT_FIELDS)
            .sort("arrived_at", DESCENDING)
            .limit(PHOTOS_KEPT)
            .to_list(),
            self._codec.carried_key(subject_id, subject.get("dek_id")),
        )
        return {
            "built_on": today.isoformat(),
            "subject": {
                k: subject.get(k) for k in ("_id", "dek_id", "org_id", "org_path", "status")
            },
            "key": key,
            "windows": windows,
            "leave": leave,
            "elocation": elocation,
            "recent": recent[:RECENT],
            # Oldest first, as each check-in's own write appends its photo's.
            "photos": [r["photo_digest"] for r in reversed(recent) if r.get("photo_digest")],
        }

    async def state_in_use(self, subject_id: str) -> dict[str, Any] | None:
        """The check-in state a check-in of this person would decide on now (stored, or built
        and stored): what `state_from_sources` must equal after every writer."""
        await self._context(subject_id, self._clock.now(), dt.timedelta(0))
        return await self._states.read(subject_id)

    async def state_from_sources(self, subject_id: str) -> dict[str, Any] | None:
        """The person's check-in state read afresh from its sources, stored nowhere."""
        return await self._build_state(subject_id, self._clock.now())

    async def forget(self, subject_id: str) -> None:
        """A window changed under a check-in: the person's state is built again."""
        await self._states.stale([subject_id])

    async def _window_for(
        self,
        subject_id: str,
        data: CheckinInput,
        now: dt.datetime,
        grace: dt.timedelta,
        windows: list[dict[str, Any]],
    ) -> dict[str, Any]:
        """The check-in window this check-in answers: the one named, or the one open now, or
        (an offline upload) the recently closed one its capture time falls in."""
        if data.obligation_id is not None:
            named = next((w for w in windows if w["_id"] == data.obligation_id), None)
            found = named or await self._obligations.checkin_occurrence(data.obligation_id)
            if found is None or found.get("subject_id", subject_id) != subject_id:
                raise NotFound(
                    "No such check-in obligation.",
                    code="unknown_obligation",
                    message_zh="未找到该签到任务。",
                )
            if found["kind"] != "remote_checkin":
                raise InvalidInput(
                    "This obligation is not a location check-in.",
                    code="not_a_checkin",
                    details=[{"field": "obligation_id"}],
                    message_zh="该任务不是定位签到。",
                )
            if found["window_start"] > now:
                raise Conflict(
                    "This check-in window has not opened yet.",
                    code="not_open",
                    message_zh="该签到时段尚未开始，请在时段开始后再签到。",
                )
            if found["window_end"] <= now - grace:
                raise InvalidInput(
                    "This check-in window closed too long ago.",
                    code="window_closed",
                    details=[{"field": "obligation_id", "closed_at": found["window_end"]}],
                    message_zh="该签到时段已结束太久，无法补签，请联系您的工作人员。",
                )
            if named is None:
                # Open (or recently closed) but not among the state's windows: build it again.
                await self.forget(subject_id)
            return found
        chosen = _choose(windows, data.captured_at.astimezone(dt.UTC), now)
        if chosen is None:
            # The cached windows may predate a replanning: look again before refusing.
            fresh = await self._obligations.checkin_windows(
                subject_id, now - grace, now + dt.timedelta(days=1)
            )
            chosen = _choose(fresh, data.captured_at.astimezone(dt.UTC), now)
            if chosen is not None:
                # The state missed a window: built again (a person with no window now, trying
                # again and again, does not rebuild it each time).
                await self.forget(subject_id)
        if chosen is not None:
            return chosen
        if not await self._obligations.has_checkin_obligations(subject_id):
            raise Forbidden(
                "No location check-ins are asked of this person.",
                code="checkins_not_required",
                message_zh="您目前无需进行定位签到。",
            )
        raise Conflict(
            "No check-in window is open now.",
            code="no_open_window",
            message_zh="当前没有需要签到的时段，无需签到；下次签到时间请在“我的任务”中查看。",
        )

    async def _area(
        self, context: _Context, rules: EffectiveRules, org_path: list[str]
    ) -> Area | None:
        """The permitted area: the e-location order's when one names it; else the nearest
        node's polygon or circle, or a radius around the station; wider on approved leave."""
        today = self._clock.now().astimezone(LOCAL_TZ).date().isoformat()
        for order in context.elocation:
            if order["start_date"] > today or order["end_date"] < today:
                continue
            if order.get("area") is not None:
                sealed = order["area"]
                return Area.from_doc(
                    await self._codec.open("elocation_orders", str(order["_id"]), "area", sealed)
                )
        by_node = {str(doc["_id"]): doc for doc in context.org_areas}
        base: Area | None = None
        for node in reversed(list(org_path)):
            doc = by_node.get(node)
            if doc is not None:
                base = Area.from_doc(doc["area"])
                if base.center is not None and base.radius_m <= 0:
                    base = Area(center=base.center, radius_m=rules.int("checkin.station_radius_m"))
                break
        on_leave = any(leave["start_date"] <= today <= leave["end_date"] for leave in context.leave)
        if base is not None and on_leave:
            return base.widened(rules.int("checkin.leave_radius_m"))
        return base

    @staticmethod
    def _distance(area: Area | None, point: Point) -> float | None:
        if area is None or area.center is None:
            return None
        return round(distance_m(area.center, point), 1)

    async def _signals(
        self,
        data: CheckinInput,
        point: Point,
        now: dt.datetime,
        window: dict[str, Any],
        recent: list[dict[str, Any]],
        rules: EffectiveRules,
    ) -> list[Flag]:
        flags: list[Flag] = []
        if data.accuracy > rules.int("checkin.max_accuracy_m"):
            flags.append(Flag.LOW_ACCURACY)
        captured = data.captured_at.astimezone(dt.UTC)
        skew = dt.timedelta(minutes=rules.int("checkin.max_clock_skew_minutes"))
        if now >= window["window_end"] and captured < window["window_end"]:
            flags.append(Flag.OFFLINE)
            if captured < window["window_start"] - skew:
                flags.append(Flag.CLOCK_SKEW)
        elif abs(now - captured) > skew:
            flags.append(Flag.CLOCK_SKEW)
        last = recent[0] if recent else None
        if last is None:
            return flags
        # Compared as keyed hashes: the raw database never holds a device id.
        if (
            data.device_id is not None
            and last.get("device") is not None
            and await self._codec.blind_index("device", data.device_id) != last["device"]
        ):
            flags.append(Flag.DEVICE_CHANGED)
        where = await self._codec.open("checkins", str(last["_id"]), "location", last["location"])
        last_point = Point(float(where["lat"]), float(where["lng"]))
        # From one capture to the next, at least a minute apart (GPS noise over seconds is not
        # travel), less what either fix's accuracy allows.
        hours = max(abs((captured - last["captured_at"]).total_seconds()), 60) / 3600
        metres = distance_m(last_point, point) - data.accuracy - float(last.get("accuracy", 0))
        if metres > 0 and metres / 1000 / hours > rules.int("checkin.max_speed_kmh"):
            flags.append(Flag.IMPOSSIBLE_TRAVEL)
        return flags

    # --- the person's own ------------------------------------------------------------------

    async def own_checkins(self, ctx: AuditContext, limit: int) -> list[OwnCheckin]:
        """The calling person's (or guardian's person's) recent check-ins, newest first."""
        subject_id = ctx.identity.subject_id
        if ctx.identity.channel != "mp" or subject_id is None:
            raise NotFound("No such case file.", message_zh="未找到您的档案。")
        cursor = (
            self._checkins.find(
                {"subject_id": subject_id},
                {"arrived_at": 1, "status": 1, "occurrence_id": 1, "review": 1, "answer": 1},
            )
            .sort("arrived_at", DESCENDING)
            .limit(limit)
        )
        items = []
        async for doc in cursor:
            review = doc.get("review")
            if review is not None:
                state, at = review["state"], review.get("at")
                comment = await self._codec.open_text(
                    "checkins", doc["_id"], "review_comment", review.get("comment")
                )
            else:
                state, at, comment = doc["answer"].get("review"), None, None
            items.append(
                OwnCheckin(
                    id=doc["_id"],
                    arrived_at=doc["arrived_at"],
                    status=doc["status"],
                    obligation_id=doc.get("occurrence_id"),
                    review=state,
                    review_comment=comment,
                    reviewed_at=at,
                )
            )
        await self._audit.record(
            ctx,
            "checkins.read",
            resource="subject",
            resource_id=subject_id,
            subject_id=subject_id,
            details={"count": len(items)},
        )
        return items

    # --- the review queue ------------------------------------------------------------------

    async def review_queue(self, ctx: AuditContext, limit: int) -> list[ReviewItem]:
        """Flagged check-ins waiting in the caller's part of the tree, oldest first."""
        identity = ctx.identity
        if identity.org_id is None or self._policy.scope(identity, "checkins.read") is Scope.NONE:
            return []
        cursor = (
            self._checkins.find({"review_pending": True, "org_path": identity.org_id})
            .sort("arrived_at", ASCENDING)
            .limit(limit)
        )
        items = []
        async for doc in cursor:
            if not identity.reaches(doc["org_path"]):
                continue
            where = await self._codec.open("checkins", doc["_id"], "location", doc["location"])
            items.append(
                ReviewItem(
                    id=doc["_id"],
                    subject_id=doc["subject_id"],
                    subject_name=await self._subjects.display_name(identity, doc["subject_id"]),
                    status=doc["status"],
                    flags=list(doc["flags"]),
                    obligation_id=doc.get("occurrence_id"),
                    arrived_at=doc["arrived_at"],
                    captured_at=doc["captured_at"],
                    distance_m=where.get("distance_m"),
                    accuracy=float(doc["accuracy"]),
                    has_photo=doc.get("photo_id") is not None,
                )
            )
        await self._audit.record(
            ctx,
            "checkins.read",
            resource="review_queue",
            resource_id=identity.org_id,
            details={"count": len(items)},
        )
        return items

    async def photo(
        self, ctx: AuditContext, checkin_id: str
    ) -> tuple[AttachmentInfo, AsyncIterator[bytes]]:
        """A check-in's photo and its plaintext stream, for an officer whose scope holds the
        check-in and who may see the person's face; otherwise 404, whatever the reason, so
        that the answer never tells whether the check-in or its photo exists."""
        identity = ctx.identity
        doc = await self._checkins.find_one({"_id": checkin_id})
        reaches = (
            doc is not None
            and self._policy.scope(identity, "checkins.read") is not Scope.NONE
            and identity.reaches(doc["org_path"])
        )
        if doc is None or not reaches or not doc.get("photo_id"):
            raise NotFound("No photo.")
        subject = await self._subjects.document(doc["subject_id"])
        if subject is None or not self._subjects.sees_face(identity, subject):
            raise NotFound("No photo.")
        opened = await self._uploads.open(doc["photo_id"])
        if opened is None:
            raise NotFound("No photo.")
        await self._audit.record(
            ctx,
            "checkins.photo.read",
            resource="attachment",
            resource_id=doc["photo_id"],
            subject_id=doc["subject_id"],
            details={"checkin_id": checkin_id},
        )
        return opened

    async def review(
        self, ctx: AuditContext, checkin_id: str, accept: bool, comment: str
    ) -> dict[str, Any]:
        """A station officer accepts or rejects a flagged check-in, with a reason; the
        obligation it holds follows."""
        comment = comment.strip()
        if not comment:
            raise InvalidInput("State the reason.", details=[{"field": "comment"}])
        doc = await self._checkins.find_one({"_id": checkin_id})
        if doc is None or not ctx.identity.reaches(doc["org_path"]):
            raise NotFound("No such check-in.")
        decision = "accepted" if accept else "rejected"
        previous = doc.get("review")
        if previous is not None and previous.get("settled"):
            raise Conflict(
                "This check-in was reviewed already.",
                code="already_reviewed",
                details={"review": previous["state"]},
            )
        if previous is not None and previous["state"] != decision:
            raise Conflict(
                "This check-in is being reviewed with the other decision.",
                code="already_reviewed",
                details={"review": previous["state"]},
            )
        if previous is None and not doc.get("review_pending"):
            raise Conflict("This check-in needs no review.", code="no_review_needed")
        async with self._audit.change(
            ctx,
            "checkins.review",
            resource="checkin",
            resource_id=checkin_id,
            subject_id=doc["subject_id"],
            details={"accept": accept},
        ):
            if previous is None:
                sealed = await self._codec.seal(
                    doc["subject_id"],
                    None,
                    "checkins",
                    checkin_id,
                    "review_comment",
                    comment,
                )
                claimed = await self._checkins.find_one_and_update(
                    {"_id": checkin_id, "review_pending": True},
                    {
                        "$set": {
                            "review": {
                                "state": decision,
                                "by": ctx.identity.user_id,
                                "at": self._clock.now(),
                                "comment": sealed,
                                "settled": False,
                            },
                            **({} if accept else {"status": str(CheckinStatus.REJECTED)}),
                        },
                        "$unset": {"review_pending": ""},
                    },
                    return_document=ReturnDocument.AFTER,
                )
                if claimed is None:
                    raise Conflict("This check-in was reviewed already.", code="already_reviewed")
                doc = claimed
            # The obligation follows, then the review is marked settled: a retry after a
            # crash between the two finishes the work instead of refusing it.
            obligation_status = None
            if doc.get("occurrence_id"):
                obligation_status = await self._obligations.settle_review(
                    doc["occurrence_id"], checkin_id, accept, doc["arrived_at"]
                )
            # Before the review is settled: a retry after a crash here still tells the person
            # (once: the notice is keyed on the check-in).
            await self._notices.notify(
                NoticeKind.CHECKIN_ACCEPTED if accept else NoticeKind.CHECKIN_REJECTED,
                doc["subject_id"],
                "checkin",
                checkin_id,
                fields={"at": moment_text(doc["arrived_at"]), "reason": reason_text(comment)},
            )
            await self._checkins.update_one({"_id": checkin_id}, {"$set": {"review.settled": True}})
        return {
            "id": checkin_id,
            "status": doc["status"],
            "review": decision,
            "obligation_id": doc.get("occurrence_id"),
            "obligation_status": obligation_status,
        }

    # --- reads for the console: one check-in, a person's history, the decided reviews --------

    async def detail(self, ctx: AuditContext, checkin_id: str) -> CheckinDetail:
        """One check-in as a reviewing officer sees it: the point and its accuracy, the area in
        force today, the station, the person's check-ins before it, and the review so far."""
        identity = ctx.identity
        doc = await self._checkins.find_one({"_id": checkin_id})
        if (
            doc is None
            or self._policy.scope(identity, "checkins.read") is Scope.NONE
            or not identity.reaches(doc["org_path"])
        ):
            raise NotFound("No such check-in.")
        subject = await self._subjects.document(doc["subject_id"])
        if subject is None or subject.get("status") == SubjectStatus.SHREDDED:
            raise NotFound("No such check-in.")
        where = await self._codec.open("checkins", doc["_id"], "location", doc["location"])
        earlier = (
            self._checkins.find(
                {"subject_id": doc["subject_id"], "arrived_at": {"$lt": doc["arrived_at"]}}
            )
            .sort("arrived_at", DESCENDING)
            .limit(RECENT_SHOWN)
        )
        recent = [
            await self._mapped(identity, other)
            async for other in earlier
            if identity.reaches(other["org_path"])
        ]
        area = await self._area_in_force(subject)
        station = await self._station(doc["org_path"])
        faces = self._subjects.sees_face(identity, subject)
        item = await self._mapped(identity, doc, where, faces=faces)
        await self._audit.record(
            ctx,
            "checkins.read",
            resource="checkin",
            resource_id=checkin_id,
            subject_id=doc["subject_id"],
        )
        return CheckinDetail(
            **item.__dict__,
            subject_name=await self._subjects.display_name(identity, doc["subject_id"]),
            captured_at=doc["captured_at"],
            coord_type=str(where.get("coord_type") or "wgs84"),
            distance_m=where.get("distance_m"),
            subject_photo=faces and subject.get("photo_id") is not None,
            area=area.to_doc() if area is not None else None,
            station=station,
            recent=recent,
        )

    async def history(
        self, ctx: AuditContext, subject_id: str, before: str | None, limit: int
    ) -> tuple[list[CheckinItem], str | None]:
        """A person's check-ins in the caller's scope, newest first, a page at a time (`before`
        is the last id of the previous page)."""
        identity = ctx.identity
        subject = await self._subjects.document(subject_id)
        if (
            subject is None
            or subject.get("status") == SubjectStatus.SHREDDED
            or self._policy.scope(identity, "checkins.read") is Scope.NONE
            or not identity.reaches(subject["org_path"])
        ):
            raise NotFound("No such case file.")
        query: dict[str, Any] = {"subject_id": subject_id}
        if before is not None:
            anchor = await self._checkins.find_one(
                {"_id": before, "subject_id": subject_id}, {"arrived_at": 1}
            )
            if anchor is None:
                raise InvalidInput("No such page.", details=[{"field": "cursor"}])
            query["$or"] = [
                {"arrived_at": {"$lt": anchor["arrived_at"]}},
                {"arrived_at": anchor["arrived_at"], "_id": {"$lt": before}},
            ]
        cursor = (
            self._checkins.find(query)
            .sort([("arrived_at", DESCENDING), ("_id", DESCENDING)])
            .limit(limit + 1)
        )
        docs = await cursor.to_list()
        faces = self._subjects.sees_face(identity, subject)
        items = [
            await self._mapped(identity, doc, faces=faces)
            for doc in docs[:limit]
            if identity.reaches(doc["org_path"])
        ]
        await self._audit.record(
            ctx,
            "checkins.read",
            resource="subject",
            resource_id=subject_id,
            subject_id=subject_id,
            details={"count": len(items)},
        )
        return items, (str(docs[limit - 1]["_id"]) if len(docs) > limit else None)

    async def decided(
        self, ctx: AuditContext, since: dt.datetime, until: dt.datetime, limit: int
    ) -> list[DecidedReview]:
        """Reviews decided in the caller's part of the tree between `since` and `until`, the
        latest first, with who decided (by name) and why."""
        identity = ctx.identity
        if identity.org_id is None or self._policy.scope(identity, "checkins.read") is Scope.NONE:
            return []
        query: dict[str, Any] = {"review.at": {"$gte": since, "$lt": until}}
        if not identity.unscoped:
            query["org_path"] = identity.org_id
        cursor = self._checkins.find(query).sort("review.at", DESCENDING).limit(limit)
        items = []
        names: dict[str, str | None] = {}
        async for doc in cursor:
            if not identity.reaches(doc["org_path"]):
                continue
            review = doc["review"]
            by = review.get("by")
            if by and by not in names:
                names[by] = await self._staff_name(by)
            items.append(
                DecidedReview(
                    id=doc["_id"],
                    subject_id=doc["subject_id"],
                    subject_name=await self._subjects.display_name(identity, doc["subject_id"]),
                    status=doc["status"],
                    flags=list(doc.get("flags") or []),
                    arrived_at=doc["arrived_at"],
                    decision=review["state"],
                    reviewed_at=review["at"],
                    reviewed_by=by,
                    reviewed_by_name=names.get(by) if by else None,
                    comment=await self._codec.open_text(
                        "checkins", doc["_id"], "review_comment", review.get("comment")
                    ),
                )
            )
        await self._audit.record(
            ctx,
            "checkins.read",
            resource="reviews",
            resource_id=identity.org_id,
            details={"count": len(items)},
        )
        return items

    async def _mapped(
        self,
        identity: Identity,
        doc: dict[str, Any],
        where: dict[str, Any] | None = None,
        *,
        faces: bool = False,
    ) -> CheckinItem:
        """A stored check-in as the console draws it (its point opened)."""
        if where is None:
            where = await self._codec.open("checkins", doc["_id"], "location", doc["location"])
        review = doc.get("review")
        comment = None
        by_name = None
        if review is not None:
            comment = await self._codec.open_text(
                "checkins", doc["_id"], "review_comment", review.get("comment")
            )
            by_name = await self._staff_name(review["by"]) if review.get("by") else None
        return CheckinItem(
            id=doc["_id"],
            subject_id=doc["subject_id"],
            arrived_at=doc["arrived_at"],
            status=doc["status"],
            flags=list(doc.get("flags") or []),
            lat=float(where["lat"]),
            lng=float(where["lng"]),
            accuracy=float(doc.get("accuracy") or where.get("accuracy") or 0),
            has_photo=doc.get("photo_id") is not None,
            photo_visible=faces and doc.get("photo_id") is not None,
            review=(
                review["state"]
                if review is not None
                else ("pending" if doc.get("review_pending") else None)
            ),
            reviewed_at=review.get("at") if review is not None else None,
            reviewed_by_name=by_name,
            review_comment=comment,
        )

    async def _staff_name(self, staff_id: str) -> str | None:
        if self._staff is None:
            return None
        member = await self._staff.lookup(staff_id)
        return str(member["name"]) if member is not None else None

    async def _area_in_force(self, subject: dict[str, Any]) -> Area | None:
        """The area a check-in of this person is judged against today (`_area`'s answer)."""
        context = await self._context(str(subject["_id"]), self._clock.now(), dt.timedelta(0))
        rules = await self._rules.for_org(str(subject["org_id"]))
        return await self._area(context, rules, subject["org_path"])

    async def _station(self, org_path: list[str]) -> StationMark | None:
        """The 司法所 a check-in was filed under and where its own area is centred."""
        for node in reversed(org_path):
            org = await self._orgs.get(node)
            if org.kind != OrgKind.STATION:
                continue
            docs = await self._orgs.areas_on([node])
            centre: Point | None = None
            if docs:
                area = Area.from_doc(docs[0]["area"])
                centre = area.widened(0).center
            return StationMark(
                id=org.id,
                name=org.name,
                lat=centre.lat if centre else None,
                lng=centre.lng if centre else None,
            )
        return None


@dataclass
class CheckinItem:
    """A stored check-in for an officer's map: where (WGS-84), when, what was flagged, and the
    review's outcome (None: none needed; "pending", "accepted" or "rejected")."""

    id: str
    subject_id: str
    arrived_at: dt.datetime
    status: str
    flags: list[str]
    lat: float
    lng: float
    accuracy: float
    has_photo: bool
    # Whether this caller may see the photo (`SubjectService.sees_face`).
    photo_visible: bool
    review: str | None
    reviewed_at: dt.datetime | None
    reviewed_by_name: str | None
    review_comment: str | None


@dataclass
class StationMark:
    id: str
    name: str
    lat: float | None
    lng: float | None


@dataclass
class CheckinDetail(CheckinItem):
    subject_name: str | None = None
    captured_at: dt.datetime | None = None
    # The coordinate system the device reported in; `lat`/`lng` are WGS-84 either way.
    coord_type: str = "wgs84"
    distance_m: float | None = None
    # Whether the person's enrolled (file) photo exists and this caller may see it.
    subject_photo: bool = False
    area: dict[str, Any] | None = None
    station: StationMark | None = None
    recent: list[CheckinItem] = field(default_factory=list)


@dataclass
class DecidedReview:
    id: str
    subject_id: str
    subject_name: str | None
    status: str
    flags: list[str]
    arrived_at: dt.datetime
    decision: str
    reviewed_at: dt.datetime
    reviewed_by: str | None
    reviewed_by_name: str | None
    comment: str | None

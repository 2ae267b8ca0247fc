"""Programs: one per legal status a person is under, with its lifecycle and the rules it enforces.

A person may be under several at once (corrections and drug rehabilitation, say). Each program
computes its deadlines and its obligation rules (what is due, how often, over which period) from
the effective rules of its jurisdiction; the scheduler materialises those rules into occurrences.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, IndexModel, ReturnDocument

from models.alerts import AlertService
from models.audit import AuditContext, AuditService
from models.clock import LOCAL_TZ, Clock
from models.codec import FieldCodec
from models.decision_notices import PROGRAM_TEXT, DecisionNoticeService, NoticeKind, day_text
from models.errors import Conflict, Forbidden, InvalidInput, NotFound
from models.identity import Identity
from models.ids import parse_id
from models.orgs import STATION_DEPTH, node_at
from models.periods import add_years
from models.policy import HEALTH_FIELDS, Role, sees_health
from models.program_types import PROGRAM_KINDS, Opening, TypeFields
from models.program_types.base import ObligationRule, ProgramStatus, ProgramType
from models.program_types.base import as_date as _date
from models.program_types.community_corrections import LEVELS, level_on
from models.program_types.mental_health import subsidy_eligibility
from models.rules import EffectiveRules, RulesService
from models.scope import ScopeService
from models.store import CollectionSpec, Store, still_there
from models.subjects import SubjectService
from models.workdays import WorkdayCalendar

PROGRAMS = CollectionSpec(
    "programs",
    (
        IndexModel([("subject_id", ASCENDING), ("status", ASCENDING)]),
        IndexModel([("org_path", ASCENDING), ("type", ASCENDING), ("status", ASCENDING)]),
        # The case list's program-state filter: a node's programs in one state, of any type.
        IndexModel([("org_path", ASCENDING), ("status", ASCENDING)]),
    ),
)
# A number per station, raised after every change to one of its programs: the dashboard keeps
# each station's program figures in memory and counts them again only when it has moved (a
# county's 5,000 programs counted whole cost 0.4 s a figure on the embedded database).
GENERATIONS = CollectionSpec("program_generations", (IndexModel([("org_path", ASCENDING)]),))

# The lifecycle: a transition not listed here answers 409 with the current state.
TRANSITIONS: dict[ProgramStatus, frozenset[ProgramStatus]] = {
    ProgramStatus.PENDING_INTAKE: frozenset({ProgramStatus.ACTIVE, ProgramStatus.ENDED}),
    ProgramStatus.ACTIVE: frozenset(
        {ProgramStatus.SUSPENDED, ProgramStatus.TRANSFERRED, ProgramStatus.ENDED}
    ),
    ProgramStatus.SUSPENDED: frozenset({ProgramStatus.ACTIVE, ProgramStatus.ENDED}),
    ProgramStatus.TRANSFERRED: frozenset({ProgramStatus.ACTIVE, ProgramStatus.ENDED}),
    ProgramStatus.ENDED: frozenset(),
}
OPEN_STATUSES = (
    ProgramStatus.PENDING_INTAKE,
    ProgramStatus.ACTIVE,
    ProgramStatus.SUSPENDED,
    ProgramStatus.TRANSFERRED,
)

# Under supervision, as a monthly report counts its people (a transferred program is the
# receiving side's; an ended one is over).
SUPERVISED_STATUSES = (
    ProgramStatus.PENDING_INTAKE,
    ProgramStatus.ACTIVE,
    ProgramStatus.SUSPENDED,
)
# 解除/终止: how a program may end by decision.
TERMINATION_KINDS = ("completed", "revoked", "died", "other")


@dataclass
class ProgramView:
    id: str
    subject_id: str
    type: str
    status: str
    start_date: str
    end_date: str | None
    rules_version: str
    details: dict[str, Any] = field(default_factory=dict)
    obligation_rules: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    version: int = 1


def obligation_rules(doc: dict[str, Any], rules: EffectiveRules) -> list[ObligationRule]:
    """The recurring obligations a program imposes over its term, period by period (each
    type's own, models/program_types/)."""
    return PROGRAM_KINDS[ProgramType(doc["type"])].obligation_rules(doc, rules)


class ProgramService:
    collections = (PROGRAMS, GENERATIONS)
    # Where this service keeps fields sealed with a subject's data key (for key rotation).
    # `reasons`: the reasons people give (risk and level changes, transitions), one sealed
    # value each, cited by id from the entry that gave it.
    sealed_fields = (("programs", "sealed"), ("programs", "reasons"))

    def __init__(
        self,
        store: Store,
        clock: Clock,
        audit: AuditService,
        codec: FieldCodec,
        subjects: SubjectService,
        rules: RulesService,
        calendar: WorkdayCalendar,
        alerts: AlertService,
        *,
        notices: DecisionNoticeService,
        scope: ScopeService,
    ):
        self._programs = store.collection(PROGRAMS)
        self._notices = notices
        self._clock = clock
        self._audit = audit
        self._codec = codec
        self._subjects = subjects
        self._scope = scope
        self._rules = rules
        self._calendar = calendar
        self._alerts = alerts
        self._listeners: list[Callable[[dict[str, Any]], Awaitable[Any]]] = []
        self._generations = store.collection(GENERATIONS)
        self._station_figures: dict[str, _StationFigures] = {}

    def subscribe(self, listener: Callable[[dict[str, Any]], Awaitable[Any]]) -> None:
        """Call `listener` with a program's document after every change that alters what it
        asks for (the scheduler replans from it)."""
        self._listeners.append(listener)

    async def _changed(self, doc: dict[str, Any]) -> None:
        await self._moved_on([doc["org_path"]])
        for listener in self._listeners:
            await listener(doc)

    async def document(self, program_id: str) -> dict[str, Any] | None:
        """The raw program document, for services acting without a caller (sweeps)."""
        return await self._programs.find_one({"_id": parse_id(program_id, "program")})

    async def rules_for_org(self, org_id: str) -> EffectiveRules:
        return await self._rules.for_org(org_id)

    async def open_programs(self) -> AsyncIterator[dict[str, Any]]:
        async for doc in self._programs.find({"status": {"$in": [str(s) for s in OPEN_STATUSES]}}):
            yield doc

    async def programs_of(self, subject_id: str) -> AsyncIterator[dict[str, Any]]:
        async for doc in self._programs.find({"subject_id": subject_id}):
            yield doc

    def today(self) -> dt.date:
        return self._clock.now().astimezone(LOCAL_TZ).date()

    # --- creation -----------------------------------------------------------------------------

    async def create(
        self,
        ctx: AuditContext,
        subject_id: str,
        data: dict[str, Any],
        *,
        from_program: dict[str, Any] | None = None,
    ) -> ProgramView:
        subject = await self._scope.require(ctx, subject_id, "programs.create")
        kind = ProgramType(data["type"])
        if ctx.identity.role == Role.HEALTH_WORKER and kind is not ProgramType.MENTAL_HEALTH:
            raise InvalidInput(
                "A health worker opens mental-health programs only.", details=[{"field": "type"}]
            )
        clash = await self._programs.find_one(
            {
                "subject_id": subject_id,
                "type": str(kind),
                "status": {"$in": [str(s) for s in OPEN_STATUSES]},
            }
        )
        if clash is not None:
            raise Conflict(
                f"An open {kind} program exists for this person.",
                code="exists",
                details={"id": str(clash["_id"]), "status": clash["status"]},
            )
        rules = await self._rules.for_org(str(subject["org_id"]))
        start = _date(data["start_date"])
        program_id = ObjectId()
        pid = str(program_id)
        typed = self._type_fields(kind, data, start, rules, from_program)
        details, status, start, end = typed.details, typed.status, typed.start, typed.end
        sealed = {
            name: await self._codec.seal(
                subject_id, subject.get("dek_id"), "programs", pid, name, value
            )
            for name, value in typed.sealed.items()
            if value is not None
        }
        now = self._clock.now()
        doc = {
            "_id": program_id,
            "subject_id": subject_id,
            "org_id": subject["org_id"],
            "org_path": subject["org_path"],
            "type": str(kind),
            "status": str(status),
            "start_date": start.isoformat(),
            "end_date": end.isoformat() if end else None,
            "details": details,
            "sealed": sealed,
            "rules_version": rules.version,
            "history": [
                {
                    "to": str(status),
                    "at": now,
                    "by": ctx.identity.user_id,
                    "reason": "opened",
                    "rules_version": rules.version,
                }
            ],
            "created_at": now,
            "updated_at": now,
            "version": 1,
        }
        async with self._audit.change(
            ctx,
            "programs.create",
            resource="program",
            resource_id=pid,
            subject_id=subject_id,
            details={"type": str(kind), "rules_version": rules.version},
        ):
            await self._programs.insert_one(doc)
        if kind is ProgramType.COMMUNITY_CORRECTIONS:
            # 社区矫正法 Art. 58: a minor when corrections began stays under the juvenile rules.
            await self._subjects.note_corrections_start(subject_id, start)
        await self._refresh_populations(subject_id)
        await self._changed(doc)
        if kind is ProgramType.MENTAL_HEALTH:
            await self._alert_high_risk(doc, int(details["risk_level"]), start)
        return await self._view(ctx.identity, doc, subject)

    def _type_fields(
        self,
        kind: ProgramType,
        data: dict[str, Any],
        start: dt.date,
        rules: EffectiveRules,
        from_program: dict[str, Any] | None,
    ) -> TypeFields:
        """A program's type-specific details, its fields to seal, first status and term (each
        type's own, models/program_types/)."""
        end = _date(data["end_date"]) if data.get("end_date") else None
        if end is not None and end <= start:
            raise InvalidInput(
                "The end date must come after the start date.", details=[{"field": "end_date"}]
            )
        opening = Opening(data, start, end, rules, from_program, self._clock.now(), self._calendar)
        return PROGRAM_KINDS[kind].fields(opening)

    # --- reads ----------------------------------------------------------------------------------

    async def list_for_subject(self, ctx: AuditContext, subject_id: str) -> list[ProgramView]:
        subject = await self._scope.require(ctx, subject_id, "programs.read")
        views = [
            await self._view(ctx.identity, doc, subject)
            async for doc in self._programs.find({"subject_id": subject_id}).sort(
                "created_at", ASCENDING
            )
        ]
        await self._audit.record(
            ctx,
            "programs.read",
            resource="subject",
            resource_id=subject_id,
            subject_id=subject_id,
            details={"count": len(views)},
        )
        return views

    async def _load(
        self, ctx: AuditContext, program_id: str, action: str
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        doc = await self._programs.find_one({"_id": parse_id(program_id, "program")})
        if doc is None:
            raise NotFound("No such program.")
        subject = await self._scope.require(ctx, doc["subject_id"], action)
        return doc, subject

    async def get(self, ctx: AuditContext, program_id: str) -> ProgramView:
        doc, subject = await self._load(ctx, program_id, "programs.read")
        return await self._view(ctx.identity, doc, subject)

    async def _view(
        self, identity: Identity, doc: dict[str, Any], subject: dict[str, Any]
    ) -> ProgramView:
        pid = str(doc["_id"])
        rules = await self._rules.for_org(str(doc["org_id"]))
        details = dict(doc["details"])
        health = doc["type"] == ProgramType.MENTAL_HEALTH
        assigned = identity.user_id in {
            *subject.get("assignments", {}).get("social_worker_ids", []),
            *subject.get("assignments", {}).get("grid_worker_ids", []),
        }
        # Health data: health roles and the assigned workers only (精神卫生法 Art. 4).
        health_visible = sees_health(identity, assigned)
        if health and not health_visible:
            details = {k: v for k, v in details.items() if k not in HEALTH_FIELDS}
        else:
            for name, blob in (doc.get("sealed") or {}).items():
                details[name] = await self._codec.open("programs", pid, name, blob)
        if health and health_visible:
            details["subsidy"] = self.subsidy_eligibility(doc, rules)
            details["risk_history"] = await self._reasons_opened(
                pid, doc, doc["details"].get("risk_history", [])
            )
        if doc["type"] == ProgramType.COMMUNITY_CORRECTIONS:
            details["supervision_level_today"] = level_on(doc["details"], self.today())
        if "level_history" in details:
            details["level_history"] = await self._reasons_opened(
                pid, doc, details["level_history"]
            )
        return ProgramView(
            id=pid,
            subject_id=doc["subject_id"],
            type=doc["type"],
            status=doc["status"],
            start_date=doc["start_date"],
            end_date=doc.get("end_date"),
            rules_version=doc["rules_version"],
            details=_jsonable(details),
            obligation_rules=[]
            if health and not health_visible
            else [r.as_dict() for r in obligation_rules(doc, rules)],
            history=_jsonable(await self._reasons_opened(pid, doc, doc.get("history", []))),
            version=int(doc.get("version", 1)),
        )

    async def _seal_reason(
        self, doc: dict[str, Any], subject: dict[str, Any], reason: str
    ) -> tuple[str, dict[str, Any]]:
        """A reason someone gave about the person, sealed with their key in the `reasons`
        container: (its id, for the entry that cites it; the `$set` that stores it)."""
        reason_id = f"reason_{ObjectId()}"
        sealed = await self._codec.seal(
            doc["subject_id"], subject.get("dek_id"), "programs", str(doc["_id"]), reason_id, reason
        )
        return reason_id, {f"reasons.{reason_id}": sealed}

    async def _reasons_opened(
        self, pid: str, doc: dict[str, Any], entries: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """History entries with their sealed reasons opened (older entries carry theirs in the
        clear, as do the system's own: "opened", "intake")."""
        reasons = doc.get("reasons") or {}
        opened = []
        for entry in entries:
            entry = dict(entry)
            if entry.get("reason_id") in reasons:
                reason_id = entry.pop("reason_id")
                entry["reason"] = await self._codec.open(
                    "programs", pid, reason_id, reasons[reason_id]
                )
            opened.append(entry)
        return opened

    async def rules_for(self, doc: dict[str, Any]) -> list[ObligationRule]:
        return obligation_rules(doc, await self._rules.for_org(str(doc["org_id"])))

    async def open_program(self, subject_id: str, kind: ProgramType) -> dict[str, Any] | None:
        """The person's open program of `kind`, for services deciding on it (leave, sanctions,
        e-location); the caller has already checked its scope on the case file."""
        return await self._programs.find_one(
            {
                "subject_id": subject_id,
                "type": str(kind),
                "status": {"$in": [str(s) for s in OPEN_STATUSES]},
            }
        )

    async def prohibitions(self, doc: dict[str, Any]) -> list[str]:
        """The 禁止令 recorded (sealed) on a corrections program; empty when there are none."""
        blob = (doc.get("sealed") or {}).get("prohibitions")
        if blob is None:
            return []
        return list(await self._codec.open("programs", str(doc["_id"]), "prohibitions", blob))

    # --- lifecycle ---------------------------------------------------------------------------

    async def transition(
        self,
        ctx: AuditContext,
        program_id: str,
        to: str,
        reason: str,
        *,
        effective: dt.date | None = None,
        extra: dict[str, Any] | None = None,
    ) -> ProgramView:
        """Move the program to `to`; `extra` fields are set in the same guarded write (a
        termination's certificate, say)."""
        doc, subject = await self._load(ctx, program_id, "programs.manage")
        try:
            target = ProgramStatus(to)
        except ValueError:
            raise InvalidInput(f"Unknown status {to!r}.", details=[{"field": "to"}]) from None
        current = ProgramStatus(doc["status"])
        if target not in TRANSITIONS[current]:
            raise Conflict(
                f"A program that is {current} cannot become {target}.",
                code="invalid_transition",
                details={"status": str(current)},
            )
        now = self._clock.now()
        rules = await self._rules.for_org(str(doc["org_id"]))
        reason_id, sealed_reason = await self._seal_reason(doc, subject, reason)
        update: dict[str, Any] = {
            "status": str(target),
            "updated_at": now,
            **(extra or {}),
            **sealed_reason,
        }
        if target is ProgramStatus.ENDED:
            update["ended_on"] = (effective or self.today()).isoformat()
            update["end_reason_id"] = reason_id
        chained = None
        async with self._audit.change(
            ctx,
            "programs.transition",
            resource="program",
            resource_id=program_id,
            subject_id=doc["subject_id"],
            reason=reason,
            details={"from": str(current), "to": str(target), "rules_version": rules.version},
        ):
            updated = await self._programs.find_one_and_update(
                {"_id": doc["_id"], "status": str(current)},
                {
                    "$set": update,
                    "$push": {
                        "history": {
                            "from": str(current),
                            "to": str(target),
                            "at": now,
                            "by": ctx.identity.user_id,
                            "reason_id": reason_id,
                            "rules_version": rules.version,
                        }
                    },
                    "$inc": {"version": 1},
                },
                return_document=ReturnDocument.AFTER,
            )
            if updated is None:
                fresh = await self._programs.find_one({"_id": doc["_id"]})
                raise Conflict(
                    "The program changed meanwhile.",
                    code="invalid_transition",
                    details={"status": fresh["status"] if fresh else None},
                )
        if (
            target is ProgramStatus.ENDED
            and doc["type"] == ProgramType.COMMUNITY_CORRECTIONS
            and reason == "completed"
        ):
            # 解除: a completed sentence chains into 安置帮教, counted from its end.
            ended = dict(updated, end_date=update["ended_on"])
            chained = await self.create(
                ctx,
                doc["subject_id"],
                {
                    "type": ProgramType.RESETTLEMENT,
                    "start_date": update["ended_on"],
                    "release_date": update["ended_on"],
                },
                from_program=ended,
            )
        await self._refresh_populations(doc["subject_id"])
        await self._changed(updated)
        view = await self._view(ctx.identity, updated, subject)
        if chained is not None:
            view.details["chained_program_id"] = chained.id
        return view

    async def terminate(
        self,
        ctx: AuditContext,
        program_id: str,
        kind: str,
        on: dt.date,
        certificate_number: str | None = None,
        *,
        community_rehab: bool = False,
        rehab_end: dt.date | None = None,
    ) -> ProgramView:
        """解除/终止: the program ends on `on` for `kind` (completed, revoked, died, other). A
        completed corrections term gets its certificate (解除证明书, 社区矫正法 Art. 44) and
        chains into 安置帮教 through `transition`. 社区戒毒 ended with a 社区康复 decision
        (`community_rehab`, until `rehab_end` or the longest term) chains into the 社区康复
        program from `on`, linked both ways, each keeping its history."""
        if kind not in TERMINATION_KINDS:
            raise InvalidInput(
                "The kind is completed, revoked, died or other.", details=[{"field": "kind"}]
            )
        doc, _ = await self._load(ctx, program_id, "programs.manage")
        if on > self.today():
            raise InvalidInput("The date is in the future.", details=[{"field": "date"}])
        if on < _date(doc["start_date"]):
            raise InvalidInput(
                "The date comes before the program began.", details=[{"field": "date"}]
            )
        if community_rehab:
            await self._check_rehab_decision(doc, kind, on, rehab_end)
        elif rehab_end is not None:
            raise InvalidInput(
                "An end date needs a 社区康复 decision.",
                details=[{"field": "community_rehab.end_date"}],
            )
        termination: dict[str, Any] = {
            "kind": kind,
            "on": on.isoformat(),
            "by": ctx.identity.user_id,
            "certificate": None,
        }
        if certificate_number is not None and (
            kind != "completed" or doc["type"] != ProgramType.COMMUNITY_CORRECTIONS
        ):
            raise InvalidInput(
                "A certificate is issued only when a corrections term is completed.",
                details=[{"field": "certificate_number"}],
            )
        if kind == "completed" and doc["type"] == ProgramType.COMMUNITY_CORRECTIONS:
            termination["certificate"] = {
                "kind": "release_certificate",
                # The bureau's own numbering when given; else one derived from the program.
                "number": certificate_number or f"JC-{on:%Y%m%d}-{program_id[-8:].upper()}",
                "issued_on": on.isoformat(),
                "issued_by": ctx.identity.user_id,
            }
        if community_rehab:
            termination["community_rehab"] = True
        view = await self.transition(
            ctx,
            program_id,
            str(ProgramStatus.ENDED),
            kind,
            effective=on,
            extra={"details.termination": termination},
        )
        if community_rehab:
            # 禁毒法 Art. 48: the 社区康复 decided on ending 社区戒毒 follows it, linked.
            rehab = await self.create(
                ctx,
                doc["subject_id"],
                {
                    "type": ProgramType.DRUG_REHAB,
                    "mode": "community_rehab",
                    "start_date": on,
                    "end_date": rehab_end,
                },
                from_program=doc,
            )
            await self._programs.update_one(
                {"_id": doc["_id"]},
                {"$set": {"details.chained_program_id": rehab.id}, "$inc": {"version": 1}},
            )
            view.details["chained_program_id"] = rehab.id
            view.version += 1
        return view

    async def _check_rehab_decision(
        self, doc: dict[str, Any], kind: str, on: dt.date, rehab_end: dt.date | None
    ) -> None:
        """A 社区康复 decision ends 社区戒毒 only, completed or otherwise decided, for at most
        `drug_rehab.rehab_max_term_years` from the day it ends: checked before anything is
        written, so the chain is never half made."""
        if (
            doc["type"] != ProgramType.DRUG_REHAB
            or doc["details"].get("mode") != "community_detox"
            or kind not in ("completed", "other")
        ):
            raise InvalidInput(
                "A 社区康复 decision ends 社区戒毒 only (completed or other).",
                details=[{"field": "community_rehab"}],
                message_zh="只有社区戒毒期满或经决定终止时，才能转为社区康复。",
            )
        if rehab_end is None:
            return
        rules = await self._rules.for_org(str(doc["org_id"]))
        longest = add_years(on, rules.int("drug_rehab.rehab_max_term_years"))
        if not on < rehab_end <= longest:
            raise InvalidInput(
                "社区康复 ends after it begins and lasts at most its statutory term.",
                details=[{"field": "community_rehab.end_date", "latest": longest.isoformat()}],
                message_zh=f"社区康复期限不得超过法定期限（最迟至{longest.isoformat()}）。",
            )

    async def relocate(
        self, ctx: AuditContext, subject_id: str, org_id: str, org_path: list[str]
    ) -> int:
        """执行地变更: the person's open programs follow the case file to its new station, and
        what lies ahead is replanned there (the listeners hear of each program)."""
        query = {"subject_id": subject_id, "status": {"$in": [str(s) for s in OPEN_STATUSES]}}
        left = [doc["org_path"] async for doc in self._programs.find(query, {"org_path": 1})]
        async with self._audit.change(
            ctx,
            "programs.relocate",
            resource="subject",
            resource_id=subject_id,
            subject_id=subject_id,
            details={"to": org_id},
        ):
            result = await self._programs.update_many(
                query,
                {
                    "$set": {
                        "org_id": ObjectId(org_id),
                        "org_path": org_path,
                        "updated_at": self._clock.now(),
                    },
                    "$inc": {"version": 1},
                },
            )
        await self._moved_on(left)
        async for doc in self._programs.find(query):
            await self._changed(doc)
        return result.modified_count

    async def receive_release_notice(
        self,
        ctx: AuditContext,
        subject_id: str,
        *,
        release_date: dt.date,
        received_on: dt.date,
        prison: str,
    ) -> ProgramView:
        """A prison's release notice (司法部 1999 衔接 notice: about a month ahead) opens the
        安置帮教 program pending intake, its 帮教期 and intake deadline counted from release,
        and alerts the station of the coming release. A notice received fewer than
        `resettlement.release_notice_days` before release is flagged late, on the program and
        in the alert."""
        if ctx.identity.role == Role.HEALTH_WORKER:
            raise Forbidden("A health worker opens mental-health programs only.")
        if received_on > self.today():
            raise InvalidInput(
                "The notice cannot be received in the future.",
                details=[{"field": "received_on"}],
                message_zh="收到通知的日期不能晚于今天。",
            )
        if release_date < received_on:
            raise InvalidInput(
                "The release date comes before the notice was received.",
                details=[{"field": "release_date"}],
                message_zh="释放日期不能早于收到通知的日期。",
            )
        if release_date > add_years(received_on, 1):
            # A notice comes weeks ahead; years ahead is a typing slip (and a 帮教期 past the
            # calendar's end).
            raise InvalidInput(
                "The release date is more than a year after the notice.",
                details=[{"field": "release_date"}],
                message_zh="释放日期距收到通知的日期超过一年，请核对。",
            )
        view = await self.create(
            ctx,
            subject_id,
            {
                "type": ProgramType.RESETTLEMENT,
                "start_date": release_date,
                "release_date": release_date,
                "prison": prison,
                "release_notice": {"received_on": received_on},
            },
        )
        doc = await self.document(view.id)
        if doc is None:
            raise NotFound("No such program.")
        notice = doc["details"]["release_notice"]
        await self._alerts.raise_alert(
            kind="release_coming",
            org_id=str(doc["org_id"]),
            org_path=doc["org_path"],
            subject_id=subject_id,
            details={
                "program_id": view.id,
                "release_date": release_date.isoformat(),
                "received_on": received_on.isoformat(),
                "intake_due": doc["details"]["intake_due"],
                "late": notice["late"],
                "days_ahead": notice["days_ahead"],
                "rule": notice["rule"],
                "rules_version": notice["rules_version"],
            },
            dedupe_key=f"release_coming:{view.id}",
        )
        return view

    async def record_intake(self, ctx: AuditContext, program_id: str, on: dt.date) -> ProgramView:
        """The person reported: the program becomes active; a late report is flagged."""
        doc, subject = await self._load(ctx, program_id, "programs.manage")
        if doc["status"] != ProgramStatus.PENDING_INTAKE:
            raise Conflict(
                "Intake is recorded once, on a pending program.",
                code="invalid_transition",
                details={"status": doc["status"]},
            )
        due = _date(doc["details"]["intake_due"])
        late = on > due
        async with self._audit.change(
            ctx,
            "programs.intake",
            resource="program",
            resource_id=program_id,
            subject_id=doc["subject_id"],
            details={"late": late},
        ):
            updated = await self._programs.find_one_and_update(
                {"_id": doc["_id"], "status": str(ProgramStatus.PENDING_INTAKE)},
                {
                    "$set": {
                        "status": str(ProgramStatus.ACTIVE),
                        "details.intake_done": on.isoformat(),
                        "details.intake_late": late,
                        "updated_at": self._clock.now(),
                    },
                    "$push": {
                        "history": {
                            "from": str(ProgramStatus.PENDING_INTAKE),
                            "to": str(ProgramStatus.ACTIVE),
                            "at": self._clock.now(),
                            "by": ctx.identity.user_id,
                            "reason": "intake",
                            "rules_version": doc["rules_version"],
                        }
                    },
                    "$inc": {"version": 1},
                },
                return_document=ReturnDocument.AFTER,
            )
        if updated is None:
            raise Conflict("The program changed meanwhile.", code="invalid_transition")
        await self._changed(updated)
        return await self._view(ctx.identity, updated, subject)

    async def change_level(
        self, ctx: AuditContext, program_id: str, level: str, on: dt.date, reason: str
    ) -> ProgramView:
        doc, subject = await self._load(ctx, program_id, "programs.manage")
        if doc["type"] != ProgramType.COMMUNITY_CORRECTIONS:
            raise Conflict("Only a corrections program has a supervision level.", code="wrong_type")
        if level not in LEVELS:
            raise InvalidInput(
                "The level is strict, normal or lenient.", details=[{"field": "level"}]
            )
        reason_id, sealed_reason = await self._seal_reason(doc, subject, reason)
        return await self._push_change(
            ctx,
            doc,
            subject,
            "programs.level",
            "level_history",
            {"level": level, "from": on.isoformat(), "reason_id": reason_id},
            also=sealed_reason,
        )

    async def change_risk(
        self, ctx: AuditContext, program_id: str, level: int, on: dt.date, reason: str
    ) -> ProgramView:
        doc, subject = await self._load(ctx, program_id, "programs.manage")
        if doc["type"] != ProgramType.MENTAL_HEALTH:
            raise Conflict("Only a mental-health program has a risk level.", code="wrong_type")
        if not 0 <= level <= 5:
            raise InvalidInput("The risk level is 0 to 5.", details=[{"field": "level"}])
        reason = reason.strip()
        if not reason:
            raise InvalidInput("State the reason.", details=[{"field": "reason"}])
        # The reason is health data about the person: sealed under their key, shown only
        # with the risk history (to those who see health data).
        reason_id, sealed_reason = await self._seal_reason(doc, subject, reason)
        view = await self._push_change(
            ctx,
            doc,
            subject,
            "programs.risk",
            "risk_history",
            {
                "level": level,
                "at": on.isoformat(),
                "recorded_at": self._clock.now(),
                "reason_id": reason_id,
            },
            also={"details.risk_level": level, **sealed_reason},
        )
        await self._alert_high_risk(doc, level, on)
        return view

    async def record_incident(self, ctx: AuditContext, program_id: str, on: dt.date) -> ProgramView:
        """An incident (肇事肇祸) in a mental-health program: it costs that year's subsidy."""
        doc, subject = await self._load(ctx, program_id, "programs.manage")
        if doc["type"] != ProgramType.MENTAL_HEALTH:
            raise Conflict("Only a mental-health program records incidents.", code="wrong_type")
        return await self._push_change(
            ctx, doc, subject, "programs.incident", "incidents", {"on": on.isoformat()}
        )

    async def _push_change(
        self,
        ctx: AuditContext,
        doc: dict[str, Any],
        subject: dict[str, Any],
        action: str,
        history_field: str,
        entry: dict[str, Any],
        also: dict[str, Any] | None = None,
    ) -> ProgramView:
        rules = await self._rules.for_org(str(doc["org_id"]))
        entry = {**entry, "by": ctx.identity.user_id, "rules_version": rules.version}
        async with self._audit.change(
            ctx,
            action,
            resource="program",
            resource_id=str(doc["_id"]),
            subject_id=doc["subject_id"],
            details={"rules_version": rules.version},
        ):
            updated = await self._programs.find_one_and_update(
                {"_id": doc["_id"]},
                {
                    "$push": {f"details.{history_field}": entry},
                    "$set": {"updated_at": self._clock.now(), **(also or {})},
                    "$inc": {"version": 1},
                },
                return_document=ReturnDocument.AFTER,
            )
            updated = still_there(updated)
        await self._changed(updated)
        return await self._view(ctx.identity, updated, subject)

    def subsidy_eligibility(self, doc: dict[str, Any], rules: EffectiveRules) -> dict[str, Any]:
        """以奖代补 by calendar year, up to this year (models/program_types/mental_health.py)."""
        return subsidy_eligibility(doc, rules, self.today())

    async def retention_expired(self, today: dt.date) -> list[str]:
        """Subjects whose every program ended more than their jurisdiction's retention period
        ago (`retention.shred_after_years`; 0 = never): due for crypto-shredding."""
        pipeline: list[dict[str, Any]] = [
            {
                "$group": {
                    "_id": "$subject_id",
                    "open": {
                        "$sum": {
                            "$cond": [{"$in": ["$status", [str(s) for s in OPEN_STATUSES]]}, 1, 0]
                        }
                    },
                    "last_end": {"$max": "$ended_on"},
                    "org_id": {"$first": "$org_id"},
                }
            },
            {"$match": {"open": 0, "last_end": {"$ne": None}}},
        ]
        due = []
        async for row in await self._programs.aggregate(pipeline):
            rules = await self._rules.for_org(str(row["org_id"]))
            years = rules.int("retention.shred_after_years")
            if years > 0 and add_years(_date(row["last_end"]), years) <= today:
                due.append(str(row["_id"]))
        return due

    async def alert_ending(self, today: dt.date, within_days: int = 30) -> int:
        """Alert the station once about each program whose term ends within `within_days`:
        解除 needs its certificate, and resettlement its hand-over, prepared in time."""
        raised = 0
        horizon = (today + dt.timedelta(days=within_days)).isoformat()
        cursor = self._programs.find(
            {
                "status": {"$in": [str(s) for s in OPEN_STATUSES]},
                "end_date": {"$ne": None, "$gte": today.isoformat(), "$lte": horizon},
            }
        )
        async for doc in cursor:
            pid = str(doc["_id"])
            await self._alerts.raise_alert(
                kind="program_ending",
                org_id=str(doc["org_id"]),
                org_path=doc["org_path"],
                subject_id=doc["subject_id"],
                details={"program_id": pid, "type": doc["type"], "end_date": doc["end_date"]},
                dedupe_key=f"program_ending:{pid}",
            )
            # The person is told too, once per end date (a changed term is told again).
            await self._notices.notify(
                NoticeKind.PROGRAM_ENDING,
                doc["subject_id"],
                "program",
                pid,
                step=doc["end_date"],
                fields={
                    "program": PROGRAM_TEXT.get(doc["type"], ""),
                    "end": day_text(doc["end_date"]),
                },
            )
            raised += 1
        return raised

    async def _alert_high_risk(self, doc: dict[str, Any], level: int, on: dt.date) -> None:
        """Risk level 3 or above: the police and the health worker in scope are alerted."""
        rules = await self._rules.for_org(str(doc["org_id"]))
        if level < rules.int("mental_health.alert_police_from_level"):
            return
        pid = str(doc["_id"])
        await self._alerts.raise_alert(
            kind="mental_health_high_risk",
            org_id=str(doc["org_id"]),
            org_path=doc["org_path"],
            subject_id=doc["subject_id"],
            details={
                "program_id": pid,
                "risk_level": level,
                "on": on.isoformat(),
                "for_roles": ["police", "health_worker"],
                "rules_version": rules.version,
            },
            dedupe_key=f"high_risk:{pid}:{on.isoformat()}:{level}",
        )

    async def alert_missed_intakes(self, today: dt.date) -> int:
        """Alert the station of every program whose intake deadline passed without a report.
        Idempotent: each program's alert is raised once, whenever the sweep runs."""
        raised = 0
        cursor = self._programs.find(
            {
                "status": str(ProgramStatus.PENDING_INTAKE),
                "details.intake_due": {"$lt": today.isoformat()},
                "details.intake_alerted": {"$ne": True},
            }
        )
        async for doc in cursor:
            pid = str(doc["_id"])
            await self._alerts.raise_alert(
                kind="intake_overdue",
                org_id=str(doc["org_id"]),
                org_path=doc["org_path"],
                subject_id=doc["subject_id"],
                details={
                    "program_id": pid,
                    "type": doc["type"],
                    "due": doc["details"]["intake_due"],
                },
                dedupe_key=f"intake_overdue:{pid}",
            )
            await self._programs.update_one(
                {"_id": doc["_id"]}, {"$set": {"details.intake_alerted": True}}
            )
            raised += 1
        return raised

    async def _refresh_populations(self, subject_id: str) -> None:
        types = await self._programs.distinct(
            "type", {"subject_id": subject_id, "status": {"$in": [str(s) for s in OPEN_STATUSES]}}
        )
        await self._subjects.set_populations(subject_id, sorted(types))

    # --- aggregates for the dashboard (models/dashboard.py) ------------------------------------

    async def count_by_unit(
        self, org_id: str, depth: int, today: dt.date, ended_since: dt.date
    ) -> list[dict[str, Any]]:
        """Programs under a node counted by unit (the path's node at `depth`), type and status,
        with the supervision level in force today (corrections), whether the intake deadline
        has passed unreported, and how those ended since `ended_since` ended. The database
        counts; only files whose level was changed by decision are read, for `level_on`."""
        day = today.isoformat()
        supervised = [str(s) for s in SUPERVISED_STATUSES]
        unit = node_at(depth)
        pipeline: list[dict[str, Any]] = [
            {"$match": {"org_path": org_id}},
            {
                "$group": {
                    "_id": {
                        "u": unit,
                        "type": "$type",
                        "status": "$status",
                        "strict": {"$gt": ["$details.strict_until", day]},
                        "level": "$details.supervision_level",
                        "changed": {
                            "$gt": [{"$size": {"$ifNull": ["$details.level_history", []]}}, 0]
                        },
                        # "" sorts above a missing date: no deadline, never overdue.
                        "overdue": {
                            "$and": [
                                {"$eq": ["$status", str(ProgramStatus.PENDING_INTAKE)]},
                                {"$gt": ["$details.intake_due", ""]},
                                {"$lt": ["$details.intake_due", day]},
                            ]
                        },
                        "outcome": {
                            "$cond": [
                                {
                                    "$and": [
                                        {"$eq": ["$status", str(ProgramStatus.ENDED)]},
                                        {"$gte": ["$ended_on", ended_since.isoformat()]},
                                    ]
                                },
                                {"$ifNull": ["$details.termination.kind", "other"]},
                                None,
                            ]
                        },
                    },
                    "n": {"$sum": 1},
                }
            },
        ]
        groups: list[dict[str, Any]] = []
        async for group in await self._programs.aggregate(pipeline):
            key = group["_id"]
            level = None
            if key["type"] == ProgramType.COMMUNITY_CORRECTIONS and key["status"] in supervised:
                if key.get("changed") and not key.get("strict"):
                    continue  # read below: the level in force depends on the dated changes
                level = "strict" if key.get("strict") else (key.get("level") or "normal")
            groups.append({**key, "level": level, "n": group["n"]})
        async for doc in self._programs.find(
            {
                "org_path": org_id,
                "type": str(ProgramType.COMMUNITY_CORRECTIONS),
                "status": {"$in": supervised},
                "details.level_history.0": {"$exists": True},
            },
            {"org_path": 1, "status": 1, "details": 1},
        ):
            details = doc["details"]
            if str(details.get("strict_until") or "") > day:
                continue  # counted as 严管 above
            path = doc.get("org_path") or []
            groups.append(
                {
                    "u": path[depth] if len(path) > depth else None,
                    "type": str(ProgramType.COMMUNITY_CORRECTIONS),
                    "status": doc["status"],
                    "level": level_on(
                        {**details, "strict_until": details.get("strict_until") or "0001-01-01"},
                        today,
                    ),
                    "overdue": False,
                    "outcome": None,
                    "n": 1,
                }
            )
        return groups

    async def count_people(self, org_id: str, depth: int) -> dict[Any, int]:
        """People under a node with at least one program in force (awaiting intake, active or
        suspended), by unit (the path's node at `depth`): under two programs, counted once."""
        pipeline = [
            {
                "$match": {
                    "org_path": org_id,
                    "status": {"$in": [str(s) for s in SUPERVISED_STATUSES]},
                }
            },
            {
                "$group": {
                    "_id": "$subject_id",
                    "u": {"$first": node_at(depth)},
                }
            },
            {"$group": {"_id": "$u", "n": {"$sum": 1}}},
        ]
        return {g["_id"]: g["n"] async for g in await self._programs.aggregate(pipeline)}

    # --- the dashboard's program figures, kept per station -------------------------------------

    async def _moved_on(self, paths: list[list[str]]) -> None:
        """Raise the generation of the stations these program paths lie in (after the change:
        a dashboard that counted meanwhile holds the older number and counts again)."""
        for station in {tuple(str(n) for n in path[:STATION_DEPTH]) for path in paths}:
            await self._generations.update_one(
                {"_id": "/".join(station)},
                {"$inc": {"g": 1}, "$setOnInsert": {"org_path": list(station)}},
                upsert=True,
            )

    async def figures_by_station(
        self,
        org_id: str,
        depth: int,
        stations: list[list[str]],
        today: dt.date,
        ended_since: dt.date,
    ) -> tuple[list[dict[str, Any]], dict[Any, int]]:
        """`count_by_unit` and `count_people` for a node (`stations`: the paths of its
        stations), each station's counted anew only when one of its programs changed since
        (its generation) or the day turned; the rest from this process's memory. A station's
        figures are as current as its generation, raised after each change is written (a
        process killed in between leaves them a change behind until the day turns)."""
        generations = {
            doc["_id"]: doc.get("g")
            async for doc in self._generations.find({"org_path": org_id}, {"g": 1})
        }
        groups: list[dict[str, Any]] = []
        people: dict[Any, int] = {}
        for path in stations:
            key = "/".join(path)
            mark = (generations.get(key), today, ended_since)
            kept = self._station_figures.get(key)
            if kept is None or kept.mark != mark:
                station = path[-1]
                kept = _StationFigures(
                    mark,
                    await self.count_by_unit(station, STATION_DEPTH - 1, today, ended_since),
                    sum((await self.count_people(station, STATION_DEPTH - 1)).values()),
                )
                self._station_figures[key] = kept
            unit = path[depth] if depth < len(path) else None
            groups.extend({**group, "u": unit} for group in kept.groups)
            people[unit] = people.get(unit, 0) + kept.people
        return groups, people


@dataclass(frozen=True)
class _StationFigures:
    mark: tuple[Any, dt.date, dt.date]
    groups: list[dict[str, Any]]
    people: int


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return value

"""Unauthorised absences (擅自离开) of people in drug rehabilitation, counted toward 严重违反协议.

戒毒条例 Art. 20 counts as a serious breach of the agreement leaving the county without
permission `drug_rehab.serious_breach_absences` times, or for more than
`drug_rehab.serious_breach_absent_days` days in total. Staff record each absence found (its
dates, how it became known, a note sealed with the person's data key); the absences of one
program (its term is the agreement period) are counted against both limits, and crossing one
raises the serious-breach alert for the police (Art. 21), as refused drug tests do.
"""

from __future__ import annotations

import builtins  # `list` in a service class names its method; `builtins.list` the type
import datetime as dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, IndexModel

from models.alerts import AlertService
from models.audit import AuditContext, AuditService
from models.clock import LOCAL_TZ, Clock
from models.codec import FieldCodec
from models.errors import Conflict, InvalidInput
from models.programs import ProgramService, ProgramType
from models.rules import EffectiveRules
from models.scope import ScopeService
from models.store import CollectionSpec, Store
from models.subjects import SubjectService

ABSENCES = CollectionSpec(
    "absences",
    (
        # The tally: one program's absences (and the overlap check), in date order.
        IndexModel([("program_id", ASCENDING), ("from_date", ASCENDING)]),
        # A person's absences, whichever program they fell in.
        IndexModel([("subject_id", ASCENDING), ("from_date", ASCENDING)]),
    ),
)

COUNT_RULE = "drug_rehab.serious_breach_absences"
DAYS_RULE = "drug_rehab.serious_breach_absent_days"
MAX_LIST = 500


class Discovery(enum.StrEnum):
    """How the absence became known."""

    VISIT = "visit"  # a home visit (走访) found the person away
    CONTACT = "contact"  # unreachable by phone or at a report
    DRUG_TEST = "drug_test"  # away when a test was due
    POLICE = "police"  # told by the police
    COMMUNITY = "community"  # told by family, neighbours or the community
    SELF_REPORT = "self_report"  # the person said so afterwards
    OTHER = "other"


@dataclass
class Tally:
    """A program's absences against the two limits of 戒毒条例 Art. 20."""

    absences: int
    absent_days: int
    max_absences: int
    max_absent_days: int
    # The rules crossed: each raised its serious-breach alert.
    breached: list[str]
    rules_version: str


@dataclass
class AbsenceView:
    id: str
    subject_id: str
    program_id: str
    from_date: str
    to_date: str
    days: int
    discovered_via: str
    note: str | None
    recorded_by: str
    recorded_at: dt.datetime
    rules_version: str


def absent_days(start: dt.date, end: dt.date) -> int:
    """Days away, counting the day of leaving and the day of return: away 1-3 March is 3 days.

    Art. 20 measures time spent away, not a period running from an event: 刑事诉讼法 Art. 105
    (the start day not counted) governs periods such as the 15 days to report, not how long
    someone was gone. A day the person was away for part of is a day they were not where the
    agreement keeps them, so both ends count, as leave days count in models/leave.py."""
    return (end - start).days + 1


def _overlap(a_start: dt.date, a_end: dt.date, b_start: dt.date, b_end: dt.date) -> bool:
    return max(a_start, b_start) <= min(a_end, b_end)


class AbsenceService:
    collections = (ABSENCES,)
    # Where this service keeps fields sealed with a subject's data key (for key rotation).
    sealed_fields = (("absences", None),)

    def __init__(
        self,
        store: Store,
        clock: Clock,
        audit: AuditService,
        codec: FieldCodec,
        subjects: SubjectService,
        programs: ProgramService,
        alerts: AlertService,
        *,
        scope: ScopeService,
    ):
        self._absences = store.collection(ABSENCES)
        self._clock = clock
        self._audit = audit
        self._codec = codec
        self._subjects = subjects
        self._scope = scope
        self._programs = programs
        self._alerts = alerts

    def today(self) -> dt.date:
        return self._clock.now().astimezone(LOCAL_TZ).date()

    async def record(
        self,
        ctx: AuditContext,
        subject_id: str,
        *,
        start: dt.date,
        end: dt.date,
        discovered_via: Discovery,
        note: str,
    ) -> tuple[AbsenceView, Tally]:
        """Record an absence found, then count the program's absences against Art. 20."""
        subject = await self._scope.require(ctx, subject_id, "absences.record")
        if end < start:
            raise InvalidInput(
                "The absence ends before it starts.",
                details=[{"field": "to_date"}],
                message_zh="返回日期早于离开日期。",
            )
        if end > self.today():
            raise InvalidInput(
                "An absence is recorded once it has ended: the return lies ahead.",
                details=[{"field": "to_date"}],
                message_zh="返回日期不能晚于今天。",
            )
        program = await self._programs.open_program(subject_id, ProgramType.DRUG_REHAB)
        if program is None:
            raise Conflict(
                "Only a person in drug rehabilitation has absences counted (戒毒条例 Art. 20).",
                code="not_in_drug_rehab",
                message_zh="该人员不在社区戒毒（康复）期间，无需登记擅自离开。",
            )
        # The agreement period is the program's term: from its start to the day before its end
        # date (the end date is exclusive, as for the program's obligation windows).
        term_start = dt.date.fromisoformat(program["start_date"])
        term_end = dt.date.fromisoformat(program["end_date"]) if program["end_date"] else None
        if start < term_start:
            raise InvalidInput(
                "The absence begins before the program's term.",
                details=[{"field": "from_date", "type": "outside_term"}],
                message_zh="离开日期早于社区戒毒（康复）期限的开始日。",
            )
        if term_end is not None and end >= term_end:
            raise InvalidInput(
                "The absence ends after the program's term.",
                details=[{"field": "to_date", "type": "outside_term"}],
                message_zh="返回日期晚于社区戒毒（康复）期限。",
            )
        program_id = str(program["_id"])
        others = await self._program_absences(program_id)
        clash = next(
            (
                doc
                for doc in others
                if _overlap(
                    start,
                    end,
                    dt.date.fromisoformat(doc["from_date"]),
                    dt.date.fromisoformat(doc["to_date"]),
                )
            ),
            None,
        )
        if clash is not None:
            # Counted twice, the same days would cross the limit that they do not.
            raise InvalidInput(
                "The dates overlap an absence already recorded.",
                details=[{"field": "from_date", "type": "overlap", "id": str(clash["_id"])}],
                message_zh="所选日期与已登记的擅自离开重叠。",
            )
        rules = await self._programs.rules_for_org(str(program["org_id"]))
        absence_id = ObjectId()
        aid = str(absence_id)
        note = " ".join(note.split())
        now = self._clock.now()
        days = absent_days(start, end)
        doc = {
            "_id": absence_id,
            "subject_id": subject_id,
            "program_id": program_id,
            "from_date": start.isoformat(),
            "to_date": end.isoformat(),
            "days": days,
            "discovered_via": str(discovered_via),
            "note": (
                await self._codec.seal(
                    subject_id, subject.get("dek_id"), "absences", aid, "note", note
                )
                if note
                else None
            ),
            "recorded_by": ctx.identity.user_id,
            "recorded_at": now,
            "rules_version": rules.version,
        }
        async with self._audit.change(
            ctx,
            "absences.record",
            resource="absence",
            resource_id=aid,
            subject_id=subject_id,
            details={
                "program_id": program_id,
                "days": days,
                "discovered_via": str(discovered_via),
                "rules_version": rules.version,
            },
        ):
            await self._absences.insert_one(doc)
        tally = await self._check(program, rules)
        return await self._view(doc), tally

    async def list(
        self, ctx: AuditContext, subject_id: str
    ) -> tuple[list[AbsenceView], Tally | None]:
        """A person's absences, oldest first, with the open program's tally (None without one)."""
        await self._scope.require(ctx, subject_id, "absences.read")
        docs = (
            await self._absences.find({"subject_id": subject_id})
            .sort("from_date", ASCENDING)
            .limit(MAX_LIST)
            .to_list()
        )
        program = await self._programs.open_program(subject_id, ProgramType.DRUG_REHAB)
        tally = None
        if program is not None:
            rules = await self._programs.rules_for_org(str(program["org_id"]))
            # Checked, not only counted: an absence stored by a writer that stopped before its
            # alert gets the alert now (each rule's alert is raised once).
            tally = await self._check(program, rules)
        await self._audit.record(
            ctx,
            "absences.read",
            resource="absence",
            subject_id=subject_id,
            details={"count": len(docs)},
        )
        return [await self._view(doc) for doc in docs], tally

    async def _program_absences(self, program_id: str) -> builtins.list[dict[str, Any]]:
        return (
            await self._absences.find(
                {"program_id": program_id}, {"from_date": 1, "to_date": 1, "days": 1}
            )
            .sort("from_date", ASCENDING)
            .to_list()
        )

    @staticmethod
    def _tally(docs: builtins.list[dict[str, Any]], rules: EffectiveRules) -> Tally:
        count, days = len(docs), sum(int(doc["days"]) for doc in docs)
        max_count, max_days = rules.int(COUNT_RULE), rules.int(DAYS_RULE)
        breached = []
        # "三次以上": the third absence is a breach; "累计超过30日": the 31st day is.
        if count >= max_count:
            breached.append(COUNT_RULE)
        if days > max_days:
            breached.append(DAYS_RULE)
        return Tally(count, days, max_count, max_days, breached, rules.version)

    async def _check(self, program: Mapping[str, Any], rules: EffectiveRules) -> Tally:
        """Count after the write, so two absences recorded at once still see each other; each
        rule crossed raises its alert once (a later absence finds it raised)."""
        program_id = str(program["_id"])
        tally = self._tally(await self._program_absences(program_id), rules)
        for rule in tally.breached:
            await self._alerts.raise_alert(
                kind="serious_breach",
                org_id=str(program["org_id"]),
                org_path=program["org_path"],
                subject_id=program["subject_id"],
                details={
                    "program_id": program_id,
                    "absences": tally.absences,
                    "absent_days": tally.absent_days,
                    "limit": tally.max_absences if rule == COUNT_RULE else tally.max_absent_days,
                    "rule": rule,
                    "rules_version": rules.version,
                    "for_roles": ["police"],
                },
                dedupe_key=f"serious_breach:{program_id}:{rule}",
            )
        return tally

    async def _view(self, doc: Mapping[str, Any]) -> AbsenceView:
        aid = str(doc["_id"])
        note = doc.get("note")
        return AbsenceView(
            id=aid,
            subject_id=doc["subject_id"],
            program_id=doc["program_id"],
            from_date=doc["from_date"],
            to_date=doc["to_date"],
            days=doc["days"],
            discovered_via=doc["discovered_via"],
            note=await self._codec.open("absences", aid, "note", note) if note else None,
            recorded_by=doc["recorded_by"],
            recorded_at=doc["recorded_at"],
            rules_version=doc["rules_version"],
        )

"""Unauthorised absences of people in drug rehabilitation (戒毒条例 Art. 20): staff record what
they found, and each answer shows the program's count against the serious-breach limits."""

from __future__ import annotations

import datetime as dt

from pydantic import Field

from handlers.base import BaseHandler, Out, Strict, endpoint, path_id
from models.absences import AbsenceView, Discovery, Tally


class AbsenceBody(Strict):
    from_date: dt.date
    to_date: dt.date
    discovered_via: Discovery
    note: str = Field(default="", max_length=2000)


class AbsenceOut(Out):
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

    @classmethod
    def of(cls, view: AbsenceView) -> AbsenceOut:
        return cls(**view.__dict__)


class TallyOut(Out):
    absences: int
    absent_days: int
    max_absences: int
    max_absent_days: int
    breached: list[str]
    rules_version: str

    @classmethod
    def of(cls, tally: Tally) -> TallyOut:
        return cls(**tally.__dict__)


class AbsenceRecorded(Out):
    absence: AbsenceOut
    tally: TallyOut


class AbsenceList(Out):
    items: list[AbsenceOut]
    # The open drug-rehabilitation program's count; null without one.
    tally: TallyOut | None


class SubjectAbsencesHandler(BaseHandler):
    access = {"GET": "absences.read", "POST": "absences.record"}

    @endpoint(
        "A person's recorded absences, oldest first, with the open drug-rehabilitation "
        "program's count against 戒毒条例 Art. 20",
        response=AbsenceList,
        errors=(404,),
        tags=("obligations",),
    )
    async def get(self, subject_id: str) -> None:
        views, tally = await self.ctx.absences.list(self.audit_context, subject_id)
        self.respond(
            AbsenceList(
                items=[AbsenceOut.of(v) for v in views],
                tally=TallyOut.of(tally) if tally else None,
            )
        )

    @endpoint(
        "Record an unauthorised absence of a person in drug rehabilitation (days count both "
        "ends); the third, or a total over 30 days, raises the serious-breach alert",
        body=AbsenceBody,
        response=AbsenceRecorded,
        status=201,
        errors=(404, 409, 422),
        tags=("obligations",),
    )
    async def post(self, subject_id: str) -> None:
        body = self.parse(AbsenceBody)
        view, tally = await self.ctx.absences.record(
            self.audit_context,
            subject_id,
            start=body.from_date,
            end=body.to_date,
            discovered_via=body.discovered_via,
            note=body.note,
        )
        self.respond(
            AbsenceRecorded(absence=AbsenceOut.of(view), tally=TallyOut.of(tally)), status=201
        )


routes = [
    (rf"/api/v1/subjects/{path_id('subject_id')}/absences", SubjectAbsencesHandler),
]

"""The optional wellbeing survey a person answers with a check-in: mood, needs, and the PHQ-2 and
GAD-2 screens. A need opens an assistance request for the worker; a screen at or above its
cut-off (rules `wellbeing.phq2_alert_from`, `wellbeing.gad2_alert_from`) alerts the assigned
worker. The answers are sealed with the person's key; one survey per check-in, at most."""

from __future__ import annotations

import datetime as dt
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.errors import DuplicateKeyError

from models.alerts import AlertService
from models.assistance import REQUEST_NEEDS, AssistanceService
from models.audit import AuditContext, AuditService
from models.clock import LOCAL_TZ, Clock
from models.codec import FieldCodec
from models.errors import Forbidden, InvalidInput
from models.rules import EffectiveRules, RulesService
from models.scope import ScopeService
from models.store import CollectionSpec, Store
from models.subjects import SubjectService

WELLBEING_ANSWERS = CollectionSpec(
    "wellbeing_answers",
    # A person's surveys, newest first (the staff view); the id is the check-in's.
    (IndexModel([("subject_id", ASCENDING), ("created_at", DESCENDING)]),),
)
ALERT_KIND = "wellbeing_screen"
RULE_NEEDS = "wellbeing.referral_needs"
RULE_CONTACT_DAYS = "wellbeing.contact_within_days"
# How many past surveys the staff view shows.
HISTORY_LIMIT = 50


class SurveyFileError(Exception):
    """The survey file is malformed: the process cannot serve the survey without it."""


@dataclass(frozen=True)
class Option:
    value: int | str
    label: str
    # The assistance need (models.assistance.REQUEST_NEEDS) a need option opens a request for.
    assistance: str | None = None


@dataclass(frozen=True)
class Question:
    id: str
    kind: str  # "single" (one option) or "multiple" (any of the options, none included)
    text: str
    options: tuple[Option, ...]
    screen: str | None = None
    preamble: str | None = None
    short: str | None = None

    def label_of(self, value: Any) -> str:
        return next((o.label for o in self.options if o.value == value), str(value))


@dataclass(frozen=True)
class Screen:
    id: str
    label: str
    rule: str
    items: tuple[str, ...]


@dataclass(frozen=True)
class Survey:
    """The questions, as models/data/wellbeing/survey.toml holds them."""

    version: str
    title: str
    intro: str
    skip_label: str
    questions: tuple[Question, ...]
    screens: Mapping[str, Screen]

    @classmethod
    def load(cls, text: str | None = None) -> Survey:
        if text is None:
            text = (
                resources.files("models").joinpath("data/wellbeing/survey.toml").read_text("utf-8")
            )
        try:
            document = tomllib.loads(text)
            questions = tuple(
                Question(
                    id=str(q["id"]),
                    kind=str(q["kind"]),
                    text=str(q["text"]),
                    options=tuple(
                        Option(o["value"], str(o["label"]), o.get("assistance"))
                        for o in q["options"]
                    ),
                    screen=q.get("screen"),
                    preamble=q.get("preamble"),
                    short=q.get("short"),
                )
                for q in document["questions"]
            )
            screens = {
                key: Screen(
                    key,
                    str(spec["label"]),
                    str(spec["rule"]),
                    tuple(q.id for q in questions if q.screen == key),
                )
                for key, spec in document["screens"].items()
            }
            survey = cls(
                version=str(document["version"]),
                title=str(document["title"]),
                intro=str(document["intro"]),
                skip_label=str(document["skip_label"]),
                questions=questions,
                screens=screens,
            )
        except (tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
            raise SurveyFileError(f"the wellbeing survey file is malformed: {exc}") from None
        for question in questions:
            if question.kind not in ("single", "multiple") or not question.options:
                raise SurveyFileError(f"question {question.id}: a kind and options are needed")
            if question.screen is not None and question.screen not in screens:
                raise SurveyFileError(f"question {question.id}: unknown screen {question.screen}")
            for option in question.options:
                if option.assistance is not None and option.assistance not in REQUEST_NEEDS:
                    raise SurveyFileError(f"question {question.id}: unknown assistance need")
        for screen in screens.values():
            if not screen.items:
                raise SurveyFileError(f"screen {screen.id} has no items")
        return survey

    def question(self, question_id: str) -> Question:
        return next(q for q in self.questions if q.id == question_id)

    def check(self, answers: Mapping[str, Any]) -> dict[str, Any]:
        """The answers given (a skipped question is absent), or InvalidInput naming each wrong
        one in Chinese, under `survey.<question id>`."""
        known = {q.id: q for q in self.questions}
        problems: list[dict[str, str]] = []
        checked: dict[str, Any] = {}
        for key, value in answers.items():
            question = known.get(key)
            if question is None:
                problems.append({"field": f"survey.{key}", "message": "问卷中没有这一项"})
                continue
            if value is None or (question.kind == "multiple" and value == []):
                continue  # skipped
            offered = [o.value for o in question.options]
            values = value if isinstance(value, list) else [value]
            fits = isinstance(value, list) == (question.kind == "multiple") and all(
                type(v) is type(offered[0]) and v in offered for v in values
            )
            if not fits or len(set(map(str, values))) != len(values):
                labels = "、".join(o.label for o in question.options)
                problems.append(
                    {
                        "field": f"survey.{key}",
                        "message": f"问卷“{question.text}”一项：请从给出的选项中选择（{labels}）",
                    }
                )
                continue
            checked[key] = list(values) if question.kind == "multiple" else value
        if problems:
            raise InvalidInput(
                "The survey's answers do not fit its questions.",
                code="invalid_survey",
                details=problems,
                message_zh=problems[0]["message"] + "。",
            )
        return checked

    def scores(self, answers: Mapping[str, Any]) -> dict[str, int]:
        """Each screen whose items were all answered, with its score."""
        return {
            screen.id: sum(int(answers[item]) for item in screen.items)
            for screen in self.screens.values()
            if all(item in answers for item in screen.items)
        }

    def needs(self, answers: Mapping[str, Any]) -> list[str]:
        return list(answers.get("needs") or [])

    def as_doc(self) -> dict[str, Any]:
        """The survey as the mini-program renders it."""
        return {
            "version": self.version,
            "title": self.title,
            "intro": self.intro,
            "skip_label": self.skip_label,
            "questions": [
                {
                    "id": q.id,
                    "kind": q.kind,
                    "preamble": q.preamble,
                    "text": q.text,
                    "options": [{"value": o.value, "label": o.label} for o in q.options],
                }
                for q in self.questions
            ],
        }


@dataclass(frozen=True)
class SurveyOutcome:
    """What one survey set off (ids only: the answers stay sealed)."""

    checkin_id: str
    referral_id: str | None
    alert_id: str | None


@dataclass
class WellbeingView:
    checkin_id: str
    created_at: dt.datetime
    survey_version: str
    rules_version: str
    # None for a caller who does not see health data on the file.
    answers: dict[str, Any] | None
    scores: dict[str, int] | None
    reached: list[str] | None
    summary_zh: list[str] | None
    referral_id: str | None
    alert_id: str | None


class WellbeingService:
    collections = (WELLBEING_ANSWERS,)
    # The answers: sealed with the person's data key.
    sealed_fields = (("wellbeing_answers", None),)

    def __init__(
        self,
        store: Store,
        clock: Clock,
        audit: AuditService,
        codec: FieldCodec,
        subjects: SubjectService,
        rules: RulesService,
        assistance: AssistanceService,
        alerts: AlertService,
        survey: Survey,
        *,
        scope: ScopeService,
    ):
        self._answers = store.collection(WELLBEING_ANSWERS)
        self._clock = clock
        self._audit = audit
        self._codec = codec
        self._subjects = subjects
        self._scope = scope
        self._rules = rules
        self._assistance = assistance
        self._alerts = alerts
        self.survey = survey

    async def record(
        self, ctx: AuditContext, checkin_id: str, answers: Mapping[str, Any]
    ) -> SurveyOutcome | None:
        """Keep the calling person's answers to the survey sent with check-in `checkin_id`,
        open the assistance request and raise the alert they call for. None: nothing was
        answered. Sent again (a retried check-in), the first answers stand and nothing is
        opened twice; what a failure left undone is done then."""
        checked = self.survey.check(answers)
        if not checked:
            return None
        subject_id = ctx.identity.subject_id
        subject = await self._subjects.document(subject_id) if subject_id else None
        if subject is None or subject_id is None:
            raise Forbidden("Only a bound person answers the survey.", code="not_a_subject")
        rules = await self._rules.for_org(str(subject["org_id"]))
        now = self._clock.now()
        doc: dict[str, Any] = {
            "_id": checkin_id,
            "subject_id": subject_id,
            "org_id": str(subject["org_id"]),
            "org_path": list(subject["org_path"]),
            "answers": await self._codec.seal(
                subject_id,
                subject.get("dek_id"),
                WELLBEING_ANSWERS.name,
                checkin_id,
                "answers",
                checked,
            ),
            "survey_version": self.survey.version,
            "rules_version": rules.version,
            "referral_id": None,
            "alert_id": None,
            "created_at": now,
        }
        try:
            async with self._audit.change(
                ctx,
                "wellbeing.record",
                resource="wellbeing_answer",
                resource_id=checkin_id,
                subject_id=subject_id,
                details={"questions": sorted(checked), "survey_version": self.survey.version},
            ):
                await self._answers.insert_one(doc)
        except DuplicateKeyError:
            existing = await self._answers.find_one({"_id": checkin_id})
            if existing is None or existing["subject_id"] != subject_id:
                raise
            doc = existing
            checked = await self._codec.open(
                WELLBEING_ANSWERS.name, checkin_id, "answers", existing["answers"]
            )
        return await self._act(ctx, doc, checked, subject, rules)

    async def _act(
        self,
        ctx: AuditContext,
        doc: dict[str, Any],
        answers: Mapping[str, Any],
        subject: Mapping[str, Any],
        rules: EffectiveRules,
    ) -> SurveyOutcome:
        checkin_id = str(doc["_id"])
        referral_id = doc.get("referral_id")
        alert_id = doc.get("alert_id")
        wanted = [n for n in self.survey.needs(answers) if n in set(rules[RULE_NEEDS])]
        if wanted and referral_id is None:
            question = self.survey.question("needs")
            assistance = [
                o.assistance for o in question.options if o.value in wanted and o.assistance
            ]
            note = "签到时填写身心状况问卷，表示需要以下方面的帮助：" + "、".join(
                question.label_of(n) for n in wanted
            )
            view = await self._assistance.request_from_subject(ctx, assistance, note + "。")
            referral_id = view.id
            await self._answers.update_one(
                {"_id": checkin_id}, {"$set": {"referral_id": referral_id}}
            )
        reached = self._reached(answers, rules)
        if reached and alert_id is None:
            alert_id = await self._raise(checkin_id, subject, reached, rules)
            await self._answers.update_one({"_id": checkin_id}, {"$set": {"alert_id": alert_id}})
        return SurveyOutcome(checkin_id, referral_id, alert_id)

    def _reached(self, answers: Mapping[str, Any], rules: EffectiveRules) -> list[str]:
        scores = self.survey.scores(answers)
        return [
            key
            for key, score in scores.items()
            if score >= rules.int(self.survey.screens[key].rule)
        ]

    async def _raise(
        self,
        checkin_id: str,
        subject: Mapping[str, Any],
        reached: Sequence[str],
        rules: EffectiveRules,
    ) -> str:
        """Alert the person's assigned social worker (none assigned: the station) that a
        contact is due, and by when."""
        workers = (subject.get("assignments") or {}).get("social_worker_ids") or []
        today = self._clock.now().astimezone(LOCAL_TZ).date()
        due = today + dt.timedelta(days=rules.int(RULE_CONTACT_DAYS))
        screens = "、".join(self.survey.screens[key].label for key in reached)
        return await self._alerts.raise_alert(
            kind=ALERT_KIND,
            org_id=str(subject["org_id"]),
            org_path=subject["org_path"],
            subject_id=str(subject["_id"]),
            to_user_id=workers[0] if workers else None,
            details={
                "checkin_id": checkin_id,
                "task": "contact",
                "due": due.isoformat(),
                "due_zh": f"签到时的身心状况问卷提示需要关心本人：请于 {due.isoformat()} 前"
                "联系本人（谈话或走访）了解近况，必要时安排心理辅导。",
                # Which screen reached its cut-off is health data: shown to those who see it.
                "wellbeing": {
                    "screens": list(reached),
                    "summary_zh": f"{screens}筛查达到关注分数",
                },
                "rule": [self.survey.screens[key].rule for key in reached] + [RULE_CONTACT_DAYS],
                "rules_version": rules.version,
            },
            dedupe_key=f"{ALERT_KIND}:{checkin_id}",
        )

    async def for_subject(self, ctx: AuditContext, subject_id: str) -> list[WellbeingView]:
        """A person's surveys, newest first; the answers only for a caller who sees the health
        data on the file (an assigned worker, a health worker)."""
        await self._scope.require(ctx, subject_id, "wellbeing.read")
        access = await self._scope.access(ctx.identity, [subject_id], "wellbeing.read")
        health = subject_id in access and access[subject_id].health
        cursor = (
            self._answers.find({"subject_id": subject_id})
            .sort("created_at", DESCENDING)
            .limit(HISTORY_LIMIT)
        )
        views = [await self._view(doc, health) async for doc in cursor]
        await self._audit.record(
            ctx,
            "wellbeing.read",
            resource="subject",
            resource_id=subject_id,
            subject_id=subject_id,
            details={"count": len(views), "answers": health},
        )
        return views

    async def _view(self, doc: Mapping[str, Any], health: bool) -> WellbeingView:
        answers = scores = reached = summary = None
        if health:
            answers = await self._codec.open(
                WELLBEING_ANSWERS.name, str(doc["_id"]), "answers", doc["answers"]
            )
            rules = await self._rules.for_org(str(doc["org_id"]))
            scores = self.survey.scores(answers)
            reached = self._reached(answers, rules)
            summary = self._summary(answers, scores, reached, rules)
        return WellbeingView(
            checkin_id=str(doc["_id"]),
            created_at=doc["created_at"],
            survey_version=doc["survey_version"],
            rules_version=doc["rules_version"],
            answers=answers,
            scores=scores,
            reached=reached,
            summary_zh=summary,
            referral_id=doc.get("referral_id"),
            alert_id=doc.get("alert_id"),
        )

    def _summary(
        self,
        answers: Mapping[str, Any],
        scores: Mapping[str, int],
        reached: Sequence[str],
        rules: EffectiveRules,
    ) -> list[str]:
        """The answers as a worker reads them, one line each."""
        lines = []
        for question in self.survey.questions:
            if question.screen is not None or question.id not in answers:
                continue
            value = answers[question.id]
            shown = (
                "、".join(map(question.label_of, value))
                if isinstance(value, list)
                else (question.label_of(value))
            )
            lines.append(f"{question.short or question.text}：{shown}")
        for key, score in scores.items():
            screen = self.survey.screens[key]
            cut = rules.int(screen.rule)
            verdict = f"达到 {cut} 分的关注分数" if key in reached else f"低于 {cut} 分"
            lines.append(f"{screen.label}：{score} 分（{verdict}）")
        return lines

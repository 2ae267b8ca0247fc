"""Official documents (文书): made from a decided record, numbered per county, kind and year,
stored sealed under the person's key, reprinted identically, voided and reissued.

A document is never typed in: its fields come from a record some level decided (a sanction, a
leave request, an e-location order, a transfer, an investigation, a program's intake or end),
through that record's own service, so the caller's scope is checked there. The templates
(models/data/documents/*.json) follow the national formats (司法部 社区矫正文书格式); a province
whose format differs overrides a template's keys in `provinces/<code>/<kind>.json`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.errors import DuplicateKeyError

from models.audit import AuditContext, AuditService
from models.clock import LOCAL_TZ, Clock, date_zh
from models.codec import FieldCodec
from models.decision_notices import DecisionNoticeService
from models.elocation import ElocationService
from models.errors import Conflict, InvalidInput, NotFound, Unavailable
from models.ids import parse_id
from models.investigations import InvestigationService
from models.leave import LeaveService
from models.orgs import Org, OrgKind, OrgService
from models.programs import ProgramService
from models.sanctions import SanctionService
from models.scope import ScopeService
from models.store import CollectionSpec, Store
from models.subjects import SubjectService
from models.transfers import TransferService

DATA = Path(__file__).parent / "data" / "documents"

DOCUMENTS = CollectionSpec(
    "documents",
    (
        IndexModel([("subject_id", ASCENDING), ("issued_at", ASCENDING)]),
        # The number: each (county, kind, year, seq) once. A number is taken only by storing the
        # document, so a clash means another request took it first: retry with the next.
        IndexModel(
            [
                ("county_id", ASCENDING),
                ("kind", ASCENDING),
                ("year", ASCENDING),
                ("seq", ASCENDING),
            ],
            unique=True,
        ),
        # One document in force per record and kind: voiding frees the key for the reissue.
        IndexModel([("live_key", ASCENDING)], unique=True, sparse=True),
    ),
)

MAX_LIST = 200
# Allocation attempts before giving up: each clash means another document was just stored.
MAX_ATTEMPTS = 64
PERSON_FIELDS = (
    ("姓名", "name"),
    ("性别", "gender"),
    ("出生日期", "birth_date"),
    ("居民身份证号码", "id_number"),
    ("居住地", "address"),
)
GENDER_TEXT = {"male": "男", "female": "女"}
LEVEL_TEXT = {"station": "司法所", "county": "县级社区矫正机构", "city": "市级社区矫正机构"}
SENTENCE_TEXT = {
    "control": "管制",
    "probation": "缓刑",
    "parole": "假释",
    "medical_parole": "暂予监外执行",
}
SUPERVISION_TEXT = {"strict": "严管", "normal": "普管", "lenient": "宽管"}
RECOMMENDATION_TEXT = {"suitable": "适宜社区矫正", "unsuitable": "不适宜社区矫正"}
GROUND_TEXT = {
    "breach_of_prohibition": "违反人民法院禁止令",
    "left_without_approval": "无正当理由，未经批准离开所居住的市、县",
    "refused_report_after_warning": "拒不按照规定报告自己的活动情况，被给予警告",
    "public_security_penalty": "违反监督管理规定，被给予治安管理处罚",
    "revocation_pending": "拟提请撤销缓刑、假释或者暂予监外执行收监执行",
}
SOURCES = ("sanction", "leave", "elocation", "transfer", "investigation", "program")
# Keys a province may not change: what the document is and where its fields come from.
FIXED_KEYS = ("kind", "source", "word", "match", "variant", "renewal")


class DocumentStatus:
    ISSUED = "issued"
    VOIDED = "voided"


@dataclass(frozen=True)
class Template:
    kind: str
    title: str
    word: str
    source: str
    issuer: str
    served: bool
    fields: list[Any]
    paragraphs: list[str]
    steps: bool = False
    copies: str | None = None
    match: str | None = None
    variant: str | None = None
    renewal: bool | None = None

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Template:
        if data["source"] not in SOURCES:
            raise ValueError(f"{data['kind']}: unknown source {data['source']!r}")
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})


class DocumentTemplates:
    """The national templates and each province's overrides, read once at start."""

    def __init__(
        self,
        national: Mapping[str, Template],
        provinces: Mapping[str, Mapping[str, Template]],
        abbreviations: Mapping[str, str],
    ):
        self.national = dict(national)
        self.provinces = {code: dict(kinds) for code, kinds in provinces.items()}
        self.abbreviations = dict(abbreviations)

    @classmethod
    def load(cls, root: Path = DATA) -> DocumentTemplates:
        raw = {
            path.stem: json.loads(path.read_text(encoding="utf-8"))
            for path in sorted(root.glob("*.json"))
            if path.stem != "abbreviations"
        }
        national = {kind: Template.of(data) for kind, data in raw.items()}
        provinces: dict[str, dict[str, Template]] = {}
        for path in sorted((root / "provinces").glob("*/*.json")):
            kind = path.stem
            if kind not in raw:
                raise ValueError(f"{path}: no national template {kind!r} to override")
            override = json.loads(path.read_text(encoding="utf-8"))
            if any(key in override for key in FIXED_KEYS):
                raise ValueError(f"{path}: {', '.join(FIXED_KEYS)} are the national template's")
            provinces.setdefault(path.parent.name, {})[kind] = Template.of(
                {**raw[kind], **override}
            )
        abbreviations = json.loads((root / "abbreviations.json").read_text(encoding="utf-8"))
        return cls(national, provinces, abbreviations["counties"])

    def kinds(self) -> list[str]:
        return list(self.national)

    def get(self, kind: str, province: str | None) -> Template:
        if kind not in self.national:
            raise InvalidInput(
                f"Unknown document kind {kind!r}.",
                details=[{"field": "kind", "allowed": self.kinds()}],
            )
        return self.provinces.get(province or "", {}).get(kind) or self.national[kind]

    def abbreviation(self, county: Org) -> str:
        configured = self.abbreviations.get(county.code)
        if configured:
            return configured
        name = county.name.removesuffix("司法局")
        for suffix in ("区", "县", "市"):
            if len(name) > 2 and name.endswith(suffix):
                return name.removesuffix(suffix)
        return name


@dataclass
class Record:
    """What a document is made from: the decided record's person, values and each step."""

    subject_id: str
    values: dict[str, Any]
    steps: list[list[str]] = field(default_factory=list)
    # The level whose decision was final (the issuer of a document signed by the decider).
    decider: str | None = None


@dataclass
class DocumentView:
    id: str
    subject_id: str
    kind: str
    title: str
    number: str
    status: str
    served: bool
    source: str
    record_id: str
    issued_on: str
    issued_at: dt.datetime
    sha256: str
    replaces: str | None = None
    replaced_by: str | None = None
    void_reason: str | None = None
    voided_at: dt.datetime | None = None
    content: dict[str, Any] | None = None


def canonical(content: Mapping[str, Any]) -> bytes:
    """The content as the hash covers it: sorted keys, no spaces, UTF-8."""
    return json.dumps(content, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


class _Blank(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "—"


def fill(text: str, values: Mapping[str, Any]) -> str:
    return text.format_map(_Blank({k: "—" if v in (None, "") else v for k, v in values.items()}))


def _date_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return date_zh(value.astimezone(LOCAL_TZ).date().isoformat())
    return date_zh(str(value)[:10])


def _steps(steps: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    return [
        [
            LEVEL_TEXT.get(step.get("level", ""), step.get("level", "")),
            "同意" if step.get("approve") else "不同意",
            step.get("comment") or "",
            _date_text(step.get("at")) or "",
        ]
        for step in steps
    ]


def not_decided(what: str) -> Conflict:
    return Conflict(
        f"The record is not decided ({what}); a document is made only from a decided record.",
        code="not_decided",
        message_zh="该记录尚未作出决定，不能制作文书。",
    )


class DocumentService:
    collections = (DOCUMENTS,)
    # Where this service keeps fields sealed with a subject's data key (for key rotation).
    sealed_fields = (("documents", None),)

    def __init__(
        self,
        store: Store,
        clock: Clock,
        audit: AuditService,
        codec: FieldCodec,
        subjects: SubjectService,
        orgs: OrgService,
        programs: ProgramService,
        sanctions: SanctionService,
        leave: LeaveService,
        elocation: ElocationService,
        transfers: TransferService,
        investigations: InvestigationService,
        templates: DocumentTemplates,
        *,
        notices: DecisionNoticeService,
        scope: ScopeService,
    ):
        self._docs = store.collection(DOCUMENTS)
        self._clock = clock
        self._audit = audit
        self._codec = codec
        self._subjects = subjects
        self._scope = scope
        self._orgs = orgs
        self._programs = programs
        self._sanctions = sanctions
        self._leave = leave
        self._elocation = elocation
        self._transfers = transfers
        self._investigations = investigations
        self._templates = templates
        self._notices = notices

    def kinds(self) -> list[str]:
        return self._templates.kinds()

    # --- the decided records --------------------------------------------------------------------

    async def _record(self, ctx: AuditContext, template: Template, record_id: str) -> Record:
        """The decided record behind a document of `template`'s kind, read through its own
        service (which checks the caller's scope); 409 `not_decided` when it is not decided."""
        source = template.source
        if source == "sanction":
            sanction = await self._sanctions.get(ctx, record_id)
            if sanction.kind != template.match:
                raise InvalidInput(
                    "The record is not of this document's kind.", details=[{"field": "kind"}]
                )
            if sanction.status != "approved":
                raise not_decided(sanction.status)
            values: dict[str, Any] = {
                "reason": sanction.reason,
                "decided_on": _date_text(sanction.decided_at),
            }
            values.update(await self._term(sanction.subject_id))
            return Record(sanction.subject_id, values, _steps(sanction.steps))
        if source == "leave":
            leave = await self._leave.get(ctx, record_id)
            if leave.status not in ("approved", "rejected"):
                raise not_decided(leave.status)
            approved = leave.status == "approved"
            values = {
                "start_date": _date_text(leave.start_date),
                "end_date": _date_text(leave.end_date),
                "days": leave.days,
                "destination": leave.destination,
                "reason": leave.reason,
                "decision_text": "批准" if approved else "不予批准",
                "decision_sentence": "准予外出" if approved else "不予批准外出",
            }
            decider = leave.steps[-1]["level"] if leave.steps else None
            return Record(leave.subject_id, values, _steps(leave.steps), decider)
        if source == "elocation":
            order = await self._elocation.get(ctx, record_id)
            if order.status not in ("approved", "ended"):
                raise not_decided(order.status)
            if bool(order.renews) != bool(template.renewal):
                raise InvalidInput(
                    "A first order and a renewal have documents of their own.",
                    details=[{"field": "kind"}],
                )
            values = {
                "ground_text": GROUND_TEXT.get(order.ground, order.ground),
                "start_date": _date_text(order.start_date),
                "end_date": _date_text(order.end_date),
                "reason": order.reason,
                "basis": "《中华人民共和国社区矫正法》第二十九条",
            }
            return Record(order.subject_id, values, _steps(order.steps))
        if source == "transfer":
            transfer = await self._transfers.get(ctx, record_id)
            if transfer.status not in ("accepted", "handed_over", "completed"):
                raise not_decided(transfer.status)
            values = {
                "from_org": (await self._orgs.get(transfer.from_org_id)).name,
                "to_org": (await self._orgs.get(transfer.to_org_id)).name,
                "reason": transfer.reason,
                "decided_on": _date_text(transfer.decided_on),
                "report_due": _date_text(transfer.report_due),
            }
            return Record(transfer.subject_id, values)
        if source == "investigation":
            investigation = await self._investigations.get(ctx, record_id)
            if investigation.status not in ("reported", "closed"):
                raise not_decided(investigation.status)
            recommendation = investigation.recommendation or ""
            values = {
                "court": investigation.court,
                "requested_on": _date_text(investigation.requested_on),
                "reported_on": _date_text(investigation.reported_on),
                "recommendation_text": RECOMMENDATION_TEXT.get(recommendation, recommendation),
                "recommendation_sentence": RECOMMENDATION_TEXT.get(recommendation, recommendation),
                "opinion": investigation.opinion,
            }
            return Record(investigation.subject_id, values)
        return await self._program_record(ctx, template, record_id)

    async def _program_record(
        self, ctx: AuditContext, template: Template, program_id: str
    ) -> Record:
        program = await self._programs.get(ctx, program_id)
        details = program.details
        wanted = {
            "intake": "community_corrections",
            "plan": "community_corrections",
            "end": "community_corrections",
            "detox_intake": "drug_rehab",
            "rehab": "drug_rehab",
            "handover": "resettlement",
        }[template.variant or ""]
        if program.type != wanted:
            raise InvalidInput(
                "The program is not of this document's kind.", details=[{"field": "kind"}]
            )
        variant = template.variant
        termination = details.get("termination") or {}
        if variant in ("intake", "detox_intake") and not details.get("intake_done"):
            raise not_decided("intake not recorded")
        if variant == "detox_intake" and details.get("mode") != "community_detox":
            raise InvalidInput("Not a 社区戒毒 program.", details=[{"field": "kind"}])
        if variant == "plan" and not details.get("plan"):
            raise not_decided("no plan on file")
        if variant == "end" and (
            program.status != "ended" or termination.get("kind") != "completed"
        ):
            raise not_decided(program.status)
        if variant == "rehab" and not (
            details.get("mode") == "community_rehab" and details.get("from_program_id")
        ):
            raise not_decided("no 社区康复 decision on file")
        if variant == "handover" and details.get("term_from") != "end_of_corrections":
            raise not_decided("not handed over from corrections")
        values: dict[str, Any] = {
            "start_date": _date_text(program.start_date),
            "end_date": _date_text(program.end_date),
            "sentence_type_text": SENTENCE_TEXT.get(details.get("sentence_type", ""), ""),
            "intake_done": _date_text(details.get("intake_done")),
            "level_text": SUPERVISION_TEXT.get(details.get("supervision_level_today", ""), ""),
            "plan": details.get("plan") if isinstance(details.get("plan"), str) else None,
            "ended_on": _date_text(termination.get("on")),
            "certificate_number": (termination.get("certificate") or {}).get("number"),
            "key_person_text": "是" if details.get("key_person") else "否",
        }
        if variant == "plan" and values["plan"] is None:
            values["plan"] = json.dumps(details.get("plan"), ensure_ascii=False)
        if variant == "handover":
            previous = await self._programs.document(str(details.get("from_program_id")))
            if previous is not None:
                values["from_start"] = _date_text(previous.get("start_date"))
                ended = (previous.get("details") or {}).get("termination") or {}
                values["from_end"] = _date_text(ended.get("on") or previous.get("end_date"))
        return Record(program.subject_id, values)

    async def _term(self, subject_id: str) -> dict[str, Any]:
        """The person's corrections term, for documents that name it."""
        program = None
        async for doc in self._programs.programs_of(subject_id):
            if doc["type"] == "community_corrections":
                program = doc
        if program is None:
            return {}
        return {
            "start_date": _date_text(program.get("start_date")),
            "end_date": _date_text(program.get("end_date")),
            "sentence_type_text": SENTENCE_TEXT.get(
                program["details"].get("sentence_type", ""), ""
            ),
        }

    # --- making ---------------------------------------------------------------------------------

    async def _content(
        self,
        ctx: AuditContext,
        template: Template,
        record: Record,
        subject: Mapping[str, Any],
        issuer: str,
        issued_on: dt.date,
    ) -> dict[str, Any]:
        person = (await self._subjects.read(ctx, record.subject_id)).fields
        values: dict[str, Any] = {
            **record.values,
            "name": person.get("name"),
            "gender": GENDER_TEXT.get(person.get("gender") or "", person.get("gender")),
            "birth_date": _date_text(person.get("birth_date")),
            "id_number": person.get("id_number"),
            "address": person.get("address"),
        }
        station = await self._orgs.ancestor(list(subject["org_path"]), OrgKind.STATION)
        county = await self._orgs.ancestor(list(subject["org_path"]), OrgKind.COUNTY)
        values["station"] = station.name if station else (county.name if county else "")
        values["county"] = county.name if county else ""
        fields: list[list[str]] = []
        for entry in template.fields:
            if entry == "@person":
                fields += [[label, str(values.get(key) or "—")] for label, key in PERSON_FIELDS]
            else:
                fields.append([entry[0], fill(entry[1], values)])
        return {
            "kind": template.kind,
            "title": template.title,
            "fields": fields,
            "paragraphs": [fill(p, values) for p in template.paragraphs],
            "steps": record.steps if template.steps else [],
            "issuer": issuer,
            "issued_on": issued_on.isoformat(),
            "served": template.served,
            "copies": template.copies,
        }

    async def _issuer(self, template: Template, record: Record, org_path: list[str]) -> Org:
        level = record.decider if template.issuer == "decider" else template.issuer
        kind = {"station": OrgKind.STATION, "county": OrgKind.COUNTY, "city": OrgKind.CITY}.get(
            level or "county", OrgKind.COUNTY
        )
        org = await self._orgs.ancestor(org_path, kind)
        if org is None:
            org = await self._orgs.ancestor(org_path, OrgKind.COUNTY)
        if org is None:
            raise Conflict("The person's file lies under no county.", code="no_county")
        return org

    async def make(self, ctx: AuditContext, kind: str, record_id: str) -> DocumentView:
        """Make the document of `kind` from the decided record `record_id`: numbered with the
        next number of the county, kind and year, its content sealed under the person's key and
        its hash audited. A record has one document of a kind in force (409 `already_issued`);
        once that is voided, making it again reissues it under a new number."""
        if kind not in self._templates.national:
            raise InvalidInput(
                f"Unknown document kind {kind!r}.",
                details=[{"field": "kind", "allowed": self.kinds()}],
            )
        national = self._templates.national[kind]
        record = await self._record(ctx, national, record_id)
        subject = await self._scope.require(ctx, record.subject_id, "documents.create")
        org_path = list(subject["org_path"])
        county = await self._orgs.ancestor(org_path, OrgKind.COUNTY)
        if county is None:
            raise Conflict("The person's file lies under no county.", code="no_county")
        city = await self._orgs.ancestor(org_path, OrgKind.CITY)
        province = city.code[:2] if city is not None and city.code[:2].isdigit() else None
        template = self._templates.get(kind, province)
        live_key = f"{kind}:{record_id}"
        existing = await self._docs.find_one({"live_key": live_key}, {"_id": 1})
        if existing is not None:
            raise _already_issued(str(existing["_id"]))
        voided = await self._docs.find_one(
            {"kind": kind, "record_id": record_id, "status": DocumentStatus.VOIDED},
            {"_id": 1},
            sort=[("issued_at", DESCENDING)],
        )
        now = self._clock.now()
        issued_on = now.astimezone(LOCAL_TZ).date()
        issuer = await self._issuer(template, record, org_path)
        content = await self._content(ctx, template, record, subject, issuer.name, issued_on)
        abbreviation = self._templates.abbreviation(county)
        document_id = ObjectId()
        did = str(document_id)
        for _ in range(MAX_ATTEMPTS):
            last = await self._docs.find_one(
                {"county_id": county.id, "kind": kind, "year": issued_on.year},
                {"seq": 1},
                sort=[("seq", DESCENDING)],
            )
            seq = (last["seq"] if last else 0) + 1
            number = f"〔{issued_on.year}〕{abbreviation}{template.word}字第{seq}号"
            numbered = {**content, "number": number}
            digest = hashlib.sha256(canonical(numbered)).hexdigest()
            doc = {
                "_id": document_id,
                "subject_id": record.subject_id,
                "org_path": org_path,
                "county_id": county.id,
                "kind": kind,
                "year": issued_on.year,
                "seq": seq,
                "number": number,
                "title": template.title,
                "served": template.served,
                "source": template.source,
                "record_id": record_id,
                "status": DocumentStatus.ISSUED,
                "live_key": live_key,
                "content": await self._codec.seal(
                    record.subject_id, subject.get("dek_id"), "documents", did, "content", numbered
                ),
                "sha256": digest,
                "issued_on": issued_on.isoformat(),
                "issued_at": now,
                "issued_by": ctx.identity.user_id,
                "replaces": str(voided["_id"]) if voided else None,
                "replaced_by": None,
                "version": 1,
            }
            try:
                async with self._audit.change(
                    ctx,
                    "documents.create",
                    resource="document",
                    resource_id=did,
                    subject_id=record.subject_id,
                    details={
                        "kind": kind,
                        "record_id": record_id,
                        "number": number,
                        "sha256": digest,
                        "replaces": doc["replaces"],
                    },
                ):
                    try:
                        await self._docs.insert_one(doc)
                    except DuplicateKeyError as exc:
                        raise _NumberTaken() from exc
            except _NumberTaken:
                again = await self._docs.find_one({"live_key": live_key}, {"_id": 1})
                if again is not None:
                    raise _already_issued(str(again["_id"])) from None
                continue
            if voided is not None:
                await self._docs.update_one({"_id": voided["_id"]}, {"$set": {"replaced_by": did}})
            view = self._view(doc, numbered)
            if template.served:
                # The person's message that a document was served on them (never raises).
                await self._notices.document_issued(
                    record.subject_id, did, f"{template.title}（{number}）"
                )
            return view
        raise Unavailable("No document number could be allocated; try again.")

    # --- reading --------------------------------------------------------------------------------

    def _view(self, doc: Mapping[str, Any], content: dict[str, Any] | None) -> DocumentView:
        return DocumentView(
            id=str(doc["_id"]),
            subject_id=doc["subject_id"],
            kind=doc["kind"],
            title=doc["title"],
            number=doc["number"],
            status=doc["status"],
            served=doc["served"],
            source=doc["source"],
            record_id=doc["record_id"],
            issued_on=doc["issued_on"],
            issued_at=doc["issued_at"],
            sha256=doc["sha256"],
            replaces=doc.get("replaces"),
            replaced_by=doc.get("replaced_by"),
            void_reason=None,
            voided_at=doc.get("voided_at"),
            content=content,
        )

    async def _opened(self, doc: Mapping[str, Any]) -> DocumentView:
        did = str(doc["_id"])
        content = await self._codec.open("documents", did, "content", doc["content"])
        view = self._view(doc, content)
        if doc.get("void_reason") is not None:
            view.void_reason = await self._codec.open(
                "documents", did, "void_reason", doc["void_reason"]
            )
        return view

    async def _load(self, ctx: AuditContext, document_id: str, action: str) -> dict[str, Any]:
        doc = await self._docs.find_one({"_id": parse_id(document_id, "document")})
        if doc is None:
            raise NotFound("No such document.")
        await self._scope.require(ctx, doc["subject_id"], action)
        return doc

    async def list_for_subject(self, ctx: AuditContext, subject_id: str) -> list[DocumentView]:
        """A file's documents, oldest first, voided ones too (without their content)."""
        await self._scope.require(ctx, subject_id, "documents.read")
        docs = [
            doc
            async for doc in self._docs.find({"subject_id": subject_id}, {"content": 0})
            .sort([("issued_at", ASCENDING), ("_id", ASCENDING)])
            .limit(MAX_LIST)
        ]
        await self._audit.record(
            ctx,
            "documents.read",
            resource="subject",
            resource_id=subject_id,
            subject_id=subject_id,
            details={"count": len(docs)},
        )
        return [self._view(doc, None) for doc in docs]

    async def get(self, ctx: AuditContext, document_id: str) -> DocumentView:
        doc = await self._load(ctx, document_id, "documents.read")
        await self._audit.record(
            ctx,
            "documents.read",
            resource="document",
            resource_id=document_id,
            subject_id=doc["subject_id"],
        )
        return await self._opened(doc)

    async def pdf(self, ctx: AuditContext, document_id: str) -> tuple[DocumentView, bytes]:
        """The document's PDF, rendered from its stored content: a reprint is the same file."""
        view = await self.get(ctx, document_id)
        return view, await self._render(view)

    async def _render(self, view: DocumentView) -> bytes:
        # Rendering is CPU work: off the event loop.
        assert view.content is not None
        # reportlab loads at the first document rendered, not at every process start.
        from models.document_pdf import render_document

        return await asyncio.to_thread(render_document, view.content, view.status)

    async def void(self, ctx: AuditContext, document_id: str, reason: str) -> DocumentView:
        """Void a document with a reason: it is kept, marked voided, and its record may have
        the document made again (a reissue under a new number that refers to this one)."""
        reason = " ".join(reason.split())
        if not reason:
            raise InvalidInput("State the reason.", details=[{"field": "reason"}])
        doc = await self._load(ctx, document_id, "documents.void")
        if doc["status"] != DocumentStatus.ISSUED:
            raise Conflict("The document is already voided.", code="already_voided")
        subject = await self._subjects.document(doc["subject_id"]) or {}
        now = self._clock.now()
        sealed = await self._codec.seal(
            doc["subject_id"],
            subject.get("dek_id"),
            "documents",
            document_id,
            "void_reason",
            reason,
        )
        async with self._audit.change(
            ctx,
            "documents.void",
            resource="document",
            resource_id=document_id,
            subject_id=doc["subject_id"],
            reason=reason,
            details={"kind": doc["kind"], "number": doc["number"]},
        ):
            updated = await self._docs.find_one_and_update(
                {"_id": doc["_id"], "status": DocumentStatus.ISSUED},
                {
                    "$set": {
                        "status": DocumentStatus.VOIDED,
                        "void_reason": sealed,
                        "voided_at": now,
                        "voided_by": ctx.identity.user_id,
                    },
                    "$unset": {"live_key": ""},
                    "$inc": {"version": 1},
                },
                return_document=True,
            )
            if updated is None:
                raise Conflict("The document is already voided.", code="already_voided")
        return await self._opened(updated)

    # --- the person's own -----------------------------------------------------------------------

    @staticmethod
    def _own_subject(ctx: AuditContext) -> str:
        subject_id = ctx.identity.subject_id
        if ctx.identity.channel != "mp" or subject_id is None:
            raise NotFound("No such case file.", message_zh="未找到您的档案。")
        return subject_id

    async def own(self, ctx: AuditContext, limit: int) -> list[DocumentView]:
        """The documents served on the caller (宣告书, 决定书), newest first."""
        subject_id = self._own_subject(ctx)
        docs = [
            doc
            async for doc in self._docs.find(
                {"subject_id": subject_id, "served": True}, {"content": 0}
            )
            .sort([("issued_at", DESCENDING), ("_id", DESCENDING)])
            .limit(min(limit, MAX_LIST))
        ]
        await self._audit.record(
            ctx,
            "documents.read",
            resource="subject",
            resource_id=subject_id,
            subject_id=subject_id,
            details={"count": len(docs)},
        )
        return [self._view(doc, None) for doc in docs]

    async def own_pdf(self, ctx: AuditContext, document_id: str) -> tuple[DocumentView, bytes]:
        """One document served on the caller, as its PDF; anyone else's (or one not served
        on them) answers 404."""
        subject_id = self._own_subject(ctx)
        doc = await self._docs.find_one(
            {"_id": parse_id(document_id, "document"), "subject_id": subject_id, "served": True}
        )
        if doc is None:
            raise NotFound("No such document.", message_zh="未找到该文书。")
        await self._audit.record(
            ctx,
            "documents.read",
            resource="document",
            resource_id=document_id,
            subject_id=subject_id,
        )
        view = await self._opened(doc)
        return view, await self._render(view)


class _NumberTaken(Conflict):
    """Another request stored a document under the number first (refused in the audit log as
    `number_taken`; the next number is tried)."""

    code = "number_taken"


def _already_issued(document_id: str) -> Conflict:
    return Conflict(
        "This record already has this document; void it to reissue.",
        code="already_issued",
        details={"document_id": document_id},
        message_zh="该记录已制作此文书，如需重新制作请先作废。",
    )

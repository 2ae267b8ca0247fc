"""Official documents (文书) end to end: every kind is made from its decided record and read back
from its PDF (title, number, the person, the Chinese font embedded); a record not decided answers
409; numbers never repeat or skip under concurrent makes; a reprint is the same file; a voided
document is kept and its reissue refers to it."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from models import documents as models_documents
from models.approvals import Level
from models.audit import AuditContext
from models.clock import LOCAL_TZ
from models.document_pdf import FontMissing, embedded_font
from models.documents import DocumentTemplates
from models.elocation import Ground
from models.orgs import Org, OrgKind
from models.policy import Role
from models.sanctions import SanctionKind
from server.app import SYSTEM
from tests.subject_factories import subject_body

CORRECTIONS = {
    "type": "community_corrections",
    "start_date": "2026-01-05",
    "end_date": "2028-01-04",
    "sentence_type": "probation",
    "plan": "每月集中教育不少于八小时；每周电话报告；公益活动。",
}
NAME = "张伟"


@dataclass
class Case:
    services: Any
    tree: Any
    staff: dict[str, Any]
    subject_id: str
    program_id: str

    def ctx(self, who: str) -> AuditContext:
        return AuditContext(self.staff[who].identity, request_id="documents-test")

    def today(self) -> dt.date:
        return self.services.sanctions.today()


@pytest.fixture
async def staff(tree, make_staff):
    accounts = {
        "station": await make_staff(Role.STATION_OFFICER, tree.station),
        "county": await make_staff(Role.COUNTY_OFFICER, tree.county),
        "head": await make_staff(Role.COUNTY_OFFICER, tree.county, is_agency_head=True),
        "city": await make_staff(Role.CITY_OFFICER, tree.city),
        "other_county": await make_staff(Role.COUNTY_OFFICER, tree.other_county),
    }
    for account in accounts.values():
        account.token = await make_staff.token_for(account)
    return accounts


@pytest.fixture
async def case(fetch, tree, staff, services) -> Case:
    answer = await fetch(
        "/api/v1/subjects",
        "POST",
        json_body=subject_body(tree.station.id, name=NAME),
        token=staff["station"].token,
    )
    sid = answer.json["id"]
    opened = await fetch(
        f"/api/v1/subjects/{sid}/programs",
        "POST",
        json_body=CORRECTIONS,
        token=staff["station"].token,
    )
    assert opened.status == 201, opened.body
    return Case(services, tree, staff, sid, opened.json["id"])


LEVEL_ACCOUNT = {Level.STATION: "station", Level.COUNTY: "county", Level.CITY: "city"}


async def decided_sanction(case: Case, kind: SanctionKind) -> str:
    sanctions = case.services.sanctions
    view = await sanctions.propose(SYSTEM, case.subject_id, kind, "未按规定时间报告活动情况")
    for level in view.levels:
        view = await sanctions.decide(case.ctx(LEVEL_ACCOUNT[Level(level)]), view.id, True, "查实")
    assert view.status == "approved"
    return view.id


async def decided_leave(case: Case) -> str:
    leave = case.services.leave
    start = case.today() + dt.timedelta(days=3)
    view = await leave.request(
        SYSTEM,
        case.subject_id,
        start=start,
        end=start + dt.timedelta(days=2),
        destination="杭州市",
        reason="探望病重的母亲",
    )
    for level in view.levels:
        view = await leave.decide(case.ctx(LEVEL_ACCOUNT[Level(level)]), view.id, True, "同意")
    assert view.status == "approved"
    return view.id


async def approved_order(case: Case) -> str:
    elocation = case.services.elocation
    today = case.today()
    view = await elocation.order(
        SYSTEM,
        case.subject_id,
        ground=Ground.LEFT_WITHOUT_APPROVAL,
        start=today,
        end=today + dt.timedelta(days=60),
        reason="未经批准离开所居住的县",
    )
    view = await elocation.decide(case.ctx("head"), view.id, True, "批准")
    assert view.status == "approved"
    return view.id


async def approved_renewal(case: Case) -> str:
    elocation = case.services.elocation
    first = await approved_order(case)
    order = await elocation.get(SYSTEM, first)
    end = dt.date.fromisoformat(order.end_date) + dt.timedelta(days=30)
    renewal = await elocation.renew(SYSTEM, first, end, "仍有必要继续使用")
    renewal = await elocation.decide(case.ctx("head"), renewal.id, True, "批准延长")
    assert renewal.status == "approved"
    return renewal.id


async def accepted_transfer(case: Case) -> str:
    transfers = case.services.transfers
    view = await transfers.request(SYSTEM, case.subject_id, case.tree.station2.id, "迁居")
    view = await transfers.decide(SYSTEM, view.id, True, "同意接收")
    return view.id


async def reported_investigation(case: Case) -> str:
    investigations = case.services.investigations
    view = await investigations.request(
        SYSTEM,
        subject_id=case.subject_id,
        court="温州市鹿城区人民法院",
        requested_on=case.today() - dt.timedelta(days=5),
        expedited=False,
    )
    await investigations.assign(SYSTEM, view.id, case.tree.station.id)
    await investigations.report(
        SYSTEM, view.id, "suitable", "家庭支持良好，社区接纳。", case.today()
    )
    return view.id


async def intake_done(case: Case) -> str:
    await case.services.programs.record_intake(SYSTEM, case.program_id, case.today())
    return case.program_id


async def plan_on_file(case: Case) -> str:
    return case.program_id


async def completed_term(case: Case) -> str:
    await case.services.programs.record_intake(SYSTEM, case.program_id, dt.date(2026, 1, 6))
    await case.services.programs.terminate(SYSTEM, case.program_id, "completed", case.today())
    return case.program_id


async def detox_program(case: Case) -> str:
    view = await case.services.programs.create(
        SYSTEM,
        case.subject_id,
        {"type": "drug_rehab", "mode": "community_detox", "start_date": case.today()},
    )
    return str(view.id)


async def detox_intake(case: Case) -> str:
    program_id = await detox_program(case)
    await case.services.programs.record_intake(SYSTEM, program_id, case.today())
    return program_id


async def rehab_decided(case: Case) -> str:
    program_id = await detox_intake(case)
    view = await case.services.programs.terminate(
        SYSTEM, program_id, "other", case.today(), community_rehab=True
    )
    return str(view.details["chained_program_id"])


async def handed_over(case: Case) -> str:
    await case.services.programs.record_intake(SYSTEM, case.program_id, dt.date(2026, 1, 6))
    view = await case.services.programs.terminate(
        SYSTEM, case.program_id, "completed", case.today()
    )
    return str(view.details["chained_program_id"])


def sanction(kind: SanctionKind) -> Callable[[Case], Awaitable[str]]:
    async def build(case: Case) -> str:
        return await decided_sanction(case, kind)

    return build


# Every kind: how its decided record is made, and text its PDF must carry beyond the title.
KINDS: dict[str, tuple[Callable[[Case], Awaitable[str]], str]] = {
    "investigation_opinion": (reported_investigation, "适宜社区矫正"),
    "intake_declaration": (intake_done, "现予宣告"),
    "correction_plan": (plan_on_file, "每月集中教育"),
    "end_declaration": (completed_term, "解除社区矫正"),
    "end_certificate": (completed_term, "特此证明"),
    "leave_approval": (decided_leave, "探望病重的母亲"),
    "admonish_decision": (sanction(SanctionKind.ADMONISH), "决定给予你训诫"),
    "warning_decision": (sanction(SanctionKind.WARN), "决定给予你警告"),
    "praise_decision": (sanction(SanctionKind.PRAISE), "决定给予你表扬"),
    "public_security_penalty_request": (
        sanction(SanctionKind.PUBLIC_SECURITY_PENALTY),
        "治安管理处罚",
    ),
    "revoke_request": (sanction(SanctionKind.REVOKE_REQUEST), "请依法裁定"),
    "imprison_request": (sanction(SanctionKind.IMPRISON_REQUEST), "收监执行"),
    "elocation_approval": (approved_order, "电子定位装置"),
    "elocation_renewal": (approved_renewal, "仍有必要继续使用"),
    "transfer_notice": (accepted_transfer, "南汇司法所"),
    "detox_agreement": (detox_intake, "社区戒毒协议"),
    "rehab_decision": (rehab_decided, "接受社区康复"),
    "assistance_handover": (handed_over, "安置帮教"),
}


def pdf_text(body: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(body)).pages)


def fonts_of(body: bytes) -> list[dict[str, Any]]:
    """Every font the PDF's pages use, resolved, with its descriptor."""
    fonts = []
    for page in PdfReader(io.BytesIO(body)).pages:
        resources = page["/Resources"].get_object()
        for ref in resources.get("/Font", {}).get_object().values():
            fonts.append(ref.get_object())
    return fonts


def assert_chinese_font_embedded(body: bytes) -> None:
    fonts = fonts_of(body)
    embedded = [
        f
        for f in fonts
        if "/FontDescriptor" in f and "/FontFile2" in f["/FontDescriptor"].get_object()
    ]
    assert embedded, f"no embedded TrueType font among {[f.get('/BaseFont') for f in fonts]}"
    # A subset (its name tagged ABCDEF+), of the Chinese face.
    assert all("+" in str(f["/BaseFont"]) for f in embedded)
    assert any("UMing" in str(f["/BaseFont"]) for f in embedded)
    # Nothing set in a font the reader must supply (no CID font by reference).
    assert not [f for f in fonts if f.get("/Subtype") == "/Type0"]


async def make(fetch, token: str, kind: str, record_id: str):
    return await fetch(
        "/api/v1/documents", "POST", json_body={"kind": kind, "record_id": record_id}, token=token
    )


@pytest.mark.parametrize("kind", list(KINDS))
async def test_each_kind_is_made_from_its_decided_record_and_reads_back_from_its_pdf(
    fetch, case, staff, kind
):
    build, expected = KINDS[kind]
    record_id = await build(case)
    made = await make(fetch, staff["county"].token, kind, record_id)
    assert made.status == 201, made.body
    document = made.json
    year = dt.datetime.now(LOCAL_TZ).year
    assert document["number"].startswith(f"〔{year}〕鹿城")
    assert document["number"].endswith("字第1号")
    assert document["status"] == "issued" and document["record_id"] == record_id
    assert len(document["sha256"]) == 64
    pdf = await fetch(f"/api/v1/documents/{document['id']}/pdf", token=staff["county"].token)
    assert pdf.status == 200 and pdf.headers["Content-Type"] == "application/pdf"
    text = pdf_text(pdf.body)
    assert document["title"] in text
    assert document["number"] in text
    assert NAME in text
    assert expected in text.replace("\n", "")
    assert_chinese_font_embedded(pdf.body)
    assert len(PdfReader(io.BytesIO(pdf.body)).pages[0].mediabox) == 4
    listed = await fetch(
        f"/api/v1/subjects/{case.subject_id}/documents", token=staff["station"].token
    )
    assert [d["id"] for d in listed.json["items"]] == [document["id"]]
    assert listed.json["items"][0]["content"] is None


async def test_a_document_of_a_record_not_decided_answers_409(fetch, case, staff, services):
    pending = await services.sanctions.propose(
        SYSTEM, case.subject_id, SanctionKind.ADMONISH, "未按时报到"
    )
    answer = await make(fetch, staff["county"].token, "admonish_decision", pending.id)
    assert answer.status == 409 and answer.error["code"] == "not_decided"
    # Intake not yet recorded: no 宣告书.
    answer = await make(fetch, staff["county"].token, "intake_declaration", case.program_id)
    assert answer.status == 409 and answer.error["code"] == "not_decided"
    # A refused request is decided, but no 训诫 was given: still nothing to serve.
    refused = await services.sanctions.propose(
        SYSTEM, case.subject_id, SanctionKind.ADMONISH, "未按时报到"
    )
    await services.sanctions.decide(case.ctx("station"), refused.id, False, "不属实")
    answer = await make(fetch, staff["county"].token, "admonish_decision", refused.id)
    assert answer.status == 409 and answer.error["code"] == "not_decided"
    listed = await fetch(
        f"/api/v1/subjects/{case.subject_id}/documents", token=staff["county"].token
    )
    assert listed.json["items"] == []


async def test_a_record_of_another_kind_or_outside_scope_is_refused(fetch, case, staff):
    warning = await decided_sanction(case, SanctionKind.WARN)
    wrong = await make(fetch, staff["county"].token, "admonish_decision", warning)
    assert wrong.status == 422 and wrong.error["details"][0]["field"] == "kind"
    unknown = await make(fetch, staff["county"].token, "free_text_letter", warning)
    assert unknown.status == 422
    elsewhere = await make(fetch, staff["other_county"].token, "warning_decision", warning)
    assert elsewhere.status == 404


async def test_twenty_concurrent_decisions_take_numbers_one_to_twenty(fetch, case, staff):
    records = [await decided_sanction(case, SanctionKind.ADMONISH) for _ in range(20)]
    answers = await asyncio.gather(
        *(make(fetch, staff["county"].token, "admonish_decision", r) for r in records)
    )
    assert [a.status for a in answers] == [201] * 20, [a.body for a in answers if a.status != 201]
    numbers = sorted(int(a.json["number"].split("第")[1].rstrip("号")) for a in answers)
    assert numbers == list(range(1, 21))
    # Another kind counts on its own: the first 警告 of the year is 第1号.
    warning = await decided_sanction(case, SanctionKind.WARN)
    first = await make(fetch, staff["county"].token, "warning_decision", warning)
    assert first.json["number"].endswith("矫警字第1号")


async def test_the_same_record_made_twice_at_once_gets_one_document(fetch, case, staff):
    record = await decided_sanction(case, SanctionKind.ADMONISH)
    answers = await asyncio.gather(
        *(make(fetch, staff["county"].token, "admonish_decision", record) for _ in range(5))
    )
    assert sorted(a.status for a in answers) == [201, 409, 409, 409, 409]
    refused = [a for a in answers if a.status == 409]
    assert {a.error["code"] for a in refused} == {"already_issued"}
    listed = await fetch(
        f"/api/v1/subjects/{case.subject_id}/documents", token=staff["county"].token
    )
    assert [d["number"].split("第")[1] for d in listed.json["items"]] == ["1号"]


async def test_a_reprint_is_the_same_file(fetch, case, staff, clock):
    record = await decided_sanction(case, SanctionKind.WARN)
    made = (await make(fetch, staff["county"].token, "warning_decision", record)).json
    first = await fetch(f"/api/v1/documents/{made['id']}/pdf", token=staff["county"].token)
    clock.advance(dt.timedelta(days=40))
    token = await _fresh_token(case, "station")
    again = await fetch(f"/api/v1/documents/{made['id']}/pdf", token=token)
    assert again.status == 200 and again.body == first.body
    record_view = await fetch(f"/api/v1/documents/{made['id']}", token=token)
    assert record_view.json["content"]["number"] == made["number"]
    assert record_view.json["sha256"] == made["sha256"]


async def _fresh_token(case: Case, who: str) -> str:
    return (await case.services.sessions.issue(case.staff[who].identity)).token


async def test_a_voided_document_is_kept_and_its_reissue_refers_to_it(fetch, case, staff, services):
    record = await decided_sanction(case, SanctionKind.ADMONISH)
    token = staff["county"].token
    made = (await make(fetch, token, "admonish_decision", record)).json
    again = await make(fetch, token, "admonish_decision", record)
    assert again.status == 409 and again.error["details"]["document_id"] == made["id"]
    no_reason = await fetch(
        f"/api/v1/documents/{made['id']}/void", "POST", json_body={"reason": " "}, token=token
    )
    assert no_reason.status == 422
    voided = await fetch(
        f"/api/v1/documents/{made['id']}/void",
        "POST",
        json_body={"reason": "姓名有误"},
        token=token,
    )
    assert voided.status == 200 and voided.json["status"] == "voided"
    assert voided.json["void_reason"] == "姓名有误"
    twice = await fetch(
        f"/api/v1/documents/{made['id']}/void", "POST", json_body={"reason": "再"}, token=token
    )
    assert twice.status == 409
    reissued = await make(fetch, token, "admonish_decision", record)
    assert reissued.status == 201
    assert reissued.json["replaces"] == made["id"]
    assert reissued.json["number"].endswith("字第2号")
    listed = (await fetch(f"/api/v1/subjects/{case.subject_id}/documents", token=token)).json
    assert [(d["status"], d["replaced_by"]) for d in listed["items"]] == [
        ("voided", reissued.json["id"]),
        ("issued", None),
    ]
    old_pdf = await fetch(f"/api/v1/documents/{made['id']}/pdf", token=token)
    assert "已作废" in pdf_text(old_pdf.body)
    # The audit log holds each document's hash, and the void's reason sealed.
    entries = await services.audit.entries_for(made["id"])
    created = [e for e in entries if e["action"] == "documents.create"]
    assert created and created[0]["details"]["sha256"] == made["sha256"]
    assert "姓名有误" not in str([e.get("reason") for e in entries])


async def test_the_content_rests_sealed(fetch, case, staff, services):
    record = await decided_sanction(case, SanctionKind.ADMONISH)
    made = (await make(fetch, staff["county"].token, "admonish_decision", record)).json
    raw = await services.documents._docs.find_one({})
    assert NAME not in str(raw) and "未按规定时间报告" not in str(raw)
    assert raw["number"] == made["number"]


async def test_the_monthly_report_pdf_embeds_its_chinese_font(fetch, tree, staff, clock):
    month = (dt.datetime.now(LOCAL_TZ).replace(day=1) - dt.timedelta(days=1)).strftime("%Y-%m")
    created = await fetch(
        "/api/v1/reports/compliance",
        "POST",
        json_body={"org_id": tree.station.id, "month": month},
        token=staff["station"].token,
    )
    assert created.status == 201, created.body
    pdf = await fetch(
        f"/api/v1/reports/compliance/{created.json['id']}?format=pdf",
        token=staff["station"].token,
    )
    assert pdf.status == 200
    assert "月度合规报告" in pdf_text(pdf.body)
    assert_chinese_font_embedded(pdf.body)


def test_a_missing_font_is_a_clear_refusal_not_a_pdf_of_boxes(tmp_path: Path):
    with pytest.raises(FontMissing) as refused:
        embedded_font(tmp_path / "absent.ttc", name="AbsentFont")
    assert refused.value.code == "font_missing"
    assert "字体" in (refused.value.message_zh or "")


def test_a_province_overrides_a_template_as_data(tmp_path: Path):
    national = Path(models_documents.__file__).parent / "data" / "documents"
    shutil.copytree(national, tmp_path / "documents")
    root = tmp_path / "documents"
    (root / "provinces" / "33").mkdir(parents=True)
    (root / "provinces" / "33" / "admonish_decision.json").write_text(
        json.dumps({"title": "训诫决定书（浙江）"}, ensure_ascii=False), encoding="utf-8"
    )
    templates = DocumentTemplates.load(root)
    assert templates.get("admonish_decision", "33").title == "训诫决定书（浙江）"
    assert templates.get("admonish_decision", "33").word == "矫训"
    assert templates.get("admonish_decision", "44").title == "训诫决定书"
    (root / "provinces" / "33" / "warning_decision.json").write_text(
        json.dumps({"source": "leave"}), encoding="utf-8"
    )
    with pytest.raises(ValueError, match="national"):
        DocumentTemplates.load(root)


def test_a_county_without_a_configured_abbreviation_uses_its_name():
    templates = DocumentTemplates.load()
    county = Org("x", "瑞安市司法局", "330381", OrgKind.COUNTY, None, ("x",))
    assert templates.abbreviation(county) == "瑞安"
    configured = Org("y", "鹿城区司法局", "330302", OrgKind.COUNTY, None, ("y",))
    assert templates.abbreviation(configured) == "鹿城"

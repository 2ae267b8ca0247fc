"""Monthly compliance reports through the real HTTP stack: scope, sign-off and its frozen
snapshot, the difference a late change makes, drill-down, and both exports read back."""

from __future__ import annotations

import datetime as dt
import io
import re

import pytest
from openpyxl import load_workbook
from pypdf import PdfReader

from models.audit import AUDIT
from models.clock import LOCAL_TZ
from models.obligations import OCCURRENCES
from models.orgs import OrgKind
from models.policy import Role
from models.reports import FIGURE_KEYS, FIGURE_LABELS
from server.app import SYSTEM
from tests.subject_factories import subject_body


def local(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=LOCAL_TZ)


CORRECTIONS = {
    "type": "community_corrections",
    "start_date": "2026-10-01",
    "end_date": "2027-09-30",
    "sentence_type": "probation",
}


@pytest.fixture
async def october(fetch, tree, make_staff, clock, services):
    """Two people on probation since 1 October, one per station of the county, who did nothing
    all month; it is now 2 November and the sweep has marked their windows missed."""
    clock.set(local(2026, 10, 1, 9, 0))
    officer = await make_staff(Role.STATION_OFFICER, tree.station)
    officer2 = await make_staff(Role.STATION_OFFICER, tree.station2)
    county = await make_staff(Role.COUNTY_OFFICER, tree.county)
    people = {}
    for account, station, name in (
        (officer, tree.station, "张三"),
        (officer2, tree.station2, "李四"),
    ):
        token = await make_staff.token_for(account)
        created = await fetch(
            "/api/v1/subjects",
            "POST",
            token=token,
            json_body=subject_body(station.id, name=name),
        )
        assert created.status == 201
        sid = created.json["id"]
        program = await fetch(
            f"/api/v1/subjects/{sid}/programs", "POST", token=token, json_body=CORRECTIONS
        )
        assert program.status == 201
        people[name] = sid
    clock.set(local(2026, 11, 2, 9, 0))
    await services.obligations.close_windows(clock.now())
    for account in (officer, officer2, county):
        account.token = await make_staff.token_for(account)
    return officer, officer2, county, people


async def report_for(fetch, token, org_id, month="2026-10"):
    return await fetch(
        "/api/v1/reports/compliance",
        "POST",
        token=token,
        json_body={"org_id": org_id, "month": month},
    )


async def test_a_station_report_counts_the_month_and_drills_down_to_its_people(
    fetch, tree, october
):
    officer, _, _, people = october
    answer = await report_for(fetch, officer.token, tree.station.id)
    assert answer.status == 201
    report = answer.json
    assert report["status"] == "draft" and report["month"] == "2026-10"
    figures = report["figures"]
    assert figures["subjects"] == 1 and figures["intakes"] == 1
    # Nothing was done: every window that closed in October was missed.
    assert figures["checkins_due"] > 0
    assert figures["checkins_missed"] == figures["checkins_due"]
    assert figures["obligations_missed"] == figures["obligations_due"]
    assert report["rates"]["compliance_rate"] == 0.0
    assert report["by_program"]["community_corrections"]["subjects"] == 1
    assert report["by_level"] == {"strict": 1}

    drill = await fetch(
        f"/api/v1/reports/compliance/{report['id']}/subjects?figure=checkins_missed",
        token=officer.token,
    )
    assert drill.status == 200
    [person] = drill.json["items"]
    assert person["subject_id"] == people["张三"] and person["name"] == "张三"
    assert person["value"] == figures["checkins_missed"]

    again = await report_for(fetch, officer.token, tree.station.id)
    assert again.status == 200 and again.json["id"] == report["id"]  # one report per month
    bad_figure = await fetch(
        f"/api/v1/reports/compliance/{report['id']}/subjects?figure=names", token=officer.token
    )
    assert bad_figure.status == 422 and bad_figure.error["details"][0]["field"] == "figure"


@pytest.mark.parametrize(
    ("month", "code"),
    [
        ("2026-11", "month_not_ended"),
        ("2026-13", None),
        ("10/2026", None),
        ("", None),
    ],
)
async def test_a_month_not_yet_ended_or_malformed_is_refused(fetch, tree, october, month, code):
    officer, *_ = october
    answer = await report_for(fetch, officer.token, tree.station.id, month)
    assert answer.status == 422
    if code:
        assert answer.error["code"] == code
    assert answer.error["details"][0]["field"] == "month"


async def test_reports_stay_within_the_callers_scope(fetch, tree, october, make_staff):
    officer, officer2, county, _ = october
    other = await report_for(fetch, officer.token, tree.station2.id)
    assert other.status == 404
    mine = (await report_for(fetch, officer2.token, tree.station2.id)).json
    assert (
        await fetch(f"/api/v1/reports/compliance/{mine['id']}", token=officer.token)
    ).status == 404
    stranger = await make_staff(Role.COUNTY_OFFICER, tree.other_county)
    token = await make_staff.token_for(stranger)
    assert (await fetch(f"/api/v1/reports/compliance/{mine['id']}", token=token)).status == 404
    assert (await report_for(fetch, token, tree.county.id)).status == 404
    worker = await make_staff(Role.SOCIAL_WORKER, tree.station)
    worker_token = await make_staff.token_for(worker)
    assert (await report_for(fetch, worker_token, tree.station.id)).status == 403

    # The county sees across its stations, each one's figures on its own line.
    county_report = (await report_for(fetch, county.token, tree.county.id)).json
    assert county_report["figures"]["subjects"] == 2
    assert {u["org_id"] for u in county_report["units"]} == {tree.station.id, tree.station2.id}
    assert all(u["figures"]["subjects"] == 1 for u in county_report["units"])
    station_only = await fetch(
        f"/api/v1/reports/compliance/{county_report['id']}/subjects"
        f"?figure=subjects&unit_id={tree.station2.id}",
        token=county.token,
    )
    assert [p["name"] for p in station_only.json["items"]] == ["李四"]


async def test_sign_off_freezes_a_snapshot_and_a_late_change_shows_as_a_difference(
    fetch, tree, october, store, services
):
    officer, _, county, people = october
    draft = (await report_for(fetch, officer.token, tree.station.id)).json
    rid = draft["id"]

    # Signing is the station officer's: not the county's, not a worker's.
    wrong_level = await fetch(
        f"/api/v1/reports/compliance/{rid}/sign",
        "POST",
        token=county.token,
        json_body={"comment": "县局代签"},
    )
    assert wrong_level.status == 403 and wrong_level.error["code"] == "wrong_level"

    signed = await fetch(
        f"/api/v1/reports/compliance/{rid}/sign",
        "POST",
        token=officer.token,
        json_body={"comment": "已核对"},
    )
    assert signed.status == 200
    assert signed.json["status"] == "signed"
    assert signed.json["signed"]["version"] == 1
    assert signed.json["signed"]["by"] == officer.id
    assert signed.json["sha256"] == signed.json["signed"]["sha256"] == draft["sha256"]
    # The snapshot's hash is in the audit chain.
    entry = await store.collection(AUDIT).find_one(
        {"action": "reports.sign", "details.sha256": draft["sha256"]}
    )
    assert entry is not None and entry["resource_id"] == rid

    # Nothing changed: signing again is a no-op.
    same = await fetch(
        f"/api/v1/reports/compliance/{rid}/sign", "POST", token=officer.token, json_body={}
    )
    assert same.status == 200 and len(same.json["signatures"]) == 1

    # A late change: one missed October check-in is excused after the sign-off.
    missed = await store.collection(OCCURRENCES).find_one(
        {
            "subject_id": people["张三"],
            "kind": "remote_checkin",
            "status": "missed",
            "window_end": {"$lte": local(2026, 11, 1)},
        }
    )
    excused = await fetch(
        f"/api/v1/obligations/{missed['_id']}/excuse",
        "POST",
        token=officer.token,
        json_body={"reason": "住院治疗,已补交证明"},
    )
    assert excused.status == 200

    refreshed = await report_for(fetch, officer.token, tree.station.id)
    assert refreshed.status == 200
    body = refreshed.json
    # The signed figures stand; the difference is shown beside them.
    assert body["status"] == "signed" and body["figures"] == signed.json["figures"]
    moved = {c["figure"]: (c["signed"], c["current"]) for c in body["changes"]["figures"]}
    before = signed.json["figures"]
    assert moved["obligations_missed"] == (
        before["obligations_missed"],
        before["obligations_missed"] - 1,
    )
    assert moved["checkins_excused"] == (0, 1)
    assert {c["subject_id"] for c in body["changes"]["subjects"]} == {people["张三"]}
    shown = await fetch(f"/api/v1/reports/compliance/{rid}", token=officer.token)
    assert shown.json["changes"] == body["changes"]
    # The drill-down of the signed version still shows what was signed.
    signed_drill = await fetch(
        f"/api/v1/reports/compliance/{rid}/subjects?figure=checkins_excused", token=officer.token
    )
    assert signed_drill.json["items"] == []
    signed_missed = await fetch(
        f"/api/v1/reports/compliance/{rid}/subjects?figure=checkins_missed", token=officer.token
    )
    [row] = signed_missed.json["items"]
    assert row["value"] == before["checkins_missed"]
    current_drill = await fetch(
        f"/api/v1/reports/compliance/{rid}/subjects?figure=checkins_excused&version=current",
        token=officer.token,
    )
    assert [p["value"] for p in current_drill.json["items"]] == [1]

    # Re-signing changed data is explicit.
    implicit = await fetch(
        f"/api/v1/reports/compliance/{rid}/sign", "POST", token=officer.token, json_body={}
    )
    assert implicit.status == 409 and implicit.error["code"] == "changed_since_signed"
    resigned = await fetch(
        f"/api/v1/reports/compliance/{rid}/sign",
        "POST",
        token=officer.token,
        json_body={"comment": "补假后重签", "resign": True},
    )
    assert resigned.status == 200
    assert resigned.json["signed"]["version"] == 2 and resigned.json["changes"] is None
    assert resigned.json["figures"]["checkins_excused"] == 1
    assert [s["version"] for s in resigned.json["signatures"]] == [1, 2]


async def test_a_county_signs_only_after_each_of_its_stations(fetch, tree, october):
    officer, officer2, county, _ = october
    county_report = (await report_for(fetch, county.token, tree.county.id)).json
    early = await fetch(
        f"/api/v1/reports/compliance/{county_report['id']}/sign",
        "POST",
        token=county.token,
        json_body={"comment": "月度审核"},
    )
    assert early.status == 409 and early.error["code"] == "units_unsigned"
    assert {u["org_id"] for u in early.error["details"]["unsigned"]} == {
        tree.station.id,
        tree.station2.id,
    }
    for account, station in ((officer, tree.station), (officer2, tree.station2)):
        rid = (await report_for(fetch, account.token, station.id)).json["id"]
        sign = await fetch(
            f"/api/v1/reports/compliance/{rid}/sign",
            "POST",
            token=account.token,
            json_body={"comment": "已核对"},
        )
        assert sign.status == 200
    signed = await fetch(
        f"/api/v1/reports/compliance/{county_report['id']}/sign",
        "POST",
        token=county.token,
        json_body={"comment": "月度审核"},
    )
    assert signed.status == 200 and signed.json["status"] == "signed"


async def test_both_exports_carry_the_same_figures_as_the_json(fetch, tree, october):
    officer, *_ = october
    rid = (await report_for(fetch, officer.token, tree.station.id)).json["id"]
    signed = (
        await fetch(
            f"/api/v1/reports/compliance/{rid}/sign",
            "POST",
            token=officer.token,
            json_body={"comment": "已核对"},
        )
    ).json

    xlsx = await fetch(f"/api/v1/reports/compliance/{rid}?format=xlsx", token=officer.token)
    assert xlsx.status == 200
    assert xlsx.headers["Content-Type"].startswith(
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )
    assert "attachment" in xlsx.headers["Content-Disposition"]
    book = load_workbook(io.BytesIO(xlsx.body))
    assert book.sheetnames == ["汇总", "人员明细"]
    totals = book["汇总"]
    assert totals.freeze_panes == "A2"
    assert totals.print_title_rows == "$1:$1"
    assert tree.station.name in totals.oddHeader.center.text
    assert totals.column_dimensions["A"].width > 20
    rows = {row[0]: row[1] for row in totals.iter_rows(min_row=2, values_only=True)}
    for key, label in FIGURE_LABELS.items():
        assert rows[label] == signed["figures"][key], label
    people = book["人员明细"]
    header = next(people.iter_rows(max_row=1, values_only=True))
    assert header[:3] == ("姓名", "司法所", "项目")
    [person] = list(people.iter_rows(min_row=2, values_only=True))
    assert person[0] == "张三" and person[1] == tree.station.name
    assert person[header.index("漏签到")] == signed["figures"]["checkins_missed"]

    pdf = await fetch(f"/api/v1/reports/compliance/{rid}?format=pdf", token=officer.token)
    assert pdf.status == 200 and pdf.headers["Content-Type"] == "application/pdf"
    reader = PdfReader(io.BytesIO(pdf.body))
    text = "\n".join(page.extract_text() for page in reader.pages)
    assert f"{tree.station.name}  2026-10" in text  # the page header
    assert "签署人" in text and "第1版" in text
    assert "张三" in text and "漏签到" in text
    assert str(signed["figures"]["checkins_missed"]) in text

    unknown = await fetch(f"/api/v1/reports/compliance/{rid}?format=csv", token=officer.token)
    assert unknown.status == 422 and unknown.error["details"][0]["field"] == "format"


def pdf_text(body: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(body)).pages)


async def test_a_county_report_lists_its_quiet_stations_with_zeros_and_a_mark(
    fetch, tree, october, services, make_staff
):
    *_, county, _ = october
    # A station where nobody is supervised and nothing happened all October.
    quiet = await services.orgs.create(
        SYSTEM, name="松台司法所", code="330302003", kind=OrgKind.STATION, parent_id=tree.county.id
    )
    answer = await report_for(fetch, county.token, tree.county.id)
    assert answer.status == 201
    report = answer.json
    units = {u["org_id"]: u for u in report["units"]}
    assert set(units) == {tree.station.id, tree.station2.id, quiet.id}
    assert units[quiet.id]["name"] == "松台司法所"
    assert units[quiet.id]["nothing_recorded"] is True
    assert units[quiet.id]["figures"] == {key: 0 for key in FIGURE_KEYS}
    assert set(units[quiet.id]["rates"].values()) == {None}
    assert not units[tree.station.id]["nothing_recorded"]
    assert not units[tree.station2.id]["nothing_recorded"]
    assert report["figures"]["subjects"] == 2  # the totals are the people's, as before
    shown = await fetch(f"/api/v1/reports/compliance/{report['id']}", token=county.token)
    assert shown.json["units"] == report["units"]

    xlsx = await fetch(f"/api/v1/reports/compliance/{report['id']}?format=xlsx", token=county.token)
    sheet = load_workbook(io.BytesIO(xlsx.body))["分单位"]
    header, *lines = list(sheet.iter_rows(values_only=True))
    remark, subjects = header.index("备注"), header.index("在册人数")
    by_name = {line[0]: line for line in lines}
    assert set(by_name) == {tree.station.name, tree.station2.name, "松台司法所"}
    assert by_name["松台司法所"][remark] == "本月无记录"
    assert by_name["松台司法所"][subjects] == 0
    assert not by_name[tree.station.name][remark]

    pdf = await fetch(f"/api/v1/reports/compliance/{report['id']}?format=pdf", token=county.token)
    # The text comes back one cell a line: the mark is the cell after the quiet station's name.
    cells = pdf_text(pdf.body).splitlines()
    assert cells[cells.index("松台司法所") + 1] == "本月无记录"
    assert cells.count("本月无记录") == 1

    # A city lists each of its counties the same way.
    await services.orgs.create(
        SYSTEM, name="瓯海区司法局", code="330304", kind=OrgKind.COUNTY, parent_id=tree.city.id
    )
    city_officer = await make_staff(Role.CITY_OFFICER, tree.city)
    city = (await report_for(fetch, await make_staff.token_for(city_officer), tree.city.id)).json
    assert [(u["name"], u["nothing_recorded"]) for u in city["units"]] == [
        (tree.county.name, False),
        ("瓯海区司法局", True),
    ]


SECTION_HEADING = re.compile(r"([一二三四五六七八九十])、(汇总|分项目|分单位|人员明细)")
NUMERALS = "一二三四五六七八九十"


async def pdf_headings(fetch, token: str, report_id: str) -> list[tuple[str, str]]:
    pdf = await fetch(f"/api/v1/reports/compliance/{report_id}?format=pdf", token=token)
    assert pdf.status == 200
    return SECTION_HEADING.findall(pdf_text(pdf.body))


async def test_pdf_sections_are_numbered_by_those_present(
    fetch, tree, october, services, make_staff
):
    officer, _, county, _ = october
    # A station has no units below it: its sections run 一 to 三, not 一, 二, 四.
    station = (await report_for(fetch, officer.token, tree.station.id)).json
    assert await pdf_headings(fetch, officer.token, station["id"]) == [
        ("一", "汇总"),
        ("二", "分项目"),
        ("三", "人员明细"),
    ]
    # A station with nobody supervised has no programs either.
    empty = await services.orgs.create(
        SYSTEM, name="松台司法所", code="330302003", kind=OrgKind.STATION, parent_id=tree.county.id
    )
    empty_officer = await make_staff(Role.STATION_OFFICER, empty)
    empty_token = await make_staff.token_for(empty_officer)
    nobody = (await report_for(fetch, empty_token, empty.id)).json
    assert await pdf_headings(fetch, empty_token, nobody["id"]) == [
        ("一", "汇总"),
        ("二", "人员明细"),
    ]
    # A county has them all.
    whole = (await report_for(fetch, county.token, tree.county.id)).json
    headings = await pdf_headings(fetch, county.token, whole["id"])
    assert [title for _, title in headings] == ["汇总", "分项目", "分单位", "人员明细"]
    assert "".join(numeral for numeral, _ in headings) == NUMERALS[: len(headings)]


async def test_one_persons_month(fetch, tree, october, make_staff):
    officer, _, _, people = october
    answer = await fetch(
        f"/api/v1/subjects/{people['张三']}/compliance?month=2026-10", token=officer.token
    )
    assert answer.status == 200
    month = answer.json
    assert month["programs"] == ["community_corrections"]
    assert month["supervision_level"] == "strict"
    assert month["figures"]["checkins_missed"] == month["figures"]["checkins_due"] > 0
    assert month["rates"]["checkin_rate"] == 0.0
    outside = await fetch(
        f"/api/v1/subjects/{people['李四']}/compliance?month=2026-10", token=officer.token
    )
    assert outside.status == 404
    early = await fetch(
        f"/api/v1/subjects/{people['张三']}/compliance?month=2026-11", token=officer.token
    )
    assert early.status == 422
    # Months whose bounds the calendar cannot hold in UTC answered 500.
    for month_query in ("0001-01", "9999-12", "2026-13", ""):
        odd = await fetch(
            f"/api/v1/subjects/{people['张三']}/compliance?month={month_query}",
            token=officer.token,
        )
        assert odd.status == 422 and odd.error["details"][0]["field"] == "month", month_query

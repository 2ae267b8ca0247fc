"""GET /api/v1/dashboard through the real HTTP stack: a county's and a station's figures against
what was seeded and against the monthly report of the same month, scope, and the figures that
move when a 脱管 is recorded or a program ends."""

from __future__ import annotations

import datetime as dt

import pytest

from models.clock import LOCAL_TZ
from models.policy import Role
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
async def county_month(fetch, tree, make_staff, clock, services):
    """Two probationers since 1 October, one per station of the county, who never reported in
    nor checked in; it is now Monday 2 November, 09:00, after the sweep closed October."""
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
            "/api/v1/subjects", "POST", token=token, json_body=subject_body(station.id, name=name)
        )
        assert created.status == 201
        program = await fetch(
            f"/api/v1/subjects/{created.json['id']}/programs",
            "POST",
            token=token,
            json_body=CORRECTIONS,
        )
        assert program.status == 201
        people[name] = (created.json["id"], program.json["id"])
    clock.set(local(2026, 11, 2, 9, 0))
    await services.obligations.close_windows(clock.now())
    await services.programs.alert_missed_intakes(clock.now().astimezone(LOCAL_TZ).date())
    for account in (officer, officer2, county):
        account.token = await make_staff.token_for(account)
    return officer, officer2, county, people


async def test_a_county_dashboard_counts_its_people_and_matches_the_monthly_report(
    fetch, tree, county_month
):
    _, _, county, _ = county_month
    answer = await fetch("/api/v1/dashboard", token=county.token)
    assert answer.status == 200, answer.body
    board = answer.json
    assert board["org"] == {"id": tree.county.id, "name": tree.county.name, "kind": "county"}
    assert board["supervised"] == 2
    assert board["by_population"] == {"community_corrections": 2}
    # New probationers are under 严管 for their first months.
    assert board["by_level"] == {"strict": 2, "normal": 0, "lenient": 0}
    # Neither reported in within the deadline.
    assert board["pending_intake"] == 2 and board["overdue_intake"] == 2
    assert board["detachments_open"] == 0 and board["leave_in_progress"] == 0
    # Today's daily check-in of each, not yet done.
    assert board["windows_today"] == {"due": 2, "met": 0, "open": 2, "missed": 0, "excused": 0}

    # October's check-ins are the county report's October check-ins.
    report = await fetch(
        "/api/v1/reports/compliance",
        "POST",
        token=county.token,
        json_body={"org_id": tree.county.id, "month": "2026-10"},
    )
    assert report.status == 201, report.body
    october = next(m for m in board["checkins_monthly"] if m["period"] == "2026-10")
    figures = report.json["figures"]
    assert october["due"] == figures["checkins_due"] > 0
    assert october["missed"] == figures["checkins_missed"] == october["due"]
    assert october["on_time_rate"] == 0.0
    assert october["checkin_rate"] == report.json["rates"]["checkin_rate"] == 0.0
    assert [m["period"] for m in board["checkins_monthly"]][-2:] == ["2026-10", "2026-11"]
    assert len(board["checkins_monthly"]) == 12 and len(board["checkins_weekly"]) == 12
    assert board["checkins_weekly"][-1]["period"] == "2026-11-02"  # this week's Monday
    assert sum(w["due"] for w in board["checkins_weekly"]) > 0

    # Open alerts: the same as the county's list of open alerts.
    alerts = await fetch("/api/v1/alerts?status=open&limit=500", token=county.token)
    assert alerts.status == 200
    assert board["alerts_open"] == len(alerts.json["items"]) > 0

    # A line per station, adding up to the county.
    lines = {u["org_id"]: u for u in board["units"]}
    assert set(lines) >= {tree.station.id, tree.station2.id}
    assert lines[tree.station.id]["supervised"] == 1
    assert lines[tree.station2.id]["supervised"] == 1
    assert sum(u["supervised"] for u in board["units"]) == 2
    assert sum(u["alerts_open"] for u in board["units"]) == board["alerts_open"]
    assert lines[tree.station.id]["windows_today"]["due"] == 1


async def test_a_station_sees_its_own_figures_and_nothing_beyond(fetch, tree, county_month):
    officer, _, county, _ = county_month
    mine = await fetch("/api/v1/dashboard", token=officer.token)
    assert mine.status == 200
    assert mine.json["org"]["id"] == tree.station.id
    assert mine.json["supervised"] == 1 and mine.json["units"] == []
    # The county's, or the neighbouring station's: not in the station's scope.
    for org in (tree.county.id, tree.station2.id):
        refused = await fetch(f"/api/v1/dashboard?org={org}", token=officer.token)
        assert refused.status == 404
    # The county asks for one of its stations.
    station = await fetch(f"/api/v1/dashboard?org={tree.station.id}", token=county.token)
    assert station.status == 200
    assert station.json["supervised"] == mine.json["supervised"]
    assert station.json["checkins_monthly"] == mine.json["checkins_monthly"]
    bad = await fetch("/api/v1/dashboard?org=not-an-id", token=county.token)
    assert bad.status == 422


async def test_an_open_detachment_and_an_ended_program_show(fetch, tree, county_month):
    officer, _, county, people = county_month
    subject_id, program_id = people["张三"]
    recorded = await fetch(
        f"/api/v1/subjects/{subject_id}/detachments",
        "POST",
        token=officer.token,
        json_body={"start_date": "2026-10-28"},
    )
    assert recorded.status == 201, recorded.body
    board = (await fetch("/api/v1/dashboard", token=county.token)).json
    assert board["detachments_open"] == 1
    assert {u["org_id"]: u["detachments_open"] for u in board["units"]}[tree.station.id] == 1
    assert board["outcomes"]["ended"] == 0

    ended = await fetch(
        f"/api/v1/programs/{program_id}/terminate",
        "POST",
        token=officer.token,
        json_body={"kind": "died", "date": "2026-11-01"},
    )
    assert ended.status == 200, ended.body
    board = (await fetch("/api/v1/dashboard", token=county.token)).json
    assert board["supervised"] == 1
    assert board["outcomes"]["ended"] == 1
    assert board["outcomes"]["by_outcome"]["died"] == 1
    assert board["outcomes"]["rates"]["died"] == 1.0


async def test_roles_outside_the_offices_are_refused(fetch, tree, make_staff):
    worker = await make_staff(Role.SOCIAL_WORKER, tree.station)
    refused = await fetch("/api/v1/dashboard", token=await make_staff.token_for(worker))
    assert refused.status == 403


async def test_the_signing_overview_shows_what_each_station_signed(fetch, tree, county_month):
    officer, _, county, _ = county_month
    before = await fetch(f"/api/v1/dashboard/signing?org={tree.county.id}", token=county.token)
    assert before.status == 200, before.body
    assert before.json["months"][0] == "2026-10" and len(before.json["months"]) == 6
    rows = {r["org_id"]: r for r in before.json["rows"]}
    assert rows[tree.county.id]["months"][0]["status"] == "none"
    assert rows[tree.station.id]["unsigned"] == 6
    made = await fetch(
        "/api/v1/reports/compliance",
        "POST",
        token=officer.token,
        json_body={"org_id": tree.station.id, "month": "2026-10"},
    )
    assert made.status == 201
    signed = await fetch(
        f"/api/v1/reports/compliance/{made.json['id']}/sign",
        "POST",
        token=officer.token,
        json_body={"comment": "核对无误"},
    )
    assert signed.status == 200, signed.body
    after = await fetch("/api/v1/dashboard/signing?months=2", token=county.token)
    rows = {r["org_id"]: r for r in after.json["rows"]}
    october = rows[tree.station.id]["months"][0]
    assert october["status"] == "signed" and october["report_id"] == made.json["id"]
    assert october["version"] == 1
    assert rows[tree.station.id]["unsigned"] == 1
    assert rows[tree.station2.id]["months"][0]["status"] == "none"
    assert after.json["unsigned"] == sum(r["unsigned"] for r in after.json["rows"])
    too_many = await fetch("/api/v1/dashboard/signing?months=99", token=county.token)
    assert too_many.status == 422

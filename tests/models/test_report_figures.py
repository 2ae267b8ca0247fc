"""Monthly compliance figures against a hand-built October: every status and kind of obligation,
alerts and their acknowledgement, leave, 脱管, sanctions, e-location, assistance, intakes and
terminations, with records just outside the month on either side that must not count."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from bson import ObjectId

from models.alerts import ALERTS
from models.assistance import REFERRALS
from models.audit import AuditContext
from models.clock import LOCAL_TZ
from models.elocation import ELOCATION_ORDERS
from models.identity_numbers import IdType
from models.leave import LEAVE_REQUESTS
from models.obligations import OCCURRENCES
from models.orgs import Org, OrgKind
from models.policy import Role
from models.programs import PROGRAMS
from models.reports import FIGURE_KEYS, parse_month, snapshot_hash
from models.sanctions import DETACHMENTS, SANCTIONS
from models.subjects import SubjectInput
from server.app import SYSTEM
from tests.subject_factories import resident_id


def local(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=LOCAL_TZ)


class Month:
    """Writes one person's records the way the services store them."""

    def __init__(self, store: Any, subject_id: str, org: Org):
        self.db = store
        self.subject_id = subject_id
        self.path = list(org.path)
        self.program_id = str(ObjectId())
        self.count = 0

    async def program(self, kind: str, start: str, details: dict, ended_on: str | None = None):
        await self.db.collection(PROGRAMS).insert_one(
            {
                "_id": ObjectId(self.program_id),
                "subject_id": self.subject_id,
                "org_id": ObjectId(self.path[-1]),
                "org_path": self.path,
                "type": kind,
                "status": "ended" if ended_on else "active",
                "start_date": start,
                "end_date": "2027-12-31",
                "ended_on": ended_on,
                "details": details,
            }
        )

    async def window(
        self, kind: str, end: dt.datetime, status: str, *, result: str | None = None, **extra
    ):
        self.count += 1
        doc = {
            "_id": f"{self.program_id}:{kind}:{self.count}",
            "subject_id": self.subject_id,
            "program_id": self.program_id,
            "org_path": self.path,
            "kind": kind,
            "window_start": (end - dt.timedelta(days=1)).astimezone(dt.UTC),
            "window_end": end.astimezone(dt.UTC),
            "status": status,
            "required_hours": None,
            **extra,
        }
        if result:
            doc["result"] = result
        await self.db.collection(OCCURRENCES).insert_one(doc)

    async def alert(self, created: dt.datetime, acknowledged: dt.datetime | None = None):
        await self.db.collection(ALERTS).insert_one(
            {
                "kind": "obligation_missed",
                "org_path": self.path,
                "subject_id": self.subject_id,
                "status": "acknowledged" if acknowledged else "open",
                "created_at": created.astimezone(dt.UTC),
                "acknowledged_at": acknowledged.astimezone(dt.UTC) if acknowledged else None,
            }
        )

    async def leave(
        self, start: str, end: str, status: str = "approved", returned: str | None = None
    ):
        await self.db.collection(LEAVE_REQUESTS).insert_one(
            {
                "subject_id": self.subject_id,
                "org_path": self.path,
                "start_date": start,
                "end_date": end,
                "status": status,
                "returned_on": returned,
            }
        )

    async def detachment(self, start: str, end: str | None):
        await self.db.collection(DETACHMENTS).insert_one(
            {
                "subject_id": self.subject_id,
                "org_path": self.path,
                "start_date": start,
                "end_date": end,
            }
        )

    async def sanction(self, kind: str, status: str, decided: dt.datetime | None):
        await self.db.collection(SANCTIONS).insert_one(
            {
                "subject_id": self.subject_id,
                "org_path": self.path,
                "kind": kind,
                "status": status,
                "decided_at": decided.astimezone(dt.UTC) if decided else None,
            }
        )

    async def order(self, start: str, end: str, status: str):
        await self.db.collection(ELOCATION_ORDERS).insert_one(
            {
                "subject_id": self.subject_id,
                "org_path": self.path,
                "start_date": start,
                "end_date": end,
                "status": status,
            }
        )

    async def referral(self, created: dt.datetime, placed: dt.datetime, outcome: str):
        await self.db.collection(REFERRALS).insert_one(
            {
                "subject_id": self.subject_id,
                "org_path": self.path,
                "status": "completed",
                "needs": ["housing"],
                "created_at": created.astimezone(dt.UTC),
                "history": [
                    {"status": "requested", "at": created.astimezone(dt.UTC)},
                    {"status": "placed", "at": placed.astimezone(dt.UTC)},
                ],
                "outcome_kind": outcome,
                "outcome_at": placed.astimezone(dt.UTC),
            }
        )


async def person(services, org: Org, name: str) -> str:
    birth = dt.date(1988, 5, 4)
    view = await services.subjects.create(
        SYSTEM,
        SubjectInput(
            name=name,
            id_type=IdType.RESIDENT,
            id_number=resident_id(birth, "male"),
            phone="13800000000",
            gender="male",
            birth_date=birth,
            address="测试路 1 号",
            org_id=org.id,
        ),
    )
    return view.id


OCT_START = local(2026, 10, 1)
NOV_START = local(2026, 11, 1)
CORRECTIONS_DETAILS = {"supervision_level": "normal", "level_history": []}


@pytest.fixture
async def october(services, store, tree, clock):
    clock.set(local(2026, 11, 2, 9, 0))
    ids = {}
    for name, org in (
        ("张三", tree.station),
        ("李四", tree.station),
        ("王五", tree.station),
        ("赵六", tree.station),
        ("钱七", tree.station2),
        ("孙八", tree.other_station),
    ):
        ids[name] = await person(services, org, name)

    # 张三: corrections, strict until mid-October, then normal.
    a = Month(store, ids["张三"], tree.station)
    await a.program(
        "community_corrections", "2026-09-01", {**CORRECTIONS_DETAILS, "strict_until": "2026-10-15"}
    )
    for status, count in (
        ("done", 3),
        ("late", 2),
        ("missed", 1),
        ("scheduled", 1),  # closed unmet before the sweep ran: missed
        ("excused", 1),
        ("pending_review", 1),
    ):
        for day in range(count):
            await a.window("remote_checkin", local(2026, 10, 2 + day), status)
    await a.window("remote_checkin", NOV_START, "done")  # closes at the month's last instant
    await a.window("remote_checkin", NOV_START + dt.timedelta(seconds=1), "missed")  # November
    for _ in range(3):  # September: three misses, the last closing as October begins
        await a.window("remote_checkin", OCT_START, "missed")
    await a.window("in_person_report", local(2026, 10, 20), "done")
    await a.window("education", NOV_START, "missed", required_hours=8, hours_done=5)
    await a.window("community_service", NOV_START, "done", required_hours=8, hours_done=8)
    await a.alert(local(2026, 10, 5, 10, 0), local(2026, 10, 5, 10, 30))
    await a.alert(local(2026, 10, 6, 10, 0), local(2026, 10, 6, 11, 30))
    await a.alert(local(2026, 10, 20, 8, 0))
    await a.alert(local(2026, 9, 30, 23, 59), local(2026, 10, 1, 9, 0))  # September's
    await a.alert(NOV_START)  # November's
    await a.leave("2026-10-28", "2026-11-03")
    await a.leave("2026-10-10", "2026-10-12", status="pending")
    await a.detachment("2026-09-20", "2026-10-03")
    await a.sanction("warn", "approved", local(2026, 10, 12, 15, 0))
    await a.sanction("praise", "approved", local(2026, 9, 30, 15, 0))
    await a.order("2026-10-01", "2026-10-31", "approved")

    # 李四: community drug rehab from 10 October, every drug-test outcome once.
    b = Month(store, ids["李四"], tree.station)
    await b.program("drug_rehab", "2026-10-10", {"mode": "community_rehab"})
    await b.window("drug_test", local(2026, 10, 15), "done", result="negative")
    await b.window("drug_test", local(2026, 10, 16), "late", result="positive")
    await b.window("drug_test", local(2026, 10, 17), "missed", result="refused")
    await b.window("drug_test", local(2026, 10, 18), "missed", result="evaded")
    await b.window("drug_test", local(2026, 10, 19), "missed")
    await b.leave("2026-09-29", "2026-10-02", returned="2026-10-02")
    await b.sanction("admonish", "pending", None)
    await b.order("2026-10-05", "2026-12-05", "rejected")

    # 王五: a mental-health patient whose risk rose from 2 to 4 on 20 October.
    c = Month(store, ids["王五"], tree.station)
    await c.program(
        "mental_health",
        "2026-08-01",
        {
            "risk_level": 4,
            "risk_history": [{"level": 2, "at": "2026-08-01"}, {"level": 4, "at": "2026-10-20"}],
        },
    )
    await c.window("mental_followup", local(2026, 10, 8), "done")
    await c.window("mental_followup", local(2026, 10, 18), "late")
    await c.window("mental_followup", local(2026, 10, 28), "missed")
    await c.leave("2026-10-15", "2026-10-18")  # never returned from: overdue
    await c.referral(local(2026, 10, 3, 9, 0), local(2026, 10, 8, 9, 0), "housing_found")

    # 赵六: corrections ended on 20 October, with an open 脱管 from the 25th.
    d = Month(store, ids["赵六"], tree.station)
    await d.program(
        "community_corrections",
        "2026-05-01",
        {"supervision_level": "lenient", "strict_until": "2026-06-01", "level_history": []},
        ended_on="2026-10-20",
    )
    await d.detachment("2026-10-25", None)
    await d.sanction("revoke_request", "approved", local(2026, 10, 21, 10, 0))

    # 周九: supervised until August; only a September window left behind. Not in October.
    g = Month(store, await person(services, tree.station, "周九"), tree.station)
    await g.program(
        "community_corrections",
        "2026-03-01",
        {**CORRECTIONS_DETAILS, "strict_until": "2026-06-01"},
        ended_on="2026-08-31",
    )
    await g.window("remote_checkin", local(2026, 9, 20), "missed")

    # 钱七 at the county's other station, 孙八 in another county.
    e = Month(store, ids["钱七"], tree.station2)
    await e.program(
        "community_corrections", "2026-10-01", {**CORRECTIONS_DETAILS, "strict_until": "2027-01-01"}
    )
    await e.window("remote_checkin", local(2026, 10, 2), "done")
    f = Month(store, ids["孙八"], tree.other_station)
    await f.program(
        "community_corrections", "2026-10-01", {**CORRECTIONS_DETAILS, "strict_until": "2027-01-01"}
    )
    await f.window("remote_checkin", local(2026, 10, 2), "missed")
    return ids


STATION_FIGURES = {
    "subjects": 4,
    "intakes": 1,
    "terminations": 1,
    "obligations_due": 21,
    "obligations_on_time": 8,
    "obligations_late": 4,
    "obligations_missed": 7,
    "obligations_excused": 1,
    "obligations_pending": 1,
    "checkins_due": 10,
    "checkins_on_time": 4,
    "checkins_late": 2,
    "checkins_missed": 2,
    "checkins_excused": 1,
    "education_required_hours": 8,
    "education_done_hours": 5,
    "service_required_hours": 8,
    "service_done_hours": 8,
    "leave_approved": 3,
    "leave_days": 10,
    "overdue_returns": 1,
    "alerts": 3,
    "alerts_acknowledged": 2,
    "alerts_open": 1,
    "detachments": 2,
    "detachment_days": 10,
    "warn": 1,
    "revoke_request": 1,
    "drug_tests_negative": 1,
    "drug_tests_positive": 1,
    "drug_tests_refused": 1,
    "drug_tests_evaded": 1,
    "drug_tests_missed": 1,
    "followups_due": 3,
    "followups_done": 2,
    "elocation_orders": 1,
    "referrals": 1,
    "placements": 1,
    "housing_found": 1,
    "overdue": 2,
}


async def test_a_stations_month_matches_the_hand_count(services, tree, october):
    view, created = await services.reports.generate(SYSTEM, tree.station.id, "2026-10")
    assert created
    figures = view.summary["figures"]
    expected = {key: STATION_FIGURES.get(key, 0) for key in FIGURE_KEYS}
    assert figures == expected
    assert view.summary["rates"] == {
        "compliance_rate": round(12 / 19, 4),
        "on_time_rate": round(8 / 19, 4),
        "checkin_rate": round(6 / 9, 4),
        "alert_ack_median_minutes": 60.0,
    }
    assert view.summary["by_level"] == {"lenient": 1, "normal": 1}
    assert view.summary["by_trend"] == {"falling": 1, "rising": 2, "steady": 1}
    assert set(view.summary["by_program"]) == {
        "community_corrections",
        "drug_rehab",
        "mental_health",
    }
    assert view.summary["by_program"]["drug_rehab"]["obligations_missed"] == 3
    assert view.summary["units"] == []  # a station has no reporting units below it
    exported = await services.reports.export_data(SYSTEM, view.id, "xlsx")
    expected_people = {october[name] for name in ("张三", "李四", "王五", "赵六")}
    assert {row["subject_id"] for row in exported["rows"]} == expected_people  # not 周九


async def test_each_person_behind_a_figure(services, tree, october, make_staff):
    officer = await make_staff(Role.STATION_OFFICER, tree.station)
    ctx = AuditContext(officer.identity, "test")
    view, _ = await services.reports.generate(ctx, tree.station.id, "2026-10")
    behind = {
        figure: {
            row["name"]: row["value"]
            for row in await services.reports.drill_down(ctx, view.id, figure)
        }
        for figure in ("obligations_missed", "detachment_days", "overdue_returns", "subjects")
    }
    assert behind["obligations_missed"] == {"张三": 3, "李四": 3, "王五": 1}
    assert behind["detachment_days"] == {"张三": 3, "赵六": 7}
    assert behind["overdue_returns"] == {"王五": 1}
    assert set(behind["subjects"]) == {"张三", "李四", "王五", "赵六"}
    one = await services.reports.subject_month(ctx, october["王五"], "2026-10")
    assert one["risk_level"] == 4 and one["trend"] == "rising"
    assert one["figures"]["followups_done"] == 2 and one["figures"]["referrals"] == 1


async def test_the_county_adds_up_its_stations_and_nothing_beyond(services, tree, october):
    station, _ = await services.reports.generate(SYSTEM, tree.station.id, "2026-10")
    county, _ = await services.reports.generate(SYSTEM, tree.county.id, "2026-10")
    figures = county.summary["figures"]
    assert figures["subjects"] == 5  # 孙八, in another county, is not counted
    assert figures["checkins_due"] == station.summary["figures"]["checkins_due"] + 1
    assert figures["checkins_on_time"] == station.summary["figures"]["checkins_on_time"] + 1
    units = {unit["org_id"]: unit["figures"] for unit in county.summary["units"]}
    assert units[tree.station.id] == station.summary["figures"]
    assert units[tree.station2.id]["subjects"] == 1
    city, _ = await services.reports.generate(SYSTEM, tree.city.id, "2026-10")
    assert [u["org_id"] for u in city.summary["units"]] == [tree.county.id]


async def test_a_quiet_station_has_its_line_and_the_county_its_totals(services, tree, october):
    quiet = await services.orgs.create(
        SYSTEM, name="松台司法所", code="330302003", kind=OrgKind.STATION, parent_id=tree.county.id
    )
    county, _ = await services.reports.generate(SYSTEM, tree.county.id, "2026-10")
    assert county.summary["figures"]["subjects"] == 5
    lines = {unit["org_id"]: unit for unit in county.summary["units"]}
    assert [unit["org_id"] for unit in county.summary["units"]] == [
        tree.station.id,
        tree.station2.id,
        quiet.id,
    ]  # in code order, the quiet one among the others
    assert lines[quiet.id]["nothing_recorded"] is True
    assert set(lines[quiet.id]["figures"].values()) == {0}
    assert not lines[tree.station2.id]["nothing_recorded"]
    assert tree.other_station.id not in lines


def test_a_quiet_unit_leaves_the_signed_hash_as_it_was():
    """A signature made before quiet units were listed still matches the same data."""
    unit = {
        "org_id": "a",
        "name": "五马司法所",
        "kind": "station",
        "figures": {"subjects": 1},
        "rates": {"compliance_rate": 0.5},
    }
    rows = [{"subject_id": "s1", "values": {"subjects": 1}}]
    before = {"figures": {"subjects": 1}, "units": [unit]}
    quiet = {**unit, "org_id": "b", "name": "松台司法所", "figures": {"subjects": 0}}
    now = {
        "figures": {"subjects": 1},
        "units": [{**unit, "nothing_recorded": False}, {**quiet, "nothing_recorded": True}],
    }
    assert snapshot_hash("c", "2026-10", now, rows) == snapshot_hash("c", "2026-10", before, rows)
    moved = {**now, "units": [{**unit, "figures": {"subjects": 2}, "nothing_recorded": False}]}
    assert snapshot_hash("c", "2026-10", moved, rows) != snapshot_hash("c", "2026-10", before, rows)


def test_months_are_local_and_must_have_ended():
    now = local(2026, 11, 1, 0, 0).astimezone(dt.UTC)
    october = parse_month("2026-10", now)
    assert october.start == local(2026, 10, 1).astimezone(dt.UTC)
    assert october.end == local(2026, 11, 1).astimezone(dt.UTC)
    assert october.previous().label == "2026-09"
    with pytest.raises(Exception, match="ended"):
        parse_month("2026-11", now)
    for malformed in ("2026-1", "2026-00", "26-10", "2026-10-01", ""):
        with pytest.raises(Exception, match="YYYY-MM"):
            parse_month(malformed, now)

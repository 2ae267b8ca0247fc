"""Unauthorised absences of people in drug rehabilitation (戒毒条例 Art. 20): the third absence,
or a 31st day away in total, is a serious breach; the limits are held at their boundary, and
bad dates or the wrong person are refused, naming the field."""

from __future__ import annotations

import datetime as dt

import pytest

from models.clock import LOCAL_TZ
from models.policy import Role
from tests.subject_factories import subject_body

DETOX = {"type": "drug_rehab", "start_date": "2026-01-10", "mode": "community_detox"}


@pytest.fixture
async def desk(fetch, make_staff, tree, clock):
    clock.set(dt.datetime(2026, 9, 1, 9, 0, tzinfo=LOCAL_TZ))
    station = await make_staff(Role.STATION_OFFICER, tree.station)
    token = await make_staff.token_for(station)

    class Desk:
        async def call(self, path: str, method: str = "GET", body: dict | None = None):
            return await fetch(path, method, json_body=body, token=token)

        async def person(self, program: dict | None = DETOX) -> str:
            created = await self.call("/api/v1/subjects", "POST", subject_body(tree.station.id))
            assert created.status == 201, created.body
            sid = str(created.json["id"])
            if program is not None:
                opened = await self.call(f"/api/v1/subjects/{sid}/programs", "POST", program)
                assert opened.status == 201, opened.body
            return sid

        async def absent(self, sid: str, start: str, end: str, via: str = "visit", note: str = ""):
            return await self.call(
                f"/api/v1/subjects/{sid}/absences",
                "POST",
                {"from_date": start, "to_date": end, "discovered_via": via, "note": note},
            )

    return Desk()


async def breaches(store, sid: str) -> list[dict]:
    return (
        await store.database["alerts"].find({"kind": "serious_breach", "subject_id": sid}).to_list()
    )


async def test_the_third_absence_is_a_serious_breach(desk, store):
    sid = await desk.person()
    first = await desk.absent(sid, "2026-02-01", "2026-02-02")
    assert first.status == 201, first.body
    assert first.json["absence"]["days"] == 2
    second = await desk.absent(sid, "2026-03-01", "2026-03-01", via="police")
    assert second.json["tally"]["absences"] == 2
    assert second.json["tally"]["breached"] == []
    assert await breaches(store, sid) == []  # two absences: no breach yet

    third = await desk.absent(sid, "2026-04-01", "2026-04-01", via="drug_test")
    assert third.status == 201, third.body
    tally = third.json["tally"]
    assert (tally["absences"], tally["absent_days"], tally["max_absences"]) == (3, 4, 3)
    assert tally["breached"] == ["drug_rehab.serious_breach_absences"]
    [alert] = await breaches(store, sid)
    assert alert["details"]["rule"] == "drug_rehab.serious_breach_absences"
    assert alert["details"]["rules_version"] == tally["rules_version"]
    assert alert["details"]["absences"] == 3 and alert["details"]["limit"] == 3
    assert alert["details"]["for_roles"] == ["police"]
    assert alert["details"]["program_id"] == third.json["absence"]["program_id"]

    # A fourth absence finds the breach raised already.
    assert (await desk.absent(sid, "2026-05-01", "2026-05-01")).status == 201
    assert len(await breaches(store, sid)) == 1
    listed = await desk.call(f"/api/v1/subjects/{sid}/absences")
    assert [a["from_date"] for a in listed.json["items"]] == [
        "2026-02-01",
        "2026-03-01",
        "2026-04-01",
        "2026-05-01",
    ]
    assert listed.json["tally"]["absences"] == 4


async def test_thirty_days_away_in_total_is_not_a_breach_and_thirty_one_is(desk, store):
    sid = await desk.person()
    # 1 February to 2 March 2026, both ends counted: 28 + 2 = 30 days.
    month = await desk.absent(sid, "2026-02-01", "2026-03-02")
    assert month.status == 201, month.body
    assert month.json["absence"]["days"] == 30
    assert month.json["tally"]["absent_days"] == 30
    assert month.json["tally"]["breached"] == []
    assert await breaches(store, sid) == []
    # One more day, on another occasion: 31 in total, from only two absences.
    day = await desk.absent(sid, "2026-06-15", "2026-06-15")
    assert day.json["tally"]["absent_days"] == 31
    assert day.json["tally"]["breached"] == ["drug_rehab.serious_breach_absent_days"]
    [alert] = await breaches(store, sid)
    assert alert["details"]["rule"] == "drug_rehab.serious_breach_absent_days"
    assert alert["details"]["absent_days"] == 31 and alert["details"]["limit"] == 30
    assert alert["details"]["rules_version"]


async def test_a_single_absence_of_thirty_one_days_is_a_breach(desk, store):
    sid = await desk.person()
    long = await desk.absent(sid, "2026-02-01", "2026-03-03")
    assert long.json["absence"]["days"] == 31
    assert [a["details"]["rule"] for a in await breaches(store, sid)] == [
        "drug_rehab.serious_breach_absent_days"
    ]


async def test_dates_in_the_wrong_order_or_ahead_are_refused_naming_the_field(desk, store):
    sid = await desk.person()
    backwards = await desk.absent(sid, "2026-03-05", "2026-03-04")
    assert backwards.status == 422
    assert backwards.error["details"][0]["field"] == "to_date"
    ahead = await desk.absent(sid, "2026-08-30", "2026-09-02")  # today is 1 September
    assert ahead.status == 422
    assert ahead.error["details"][0]["field"] == "to_date"
    unknown = await desk.absent(sid, "2026-03-04", "2026-03-05", via="rumour")
    assert unknown.status == 422
    assert await store.database["absences"].count_documents({}) == 0


async def test_an_absence_outside_the_programs_term_is_refused(desk):
    sid = await desk.person()
    before = await desk.absent(sid, "2026-01-09", "2026-01-12")
    assert before.status == 422
    assert before.error["details"][0] == {"field": "from_date", "type": "outside_term"}
    assert (await desk.absent(sid, "2026-01-10", "2026-01-10")).status == 201  # its first day
    # A 社区康复 term ending on 30 June (exclusive, as its obligation windows): 29 June is in.
    rehab = await desk.person(
        {
            "type": "drug_rehab",
            "start_date": "2026-01-10",
            "end_date": "2026-06-30",
            "mode": "community_rehab",
        }
    )
    assert (await desk.absent(rehab, "2026-06-28", "2026-06-29")).status == 201
    after = await desk.absent(rehab, "2026-06-29", "2026-06-30")
    assert after.status == 422
    assert after.error["details"][0] == {"field": "to_date", "type": "outside_term"}


async def test_overlapping_absences_are_refused(desk):
    sid = await desk.person()
    assert (await desk.absent(sid, "2026-02-01", "2026-02-05")).status == 201
    overlap = await desk.absent(sid, "2026-02-05", "2026-02-07")
    assert overlap.status == 422
    assert overlap.error["details"][0]["field"] == "from_date"
    assert overlap.error["details"][0]["type"] == "overlap"


async def test_only_a_person_in_drug_rehabilitation_has_absences_recorded(desk):
    corrections = await desk.person(
        {
            "type": "community_corrections",
            "start_date": "2026-03-02",
            "end_date": "2027-03-01",
            "sentence_type": "probation",
        }
    )
    refused = await desk.absent(corrections, "2026-04-01", "2026-04-02")
    assert refused.status == 409
    assert refused.error["code"] == "not_in_drug_rehab"
    nobody = await desk.person(None)
    assert (await desk.absent(nobody, "2026-04-01", "2026-04-02")).error["code"] == (
        "not_in_drug_rehab"
    )
    listed = await desk.call(f"/api/v1/subjects/{nobody}/absences")
    assert listed.status == 200 and listed.json == {"items": [], "tally": None}


async def test_the_note_is_sealed_under_the_persons_key(desk, store):
    sid = await desk.person()
    note = "邻居反映其去外省打工"
    answer = await desk.absent(sid, "2026-02-01", "2026-02-03", via="community", note=note)
    assert answer.json["absence"]["note"] == note
    stored = await store.database["absences"].find_one({})
    assert isinstance(stored["note"], bytes) and note.encode() not in stored["note"]
    assert stored["discovered_via"] == "community"
    listed = await desk.call(f"/api/v1/subjects/{sid}/absences")
    assert listed.json["items"][0]["note"] == note

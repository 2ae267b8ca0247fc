"""阳光之家 assistance through the API: capacity that is never overbooked under concurrency, a
waiting list served in order, the referral workflow's guarded steps, stay limits, course hours
credited to education obligations, and a coordinator's narrow view."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from bson import ObjectId

from models.clock import LOCAL_TZ
from models.crypto import Sealed
from models.policy import Role
from server.app import SYSTEM
from tests.subject_factories import subject_body


def local(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=LOCAL_TZ)


class Desk:
    """The county's and a station's staff, with fresh tokens as the clock moves."""

    def __init__(self, fetch, make_staff, tree):
        self.fetch = fetch
        self.make_staff = make_staff
        self.tree = tree

    async def setup(self) -> Desk:
        self.county = await self.make_staff(Role.COUNTY_OFFICER, self.tree.county)
        self.station = await self.make_staff(Role.STATION_OFFICER, self.tree.station)
        self.social = await self.make_staff(Role.SOCIAL_WORKER, self.tree.station)
        self.coordinator = await self.make_staff(Role.ASSISTANCE_COORDINATOR, self.tree.station)
        self.other_coordinator = await self.make_staff(
            Role.ASSISTANCE_COORDINATOR, self.tree.station
        )
        return self

    async def call(self, who, path, method="GET", body=None):
        token = await self.make_staff.token_for(who)
        return await self.fetch(path, method, json_body=body, token=token)

    async def person(self, program: dict | None = None) -> str:
        created = await self.call(
            self.station, "/api/v1/subjects", "POST", subject_body(self.tree.station.id)
        )
        subject_id = created.json["id"]
        await self.call(
            self.station,
            f"/api/v1/subjects/{subject_id}/assignments",
            "PUT",
            {"social_worker_ids": [self.social.id]},
        )
        if program is not None:
            opened = await self.call(
                self.station, f"/api/v1/subjects/{subject_id}/programs", "POST", program
            )
            assert opened.status == 201, opened.body
        return subject_id

    async def facility(self, capacity: int, **extra) -> dict:
        answer = await self.call(
            self.county,
            "/api/v1/assistance/facilities",
            "POST",
            {
                "name": "鹿城阳光之家",
                "kind": "sunshine_home",
                "org_id": self.tree.county.id,
                "capacity": capacity,
                "coordinator_ids": [self.coordinator.id],
                **extra,
            },
        )
        assert answer.status == 201, answer.body
        return answer.json

    async def accepted_referral(self, subject_id: str, resource_id: str) -> str:
        referral = await self.call(
            self.social,
            "/api/v1/assistance/referrals",
            "POST",
            {"subject_id": subject_id, "needs": ["housing"], "resource_id": resource_id},
        )
        assert referral.status == 201, referral.body
        rid = referral.json["id"]
        for who, step in (
            (self.station, {"to": "approved"}),
            (self.social, {"to": "offered", "resource_id": resource_id}),
            (self.social, {"to": "accepted"}),
        ):
            moved = await self.call(
                who, f"/api/v1/assistance/referrals/{rid}/transition", "POST", step
            )
            assert moved.status == 200, moved.body
        return rid


@pytest.fixture
async def desk(fetch, make_staff, tree, clock):
    clock.set(local(2026, 11, 2, 9, 0))
    return await Desk(fetch, make_staff, tree).setup()


async def test_twenty_concurrent_placements_into_three_beds(desk):
    home = await desk.facility(capacity=3)
    people = [await desk.person() for _ in range(20)]
    referrals = [await desk.accepted_referral(p, home["id"]) for p in people]
    token = await desk.make_staff.token_for(desk.coordinator)
    answers = await asyncio.gather(
        *(
            desk.fetch(
                "/api/v1/assistance/placements",
                "POST",
                json_body={"referral_id": rid, "resource_id": home["id"]},
                token=token,
            )
            for rid in referrals
        )
    )
    placed = [a for a in answers if a.status == 201]
    full = [a for a in answers if a.status == 409]
    assert len(placed) == 3 and len(full) == 17
    assert all(a.json["error"]["code"] == "full" for a in full)
    positions = sorted(a.json["error"]["details"]["waiting_position"] for a in full)
    assert positions == list(range(1, 18))
    state = await desk.call(desk.county, f"/api/v1/assistance/facilities/{home['id']}")
    assert (state.json["occupied"], state.json["waiting"]) == (3, 17)
    listed = await desk.call(desk.county, f"/api/v1/assistance/resources/{home['id']}/waiting-list")
    order = [item["referral_id"] for item in listed.json["items"]]
    assert [item["position"] for item in listed.json["items"]] == list(range(1, 18))

    # A check-out frees a bed: it is held for the first waiting, who is offered it.
    first_placement = placed[0].json["id"]
    out = await desk.call(
        desk.coordinator,
        f"/api/v1/assistance/placements/{first_placement}/checkout",
        "POST",
        {"reason": "找到住处"},
    )
    assert out.status == 200, out.body
    head = await desk.call(desk.social, f"/api/v1/assistance/referrals/{order[0]}")
    assert head.json["status"] == "offered"
    # Someone further down cannot take the held bed.
    jumped = await desk.call(
        desk.coordinator,
        "/api/v1/assistance/placements",
        "POST",
        {"referral_id": order[5], "resource_id": home["id"]},
    )
    assert jumped.status == 409
    accepted = await desk.call(
        desk.social,
        f"/api/v1/assistance/referrals/{order[0]}/transition",
        "POST",
        {"to": "accepted"},
    )
    assert accepted.status == 200, accepted.body
    taken = await desk.call(
        desk.coordinator,
        "/api/v1/assistance/placements",
        "POST",
        {"referral_id": order[0], "resource_id": home["id"]},
    )
    assert taken.status == 201, taken.body
    state = await desk.call(desk.county, f"/api/v1/assistance/facilities/{home['id']}")
    assert (state.json["occupied"], state.json["held"], state.json["waiting"]) == (3, 0, 16)


async def test_every_forbidden_transition_is_refused(desk):
    home = await desk.facility(capacity=1)
    subject_id = await desk.person()
    referral = await desk.call(
        desk.social,
        "/api/v1/assistance/referrals",
        "POST",
        {"subject_id": subject_id, "needs": ["housing", "job"]},
    )
    rid = referral.json["id"]

    async def move(who, to, **extra):
        return await desk.call(
            who, f"/api/v1/assistance/referrals/{rid}/transition", "POST", {"to": to, **extra}
        )

    for to in ("offered", "accepted", "completed", "no_show"):
        refused = await move(desk.station, to)
        assert refused.status == 409, (to, refused.body)
        assert refused.json["error"]["details"]["status"] == "requested"
    assert (await move(desk.social, "approved")).status == 403  # the station approves
    assert (await move(desk.station, "approved")).status == 200
    assert (await move(desk.station, "approved")).status == 409
    assert (await move(desk.social, "offered")).status == 422  # which resource?
    assert (await move(desk.social, "offered", resource_id=home["id"])).status == 200
    assert (await move(desk.social, "placed")).status == 409  # through a placement only
    assert (await move(desk.social, "declined")).status == 422  # a reason is required
    declined = await move(desk.social, "declined", reason="本人不愿入住")
    assert declined.status == 200
    assert [h["status"] for h in declined.json["history"]] == [
        "requested",
        "approved",
        "offered",
        "declined",
    ]
    for to in ("approved", "offered", "accepted", "cancelled"):
        assert (await move(desk.station, to)).status == 409


async def test_an_inactive_resource_answers_full_with_a_place_in_line(desk):
    home = await desk.facility(capacity=2)
    subject_id = await desk.person()
    rid = await desk.accepted_referral(subject_id, home["id"])
    closed = await desk.call(
        desk.county, f"/api/v1/assistance/facilities/{home['id']}", "PATCH", {"active": False}
    )
    assert closed.json["active"] is False
    refused = await desk.call(
        desk.coordinator,
        "/api/v1/assistance/placements",
        "POST",
        {"referral_id": rid, "resource_id": home["id"]},
    )
    assert refused.status == 409
    assert refused.json["error"]["details"] == {"waiting_position": 1, "inactive": True}
    reopened = await desk.call(
        desk.county, f"/api/v1/assistance/facilities/{home['id']}", "PATCH", {"active": True}
    )
    assert reopened.json["held"] == 1 and reopened.json["waiting"] == 0
    offered = await desk.call(desk.social, f"/api/v1/assistance/referrals/{rid}")
    assert offered.json["status"] == "offered"


async def test_a_stay_beyond_the_limit_needs_the_countys_approval(desk, clock):
    home = await desk.facility(capacity=1)
    subject_id = await desk.person()
    rid = await desk.accepted_referral(subject_id, home["id"])
    placed = await desk.call(
        desk.coordinator,
        "/api/v1/assistance/placements",
        "POST",
        {"referral_id": rid, "resource_id": home["id"]},
    )
    assert placed.json["stay_until"] == "2027-01-31"  # 90 days: the rule's default
    pid = placed.json["id"]
    arrived = await desk.call(
        desk.coordinator,
        f"/api/v1/assistance/placements/{pid}/arrival",
        "POST",
        {"on": "2026-11-02"},
    )
    assert arrived.json["arrived_on"] == "2026-11-02"
    by_station = await desk.call(
        desk.station,
        f"/api/v1/assistance/placements/{pid}/extension",
        "POST",
        {"until": "2027-03-31", "reason": "仍在找工作"},
    )
    assert by_station.status == 403
    too_long = await desk.call(
        desk.county,
        f"/api/v1/assistance/placements/{pid}/extension",
        "POST",
        {"until": "2027-06-30", "reason": "仍在找工作"},
    )
    assert too_long.status == 409
    assert too_long.json["error"]["code"] == "beyond_limit"
    granted = await desk.call(
        desk.county,
        f"/api/v1/assistance/placements/{pid}/extension",
        "POST",
        {"until": "2027-04-30", "reason": "仍在找工作"},
    )
    assert granted.status == 200 and granted.json["stay_until"] == "2027-04-30"


async def test_course_hours_are_credited_to_education_obligations(desk, fetch, services):
    corrections = {
        "type": "community_corrections",
        "start_date": "2026-11-02",
        "end_date": "2027-11-01",
        "sentence_type": "probation",
    }
    subject_id = await desk.person(corrections)
    course = await desk.call(
        desk.county,
        "/api/v1/assistance/courses",
        "POST",
        {
            "name": "电工培训",
            "org_id": desk.tree.county.id,
            "seats": 10,
            "hours_credit": 4,
            "coordinator_ids": [desk.coordinator.id],
        },
    )
    assert course.status == 201, course.body
    rid = await desk.accepted_referral(subject_id, course.json["id"])
    enrolled = await desk.call(
        desk.coordinator,
        "/api/v1/assistance/placements",
        "POST",
        {"referral_id": rid, "resource_id": course.json["id"]},
    )
    assert enrolled.status == 201
    referral = await desk.call(desk.social, f"/api/v1/assistance/referrals/{rid}")
    assert referral.json["status"] == "enrolled"

    async def education():
        answer = await desk.call(
            desk.station,
            f"/api/v1/subjects/{subject_id}/obligations?from=2026-11-02&to=2026-11-30"
            "&kind=education",
        )
        (month,) = [o for o in answer.json["items"] if o["id"]]
        return month

    before = await education()
    required = before["required_hours"]
    assert required and before["status"] == "open"
    sessions = -(-required // 4)
    for day in range(sessions):
        credited = await desk.call(
            desk.coordinator,
            f"/api/v1/assistance/courses/{course.json['id']}/attendance",
            "POST",
            {"subject_id": subject_id, "on": f"2026-11-{3 + day:02d}", "hours": 4},
        )
        assert credited.status == 200, credited.body
        assert credited.json["credited"] is True
    after = await education()
    assert after["status"] == "done"
    too_many = await desk.call(
        desk.coordinator,
        f"/api/v1/assistance/courses/{course.json['id']}/attendance",
        "POST",
        {"subject_id": subject_id, "on": "2026-11-20", "hours": 9},
    )
    assert too_many.status == 422


async def test_a_coordinator_sees_only_referrals_to_their_facility(desk):
    mine = await desk.facility(capacity=2)
    theirs = await desk.call(
        desk.county,
        "/api/v1/assistance/facilities",
        "POST",
        {
            "name": "南汇过渡性安置基地",
            "kind": "transitional_base",
            "org_id": desk.tree.county.id,
            "capacity": 2,
            "coordinator_ids": [desk.other_coordinator.id],
        },
    )
    one = await desk.accepted_referral(await desk.person(), mine["id"])
    other = await desk.accepted_referral(await desk.person(), theirs.json["id"])
    listed = await desk.call(desk.coordinator, "/api/v1/assistance/referrals")
    assert [r["id"] for r in listed.json["items"]] == [one]
    visible = listed.json["items"][0]
    assert visible["subject_name"]  # the name (and phone, gender) only: no ID number, address
    assert (
        await desk.call(desk.coordinator, f"/api/v1/assistance/referrals/{other}")
    ).status == 404
    assert (
        await desk.call(desk.coordinator, f"/api/v1/assistance/facilities/{theirs.json['id']}")
    ).status == 404
    refused = await desk.call(
        desk.coordinator,
        "/api/v1/assistance/placements",
        "POST",
        {"referral_id": other, "resource_id": theirs.json["id"]},
    )
    assert refused.status == 404


async def test_the_coordinator_of_the_referred_to_org_opens_the_persons_file(desk):
    subject_id = await desk.person()
    here = await desk.make_staff(Role.ASSISTANCE_COORDINATOR, desk.tree.county)
    elsewhere = await desk.make_staff(Role.ASSISTANCE_COORDINATOR, desk.tree.station2)
    path = f"/api/v1/subjects/{subject_id}"
    assert (await desk.call(here, path)).status == 404  # nothing referred yet
    home = await desk.facility(capacity=2)  # a facility of the county
    await desk.accepted_referral(subject_id, home["id"])
    opened = await desk.call(here, path)
    assert opened.status == 200, opened.body
    assert opened.json["name"] and opened.json.get("id_number") is None  # the coordinator's view
    assert (await desk.call(elsewhere, path)).status == 404


async def test_needs_outcomes_and_the_countys_month(desk, clock):
    subject_id = await desk.person()
    needs = await desk.call(
        desk.social,
        f"/api/v1/subjects/{subject_id}/needs",
        "PUT",
        {"housing": True, "employment": True, "income": True, "food": True},
    )
    assert needs.status == 200, needs.body
    assert needs.json["three_nos"] is True
    home = await desk.facility(capacity=5)
    rid = await desk.accepted_referral(subject_id, home["id"])
    clock.advance(dt.timedelta(days=3))
    placed = await desk.call(
        desk.coordinator,
        "/api/v1/assistance/placements",
        "POST",
        {"referral_id": rid, "resource_id": home["id"]},
    )
    assert placed.status == 201
    outcome = await desk.call(
        desk.social,
        f"/api/v1/assistance/referrals/{rid}/outcome",
        "POST",
        {"kind": "job_found", "employer": "温州鞋业有限公司", "start_date": "2026-12-01"},
    )
    assert outcome.json["outcome"]["employer"] == "温州鞋业有限公司"
    summary = await desk.call(
        desk.county, f"/api/v1/assistance/summary?org_id={desk.tree.county.id}&month=2026-11"
    )
    assert summary.status == 200, summary.body
    assert summary.json["referrals_by_status"] == {"placed": 1}
    assert summary.json["referrals_by_need"] == {"housing": 1}
    assert summary.json["median_days_to_placement"] == 3.0
    (home_row,) = [r for r in summary.json["occupancy"] if r["id"] == home["id"]]
    assert home_row["occupied"] == 1
    # Months whose bounds the calendar cannot hold in UTC answered 500.
    for month in ("0001-01", "9999-12", "2026-13", ""):
        odd = await desk.call(desk.county, f"/api/v1/assistance/summary?month={month}")
        assert odd.status == 422 and odd.error["details"][0]["field"] == "month", month


async def test_a_cancelled_hold_passes_to_the_next_waiting(desk):
    home = await desk.facility(capacity=1)
    people = [await desk.person() for _ in range(3)]
    referrals = [await desk.accepted_referral(p, home["id"]) for p in people]
    for rid in referrals:
        await desk.call(
            desk.coordinator,
            "/api/v1/assistance/placements",
            "POST",
            {"referral_id": rid, "resource_id": home["id"]},
        )
    placement = await desk.call(desk.social, f"/api/v1/assistance/referrals/{referrals[0]}")
    assert placement.json["status"] == "placed"
    # The bed frees; the second is offered it and says no; the third is offered it next.
    placed_id = f"{home['id']}:{referrals[0]}"
    await desk.call(
        desk.coordinator,
        f"/api/v1/assistance/placements/{placed_id}/checkout",
        "POST",
        {"reason": "租到房子"},
    )
    second = await desk.call(desk.social, f"/api/v1/assistance/referrals/{referrals[1]}")
    assert second.json["status"] == "offered"
    declined = await desk.call(
        desk.social,
        f"/api/v1/assistance/referrals/{referrals[1]}/transition",
        "POST",
        {"to": "declined", "reason": "已投靠亲属"},
    )
    assert declined.status == 200
    third = await desk.call(desk.social, f"/api/v1/assistance/referrals/{referrals[2]}")
    assert third.json["status"] == "offered"
    state = await desk.call(desk.county, f"/api/v1/assistance/facilities/{home['id']}")
    assert (state.json["occupied"], state.json["held"], state.json["waiting"]) == (0, 1, 0)


async def test_people_are_reminded_before_their_stay_ends(desk, services, clock):
    home = await desk.facility(capacity=1, max_stay_days=30)
    subject_id = await desk.person()
    rid = await desk.accepted_referral(subject_id, home["id"])
    await desk.call(
        desk.coordinator,
        "/api/v1/assistance/placements",
        "POST",
        {"referral_id": rid, "resource_id": home["id"]},
    )
    assert await services.assistance.remind_stays_ending(clock.now()) == 0
    clock.advance(dt.timedelta(days=17))
    assert await services.assistance.remind_stays_ending(clock.now()) == 1
    assert await services.assistance.remind_stays_ending(clock.now()) == 0
    messages = await services.notifications.for_recipient(f"subject:{subject_id}")
    assert any(m["title"] == "入住期限提醒" for m in messages)


async def test_a_facility_for_some_populations_refuses_others(desk):
    corrections = {
        "type": "community_corrections",
        "start_date": "2026-11-02",
        "end_date": "2027-11-01",
        "sentence_type": "probation",
    }
    base = await desk.facility(capacity=5, populations=["resettlement"])
    subject_id = await desk.person(corrections)
    rid = await desk.accepted_referral(subject_id, base["id"])
    refused = await desk.call(
        desk.coordinator,
        "/api/v1/assistance/placements",
        "POST",
        {"referral_id": rid, "resource_id": base["id"]},
    )
    assert refused.status == 409
    assert refused.json["error"]["code"] == "not_eligible"
    state = await desk.call(desk.county, f"/api/v1/assistance/facilities/{base['id']}")
    assert state.json["occupied"] == 0


async def test_referral_reasons_and_outcomes_follow_a_key_rotation(desk, services, store):
    """A reason or outcome written after the person's key was rotated answered 500 (sealed under
    the destroyed first key), and reasons kept inside the history were missed by rotations."""
    home = await desk.facility(capacity=1)
    subject_id = await desk.person()
    referral = await desk.call(
        desk.social,
        "/api/v1/assistance/referrals",
        "POST",
        {"subject_id": subject_id, "needs": ["housing"]},
    )
    rid = referral.json["id"]
    path = f"/api/v1/assistance/referrals/{rid}"
    assert (
        await desk.call(desk.station, f"{path}/transition", "POST", {"to": "approved"})
    ).status == 200
    offered = await desk.call(
        desk.social, f"{path}/transition", "POST", {"to": "offered", "resource_id": home["id"]}
    )
    assert offered.status == 200
    first_key = await services.subjects.rotate_data_key(SYSTEM, subject_id)
    declined = await desk.call(
        desk.social, f"{path}/transition", "POST", {"to": "declined", "reason": "已投靠亲属"}
    )
    assert declined.status == 200, declined.body
    outcome = await desk.call(
        desk.social,
        f"{path}/outcome",
        "POST",
        {"kind": "job_found", "employer": "温州鞋业有限公司", "start_date": "2026-12-01"},
    )
    assert outcome.status == 200, outcome.body
    second_key = await services.subjects.rotate_data_key(SYSTEM, subject_id)
    assert second_key != first_key
    stored = await store.collection("referrals").find_one({"_id": ObjectId(rid)})
    sealed = [stored["outcome"], *stored["reasons"].values()]
    assert sealed and all(Sealed.from_bytes(bytes(v)).key_id == second_key for v in sealed)
    assert not any("reason" in step for step in stored["history"])
    again = await desk.call(desk.social, path)
    assert again.status == 200 and again.json["outcome"]["employer"] == "温州鞋业有限公司"

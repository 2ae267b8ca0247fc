"""Hours the law counts: 教育学习 and 公益活动 months are met by hours recorded, never by a word."""

from __future__ import annotations

import datetime as dt

import pytest

from models.clock import LOCAL_TZ
from models.crypto import Sealed
from models.policy import Role
from server.app import SYSTEM
from tests.subject_factories import subject_body

# A corrections case past its strict months: 8 hours a month of each (2012 实施办法 Arts. 15-16).
CORRECTIONS = {
    "type": "community_corrections",
    "start_date": "2026-03-02",
    "end_date": "2027-03-01",
    "sentence_type": "probation",
}


def local(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=LOCAL_TZ)


@pytest.fixture
async def case(fetch, tree, make_staff, clock):
    """A case recorded on 2026-11-10, its November windows (11-02 to 12-02) open."""
    clock.set(local(2026, 11, 10, 9, 0))
    officer = await make_staff(Role.STATION_OFFICER, tree.station)
    officer.token = await make_staff.token_for(officer)
    subject = await fetch(
        "/api/v1/subjects", "POST", json_body=subject_body(tree.station.id), token=officer.token
    )
    opened = await fetch(
        f"/api/v1/subjects/{subject.json['id']}/programs",
        "POST",
        json_body=CORRECTIONS,
        token=officer.token,
    )
    assert opened.status == 201, opened.body

    class Case:
        subject_id = subject.json["id"]
        token = officer.token

        async def at(self, moment: dt.datetime) -> None:
            clock.set(moment)  # the session must not idle out across simulated time
            self.token = await make_staff.token_for(officer)

        async def month(self, kind: str) -> dict:
            answer = await fetch(
                f"/api/v1/subjects/{self.subject_id}/obligations?from=2026-11-02&to=2026-11-30"
                f"&kind={kind}",
                token=self.token,
            )
            return next(o for o in answer.json["items"] if o["id"])

        async def hours(self, occurrence: str, **body):
            payload = {
                "on": "2026-11-05",
                "hours": 4,
                "place": "社区养老院",
                "confirmed_by": "李主任",
            }
            return await fetch(
                f"/api/v1/obligations/{occurrence}/hours",
                "POST",
                json_body={**payload, **body},
                token=self.token,
            )

        async def done(self, occurrence: str):
            return await fetch(
                f"/api/v1/obligations/{occurrence}/result",
                "POST",
                json_body={"outcome": "done"},
                token=self.token,
            )

    return Case()


async def test_done_with_no_hours_is_refused_with_the_shortfall(case):
    month = await case.month("community_service")
    assert month["required_hours"] == 8 and month["hours_done"] == 0
    refused = await case.done(month["id"])
    assert refused.status == 409 and refused.error["code"] == "hours_short"
    assert refused.error["details"] == {"required_hours": 8, "hours_done": 0, "hours_short": 8}
    assert (await case.month("community_service"))["status"] == "open"


async def test_a_month_is_met_at_its_hours_exactly(case):
    month = await case.month("education")
    first = await case.hours(month["id"], hours=4.5)
    assert first.status == 200, first.body
    assert first.json["status"] == "open" and first.json["hours_done"] == 4.5
    second = await case.hours(month["id"], on="2026-11-09", hours=3.5, place="法治课")
    assert second.status == 200 and second.json["status"] == "done"
    assert second.json["hours_done"] == 8
    assert [
        (e["on"], e["hours"], e["place"], e["confirmed_by"]) for e in second.json["hours_entries"]
    ] == [("2026-11-05", 4.5, "社区养老院", "李主任"), ("2026-11-09", 3.5, "法治课", "李主任")]
    # Met already: nothing left to close by hand.
    assert (await case.done(month["id"])).status == 409


async def test_a_month_one_hour_short_is_refused_then_missed_with_its_hours(case, services):
    month = await case.month("community_service")
    await case.hours(month["id"], hours=4)
    short = await case.hours(month["id"], on="2026-11-06", hours=3)
    assert short.json["status"] == "open" and short.json["hours_done"] == 7
    refused = await case.done(month["id"])
    assert refused.status == 409
    assert refused.error["details"] == {"required_hours": 8, "hours_done": 7, "hours_short": 1}
    result = await services.obligations.close_windows(local(2026, 12, 2, 0, 0))
    assert result["missed"] >= 1
    closed = await case.month("community_service")
    assert closed["status"] == "missed"
    assert (closed["hours_done"], closed["required_hours"]) == (7, 8)
    assert len(closed["hours_entries"]) == 2


async def test_hours_recorded_after_the_month_closed_still_meet_it(case, services):
    month = await case.month("education")
    await case.hours(month["id"], hours=4)
    await services.obligations.close_windows(local(2026, 12, 2, 0, 0))
    await case.at(local(2026, 12, 3, 9, 0))
    late = await case.hours(month["id"], on="2026-12-01", hours=4, place="法治课")
    assert late.status == 200 and late.json["status"] == "done"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"hours": 0}, "hours"),
        ({"hours": -1}, "hours"),
        ({"hours": 24.01}, "hours"),
        ({"on": "2026-11-01"}, "on"),  # the day before the window
        ({"on": "2026-12-02"}, "on"),  # the window's end is exclusive
        ({"on": "2026-11-11"}, "on"),  # tomorrow
        ({"place": "  "}, "place"),
        ({"confirmed_by": ""}, "confirmed_by"),
    ],
)
async def test_bad_hours_are_refused_naming_the_field(case, body, field):
    month = await case.month("education")
    refused = await case.hours(month["id"], **body)
    assert refused.status == 422, refused.body
    assert field in [d["field"] for d in refused.error["details"]]
    assert (await case.month("education"))["hours_done"] == 0  # nothing half-written


async def test_a_day_holds_24_hours_and_not_one_more(case):
    month = await case.month("education")
    whole_day = await case.hours(month["id"], hours=24)
    assert whole_day.status == 200 and whole_day.json["status"] == "done"
    more = await case.hours(month["id"], hours=0.5)
    assert more.status == 422
    assert more.error["details"][0]["field"] == "hours"
    assert "24小时" in more.error["details"][0]["message"]


async def test_hours_go_to_education_and_community_service_only(case):
    listed = await case.month("written_report")
    refused = await case.hours(listed["id"])
    assert refused.status == 409 and refused.error["code"] == "not_hours"


async def test_where_and_who_confirmed_are_sealed_at_rest(case, store):
    month = await case.month("education")
    await case.hours(month["id"])
    raw = await store.database["occurrences"].find_one({"_id": month["id"]})
    (note,) = raw["hours_notes"].values()
    assert isinstance(note, bytes) and "养老院".encode() not in note
    assert "place" not in raw["hours_log"][0]


async def test_hours_notes_stay_readable_after_the_persons_key_rotates(case, services, store):
    month = await case.month("education")
    await case.hours(month["id"])
    new_key = await services.subjects.rotate_data_key(SYSTEM, case.subject_id)
    raw = await store.database["occurrences"].find_one({"_id": month["id"]})
    (note,) = raw["hours_notes"].values()
    assert Sealed.from_bytes(bytes(note)).key_id == new_key  # re-sealed, not left behind
    (entry,) = (await case.month("education"))["hours_entries"]
    assert (entry["place"], entry["confirmed_by"]) == ("社区养老院", "李主任")

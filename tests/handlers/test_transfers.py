"""执行地变更 and 解除/终止 end to end: the receiving side accepts, the handover moves the file (the
receiving station reaches it, the sending one no longer does), and a completed term ends with
its certificate."""

from __future__ import annotations

import datetime as dt

import pytest

from models.policy import Role
from models.programs import ProgramType
from models.workdays import WorkdayCalendar
from tests.subject_factories import subject_body

CORRECTIONS = {
    "type": "community_corrections",
    "start_date": "2025-06-02",
    "end_date": "2026-11-20",
    "sentence_type": "probation",
}


@pytest.fixture
async def staff(tree, make_staff):
    accounts = {
        "station": await make_staff(Role.STATION_OFFICER, tree.station),
        "station2": await make_staff(Role.STATION_OFFICER, tree.station2),
        "county": await make_staff(Role.COUNTY_OFFICER, tree.county),
        "other_county": await make_staff(Role.COUNTY_OFFICER, tree.other_county),
        "other_station": await make_staff(Role.STATION_OFFICER, tree.other_station),
    }
    for account in accounts.values():
        account.token = await make_staff.token_for(account)
    return accounts


@pytest.fixture
async def subject(fetch, tree, staff):
    answer = await fetch(
        "/api/v1/subjects",
        "POST",
        json_body=subject_body(tree.station.id),
        token=staff["station"].token,
    )
    sid = answer.json["id"]
    opened = await fetch(
        f"/api/v1/subjects/{sid}/programs",
        "POST",
        json_body=CORRECTIONS,
        token=staff["station"].token,
    )
    assert opened.status == 201
    return sid


async def post(fetch, staff, path, body, who):
    return await fetch(path, "POST", json_body=body, token=staff[who].token)


async def test_a_handover_moves_the_file_to_the_receiving_station(
    fetch, services, tree, staff, subject
):
    leave = await post(
        fetch,
        staff,
        f"/api/v1/subjects/{subject}/leave-requests",
        {
            "start_date": "2027-01-04",
            "end_date": "2027-01-06",
            "destination": "宁波",
            "reason": "务工",
        },
        "station",
    )
    asked = await post(
        fetch,
        staff,
        f"/api/v1/subjects/{subject}/transfers",
        {"to_org_id": tree.station2.id, "reason": "迁居至南汇"},
        "station",
    )
    assert asked.status == 201
    transfer = asked.json
    assert (transfer["status"], transfer["from_org_id"], transfer["to_org_id"]) == (
        "requested",
        tree.station.id,
        tree.station2.id,
    )
    path = f"/api/v1/transfers/{transfer['id']}"
    # The sending side does not accept for the receiving side, nor hand over before acceptance.
    wrong_side = await post(fetch, staff, f"{path}/decision", {"accept": True}, "station")
    assert wrong_side.status == 403 and wrong_side.error["code"] == "not_your_step"
    early = await post(fetch, staff, f"{path}/handover", {"date": "2026-01-01"}, "station")
    assert early.status == 409 and early.error["details"] == {"status": "requested"}
    accepted = await post(fetch, staff, f"{path}/decision", {"accept": True}, "station2")
    assert accepted.status == 200
    body = accepted.json
    today = services.transfers.today()
    assert body["status"] == "accepted" and body["decided_on"] == str(today)
    # Deadlines: the file within 3 working days (holidays skipped), the report within 7 days
    # (a period in days: a last day on a rest day or holiday moves to the next working day).
    calendar = WorkdayCalendar()
    assert body["handover_due"] == str(calendar.deadline(today, 3))
    report_due = today + dt.timedelta(days=7)
    while not calendar.is_working_day(report_due):
        report_due += dt.timedelta(days=1)
    assert body["report_due"] == str(report_due)
    not_theirs = await post(fetch, staff, f"{path}/handover", {"date": str(today)}, "station2")
    assert not_theirs.status == 403
    before = await fetch(f"/api/v1/subjects/{subject}", token=staff["station2"].token)
    assert before.status == 404
    handed = await post(fetch, staff, f"{path}/handover", {"date": str(today)}, "station")
    assert handed.status == 200
    assert (handed.json["status"], handed.json["handover_late"]) == ("handed_over", False)
    # The file is now the receiving station's: it reaches the person, the sender does not.
    moved = await fetch(f"/api/v1/subjects/{subject}", token=staff["station2"].token)
    assert moved.status == 200 and moved.json["org_id"] == tree.station2.id
    gone = await fetch(f"/api/v1/subjects/{subject}", token=staff["station"].token)
    assert gone.status == 404
    programs = await fetch(f"/api/v1/subjects/{subject}/programs", token=staff["station2"].token)
    assert [p["type"] for p in programs.json["items"]] == ["community_corrections"]
    raw = await services.programs.open_program(subject, ProgramType.COMMUNITY_CORRECTIONS)
    assert tree.station2.id in raw["org_path"] and tree.station.id not in raw["org_path"]
    # Pending decisions follow the person into the receiving station's queue.
    queue = await fetch("/api/v1/leave-requests?status=pending", token=staff["station2"].token)
    assert [i["id"] for i in queue.json["items"]] == [leave.json["id"]]
    left = await fetch("/api/v1/leave-requests?status=pending", token=staff["station"].token)
    assert left.json["items"] == []
    # Both sides still read the transfer; the receiving side records the arrival.
    assert (await fetch(path, token=staff["station"].token)).status == 200
    arrived = await post(fetch, staff, f"{path}/arrival", {"date": str(today)}, "station2")
    assert (arrived.json["status"], arrived.json["report_late"]) == ("completed", False)
    again = await post(fetch, staff, f"{path}/arrival", {"date": str(today)}, "station2")
    assert again.status == 409 and again.error["details"] == {"status": "completed"}


async def test_a_transfer_to_another_county_is_accepted_there(fetch, tree, staff, subject):
    transfer = (
        await post(
            fetch,
            staff,
            f"/api/v1/subjects/{subject}/transfers",
            {"to_org_id": tree.other_station.id, "reason": "迁居杭州"},
            "county",
        )
    ).json
    path = f"/api/v1/transfers/{transfer['id']}"
    # The receiving county sees the request it must answer, nothing of the file yet.
    assert (await fetch(path, token=staff["other_county"].token)).status == 200
    hidden = await fetch(f"/api/v1/subjects/{subject}", token=staff["other_county"].token)
    assert hidden.status == 404
    assert (
        await post(fetch, staff, f"{path}/decision", {"accept": True}, "other_county")
    ).status == 200
    today = (await fetch(path, token=staff["county"].token)).json["decided_on"]
    assert (await post(fetch, staff, f"{path}/handover", {"date": today}, "county")).status == 200
    there = await fetch(f"/api/v1/subjects/{subject}", token=staff["other_station"].token)
    assert there.status == 200
    assert (await fetch(f"/api/v1/subjects/{subject}", token=staff["county"].token)).status == 404


async def test_a_refused_transfer_changes_nothing(fetch, tree, staff, subject):
    transfer = (
        await post(
            fetch,
            staff,
            f"/api/v1/subjects/{subject}/transfers",
            {"to_org_id": tree.station2.id, "reason": "迁居"},
            "station",
        )
    ).json
    path = f"/api/v1/transfers/{transfer['id']}"
    busy = await post(
        fetch,
        staff,
        f"/api/v1/subjects/{subject}/transfers",
        {"to_org_id": tree.station2.id, "reason": "再次申请"},
        "station",
    )
    assert busy.status == 409 and busy.error["details"]["status"] == "requested"
    refused = await post(fetch, staff, f"{path}/decision", {"accept": False}, "station2")
    assert refused.json["status"] == "rejected"
    late = await post(fetch, staff, f"{path}/handover", {"date": "2026-11-01"}, "station")
    assert late.status == 409 and late.error["details"] == {"status": "rejected"}
    assert (await fetch(f"/api/v1/subjects/{subject}", token=staff["station"].token)).status == 200
    same = await post(
        fetch,
        staff,
        f"/api/v1/subjects/{subject}/transfers",
        {"to_org_id": tree.station.id, "reason": "迁居"},
        "station",
    )
    assert same.status == 422
    county = await post(
        fetch,
        staff,
        f"/api/v1/subjects/{subject}/transfers",
        {"to_org_id": tree.county.id, "reason": "迁居"},
        "station",
    )
    assert county.status == 422 and county.error["details"][0]["field"] == "to_org_id"


async def test_completion_issues_a_certificate_and_chains_into_resettlement(fetch, staff, subject):
    programs = await fetch(f"/api/v1/subjects/{subject}/programs", token=staff["station"].token)
    program_id = programs.json["items"][0]["id"]
    path = f"/api/v1/programs/{program_id}/terminate"
    future = await post(fetch, staff, path, {"kind": "completed", "date": "2099-01-01"}, "station")
    assert future.status == 422
    ended = await post(
        fetch,
        staff,
        path,
        {"kind": "completed", "date": "2026-11-20", "certificate_number": "鹿司矫解字2026第18号"},
        "station",
    )
    assert ended.status == 200
    body = ended.json
    assert body["status"] == "ended"
    termination = body["details"]["termination"]
    assert (termination["kind"], termination["on"]) == ("completed", "2026-11-20")
    assert termination["certificate"]["number"] == "鹿司矫解字2026第18号"
    assert termination["certificate"]["kind"] == "release_certificate"
    assert body["details"]["chained_program_id"]
    assert body["history"][-1]["reason"] == "completed"
    again = await post(fetch, staff, path, {"kind": "completed", "date": "2026-11-20"}, "station")
    assert again.status == 409 and again.error["details"] == {"status": "ended"}


async def test_a_revocation_ends_the_term_without_a_certificate(fetch, staff, subject):
    programs = await fetch(f"/api/v1/subjects/{subject}/programs", token=staff["station"].token)
    path = f"/api/v1/programs/{programs.json['items'][0]['id']}/terminate"
    wrong = await post(
        fetch,
        staff,
        path,
        {"kind": "revoked", "date": "2026-10-01", "certificate_number": "X-1"},
        "station",
    )
    assert wrong.status == 422 and wrong.error["details"][0]["field"] == "certificate_number"
    revoked = await post(fetch, staff, path, {"kind": "revoked", "date": "2026-10-01"}, "county")
    assert revoked.status == 200
    assert revoked.json["details"]["termination"]["certificate"] is None
    assert "chained_program_id" not in revoked.json["details"]

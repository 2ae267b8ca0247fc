"""The person's own records through the mini-program: leave, check-ins, praise and sanctions."""

from __future__ import annotations

import datetime as dt
import json
import re

from tests.mp_support import STATION_CENTRE, enrol, local
from tests.subject_factories import subject_body

OFFSET = re.compile(r"\+08:00$")
# Person-facing text fields: Chinese, never a machine code.
CODE = re.compile(r"[a-z]+_[a-z_]+|\b(?:station|county|city|pending|approved|rejected)\b")


async def ask_leave(client, start: str, end: str, destination: str):
    answer = await client.call(
        "POST",
        "/mp/v1/leave-requests",
        {"start_date": start, "end_date": end, "destination": destination, "reason": "探望母亲"},
    )
    assert answer.status == 201, answer.body
    return answer.json["id"]


async def decide_leave(fetch, token: str, leave_id: str, approve: bool, comment: str):
    answer = await fetch(
        f"/api/v1/leave-requests/{leave_id}/decision",
        "POST",
        json_body={"approve": approve, "comment": comment},
        token=token,
    )
    assert answer.status == 200, answer.body


async def check_in(client, clock, lng_offset: float = 0.0, accuracy: float = 20.0):
    answer = await client.check_in(
        lat=STATION_CENTRE.lat,
        lng=STATION_CENTRE.lng + lng_offset,
        coord_type="wgs84",
        accuracy=accuracy,
        captured_at=clock.now(),
    )
    assert answer.status == 201, answer.body
    assert answer.json["review"] == "pending", answer.body
    return answer.json["id"]


async def review(fetch, token: str, checkin_id: str, accept: bool, comment: str):
    answer = await fetch(
        f"/api/v1/checkins/{checkin_id}/review",
        "POST",
        json_body={"accept": accept, "comment": comment},
        token=token,
    )
    assert answer.status == 200, answer.body


async def sanction(fetch, supervised, kind: str, reason: str, decide: bool) -> str:
    proposed = await fetch(
        f"/api/v1/subjects/{supervised.subject_id}/sanctions",
        "POST",
        json_body={"kind": kind, "reason": reason},
        token=await supervised.officer_token(),
    )
    assert proposed.status == 201, proposed.body
    view = proposed.json
    if decide:
        tokens = {
            "station": await supervised.officer_token(),
            "county": await supervised.county_token(),
        }
        for level in view["levels"]:
            decided = await fetch(
                f"/api/v1/sanctions/{view['id']}/decision",
                "POST",
                json_body={"approve": True, "comment": "查实"},
                token=tokens[level],
            )
            assert decided.status == 200, decided.body
            view = decided.json
        assert view["status"] == "approved"
    return str(view["id"])


def assert_chinese(*texts: str | None) -> None:
    for text in texts:
        assert text and not CODE.search(text), text
        assert re.search(r"[\u4e00-\u9fff]", text), text


async def test_a_person_reads_exactly_their_own_records_in_chinese(
    supervised, clock, fetch, tree, mp_clients
):
    client = supervised.client
    officer = await supervised.officer_token()
    granted = await ask_leave(client, "2026-11-10", "2026-11-12", "浙江省杭州市西湖区")
    clock.advance(dt.timedelta(minutes=5))
    refused = await ask_leave(client, "2026-11-20", "2026-11-21", "上海市浦东新区")
    await decide_leave(fetch, officer, granted, True, "同意，请按时销假")
    await decide_leave(fetch, officer, refused, False, "请补充医院证明后再申请")

    clock.set(local(2026, 11, 2, 10, 0))
    doubted = await check_in(client, clock, accuracy=900)
    clock.set(local(2026, 11, 3, 10, 0))
    far = await check_in(client, clock, lng_offset=0.08)  # about 8 km east
    officer = await supervised.officer_token()
    await review(fetch, officer, doubted, False, "定位精度过低，无法核实")
    await review(fetch, officer, far, True, "在医院陪护，已电话核实")

    admonished = await sanction(fetch, supervised, "admonish", "未按规定时间报到", decide=True)
    await sanction(fetch, supervised, "warn", "擅自离开居住地", decide=False)

    # Someone else at the same station, with a leave request of their own.
    other_id, other_client = await enrol(
        fetch,
        mp_clients,
        tree,
        await supervised.officer_token(),
        {
            "type": "community_corrections",
            "start_date": "2026-11-02",
            "end_date": "2027-11-01",
            "sentence_type": "probation",
        },
        "someone-else",
    )
    assert other_id != supervised.subject_id
    theirs = await ask_leave(other_client, "2026-11-15", "2026-11-16", "北京市")

    listed = await client.call("GET", "/mp/v1/leave-requests")
    assert listed.status == 200, listed.body
    items = listed.json["items"]
    assert [item["id"] for item in items] == [refused, granted]  # newest first
    refused_item, granted_item = items
    assert granted_item["status"] == "approved"
    assert granted_item["status_text"] == "已批准"
    assert granted_item["destination"] == "浙江省杭州市西湖区"
    assert granted_item["next_level"] is None
    (step,) = granted_item["steps"]
    assert step["level"] == "station"
    assert step["level_text"] == "司法所"
    assert step["decision_text"] == "同意"
    assert step["reason"] == "同意，请按时销假"
    assert OFFSET.search(step["decided_at"]), step
    assert OFFSET.search(granted_item["created_at"])
    assert_chinese(granted_item["status_text"], granted_item["return_text"], step["level_text"])
    assert refused_item["status"] == "rejected"
    assert refused_item["status_text"] == "未批准"
    assert refused_item["return_text"] is None
    (no,) = refused_item["steps"]
    assert (no["approve"], no["decision_text"]) == (False, "不同意")
    assert no["reason"] == "请补充医院证明后再申请"
    # Staff ids stay out of the person's answer.
    assert "by" not in step and "rules_version" not in granted_item

    limited = await client.call("GET", "/mp/v1/leave-requests?limit=1")
    assert [item["id"] for item in limited.json["items"]] == [refused]
    bad_limit = await client.call("GET", "/mp/v1/leave-requests?limit=0")
    assert bad_limit.status == 422
    assert bad_limit.json["error"]["details"][0]["field"] == "limit"

    one = await client.call("GET", f"/mp/v1/leave-requests/{granted}")
    assert one.status == 200, one.body
    assert one.json == granted_item
    for elsewhere in (theirs, "not-an-id", "0" * 24):
        hidden = await client.call("GET", f"/mp/v1/leave-requests/{elsewhere}")
        assert hidden.status == 404, hidden.body
        assert_chinese(hidden.json["error"]["message"])
    assert (await other_client.call("GET", f"/mp/v1/leave-requests/{granted}")).status == 404
    assert [
        i["id"] for i in (await other_client.call("GET", "/mp/v1/leave-requests")).json["items"]
    ] == [theirs]

    checkins = await client.call("GET", "/mp/v1/checkins")
    assert checkins.status == 200, checkins.body
    accepted_item, rejected_item = checkins.json["items"]
    assert (accepted_item["id"], rejected_item["id"]) == (far, doubted)
    assert rejected_item["status"] == "rejected"
    assert rejected_item["review"] == "rejected"
    assert rejected_item["review_text"] == "审核未通过"
    assert rejected_item["review_reason"] == "定位精度过低，无法核实"
    assert accepted_item["status"] == "outside_area"
    assert accepted_item["review_text"] == "审核通过"
    assert accepted_item["review_reason"] == "在医院陪护，已电话核实"
    assert accepted_item["arrived_at"] == "2026-11-03T10:00:00+08:00"
    for item in (accepted_item, rejected_item):
        assert_chinese(item["status_text"], item["review_text"])
        assert OFFSET.search(item["reviewed_at"])
    # Never a coordinate, a device or a fraud signal.
    text = json.dumps(checkins.json)
    for hidden_key in ("lat", "lng", "location", "device", "flags", "accuracy", "distance"):
        assert f'"{hidden_key}' not in text, hidden_key
    assert (await other_client.call("GET", "/mp/v1/checkins")).json["items"] == []

    sanctions = await client.call("GET", "/mp/v1/sanctions")
    assert sanctions.status == 200, sanctions.body
    (decided,) = sanctions.json["items"]  # the pending 警告 is not shown
    assert decided["id"] == admonished
    assert decided["kind"] == "admonish"
    assert decided["kind_text"] == "训诫"
    assert decided["basis"] == "未按规定时间报到"
    assert OFFSET.search(decided["decided_at"])
    assert decided["submitted_to_text"] is None
    assert (await other_client.call("GET", "/mp/v1/sanctions")).json["items"] == []


async def test_a_staff_session_is_refused_on_the_persons_records(supervised, fetch):
    token = await supervised.officer_token()
    for path in (
        "/mp/v1/leave-requests",
        "/mp/v1/leave-requests/0123456789abcdef01234567",
        "/mp/v1/checkins",
        "/mp/v1/sanctions",
    ):
        answer = await fetch(path, token=token)
        assert answer.status == 403, (path, answer.body)
        assert answer.json["error"]["code"] == "wrong_channel"
    anonymous = await fetch("/mp/v1/sanctions")
    assert anonymous.status == 401


async def test_a_bound_guardian_reads_the_minors_records(
    supervised, clock, fetch, tree, mp_clients
):
    officer = await supervised.officer_token()
    created = await fetch(
        "/api/v1/subjects",
        "POST",
        json_body=subject_body(tree.station.id, birth=dt.date(2010, 5, 1)),
        token=officer,
    )
    assert created.status == 201, created.body
    minor = created.json["id"]
    opened = await fetch(
        f"/api/v1/subjects/{minor}/programs",
        "POST",
        json_body={
            "type": "community_corrections",
            "start_date": "2026-11-02",
            "end_date": "2027-11-01",
            "sentence_type": "probation",
        },
        token=officer,
    )
    assert opened.status == 201, opened.body
    clients = {}
    for role in ("subject", "guardian"):
        issued = await fetch(
            f"/api/v1/subjects/{minor}/binding-code",
            "POST",
            json_body={"role": role},
            token=officer,
        )
        assert issued.status == 201, issued.body
        clients[role] = mp_clients()
        assert (await clients[role].login(f"minor-{role}")).status == 200
        assert (await clients[role].bind(issued.json["code"])).status == 200
    leave_id = await ask_leave(clients["subject"], "2026-11-10", "2026-11-11", "温州市瓯海区")
    as_guardian = await clients["guardian"].call("GET", "/mp/v1/leave-requests")
    assert as_guardian.status == 200, as_guardian.body
    assert [item["id"] for item in as_guardian.json["items"]] == [leave_id]
    assert as_guardian.json["items"][0]["next_level_text"] == "等待司法所审批"
    assert (
        await clients["guardian"].call("GET", f"/mp/v1/leave-requests/{leave_id}")
    ).status == 200
    assert (await clients["guardian"].call("GET", "/mp/v1/checkins")).status == 200
    assert (await clients["guardian"].call("GET", "/mp/v1/sanctions")).status == 200
    # Not the other person at the station.
    assert (await supervised.client.call("GET", f"/mp/v1/leave-requests/{leave_id}")).status == 404

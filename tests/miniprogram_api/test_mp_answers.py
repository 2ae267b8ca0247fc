"""Answers a mini-program can show as they are: a check-in's outcome in Chinese, tasks titled and
in local time, one shape of error details, and leave for past days refused."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from miniprogram_api.base import field_problems
from miniprogram_api.checkins import checkin_message
from models.checkins import CheckinAnswer, CheckinStatus, Flag
from models.obligations import OccurrenceStatus
from tests.miniprogram_api.test_checkins import check_in, east_of
from tests.mp_support import STATION_CENTRE, local

# An internal code (`on_time`, `low_accuracy`, `pending_review`, `late`...) never reaches the
# person (a name such as JSON or Idempotency-Key, which the developer also reads, may).
INTERNAL_CODE = re.compile(r"[a-z]+_[a-z_]+")
CODES = {str(v) for e in (CheckinStatus, Flag, OccurrenceStatus) for v in e}
REVIEW_NEXT = "司法所工作人员核对后会确认结果，并通过消息通知您。"


def plain(message: str) -> str:
    assert message and not INTERNAL_CODE.search(message), message
    assert not {code for code in CODES if code in message.lower()}, message
    return message


async def monday_window(supervised, fetch) -> str:
    answer = await fetch(
        f"/api/v1/subjects/{supervised.subject_id}/obligations"
        "?from=2026-11-02&to=2026-11-02&kind=remote_checkin",
        token=await supervised.officer_token(),
    )
    (monday,) = answer.json["items"]
    return str(monday["id"])


async def test_an_on_time_check_in_says_it_is_done_and_a_retry_reads_the_same(supervised, clock):
    clock.set(local(2026, 11, 2, 9, 30))
    first = await check_in(supervised.client, clock, key="answers-on-time-1")
    assert first.status == 201, first.body
    assert first.json["status"] == "on_time" and first.json["review"] is None
    assert plain(first.json["message"]) == "签到成功，您已按时完成本次签到。"
    # A duplicate (the answer was lost, the phone sends again) reads what the first one did.
    retry = await check_in(supervised.client, clock, key="answers-on-time-1")
    assert retry.json == first.json
    # The same key for another check-in: refused, in words the person can act on.
    other = await check_in(
        supervised.client, clock, east_of(STATION_CENTRE, 10), key="answers-on-time-1"
    )
    assert other.status == 409
    assert plain(other.json["error"]["message"]) == "该请求编号已用于另一次提交，请重新签到。"


async def test_a_late_check_in_says_it_counts_as_late(supervised, clock, fetch):
    monday = await monday_window(supervised, fetch)
    clock.set(local(2026, 11, 3, 10, 0))
    answer = await check_in(supervised.client, clock, obligation_id=monday)
    assert answer.status == 201, answer.body
    assert (answer.json["status"], answer.json["flags"]) == ("late", [])
    assert plain(answer.json["message"]) == (
        "签到已收到，但已超过本次签到时间，记为逾期完成。请留意下次签到时间，按时签到。"
    )


async def test_a_check_in_that_arrived_after_its_window_says_it_is_being_checked(
    supervised, clock, fetch
):
    monday = await monday_window(supervised, fetch)
    clock.set(local(2026, 11, 3, 0, 0, 0))
    answer = await check_in(
        supervised.client, clock, captured_at=local(2026, 11, 2, 23, 59, 58), obligation_id=monday
    )
    assert answer.json["flags"] == ["offline"] and answer.json["review"] == "pending"
    assert plain(answer.json["message"]) == (
        "签到已收到。您的签到在签到时间结束后才送达（可能因网络原因），" + REVIEW_NEXT
    )


async def test_a_flagged_check_in_says_a_person_will_check_it_without_naming_the_flag(
    supervised, clock
):
    clock.set(local(2026, 11, 2, 10, 0))
    answer = await check_in(supervised.client, clock, accuracy=800)
    assert answer.json["flags"] == ["low_accuracy"] and answer.json["status"] == "on_time"
    assert plain(answer.json["message"]) == "签到已收到，" + REVIEW_NEXT


async def test_outside_the_area_says_it_went_for_review(supervised, clock):
    clock.set(local(2026, 11, 2, 10, 0))
    answer = await check_in(supervised.client, clock, east_of(STATION_CENTRE, 5000))
    assert answer.json["status"] == "outside_area"
    message = plain(answer.json["message"])
    assert "不在规定的活动范围内" in message and "审核" in message and "通知您" in message


def test_a_rejected_check_in_says_why_and_to_try_again():
    # A face mismatch: the only check-in the server rejects as it arrives.
    answer = CheckinAnswer(
        id="c1",
        status="rejected",
        flags=["face_mismatch"],
        obligation_id="o1",
        obligation_status=None,
        review=None,
        arrived_at=local(2026, 11, 2, 10, 0),
    )
    message = plain(checkin_message(answer))
    assert "照片与本人不一致" in message and "重新拍照签到" in message


async def test_no_open_window_says_there_is_nothing_to_do_now(supervised, clock):
    # The evening before the program starts: check-ins are asked of the person, none is open.
    clock.set(local(2026, 11, 1, 20, 0))
    await supervised.client.login("probationer")
    answer = await check_in(supervised.client, clock)
    assert answer.status == 409, answer.body
    assert answer.json["error"]["code"] == "no_open_window"
    message = plain(answer.json["error"]["message"])
    assert "当前没有需要签到的时段" in message and "我的任务" in message
    assert answer.json["error"]["details"] == []


async def test_tasks_have_a_chinese_title_and_local_times_with_their_offset(
    supervised, clock, fetch
):
    day = dt.date(2026, 11, 2)
    tasks = await supervised.client.tasks(day, day + dt.timedelta(days=31))
    assert tasks.status == 200, tasks.body
    items = tasks.json["items"]
    assert {t["kind"] for t in items} >= {"remote_checkin", "in_person_report"}
    titles = {t["kind"]: t["title"] for t in items}
    assert titles["remote_checkin"] == "定位签到"
    assert titles["in_person_report"] == "当面报到"
    for task in items:
        plain(task["title"])
        assert task["window_start"].endswith("+08:00"), task
        assert task["window_end"].endswith("+08:00"), task
    (checkin,) = [t for t in items if t["kind"] == "remote_checkin" and t["id"]][:1]
    assert checkin["window_start"] == "2026-11-02T00:00:00+08:00"
    assert checkin["window_end"] == "2026-11-03T00:00:00+08:00"
    # The same instants as staff read them.
    staff = await fetch(
        f"/api/v1/subjects/{supervised.subject_id}/obligations?from=2026-11-02&to=2026-12-03",
        token=await supervised.officer_token(),
    )
    by_id = {o["id"]: o for o in staff.json["items"] if o["id"]}
    for task in items:
        if task["id"] in by_id:
            for key in ("window_start", "window_end"):
                assert dt.datetime.fromisoformat(task[key]) == dt.datetime.fromisoformat(
                    by_id[task["id"]][key]
                )


def assert_problems(error: dict, fields: list[str]) -> None:
    details = error["details"]
    assert isinstance(details, list)
    assert [d["field"] for d in details] == fields
    for problem in details:
        assert set(problem) == {"field", "message"}
        plain(problem["message"])


async def test_every_kind_of_error_has_a_list_of_fields_and_messages(supervised, clock, mp_clients):
    client = supervised.client
    clock.set(local(2026, 11, 2, 10, 0))
    key = {"Idempotency-Key": "answers-errors-1"}
    # 400: not JSON (was a dict with the line and column).
    broken = await client.call(
        "POST", "/mp/v1/checkins", body=b"{", headers=key | {"Content-Type": "application/json"}
    )
    assert broken.status == 400
    assert_problems(broken.json["error"], ["(body)"])
    # 400: a query parameter no route reads (was `{"parameter": ...}`).
    operator = await client.call("GET", "/mp/v1/me/tasks?from[$ne]=x")
    assert operator.status == 400, operator.body
    assert_problems(operator.json["error"], ["from[$ne]"])
    # 422 from the body's model.
    body = {
        "location": {"lat": 128.0, "lng": 120.6, "coord_type": "wgs84", "accuracy": 10},
        "captured_at": clock.now().isoformat(),
    }
    invalid = await client.call("POST", "/mp/v1/checkins", body, headers=key)
    assert invalid.status == 422
    assert_problems(invalid.json["error"], ["location.lat"])
    assert invalid.json["error"]["details"][0]["message"] == "数值过大"
    # 422 from a service naming the field only (was `[{"field": ...}]`): the message is added.
    body["location"]["lat"] = STATION_CENTRE.lat
    no_key = await client.call("POST", "/mp/v1/checkins", body)
    assert no_key.status == 422
    assert_problems(no_key.json["error"], ["Idempotency-Key"])
    assert no_key.json["error"]["details"][0]["message"] == no_key.json["error"]["message"]
    # 422 with context beside the field (was `closed_at` too): the field and message only.
    monday = local(2026, 11, 2, 10, 0)
    clock.set(local(2026, 11, 6, 10, 0))
    await client.login("probationer")
    answer = await client.call("GET", "/mp/v1/me/tasks?from=2026-11-02&to=2026-11-02")
    (window,) = [t for t in answer.json["items"] if t["kind"] == "remote_checkin"]
    closed = await check_in(client, clock, captured_at=monday, obligation_id=window["id"])
    assert closed.status == 422 and closed.json["error"]["code"] == "window_closed"
    assert_problems(closed.json["error"], ["obligation_id"])
    # Refusals that are not about a field: an empty list, never null.
    unknown = await check_in(client, clock, obligation_id="no-such-window")
    assert unknown.status == 404 and unknown.json["error"]["details"] == []
    stranger = mp_clients()
    assert (await stranger.call("GET", "/mp/v1/me/tasks")).json["error"]["details"] == []
    await stranger.login("stranger")
    unbound = await stranger.call("GET", "/mp/v1/me/tasks")
    assert unbound.status == 403 and unbound.json["error"]["details"] == []


@pytest.mark.parametrize(
    ("status", "details", "expected"),
    [
        (
            422,
            [{"field": "a"}, "b"],
            [{"field": "a", "message": "错"}, {"field": "b", "message": "错"}],
        ),
        (409, {"field": "role"}, [{"field": "role", "message": "错"}]),
        (
            422,
            [{"field": "a", "message": "太长", "type": "x"}],
            [{"field": "a", "message": "太长"}],
        ),
        (400, {"reason": "the key repeats"}, [{"field": "(body)", "message": "错"}]),
        (409, {"status": "approved"}, []),
        (404, None, []),
    ],
    ids=["names", "one-field", "extra-keys", "body", "state", "none"],
)
def test_each_shape_of_details_becomes_fields_and_messages(status, details, expected):
    assert field_problems(status, "错", details) == expected


async def test_leave_for_past_days_is_refused_and_today_is_accepted(supervised, clock):
    clock.set(local(2026, 11, 12, 9, 0))
    await supervised.client.login("probationer")

    async def ask(start: str, end: str, key: str):
        return await supervised.client.call(
            "POST",
            "/mp/v1/leave-requests",
            {"start_date": start, "end_date": end, "destination": "杭州市", "reason": "探亲"},
            headers={"Idempotency-Key": key},
        )

    past = await ask("2026-11-11", "2026-11-13", "answers-leave-1")
    assert past.status == 422, past.body
    error = past.json["error"]
    assert_problems(error, ["start_date"])
    assert error["details"][0]["message"] == "开始日期不能早于今天。"
    assert plain(error["message"]) == "开始日期不能早于今天，请选择今天或以后的日期。"
    today = await ask("2026-11-12", "2026-11-13", "answers-leave-2")
    assert today.status == 201, today.body

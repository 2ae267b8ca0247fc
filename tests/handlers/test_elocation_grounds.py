"""电子定位 grounds checked against the file (社区矫正法 Art. 29): a 警告 decided, a 治安管理处罚
submitted, a 禁止令 recorded, and a departure that granted leave covers."""

from __future__ import annotations

import datetime as dt

import pytest

from models.policy import Role
from tests.subject_factories import subject_body

CORRECTIONS = {
    "type": "community_corrections",
    "start_date": "2026-01-05",
    "end_date": "2028-01-04",
    "sentence_type": "probation",
}


@pytest.fixture
async def desk(fetch, tree, make_staff, services):
    station = await make_staff(Role.STATION_OFFICER, tree.station)
    county = await make_staff(Role.COUNTY_OFFICER, tree.county)
    for account in (station, county):
        account.token = await make_staff.token_for(account)
    today = services.elocation.today()

    class Desk:
        async def person(self) -> str:
            made = await fetch(
                "/api/v1/subjects",
                "POST",
                json_body=subject_body(tree.station.id),
                token=station.token,
            )
            sid = made.json["id"]
            opened = await fetch(
                f"/api/v1/subjects/{sid}/programs",
                "POST",
                json_body=CORRECTIONS,
                token=station.token,
            )
            assert opened.status == 201, opened.body
            return sid

        async def order(self, sid: str, ground: str, **extra):
            return await fetch(
                f"/api/v1/subjects/{sid}/elocation-orders",
                "POST",
                json_body={
                    "ground": ground,
                    "start_date": str(today + dt.timedelta(days=1)),
                    "end_date": str(today + dt.timedelta(days=30)),
                    "reason": "依法申请电子定位",
                    **extra,
                },
                token=station.token,
            )

        async def sanction(self, sid: str, kind: str, *, decide: bool = True, approve=True):
            filed = await fetch(
                f"/api/v1/subjects/{sid}/sanctions",
                "POST",
                json_body={"kind": kind, "reason": "拒不报告活动情况"},
                token=station.token,
            )
            assert filed.status == 201, filed.body
            if decide:
                for who, verdict in ((station, True), (county, approve)):
                    step = await fetch(
                        f"/api/v1/sanctions/{filed.json['id']}/decision",
                        "POST",
                        json_body={"approve": verdict, "comment": "审批"},
                        token=who.token,
                    )
                    assert step.status == 200, step.body
            return filed.json["id"]

        async def leave(self, sid: str, start: dt.date, end: dt.date) -> str:
            filed = await fetch(
                f"/api/v1/subjects/{sid}/leave-requests",
                "POST",
                json_body={
                    "start_date": str(start),
                    "end_date": str(end),
                    "destination": "杭州",
                    "reason": "探亲",
                },
                token=station.token,
            )
            assert filed.status == 201, filed.body
            decided = await fetch(
                f"/api/v1/leave-requests/{filed.json['id']}/decision",
                "POST",
                json_body={"approve": True},
                token=station.token,
            )
            assert decided.json["status"] == "approved", decided.body
            return filed.json["id"]

    desk = Desk()
    desk.today = today
    return desk


async def test_refusing_to_report_after_a_warning_needs_a_warning_decided(desk):
    sid = await desk.person()
    none = await desk.order(sid, "refused_report_after_warning")
    assert none.status == 422 and none.error["code"] == "ground_not_on_file"
    (detail,) = none.error["details"]
    assert (detail["field"], detail["ground"], detail["requires"]) == (
        "ground",
        "refused_report_after_warning",
        "sanction:warn",
    )
    assert "警告" in detail["message"]
    # A warning proposed and not yet decided proves nothing; a refused one neither.
    await desk.sanction(sid, "warn", decide=False)
    await desk.sanction(sid, "warn", approve=False)
    assert (await desk.order(sid, "refused_report_after_warning")).status == 422
    # A 训诫 is not a 警告.
    await desk.sanction(sid, "admonish")
    assert (await desk.order(sid, "refused_report_after_warning")).status == 422
    await desk.sanction(sid, "warn")
    decided = await desk.order(sid, "refused_report_after_warning")
    assert decided.status == 201, decided.body


async def test_a_public_security_penalty_needs_its_request_submitted(desk):
    sid = await desk.person()
    none = await desk.order(sid, "public_security_penalty")
    assert none.status == 422 and none.error["details"][0]["ground"] == "public_security_penalty"
    await desk.sanction(sid, "public_security_penalty")
    assert (await desk.order(sid, "public_security_penalty")).status == 201


async def test_a_breach_of_prohibition_without_one_names_the_ground(desk):
    sid = await desk.person()
    refused = await desk.order(sid, "breach_of_prohibition", prohibition_index=0)
    assert refused.status == 422 and refused.error["code"] == "ground_not_on_file"
    assert refused.error["details"][0]["ground"] == "breach_of_prohibition"


async def test_leaving_on_a_day_of_granted_leave_is_not_leaving_without_approval(desk):
    sid = await desk.person()
    start = desk.today - dt.timedelta(days=5)
    last = desk.today - dt.timedelta(days=3)
    leave_id = await desk.leave(sid, start, last)
    for day in (start, last):
        covered = await desk.order(sid, "left_without_approval", left_on=str(day))
        assert covered.status == 422 and covered.error["code"] == "ground_disproved"
        (detail,) = covered.error["details"]
        assert (detail["field"], detail["leave_request_id"]) == ("left_on", leave_id)
    # The day after the leave ended the person had no approval.
    after = await desk.order(sid, "left_without_approval", left_on=str(last + dt.timedelta(days=1)))
    assert after.status == 201, after.body


async def test_the_day_of_leaving_is_for_that_ground_and_not_in_the_future(desk):
    sid = await desk.person()
    future = await desk.order(
        sid, "left_without_approval", left_on=str(desk.today + dt.timedelta(days=1))
    )
    assert future.status == 422 and future.error["details"][0]["field"] == "left_on"
    misplaced = await desk.order(sid, "revocation_pending", left_on=str(desk.today))
    assert misplaced.status == 422 and misplaced.error["details"][0]["field"] == "left_on"
    assert (await desk.order(sid, "left_without_approval", left_on=str(desk.today))).status == 201

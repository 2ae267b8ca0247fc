"""Decision notices (issue 25): each decision about a person, made over the staff API, reaches the
person in `GET /mp/v1/messages` (and a guardian where the law allows), sealed at rest, once per
decision; urgent ones go as a subscribe message with consent, otherwise by SMS."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import bson
import pytest_asyncio

from miniprogram_api.notifier import LocalSms
from models.geo import Point
from models.policy import Role
from server.app import Services, build_services
from server.wechat_standin import openid_for
from tests.mp_support import STATION_CENTRE, enrol, local
from tests.subject_factories import subject_body

DECISION = "tmpl-decision"
PHONE = "13812345678"  # subject_body's
# What the person must never read: machine codes of states, levels, kinds or ids.
CODES = re.compile(r"[a-z_]{4,}|[0-9a-f]{24}")


@dataclass
class Pusher:
    """The jobs process: its notifier reaches the WeChat stand-in and a local SMS port."""

    services: Services
    sms: LocalSms

    async def run(self) -> dict[str, int]:
        await self.services.wechat_tokens.refresh()
        return await self.services.notifications.deliver_queued()


@pytest_asyncio.fixture
async def pusher(api, store, config, clock, vault) -> AsyncIterator[Pusher]:
    sms = LocalSms()
    services = build_services(
        store, config, clock, vault, process_role="jobs", push_notifications=True, sms=sms
    )
    yield Pusher(services, sms)
    await services.close()


async def inbox(client) -> list[dict[str, Any]]:
    answer = await client.call("GET", "/mp/v1/messages")
    assert answer.status == 200, answer.body
    return answer.json["items"]


def leave_body(start: str, end: str) -> dict[str, str]:
    return {"start_date": start, "end_date": end, "destination": "丽水", "reason": "探亲"}


async def of_kind(client, kind: str) -> list[dict[str, Any]]:
    return [m for m in await inbox(client) if m["kind"] == kind]


async def notice(client, kind: str) -> dict[str, Any]:
    """The one message of `kind`, checked for the shape and the wording a person reads."""
    found = [m for m in await inbox(client) if m["kind"] == kind]
    assert len(found) == 1, [m["kind"] for m in await inbox(client)]
    (message,) = found
    assert set(message) == {"id", "kind", "title", "body", "created_at", "read_at", "ref"}
    assert message["read_at"] is None
    for text in (message["title"], message["body"]):
        assert re.search("[\u4e00-\u9fff]", text)
        assert not CODES.search(text), text
    return message


async def staff_post(fetch, make_staff, who, path: str, body: dict | None = None):
    return await fetch(path, "POST", json_body=body or {}, token=await make_staff.token_for(who))


async def test_leave_steps_reach_the_person_and_a_refusal_goes_by_sms(
    supervised, fetch, clock, store, pusher, wechat_standin
):
    person = supervised.client
    filed = await person.call(
        "POST",
        "/mp/v1/leave-requests",
        leave_body("2026-11-10", "2026-11-19"),
    )
    assert filed.status == 201 and filed.json["next_level"] == "station"
    leave_id = filed.json["id"]
    path = f"/api/v1/leave-requests/{leave_id}/decision"
    first = await staff_post(
        fetch, supervised.make_staff, supervised.officer, path, {"approve": True, "comment": "同意"}
    )
    assert first.status == 200, first.body
    waiting = await notice(person, "leave_next_level")
    assert waiting["ref"] == {"type": "leave_request", "id": leave_id}
    assert waiting["body"] == (
        "您2026年11月10日至2026年11月19日的外出申请已经司法所同意，"
        "正在等待县级社区矫正机构审批，请耐心等候。"
    )
    refused = await staff_post(
        fetch,
        supervised.make_staff,
        supervised.county,
        path,
        {"approve": False, "comment": "外出期间与矫正活动冲突"},
    )
    assert refused.json["status"] == "rejected"
    rejected = await notice(person, "leave_rejected")
    assert rejected["title"] == "外出申请未获批准"
    assert "理由：外出期间与矫正活动冲突。" in rejected["body"] and "丽水" in rejected["body"]
    # A retried decision is refused and tells the person nothing twice.
    again = await staff_post(
        fetch, supervised.make_staff, supervised.county, path, {"approve": False, "comment": "x"}
    )
    assert again.status == 409
    assert len(await inbox(person)) == 2

    # Nothing allowed in WeChat: the urgent refusal goes to the person's phone, the step before
    # it stays in the app; every attempt is in the delivery log.
    assert (await pusher.run())["pushed"] == 2
    assert wechat_standin.state.messages_to(openid_for("probationer")) == []
    assert pusher.sms.sent == [(PHONE, "【安帮】外出申请未获批准：" + rejected["body"])]
    outcomes = [
        (d["channel"], d["outcome"])
        for d in await pusher.services.deliveries.for_recipient(f"subject:{supervised.subject_id}")
    ]
    assert sorted(outcomes) == [
        ("in_app", "in_app_only"),
        ("sms", "sent"),
        ("wechat", "no_consent"),
        ("wechat", "no_consent"),
    ]
    assert (await pusher.run())["pushed"] == 0  # each message is pushed once

    # At rest the texts are sealed: neither the destination nor the reason is in the clear.
    raw = await store.collection("messages").find_one({"_id": bson.ObjectId(rejected["id"])})
    assert "title" not in raw and "body" not in raw
    assert "丽水".encode() not in bson.encode(raw)
    assert "矫正活动冲突".encode() not in bson.encode(raw)


async def test_granted_leave_goes_by_subscribe_message_and_the_return_is_told(
    supervised, fetch, clock, services, pusher, wechat_standin
):
    person = supervised.client
    accepted = await person.call("POST", "/mp/v1/consents", {"template_ids": [DECISION]})
    assert accepted.status == 200
    filed = await person.call(
        "POST",
        "/mp/v1/leave-requests",
        leave_body("2026-11-03", "2026-11-05"),
    )
    leave_id = filed.json["id"]
    granted = await staff_post(
        fetch,
        supervised.make_staff,
        supervised.officer,
        f"/api/v1/leave-requests/{leave_id}/decision",
        {"approve": True, "comment": "同意"},
    )
    assert granted.json["status"] == "approved"
    message = await notice(person, "leave_approved")
    assert message["title"] == "外出申请已批准"
    assert message["body"].startswith("您2026年11月3日至2026年11月5日前往丽水的外出申请已批准")
    await pusher.run()
    (sent,) = wechat_standin.state.messages_to(openid_for("probationer"))
    assert sent["template_id"] == DECISION
    assert sent["data"]["thing1"]["value"] == "外出申请已批准"
    assert pusher.sms.sent == []

    # 销假 recorded by the station: told in the app (not urgent, no consent left: no push).
    clock.set(local(2026, 11, 5, 18, 0))
    await person.login("probationer")
    back = await staff_post(
        fetch,
        supervised.make_staff,
        supervised.officer,
        f"/api/v1/leave-requests/{leave_id}/return",
        {"date": "2026-11-05"},
    )
    assert back.status == 200, back.body
    returned = await notice(person, "leave_returned")
    assert returned["body"] == "您2026年11月3日至2026年11月5日的外出已于2026年11月5日销假。"
    await pusher.run()
    assert len(wechat_standin.state.messages_to(openid_for("probationer"))) == 1
    assert pusher.sms.sent == []


async def test_an_overdue_return_is_urgent(supervised, fetch, clock, services, pusher):
    person = supervised.client
    filed = await person.call(
        "POST",
        "/mp/v1/leave-requests",
        leave_body("2026-11-03", "2026-11-04"),
    )
    await staff_post(
        fetch,
        supervised.make_staff,
        supervised.officer,
        f"/api/v1/leave-requests/{filed.json['id']}/decision",
        {"approve": True, "comment": "同意"},
    )
    clock.set(local(2026, 11, 6, 9, 0))
    assert await services.leave.alert_overdue_returns(dt.date(2026, 11, 6)) == 1
    assert await services.leave.alert_overdue_returns(dt.date(2026, 11, 7)) == 0
    await person.login("probationer")
    overdue = await notice(person, "leave_return_overdue")
    assert overdue["title"] == "请尽快销假"
    assert "2026年11月4日到期" in overdue["body"]
    await pusher.run()
    assert [text for _, text in pusher.sms.sent] == ["【安帮】请尽快销假：" + overdue["body"]]


async def test_a_check_in_review_tells_the_person_with_the_officers_reason(
    supervised, fetch, clock
):
    person = supervised.client
    clock.set(local(2026, 11, 2, 10, 0))
    far = Point(STATION_CENTRE.lat, STATION_CENTRE.lng + 0.09)
    flagged = await person.check_in(
        lat=far.lat, lng=far.lng, captured_at=clock.now(), coord_type="wgs84"
    )
    assert flagged.json["review"] == "pending"
    clock.set(local(2026, 11, 3, 10, 0))
    other = await person.check_in(
        lat=far.lat, lng=far.lng, captured_at=clock.now(), coord_type="wgs84"
    )
    path = "/api/v1/checkins/{}/review"
    officer = supervised.officer
    ok = await staff_post(
        fetch,
        supervised.make_staff,
        officer,
        path.format(flagged.json["id"]),
        {"accept": True, "comment": "在医院陪护，已电话核实"},
    )
    assert ok.status == 200, ok.body
    no = await staff_post(
        fetch,
        supervised.make_staff,
        officer,
        path.format(other.json["id"]),
        {"accept": False, "comment": "不在规定活动区域内，且未事先报告"},
    )
    assert no.status == 200, no.body
    await person.login("probationer")
    accepted = await notice(person, "checkin_accepted")
    assert accepted["body"] == (
        "您2026年11月2日 10:00的签到经工作人员审核，已予认可。说明：在医院陪护，已电话核实。"
    )
    assert accepted["ref"] == {"type": "checkin", "id": flagged.json["id"]}
    rejected = await notice(person, "checkin_rejected")
    assert "理由：不在规定活动区域内，且未事先报告。" in rejected["body"]


async def test_a_sanction_and_a_praise_are_told_once_decided(supervised, fetch, pusher):
    make_staff, sid = supervised.make_staff, supervised.subject_id

    kinds = {"warn": "sanction_decided", "praise": "praise_decided"}

    async def decided(kind: str, reason: str) -> str:
        filed = await staff_post(
            fetch,
            make_staff,
            supervised.officer,
            f"/api/v1/subjects/{sid}/sanctions",
            {"kind": kind, "reason": reason},
        )
        assert filed.status == 201, filed.body
        levels = filed.json["levels"]
        for n, level in enumerate(levels):
            who = {"station": supervised.officer, "county": supervised.county}[level]
            step = await staff_post(
                fetch,
                make_staff,
                who,
                f"/api/v1/sanctions/{filed.json['id']}/decision",
                {"approve": True, "comment": "同意"},
            )
            assert step.status == 200, step.body
            if n < len(levels) - 1:
                # A proposal on its way tells the person nothing.
                assert not [m for m in await inbox(supervised.client) if m["kind"] == kinds[kind]]
        return filed.json["id"]

    sanction_id = await decided("warn", "未经批准擅自离开所居住的市、县")
    warned = await notice(supervised.client, "sanction_decided")
    assert warned["title"] == "警告决定"
    assert warned["body"].startswith(
        "经审批，决定对您给予警告。事由：未经批准擅自离开所居住的市、县。"
    )
    assert warned["ref"] == {"type": "sanction", "id": sanction_id}
    await decided("praise", "积极参加公益活动")
    praised = await notice(supervised.client, "praise_decided")
    assert praised["title"] == "表扬决定" and "积极参加公益活动" in praised["body"]
    await pusher.run()
    # Only the sanction is urgent: it alone reaches the phone without a subscribe message.
    assert [text for _, text in pusher.sms.sent] == ["【安帮】警告决定：" + warned["body"]]


async def test_an_elocation_order_made_renewed_and_ended(
    api, fetch, tree, make_staff, clock, services, mp_clients, pusher, wechat_standin
):
    clock.set(local(2026, 11, 2, 8, 0))
    station = await make_staff(Role.STATION_OFFICER, tree.station)
    head = await make_staff(Role.COUNTY_OFFICER, tree.county, is_agency_head=True)
    program = {
        "type": "community_corrections",
        "start_date": "2026-11-02",
        "end_date": "2027-11-01",
        "sentence_type": "probation",
        "prohibitions": ["不得进入夜总会、酒吧"],
    }
    sid, person = await enrol(
        fetch, mp_clients, tree, await make_staff.token_for(station), program, "located"
    )
    await person.call("POST", "/mp/v1/consents", {"template_ids": [DECISION]})
    ordered = await staff_post(
        fetch,
        make_staff,
        station,
        f"/api/v1/subjects/{sid}/elocation-orders",
        {
            "ground": "breach_of_prohibition",
            "prohibition_index": 0,
            "start_date": "2026-11-10",
            "end_date": "2027-01-31",
            "reason": "违反禁止令进入酒吧",
        },
    )
    assert ordered.status == 201, ordered.body
    order_id = ordered.json["id"]
    approved = await staff_post(
        fetch,
        make_staff,
        head,
        f"/api/v1/elocation-orders/{order_id}/decision",
        {"approve": True, "comment": "同意"},
    )
    assert approved.json["status"] == "approved", approved.body
    made = await notice(person, "elocation_ordered")
    assert "自2026年11月10日至2027年1月31日对您使用电子定位装置" in made["body"]
    # Urgent, with consent: as a subscribe message, not by SMS.
    await pusher.run()
    (sent,) = wechat_standin.state.messages_to(openid_for("located"))
    assert sent["data"]["thing1"]["value"] == "电子定位决定"
    assert pusher.sms.sent == []

    renewal = await staff_post(
        fetch,
        make_staff,
        station,
        f"/api/v1/elocation-orders/{order_id}/renewals",
        {"end_date": "2027-03-31", "reason": "仍有违反禁止令的风险"},
    )
    assert renewal.status == 201, renewal.body
    await staff_post(
        fetch,
        make_staff,
        head,
        f"/api/v1/elocation-orders/{renewal.json['id']}/decision",
        {"approve": True, "comment": "同意"},
    )
    renewed = await notice(person, "elocation_renewed")
    assert renewed["body"] == "经审批，对您使用电子定位装置的期限延长至2027年3月31日。"
    # The first order's end runs into its renewal: only the last order's end is told.
    assert await services.elocation.end_expired_orders(dt.date(2027, 2, 1)) == 1
    assert not [m for m in await inbox(person) if m["kind"] == "elocation_ended"]
    assert await services.elocation.end_expired_orders(dt.date(2027, 4, 1)) == 1
    clock.set(local(2027, 4, 1, 9, 0))
    await person.login("located")
    ended = await notice(person, "elocation_ended")
    assert ended["ref"] == {"type": "elocation_order", "id": renewal.json["id"]}
    assert "2027年3月31日届满" in ended["body"]


async def test_an_accepted_transfer_names_the_place_and_the_report_deadline(
    supervised, fetch, tree, clock
):
    make_staff = supervised.make_staff
    receiving = await make_staff(Role.STATION_OFFICER, tree.station2)
    asked = await staff_post(
        fetch,
        make_staff,
        supervised.officer,
        f"/api/v1/subjects/{supervised.subject_id}/transfers",
        {"to_org_id": tree.station2.id, "reason": "迁居至南汇"},
    )
    assert asked.status == 201, asked.body
    accepted = await staff_post(
        fetch,
        make_staff,
        receiving,
        f"/api/v1/transfers/{asked.json['id']}/decision",
        {"accept": True},
    )
    assert accepted.status == 200, accepted.body
    message = await notice(supervised.client, "transfer_accepted")
    due = dt.date.fromisoformat(accepted.json["report_due"])
    assert "南汇司法所同意接收" in message["body"]
    assert f"请于{due.year}年{due.month}月{due.day}日前" in message["body"]


async def test_a_referral_placed_waiting_with_its_position_and_offered(
    api, fetch, tree, make_staff, clock, mp_clients
):
    clock.set(local(2026, 11, 2, 9, 0))
    county = await make_staff(Role.COUNTY_OFFICER, tree.county)
    station = await make_staff(Role.STATION_OFFICER, tree.station)
    social = await make_staff(Role.SOCIAL_WORKER, tree.station)
    coordinator = await make_staff(Role.ASSISTANCE_COORDINATOR, tree.station)
    program = {
        "type": "community_corrections",
        "start_date": "2026-11-02",
        "end_date": "2027-11-01",
        "sentence_type": "probation",
    }
    people = []
    for label in ("resettled-a", "resettled-b"):
        sid, client = await enrol(
            fetch, mp_clients, tree, await make_staff.token_for(station), program, label
        )
        assigned = await fetch(
            f"/api/v1/subjects/{sid}/assignments",
            "PUT",
            json_body={"social_worker_ids": [social.id]},
            token=await make_staff.token_for(station),
        )
        assert assigned.status == 200, assigned.body
        people.append((sid, client))
    home = await staff_post(
        fetch,
        make_staff,
        county,
        "/api/v1/assistance/facilities",
        {
            "name": "鹿城阳光之家",
            "kind": "sunshine_home",
            "org_id": tree.county.id,
            "capacity": 1,
            "coordinator_ids": [coordinator.id],
        },
    )
    assert home.status == 201, home.body
    referrals = []
    for sid, _ in people:
        referral = await staff_post(
            fetch,
            make_staff,
            social,
            "/api/v1/assistance/referrals",
            {"subject_id": sid, "needs": ["housing"], "resource_id": home.json["id"]},
        )
        assert referral.status == 201, referral.body
        rid = referral.json["id"]
        for who, step in (
            (station, {"to": "approved"}),
            (social, {"to": "offered", "resource_id": home.json["id"]}),
            (social, {"to": "accepted"}),
        ):
            moved = await staff_post(
                fetch, make_staff, who, f"/api/v1/assistance/referrals/{rid}/transition", step
            )
            assert moved.status == 200, moved.body
        referrals.append(rid)
    placements = []
    for rid in referrals:
        placements.append(
            await staff_post(
                fetch,
                make_staff,
                coordinator,
                "/api/v1/assistance/placements",
                {"referral_id": rid, "resource_id": home.json["id"]},
            )
        )
    assert [p.status for p in placements] == [201, 409]
    (_, first), (_, second) = people
    placed = await notice(first, "referral_placed")
    assert placed["body"] == "您的帮扶申请已安排：鹿城阳光之家。"
    offered = [m for m in await inbox(first) if m["kind"] == "referral_offered"]
    assert offered and offered[0]["title"] == "已为您联系到帮扶资源"
    waiting = await notice(second, "referral_waiting")
    assert "目前排在第1位" in waiting["body"]
    assert waiting["ref"] == {"type": "referral", "id": referrals[1]}


async def test_a_program_ending_is_told_once_per_term(supervised, services, clock, pusher):
    assert await services.programs.alert_ending(dt.date(2027, 10, 15)) == 1
    assert await services.programs.alert_ending(dt.date(2027, 10, 16)) == 1  # the alert's own
    clock.set(local(2027, 10, 15, 9, 0))
    await supervised.client.login("probationer")
    ending = await notice(supervised.client, "program_ending")
    assert ending["title"] == "社区矫正期限即将届满"
    assert "将于2027年11月1日届满" in ending["body"]
    await pusher.run()
    assert [t for _, t in pusher.sms.sent] == ["【安帮】社区矫正期限即将届满：" + ending["body"]]


async def test_counselling_booked_and_cancelled_reach_a_minors_guardian_until_they_come_of_age(
    api, fetch, tree, make_staff, clock, mp_clients
):
    clock.set(local(2026, 11, 2, 8, 0))
    officer = await make_staff(Role.STATION_OFFICER, tree.station)
    counselor = await make_staff(Role.SOCIAL_WORKER, tree.station)
    created = await staff_post(
        fetch,
        make_staff,
        officer,
        "/api/v1/subjects",
        subject_body(tree.station.id, birth=dt.date(2008, 11, 3)),  # 18 on 3 November
    )
    sid = created.json["id"]
    clients = {}
    for role in ("subject", "guardian"):
        issued = await staff_post(
            fetch, make_staff, officer, f"/api/v1/subjects/{sid}/binding-code", {"role": role}
        )
        assert issued.status == 201, issued.body
        clients[role] = mp_clients()
        await clients[role].login(f"young-{role}")
        assert (await clients[role].bind(issued.json["code"])).status == 200
    clock.set(local(2026, 10, 1, 8, 0))  # a month earlier: a minor

    async def book(start: str, end: str) -> dict:
        answer = await staff_post(
            fetch,
            make_staff,
            officer,
            f"/api/v1/subjects/{sid}/counseling",
            {"counselor_id": counselor.id, "start": start, "end": end},
        )
        assert answer.status == 201, answer.body
        return answer.json

    first = await book("2026-10-08T09:00:00+08:00", "2026-10-08T10:00:00+08:00")
    cancelled = await staff_post(
        fetch, make_staff, officer, f"/api/v1/counseling/{first['id']}/cancel"
    )
    assert cancelled.status == 200, cancelled.body
    for role in ("subject", "guardian"):
        await clients[role].login(f"young-{role}")
        booked = await notice(clients[role], "counseling_booked")
        assert booked["body"] == (
            "已为您预约心理辅导，时间：2026年10月8日 09:00至10:00。请按时参加。"
        )
        assert (await notice(clients[role], "counseling_cancelled"))["ref"] == {
            "type": "counseling_session",
            "id": first["id"],
        }
    # Of age (民法典 Art. 17): the adult is told alone, the old guardian binding is not.
    clock.set(local(2026, 11, 10, 8, 0))
    await book("2026-11-12T09:00:00+08:00", "2026-11-12T10:00:00+08:00")
    for role in ("subject", "guardian"):
        await clients[role].login(f"young-{role}")
    assert len(await of_kind(clients["subject"], "counseling_booked")) == 2
    assert len(await of_kind(clients["guardian"], "counseling_booked")) == 1

    # Read marks are each reader's own; only one's own message can be marked.
    message = (await inbox(clients["guardian"]))[0]
    read = await clients["guardian"].call("POST", f"/mp/v1/messages/{message['id']}/read")
    assert read.status == 200 and read.json["read_at"] is not None
    again = await clients["guardian"].call("POST", f"/mp/v1/messages/{message['id']}/read")
    assert again.json["read_at"] == read.json["read_at"]
    mine = {m["id"]: m for m in await inbox(clients["subject"])}
    assert mine[message["id"]]["read_at"] is None
    newest = (await inbox(clients["subject"]))[0]  # the adult's own, not the guardian's
    hidden = await clients["guardian"].call("POST", f"/mp/v1/messages/{newest['id']}/read")
    assert hidden.status == 404 and hidden.json["error"]["code"] == "not_found"
    bogus = await clients["subject"].call("POST", "/mp/v1/messages/not-an-id/read")
    assert bogus.status == 404


async def test_another_persons_message_is_not_found_and_a_document_is_announced(
    supervised, fetch, tree, mp_clients, services
):
    assert await services.notices.document_issued(
        supervised.subject_id, "doc-0001", "社区矫正宣告书"
    )
    assert not await services.notices.document_issued(
        supervised.subject_id, "doc-0001", "社区矫正宣告书"
    )
    issued = await notice(supervised.client, "document_issued")
    assert issued["ref"] == {"type": "document", "id": "doc-0001"}
    assert issued["body"] == "社区矫正宣告书已送达，请在小程序中查看。"
    program = {
        "type": "community_corrections",
        "start_date": "2026-11-02",
        "end_date": "2027-11-01",
        "sentence_type": "probation",
    }
    _, other = await enrol(
        fetch, mp_clients, tree, await supervised.officer_token(), program, "someone-else"
    )
    theirs = await other.call("POST", f"/mp/v1/messages/{issued['id']}/read")
    assert theirs.status == 404
    mine = await supervised.client.call("POST", f"/mp/v1/messages/{issued['id']}/read")
    assert mine.status == 200 and mine.json["kind"] == "document_issued"


async def test_wechat_down_costs_the_push_never_the_decision(
    supervised, fetch, pusher, wechat_standin
):
    person = supervised.client
    await person.call("POST", "/mp/v1/consents", {"template_ids": [DECISION]})
    filed = await person.call(
        "POST",
        "/mp/v1/leave-requests",
        leave_body("2026-11-03", "2026-11-05"),
    )
    refused = await staff_post(
        fetch,
        supervised.make_staff,
        supervised.officer,
        f"/api/v1/leave-requests/{filed.json['id']}/decision",
        {"approve": False, "comment": "手续不全"},
    )
    assert refused.status == 200
    wechat_standin.state.fail_next("/cgi-bin/message/subscribe/send", -1, 5)
    assert (await pusher.run())["pushed"] == 1
    # WeChat failed, the acceptance was given back, and the urgent refusal went by SMS.
    assert len(pusher.sms.sent) == 1
    outcomes = {
        (d["channel"], d["outcome"])
        for d in await pusher.services.deliveries.for_recipient(f"subject:{supervised.subject_id}")
    }
    assert ("wechat", "failed") in outcomes and ("sms", "sent") in outcomes
    assert (await notice(person, "leave_rejected"))["title"] == "外出申请未获批准"

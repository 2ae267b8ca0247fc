"""Alerts show each role what that role may see on the file itself, and acknowledging one is a
write: for the alert's roles and, when it concerns a person, for those who work on them."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest

from models.clock import LOCAL_TZ
from models.policy import Role
from tests.conftest import Account
from tests.subject_factories import subject_body

MENTAL_HEALTH = {
    "type": "mental_health",
    "start_date": "2026-01-05",
    "diagnosis": "精神分裂症",
    "risk_level": 1,
    "guardian": {"name": "家属", "phone": "13900000000", "relation": "母亲"},
}


@dataclass
class Ward:
    """A mental-health patient filed in a community, at risk level 3 (police alerted), and
    the staff around them; `social` is the assigned worker, `other_social` is not."""

    subject_id: str
    staff: dict[str, Account]
    tokens: dict[str, str]

    async def alerts(self, fetch, who: str, kind: str) -> list[dict]:
        answer = await fetch("/api/v1/alerts", token=self.tokens[who])
        assert answer.status == 200, answer.body
        return [a for a in answer.json["items"] if a["kind"] == kind]

    async def ack(self, fetch, who: str, alert_id: str):
        return await fetch(f"/api/v1/alerts/{alert_id}/ack", "POST", token=self.tokens[who])


@pytest.fixture
async def ward(fetch, tree, make_staff, clock) -> Ward:
    clock.set(dt.datetime(2026, 6, 2, 9, 0, tzinfo=LOCAL_TZ))
    staff = {
        "station": await make_staff(Role.STATION_OFFICER, tree.station),
        "county": await make_staff(Role.COUNTY_OFFICER, tree.county),
        "health": await make_staff(Role.HEALTH_WORKER, tree.county),
        "social": await make_staff(Role.SOCIAL_WORKER, tree.station),
        "other_social": await make_staff(Role.SOCIAL_WORKER, tree.station),
        "grid": await make_staff(Role.GRID_WORKER, tree.community),
        "police": await make_staff(Role.POLICE, tree.station),
        "oversight": await make_staff(Role.OVERSIGHT, tree.county),
    }
    tokens = {who: await make_staff.token_for(account) for who, account in staff.items()}
    created = await fetch(
        "/api/v1/subjects",
        "POST",
        json_body=subject_body(tree.community.id),
        token=tokens["station"],
    )
    sid = created.json["id"]
    assigned = await fetch(
        f"/api/v1/subjects/{sid}/assignments",
        "PUT",
        json_body={"social_worker_ids": [staff["social"].id]},
        token=tokens["station"],
    )
    assert assigned.status == 200, assigned.body
    program = await fetch(
        f"/api/v1/subjects/{sid}/programs", "POST", json_body=MENTAL_HEALTH, token=tokens["health"]
    )
    assert program.status == 201, program.body
    risen = await fetch(
        f"/api/v1/programs/{program.json['id']}/risk",
        "POST",
        json_body={"level": 3, "on": "2026-06-01", "reason": "拒绝服药，情绪激动"},
        token=tokens["health"],
    )
    assert risen.status == 200, risen.body
    return Ward(sid, staff, tokens)


async def test_the_risk_level_reaches_only_those_who_see_health_data_on_the_file(fetch, ward):
    for who in ("health", "social"):
        [alert] = await ward.alerts(fetch, who, "mental_health_high_risk")
        assert alert["details"]["risk_level"] == 3, who
    for who in ("station", "county", "police", "grid", "oversight"):
        [alert] = await ward.alerts(fetch, who, "mental_health_high_risk")
        assert alert["subject_id"] == ward.subject_id
        assert "risk_level" not in alert["details"], who
        assert alert["details"]["program_id"]  # ids and codes stay: the file says the rest
    # A social worker not assigned does not open the file, so sees no alert about it.
    assert await ward.alerts(fetch, "other_social", "mental_health_high_risk") == []


async def test_acknowledging_is_for_the_alerts_roles_and_those_who_work_on_the_person(
    fetch, ward, services, tree
):
    [high_risk] = await ward.alerts(fetch, "health", "mental_health_high_risk")
    assert high_risk["details"]["for_roles"] == ["police", "health_worker"]
    oversight = await ward.ack(fetch, "oversight", high_risk["id"])
    assert oversight.status == 403
    station = await ward.ack(fetch, "station", high_risk["id"])
    assert station.status == 403
    assert station.error["code"] == "not_alert_role"
    assert (await ward.ack(fetch, "other_social", high_risk["id"])).status == 404
    police = await ward.ack(fetch, "police", high_risk["id"])
    assert police.status == 200, police.body
    assert police.json["status"] == "acknowledged"
    assert "risk_level" not in police.json["details"]

    # An alert for any role about the person: the workers acknowledge it only when assigned.
    missed_id = await services.alerts.raise_alert(
        kind="obligation_missed",
        org_id=tree.community.id,
        org_path=tree.community.path,
        subject_id=ward.subject_id,
        details={"kind": "mental_followup"},
    )
    grid = await ward.ack(fetch, "grid", missed_id)
    assert grid.status == 403
    assert grid.error["code"] == "not_assigned"
    assert (await ward.ack(fetch, "other_social", missed_id)).status == 404
    assert (await ward.ack(fetch, "oversight", missed_id)).status == 403
    still_open = await ward.alerts(fetch, "station", "obligation_missed")
    assert [a["status"] for a in still_open] == ["open"]
    done = await ward.ack(fetch, "social", missed_id)
    assert done.status == 200, done.body
    assert done.json["status"] == "acknowledged"

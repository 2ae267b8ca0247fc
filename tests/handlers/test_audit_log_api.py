"""GET /api/v1/audit/events: the audit administrator's logins, refusals and administrative
changes over a span of days, one account's when asked, named by who acted; everyone else is
refused; a bad span or kind answers 422 naming the field. And the alert list names the person
and who acknowledged it."""

from __future__ import annotations

from models.policy import Role
from tests.mp_support import local


async def test_logins_refusals_and_changes_are_listed_for_the_audit_administrator(
    fetch, make_staff, tree, clock
):
    clock.set(local(2026, 11, 2, 9, 0))
    auditor = await make_staff(Role.AUDIT_ADMIN, tree.city)
    admin = await make_staff(Role.SYS_ADMIN, tree.city)
    officer = await make_staff(Role.STATION_OFFICER, tree.station)
    admin_token = await make_staff.token_for(admin)
    officer_token = await make_staff.token_for(officer)
    bad = await fetch(
        "/api/v1/auth/login",
        "POST",
        json_body={"username": officer.username, "password": "wrong-password-123"},
    )
    assert bad.status == 401
    good = await fetch(
        "/api/v1/auth/login",
        "POST",
        json_body={"username": officer.username, "password": officer.password},
    )
    assert good.status == 200, good.body
    made = await fetch(
        "/api/v1/orgs",
        "POST",
        token=admin_token,
        json_body={"name": "七都司法所", "code": "330302098", "kind": "station",
                   "parent_id": tree.county.id},
    )  # fmt: skip
    assert made.status == 201, made.body
    token = await make_staff.token_for(auditor)

    logins = (await fetch("/api/v1/audit/events?kind=login", token=token)).json["items"]
    assert {e["action"] for e in logins} == {"auth.login"}
    refused_login = [e for e in logins if e["outcome"].startswith("refused:")]
    assert len(refused_login) == 1 and refused_login[0]["actor_id"] is None
    mine = [e for e in logins if e["actor_id"] == officer.id]
    assert mine and mine[0]["actor_username"] == officer.username and mine[0]["actor_name"]
    # Latest first.
    assert [e["at"] for e in logins] == sorted((e["at"] for e in logins), reverse=True)

    changes = (await fetch("/api/v1/audit/events?kind=admin", token=token)).json["items"]
    created = [e for e in changes if e["action"] == "orgs.create"]
    assert created and created[0]["actor_id"] == admin.id and created[0]["resource"] == "org"
    assert {e["action"] for e in changes} >= {"orgs.create", "orgs.create.outcome"}

    # One account's entries only.
    only = await fetch(f"/api/v1/audit/events?kind=login&actor_id={officer.id}", token=token)
    assert only.json["items"] and {e["actor_id"] for e in only.json["items"]} == {officer.id}
    # A span before anything happened is empty; reading is itself audited as a read.
    before = await fetch(
        "/api/v1/audit/events?kind=login&from=2026-10-01&to=2026-10-31", token=token
    )
    assert before.status == 200 and before.json["items"] == []
    reads = (await fetch("/api/v1/audit/events?kind=refusal", token=token)).json["items"]
    assert all(e["outcome"].startswith("refused:") for e in reads)

    # Everyone else is refused, and the refusal shows in the auditor's view.
    for other in (officer_token, admin_token):
        refused = await fetch("/api/v1/audit/events?kind=login", token=other)
        assert refused.status == 403
    reads = (await fetch("/api/v1/audit/events?kind=refusal", token=token)).json["items"]
    assert {e["actor_id"] for e in reads if e["action"] == "audit.read"} == {officer.id, admin.id}


async def test_a_bad_kind_or_span_is_refused_naming_the_field(fetch, make_staff, tree):
    token = await make_staff.token_for(await make_staff(Role.AUDIT_ADMIN, tree.city))
    for query, field in (
        ("", "kind"),
        ("kind=everything", "kind"),
        ("kind=login&from=2026-11-05&to=2026-11-01", "from"),
        ("kind=login&from=2025-01-01&to=2026-11-01", "from"),
        ("kind=login&to=2026-13-01", "to"),
        ("kind=login&actor_id=nobody", "actor_id"),
    ):
        answer = await fetch(f"/api/v1/audit/events?{query}", token=token)
        assert answer.status in (400, 422), (query, answer.status)
        fields = {d.get("field") for d in answer.json["error"].get("details") or []}
        assert field in fields, (query, answer.body)


async def test_alerts_name_the_person_and_who_acknowledged(supervised, services, fetch, tree):
    token = await supervised.officer_token()
    subject = (await fetch(f"/api/v1/subjects/{supervised.subject_id}", token=token)).json
    alert_id = await services.alerts.raise_alert(
        kind="program_ending",
        org_id=tree.station.id,
        org_path=tree.station.path,
        subject_id=supervised.subject_id,
        details={"type": "community_corrections", "end_date": "2026-11-20"},
    )
    [listed] = (await fetch("/api/v1/alerts?status=open", token=token)).json["items"]
    assert listed["subject_name"] == subject["name"] and listed["acknowledged_at"] is None
    ack = await fetch(f"/api/v1/alerts/{alert_id}/ack", "POST", token=token)
    assert ack.status == 200 and ack.json["acknowledged_at"]
    [done] = (await fetch("/api/v1/alerts?status=acknowledged", token=token)).json["items"]
    me = (await fetch("/api/v1/me", token=token)).json
    assert done["acknowledged_by"] == me["id"] and done["acknowledged_by_name"] == me["name"]
    # Another role is given the name as its role sees it on the file, never more.
    police = await supervised.make_staff(Role.POLICE, tree.station)
    police_token = await supervised.make_staff.token_for(police)
    [seen] = (await fetch("/api/v1/alerts?status=acknowledged", token=police_token)).json["items"]
    shown = await fetch(f"/api/v1/subjects/{supervised.subject_id}", token=police_token)
    assert shown.status == 200 and seen["subject_name"] == shown.json.get("name")

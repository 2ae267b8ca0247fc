"""Free text a person writes about a person rests sealed under that person's key: a whole workflow
over HTTP leaves no canary in plaintext anywhere in the database, and shredding the person makes
every sealed reason and stored answer unreadable."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import bson
import pytest

from models.codec import Shredded
from models.geo import Area
from models.policy import Role
from server.app import SYSTEM
from tests.mp_support import STATION_CENTRE, STATION_RADIUS_M, local
from tests.subject_factories import subject_body

CORRECTIONS = {
    "type": "community_corrections",
    "start_date": "2026-11-02",
    "end_date": "2027-11-01",
    "sentence_type": "probation",
}


class Canaries:
    """A unique marker per free text, so a leak names the field it came from."""

    def __init__(self) -> None:
        self.issued: dict[str, str] = {}

    def __call__(self, label: str) -> str:
        marker = f"CANARY{secrets.token_hex(6).upper()}"
        self.issued[marker] = label
        return f"金丝雀 {marker} {label}"


def strings_in(value: Any) -> Iterator[str]:
    """Every string in a document, bytes decoded as UTF-8 where they decode."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, bytes | bytearray):
        yield bytes(value).decode("utf-8", errors="ignore")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from strings_in(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from strings_in(item)


async def leaks(store, canaries: Canaries) -> dict[str, list[str]]:
    """Canary -> the collections holding it in plaintext (raw BSON too, so nothing nests away)."""
    found: dict[str, list[str]] = {}
    for name in sorted(await store.database.list_collection_names()):
        async for doc in store.database[name].find({}):
            texts = "\n".join(strings_in(doc))
            raw = bson.encode(doc)
            for marker, label in canaries.issued.items():
                if marker in texts or marker.encode() in raw:
                    found.setdefault(f"{label} ({marker})", []).append(name)
    return found


async def run_workflow(fetch, tree, make_staff, clock, services, mp_clients) -> dict[str, Any]:
    """Every path that takes free text about a person, each with its own canary."""
    canary = Canaries()
    clock.set(local(2026, 11, 2, 8, 0))
    await services.orgs.set_area(
        SYSTEM, tree.station.id, Area(center=STATION_CENTRE, radius_m=STATION_RADIUS_M)
    )
    officer = await make_staff(Role.STATION_OFFICER, tree.station)
    officer2 = await make_staff(Role.STATION_OFFICER, tree.station2)
    county = await make_staff(Role.COUNTY_OFFICER, tree.county, is_agency_head=True)
    outsider = await make_staff(Role.COUNTY_OFFICER, tree.other_county)
    worker = await make_staff(Role.SOCIAL_WORKER, tree.station)

    async def post(path: str, body: dict[str, Any], account, status: int = 200) -> Any:
        answer = await fetch(
            path, "POST", json_body=body, token=await make_staff.token_for(account)
        )
        assert answer.status == status, (path, answer.body)
        return answer.json

    created = await post("/api/v1/subjects", subject_body(tree.station.id), officer, 201)
    sid = created["id"]
    assigned = await fetch(
        f"/api/v1/subjects/{sid}/assignments",
        "PUT",
        json_body={"social_worker_ids": [worker.id]},
        token=await make_staff.token_for(officer),
    )
    assert assigned.status == 200, assigned.body
    program = await post(f"/api/v1/subjects/{sid}/programs", CORRECTIONS, officer, 201)
    pid = program["id"]
    await post(f"/api/v1/programs/{pid}/intake", {"date": "2026-11-02"}, officer)
    level = await post(
        f"/api/v1/programs/{pid}/supervision-level",
        {"level": "normal", "from_date": "2027-01-02", "reason": canary("level reason")},
        officer,
    )
    level_reason = level["details"]["level_history"][-1]["reason"]
    assert level_reason.startswith("金丝雀")  # read back in the clear

    # The person, bound in the mini-program, asks for leave (idempotently: a stored answer).
    issued = await post(f"/api/v1/subjects/{sid}/binding-code", {"role": "subject"}, officer, 201)
    person = mp_clients()
    assert (await person.login("canary-person")).status == 200
    assert (await person.bind(issued["code"])).status == 200
    leave_body = {
        "start_date": "2026-11-10",
        "end_date": "2026-11-19",
        "destination": canary("leave destination"),
        "reason": canary("leave reason"),
    }
    leave = await person.call(
        "POST", "/mp/v1/leave-requests", leave_body, headers={"Idempotency-Key": "canary-leave-01"}
    )
    assert leave.status == 201, leave.body
    replay = await person.call(
        "POST", "/mp/v1/leave-requests", leave_body, headers={"Idempotency-Key": "canary-leave-01"}
    )
    assert replay.json == leave.json
    leave_id = leave.json["id"]
    station_comment = canary("leave station comment")
    step = await post(
        f"/api/v1/leave-requests/{leave_id}/decision",
        {"approve": True, "comment": station_comment},
        officer,
    )
    assert step["steps"][0]["comment"] == station_comment  # read back in the clear
    # The county decides from WeChat: the answer (with both comments) is stored for replay.
    staff_code = await post("/api/v1/me/binding-code", {}, county, 201)
    county_app = mp_clients()
    await county_app.login("canary-county")
    assert (await county_app.bind(staff_code["code"])).status == 200
    decided = await county_app.call(
        "POST",
        f"/mp/v1/worker/leave-requests/{leave_id}/decision",
        {"approve": True, "comment": canary("leave county comment")},
        headers={"Idempotency-Key": "canary-decide-01"},
    )
    assert decided.status == 200, decided.body
    assert decided.json["steps"][0]["comment"] == station_comment

    # An occurrence excused.
    occurrences = await fetch(
        f"/api/v1/subjects/{sid}/obligations", token=await make_staff.token_for(officer)
    )
    stored = [o for o in occurrences.json["items"] if o["id"]]
    excuse_reason = canary("excuse reason")
    excused = await post(
        f"/api/v1/obligations/{stored[0]['id']}/excuse", {"reason": excuse_reason}, officer
    )
    assert excused["excuse_reason"] == excuse_reason

    # A sanction filed and decided.
    sanction = await post(
        f"/api/v1/subjects/{sid}/sanctions",
        {"kind": "admonish", "reason": canary("sanction reason")},
        officer,
        201,
    )
    sanction_comment = canary("sanction comment")
    decided_sanction = await post(
        f"/api/v1/sanctions/{sanction['id']}/decision",
        {"approve": True, "comment": sanction_comment},
        officer,
    )
    assert decided_sanction["steps"][0]["comment"] == sanction_comment

    # An electronic-location order asked for and decided.
    order = await post(
        f"/api/v1/subjects/{sid}/elocation-orders",
        {
            "ground": "left_without_approval",
            "start_date": "2026-11-03",
            "end_date": "2026-12-02",
            "reason": canary("elocation reason"),
        },
        officer,
        201,
    )
    await post(
        f"/api/v1/elocation-orders/{order['id']}/decision",
        {"approve": False, "comment": canary("elocation comment")},
        county,
    )

    # Visits: one from the console, one from WeChat under an Idempotency-Key.
    await post(
        f"/api/v1/subjects/{sid}/visits",
        {"kind": "talk", "note": canary("visit note")},
        officer,
        201,
    )
    worker_code = await post("/api/v1/me/binding-code", {}, worker, 201)
    worker_app = mp_clients()
    await worker_app.login("canary-worker")
    assert (await worker_app.bind(worker_code["code"])).status == 200
    visit = await worker_app.call(
        "POST",
        "/mp/v1/worker/visits",
        {"subject_id": sid, "kind": "visit", "note": canary("worker visit note")},
        headers={"Idempotency-Key": "canary-visit-01"},
    )
    assert visit.status == 201, visit.body

    # Break-glass from another county.
    glass_reason = canary("break-glass reason")
    await post(f"/api/v1/subjects/{sid}/break-glass", {"reason": glass_reason}, outsider, 201)
    read = await fetch(f"/api/v1/subjects/{sid}", token=await make_staff.token_for(outsider))
    assert read.status == 200

    # Lifecycle: suspended and resumed with reasons, a transfer asked and refused with a
    # comment, and the end with a reason.
    await post(
        f"/api/v1/programs/{pid}/transition",
        {"to": "suspended", "reason": canary("suspend reason")},
        officer,
    )
    await post(
        f"/api/v1/programs/{pid}/transition",
        {"to": "active", "reason": canary("resume reason")},
        officer,
    )
    transfer = await post(
        f"/api/v1/subjects/{sid}/transfers",
        {"to_org_id": tree.station2.id, "reason": canary("transfer reason")},
        officer,
        201,
    )
    await post(
        f"/api/v1/transfers/{transfer['id']}/decision",
        {"accept": False, "comment": canary("transfer comment")},
        officer2,
    )
    end_reason = canary("end reason")
    ended = await post(
        f"/api/v1/programs/{pid}/transition", {"to": "ended", "reason": end_reason}, officer
    )
    assert any(h.get("reason") == end_reason for h in ended["history"])

    # The county officer reads the access log: the break-glass reason, in the clear.
    log = await fetch(
        f"/api/v1/subjects/{sid}/access-log", token=await make_staff.token_for(county)
    )
    assert log.status == 200
    assert glass_reason in {e["reason"] for e in log.json["items"]}
    return {
        "canaries": canary,
        "subject_id": sid,
        "person": person,
        "leave_body": leave_body,
        "leave_answer": leave.json,
        "county": county,
        "glass_reason": glass_reason,
        "excuse_reason": excuse_reason,
        "occurrence_id": stored[0]["id"],
        "order_id": order["id"],
        "transfer_id": transfer["id"],
    }


async def test_no_free_text_rests_in_plaintext_after_a_whole_workflow(
    api, fetch, store, tree, make_staff, clock, services, mp_clients
):
    run = await run_workflow(fetch, tree, make_staff, clock, services, mp_clients)
    found = await leaks(store, run["canaries"])
    assert found == {}, f"free text in plaintext: {found}"


async def test_the_audit_administrator_sees_that_a_reason_was_given_never_its_text(
    api, fetch, store, tree, make_staff, clock, services, mp_clients
):
    run = await run_workflow(fetch, tree, make_staff, clock, services, mp_clients)
    auditor = await make_staff(Role.AUDIT_ADMIN, tree.city)
    log = await fetch(
        f"/api/v1/subjects/{run['subject_id']}/access-log",
        token=await make_staff.token_for(auditor),
    )
    assert log.status == 200
    glass = [e for e in log.json["items"] if e["action"] == "subjects.break_glass"]
    assert glass and all(e["reason_given"] and e["reason"] is None for e in glass)
    assert glass[0]["actor_id"]
    assert run["glass_reason"] not in log.body.decode("utf-8")
    county = await fetch(
        f"/api/v1/subjects/{run['subject_id']}/access-log",
        token=await make_staff.token_for(run["county"]),
    )
    assert [e["reason"] for e in county.json["items"] if e["action"] == "subjects.break_glass"]


async def test_shredding_a_person_makes_their_reasons_and_stored_answers_unreadable(
    api, fetch, store, tree, make_staff, clock, services, mp_clients
):
    run = await run_workflow(fetch, tree, make_staff, clock, services, mp_clients)
    sid = run["subject_id"]
    # Before: the stored answer replays, the audit reason opens.
    again = await run["person"].call(
        "POST",
        "/mp/v1/leave-requests",
        run["leave_body"],
        headers={"Idempotency-Key": "canary-leave-01"},
    )
    assert again.json == run["leave_answer"]
    await services.subjects.shred(SYSTEM, sid)

    # The audit entries keep their sealed reasons, which no longer open.
    entries = await services.audit.entries_for_subject(sid)
    sealed = [e for e in entries if isinstance(e.get("reason"), bytes)]
    assert {e["action"] for e in sealed} >= {"subjects.break_glass", "obligations.excuse"}
    codec = services.subjects._codec
    for entry in sealed:
        with pytest.raises(Shredded):
            await codec.open("audit", sid, "reason", entry["reason"])
    occurrence = await store.database["occurrences"].find_one({"_id": run["occurrence_id"]})
    with pytest.raises(Shredded):
        await codec.open(
            "occurrences", run["occurrence_id"], "excuse_reason", occurrence["excuse_reason"]
        )
    # Every stored answer about the person is sealed under their key: none opens now.
    answers = [a async for a in store.database["idempotency_keys"].find({"subject_id": sid})]
    assert len(answers) >= 2
    for answer in answers:
        with pytest.raises(Shredded):
            await codec.open("idempotency_keys", answer["_id"], "body", answer["body"])
    # The retry is refused rather than answered with the erased text.
    replay = await run["person"].call(
        "POST",
        "/mp/v1/leave-requests",
        run["leave_body"],
        headers={"Idempotency-Key": "canary-leave-01"},
    )
    assert replay.status != 201
    assert run["leave_body"]["reason"] not in replay.body.decode("utf-8")
    # The access log still lists the entries, without their text.
    auditor = await make_staff(Role.CITY_OFFICER, tree.city)
    log = await fetch(
        f"/api/v1/subjects/{sid}/access-log", token=await make_staff.token_for(auditor)
    )
    assert log.status == 200
    glass = [e for e in log.json["items"] if e["action"] == "subjects.break_glass"]
    assert glass and all(e["reason"] is None and e["reason_given"] for e in glass)


async def test_rotating_the_data_key_keeps_every_sealed_reason_readable(
    api, fetch, store, tree, make_staff, clock, services, mp_clients
):
    run = await run_workflow(fetch, tree, make_staff, clock, services, mp_clients)
    sid = run["subject_id"]
    await services.subjects.rotate_data_key(SYSTEM, sid)
    old = await store.database["key_vault"].find_one({"_id": f"dek:{sid}"})
    assert old["wrapped"] is None  # destroyed: what was left under it would now be lost
    token = await make_staff.token_for(run["county"])
    texts = set()
    for path in (
        f"/api/v1/subjects/{sid}/programs",
        "/api/v1/leave-requests",
        "/api/v1/sanctions",
        f"/api/v1/elocation-orders/{run['order_id']}",
        f"/api/v1/transfers/{run['transfer_id']}",
        f"/api/v1/subjects/{sid}/obligations?from=2026-11-01&to=2026-11-30",
        f"/api/v1/subjects/{sid}/access-log",
    ):
        answer = await fetch(path, token=token)
        assert answer.status == 200, (path, answer.body)
        texts.add(answer.body.decode("utf-8"))
    seen = "\n".join(texts)
    expected = set(run["canaries"].issued) - {
        # Answered elsewhere (visits) or not listed for the county (the person's own answers).
        marker
        for marker, label in run["canaries"].issued.items()
        if label in {"visit note", "worker visit note"}
    }
    missing = {run["canaries"].issued[m] for m in expected if m not in seen}
    assert missing == set()


async def run_newer_paths(fetch, tree, make_staff, clock) -> Canaries:
    """The free texts added since the first walk: an absence's note, hours' place and
    confirmer, a referral outcome's institution and reason, a prison's name, the risk change
    reason, and 阳光之家 referral notes, reasons and outcomes."""
    canary = Canaries()
    clock.set(local(2026, 11, 10, 9, 0))
    officer = await make_staff(Role.STATION_OFFICER, tree.station)
    county = await make_staff(Role.COUNTY_OFFICER, tree.county)
    health = await make_staff(Role.HEALTH_WORKER, tree.county)
    worker = await make_staff(Role.SOCIAL_WORKER, tree.station)

    async def call(path: str, body: dict[str, Any] | None, account, status: int = 200) -> Any:
        method = "GET" if body is None else "POST"
        answer = await fetch(
            path, method, json_body=body, token=await make_staff.token_for(account)
        )
        assert answer.status == status, (path, answer.body)
        return answer.json

    async def person(program: dict[str, Any] | None, opener=officer) -> str:
        created = await call("/api/v1/subjects", subject_body(tree.station.id), officer, 201)
        if program is not None:
            await call(f"/api/v1/subjects/{created['id']}/programs", program, opener, 201)
        return created["id"]

    # An unauthorised absence from 社区戒毒.
    detox = await person(
        {"type": "drug_rehab", "start_date": "2026-01-10", "mode": "community_detox"}
    )
    absence = await call(
        f"/api/v1/subjects/{detox}/absences",
        {
            "from_date": "2026-02-01",
            "to_date": "2026-02-02",
            "discovered_via": "visit",
            "note": canary("absence note"),
        },
        officer,
        201,
    )
    assert absence["absence"]["note"].startswith("金丝雀")  # read back in the clear

    # Hours of 教育学习 in a corrections case past its strict months.
    corrections = await person(
        {**CORRECTIONS, "start_date": "2026-03-02", "end_date": "2027-03-01"}
    )
    month = await call(
        f"/api/v1/subjects/{corrections}/obligations?from=2026-11-02&to=2026-11-30&kind=education",
        None,
        officer,
    )
    occurrence = next(o for o in month["items"] if o["id"])
    hours = await call(
        f"/api/v1/obligations/{occurrence['id']}/hours",
        {
            "on": "2026-11-05",
            "hours": 4,
            "place": canary("hours place"),
            "confirmed_by": canary("hours confirmer"),
        },
        officer,
    )
    assert hours["hours_entries"][0]["place"].startswith("金丝雀")  # read back in the clear

    # Risk changes across level 3, each with its reason, and both kinds of referral outcome.
    patient = await person(
        {
            "type": "mental_health",
            "start_date": "2026-11-09",
            "diagnosis": "精神分裂症",
            "risk_level": 1,
            "guardian": {"name": "家属", "phone": "13900000000", "relation": "母亲"},
        },
        opener=health,
    )
    programs = await call(f"/api/v1/subjects/{patient}/programs", None, health)
    mental = programs["items"][0]["id"]

    async def risk(level: int, label: str) -> None:
        await call(
            f"/api/v1/programs/{mental}/risk",
            {"level": level, "on": "2026-11-10", "reason": canary(label)},
            health,
        )

    async def open_referral() -> str:
        tasks = await call(f"/api/v1/subjects/{patient}/psychiatric-referrals", None, health)
        return next(t["id"] for t in tasks["items"] if t["status"] == "open")

    await risk(3, "risk reason up")
    await call(
        f"/api/v1/psychiatric-referrals/{await open_referral()}/outcome",
        {
            "referred": True,
            "institution": canary("referral institution"),
            "referred_on": "2026-11-10",
        },
        health,
    )
    await risk(2, "risk reason down")
    await risk(4, "risk reason up again")
    refused = await call(
        f"/api/v1/psychiatric-referrals/{await open_referral()}/outcome",
        {"referred": False, "reason": canary("not referred reason")},
        health,
    )
    assert refused["reason"].startswith("金丝雀")

    # A prison's release notice.
    released = await person(None)
    notice = await call(
        f"/api/v1/subjects/{released}/release-notices",
        {
            "release_date": "2026-12-10",
            "received_on": "2026-11-10",
            "prison": canary("prison name"),
        },
        officer,
        201,
    )
    assert notice["details"]["prison"].startswith("金丝雀")

    # 阳光之家: a referral with a note, declined with a reason, an outcome with a note.
    assigned = await fetch(
        f"/api/v1/subjects/{corrections}/assignments",
        "PUT",
        json_body={"social_worker_ids": [worker.id]},
        token=await make_staff.token_for(officer),
    )
    assert assigned.status == 200, assigned.body
    home = await call(
        "/api/v1/assistance/facilities",
        {
            "name": "鹿城阳光之家",
            "kind": "sunshine_home",
            "org_id": tree.county.id,
            "capacity": 2,
        },
        county,
        201,
    )
    referral = await call(
        "/api/v1/assistance/referrals",
        {"subject_id": corrections, "needs": ["housing"], "note": canary("referral note")},
        worker,
        201,
    )
    path = f"/api/v1/assistance/referrals/{referral['id']}"
    await call(f"{path}/transition", {"to": "approved"}, officer)
    await call(f"{path}/transition", {"to": "offered", "resource_id": home["id"]}, worker)
    await call(
        f"{path}/transition", {"to": "declined", "reason": canary("referral decline")}, worker
    )
    outcome = await call(
        f"{path}/outcome",
        {
            "kind": "job_found",
            "employer": canary("outcome employer"),
            "start_date": "2026-12-01",
            "note": canary("outcome note"),
        },
        worker,
    )
    assert outcome["outcome"]["note"].startswith("金丝雀")
    return canary


async def test_newer_free_texts_rest_sealed_too(api, fetch, store, tree, make_staff, clock):
    canaries = await run_newer_paths(fetch, tree, make_staff, clock)
    assert len(canaries.issued) == 13
    found = await leaks(store, canaries)
    assert found == {}, f"free text in plaintext: {found}"

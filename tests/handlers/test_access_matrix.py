"""Every route x every role x in-scope / out-of-scope, checked against the running server.

The expected outcome of each case comes from the policy table, not from the test: a role the
table does not name gets 403, an allowed role gets success in scope and 404 outside it, and an
anonymous caller gets 401. A route added without a case here fails the first test.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId

from models import totp
from models.approvals import LEVEL_OF_ROLE, Level
from models.assistance import ReferralStatus, ResourceKind
from models.audit import AuditContext
from models.checkins import CheckinInput
from models.clock import LOCAL_TZ
from models.elocation import Ground
from models.identity import Identity
from models.identity_numbers import IdType
from models.orgs import Org, OrgKind
from models.policy import PUBLIC, SELF, VISIBLE_FIELDS, MpRole, Policy, Role
from models.reports import SIGNING_LEVEL, UNIT_KIND
from models.sanctions import SanctionKind
from models.subjects import SUBJECT_ORG_KINDS, SubjectInput
from server.app import SYSTEM, Services, all_routes
from tests.conftest import Account, StaffFactory, Tree
from tests.subject_factories import resident_id, subject_body

# The role a node of each kind naturally holds, for targets created in a given node.
ROLE_FOR_KIND = {
    OrgKind.CITY: Role.CITY_OFFICER,
    OrgKind.COUNTY: Role.COUNTY_OFFICER,
    OrgKind.STATION: Role.STATION_OFFICER,
    OrgKind.COMMUNITY: Role.GRID_WORKER,
    OrgKind.GRID: Role.GRID_WORKER,
}
CHILD_KIND = {
    OrgKind.CITY: OrgKind.COUNTY,
    OrgKind.COUNTY: OrgKind.STATION,
    OrgKind.STATION: OrgKind.COMMUNITY,
    OrgKind.COMMUNITY: OrgKind.GRID,
}


@dataclass
class Request:
    path: str
    json_body: Any = None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Env:
    tree: Tree
    make_staff: StaffFactory
    caller: Account
    # Helper accounts (deciders, signers, successors) by (role, org, agency head), shared by
    # every case of a run: making an account hashes a password, the matrix's main cost.
    helpers: dict[tuple[Role, str, bool], Account] = field(default_factory=dict)
    # Nodes a builder adds, by name, likewise shared: a county's report is signed only once
    # every station below it has signed, so each extra station is a report to make and sign.
    orgs: dict[str, Org] = field(default_factory=dict)

    async def helper(self, role: Role, org: Org, *, is_agency_head: bool = False) -> Account:
        """An account that takes a step a builder needs and is not itself changed by it."""
        key = (role, org.id, is_agency_head)
        if key not in self.helpers:
            self.helpers[key] = await self.make_staff(role, org, is_agency_head=is_agency_head)
        return self.helpers[key]

    def node(self, in_scope: bool) -> Org:
        """A node in the caller's subtree (its own), or the same kind of node elsewhere."""
        if in_scope:
            return self.caller.org
        return self.tree.home_for(self.caller.role, other=True)

    async def target_staff(self, in_scope: bool, *, changed: bool = True) -> Account:
        """A staff member to act on: a fresh one when the route changes it."""
        node = self.node(in_scope)
        if changed:
            return await self.make_staff(ROLE_FOR_KIND[node.kind], node)
        return await self.helper(ROLE_FOR_KIND[node.kind], node)


Builder = Callable[[Env, bool], Awaitable[Request]]


def code() -> str:
    return "T" + uuid.uuid4().hex[:12]


async def new_org(env: Env, in_scope: bool) -> Request:
    parent = env.node(in_scope)
    return Request(
        "/api/v1/orgs",
        {
            "name": "新节点",
            "code": code(),
            "kind": str(CHILD_KIND[parent.kind]),
            "parent_id": parent.id,
        },
    )


async def new_staff(env: Env, in_scope: bool) -> Request:
    node = env.node(in_scope)
    return Request(
        "/api/v1/staff",
        {
            "username": "u" + uuid.uuid4().hex[:10],
            "password": "Matrix-pass-2026",
            "name": "新人",
            "role": str(ROLE_FOR_KIND[node.kind]),
            "org_id": node.id,
        },
    )


async def import_staff(env: Env, in_scope: bool) -> Request:
    node = env.node(in_scope)
    text = (
        "username,name,role,org_code,is_agency_head\n"
        f"u{uuid.uuid4().hex[:10]},导入,{ROLE_FOR_KIND[node.kind]},{node.code},0\n"
    )
    return Request("/api/v1/staff/import", body=text.encode(), headers={"Content-Type": "text/csv"})


def on_staff(suffix: str, body: Callable[[Env, bool], Any] | None = None) -> Builder:
    async def build(env: Env, in_scope: bool) -> Request:
        target = await env.target_staff(in_scope, changed=bool(suffix))
        return Request(f"/api/v1/staff/{target.id}{suffix}", body(env, in_scope) if body else None)

    return build


async def one_org(env: Env, in_scope: bool) -> Request:
    return Request(f"/api/v1/orgs/{env.node(in_scope).id}")


def plain(path: str, json_body: Any = None) -> Builder:
    async def build(env: Env, in_scope: bool) -> Request:
        return Request(path, json_body)

    return build


async def change_password(env: Env, in_scope: bool) -> Request:
    return Request(
        "/api/v1/me/password",
        {"current_password": env.caller.password, "new_password": "Changed-pass-2026"},
    )


async def confirm_totp(env: Env, in_scope: bool) -> Request:
    secret, _ = await env.make_staff.services.staff.begin_totp(env.caller.identity)
    clock_now = env.make_staff.services.staff._clock.now()
    return Request("/api/v1/me/totp/confirm", {"code": totp.code_at(secret, clock_now)})


def subject_home(env: Env, in_scope: bool) -> Org:
    """Where a case file in (or out of) the caller's scope is filed."""
    if not in_scope:
        return env.tree.other_station
    return env.caller.org if env.caller.org.kind in SUBJECT_ORG_KINDS else env.tree.station


async def target_subject(env: Env, in_scope: bool) -> str:
    """A case file the caller reaches in scope: filed in its subtree, assigned to it, a
    mental-health case, referred to its node (whatever its role's scope asks); or one it
    does not reach."""
    sid = await file_at(env, subject_home(env, in_scope))
    if in_scope:
        await mark_in_scope(env, sid)
    return sid


async def file_at(env: Env, org: Org) -> str:
    """A case file filed at `org`, assigned to nobody."""
    birth = dt.date(1988, 8, 8)
    view = await env.make_staff.services.subjects.create(
        SYSTEM,
        SubjectInput(
            name="矩阵",
            id_type=IdType.RESIDENT,
            id_number=resident_id(birth, "male"),
            phone="13800138000",
            gender="male",
            birth_date=birth,
            address="测试路 1 号",
            org_id=org.id,
        ),
    )
    return view.id


async def mark_in_scope(env: Env, subject_id: str) -> None:
    await env.make_staff.services.subjects._subjects.update_one(
        {"_id": ObjectId(subject_id)},
        {
            "$set": {
                "assignments.social_worker_ids": [env.caller.id],
                "assignments.grid_worker_ids": [env.caller.id],
                "populations": ["mental_health", "community_corrections"],
                "referred_to_org_ids": [env.caller.org.id],
            }
        },
    )


MENTAL_HEALTH = {
    "type": "mental_health",
    "start_date": "2026-01-05",
    "diagnosis": "诊断",
    "risk_level": 1,
    "guardian": {"name": "家属", "phone": "13900000000", "relation": "母亲"},
}
CORRECTIONS = {
    "type": "community_corrections",
    "start_date": "2026-02-09",
    "end_date": "2027-02-08",
    "sentence_type": "probation",
}


def on_program(kind: dict[str, Any], suffix: str, body: Any = None) -> Builder:
    async def build(env: Env, in_scope: bool) -> Request:
        sid = await target_subject(env, in_scope)
        program = await env.make_staff.services.programs.create(SYSTEM, sid, dict(kind))
        if in_scope:
            await mark_in_scope(env, sid)  # opening the program reset its populations
        return Request(f"/api/v1/programs/{program.id}{suffix}", body)

    return build


def on_investigation(stage: str, suffix: str, body: Any = None) -> Builder:
    """An investigation of a case file in (or out of) scope, taken to `stage` beforehand."""

    async def build(env: Env, in_scope: bool) -> Request:
        sid = await target_subject(env, in_scope)
        investigations = env.make_staff.services.investigations
        view = await investigations.request(
            SYSTEM, subject_id=sid, court="法院", requested_on=dt.date(2026, 9, 18), expedited=False
        )
        station = subject_home(env, in_scope)
        station = station if station.kind is OrgKind.STATION else env.tree.station
        if stage in ("assigned", "reported"):
            await investigations.assign(SYSTEM, view.id, station.id)
        if stage == "reported":
            await investigations.report(SYSTEM, view.id, "suitable", "意见", dt.date(2026, 10, 9))
        payload = body(env, in_scope) if callable(body) else body
        return Request(f"/api/v1/investigations/{view.id}{suffix}", payload)

    return build


def on_occurrence(suffix: str, body: Any) -> Builder:
    async def build(env: Env, in_scope: bool) -> Request:
        # A report window already open: an hours month is done by its hours, not by a word.
        first = await one_occurrence(env, in_scope)
        obligations = env.make_staff.services.obligations
        subject_id = (await obligations._occurrences.find_one({"_id": first.path.split("/")[4]}))[
            "subject_id"
        ]
        report = await obligations._occurrences.find_one(
            {
                "subject_id": subject_id,
                "kind": "in_person_report",
                "window_start": {"$lte": obligations._clock.now()},
            }
        )
        return Request(f"/api/v1/obligations/{report['_id']}{suffix}", body)

    return build


async def one_occurrence(env: Env, in_scope: bool) -> Request:
    """An obligation of a case in (or out of) scope, from a program that was just planned."""
    sid = await target_subject(env, in_scope)
    services = env.make_staff.services
    await services.programs.create(SYSTEM, sid, dict(CORRECTIONS))
    if in_scope:
        await mark_in_scope(env, sid)
    occurrence = await services.obligations._occurrences.find_one({"subject_id": sid})
    return Request(f"/api/v1/obligations/{occurrence['_id']}/excuse", {"reason": "住院治疗"})


async def hours_today(env: Env, in_scope: bool) -> Request:
    """An hour of education done today, in the education month now running of such a case."""
    first = await one_occurrence(env, in_scope)
    obligations = env.make_staff.services.obligations
    now = obligations._clock.now()
    subject_id = (await obligations._occurrences.find_one({"_id": first.path.split("/")[4]}))[
        "subject_id"
    ]
    month = await obligations._occurrences.find_one(
        {
            "subject_id": subject_id,
            "kind": "education",
            "window_start": {"$lte": now},
            "window_end": {"$gt": now},
        }
    )
    body = {
        "on": now.astimezone(LOCAL_TZ).date().isoformat(),
        "hours": 1,
        "place": "社区",
        "confirmed_by": "李主任",
    }
    return Request(f"/api/v1/obligations/{month['_id']}/hours", body)


async def drug_rehab_absence(env: Env, in_scope: bool) -> Request:
    """An absence of a person in drug rehabilitation, in (or out of) scope, within the term."""
    sid = await target_subject(env, in_scope)
    services = env.make_staff.services
    day = services.absences.today()
    program = {
        "type": "drug_rehab",
        "start_date": (day - dt.timedelta(days=30)).isoformat(),
        "mode": "community_detox",
    }
    await services.programs.create(SYSTEM, sid, program)
    if in_scope:
        await mark_in_scope(env, sid)
    away = (day - dt.timedelta(days=10)).isoformat()
    return Request(
        f"/api/v1/subjects/{sid}/absences",
        {"from_date": away, "to_date": away, "discovered_via": "visit"},
    )


async def open_referral(env: Env, in_scope: bool) -> Request:
    """The 转诊 task a patient opened at risk level 3 brings, and its outcome: not referred."""
    sid = await target_subject(env, in_scope)
    high = {**MENTAL_HEALTH, "risk_level": 3}
    program = await env.make_staff.services.programs.create(SYSTEM, sid, high)
    if in_scope:
        await mark_in_scope(env, sid)
    return Request(
        f"/api/v1/psychiatric-referrals/{program.id}:risk0/outcome",
        {"referred": False, "reason": "已在精神专科医院住院"},
    )


async def counseling_booking(env: Env, in_scope: bool) -> Request:
    sid = await target_subject(env, in_scope)
    counselor = await env.make_staff(
        Role.SOCIAL_WORKER,
        env.caller.org if env.caller.org.kind is OrgKind.STATION else env.tree.station,
    )
    start = env.make_staff.services.counseling._clock.now() + dt.timedelta(days=2)
    start = start.replace(minute=0, second=0, microsecond=0)
    return Request(
        f"/api/v1/subjects/{sid}/counseling",
        {
            "counselor_id": counselor.id,
            "start": start.isoformat(),
            "end": (start + dt.timedelta(hours=1)).isoformat(),
        },
    )


async def counseling_availability(env: Env, in_scope: bool) -> Request:
    sid = await target_subject(env, in_scope)
    return Request(f"/api/v1/counseling/availability?subject_id={sid}&date=2030-01-02")


def on_session(suffix: str, body: Any = None) -> Builder:
    async def build(env: Env, in_scope: bool) -> Request:
        sid = await target_subject(env, in_scope)
        services = env.make_staff.services
        counselor = await env.make_staff(Role.SOCIAL_WORKER, env.tree.station)
        start = services.counseling._clock.now() + dt.timedelta(days=3)
        start = start.replace(minute=0, second=0, microsecond=0)
        session = await services.counseling.book(
            SYSTEM,
            sid,
            counselor_id=counselor.id,
            start=start,
            end=start + dt.timedelta(hours=1),
            room=None,
            facility_id=None,
        )
        return Request(f"/api/v1/counseling/{session.id}{suffix}", body)

    return build


async def hand_over(env: Env, in_scope: bool) -> Request:
    home = env.tree.station if in_scope else env.tree.other_station
    leaving = await env.make_staff(Role.SOCIAL_WORKER, home)
    successor = await env.helper(Role.SOCIAL_WORKER, env.tree.station)
    return Request(f"/api/v1/staff/{leaving.id}/handover", {"to_worker_ids": [successor.id]})


def county_only(role: Role) -> int:
    """Assignment is the county's act: a station does not see an unassigned request."""
    return 200 if role is Role.COUNTY_OFFICER else 404


async def own_jurisdiction(env: Env, in_scope: bool) -> Request:
    code = env.caller.org.code if in_scope else env.tree.other_county.code
    return Request(f"/api/v1/rules/{code}", {"rules": {}, "source": "matrix test"})


async def retention_proposal(env: Env, in_scope: bool) -> Request:
    code = env.caller.org.code if in_scope else env.tree.other_county.code
    return Request(
        f"/api/v1/rules/{code}/proposals",
        {"rules": {"retention.shred_after_years": 30}, "source": "matrix test"},
    )


async def proposal_decision(env: Env, in_scope: bool) -> Request:
    """A county's proposal, filed by someone else (the caller never confirms its own)."""
    code = env.tree.county.code if in_scope else env.tree.other_county.code
    proposal = await env.make_staff.services.rules.propose(
        SYSTEM, code, {"retention.shred_after_years": 30}, "matrix test"
    )
    return Request(f"/api/v1/rule-proposals/{proposal['id']}/decision", {"confirm": False})


def on_subject(suffix: str, body: Callable[[Env, bool], Any] | None = None) -> Builder:
    async def build(env: Env, in_scope: bool) -> Request:
        sid = await target_subject(env, in_scope)
        return Request(f"/api/v1/subjects/{sid}{suffix}", body(env, in_scope) if body else None)

    return build


def on_subject_body(path: str, body: Callable[[str], Any]) -> Builder:
    async def build(env: Env, in_scope: bool) -> Request:
        return Request(path, body(await target_subject(env, in_scope)))

    return build


async def assessed_needs(env: Env, in_scope: bool) -> Request:
    """A file whose needs were assessed (none assessed answers 404 even in scope)."""
    sid = await target_subject(env, in_scope)
    await env.make_staff.services.assistance.assess_needs(SYSTEM, sid, {"housing": True})
    return Request(f"/api/v1/subjects/{sid}/needs")


async def new_subject(env: Env, in_scope: bool) -> Request:
    return Request("/api/v1/subjects", subject_body(subject_home(env, in_scope).id))


async def import_subjects(env: Env, in_scope: bool) -> Request:
    org = subject_home(env, in_scope)
    birth = dt.date(1979, 9, 9)
    text = (
        "name,id_type,id_number,phone,gender,birth_date,address,org_code\n"
        f"导入,resident,{resident_id(birth, 'female')},13700000009,female,1979-09-09,"
        f"测试路 2 号,{org.code}\n"
    )
    return Request(
        "/api/v1/subjects/import", body=text.encode(), headers={"Content-Type": "text/csv"}
    )


async def one_alert(env: Env, in_scope: bool) -> Request:
    node = env.node(in_scope)
    alert_id = await env.make_staff.services.alerts.raise_alert(
        kind="test", org_id=node.id, org_path=node.path
    )
    return Request(f"/api/v1/alerts/{alert_id}/ack")


JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 200


async def with_photo(env: Env, in_scope: bool) -> Request:
    sid = await target_subject(env, in_scope)
    subjects = env.make_staff.services.subjects
    writer = await subjects.begin_photo(SYSTEM, sid, "image/jpeg", 1 << 20)
    await writer.write(JPEG)
    await subjects.finish_photo(SYSTEM, writer)
    return Request(f"/api/v1/subjects/{sid}/photo")


async def put_photo(env: Env, in_scope: bool) -> Request:
    sid = await target_subject(env, in_scope)
    return Request(
        f"/api/v1/subjects/{sid}/photo", body=JPEG, headers={"Content-Type": "image/jpeg"}
    )


def photo_visible(role: Role) -> int:
    """Photos go with the identity number: roles that see one see the other."""
    return 200 if "id_number" in VISIBLE_FIELDS.get(role, frozenset()) else 404


async def corrections_subject(env: Env, in_scope: bool) -> str:
    """A case file (in or out of scope) with an open community-corrections program."""
    sid = await target_subject(env, in_scope)
    await env.make_staff.services.programs.create(SYSTEM, sid, dict(CORRECTIONS))
    if in_scope:
        await mark_in_scope(env, sid)  # opening the program reset its populations
    return sid


def as_account(account: Account) -> AuditContext:
    return AuditContext(account.identity, request_id="matrix")


async def officers_before(env: Env, in_scope: bool, levels: tuple[Level, ...]) -> list[Account]:
    """Officers at the subject's station and county (in or out of scope) for `levels`."""
    tree = env.tree
    node = {
        Level.STATION: tree.station if in_scope else tree.other_station,
        Level.COUNTY: tree.county if in_scope else tree.other_county,
        Level.CITY: tree.city if in_scope else tree.other_city,
    }
    role = {v: k for k, v in LEVEL_OF_ROLE.items()}
    return [await env.helper(Role(role[level]), node[level]) for level in levels]


def caller_level(env: Env) -> Level:
    return LEVEL_OF_ROLE.get(str(env.caller.role), Level.STATION)


LEAVE_DAYS_FOR = {Level.STATION: 3, Level.COUNTY: 10, Level.CITY: 40}
ORDER = (Level.STATION, Level.COUNTY, Level.CITY)


async def leave_at_callers_step(env: Env, in_scope: bool) -> Request:
    """A leave request whose next step is the caller's level: the levels below have approved."""
    sid = await corrections_subject(env, in_scope)
    leave = env.make_staff.services.leave
    level = caller_level(env)
    start = dt.date(2026, 12, 1)
    view = await leave.request(
        SYSTEM,
        sid,
        start=start,
        end=start + dt.timedelta(days=LEAVE_DAYS_FOR[level] - 1),
        destination="杭州",
        reason="探亲",
    )
    before = ORDER[: ORDER.index(level)]
    for officer in await officers_before(env, in_scope, before):
        await leave.decide(as_account(officer), view.id, True, "同意")
    return Request(f"/api/v1/leave-requests/{view.id}/decision", {"approve": True})


async def granted_leave(env: Env, in_scope: bool) -> Request:
    sid = await corrections_subject(env, in_scope)
    leave = env.make_staff.services.leave
    start = leave.today() - dt.timedelta(days=10)
    view = await leave.request(
        SYSTEM,
        sid,
        start=start,
        end=start + dt.timedelta(days=2),
        destination="杭州",
        reason="探亲",
    )
    (station,) = await officers_before(env, in_scope, (Level.STATION,))
    await leave.decide(as_account(station), view.id, True, "同意")
    return Request(
        f"/api/v1/leave-requests/{view.id}/return",
        {"date": (start + dt.timedelta(days=2)).isoformat()},
    )


def on_corrections_subject(suffix: str, body: Any) -> Builder:
    async def build(env: Env, in_scope: bool) -> Request:
        sid = await corrections_subject(env, in_scope)
        return Request(f"/api/v1/subjects/{sid}{suffix}", body(env) if callable(body) else body)

    return build


async def sanction_at_callers_step(env: Env, in_scope: bool) -> Request:
    sid = await corrections_subject(env, in_scope)
    sanctions = env.make_staff.services.sanctions
    view = await sanctions.propose(SYSTEM, sid, SanctionKind.ADMONISH, "未按时报到")
    level = caller_level(env)
    if level is Level.COUNTY:
        for officer in await officers_before(env, in_scope, (Level.STATION,)):
            await sanctions.decide(as_account(officer), view.id, True, "查实")
    return Request(f"/api/v1/sanctions/{view.id}/decision", {"approve": True})


def station_and_county_decide(role: Role) -> int:
    """The national chain for a 训诫 is station > county: a city officer has no step in it."""
    return 403 if role is Role.CITY_OFFICER else 200


ORDER_BODY = {
    "ground": "left_without_approval",
    "start_date": "2026-12-01",
    "end_date": "2027-02-28",
    "reason": "未经批准离开所居住的县",
}


async def new_order(env: Env, in_scope: bool, *, approved: bool = False) -> str:
    sid = await corrections_subject(env, in_scope)
    services = env.make_staff.services
    view = await services.elocation.order(
        SYSTEM,
        sid,
        ground=Ground.LEFT_WITHOUT_APPROVAL,
        start=dt.date(2026, 12, 1),
        end=dt.date(2027, 2, 28),
        reason="未经批准离开所居住的县",
    )
    if approved:
        county = env.tree.county if in_scope else env.tree.other_county
        head = await env.helper(Role.COUNTY_OFFICER, county, is_agency_head=True)
        await services.elocation.decide(as_account(head), view.id, True, "批准")
    return view.id


def on_order(suffix: str, body: Any = None, *, approved: bool = False) -> Builder:
    async def build(env: Env, in_scope: bool) -> Request:
        order_id = await new_order(env, in_scope, approved=approved)
        if env.caller.role is Role.COUNTY_OFFICER:
            # The decision is the agency head's: the calling county officer is made the head.
            await env.make_staff.services.staff._staff.update_one(
                {"_id": ObjectId(env.caller.id)}, {"$set": {"is_agency_head": True}}
            )
        return Request(f"/api/v1/elocation-orders/{order_id}{suffix}", body)

    return build


async def station_elsewhere(env: Env) -> Org:
    """A second station in the other county, so a transfer can lie wholly out of scope."""
    if "station_elsewhere" not in env.orgs:
        env.orgs["station_elsewhere"] = await env.make_staff.services.orgs.create(
            SYSTEM,
            name="另一司法所",
            code=code(),
            kind=OrgKind.STATION,
            parent_id=env.tree.other_county.id,
        )
    return env.orgs["station_elsewhere"]


def on_transfer(stage: str, suffix: str, body: Any) -> Builder:
    """A transfer taken to `stage` with the caller on the side that acts next: receiving for
    `requested` and `handed_over`, sending for `accepted`. Out of scope: both sides elsewhere."""

    async def build(env: Env, in_scope: bool) -> Request:
        services = env.make_staff.services
        home = env.tree.station
        if in_scope:
            near, far = home, env.tree.station2
        else:
            near, far = env.tree.other_station, await station_elsewhere(env)
        sending, receiving = (near, far) if stage == "accepted" else (far, near)
        sid = await corrections_subject(env, in_scope)
        await services.subjects._subjects.update_one(
            {"_id": ObjectId(sid)},
            {"$set": {"org_id": ObjectId(sending.id), "org_path": list(sending.path)}},
        )
        transfers = services.transfers
        view = await transfers.request(SYSTEM, sid, receiving.id, "迁居")
        if stage in ("accepted", "handed_over"):
            await transfers.decide(SYSTEM, view.id, True, "同意接收")
        if stage == "handed_over":
            await transfers.hand_over(SYSTEM, view.id, transfers.today())
        payload = body(services) if callable(body) else body
        return Request(f"/api/v1/transfers/{view.id}{suffix}", payload)

    return build


def today_body(services: Services) -> dict[str, str]:
    return {"date": services.transfers.today().isoformat()}


async def flagged_checkin(env: Env, in_scope: bool) -> Request:
    """A check-in held for review (its location too imprecise), of a case in or out of scope."""
    sid = await target_subject(env, in_scope)
    services = env.make_staff.services
    await services.programs.create(SYSTEM, sid, dict(CORRECTIONS))
    doc = await services.subjects.document(sid)
    assert doc is not None
    person = Identity(
        user_id="wx-matrix",
        role=str(MpRole.SUBJECT),
        org_id=str(doc["org_id"]),
        org_path=tuple(doc["org_path"]),
        channel="mp",
        subject_id=sid,
    )
    answer = await services.checkins.record(
        AuditContext(person, "matrix-checkin"),
        uuid.uuid4().hex,
        CheckinInput(
            lat=28.0,
            lng=120.6,
            coord_type="wgs84",
            accuracy=900,
            captured_at=services.checkins._clock.now(),
        ),
    )
    return Request(f"/api/v1/checkins/{answer.id}/review", {"accept": True, "comment": "已核实"})


async def checkin_photo(env: Env, in_scope: bool) -> Request:
    """A check-in of a case in or out of scope, with a stored photo."""
    review = await flagged_checkin(env, in_scope)
    checkin_id = review.path.split("/")[-2]
    services = env.make_staff.services
    doc = await services.checkins._checkins.find_one({"_id": checkin_id})
    writer = await services.subjects.begin_photo(SYSTEM, doc["subject_id"], "image/jpeg", 1 << 20)
    await writer.write(JPEG)
    info = await writer.finish()
    await services.checkins._checkins.update_one(
        {"_id": checkin_id}, {"$set": {"photo_id": info.id}}
    )
    return Request(f"/api/v1/checkins/{checkin_id}/photo")


async def checkin_detail(env: Env, in_scope: bool) -> Request:
    """One flagged check-in, read whole (the console's review)."""
    review = await flagged_checkin(env, in_scope)
    return Request(review.path.removesuffix("/review"))


# Photos answer a refused role 404, as if absent: a 403 would say the photo exists.
CONCEALED = {
    ("/api/v1/subjects/(?P<subject_id>[^/]+)/photo", "GET"),
    ("/api/v1/checkins/(?P<checkin_id>[^/]+)/photo", "GET"),
}


async def org_area(env: Env, in_scope: bool) -> Request:
    return Request(
        f"/api/v1/orgs/{env.node(in_scope).id}/area", {"center": [28.0, 120.6], "radius_m": 3000}
    )


def county_of(env: Env, in_scope: bool) -> Org:
    """Where the assistance resources in (or out of) the caller's scope are kept: a county's
    resources are reached by its stations below and its city above."""
    return env.tree.county if in_scope else env.tree.other_county


async def county_officer(env: Env, in_scope: bool) -> AuditContext:
    """A county officer of the county in (or out of) scope, to take the steps a builder needs
    (the SYSTEM context holds no role the workflow's steps admit)."""
    return as_account(await env.helper(Role.COUNTY_OFFICER, county_of(env, in_scope)))


def today(env: Env) -> dt.date:
    return env.make_staff.services.assistance._clock.now().astimezone(LOCAL_TZ).date()


async def new_resource(
    env: Env,
    in_scope: bool,
    kind: ResourceKind = ResourceKind.SUNSHINE_HOME,
    *,
    org: Org | None = None,
) -> str:
    """A resource of the county in (or out of) scope: the calling coordinator coordinates the
    one in scope, and not the one outside."""
    view = await env.make_staff.services.assistance.add_resource(
        SYSTEM,
        kind=kind,
        name="矩阵资源",
        org_id=(org or county_of(env, in_scope)).id,
        capacity=5,
        hours_credit=2.0 if kind is ResourceKind.COURSE else None,
        coordinator_ids=[env.caller.id] if in_scope else [],
    )
    return view.id


def resource_body(path: str, body: dict[str, Any]) -> Builder:
    async def build(env: Env, in_scope: bool) -> Request:
        return Request(path, {**body, "org_id": county_of(env, in_scope).id})

    return build


def on_resource(
    prefix: str, suffix: str = "", body: Any = None, kind: ResourceKind = ResourceKind.SUNSHINE_HOME
) -> Builder:
    async def build(env: Env, in_scope: bool) -> Request:
        resource_id = await new_resource(env, in_scope, kind)
        return Request(f"/api/v1/assistance/{prefix}/{resource_id}{suffix}", body)

    return build


async def new_referral(
    env: Env,
    in_scope: bool,
    stage: str,
    kind: ResourceKind = ResourceKind.SUNSHINE_HOME,
    *,
    subject_id: str | None = None,
    resource_id: str | None = None,
) -> tuple[str, str]:
    """A referral of a case file in (or out of) scope to a resource of that county, taken to
    `stage` (requested, offered or placed) by the county's officer: (referral, resource)."""
    sid = subject_id or await target_subject(env, in_scope)
    resource_id = resource_id or await new_resource(env, in_scope, kind)
    assistance = env.make_staff.services.assistance
    view = await assistance.refer(SYSTEM, sid, ["housing"], "", resource_id)
    if stage in ("offered", "placed"):
        officer = await county_officer(env, in_scope)
        await assistance.transition(officer, view.id, ReferralStatus.APPROVED, None)
        await assistance.transition(officer, view.id, ReferralStatus.OFFERED, None)
        if stage == "placed":
            await assistance.place(officer, view.id, resource_id)
    return view.id, resource_id


def on_referral(suffix: str, body: Any = None) -> Builder:
    async def build(env: Env, in_scope: bool) -> Request:
        referral_id, _ = await new_referral(env, in_scope, "requested")
        return Request(f"/api/v1/assistance/referrals/{referral_id}{suffix}", body)

    return build


async def offered_referral(env: Env, in_scope: bool) -> Request:
    referral_id, resource_id = await new_referral(env, in_scope, "offered")
    return Request(
        "/api/v1/assistance/placements", {"referral_id": referral_id, "resource_id": resource_id}
    )


def on_placement(suffix: str, body: Callable[[Env], Any]) -> Builder:
    async def build(env: Env, in_scope: bool) -> Request:
        referral_id, resource_id = await new_referral(env, in_scope, "placed")
        placement_id = f"{resource_id}:{referral_id}"
        return Request(f"/api/v1/assistance/placements/{placement_id}{suffix}", body(env))

    return build


async def course_attendance(env: Env, in_scope: bool) -> Request:
    """Hours at a course for a person enrolled in it. Out of scope: a person the caller does
    not reach, enrolled in a course of its own county (a sibling station's file) where the
    caller sits below the county; else a course and a person of the other county."""
    if in_scope or env.caller.org.kind is OrgKind.COUNTY or env.caller.org.kind is OrgKind.CITY:
        sid = await target_subject(env, in_scope)
        _, course_id = await new_referral(
            env, in_scope, "placed", ResourceKind.COURSE, subject_id=sid
        )
    else:
        sid = await file_at(env, env.tree.station2)
        course_id = await new_resource(env, False, ResourceKind.COURSE, org=env.tree.county)
        await new_referral(env, True, "placed", subject_id=sid, resource_id=course_id)
    return Request(
        f"/api/v1/assistance/courses/{course_id}/attendance",
        {"subject_id": sid, "on": today(env).isoformat(), "hours": 1.5},
    )


async def month_summary(env: Env, in_scope: bool) -> Request:
    return Request(f"/api/v1/assistance/summary?org_id={env.node(in_scope).id}&month=2026-06")


async def node_dashboard(env: Env, in_scope: bool) -> Request:
    return Request(f"/api/v1/dashboard?org={env.node(in_scope).id}")


async def node_signing(env: Env, in_scope: bool) -> Request:
    return Request(f"/api/v1/dashboard/signing?org={env.node(in_scope).id}")


# Monthly compliance reports cover a month that has ended by the test clock (real time at the
# start of the test, as for the assistance summary's month).
REPORT_MONTH = "2026-06"


def reporting_node(env: Env, in_scope: bool) -> Org:
    """The node whose report the caller reaches in scope: its own station, county or city; or
    the same kind of node elsewhere. A caller sitting below a station (whom the policy refuses
    before any report is looked at) gets a station's."""
    node = env.node(in_scope)
    if node.kind in SIGNING_LEVEL:
        return node
    return env.tree.station if in_scope else env.tree.other_station


async def unreported_month(env: Env, org: Org) -> str:
    """The latest ended month (from REPORT_MONTH back) with no report of `org` yet, so that a
    report is created (201) and signed afresh whatever the cases before it left behind."""
    reports = env.make_staff.services.reports
    taken = {doc["month"] async for doc in reports._reports.find({"org_id": org.id}, {"month": 1})}
    first = dt.date.fromisoformat(f"{REPORT_MONTH}-01")
    while f"{first:%Y-%m}" in taken:
        first = (first - dt.timedelta(days=1)).replace(day=1)
    return f"{first:%Y-%m}"


async def new_report(env: Env, org: Org, month: str = REPORT_MONTH) -> str:
    view, _ = await env.make_staff.services.reports.generate(SYSTEM, org.id, month)
    return view.id


async def new_report_body(env: Env, in_scope: bool) -> Request:
    org = reporting_node(env, in_scope)
    return Request(
        "/api/v1/reports/compliance", {"org_id": org.id, "month": await unreported_month(env, org)}
    )


def on_report(suffix: str) -> Builder:
    async def build(env: Env, in_scope: bool) -> Request:
        report_id = await new_report(env, reporting_node(env, in_scope))
        return Request(f"/api/v1/reports/compliance/{report_id}{suffix}")

    return build


async def sign_units_below(env: Env, org: Org, month: str) -> None:
    """Every report `org` signs after (a county's stations; a city's counties, theirs first),
    made and signed for `month` by an officer of that unit."""
    unit_kind = UNIT_KIND.get(org.kind)
    if unit_kind is None:
        return
    services = env.make_staff.services
    for unit in await services.orgs.below(org.id):
        if unit.kind is not unit_kind:
            continue
        await sign_units_below(env, unit, month)
        officer = await env.helper(ROLE_FOR_KIND[unit.kind], unit)
        report_id = await new_report(env, unit, month)
        await services.reports.sign(as_account(officer), report_id, "矩阵", resign=True)


async def report_at_callers_level(env: Env, in_scope: bool) -> Request:
    """A report of the caller's own level, never signed, whose units below have signed: the
    service admits only the officer of a report's level (else 403 wrong_level), and a county
    (city) only once its stations (counties) have signed (else 409 units_unsigned)."""
    org = reporting_node(env, in_scope)
    month = await unreported_month(env, org)
    await sign_units_below(env, org, month)
    report_id = await new_report(env, org, month)
    return Request(f"/api/v1/reports/compliance/{report_id}/sign", {"comment": "已核对"})


def approvers(role: Role) -> int:
    """A referral is approved by the station (or county): the other roles that may read it are
    refused that step by the service (STEP_ACTION), whether or not they reach the referral."""
    return 200 if role in (Role.STATION_OFFICER, Role.COUNTY_OFFICER) else 403


def approvers_outside(role: Role) -> int:
    """Out of scope: the approvers do not find it; the others are refused the step first."""
    return 404 if role in (Role.STATION_OFFICER, Role.COUNTY_OFFICER) else 403


BREAK_GLASS_REASON = {"reason": "协查：该人员在本区涉嫌违法，需核实身份"}


async def decided_admonishment(env: Env, in_scope: bool) -> str:
    """A 训诫 decided (station, then county) on a file in or out of the caller's scope."""
    sid = await corrections_subject(env, in_scope)
    sanctions = env.make_staff.services.sanctions
    view = await sanctions.propose(SYSTEM, sid, SanctionKind.ADMONISH, "未按时报到")
    for officer in await officers_before(env, in_scope, (Level.STATION, Level.COUNTY)):
        await sanctions.decide(as_account(officer), view.id, True, "查实")
    return view.id


async def document_of_decision(env: Env, in_scope: bool) -> Request:
    record_id = await decided_admonishment(env, in_scope)
    return Request("/api/v1/documents", {"kind": "admonish_decision", "record_id": record_id})


def on_document(suffix: str, body: Any = None) -> Builder:
    async def build(env: Env, in_scope: bool) -> Request:
        record_id = await decided_admonishment(env, in_scope)
        view = await env.make_staff.services.documents.make(SYSTEM, "admonish_decision", record_id)
        return Request(f"/api/v1/documents/{view.id}{suffix}", body)

    return build


# (path pattern, method) -> (builder, success status, status outside scope or None: no target);
# either status may be a function of the caller's role.
Status = int | Callable[[Role], int]
CASES: dict[tuple[str, str], tuple[Builder, Status, Status | None]] = {
    ("/api/v1/auth/logout", "POST"): (plain("/api/v1/auth/logout"), 204, None),
    ("/api/v1/me", "GET"): (plain("/api/v1/me"), 200, None),
    ("/api/v1/me/password", "POST"): (change_password, 204, None),
    ("/api/v1/me/totp", "POST"): (plain("/api/v1/me/totp"), 201, None),
    ("/api/v1/me/totp/confirm", "POST"): (confirm_totp, 204, None),
    ("/api/v1/me/binding-code", "POST"): (plain("/api/v1/me/binding-code"), 201, None),
    ("/api/v1/orgs", "POST"): (new_org, 201, 404),
    ("/api/v1/orgs", "GET"): (plain("/api/v1/orgs"), 200, None),
    ("/api/v1/orgs/(?P<org_id>[^/]+)", "GET"): (one_org, 200, 404),
    ("/api/v1/staff", "POST"): (new_staff, 201, 404),
    ("/api/v1/staff", "GET"): (plain("/api/v1/staff"), 200, None),
    # A file naming an organisation outside the caller's scope is refused as a whole.
    ("/api/v1/staff/import", "POST"): (import_staff, 201, 422),
    ("/api/v1/staff/(?P<staff_id>[^/]+)", "GET"): (on_staff(""), 200, 404),
    ("/api/v1/staff/(?P<staff_id>[^/]+)/password-reset", "POST"): (
        on_staff("/password-reset"),
        200,
        404,
    ),
    ("/api/v1/me/notices/seen", "POST"): (plain("/api/v1/me/notices/seen"), 204, None),
    ("/api/v1/staff/roles", "GET"): (plain("/api/v1/staff/roles?pending=1"), 200, None),
    ("/api/v1/staff/(?P<staff_id>[^/]+)/role", "PUT"): (
        on_staff(
            "/role", lambda env, in_scope: {"role": str(ROLE_FOR_KIND[env.node(in_scope).kind])}
        ),
        200,
        404,
    ),
    ("/api/v1/staff/(?P<staff_id>[^/]+)/disable", "POST"): (on_staff("/disable"), 200, 404),
    ("/api/v1/staff/(?P<staff_id>[^/]+)/enable", "POST"): (on_staff("/enable"), 200, 404),
    ("/api/v1/staff/(?P<staff_id>[^/]+)/move", "POST"): (
        on_staff("/move", lambda env, _in: {"org_id": env.caller.org.id}),
        200,
        404,
    ),
    ("/api/v1/policy", "GET"): (plain("/api/v1/policy"), 200, None),
    ("/api/v1/subjects", "POST"): (new_subject, 201, 404),
    ("/api/v1/subjects", "GET"): (plain("/api/v1/subjects"), 200, None),
    ("/api/v1/subjects/search", "POST"): (plain("/api/v1/subjects/search", {}), 200, None),
    ("/api/v1/subjects/import", "POST"): (import_subjects, 201, 422),
    ("/api/v1/subjects/(?P<subject_id>[^/]+)", "GET"): (on_subject(""), 200, 404),
    ("/api/v1/subjects/(?P<subject_id>[^/]+)", "PATCH"): (
        on_subject("", lambda env, _in: {"version": 1, "phone": "13900139000"}),
        200,
        404,
    ),
    ("/api/v1/subjects/(?P<subject_id>[^/]+)/assignments", "PUT"): (
        on_subject("/assignments", lambda env, _in: {}),
        200,
        404,
    ),
    ("/api/v1/subjects/(?P<subject_id>[^/]+)/notes", "GET"): (on_subject("/notes"), 200, 404),
    ("/api/v1/subjects/(?P<subject_id>[^/]+)/notes", "POST"): (
        on_subject("/notes", lambda env, _in: {"text": "走访记录"}),
        201,
        404,
    ),
    # Break-glass is for files outside the caller's scope: inside it there is nothing to open.
    ("/api/v1/subjects/(?P<subject_id>[^/]+)/break-glass", "POST"): (
        on_subject("/break-glass", lambda env, _in: BREAK_GLASS_REASON),
        409,
        201,
    ),
    ("/api/v1/subjects/(?P<subject_id>[^/]+)/access-log", "GET"): (
        on_subject("/access-log"),
        200,
        404,
    ),
    ("/api/v1/subjects/(?P<subject_id>[^/]+)/photo", "PUT"): (put_photo, 201, 404),
    ("/api/v1/subjects/(?P<subject_id>[^/]+)/photo", "GET"): (with_photo, photo_visible, 404),
    ("/api/v1/subjects/(?P<subject_id>[^/]+)/programs", "POST"): (
        on_subject("/programs", lambda env, _in: MENTAL_HEALTH),
        201,
        404,
    ),
    ("/api/v1/subjects/(?P<subject_id>[^/]+)/programs", "GET"): (on_subject("/programs"), 200, 404),
    ("/api/v1/subjects/(?P<subject_id>[^/]+)/release-notices", "POST"): (
        on_subject(
            "/release-notices",
            lambda env, _in: {
                "release_date": (dt.date.today() + dt.timedelta(days=30)).isoformat(),
                "received_on": dt.date.today().isoformat(),
                "prison": "某某监狱",
            },
        ),
        lambda role: 403 if role == Role.HEALTH_WORKER else 201,
        lambda role: 403 if role == Role.HEALTH_WORKER else 404,
    ),
    ("/api/v1/programs/(?P<program_id>[^/]+)", "GET"): (on_program(MENTAL_HEALTH, ""), 200, 404),
    ("/api/v1/programs/(?P<program_id>[^/]+)/transition", "POST"): (
        on_program(MENTAL_HEALTH, "/transition", {"to": "suspended", "reason": "住院治疗"}),
        200,
        404,
    ),
    ("/api/v1/programs/(?P<program_id>[^/]+)/intake", "POST"): (
        on_program(CORRECTIONS, "/intake", {"date": "2026-02-20"}),
        200,
        404,
    ),
    ("/api/v1/programs/(?P<program_id>[^/]+)/supervision-level", "POST"): (
        on_program(
            CORRECTIONS,
            "/supervision-level",
            {"level": "normal", "from_date": "2026-06-01", "reason": "评估"},
        ),
        200,
        404,
    ),
    ("/api/v1/programs/(?P<program_id>[^/]+)/risk", "POST"): (
        on_program(MENTAL_HEALTH, "/risk", {"level": 2, "on": "2026-06-01", "reason": "随访"}),
        200,
        404,
    ),
    ("/api/v1/programs/(?P<program_id>[^/]+)/incidents", "POST"): (
        on_program(MENTAL_HEALTH, "/incidents", {"on": "2026-06-01"}),
        200,
        404,
    ),
    ("/api/v1/rules/effective", "GET"): (plain("/api/v1/rules/effective"), 200, None),
    ("/api/v1/rules/(?P<code>[^/]+)", "PUT"): (own_jurisdiction, 200, 404),
    ("/api/v1/rules/(?P<code>[^/]+)/proposals", "POST"): (retention_proposal, 201, 404),
    ("/api/v1/rule-proposals", "GET"): (plain("/api/v1/rule-proposals"), 200, None),
    ("/api/v1/rule-proposals/(?P<proposal_id>[^/]+)/decision", "POST"): (
        proposal_decision,
        200,
        404,
    ),
    ("/api/v1/investigations", "POST"): (
        on_subject_body(
            "/api/v1/investigations",
            lambda sid: {"subject_id": sid, "court": "法院", "requested_on": "2026-09-18"},
        ),
        201,
        404,
    ),
    ("/api/v1/investigations/(?P<investigation_id>[^/]+)", "GET"): (
        on_investigation("assigned", ""),
        200,
        404,
    ),
    ("/api/v1/investigations/(?P<investigation_id>[^/]+)/assign", "POST"): (
        on_investigation(
            "requested", "/assign", lambda env, _in: {"station_id": env.tree.station.id}
        ),
        county_only,
        404,
    ),
    ("/api/v1/investigations/(?P<investigation_id>[^/]+)/report", "POST"): (
        on_investigation(
            "assigned",
            "/report",
            {"recommendation": "suitable", "opinion": "意见", "on": "2026-10-09"},
        ),
        200,
        404,
    ),
    ("/api/v1/investigations/(?P<investigation_id>[^/]+)/close", "POST"): (
        on_investigation("reported", "/close", {}),
        200,
        404,
    ),
    ("/api/v1/subjects/(?P<subject_id>[^/]+)/leave-requests", "POST"): (
        on_corrections_subject(
            "/leave-requests",
            {
                "start_date": "2026-12-01",
                "end_date": "2026-12-03",
                "destination": "杭州",
                "reason": "探亲",
            },
        ),
        201,
        404,
    ),
    ("/api/v1/subjects/(?P<subject_id>[^/]+)/leave-requests", "GET"): (
        on_corrections_subject("/leave-requests", None),
        200,
        404,
    ),
    ("/api/v1/leave-requests", "GET"): (plain("/api/v1/leave-requests?status=pending"), 200, None),
    ("/api/v1/sanctions", "GET"): (plain("/api/v1/sanctions?status=pending"), 200, None),
    ("/api/v1/leave-requests/(?P<leave_id>[^/]+)/decision", "POST"): (
        leave_at_callers_step,
        200,
        404,
    ),
    ("/api/v1/leave-requests/(?P<leave_id>[^/]+)/return", "POST"): (granted_leave, 200, 404),
    ("/api/v1/subjects/(?P<subject_id>[^/]+)/sanctions", "POST"): (
        on_corrections_subject("/sanctions", {"kind": "admonish", "reason": "未按时报到"}),
        201,
        404,
    ),
    ("/api/v1/sanctions/(?P<sanction_id>[^/]+)/decision", "POST"): (
        sanction_at_callers_step,
        station_and_county_decide,
        404,
    ),
    ("/api/v1/subjects/(?P<subject_id>[^/]+)/sanction-suggestions", "GET"): (
        on_corrections_subject("/sanction-suggestions", None),
        200,
        404,
    ),
    ("/api/v1/subjects/(?P<subject_id>[^/]+)/detachments", "POST"): (
        on_corrections_subject(
            "/detachments", {"start_date": "2026-10-01", "end_date": "2026-10-05"}
        ),
        201,
        404,
    ),
    ("/api/v1/subjects/(?P<subject_id>[^/]+)/elocation-orders", "POST"): (
        on_corrections_subject("/elocation-orders", ORDER_BODY),
        201,
        404,
    ),
    ("/api/v1/subjects/(?P<subject_id>[^/]+)/elocation-orders", "GET"): (
        on_corrections_subject("/elocation-orders", None),
        200,
        404,
    ),
    ("/api/v1/elocation-orders", "GET"): (
        plain("/api/v1/elocation-orders?status=pending"),
        200,
        None,
    ),
    ("/api/v1/elocation-orders/(?P<order_id>[^/]+)", "GET"): (on_order(""), 200, 404),
    ("/api/v1/elocation-orders/(?P<order_id>[^/]+)/renewals", "POST"): (
        on_order("/renewals", {"end_date": "2027-05-31", "reason": "仍需定位"}, approved=True),
        201,
        404,
    ),
    ("/api/v1/elocation-orders/(?P<order_id>[^/]+)/decision", "POST"): (
        on_order("/decision", {"approve": True}),
        200,
        404,
    ),
    ("/api/v1/subjects/(?P<subject_id>[^/]+)/transfers", "POST"): (
        on_corrections_subject(
            "/transfers", lambda env: {"to_org_id": env.tree.station2.id, "reason": "迁居"}
        ),
        201,
        404,
    ),
    ("/api/v1/transfers/(?P<transfer_id>[^/]+)", "GET"): (
        on_transfer("requested", "", None),
        200,
        404,
    ),
    ("/api/v1/transfers/(?P<transfer_id>[^/]+)/decision", "POST"): (
        on_transfer("requested", "/decision", {"accept": True}),
        200,
        404,
    ),
    ("/api/v1/transfers/(?P<transfer_id>[^/]+)/handover", "POST"): (
        on_transfer("accepted", "/handover", today_body),
        200,
        404,
    ),
    ("/api/v1/transfers/(?P<transfer_id>[^/]+)/arrival", "POST"): (
        on_transfer("handed_over", "/arrival", today_body),
        200,
        404,
    ),
    ("/api/v1/programs/(?P<program_id>[^/]+)/terminate", "POST"): (
        on_program(MENTAL_HEALTH, "/terminate", {"kind": "other", "date": "2026-03-01"}),
        200,
        404,
    ),
    ("/api/v1/subjects/(?P<subject_id>[^/]+)/obligations", "GET"): (
        on_subject("/obligations"),
        200,
        404,
    ),
    ("/api/v1/obligations/(?P<occurrence_id>[^/]+)/excuse", "POST"): (one_occurrence, 200, 404),
    ("/api/v1/obligations/(?P<occurrence_id>[^/]+)/result", "POST"): (
        on_occurrence("/result", {"outcome": "done"}),
        200,
        404,
    ),
    ("/api/v1/subjects/(?P<subject_id>[^/]+)/absences", "POST"): (drug_rehab_absence, 201, 404),
    ("/api/v1/subjects/(?P<subject_id>[^/]+)/absences", "GET"): (on_subject("/absences"), 200, 404),
    ("/api/v1/obligations/(?P<occurrence_id>[^/]+)/hours", "POST"): (hours_today, 200, 404),
    ("/api/v1/subjects/(?P<subject_id>[^/]+)/psychiatric-referrals", "GET"): (
        on_subject("/psychiatric-referrals"),
        200,
        404,
    ),
    ("/api/v1/psychiatric-referrals/(?P<referral_id>[^/]+)/outcome", "POST"): (
        open_referral,
        200,
        404,
    ),
    ("/api/v1/subjects/(?P<subject_id>[^/]+)/counseling", "POST"): (counseling_booking, 201, 404),
    ("/api/v1/subjects/(?P<subject_id>[^/]+)/counseling", "GET"): (
        on_subject("/counseling"),
        200,
        404,
    ),
    ("/api/v1/counseling/availability", "GET"): (counseling_availability, 200, 404),
    ("/api/v1/counseling/(?P<session_id>[^/]+)/attendance", "POST"): (
        on_session("/attendance", {"attended": True}),
        200,
        404,
    ),
    ("/api/v1/counseling/(?P<session_id>[^/]+)/cancel", "POST"): (on_session("/cancel"), 200, 404),
    ("/api/v1/caseload", "GET"): (plain("/api/v1/caseload"), 200, None),
    ("/api/v1/subjects/(?P<subject_id>[^/]+)/visits", "GET"): (on_subject("/visits"), 200, 404),
    ("/api/v1/subjects/(?P<subject_id>[^/]+)/wellbeing", "GET"): (
        on_subject("/wellbeing"),
        200,
        404,
    ),
    ("/api/v1/subjects/(?P<subject_id>[^/]+)/visits", "POST"): (
        on_subject("/visits", lambda env, _in: {"kind": "visit", "note": "走访"}),
        201,
        404,
    ),
    ("/api/v1/staff/(?P<staff_id>[^/]+)/handover", "POST"): (hand_over, 200, 404),
    ("/api/v1/alerts", "GET"): (plain("/api/v1/alerts"), 200, None),
    ("/api/v1/audit/events", "GET"): (plain("/api/v1/audit/events?kind=refusal"), 200, None),
    ("/api/v1/audit/accounts", "GET"): (plain("/api/v1/audit/accounts?q=a"), 200, None),
    ("/api/v1/audit/files", "GET"): (plain("/api/v1/audit/files?q=张伟"), 200, None),
    ("/api/v1/alerts/(?P<alert_id>[^/]+)/ack", "POST"): (one_alert, 200, 404),
    ("/api/v1/checkins/review-queue", "GET"): (plain("/api/v1/checkins/review-queue"), 200, None),
    ("/api/v1/checkins/(?P<checkin_id>[^/]+)/review", "POST"): (flagged_checkin, 200, 404),
    ("/api/v1/checkins/(?P<checkin_id>[^/]+)/photo", "GET"): (checkin_photo, 200, 404),
    ("/api/v1/checkins/decided", "GET"): (plain("/api/v1/checkins/decided"), 200, None),
    ("/api/v1/checkins/(?P<checkin_id>[^/]+)", "GET"): (checkin_detail, 200, 404),
    ("/api/v1/subjects/(?P<subject_id>[^/]+)/checkins", "GET"): (
        on_subject("/checkins"),
        200,
        404,
    ),
    ("/api/v1/orgs/(?P<org_id>[^/]+)/area", "PUT"): (org_area, 200, 404),
    ("/api/v1/assistance/facilities", "POST"): (
        resource_body(
            "/api/v1/assistance/facilities",
            {"name": "阳光之家", "kind": "sunshine_home", "capacity": 5},
        ),
        201,
        404,
    ),
    ("/api/v1/assistance/jobs", "POST"): (
        resource_body(
            "/api/v1/assistance/jobs",
            {"name": "岗位", "places": 2, "employer": "企业", "position": "装配工"},
        ),
        201,
        404,
    ),
    ("/api/v1/assistance/courses", "POST"): (
        resource_body(
            "/api/v1/assistance/courses", {"name": "技能培训", "seats": 10, "hours_credit": 2}
        ),
        201,
        404,
    ),
    ("/api/v1/assistance/facilities/(?P<resource_id>[^/]+)", "GET"): (
        on_resource("facilities"),
        200,
        404,
    ),
    ("/api/v1/assistance/facilities/(?P<resource_id>[^/]+)", "PATCH"): (
        on_resource("facilities", body={"active": False}),
        200,
        404,
    ),
    ("/api/v1/assistance/resources/(?P<resource_id>[^/]+)", "GET"): (
        on_resource("resources", kind=ResourceKind.JOB),
        200,
        404,
    ),
    ("/api/v1/assistance/resources/(?P<resource_id>[^/]+)", "PATCH"): (
        on_resource("resources", body={"active": True}, kind=ResourceKind.COURSE),
        200,
        404,
    ),
    ("/api/v1/assistance/resources/(?P<resource_id>[^/]+)/waiting-list", "GET"): (
        on_resource("resources", "/waiting-list"),
        200,
        404,
    ),
    # Outside: a person the caller does not reach, enrolled in a course it does reach.
    ("/api/v1/assistance/courses/(?P<resource_id>[^/]+)/attendance", "POST"): (
        course_attendance,
        200,
        404,
    ),
    ("/api/v1/subjects/(?P<subject_id>[^/]+)/needs", "PUT"): (
        on_subject("/needs", lambda env, _in: {"housing": True, "employment": True}),
        200,
        404,
    ),
    ("/api/v1/subjects/(?P<subject_id>[^/]+)/needs", "GET"): (assessed_needs, 200, 404),
    ("/api/v1/assistance/referrals", "POST"): (
        on_subject_body(
            "/api/v1/assistance/referrals", lambda sid: {"subject_id": sid, "needs": ["housing"]}
        ),
        201,
        404,
    ),
    ("/api/v1/assistance/referrals", "GET"): (plain("/api/v1/assistance/referrals"), 200, None),
    ("/api/v1/assistance/directory", "GET"): (plain("/api/v1/assistance/directory"), 200, None),
    ("/api/v1/assistance/referrals/(?P<referral_id>[^/]+)", "GET"): (on_referral(""), 200, 404),
    # The route admits every reader; the approval step itself is the station's (or county's).
    ("/api/v1/assistance/referrals/(?P<referral_id>[^/]+)/transition", "POST"): (
        on_referral("/transition", {"to": "approved"}),
        approvers,
        approvers_outside,
    ),
    ("/api/v1/assistance/referrals/(?P<referral_id>[^/]+)/outcome", "POST"): (
        on_referral("/outcome", {"kind": "housing_found", "note": "已租到住房"}),
        200,
        404,
    ),
    ("/api/v1/assistance/placements", "POST"): (offered_referral, 201, 404),
    ("/api/v1/assistance/placements/(?P<placement_id>[^/]+)/checkout", "POST"): (
        on_placement("/checkout", lambda env: {"reason": "找到住处"}),
        200,
        404,
    ),
    ("/api/v1/assistance/placements/(?P<placement_id>[^/]+)/arrival", "POST"): (
        on_placement("/arrival", lambda env: {"on": today(env).isoformat()}),
        200,
        404,
    ),
    ("/api/v1/assistance/placements/(?P<placement_id>[^/]+)/extension", "POST"): (
        on_placement(
            "/extension",
            lambda env: {
                "until": (today(env) + dt.timedelta(days=120)).isoformat(),
                "reason": "仍在找工作",
            },
        ),
        200,
        404,
    ),
    ("/api/v1/assistance/summary", "GET"): (month_summary, 200, 404),
    ("/api/v1/dashboard", "GET"): (node_dashboard, 200, 404),
    ("/api/v1/transfers", "GET"): (plain("/api/v1/transfers?status=requested"), 200, None),
    ("/api/v1/transfer-destinations", "GET"): (plain("/api/v1/transfer-destinations"), 200, None),
    ("/api/v1/subjects/(?P<subject_id>[^/]+)/transfers", "GET"): (
        on_subject("/transfers"),
        200,
        404,
    ),
    ("/api/v1/investigations", "GET"): (
        plain("/api/v1/investigations?status=requested"),
        200,
        None,
    ),
    ("/api/v1/assistance/stays", "GET"): (
        plain("/api/v1/assistance/stays?status=ending"),
        200,
        None,
    ),
    ("/api/v1/dashboard/signing", "GET"): (node_signing, 200, 404),
    ("/api/v1/reports/compliance", "POST"): (new_report_body, 201, 404),
    ("/api/v1/reports/compliance/(?P<report_id>[^/]+)", "GET"): (
        on_report("?format=json"),
        200,
        404,
    ),
    # Every officer the policy admits signs a report of its own level (see the builder).
    ("/api/v1/reports/compliance/(?P<report_id>[^/]+)/sign", "POST"): (
        report_at_callers_level,
        200,
        404,
    ),
    ("/api/v1/reports/compliance/(?P<report_id>[^/]+)/subjects", "GET"): (
        on_report("/subjects?figure=checkins_missed"),
        200,
        404,
    ),
    ("/api/v1/subjects/(?P<subject_id>[^/]+)/compliance", "GET"): (
        on_subject(f"/compliance?month={REPORT_MONTH}"),
        200,
        404,
    ),
    ("/api/v1/documents", "POST"): (document_of_decision, 201, 404),
    ("/api/v1/subjects/(?P<subject_id>[^/]+)/documents", "GET"): (
        on_subject("/documents"),
        200,
        404,
    ),
    ("/api/v1/documents/(?P<document_id>[^/]+)", "GET"): (on_document(""), 200, 404),
    ("/api/v1/documents/(?P<document_id>[^/]+)/pdf", "GET"): (on_document("/pdf"), 200, 404),
    ("/api/v1/documents/(?P<document_id>[^/]+)/void", "POST"): (
        on_document("/void", {"reason": "文号有误"}),
        200,
        404,
    ),
    ("/api/v1/subjects/(?P<subject_id>[^/]+)/binding-code", "POST"): (
        on_subject("/binding-code", lambda env, _in: {"role": "subject"}),
        201,
        404,
    ),
    # The mini-program's routes refuse every staff (console) session: see MP_ONLY.
    ("/mp/v1/auth/bind", "POST"): (
        plain("/mp/v1/auth/bind", {"binding_code": "ABCD2345"}),
        403,
        None,
    ),
    ("/mp/v1/me", "GET"): (plain("/mp/v1/me"), 403, None),
    ("/mp/v1/auth/logout", "POST"): (plain("/mp/v1/auth/logout"), 403, None),
    ("/mp/v1/uploads", "POST"): (plain("/mp/v1/uploads"), 403, None),
    ("/mp/v1/checkins", "POST"): (plain("/mp/v1/checkins", {}), 403, None),
    ("/mp/v1/me/tasks", "GET"): (plain("/mp/v1/me/tasks"), 403, None),
    ("/mp/v1/messages", "GET"): (plain("/mp/v1/messages"), 403, None),
    ("/mp/v1/messages/(?P<message_id>[^/]+)/read", "POST"): (
        plain(f"/mp/v1/messages/{ObjectId()}/read"),
        403,
        None,
    ),
    ("/mp/v1/leave-requests", "POST"): (plain("/mp/v1/leave-requests", {}), 403, None),
    ("/mp/v1/leave-requests", "GET"): (plain("/mp/v1/leave-requests"), 403, None),
    ("/mp/v1/leave-requests/(?P<leave_id>[^/]+)", "GET"): (
        plain(f"/mp/v1/leave-requests/{ObjectId()}"),
        403,
        None,
    ),
    ("/mp/v1/checkins", "GET"): (plain("/mp/v1/checkins"), 403, None),
    ("/mp/v1/wellbeing/survey", "GET"): (plain("/mp/v1/wellbeing/survey"), 403, None),
    ("/mp/v1/sanctions", "GET"): (plain("/mp/v1/sanctions"), 403, None),
    ("/mp/v1/documents", "GET"): (plain("/mp/v1/documents"), 403, None),
    ("/mp/v1/documents/(?P<document_id>[^/]+)/pdf", "GET"): (
        plain(f"/mp/v1/documents/{ObjectId()}/pdf"),
        403,
        None,
    ),
    ("/mp/v1/leave-requests/(?P<leave_id>[^/]+)/return", "POST"): (
        plain(f"/mp/v1/leave-requests/{ObjectId()}/return", {}),
        403,
        None,
    ),
    ("/mp/v1/assistance-requests", "POST"): (plain("/mp/v1/assistance-requests", {}), 403, None),
    ("/mp/v1/consents", "POST"): (plain("/mp/v1/consents", {}), 403, None),
    ("/mp/v1/worker/caseload", "GET"): (plain("/mp/v1/worker/caseload"), 403, None),
    ("/mp/v1/worker/alerts", "GET"): (plain("/mp/v1/worker/alerts"), 403, None),
    ("/mp/v1/worker/alerts/(?P<alert_id>[^/]+)/ack", "POST"): (
        plain(f"/mp/v1/worker/alerts/{ObjectId()}/ack"),
        403,
        None,
    ),
    ("/mp/v1/worker/visits", "POST"): (plain("/mp/v1/worker/visits", {}), 403, None),
    ("/mp/v1/worker/obligations/(?P<occurrence_id>[^/]+)/result", "POST"): (
        plain("/mp/v1/worker/obligations/x/result", {}),
        403,
        None,
    ),
    ("/mp/v1/worker/leave-requests", "GET"): (plain("/mp/v1/worker/leave-requests"), 403, None),
    ("/mp/v1/worker/leave-requests/(?P<leave_id>[^/]+)/decision", "POST"): (
        plain(f"/mp/v1/worker/leave-requests/{ObjectId()}/decision", {}),
        403,
        None,
    ),
    ("/mp/v1/worker/checkins/(?P<checkin_id>[^/]+)/review", "POST"): (
        plain("/mp/v1/worker/checkins/x/review", {}),
        403,
        None,
    ),
    ("/mp/v1/worker/messages", "GET"): (plain("/mp/v1/worker/messages"), 403, None),
}
# Routes a console session never reaches, whatever its role.
MP_ONLY = frozenset(
    route[0] for route in all_routes() if "staff" not in getattr(route[1], "channels", {"staff"})
)


def protected_operations() -> list[tuple[str, str, str]]:
    operations = []
    for route in all_routes():
        pattern, handler = route[0], route[1]
        declared = handler.access
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            if not callable(getattr(handler, method.lower(), None)) or getattr(
                handler, method.lower()
            ) is getattr(handler.__mro__[-2], method.lower(), None):
                continue
            action = declared if isinstance(declared, str) else declared.get(method)
            if action is not None and action != PUBLIC:
                operations.append((pattern, method, action))
    return operations


def test_every_protected_route_has_a_matrix_case():
    missing = [(p, m) for p, m, _ in protected_operations() if (p, m) not in CASES]
    assert not missing, f"add access-matrix cases for {missing}"


async def send(fetch, method: str, request: Request, token: str | None):
    return await fetch(
        request.path,
        method,
        json_body=request.json_body,
        body=request.body,
        headers=request.headers,
        token=token,
    )


# Routes that change their caller, by the kind of caller they get instead of the shared one:
# a fresh account each case where the change would reach the cases after it (a revoked
# session, a new password, a second factor), or one account of their own where the change
# is the same every time (the agency head an e-location decision asks for).
OWN_CALLER: dict[str, str] = {
    "/api/v1/auth/logout": "fresh",
    "/api/v1/me/password": "fresh",
    "/api/v1/me/totp": "fresh",
    "/api/v1/me/totp/confirm": "fresh",
    "/api/v1/elocation-orders/(?P<order_id>[^/]+)": "agency head",
    "/api/v1/elocation-orders/(?P<order_id>[^/]+)/renewals": "agency head",
    "/api/v1/elocation-orders/(?P<order_id>[^/]+)/decision": "agency head",
}


class Callers:
    """One account and one session per role (and per kind of caller in OWN_CALLER), made on
    first use and reused by every route after it."""

    def __init__(self, tree: Tree, make_staff: StaffFactory):
        self.tree = tree
        self.make_staff = make_staff
        self.sessions: dict[tuple[Role, str], tuple[Account, str]] = {}

    async def __call__(self, role: Role, pattern: str) -> tuple[Account, str]:
        kind = OWN_CALLER.get(pattern, "shared")
        if kind == "fresh" or (role, kind) not in self.sessions:
            caller = await self.make_staff(role, self.tree.home_for(role))
            self.sessions[(role, kind)] = (caller, await self.make_staff.token_for(caller))
        return self.sessions[(role, kind)]


# The matrix runs in two halves, each in a file (and so a worker and a database) of its own:
# as one test it was the suite's longest by far and held one worker while the other idled.
MATRIX_PARTS = 2


async def test_the_matrix_matches_the_policy_table(fetch, tree, make_staff):
    await check_the_matrix(fetch, tree, make_staff, part=0)


async def check_the_matrix(fetch: Any, tree: Tree, make_staff: StaffFactory, part: int) -> None:
    """Every `MATRIX_PARTS`-th protected operation from `part` on, for every role, in and out
    of scope, against what the policy table says."""
    policy = Policy()
    failures = []
    checked = 0
    callers = Callers(tree, make_staff)
    # Routes without a target first, while the database is small: a list such as the caseload
    # reads every case file in the caller's scope, and the cases after them add hundreds.
    operations = sorted(
        protected_operations(),
        key=lambda op: (op[0], op[1]) not in CASES or CASES[(op[0], op[1])][2] is not None,
    )[part::MATRIX_PARTS]
    helpers: dict[tuple[Role, str, bool], Account] = {}
    orgs: dict[str, Org] = {}
    # A refused request changes nothing, so the roles a route refuses share one target per
    # route and scope (built for the first of them) instead of each building its own: three
    # cases in four are refusals, and building targets is most of the matrix's cost. Any
    # answer but the refusal still fails, whoever the shared target was built for.
    refused_requests: dict[tuple[str, str, bool], Request] = {}
    for pattern, method, action in operations:
        builder, success, outside = CASES[(pattern, method)]
        for role in Role:
            for in_scope in (True, False) if outside is not None else (True,):
                caller, token = await callers(role, pattern)
                env = Env(tree, make_staff, caller, helpers, orgs)
                allowed = action == SELF or policy.allows(caller.identity, action)
                if allowed and pattern not in MP_ONLY:
                    request = await builder(env, in_scope)
                else:
                    shared = (pattern, method, in_scope)
                    if shared not in refused_requests:
                        refused_requests[shared] = await builder(env, in_scope)
                    request = refused_requests[shared]
                in_status = success(role) if callable(success) else success
                out_status = outside(role) if callable(outside) else outside
                expected = (in_status if in_scope else out_status) if allowed else 403
                if not allowed and (pattern, method) in CONCEALED:
                    expected = 404
                if pattern in MP_ONLY:
                    expected = 403
                answer = await send(fetch, method, request, token)
                checked += 1
                if answer.status != expected:
                    failures.append(
                        f"{method} {pattern} as {role} "
                        f"{'in' if in_scope else 'out of'} scope: "
                        f"{answer.status}, expected {expected}"
                    )
    assert not failures, "\n".join(failures)
    assert operations and checked >= len(operations) * len(Role)


async def test_anonymous_callers_get_401_everywhere(fetch, tree, make_staff):
    caller = await make_staff(Role.SYS_ADMIN, tree.county)
    env = Env(tree, make_staff, caller)
    for pattern, method, _ in protected_operations():
        builder, _, _ = CASES[(pattern, method)]
        answer = await send(fetch, method, await builder(env, True), None)
        assert answer.status == 401, f"{method} {pattern}: {answer.status}"

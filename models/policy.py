"""The access policy: one table of role x action x scope, consulted on every route and record."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from models.identity import Identity

# Actions anyone may perform without an identity (health probes, the API description, login).
PUBLIC = "public"
# Actions any signed-in caller may perform on their own account (me, logout).
SELF = "self"


class Role(enum.StrEnum):
    SYS_ADMIN = "sys_admin"
    SECURITY_ADMIN = "security_admin"
    AUDIT_ADMIN = "audit_admin"
    CITY_OFFICER = "city_officer"
    COUNTY_OFFICER = "county_officer"
    STATION_OFFICER = "station_officer"
    SOCIAL_WORKER = "social_worker"
    GRID_WORKER = "grid_worker"
    HEALTH_WORKER = "health_worker"
    POLICE = "police"
    ASSISTANCE_COORDINATOR = "assistance_coordinator"
    OVERSIGHT = "oversight"


class MpRole(enum.StrEnum):
    """Who signs in through the mini-program without a staff account (after binding)."""

    SUBJECT = "subject"  # the supervised person
    GUARDIAN = "guardian"  # a mental-health patient's guardian (监护人), or a juvenile's


STAFF_ROLES = frozenset(Role)
# 三员分立: the three administrators run the system and never read case data.
ADMIN_ROLES = frozenset({Role.SYS_ADMIN, Role.SECURITY_ADMIN, Role.AUDIT_ADMIN})
CASE_ROLES = STAFF_ROLES - ADMIN_ROLES
OFFICER_ROLES = frozenset({Role.CITY_OFFICER, Role.COUNTY_OFFICER, Role.STATION_OFFICER})


class Scope(enum.StrEnum):
    """Which records an allowed role reaches."""

    NONE = "none"  # no record: the action concerns the caller or the system as a whole
    SUBTREE = "subtree"  # records whose organisation lies in the caller's subtree
    ASSIGNED = "assigned"  # records the caller is assigned to (within the subtree)
    REFERRED = "referred"  # subjects referred to the caller's facility (assistance)
    HEALTH = "health"  # mental-health cases in the caller's subtree (精神卫生法 Art. 4)


@dataclass(frozen=True)
class Rule:
    roles: frozenset[Role | MpRole]
    scope: Scope = Scope.SUBTREE
    # Per role, a narrower scope than the rule's (a social worker sees assigned subjects only).
    narrower: Mapping[Role, Scope] = field(default_factory=dict)
    # Fields masked from these roles when the action returns a record.
    description: str = ""

    def scope_for(self, role: Role) -> Scope:
        return self.narrower.get(role, self.scope)


def _roles(*roles: Role | MpRole | Iterable[Role]) -> frozenset[Role | MpRole]:
    flat: set[Role | MpRole] = set()
    for item in roles:
        if isinstance(item, Role | MpRole):
            flat.add(item)
        else:
            flat.update(item)
    return frozenset(flat)


# Case-data rules as the issues that add those routes will use them; identity and organisation
# rules serve the routes that exist now.
DEFAULT_TABLE: dict[str, Rule] = {
    # Identity: any signed-in staff member, on their own account.
    "me.binding_code": Rule(_roles(STAFF_ROLES), Scope.NONE, description="bind own WeChat"),
    "me.totp": Rule(_roles(STAFF_ROLES), Scope.NONE, description="enrol a second factor"),
    "me.password": Rule(_roles(STAFF_ROLES), Scope.NONE, description="change own password"),
    # The organisation tree and accounts: the system administrator only.
    "orgs.create": Rule(_roles(Role.SYS_ADMIN), description="add a node under one in scope"),
    "orgs.read": Rule(_roles(Role.SYS_ADMIN, OFFICER_ROLES), description="read the tree"),
    "staff.create": Rule(_roles(Role.SYS_ADMIN), description="create accounts"),
    "staff.import": Rule(_roles(Role.SYS_ADMIN), description="import accounts from CSV"),
    "staff.read": Rule(_roles(Role.SYS_ADMIN, OFFICER_ROLES), description="read accounts"),
    "staff.manage": Rule(
        _roles(Role.SYS_ADMIN), description="reset passwords, disable, enable, move"
    ),
    # Roles and policy settings: the security administrator only. An account the system
    # administrator creates holds no role until the security administrator grants one.
    "policy.read": Rule(_roles(Role.SECURITY_ADMIN), Scope.NONE, description="read the policy"),
    "roles.read": Rule(
        _roles(Role.SECURITY_ADMIN), description="accounts' roles and pending role requests"
    ),
    "roles.grant": Rule(
        _roles(Role.SECURITY_ADMIN), description="grant, change or withdraw an account's role"
    ),
    # The audit log: the audit administrator only.
    "audit.read": Rule(_roles(Role.AUDIT_ADMIN), description="read the audit log"),
    # Case files.
    "subjects.create": Rule(
        _roles(Role.STATION_OFFICER, Role.COUNTY_OFFICER, Role.SOCIAL_WORKER),
        description="open a case file in scope",
    ),
    "subjects.read": Rule(
        _roles(CASE_ROLES),
        narrower={
            Role.SOCIAL_WORKER: Scope.ASSIGNED,
            Role.HEALTH_WORKER: Scope.HEALTH,
            Role.ASSISTANCE_COORDINATOR: Scope.REFERRED,
        },
        description="read a case file (masked per role)",
    ),
    "subjects.search": Rule(
        _roles(CASE_ROLES),
        narrower={
            Role.SOCIAL_WORKER: Scope.ASSIGNED,
            Role.HEALTH_WORKER: Scope.HEALTH,
            Role.ASSISTANCE_COORDINATOR: Scope.REFERRED,
        },
        description="find case files by exact ID number, phone or name",
    ),
    "subjects.update": Rule(
        _roles(Role.STATION_OFFICER, Role.COUNTY_OFFICER, Role.SOCIAL_WORKER),
        narrower={Role.SOCIAL_WORKER: Scope.ASSIGNED},
        description="edit a case file",
    ),
    "subjects.assign": Rule(
        _roles(Role.STATION_OFFICER, Role.COUNTY_OFFICER),
        description="assign workers and the 矫正小组",
    ),
    "subjects.notes": Rule(
        _roles(Role.STATION_OFFICER, Role.COUNTY_OFFICER, Role.SOCIAL_WORKER, Role.GRID_WORKER),
        narrower={Role.SOCIAL_WORKER: Scope.ASSIGNED},
        description="read and write notes on a case file",
    ),
    "subjects.photo": Rule(
        _roles(Role.STATION_OFFICER, Role.COUNTY_OFFICER, Role.SOCIAL_WORKER, Role.GRID_WORKER),
        narrower={Role.SOCIAL_WORKER: Scope.ASSIGNED},
        description="store a subject's photo",
    ),
    "subjects.import": Rule(
        _roles(Role.STATION_OFFICER, Role.COUNTY_OFFICER),
        description="import case files from CSV",
    ),
    "subjects.access_log": Rule(
        _roles(Role.AUDIT_ADMIN, Role.COUNTY_OFFICER, Role.CITY_OFFICER),
        description="who read or changed a case file",
    ),
    # Break-glass: a county officer opens an out-of-scope file with a stated reason.
    "subjects.break_glass": Rule(_roles(Role.COUNTY_OFFICER), Scope.NONE),
    "alerts.read": Rule(_roles(CASE_ROLES), description="alerts in scope"),
    # Acknowledging is a write (it closes the alert for everyone): never oversight, and only
    # for the people the caller works on (models/alerts.py also checks the alert's roles).
    "alerts.ack": Rule(
        _roles(CASE_ROLES - {Role.OVERSIGHT}),
        narrower={
            Role.SOCIAL_WORKER: Scope.ASSIGNED,
            Role.GRID_WORKER: Scope.ASSIGNED,
            Role.HEALTH_WORKER: Scope.HEALTH,
            Role.ASSISTANCE_COORDINATOR: Scope.REFERRED,
        },
        description="acknowledge an alert about a person one works on",
    ),
    # Programs: one per legal status, with the rules they enforce.
    "programs.create": Rule(
        _roles(Role.STATION_OFFICER, Role.COUNTY_OFFICER, Role.HEALTH_WORKER),
        description="open a program (health workers: mental-health programs)",
    ),
    "programs.read": Rule(
        _roles(CASE_ROLES),
        narrower={
            Role.SOCIAL_WORKER: Scope.ASSIGNED,
            Role.HEALTH_WORKER: Scope.HEALTH,
            Role.ASSISTANCE_COORDINATOR: Scope.REFERRED,
        },
        description="read programs (health details: health roles and assigned workers)",
    ),
    "programs.manage": Rule(
        _roles(Role.STATION_OFFICER, Role.COUNTY_OFFICER, Role.HEALTH_WORKER),
        narrower={Role.HEALTH_WORKER: Scope.HEALTH},
        description="intake, lifecycle, supervision and risk levels",
    ),
    # Obligations: what a person must do, when, and whether they did it.
    "obligations.read": Rule(
        _roles(CASE_ROLES),
        narrower={
            Role.SOCIAL_WORKER: Scope.ASSIGNED,
            Role.HEALTH_WORKER: Scope.HEALTH,
            Role.ASSISTANCE_COORDINATOR: Scope.REFERRED,
        },
        description="a person's obligations, stored and projected",
    ),
    "obligations.excuse": Rule(
        _roles(Role.STATION_OFFICER, Role.COUNTY_OFFICER, Role.SOCIAL_WORKER),
        narrower={Role.SOCIAL_WORKER: Scope.ASSIGNED},
        description="excuse an occurrence with a reason",
    ),
    "obligations.record": Rule(
        _roles(Role.STATION_OFFICER, Role.SOCIAL_WORKER, Role.POLICE),
        narrower={Role.SOCIAL_WORKER: Scope.ASSIGNED},
        description="record an obligation's result (a drug test's outcome)",
    ),
    # 擅自离开 of people in drug rehabilitation (戒毒条例 Art. 20): recorded by those who record
    # their drug tests; whereabouts are sensitive (PIPL Art. 28): read by officers and by those
    # who record them, not by every case role.
    "absences.record": Rule(
        _roles(Role.STATION_OFFICER, Role.SOCIAL_WORKER, Role.POLICE),
        narrower={Role.SOCIAL_WORKER: Scope.ASSIGNED},
        description="record an unauthorised absence (drug rehabilitation)",
    ),
    "absences.read": Rule(
        _roles(OFFICER_ROLES, Role.SOCIAL_WORKER, Role.POLICE),
        narrower={Role.SOCIAL_WORKER: Scope.ASSIGNED},
        description="a person's recorded absences and their count",
    ),
    # 转诊 (严重精神障碍管理治疗工作规范 2018): the health worker (精防医生) records where the
    # patient was referred, or why not; health data, so health workers in the health scope only.
    "psychiatric_referrals.record": Rule(
        _roles(Role.HEALTH_WORKER),
        narrower={Role.HEALTH_WORKER: Scope.HEALTH},
        description="record a psychiatric referral's outcome (转诊)",
    ),
    "caseload.read": Rule(
        _roles(
            Role.STATION_OFFICER,
            Role.COUNTY_OFFICER,
            Role.SOCIAL_WORKER,
            Role.GRID_WORKER,
            Role.HEALTH_WORKER,
        ),
        Scope.NONE,
        description="the caller's caseload (scoped by subjects.read)",
    ),
    "visits.record": Rule(
        _roles(Role.STATION_OFFICER, Role.SOCIAL_WORKER, Role.GRID_WORKER, Role.HEALTH_WORKER),
        narrower={Role.SOCIAL_WORKER: Scope.ASSIGNED, Role.HEALTH_WORKER: Scope.HEALTH},
        description="record a visit or talk (走访, 谈话)",
    ),
    # Follow-up notes are health data: the service opens them for health roles and the
    # assigned workers only, and the other notes for those who read case notes.
    "visits.read": Rule(
        _roles(
            Role.STATION_OFFICER,
            Role.COUNTY_OFFICER,
            Role.SOCIAL_WORKER,
            Role.GRID_WORKER,
            Role.HEALTH_WORKER,
        ),
        narrower={Role.SOCIAL_WORKER: Scope.ASSIGNED, Role.HEALTH_WORKER: Scope.HEALTH},
        description="a person's visits and talks (notes as the role may read them)",
    ),
    # The wellbeing survey a person answers with a check-in: the needs, and the PHQ-2 / GAD-2
    # screens, which are health data (the service opens the answers only for those who see
    # health data on the file: the assigned workers, health workers).
    "wellbeing.read": Rule(
        _roles(Role.STATION_OFFICER, Role.SOCIAL_WORKER, Role.HEALTH_WORKER),
        narrower={Role.SOCIAL_WORKER: Scope.ASSIGNED, Role.HEALTH_WORKER: Scope.HEALTH},
        description="a person's wellbeing surveys (answers as the role may read them)",
    ),
    "caseload.hand_over": Rule(
        _roles(Role.STATION_OFFICER, Role.COUNTY_OFFICER),
        description="hand a departing worker's caseload to others",
    ),
    "counseling.manage": Rule(
        _roles(Role.STATION_OFFICER, Role.COUNTY_OFFICER, Role.SOCIAL_WORKER),
        narrower={Role.SOCIAL_WORKER: Scope.ASSIGNED},
        description="book counseling sessions and record attendance",
    ),
    "counseling.read": Rule(
        _roles(Role.STATION_OFFICER, Role.COUNTY_OFFICER, Role.SOCIAL_WORKER),
        narrower={Role.SOCIAL_WORKER: Scope.ASSIGNED},
        description="a person's counseling sessions and the free counsellors, rooms and slots",
    ),
    # 调查评估: the county receives the court's request and assigns a station, which reports.
    "investigations.manage": Rule(
        _roles(Role.COUNTY_OFFICER, Role.STATION_OFFICER),
        description="record, assign and report pre-sentencing investigations",
    ),
    "investigations.read": Rule(_roles(OFFICER_ROLES), description="read investigations"),
    # Decisions along approval chains (models/approvals.py): the policy admits the officers who
    # may take some step; the chain then admits only the level whose turn it is.
    "leave.request": Rule(
        _roles(Role.STATION_OFFICER, Role.COUNTY_OFFICER, Role.SOCIAL_WORKER),
        narrower={Role.SOCIAL_WORKER: Scope.ASSIGNED},
        description="file a leave request (外出请假) on a person's behalf",
    ),
    "leave.read": Rule(_roles(OFFICER_ROLES), description="leave requests in scope"),
    # One person's leave on the file, for those who record their 销假 (assigned social workers
    # included); the queue of a node (`leave.read`) stays the officers'.
    "leave.history": Rule(
        _roles(OFFICER_ROLES, Role.SOCIAL_WORKER),
        narrower={Role.SOCIAL_WORKER: Scope.ASSIGNED},
        description="a person's leave requests on the file, with the 销假",
    ),
    "leave.decide": Rule(_roles(OFFICER_ROLES), description="take one's step on a leave request"),
    "leave.return": Rule(
        _roles(Role.STATION_OFFICER, Role.COUNTY_OFFICER, Role.SOCIAL_WORKER),
        narrower={Role.SOCIAL_WORKER: Scope.ASSIGNED},
        description="record the return from leave (销假)",
    ),
    "sanctions.propose": Rule(
        _roles(Role.STATION_OFFICER, Role.COUNTY_OFFICER),
        description="file a praise or sanction (考核奖惩) with its reason",
    ),
    "sanctions.decide": Rule(_roles(OFFICER_ROLES), description="take one's step on a sanction"),
    "sanctions.read": Rule(_roles(OFFICER_ROLES), description="sanction suggestions"),
    "detachments.record": Rule(
        _roles(Role.STATION_OFFICER, Role.COUNTY_OFFICER), description="record a 脱管 episode"
    ),
    # 电子定位: stations and counties ask; the county agency's head alone approves (Art. 29),
    # which the service checks on the account itself.
    "elocation.request": Rule(
        _roles(Role.STATION_OFFICER, Role.COUNTY_OFFICER),
        description="ask for an electronic-location order or its renewal",
    ),
    "elocation.decide": Rule(
        _roles(Role.COUNTY_OFFICER), description="approve an order (the agency head only)"
    ),
    "elocation.read": Rule(_roles(OFFICER_ROLES), description="read electronic-location orders"),
    # 执行地变更: either side of a transfer, each at its own step.
    "transfers.manage": Rule(
        _roles(Role.STATION_OFFICER, Role.COUNTY_OFFICER),
        description="request, accept, hand over and close transfers",
    ),
    "transfers.read": Rule(_roles(OFFICER_ROLES), description="read transfers"),
    # 信息化核查 (社区矫正法 Art. 26): the person checks in; the station reviews what is flagged.
    "checkins.create": Rule(
        _roles(MpRole.SUBJECT), Scope.NONE, description="check in with a location (own)"
    ),
    "checkins.read": Rule(
        _roles(OFFICER_ROLES), description="check-ins and the review queue in scope"
    ),
    "checkins.review": Rule(
        _roles(Role.STATION_OFFICER, Role.COUNTY_OFFICER),
        description="accept or reject a flagged check-in",
    ),
    "orgs.area": Rule(
        _roles(Role.SYS_ADMIN, Role.COUNTY_OFFICER, Role.CITY_OFFICER),
        description="set a node's check-in area (polygon, or centre and radius)",
    ),
    "subjects.binding_code": Rule(
        _roles(Role.STATION_OFFICER, Role.COUNTY_OFFICER, Role.SOCIAL_WORKER, Role.HEALTH_WORKER),
        narrower={Role.SOCIAL_WORKER: Scope.ASSIGNED, Role.HEALTH_WORKER: Scope.HEALTH},
        description="issue a person's or guardian's WeChat binding code",
    ),
    # 阳光之家 assistance: workers refer, the station approves, the facility's coordinator
    # places (a coordinator reaches referrals to their own facilities only, in the service).
    "assistance.read": Rule(
        _roles(OFFICER_ROLES, Role.SOCIAL_WORKER, Role.ASSISTANCE_COORDINATOR),
        narrower={
            Role.SOCIAL_WORKER: Scope.ASSIGNED,
            Role.ASSISTANCE_COORDINATOR: Scope.REFERRED,
        },
        description="resources, referrals and placements in scope",
    ),
    "assistance.manage": Rule(
        _roles(Role.STATION_OFFICER, Role.COUNTY_OFFICER, Role.SOCIAL_WORKER),
        narrower={Role.SOCIAL_WORKER: Scope.ASSIGNED},
        description="assess needs, refer, offer, record answers and outcomes",
    ),
    # The needs assessed on a file: read by whoever may assess them or refer the person.
    "assistance.needs": Rule(
        _roles(Role.STATION_OFFICER, Role.COUNTY_OFFICER, Role.SOCIAL_WORKER),
        narrower={Role.SOCIAL_WORKER: Scope.ASSIGNED},
        description="read a person's current needs assessment",
    ),
    "assistance.approve": Rule(
        _roles(Role.STATION_OFFICER, Role.COUNTY_OFFICER), description="approve a referral"
    ),
    "assistance.place": Rule(
        _roles(
            Role.STATION_OFFICER,
            Role.COUNTY_OFFICER,
            Role.SOCIAL_WORKER,
            Role.ASSISTANCE_COORDINATOR,
        ),
        narrower={
            Role.SOCIAL_WORKER: Scope.ASSIGNED,
            Role.ASSISTANCE_COORDINATOR: Scope.REFERRED,
        },
        description="place, check out, arrivals, course attendance",
    ),
    "assistance.extend": Rule(
        _roles(Role.COUNTY_OFFICER), description="approve a stay beyond the limit"
    ),
    "assistance.resources": Rule(
        _roles(Role.COUNTY_OFFICER, Role.CITY_OFFICER),
        description="add and open or close facilities, jobs and courses",
    ),
    "assistance.summary": Rule(_roles(OFFICER_ROLES), description="a node's monthly summary"),
    # Monthly compliance (Reports): each level reports on its subtree and its officer signs
    # (the service admits only the officer of the report's own level).
    "reports.create": Rule(_roles(OFFICER_ROLES), description="compute a node's monthly report"),
    "reports.read": Rule(
        _roles(OFFICER_ROLES), description="read, drill into and export reports in scope"
    ),
    "reports.sign": Rule(
        _roles(OFFICER_ROLES), description="sign a report of one's own level (frozen snapshot)"
    ),
    # The dashboard (issue 24): a station's, county's or city's figures, counted over its subtree.
    "dashboard.read": Rule(_roles(OFFICER_ROLES), description="a node's dashboard figures"),
    # Official documents (文书), made from decided records: officers make and read them; the
    # station and county, whose decisions they carry, void one to reissue it.
    "documents.create": Rule(
        _roles(OFFICER_ROLES), description="make a document from a decided record"
    ),
    "documents.read": Rule(_roles(OFFICER_ROLES), description="read and print documents"),
    "documents.void": Rule(
        _roles(Role.STATION_OFFICER, Role.COUNTY_OFFICER),
        description="void a document (kept) so its record's document can be reissued",
    ),
    "compliance.read": Rule(
        _roles(OFFICER_ROLES, Role.SOCIAL_WORKER),
        narrower={Role.SOCIAL_WORKER: Scope.ASSIGNED},
        description="one person's monthly compliance",
    ),
    # The mini-program: a bound person (or guardian) acting on their own file.
    "mp.self": Rule(
        _roles(MpRole.SUBJECT, MpRole.GUARDIAN), Scope.NONE, description="own tasks and messages"
    ),
    "uploads.create": Rule(
        _roles(MpRole.SUBJECT, MpRole.GUARDIAN), Scope.NONE, description="upload a photo"
    ),
    # Only the recipient's own messages (a guardian: those a guardian was told); else 404.
    "mp.messages.read": Rule(
        _roles(MpRole.SUBJECT, MpRole.GUARDIAN),
        Scope.NONE,
        description="mark one of the caller's messages read",
    ),
    # The statutory rules: read by officers; overridden for a jurisdiction by its bureau.
    "rules.read": Rule(
        _roles(OFFICER_ROLES, Role.SYS_ADMIN), Scope.NONE, description="the effective rules"
    ),
    "rules.manage": Rule(
        _roles(Role.CITY_OFFICER, Role.COUNTY_OFFICER, Role.SYS_ADMIN),
        description="override reversible rules for a jurisdiction in scope",
    ),
    # Irreversible rules (retention, hence crypto-shredding): a case-side officer proposes,
    # the security administrator confirms; never one person, never the system administrator.
    "rules.propose": Rule(
        _roles(Role.CITY_OFFICER, Role.COUNTY_OFFICER),
        description="propose a change to an irreversible rule in scope",
    ),
    "rules.confirm": Rule(
        _roles(Role.SECURITY_ADMIN), description="confirm or refuse another's proposal"
    ),
    "rules.proposals": Rule(
        _roles(Role.CITY_OFFICER, Role.COUNTY_OFFICER, Role.SECURITY_ADMIN),
        description="read proposals to change irreversible rules",
    ),
}


class ActionKind(enum.StrEnum):
    """What an action does, for the separation of duties (三员分立, GB/T 22239 level 3)."""

    SELF = "self"  # the caller's own account
    READ = "read"  # reads; changes nothing
    SYSTEM = "system"  # accounts, the tree and reversible settings: no case record, no authority
    ROLES = "roles"  # grants authority over case data
    CASE_WRITE = "case_write"  # writes (or opens) a person's file or what is filed about them
    IRREVERSIBLE = "irreversible"  # cannot be undone: takes effect only when another confirms
    CONFIRM = "confirm"  # another person's confirmation of an irreversible proposal


# Every action of the table, classified; tests/models/test_policy.py walks the table with it, so
# an action added without a kind fails, and no administrator may hold a case write or an
# irreversible action.
ACTION_KINDS: dict[str, ActionKind] = {
    **dict.fromkeys(("me.binding_code", "me.totp", "me.password"), ActionKind.SELF),
    **dict.fromkeys(
        (
            "orgs.read",
            "staff.read",
            "roles.read",
            "policy.read",
            "audit.read",
            "subjects.read",
            "subjects.search",
            "subjects.access_log",
            "alerts.read",
            "visits.read",
            "wellbeing.read",
            "programs.read",
            "obligations.read",
            "absences.read",
            "caseload.read",
            "investigations.read",
            "leave.read",
            "leave.history",
            "sanctions.read",
            "elocation.read",
            "transfers.read",
            "checkins.read",
            "assistance.read",
            "assistance.needs",
            "assistance.summary",
            "counseling.read",
            "reports.read",
            "dashboard.read",
            "documents.read",
            "compliance.read",
            "rules.read",
            "rules.proposals",
        ),
        ActionKind.READ,
    ),
    **dict.fromkeys(
        (
            "orgs.create",
            "orgs.area",
            "staff.create",
            "staff.import",
            "staff.manage",
            "rules.manage",
        ),
        ActionKind.SYSTEM,
    ),
    "roles.grant": ActionKind.ROLES,
    **dict.fromkeys(
        (
            "subjects.create",
            "subjects.update",
            "subjects.assign",
            "subjects.notes",
            "subjects.photo",
            "subjects.import",
            "subjects.break_glass",
            "subjects.binding_code",
            "programs.create",
            "programs.manage",
            "obligations.excuse",
            "obligations.record",
            "psychiatric_referrals.record",
            "absences.record",
            "visits.record",
            "alerts.ack",
            "caseload.hand_over",
            "counseling.manage",
            "investigations.manage",
            "leave.request",
            "leave.decide",
            "leave.return",
            "sanctions.propose",
            "sanctions.decide",
            "detachments.record",
            "elocation.request",
            "elocation.decide",
            "transfers.manage",
            "checkins.create",
            "checkins.review",
            "assistance.manage",
            "assistance.approve",
            "assistance.place",
            "assistance.extend",
            "assistance.resources",
            "reports.create",
            "reports.sign",
            "documents.create",
            "documents.void",
            "mp.self",
            "mp.messages.read",
            "uploads.create",
        ),
        ActionKind.CASE_WRITE,
    ),
    "rules.propose": ActionKind.IRREVERSIBLE,
    "rules.confirm": ActionKind.CONFIRM,
}
# Who confirms each irreversible action: a different action, held by different roles.
CONFIRMED_BY: dict[str, str] = {"rules.propose": "rules.confirm"}


# Which identity fields each role may see in a case file it can read; anything else is masked.
IDENTITY_FIELDS = frozenset(
    {"name", "id_type", "id_number", "phone", "gender", "birth_date", "address"}
)
VISIBLE_FIELDS: dict[Role, frozenset[str]] = {
    **{role: IDENTITY_FIELDS for role in CASE_ROLES},
    Role.POLICE: frozenset({"name", "id_type", "id_number", "phone", "gender", "address"}),
    Role.ASSISTANCE_COORDINATOR: frozenset({"name", "gender", "phone"}),
}


# Health data on a file (精神卫生法 Art. 4): a program's diagnosis, guardian, care team, risk
# level and its history, the subsidy; follow-up visit notes; and which wellbeing screen (PHQ-2,
# GAD-2) an alert was raised for. Health roles and the workers assigned to the person see
# them; other roles see the file without them.
HEALTH_FIELDS = frozenset(
    {"diagnosis", "guardian", "care_team", "risk_level", "risk_history", "subsidy", "wellbeing"}
)
HEALTH_ROLES = frozenset({Role.HEALTH_WORKER})


def sees_health(identity: Identity, assigned: bool) -> bool:
    """Whether `identity`, which may read a file, sees the health data on it (`assigned`: the
    caller is one of the file's assigned workers)."""
    return identity.unscoped or identity.role in HEALTH_ROLES or assigned


def visible_fields(identity: Identity) -> frozenset[str]:
    """The identity fields of a case file `identity`'s role may see."""
    try:
        return VISIBLE_FIELDS.get(Role(identity.role or ""), frozenset())
    except ValueError:
        return frozenset()


class Policy:
    """Deny by default: an action is allowed only when its rule names the caller's role."""

    def __init__(self, table: Mapping[str, Rule] | None = None):
        self._table = dict(DEFAULT_TABLE if table is None else table)

    def knows(self, action: str) -> bool:
        return action in (PUBLIC, SELF) or action in self._table

    def rule(self, action: str) -> Rule | None:
        return self._table.get(action)

    def actions(self) -> Mapping[str, Rule]:
        return dict(self._table)

    def allows(self, identity: Identity, action: str) -> bool:
        if action == PUBLIC:
            return True
        if not identity.authenticated:
            return False
        if action == SELF:
            return True
        if identity.role is None and identity.channel == "staff":
            return action in ROLELESS_ALLOWS
        rule = self._table.get(action)
        return rule is not None and identity.role in rule.roles

    def scope(self, identity: Identity, action: str) -> Scope:
        rule = self._table.get(action)
        if rule is None or identity.role not in STAFF_ROLES:
            return Scope.NONE
        return rule.scope_for(Role(identity.role))


# What a staff account without a role (awaiting the security administrator's grant, or whose
# role was withdrawn) may still do: set its own password and second factor, nothing else.
ROLELESS_ALLOWS = frozenset({"me.password", "me.totp"})

# What a restricted session may still do: finish the step it was opened for, read itself, leave.
RESTRICTION_ALLOWS: dict[str, frozenset[str]] = {
    "password_change": frozenset({SELF, "me.password"}),
    "totp_enrolment": frozenset({SELF, "me.totp"}),
}

"""Demo data for `make run`: a county with two stations and staff of every role; idempotent."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from models.audit import AuditContext
from models.clock import SystemClock
from models.errors import Conflict
from models.geo import Area, Point
from models.identity import Identity
from models.identity_numbers import IdType, gb11643_check_digit
from models.orgs import Org, OrgKind
from models.policy import Role
from models.staff import temporary_password
from models.subjects import SubjectInput
from server.app import (
    SYSTEM,
    Services,
    build_services,
    collection_specs,
    connect_store,
    open_vault,
    wait_for_database,
)
from server.config import Config

DEMO_TREE = [
    # (code, name, kind, parent code)
    ("330300", "温州市（演示）", OrgKind.CITY, None),
    ("330302", "鹿城区司法局（演示）", OrgKind.COUNTY, "330300"),
    ("330302001", "五马司法所", OrgKind.STATION, "330302"),
    ("330302002", "南汇司法所", OrgKind.STATION, "330302"),
    ("330302001001", "五马社区", OrgKind.COMMUNITY, "330302001"),
    ("330302002001", "南汇社区", OrgKind.COMMUNITY, "330302002"),
    ("330302001001-01", "五马社区第一网格", OrgKind.GRID, "330302001001"),
]

# Each station's permitted check-in area (WGS-84 centre, metres): the streets it serves.
DEMO_AREAS = {
    "330302001": Area(center=Point(28.0197, 120.6543), radius_m=3000),
    "330302002": Area(center=Point(27.9988, 120.6872), radius_m=3000),
}

DEMO_STAFF = [
    # (username, name, role, org code, agency head)
    ("admin", "系统管理员", Role.SYS_ADMIN, "330302", False),
    ("security", "安全管理员", Role.SECURITY_ADMIN, "330302", False),
    ("auditor", "审计管理员", Role.AUDIT_ADMIN, "330302", False),
    ("city.officer", "陈市局", Role.CITY_OFFICER, "330300", False),
    ("county.head", "林局长", Role.COUNTY_OFFICER, "330302", True),
    ("county.officer", "周科员", Role.COUNTY_OFFICER, "330302", False),
    ("wuma.officer", "吴所长", Role.STATION_OFFICER, "330302001", False),
    ("nanhui.officer", "郑所长", Role.STATION_OFFICER, "330302002", False),
    ("wuma.social", "王社工", Role.SOCIAL_WORKER, "330302001", False),
    ("nanhui.social", "冯社工", Role.SOCIAL_WORKER, "330302002", False),
    ("wuma.grid", "赵网格员", Role.GRID_WORKER, "330302001001", False),
    ("health", "钱医生", Role.HEALTH_WORKER, "330302", False),
    ("police", "孙民警", Role.POLICE, "330302001", False),
    ("sunshine", "李协调员", Role.ASSISTANCE_COORDINATOR, "330302", False),
    ("procurator", "何检察官", Role.OVERSIGHT, "330302", False),
]

# Demo staff are seeded by the composition root with their roles (and passwords that need no
# change, for the fuzzer and a quick look). This one goes the way every real account goes
# (三员分立): the demo's system administrator opens it, and it waits without a role for the
# security administrator (`security`) to grant one: GET /api/v1/staff/roles?pending=1.
PENDING_STAFF = ("new.social", "何社工", Role.SOCIAL_WORKER, "330302001")


async def _ensure_tree(services: Services) -> dict[str, Org]:
    nodes: dict[str, Org] = {}
    for code, name, kind, parent in DEMO_TREE:
        existing = await services.orgs.by_code(code)
        nodes[code] = existing or await services.orgs.create(
            SYSTEM,
            name=name,
            code=code,
            kind=kind,
            parent_id=nodes[parent].id if parent else None,
        )
    return nodes


async def seed_demo(config: Config) -> dict[str, Any]:
    store = connect_store(config)
    try:
        await wait_for_database(store, config.db_wait_seconds)
        await store.ensure_indexes(collection_specs())
        vault = await open_vault(config, store, SystemClock())
        services = build_services(store, config, SystemClock(), vault)
        nodes = await _ensure_tree(services)
        for code, area in DEMO_AREAS.items():
            await services.orgs.set_area(SYSTEM, nodes[code].id, area)
        created = []
        for username, name, role, org_code, head in DEMO_STAFF:
            if await services.staff.find_for_login(username) is not None:
                continue
            password = temporary_password()
            await services.staff.create(
                SYSTEM,
                username=username,
                password=password,
                name=name,
                role=role,
                org_id=nodes[org_code].id,
                is_agency_head=head,
            )
            created.append((username, name, role, password))
        if created:
            _write_logins(config.var_dir / "demo-logins.txt", created)
        await _ensure_role_request(services, nodes)
        subjects = await _ensure_subjects(services, nodes)
        await services.close()
        return {"orgs": len(nodes), "staff_created": len(created), "subjects_created": subjects}
    finally:
        await store.close()


# Invented people (the ID numbers are valid in form only), one for each population.
DEMO_SUBJECTS: list[tuple[str, str, dt.date, str, str, str, str, str, dict[str, Any]]] = [
    # (name, gender, birth date, sequence, phone, address, org code, social worker, program)
    (
        "陈国强",
        "male",
        dt.date(1985, 4, 12),
        "131",
        "13905770001",
        "五马街道解放北路12号",
        "330302001",
        "wuma.social",
        {
            "type": "community_corrections",
            "start_date": "2026-10-12",
            "end_date": "2027-10-11",
            "sentence_type": "probation",
        },
    ),
    (
        "林秀英",
        "female",
        dt.date(1972, 9, 3),
        "242",
        "13905770002",
        "五马街道公园路5号",
        "330302001",
        "wuma.social",
        {
            "type": "mental_health",
            "start_date": "2026-03-01",
            "diagnosis": "精神分裂症",
            "risk_level": 1,
            "guardian": {"name": "林建华", "phone": "13905770012", "relation": "配偶"},
        },
    ),
    (
        "黄志明",
        "male",
        dt.date(1999, 1, 25),
        "357",
        "13905770003",
        "南汇街道锦江路88号",
        "330302002",
        "nanhui.social",
        {"type": "drug_rehab", "start_date": "2026-05-20", "mode": "community_detox"},
    ),
    (
        "吴大勇",
        "male",
        dt.date(1980, 6, 1),
        "463",
        "13905770004",
        "五马街道信河街3号",
        "330302001001",
        "wuma.social",
        {
            "type": "resettlement",
            "start_date": "2026-08-01",
            "release_date": "2026-08-01",
            "key_person": True,
        },
    ),
]


async def _ensure_subjects(services: Services, nodes: dict[str, Org]) -> int:
    created = 0
    for name, gender, born, seq, phone, address, org_code, worker, program in DEMO_SUBJECTS:
        first17 = f"330302{born:%Y%m%d}{seq}"
        try:
            view = await services.subjects.create(
                SYSTEM,
                SubjectInput(
                    name=name,
                    id_type=IdType.RESIDENT,
                    id_number=first17 + gb11643_check_digit(first17),
                    phone=phone,
                    gender=gender,
                    birth_date=born,
                    address=address,
                    org_id=nodes[org_code].id,
                ),
            )
        except Conflict:
            continue  # seeded by an earlier start
        worker_id = await services.staff.id_for_username(worker)
        await services.subjects.set_assignments(
            SYSTEM, view.id, [worker_id], [], [], services.staff.lookup
        )
        await services.programs.create(SYSTEM, view.id, program)
        created += 1
    return created


async def _ensure_role_request(services: Services, nodes: dict[str, Org]) -> None:
    username, name, role, org_code = PENDING_STAFF
    admin = await services.staff.find_for_login("admin")
    if admin is None or await services.staff.find_for_login(username) is not None:
        return
    as_admin = AuditContext(
        Identity(
            user_id=str(admin["_id"]),
            role=admin["role"],
            org_id=str(admin["org_id"]),
            org_path=tuple(admin["org_path"]),
        ),
        request_id="demo",
    )
    # Its one-time password is not kept: the administrator resets it once the role is granted.
    await services.staff.open_account(
        as_admin, username=username, name=name, role=role, org_id=nodes[org_code].id
    )


def _write_logins(path: Path, created: list[tuple[str, str, Role, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(descriptor, "a", encoding="utf-8") as out:
        for username, name, role, password in created:
            out.write(f"{role.value:24} {username:16} {password}  {name}\n")
    print(f"demo logins written to {path}")

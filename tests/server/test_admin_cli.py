"""The admin command line, the bootstrap administrator and the demo seed, on a real database."""

from __future__ import annotations

import dataclasses

from models.clock import SystemClock
from models.passwords import TEST_COST
from server.app import bootstrap_admin, build_services, open_vault
from server.config import Config
from server.demo import DEMO_STAFF, DEMO_SUBJECTS, seed_demo
from tests.process_support import Ran, run_in_process


async def admin(config: Config, *args: str) -> Ran:
    """`python -m server admin <args>` in this process: the commands are tested, not the process."""
    return await run_in_process(config, "admin", *args)


async def test_cli_builds_a_tree_and_accounts_that_can_log_in(store, config, tmp_path):
    city = await admin(
        config, "create-org", "--name", "温州市", "--code", "330300", "--kind", "city"
    )
    assert city.returncode == 0
    county = await admin(
        config,
        "create-org",
        "--name",
        "鹿城区司法局",
        "--code",
        "330302",
        "--kind",
        "county",
        "--parent-code",
        "330300",
    )
    assert county.returncode == 0
    wrong = await admin(
        config,
        "create-org",
        "--name",
        "错",
        "--code",
        "X9",
        "--kind",
        "grid",
        "--parent-code",
        "330300",
    )
    assert wrong.returncode == 1 and "cannot sit under" in wrong.stderr
    created = await admin(
        config,
        "create-staff",
        "--username",
        "lin.head",
        "--name",
        "林局长",
        "--role",
        "county_officer",
        "--org-code",
        "330302",
        "--agency-head",
    )
    assert created.returncode == 0, created.stderr
    temporary = created.stdout.rsplit("temporary password: ", 1)[1].strip()

    csv_file = tmp_path / "staff.csv"
    csv_file.write_text(
        "username,name,role,org_code,is_agency_head\nzhou.ke,周科员,county_officer,330302,0\n",
        encoding="utf-8",
    )
    out = tmp_path / "passwords.csv"
    imported = await admin(config, "import-staff", str(csv_file), "--passwords-out", str(out))
    assert imported.returncode == 0, imported.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    assert out.read_text(encoding="utf-8").startswith("username,temporary_password\nzhou.ke,")

    bad = tmp_path / "bad.csv"
    bad.write_text(
        "username,name,role,org_code\nok.user,好,county_officer,330302\n"
        "x,坏,county_officer,nowhere\n",
        encoding="utf-8",
    )
    refused = await admin(
        config, "import-staff", str(bad), "--passwords-out", str(tmp_path / "p2.csv")
    )
    assert refused.returncode == 1
    assert "'line': 3" in refused.stderr and "nothing was imported" in refused.stderr

    services = build_services(
        store, config, SystemClock(), await open_vault(config, store, SystemClock()), TEST_COST
    )
    doc = await services.staff.find_for_login("lin.head")
    assert doc["is_agency_head"] is True and doc["must_change_password"] is True
    assert await services.staff.find_for_login("ok.user") is None
    from models.passwords import PasswordHasher

    assert await PasswordHasher().verify(doc["password_hash"], temporary)
    assert (await admin(config, "disable", "lin.head")).returncode == 0
    assert (await services.staff.find_for_login("lin.head"))["disabled"] is True
    unknown = await admin(config, "reset-password", "nobody")
    assert unknown.returncode == 1 and "No such staff member" in unknown.stderr


async def test_bootstrap_admin_is_created_once(store, config):
    services = build_services(
        store, config, SystemClock(), await open_vault(config, store, SystemClock()), TEST_COST
    )
    with_admin = dataclasses.replace(config, bootstrap_admin="root.admin:Bootstrap-pass-1")
    assert await bootstrap_admin(services, with_admin) is True
    assert await bootstrap_admin(services, with_admin) is False
    doc = await services.staff.find_for_login("root.admin")
    assert doc["role"] == "sys_admin"


async def test_demo_seed_is_idempotent_and_writes_logins(store, config):
    first = await seed_demo(config)
    again = await seed_demo(config)
    assert first["staff_created"] == len(DEMO_STAFF)
    assert first["subjects_created"] == len(DEMO_SUBJECTS)
    assert again == {"orgs": first["orgs"], "staff_created": 0, "subjects_created": 0}
    logins = config.var_dir / "demo-logins.txt"
    assert logins.stat().st_mode & 0o777 == 0o600
    lines = logins.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(DEMO_STAFF)
    roles = {line.split()[0] for line in lines}
    assert len(roles) == 12  # every staff role

"""`python -m server admin ...`: the tree and staff accounts from the command line, audited."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

from models.audit import AuditContext
from models.clock import SystemClock
from models.crypto import Suite
from models.errors import DomainError
from models.hsm import Pkcs11MasterKey
from models.identity import Identity
from models.keys import LocalKeyFile, MasterKeyError
from models.orgs import OrgKind
from models.policy import Role
from models.staff import temporary_password
from server.app import (
    Services,
    build_services,
    collection_specs,
    connect_store,
    open_vault,
    wait_for_database,
)
from server.config import Config, ConfigError


def add_admin_commands(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="admin_command", required=True)
    org = commands.add_parser("create-org", help="add a node to the organisation tree")
    org.add_argument("--name", required=True)
    org.add_argument("--code", required=True, help="administrative code, unique")
    org.add_argument("--kind", required=True, choices=[k.value for k in OrgKind])
    org.add_argument("--parent-code", default=None, help="code of the parent (none for a city)")

    staff = commands.add_parser(
        "create-staff",
        help="create an account; prints a temporary password that must be changed at first login",
    )
    staff.add_argument("--username", required=True)
    staff.add_argument("--name", required=True)
    staff.add_argument("--role", required=True, choices=[r.value for r in Role])
    staff.add_argument("--org-code", required=True)
    staff.add_argument("--agency-head", action="store_true")

    imported = commands.add_parser("import-staff", help="import accounts from a UTF-8 CSV file")
    imported.add_argument("file", type=Path)
    imported.add_argument(
        "--passwords-out",
        type=Path,
        required=True,
        help="where to write the temporary passwords (created 0600)",
    )

    for name, help_text in (
        ("reset-password", "give an account a temporary password"),
        ("disable", "disable an account; its sessions end"),
        ("enable", "enable a disabled account"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("username")

    move = commands.add_parser("move", help="move an account to another node")
    move.add_argument("username")
    move.add_argument("--org-code", required=True)

    keys = commands.add_parser("keys", help="master-key rotation, data-key rotation, shredding")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    key_commands.add_parser(
        "rotate-master",
        help="a new master key rewraps every key (run again to finish an interrupted rotation)",
    )
    ceremony = key_commands.add_parser(
        "hsm-create",
        help="key ceremony: generate the master key inside the PKCS#11 token of "
        "ANBANG_MASTER_KEY (it never leaves the token); never replaces a key",
    )
    ceremony.add_argument(
        "--label", default=None, help="the new key's label (default: object= of the URI)"
    )
    retire = key_commands.add_parser(
        "retire-master", help="drop an old master key once no key and no backup still needs it"
    )
    retire.add_argument("kek_id")
    rotate_subject = key_commands.add_parser(
        "rotate-subject", help="re-encrypt one case file under a new data key"
    )
    rotate_subject.add_argument("subject_id")
    shred = key_commands.add_parser(
        "shred",
        help="crypto-shred a case file: destroy its data keys and blind indexes (irreversible)",
    )
    shred.add_argument("subject_id")


async def run_admin(config: Config, args: argparse.Namespace) -> int:
    if args.admin_command == "keys" and args.keys_command == "hsm-create":
        # Before any vault exists: the first start needs this key to open one.
        return _hsm_create(config, args.label)
    store = connect_store(config)
    try:
        await wait_for_database(store, config.db_wait_seconds)
        await store.ensure_indexes(collection_specs())
        vault = await open_vault(config, store, SystemClock())
        services = build_services(store, config, SystemClock(), vault)
        operator = f"cli:{getpass.getuser()}"
        ctx = AuditContext(
            Identity(user_id=operator, role="sys_admin", unscoped=True), request_id="cli"
        )
        try:
            return await _dispatch(services, ctx, args)
        except MasterKeyError as exc:
            print(f"anbang: {exc}", file=sys.stderr)
            return 1
        except DomainError as exc:
            print(f"anbang: {exc.message}", file=sys.stderr)
            for detail in exc.details or []:
                print(f"  {detail}", file=sys.stderr)
            return 1
        finally:
            # The command's audit chain ends with the command, its head anchored.
            await services.close()
    finally:
        await store.close()


async def _org_id(services: Services, code: str) -> str:
    org = await services.orgs.by_code(code)
    if org is None:
        raise DomainError(f"No organisation with code {code!r}.")
    return org.id


async def _dispatch(services: Services, ctx: AuditContext, args: argparse.Namespace) -> int:
    command = args.admin_command
    if command == "create-org":
        parent = await _org_id(services, args.parent_code) if args.parent_code else None
        org = await services.orgs.create(
            ctx,
            name=args.name,
            code=args.code,
            kind=OrgKind(args.kind),
            parent_id=parent,
        )
        print(f"created {org.kind} {org.code} ({org.id})")
        return 0
    if command == "create-staff":
        password = temporary_password()
        view = await services.staff.create(
            ctx,
            username=args.username,
            password=password,
            name=args.name,
            role=args.role,
            org_id=await _org_id(services, args.org_code),
            is_agency_head=args.agency_head,
            must_change_password=True,
        )
        print(f"created {view.role} {view.username} ({view.id}); temporary password: {password}")
        return 0
    if command == "import-staff":
        text = args.file.read_text(encoding="utf-8")
        accounts = await services.staff.import_csv(ctx, text)
        descriptor = os.open(args.passwords_out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            out.write("username,temporary_password\n")
            for account in accounts:
                out.write(f"{account.username},{account.temporary_password}\n")
        print(f"imported {len(accounts)} account(s); temporary passwords in {args.passwords_out}")
        return 0
    if command == "keys":
        return await _keys(services, ctx, args)
    staff_id = await services.staff.id_for_username(args.username)
    if command == "reset-password":
        password = await services.staff.reset_password(ctx, staff_id)
        print(f"temporary password for {args.username}: {password}")
    elif command in ("disable", "enable"):
        await services.staff.set_disabled(ctx, staff_id, command == "disable")
        print(f"{args.username} {command}d")
    elif command == "move":
        view = await services.staff.move(ctx, staff_id, await _org_id(services, args.org_code))
        print(f"{args.username} moved to {view.org_id}")
    return 0


def _hsm_create(config: Config, label: str | None) -> int:
    """Generate the master key on the token; prints its id for the ceremony record."""
    hsm = config.master_key_pkcs11
    if hsm is None:
        raise ConfigError(
            "hsm-create needs ANBANG_MASTER_KEY=pkcs11:module=...;token=...;object=... "
            "(it is `file`)"
        )
    token = Pkcs11MasterKey(
        hsm.module, hsm.token, label or hsm.object, config.pkcs11_pin, Suite(config.crypto_suite)
    )
    try:
        kek_id = token.create()
    except MasterKeyError as exc:
        print(f"anbang: {exc}", file=sys.stderr)
        return 1
    finally:
        token.close()
    print(
        f"created master key {kek_id} labelled {token.label!r} on {token.where}: AES-256, "
        "sensitive, not extractable"
    )
    if label and label != hsm.object:
        print(f"to rotate: set object={label} in ANBANG_MASTER_KEY, then run `keys rotate-master`")
    return 0


async def _keys(services: Services, ctx: AuditContext, args: argparse.Namespace) -> int:
    vault = services.vault
    master = vault.master
    if args.keys_command == "rotate-master":
        if not isinstance(master, LocalKeyFile | Pkcs11MasterKey):
            raise DomainError("Rotate a KMS master key with its own tools.")
        unfinished = await vault.kek_ids_in_use() - {master.current_id}
        if unfinished:
            print(f"resuming an unfinished rotation (keys still under {sorted(unfinished)})")
        elif isinstance(master, Pkcs11MasterKey):
            # The new key is made in a ceremony on the token; this only moves keys onto it.
            raise DomainError(
                f"Every key is already wrapped by {master.current_id}. To rotate, create a new "
                "key on the token (`keys hsm-create --label NEW`), set object=NEW in "
                "ANBANG_MASTER_KEY, then run rotate-master again."
            )
        else:
            print(f"new master key {master.add_new_current()}")
        async with services.audit.change(
            ctx, "keys.rotate_master", resource="key_vault", details={"to": master.current_id}
        ):
            count = await vault.rewrap_all()
        print(
            f"rewrapped {count} key(s) under {master.current_id}; restart the API and jobs "
            "processes so they wrap new keys with it"
        )
        return 0
    if args.keys_command == "retire-master":
        if not isinstance(master, LocalKeyFile | Pkcs11MasterKey):
            raise DomainError("Retire a KMS master key with its own tools.")
        if args.kek_id in await vault.kek_ids_in_use():
            raise DomainError(f"Keys are still wrapped by {args.kek_id}; run rotate-master first.")
        async with services.audit.change(
            ctx, "keys.retire_master", resource="key_vault", details={"kek_id": args.kek_id}
        ):
            master.retire(args.kek_id)
        print(f"retired {args.kek_id}")
        return 0
    if args.keys_command == "rotate-subject":
        new_id = await services.subjects.rotate_data_key(ctx, args.subject_id)
        print(f"case file {args.subject_id} re-encrypted under {new_id}")
        return 0
    await services.subjects.shred(ctx, args.subject_id)
    print(f"case file {args.subject_id} shredded")
    return 0

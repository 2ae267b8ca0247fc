"""`python -m server backup keygen | export | restore | compare`: sealed database archives."""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import json
import sys
from pathlib import Path
from typing import Any

from pymongo.errors import PyMongoError

from models.audit import AuditContext, AuditService, ChainAnchor
from models.backup import BackupError, BackupKey, BackupKeyError, BackupService
from models.clock import SystemClock
from models.crypto import Suite
from models.identity import Identity
from models.keys import LocalKeyFile, MasterKeyError
from server.app import DatabaseNotReady, connect_store, open_vault, wait_for_database
from server.config import Config

# compare: 0 identical, 1 different; every command: 2 when it was refused or could not run
# (a wrong key, a damaged archive, a database that is not empty or not reachable).
IDENTICAL, DIFFERENT, REFUSED = 0, 1, 2


def add_backup_commands(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="backup_command", required=True)
    keygen = commands.add_parser(
        "keygen", help="make a new random backup key file (0600); an existing file is kept"
    )
    keygen.add_argument(
        "--out", type=Path, default=None, help="the key file (default: ANBANG_BACKUP_KEY_FILE)"
    )

    export = commands.add_parser(
        "export", help="write every collection, with its indexes, to a new sealed archive"
    )
    export.add_argument("--out", type=Path, required=True, help="the archive (must not exist)")
    _key_option(export)

    restore = commands.add_parser(
        "restore",
        help="restore an archive into an empty database, once the whole archive authenticates",
    )
    restore.add_argument("--from", dest="source", type=Path, required=True, help="the archive")
    _key_option(restore)
    restore.add_argument(
        "--db-name",
        default=None,
        help="the target database, which must be empty (default: ANBANG_DB_NAME)",
    )

    compare = commands.add_parser(
        "compare",
        help="compare a database with an archive or another database: "
        "exit 0 identical, 1 different, 2 refused",
    )
    against = compare.add_mutually_exclusive_group(required=True)
    against.add_argument("--from", dest="source", type=Path, default=None, help="the archive")
    against.add_argument(
        "--with-db", default=None, help="another database on the same server, instead"
    )
    _key_option(compare)
    compare.add_argument(
        "--db-name", default=None, help="the database to check (default: ANBANG_DB_NAME)"
    )


def _key_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--key-file",
        type=Path,
        default=None,
        help="the backup key (default: ANBANG_BACKUP_KEY_FILE)",
    )


def _emit(document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(document, ensure_ascii=False) + "\n")


def _complain(text: str) -> None:
    sys.stderr.write(text + "\n")


def _same_file(a: Path, b: Path) -> bool:
    return a.expanduser().resolve() == b.expanduser().resolve()


def _backup_key_path(config: Config, given: Path | None) -> Path:
    path = given or config.backup_key_file
    # The backup key seals archives that contain the wrapped keys: were it the master key, one
    # stolen file would open both.
    if _same_file(path, config.master_key_file):
        raise BackupKeyError(
            f"{path} is the master key file; a backup key is a key of its own "
            "(`python -m server backup keygen --out FILE`)"
        )
    return path


def _operator() -> AuditContext:
    return AuditContext(
        Identity(user_id=f"cli:{getpass.getuser()}", role="sys_admin", unscoped=True),
        request_id="cli-backup",
    )


def _missing_master_keys(config: Config, needed: list[str]) -> list[str]:
    """The master keys the restored key vault needs that the configured key file lacks."""
    provider = LocalKeyFile(config.master_key_file, Suite(config.crypto_suite))
    try:
        provider.load()
    except MasterKeyError:
        return sorted(needed)
    return sorted(set(needed) - set(provider.key_ids))


async def run_backup(config: Config, args: argparse.Namespace) -> int:
    command = args.backup_command
    try:
        if command == "keygen":
            path = _backup_key_path(config, args.out)
            key = BackupKey.generate(path)
            _emit({"key_file": str(path), "backup_key_id": key.key_id})
            return IDENTICAL
        if command == "export":
            return await _export(config, args)
        if command == "restore":
            return await _restore(config, args)
        return await _compare(config, args)
    except (BackupError, DatabaseNotReady, MasterKeyError) as exc:
        _complain(f"anbang: backup {command} refused: {exc}")
        return REFUSED
    except PyMongoError as exc:
        _complain(f"anbang: backup {command} failed: {type(exc).__name__}: {exc}")
        return REFUSED


async def _export(config: Config, args: argparse.Namespace) -> int:
    key = BackupKey.load(_backup_key_path(config, args.key_file))
    store = connect_store(config)
    try:
        await wait_for_database(store, config.db_wait_seconds)
        clock = SystemClock()
        # The export is audited in the database it reads (an export of case data, even sealed),
        # in a keyed chain anchored when it opens and when the export ends.
        vault = await open_vault(config, store, clock)
        audit = AuditService(
            store,
            clock,
            vault.suite,
            process_role="backup",
            anchor=ChainAnchor(vault, config.audit_export),
        )
        try:
            summary = await BackupService(store, clock, audit).export(
                args.out, key, ctx=_operator()
            )
        finally:
            await audit.close()
    finally:
        await store.close()
    _emit(summary.as_json())
    return IDENTICAL


async def _restore(config: Config, args: argparse.Namespace) -> int:
    key = BackupKey.load(_backup_key_path(config, args.key_file))
    target = dataclasses.replace(config, db_name=args.db_name or config.db_name)
    store = connect_store(target)
    try:
        await wait_for_database(store, config.db_wait_seconds)
        # Not audited in the restored database: it must stay identical to the archive (the
        # archive's own audit log comes back whole). This summary is the record of the restore.
        summary = await BackupService(store, SystemClock()).restore(args.source, key)
    finally:
        await store.close()
    result = summary.as_json()
    missing = _missing_master_keys(config, summary.master_key_ids)
    result["master_key_file"] = str(config.master_key_file)
    result["master_keys_missing"] = missing
    _emit(result)
    if missing:
        _complain(
            f"anbang: warning: the restored key vault needs master key(s) {', '.join(missing)}, "
            f"which {config.master_key_file} does not hold: bring back the master key file that "
            "was in use when the backup was made, or nothing in it can be read"
        )
    return IDENTICAL


async def _compare(config: Config, args: argparse.Namespace) -> int:
    target = dataclasses.replace(config, db_name=args.db_name or config.db_name)
    store = connect_store(target)
    try:
        await wait_for_database(store, config.db_wait_seconds)
        service = BackupService(store, SystemClock())
        if args.source is not None:
            key = BackupKey.load(_backup_key_path(config, args.key_file))
            comparison = await service.compare_with_archive(args.source, key)
        else:
            other = connect_store(dataclasses.replace(config, db_name=args.with_db))
            try:
                comparison = await service.compare_with_database(other)
            finally:
                await other.close()
    finally:
        await store.close()
    _emit(comparison.as_json())
    for difference in comparison.differences:
        _complain(f"DIFFERENT: {difference}")
    return IDENTICAL if comparison.identical else DIFFERENT

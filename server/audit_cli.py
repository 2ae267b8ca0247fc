"""`python -m server audit verify`: every audit chain against the export (anchors, checkpoints)."""

from __future__ import annotations

import argparse
from pathlib import Path

from models.audit import (
    MAC_KEY_ID,
    SIGNING_KEY_ID,
    is_anchor,
    read_exported_checkpoints,
    verify_audit,
)
from models.clock import SystemClock
from models.crypto import public_key
from models.keys import KeyShredded, KeyUnknown
from server.app import collection_specs, connect_store, open_vault, wait_for_database
from server.config import Config


def add_audit_commands(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="audit_command", required=True)
    verify = commands.add_parser(
        "verify",
        help="detect edited, deleted, reordered or truncated entries and missing chains, "
        "against the chain anchors and signed checkpoints of the export file",
    )
    verify.add_argument(
        "--checkpoints",
        type=Path,
        default=None,
        help="the exported checkpoint file (default: ANBANG_AUDIT_EXPORT)",
    )


async def run_audit(config: Config, args: argparse.Namespace) -> int:
    store = connect_store(config)
    try:
        await wait_for_database(store, config.db_wait_seconds)
        await store.ensure_indexes(collection_specs())
        vault = await open_vault(config, store, SystemClock())
        try:
            signing = await vault.get(SIGNING_KEY_ID)
            verify_key: bytes | None = public_key(vault.suite, signing)
        except (KeyShredded, KeyUnknown):
            verify_key = None  # no checkpoint was ever signed
        try:
            mac_key: bytes | None = await vault.get(MAC_KEY_ID)
        except (KeyShredded, KeyUnknown):
            mac_key = None  # no keyed chain was ever opened (or the key was deleted: see below)
        path = args.checkpoints or config.audit_export
        exported = read_exported_checkpoints(path)
        checkpoints = [line for line in exported if not is_anchor(line)]
        if checkpoints and verify_key is None:
            # Checkpoints that cannot be checked vouch for nothing: the key was deleted.
            print(
                "AUDIT LOG BROKEN: there are signed checkpoints but no audit signing key "
                "to check them with (was it deleted from the key vault?)"
            )
            return 1
        report = await verify_audit(store, vault.suite, verify_key, exported, mac_key)
    finally:
        await store.close()
    if report.ok:
        print(
            f"audit log intact: {report.chains} chain(s), {report.entries} entries, "
            f"{len(checkpoints)} checkpoint(s) and {report.anchors} chain anchor(s) from {path}"
        )
        if report.unkeyed:
            # Verified, but by plain digests anyone could recompute: written before keyed chains.
            print(f"{report.unkeyed} chain(s) use plain digests (written before keyed chains)")
        return 0
    print(f"AUDIT LOG BROKEN: {report.problem}")
    return 1

"""The audit log: hash-chained entries per process, signed checkpoints, and verification.

Every process opens its own chain after it starts (never before a fork) and registers it. Each
entry carries its chain, a sequence number, the previous entry's hash and its own hash, so an
edited, deleted, reordered or truncated entry breaks the chain; checkpoints of every chain's head,
signed with a key API processes never hold and exported outside the database, catch a deleted
chain or a truncated tail.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.errors import DuplicateKeyError

from models import crypto
from models.clock import Clock
from models.errors import DomainError
from models.policy import Identity
from models.store import CollectionSpec, Store, as_unavailable

# Every index is paid for on every audited request, so only the questions people ask get one:
# who touched this file, this record, and what did this person do. An entry's _id is
# "<chain>:<seq, zero-padded>", so the _id index already orders each chain for verification.
AUDIT = CollectionSpec(
    "audit",
    (
        IndexModel([("subject_id", ASCENDING), ("at", DESCENDING)]),
        IndexModel([("resource_id", ASCENDING), ("at", DESCENDING)]),
        IndexModel([("actor_id", ASCENDING), ("at", DESCENDING)]),
    ),
)


def entry_id(chain_id: str, seq: int) -> str:
    return f"{chain_id}:{seq:012d}"


def chain_range(chain_id: str) -> dict[str, Any]:
    """The _id range of one chain's entries (":" sorts just before ";")."""
    return {"_id": {"$gt": f"{chain_id}:", "$lt": f"{chain_id};"}}


AUDIT_CHAINS = CollectionSpec("audit_chains")
AUDIT_CHECKPOINTS = CollectionSpec("audit_checkpoints", (IndexModel([("at", DESCENDING)]),))

GENESIS = "0" * 64
SIGNING_KEY_ID = "audit-signing"
# The fields an entry's hash covers: everything but its own id and hash.
_UNHASHED = frozenset({"_id", "hash"})


@dataclass(frozen=True)
class AuditContext:
    """Request facts every entry carries; handlers build it, services pass it on."""

    identity: Identity
    request_id: str | None = None
    remote_ip: str | None = None


def _canonical(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat(timespec="milliseconds")
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def entry_hash(suite: crypto.Suite, entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k not in _UNHASHED}
    text = json.dumps(_canonical(body), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return crypto.digest(suite, text.encode("utf-8"))


def _now_ms(clock: Clock) -> dt.datetime:
    # The database keeps milliseconds: hash what will be read back.
    now = clock.now()
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class AuditService:
    """Appends entries to this process's chain; entries are never updated."""

    collections = (AUDIT, AUDIT_CHAINS, AUDIT_CHECKPOINTS)

    def __init__(
        self,
        store: Store,
        clock: Clock,
        suite: crypto.Suite = crypto.Suite.STANDARD,
        process_role: str = "api",
    ):
        self._entries = store.collection(AUDIT)
        self._chains = store.collection(AUDIT_CHAINS)
        self._clock = clock
        self._suite = suite
        self._role = process_role
        # Appends within a process are serialised: each entry names the one before it.
        self._lock = asyncio.Lock()
        self._chain_id: str | None = None
        self._seq = 0
        self._head = GENESIS

    @property
    def chain_id(self) -> str | None:
        return self._chain_id

    async def _open_chain(self) -> None:
        chain_id = uuid.uuid4().hex
        await self._chains.insert_one(
            {
                "_id": chain_id,
                "opened_at": _now_ms(self._clock),
                "role": self._role,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "suite": str(self._suite),
            }
        )
        self._chain_id, self._seq, self._head = chain_id, 0, GENESIS
        await self._append(
            {
                "at": _now_ms(self._clock),
                "action": "chain.open",
                "resource": "audit_chain",
                "resource_id": chain_id,
                "outcome": "ok",
            }
        )

    async def _append(self, fields: dict[str, Any]) -> str:
        assert self._chain_id is not None
        while True:
            seq = self._seq + 1
            entry = {**fields, "chain_id": self._chain_id, "seq": seq, "prev": self._head}
            entry["hash"] = entry_hash(self._suite, entry)
            entry["_id"] = entry_id(self._chain_id, seq)
            try:
                await self._entries.insert_one(entry)
            except DuplicateKeyError:
                # An earlier insert whose acknowledgement was lost did land: adopt it as the
                # head and chain this entry after it.
                existing = await self._entries.find_one({"_id": entry["_id"]})
                if existing is None:
                    raise
                self._seq, self._head = seq, existing["hash"]
                if existing["hash"] == entry["hash"]:
                    return str(entry["_id"])
                continue
            self._seq, self._head = seq, entry["hash"]
            return str(entry["_id"])

    async def record(
        self,
        ctx: AuditContext,
        action: str,
        *,
        resource: str,
        resource_id: str | None = None,
        subject_id: str | None = None,
        outcome: str = "ok",
        reason: str | None = None,
        details: dict[str, Any] | None = None,
        actor_id: str | None = None,
    ) -> str:
        """Append one entry and answer its id. `details` must never hold personal data: ids,
        counts, codes and blind-index values only."""
        fields = {
            "at": _now_ms(self._clock),
            "actor_id": actor_id or ctx.identity.user_id,
            "role": ctx.identity.role,
            "action": action,
            "resource": resource,
            "resource_id": resource_id,
            "subject_id": subject_id,
            "outcome": outcome,
            "reason": reason,
            "details": details or {},
            "request_id": ctx.request_id,
            "remote_ip": ctx.remote_ip,
        }
        async with self._lock:
            if self._chain_id is None:
                await self._open_chain()
            return await self._append(fields)

    @contextlib.asynccontextmanager
    async def change(
        self,
        ctx: AuditContext,
        action: str,
        *,
        resource: str,
        resource_id: str | None = None,
        subject_id: str | None = None,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
        confirm: bool = True,
    ) -> AsyncIterator[str]:
        """Write the entry before the change it records, then one recording its outcome: a change
        can never exist without an entry, and an entry whose change failed says so.

        `confirm=False` (for a hot path such as a check-in): success writes no outcome entry
        because the changed record itself names the entry it follows; failures still do."""
        entry_id = await self.record(
            ctx,
            action,
            resource=resource,
            resource_id=resource_id,
            subject_id=subject_id,
            outcome="pending",
            reason=reason,
            details=details,
        )
        try:
            yield entry_id
        except DomainError as exc:
            await self._outcome(
                ctx, action, entry_id, resource, resource_id, subject_id, f"refused:{exc.code}"
            )
            raise
        except BaseException as exc:
            # A database outage may hide a write that landed (its acknowledgement lost): the
            # outcome is unknown, not failed; a retry settles it with its own entry.
            outcome = "unknown" if as_unavailable(exc) is not None else "failed"
            with contextlib.suppress(Exception):
                await self._outcome(
                    ctx, action, entry_id, resource, resource_id, subject_id, outcome
                )
            raise
        if confirm:
            await self._outcome(ctx, action, entry_id, resource, resource_id, subject_id, "ok")

    async def _outcome(
        self,
        ctx: AuditContext,
        action: str,
        entry_id: str,
        resource: str,
        resource_id: str | None,
        subject_id: str | None,
        outcome: str,
    ) -> None:
        await self.record(
            ctx,
            f"{action}.outcome",
            resource=resource,
            resource_id=resource_id,
            subject_id=subject_id,
            outcome=outcome,
            details={"entry": entry_id},
        )

    async def entries_for(self, resource_id: str, limit: int = 100) -> list[dict[str, Any]]:
        cursor = self._entries.find({"resource_id": resource_id}).sort("at", DESCENDING)
        return [entry async for entry in cursor.limit(limit)]

    async def entries_for_subject(self, subject_id: str, limit: int = 200) -> list[dict[str, Any]]:
        cursor = self._entries.find({"subject_id": subject_id}).sort(
            [("at", DESCENDING), ("seq", DESCENDING)]
        )
        return [entry async for entry in cursor.limit(limit)]


# --- checkpoints and verification ------------------------------------------------------------


def _checkpoint_message(document: dict[str, Any]) -> bytes:
    body = {k: document[k] for k in ("at", "heads", "previous")}
    return json.dumps(_canonical(body), sort_keys=True, separators=(",", ":")).encode()


class AuditCheckpointer:
    """Signs the heads of every chain (jobs process only) and exports them outside the database."""

    def __init__(
        self, store: Store, clock: Clock, suite: crypto.Suite, signing_key: bytes, export_path: Path
    ):
        self._entries = store.collection(AUDIT)
        self._chains = store.collection(AUDIT_CHAINS)
        self._checkpoints = store.collection(AUDIT_CHECKPOINTS)
        self._clock = clock
        self._suite = suite
        self._key = signing_key
        self._export = export_path

    async def heads(self) -> dict[str, dict[str, Any]]:
        heads: dict[str, dict[str, Any]] = {}
        async for chain in self._chains.find({}, {"_id": 1}):
            last = await self._entries.find_one(
                chain_range(chain["_id"]), sort=[("_id", DESCENDING)]
            )
            if last is not None:
                heads[chain["_id"]] = {"seq": last["seq"], "hash": last["hash"]}
        return heads

    async def checkpoint(self) -> dict[str, Any]:
        previous = await self._checkpoints.find_one({}, sort=[("at", DESCENDING)])
        document: dict[str, Any] = {
            "_id": uuid.uuid4().hex,
            "at": _now_ms(self._clock),
            "heads": await self.heads(),
            "previous": previous["_id"] if previous else None,
            "suite": str(self._suite),
        }
        document["signature"] = crypto.sign(
            self._suite, self._key, _checkpoint_message(document)
        ).hex()
        await self._checkpoints.insert_one(document)
        self._export.parent.mkdir(parents=True, exist_ok=True)
        with self._export.open("a", encoding="utf-8") as out:
            out.write(json.dumps(_canonical(document), sort_keys=True) + "\n")
            out.flush()
            os.fsync(out.fileno())
        return document


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    chains: int
    entries: int
    problem: str | None = None


def read_exported_checkpoints(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


async def verify_audit(
    store: Store,
    suite: crypto.Suite,
    public_key: bytes | None,
    checkpoints: Iterable[dict[str, Any]],
) -> VerifyReport:
    """Walk every chain; the first break found is named (chain, sequence number, what broke)."""
    entries_coll = store.collection(AUDIT)
    chains = [doc["_id"] async for doc in store.collection(AUDIT_CHAINS).find({}, {"_id": 1})]
    seen_entries = 0
    heads: dict[str, tuple[int, str]] = {}
    for chain_id in chains:
        expected_seq, prev = 1, GENESIS
        async for entry in entries_coll.find(chain_range(chain_id)).sort("_id", ASCENDING):
            seen_entries += 1
            where = f"chain {chain_id} entry {entry.get('seq')}"
            if entry.get("seq") != expected_seq:
                return VerifyReport(
                    False,
                    len(chains),
                    seen_entries,
                    f"{where}: expected entry {expected_seq} (an entry was deleted or reordered)",
                )
            if entry.get("prev") != prev:
                return VerifyReport(
                    False,
                    len(chains),
                    seen_entries,
                    f"{where}: does not follow the entry before it (reordered or replaced)",
                )
            if entry_hash(suite, entry) != entry.get("hash"):
                return VerifyReport(
                    False,
                    len(chains),
                    seen_entries,
                    f"{where}: its content does not match its hash (edited)",
                )
            prev = entry["hash"]
            expected_seq += 1
        heads[chain_id] = (expected_seq - 1, prev)

    previous_id: str | None = None
    for index, checkpoint in enumerate(checkpoints):
        label = f"checkpoint {checkpoint.get('_id')} of {checkpoint.get('at')}"
        # Each checkpoint names the one before it: a line removed from the export shows.
        if index > 0 and checkpoint.get("previous") != previous_id:
            return VerifyReport(
                False,
                len(chains),
                seen_entries,
                f"{label}: does not follow the checkpoint before it "
                "(a checkpoint was removed from the export)",
            )
        previous_id = checkpoint.get("_id")
        if public_key is not None:
            signature = bytes.fromhex(checkpoint.get("signature", ""))
            if not crypto.verify_signature(
                suite, public_key, _checkpoint_message(checkpoint), signature
            ):
                return VerifyReport(False, len(chains), seen_entries, f"{label}: bad signature")
        for chain_id, head in checkpoint.get("heads", {}).items():
            if chain_id not in heads:
                return VerifyReport(
                    False,
                    len(chains),
                    seen_entries,
                    f"{label}: chain {chain_id} is missing (deleted)",
                )
            last_seq, _ = heads[chain_id]
            if last_seq < head["seq"]:
                return VerifyReport(
                    False,
                    len(chains),
                    seen_entries,
                    f"chain {chain_id}: ends at entry {last_seq} but {label} "
                    f"saw entry {head['seq']} (truncated)",
                )
            entry = await entries_coll.find_one({"_id": entry_id(chain_id, head["seq"])})
            if entry is None or entry.get("hash") != head["hash"]:
                return VerifyReport(
                    False,
                    len(chains),
                    seen_entries,
                    f"chain {chain_id} entry {head['seq']}: differs from {label}",
                )
    return VerifyReport(True, len(chains), seen_entries)

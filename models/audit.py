"""The audit log: keyed chains of entries per process, anchors and signed checkpoints, verification.

Every process opens its own chain after it starts (never before a fork) and registers it. Each
entry carries its chain, a sequence number, the previous entry's link and its own link (a MAC
under the vault's audit MAC key; chains written before keyed chains used a plain digest), so an
edited, deleted, reordered or truncated entry breaks the chain, and one rewritten with a
recomputed digest does not pass. A chain's opening and closing are anchored at once in the export
file outside the database (MACed), and checkpoints of every chain's head, signed with a key API
processes never hold, are appended there too: a chain deleted before any checkpoint, or a tail
cut after its process ended, is caught.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import json
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.errors import DuplicateKeyError

from models import crypto
from models.clock import Clock
from models.codec import FieldCodec, trail_key_id
from models.errors import DomainError
from models.identity import Identity
from models.keys import KeyShredded, KeyVault
from models.store import CollectionSpec, OrderedWriteError, Store, Write, as_unavailable

# Every index is paid for on every audited request, so only the questions people ask get one:
# who touched this file, this record, and what did this person do. An entry's _id is
# "<chain>:<seq, zero-padded>", so the _id index already orders each chain for verification.
AUDIT = CollectionSpec(
    "audit",
    (
        IndexModel([("subject_id", ASCENDING), ("at", DESCENDING)]),
        IndexModel([("resource_id", ASCENDING), ("at", DESCENDING)]),
        IndexModel([("actor_id", ASCENDING), ("at", DESCENDING)]),
        # The audit administrator's questions: logins and administrative changes by action,
        # refusals by outcome, each over a span of time (`events`).
        IndexModel([("action", ASCENDING), ("at", DESCENDING)]),
        IndexModel([("outcome", ASCENDING), ("at", DESCENDING)]),
    ),
)

# The entries the audit administrator's view shows as logins and as administrative changes.
LOGIN_ACTIONS = ("auth.login", "auth.logout")
ADMIN_ACTIONS = (
    "staff.create",
    "staff.import",
    "staff.grant_role",
    "staff.reset_password",
    "staff.disable",
    "staff.enable",
    "staff.move",
    "orgs.create",
    "orgs.area",
    "rules.propose",
    "rules.confirm",
    "rules.refuse",
    "rules.override",
    "backup.export",
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
# The MAC key every process holds (API processes included): it links entries and authenticates
# anchors, so the database alone can neither rewrite an entry nor forge an anchor. Signatures
# stay with the signing key, which only the jobs process unwraps.
MAC_KEY_ID = "audit-mac"
MAC_KEY_PURPOSE = "audit_mac"
# The fields an entry's hash covers: everything but its own id and hash.
_UNHASHED = frozenset({"_id", "hash"})
# Domain separation: an entry's MAC can never pass for an anchor's, nor the reverse.
_ENTRY_MAC_LABEL = b"anbang/audit-entry/v1\x00"
_ANCHOR_MAC_LABEL = b"anbang/audit-anchor/v1\x00"


class ChainScheme(enum.StrEnum):
    """How a chain links its entries; each chain records its own."""

    # A plain SHA-256 or SM3 digest: chains written before keyed chains, still verified.
    DIGEST = "digest"
    # HMAC-SHA-256 or HMAC-SM3 under the vault's audit MAC key.
    MAC = "mac"


@dataclass(frozen=True)
class AuditContext:
    """Request facts every entry carries; handlers build it, services pass it on."""

    identity: Identity
    request_id: str | None = None
    remote_ip: str | None = None
    # The client's own X-Request-Id: kept for correlation, never the id entries are keyed by.
    client_request_id: str | None = None


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


def _entry_text(entry: dict[str, Any]) -> bytes:
    body = {k: v for k, v in entry.items() if k not in _UNHASHED}
    text = json.dumps(_canonical(body), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8")


def entry_hash(suite: crypto.Suite, entry: dict[str, Any]) -> str:
    """The plain digest link of a `digest` chain (anyone can recompute it)."""
    return crypto.digest(suite, _entry_text(entry))


def entry_mac(suite: crypto.Suite, key: bytes, entry: dict[str, Any]) -> str:
    """The keyed link of a `mac` chain: only a holder of the audit MAC key can compute it."""
    return crypto.keyed_hash(suite, key, _ENTRY_MAC_LABEL + _entry_text(entry)).hex()


def entry_link(suite: crypto.Suite, key: bytes | None, entry: dict[str, Any]) -> str:
    return entry_hash(suite, entry) if key is None else entry_mac(suite, key, entry)


def _anchor_message(anchor: dict[str, Any]) -> bytes:
    body = {k: v for k, v in anchor.items() if k != "mac"}
    text = json.dumps(_canonical(body), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return _ANCHOR_MAC_LABEL + text.encode("utf-8")


def anchor_mac(suite: crypto.Suite, key: bytes, anchor: dict[str, Any]) -> str:
    return crypto.keyed_hash(suite, key, _anchor_message(anchor)).hex()


def append_export(path: Path, document: dict[str, Any]) -> None:
    """One line appended with one write (O_APPEND: lines of concurrent processes never
    interleave), synced before the caller goes on."""
    line = (json.dumps(_canonical(document), sort_keys=True) + "\n").encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        written = os.write(descriptor, line)
        if written != len(line):
            raise OSError(f"short write to {path}: {written} of {len(line)} bytes")
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class ChainAnchor:
    """Anchors each chain's opening and closing in the export file, outside the database.

    A line carries a MAC under the audit MAC key, which the database alone cannot compute: a
    chain opened since the last checkpoint cannot vanish with its registry record unseen, and a
    process's final head is known even when no checkpoint followed it."""

    def __init__(self, vault: KeyVault, export_path: Path):
        self._vault = vault
        self.path = export_path

    async def mac_key(self) -> bytes:
        return await self._vault.get_or_create(MAC_KEY_ID, MAC_KEY_PURPOSE)

    def write(self, suite: crypto.Suite, key: bytes, anchor: dict[str, Any]) -> None:
        append_export(self.path, {**anchor, "mac": anchor_mac(suite, key, anchor)})


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
        *,
        anchor: ChainAnchor | None = None,
        codec: FieldCodec | None = None,
    ):
        self._store = store
        self._entries = store.collection(AUDIT)
        self._chains = store.collection(AUDIT_CHAINS)
        self._clock = clock
        self._suite = suite
        self._role = process_role
        # Without an anchor (tests of the chain mechanics only) chains are plain digests.
        self._anchor = anchor
        # Seals a reason given about a person under that person's key (None: kept as given).
        self._codec = codec
        self._key: bytes | None = None
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
        key = await self._anchor.mac_key() if self._anchor is not None else None
        scheme = ChainScheme.DIGEST if key is None else ChainScheme.MAC
        opened: dict[str, Any] = {
            "opened_at": _now_ms(self._clock),
            "role": self._role,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "suite": str(self._suite),
            "scheme": str(scheme),
        }
        await self._chains.insert_one({"_id": chain_id, **opened})
        self._key = key
        self._chain_id, self._seq, self._head = chain_id, 0, GENESIS
        try:
            await self._append(
                {
                    "at": opened["opened_at"],
                    "action": "chain.open",
                    "resource": "audit_chain",
                    "resource_id": chain_id,
                    "outcome": "ok",
                    "scheme": str(scheme),
                }
            )
            if self._anchor is not None and key is not None:
                # Anchored before any entry of this chain is acknowledged: deleting the chain
                # with its registry record, before any checkpoint, still leaves this line.
                genesis = {"seq": self._seq, "hash": self._head}
                # `at` like every line of the export, so one filter by time selects them all.
                at = {"at": opened["opened_at"]}
                anchor = {"kind": "chain.open", "chain_id": chain_id, **at, **opened, **genesis}
                self._anchor.write(self._suite, key, anchor)
        except BaseException:
            # Unanchored, the chain is abandoned: the next entry opens another.
            self._chain_id = None
            raise

    async def close(self) -> None:
        """End this process's chain (graceful shutdown, the end of a command): its head is
        anchored outside the database, so a tail cut after the process ended is caught. Nothing
        is written to the database (a backup's archive stays identical to it, a process stops
        even with the database gone); an entry recorded later opens a new chain."""
        async with self._lock:
            chain_id, self._chain_id = self._chain_id, None
            if chain_id is None or self._anchor is None or self._key is None:
                return
            head = {"seq": self._seq, "hash": self._head}
            at = _now_ms(self._clock)
            anchor = {"kind": "chain.close", "chain_id": chain_id, "at": at, **head}
            self._anchor.write(self._suite, self._key, anchor)

    async def _append(
        self, fields: dict[str, Any], then: Callable[[str], Sequence[Write]] | None = None
    ) -> str:
        """Append one entry; with `then`, the writes `then(entry id)` follow it in one ordered
        batch (OrderedWriteError from them: the entry stands, the head moved past it)."""
        assert self._chain_id is not None
        while True:
            seq = self._seq + 1
            entry = {**fields, "chain_id": self._chain_id, "seq": seq, "prev": self._head}
            entry["hash"] = entry_link(self._suite, self._key, entry)
            entry["_id"] = entry_id(self._chain_id, seq)
            try:
                if then is None:
                    await self._entries.insert_one(entry)
                else:
                    await self._append_batch(entry, then)
                    return str(entry["_id"])
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

    async def _append_batch(
        self, entry: dict[str, Any], then: Callable[[str], Sequence[Write]]
    ) -> None:
        """The entry and the writes it records, in one ordered batch (the caller holds the
        lock, as every append does: the next entry names this one as its predecessor)."""
        entry_id_ = str(entry["_id"])
        try:
            await self._store.write_ordered([Write(AUDIT.name, entry), *then(entry_id_)])
        except OrderedWriteError as exc:
            if exc.index == 0:
                # The entry itself: a duplicate (an earlier append whose acknowledgement was
                # lost) goes back to `_append`, which adopts it and chains after it.
                raise exc.cause from None
            self._seq, self._head = int(entry["seq"]), str(entry["hash"])
            exc.entry_id = entry_id_
            raise
        self._seq, self._head = int(entry["seq"]), str(entry["hash"])

    async def record_with(
        self,
        ctx: AuditContext,
        action: str,
        writes: Callable[[str], Sequence[Write]],
        *,
        resource: str,
        resource_id: str | None = None,
        subject_id: str | None = None,
        details: dict[str, Any] | None = None,
        outcome: str = "pending",
    ) -> str:
        """The entry for a change, and the change's own writes (`writes(entry id)`), in one
        ordered batch with the entry first: the change never lands without it. Success writes
        no outcome entry (the changed record names the entry, as `change(confirm=False)`); a
        write after the entry refused raises OrderedWriteError, its outcome recorded as
        refused. An outage leaves the batch's fate unknown: the retry settles it. `outcome`
        "ok" is for writes nothing but an outage can refuse (a new session under a random id):
        the audit administrator reads a login as done, and a failure still adds its outcome."""
        fields = self._fields(
            ctx, action, resource, resource_id, subject_id, outcome, None, details, None
        )
        try:
            async with self._lock:
                if self._chain_id is None:
                    await self._open_chain()
                return await self._append(fields, writes)
        except OrderedWriteError as exc:
            # A duplicate is the record's unique key (a retry or a concurrent twin).
            outcome = "refused:duplicate" if isinstance(exc.cause, DuplicateKeyError) else "failed"
            # The entry stands (the batch stopped after it): say what became of its change.
            if exc.entry_id is not None:
                with contextlib.suppress(Exception):
                    await self._outcome(
                        ctx, action, exc.entry_id, resource, resource_id, subject_id, outcome
                    )
            raise

    def _fields(
        self,
        ctx: AuditContext,
        action: str,
        resource: str,
        resource_id: str | None,
        subject_id: str | None,
        outcome: str,
        reason: Any,
        details: dict[str, Any] | None,
        actor_id: str | None,
    ) -> dict[str, Any]:
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
        if ctx.client_request_id is not None:
            fields["client_request_id"] = ctx.client_request_id
        return fields

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
        counts, codes and blind-index values only. A `reason` about a person (`subject_id`)
        is free text someone wrote: it is stored sealed under the person's key."""
        if reason is not None and subject_id is not None and self._codec is not None:
            reason = await self._seal_reason(subject_id, reason)
        fields = self._fields(
            ctx, action, resource, resource_id, subject_id, outcome, reason, details, actor_id
        )
        async with self._lock:
            if self._chain_id is None:
                await self._open_chain()
            return await self._append(fields)

    async def _seal_reason(self, subject_id: str, reason: Any) -> Any:
        if not isinstance(reason, str):
            return reason  # sealed by the caller already
        assert self._codec is not None
        try:
            return await self._codec.seal(
                subject_id, trail_key_id(subject_id), "audit", subject_id, "reason", reason
            )
        except KeyShredded:
            # The person was erased: what is written about them is not kept in the clear.
            return None

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

    async def events(
        self,
        ctx: AuditContext,
        kind: str,
        since: dt.datetime,
        until: dt.datetime,
        *,
        actor_id: str | None = None,
        limit: int = 100,
        staff: Any = None,
    ) -> list[dict[str, Any]]:
        """The audit administrator's view (三员分立): logins and logouts, refusals, or the
        administrators' changes (accounts, roles, the tree, rules, exports) between `since`
        and `until`, the latest first. Reading it is itself recorded."""
        query: dict[str, Any] = {"at": {"$gte": since, "$lt": until}}
        if kind == "login":
            query["action"] = {"$in": list(LOGIN_ACTIONS)}
        elif kind == "refusal":
            # Refusals of every kind: a login refused, an action the policy or a rule refused.
            query["outcome"] = {"$gte": "refused:", "$lt": "refused;"}
        elif kind == "admin":
            # A change is two entries: the one written before it, and its outcome.
            actions = [*ADMIN_ACTIONS, *(f"{a}.outcome" for a in ADMIN_ACTIONS)]
            query["action"] = {"$in": actions}
        else:
            raise ValueError(kind)
        if actor_id:
            query["actor_id"] = actor_id
        cursor = self._entries.find(query).sort([("at", DESCENDING), ("seq", DESCENDING)])
        found = [entry async for entry in cursor.limit(limit)]
        await self.record(
            ctx,
            "audit.read",
            resource="audit",
            details={"kind": kind, "count": len(found), "actor_id": actor_id},
        )
        # Who acted, by name and account (`staff`: the staff service's `lookup`, an async
        # function from an id to the account or None; the audit log knows no accounts).
        # A refused login names the account tried (its resource) when one matched the name.
        accounts: dict[str, dict[str, Any] | None] = {}
        for who in {a for a in map(_account_of, found) if a}:
            accounts[who] = await staff(who) if staff is not None else None
        return [
            {
                "id": e["_id"],
                "at": e["at"],
                "actor_id": e.get("actor_id"),
                "actor_name": (accounts.get(_account_of(e) or "") or {}).get("name"),
                "actor_username": (accounts.get(_account_of(e) or "") or {}).get("username"),
                "role": e.get("role"),
                "action": e["action"],
                "resource": e.get("resource"),
                "resource_id": e.get("resource_id"),
                "outcome": e.get("outcome"),
                "remote_ip": e.get("remote_ip"),
                # Codes, counts and ids only (entries never hold personal data in details).
                "details": e.get("details") or {},
            }
            for e in found
        ]


def _account_of(entry: dict[str, Any]) -> str | None:
    """The staff account an entry is about: who acted, or the account a login tried."""
    if entry.get("actor_id"):
        return str(entry["actor_id"])
    if entry.get("action") == "auth.login" and entry.get("resource") == "staff":
        return str(entry["resource_id"]) if entry.get("resource_id") else None
    return None


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
        # Processes anchor their chains in the same file at any time: one write per line.
        append_export(self._export, document)
        return document


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    chains: int
    entries: int
    problem: str | None = None
    # What else was checked, for the operator; outside equality, a report reads as its verdict.
    anchors: int = field(default=0, compare=False)
    unkeyed: int = field(default=0, compare=False)


def read_exported_checkpoints(path: Path) -> list[dict[str, Any]]:
    """Every line of the export: signed checkpoints and chain anchors (`kind`)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


ANCHOR_KINDS = frozenset({"chain.open", "chain.close"})


def is_anchor(line: dict[str, Any]) -> bool:
    return line.get("kind") in ANCHOR_KINDS


class _Broken(Exception):
    """The first break found; its message names the chain, the entry and what broke."""


async def verify_audit(
    store: Store,
    suite: crypto.Suite,
    public_key: bytes | None,
    exported: Iterable[dict[str, Any]],
    mac_key: bytes | None = None,
) -> VerifyReport:
    """Walk every chain and hold the database against the export (anchors and checkpoints); the
    first break found is named (chain, sequence number, what broke)."""
    lines = list(exported)
    anchors = [line for line in lines if is_anchor(line)]
    checkpoints = [line for line in lines if not is_anchor(line)]
    chains = {doc["_id"]: doc async for doc in store.collection(AUDIT_CHAINS).find({})}
    walk = _Walk(store, suite)
    try:
        opened, closed = _check_anchors(suite, mac_key, anchors)
        for chain_id, anchor in opened.items():
            if chain_id not in chains:
                raise _Broken(
                    f"chain {chain_id} opened at {anchor.get('opened_at')} by "
                    f"{anchor.get('role')} (anchored in the export) is missing from the database "
                    "(deleted)"
                )
        for chain_id, anchor in closed.items():
            if chain_id not in chains:
                raise _Broken(
                    f"chain {chain_id} closed at {anchor.get('at')} (anchored in the export) is "
                    "missing from the database (deleted)"
                )
        for chain_id, doc in chains.items():
            await walk.chain(chain_id, _scheme(chain_id, doc, opened.get(chain_id), mac_key))
        for chain_id, anchor in opened.items():
            await walk.matches(chain_id, anchor, "its anchored opening")
        for chain_id, anchor in closed.items():
            await walk.matches(chain_id, anchor, "its anchored close")
        await walk.checkpoints(public_key, checkpoints)
        await _cross_check_checkpoints(store, checkpoints)
    except _Broken as broken:
        return VerifyReport(False, len(chains), walk.entries, str(broken), len(anchors))
    unkeyed = sum(1 for doc in chains.values() if doc.get("scheme", "digest") == "digest")
    return VerifyReport(True, len(chains), walk.entries, None, len(anchors), unkeyed)


def _check_anchors(
    suite: crypto.Suite, mac_key: bytes | None, anchors: list[dict[str, Any]]
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """The chains the export saw opened and closed, each anchor's MAC checked."""
    if anchors and mac_key is None:
        # Anchors that cannot be checked vouch for nothing: the key was deleted.
        raise _Broken(
            "the export holds chain anchors but there is no audit MAC key to check them "
            "(was it deleted from the key vault?)"
        )
    opened: dict[str, dict[str, Any]] = {}
    closed: dict[str, dict[str, Any]] = {}
    for anchor in anchors:
        assert mac_key is not None
        chain_id = anchor.get("chain_id")
        # Verification runs offline: a plain comparison leaks nothing worth a timing attack.
        if anchor.get("mac") != anchor_mac(suite, mac_key, anchor) or not isinstance(chain_id, str):
            raise _Broken(f"{anchor.get('kind')} anchor of chain {chain_id}: bad MAC (forged)")
        target = opened if anchor["kind"] == "chain.open" else closed
        target[chain_id] = anchor
    return opened, closed


def _scheme(
    chain_id: str, doc: dict[str, Any], opening: dict[str, Any] | None, mac_key: bytes | None
) -> bytes | None:
    """The key a chain's links are checked with (None: a plain digest chain)."""
    recorded = doc.get("scheme", ChainScheme.DIGEST)
    # The anchored scheme wins over the registry's: a chain cannot be passed off as an older
    # digest chain to recompute its links without the key.
    if opening is not None and opening.get("scheme") != recorded:
        raise _Broken(
            f"chain {chain_id}: the database says scheme {recorded!r} but it was opened as "
            f"{opening.get('scheme')!r} (rewritten)"
        )
    if recorded == ChainScheme.DIGEST:
        return None
    if recorded != ChainScheme.MAC:
        raise _Broken(f"chain {chain_id}: unknown scheme {recorded!r}")
    if mac_key is None:
        raise _Broken(f"chain {chain_id} is keyed but there is no audit MAC key to check it")
    return mac_key


class _Walk:
    """Walks chains in the database, keeping each one's last entry."""

    def __init__(self, store: Store, suite: crypto.Suite):
        self._entries = store.collection(AUDIT)
        self._suite = suite
        self.entries = 0
        self.heads: dict[str, int] = {}

    async def chain(self, chain_id: str, key: bytes | None) -> None:
        link = "MAC" if key is not None else "hash"
        expected_seq, prev = 1, GENESIS
        async for entry in self._entries.find(chain_range(chain_id)).sort("_id", ASCENDING):
            self.entries += 1
            where = f"chain {chain_id} entry {entry.get('seq')}"
            if entry.get("seq") != expected_seq:
                raise _Broken(
                    f"{where}: expected entry {expected_seq} (an entry was deleted or reordered)"
                )
            if entry.get("prev") != prev:
                raise _Broken(
                    f"{where}: does not follow the entry before it (reordered or replaced)"
                )
            if entry.get("hash") != entry_link(self._suite, key, entry):
                raise _Broken(f"{where}: its content does not match its {link} (edited)")
            prev = entry["hash"]
            expected_seq += 1
        self.heads[chain_id] = expected_seq - 1

    async def matches(self, chain_id: str, head: dict[str, Any], label: str) -> None:
        """The chain still holds the entry `label` saw, unchanged."""
        last_seq = self.heads.get(chain_id, 0)
        seq = head.get("seq")
        if not isinstance(seq, int):
            raise _Broken(f"chain {chain_id}: {label} names no entry")
        if last_seq < seq:
            raise _Broken(
                f"chain {chain_id}: ends at entry {last_seq} but {label} saw entry {seq} "
                "(truncated)"
            )
        entry = await self._entries.find_one({"_id": entry_id(chain_id, seq)})
        if entry is None or entry.get("hash") != head.get("hash"):
            raise _Broken(f"chain {chain_id} entry {seq}: differs from {label}")

    async def checkpoints(
        self, public_key: bytes | None, checkpoints: list[dict[str, Any]]
    ) -> None:
        previous_id: str | None = None
        for index, checkpoint in enumerate(checkpoints):
            label = f"checkpoint {checkpoint.get('_id')} of {checkpoint.get('at')}"
            # Each checkpoint names the one before it: a line removed from the export shows.
            if index > 0 and checkpoint.get("previous") != previous_id:
                raise _Broken(
                    f"{label}: does not follow the checkpoint before it "
                    "(a checkpoint was removed from the export)"
                )
            previous_id = checkpoint.get("_id")
            if public_key is not None:
                signature = bytes.fromhex(checkpoint.get("signature", ""))
                if not crypto.verify_signature(
                    self._suite, public_key, _checkpoint_message(checkpoint), signature
                ):
                    raise _Broken(f"{label}: bad signature")
            for chain_id, head in checkpoint.get("heads", {}).items():
                if chain_id not in self.heads:
                    raise _Broken(f"{label}: chain {chain_id} is missing (deleted)")
                await self.matches(chain_id, head, label)


async def _cross_check_checkpoints(store: Store, exported: list[dict[str, Any]]) -> None:
    """The checkpoints kept in the database and those in the export are the same ones."""
    kept = {
        doc["_id"]: doc
        async for doc in store.collection(AUDIT_CHECKPOINTS).find(
            {}, {"_id": 1, "at": 1, "signature": 1}
        )
    }
    for checkpoint in exported:
        label = f"checkpoint {checkpoint.get('_id')} of {checkpoint.get('at')}"
        doc = kept.pop(checkpoint.get("_id"), None)
        if doc is None:
            raise _Broken(f"{label} is in the export but missing from the database (deleted)")
        if doc.get("signature") != checkpoint.get("signature"):
            raise _Broken(f"{label} differs between the database and the export")
    for checkpoint_id, doc in kept.items():
        raise _Broken(
            f"checkpoint {checkpoint_id} of {_canonical(doc.get('at'))} is in the database but "
            "not in the export (the export lost it, or it is not the export the checkpointer "
            "writes)"
        )

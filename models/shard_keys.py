"""The planned shard keys of the collections that grow with the people supervised, and the
queries known to go without theirs (docs/scaling.md; tests/server/test_shard_key_queries.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ShardKey:
    """One collection's planned shard key: its fields in order, ranged or hashed."""

    fields: tuple[str, ...]
    hashed: bool = False
    why: str = ""

    def spec(self) -> dict[str, Any]:
        """The key as `sh.shardCollection` takes it."""
        return {name: ("hashed" if self.hashed else 1) for name in self.fields}


# Ranged keys where the collection has a unique index besides `_id`: MongoDB enforces uniqueness
# across shards only on a ranged key that prefixes the unique index. Hashed keys where every
# query names the whole value and inserts would otherwise pile onto one chunk.
SHARD_KEYS: Mapping[str, ShardKey] = {
    "checkins": ShardKey(
        ("subject_id",),
        why="a person's recent check-ins (the one read of a check-in) and the insert name them",
    ),
    "occurrences": ShardKey(
        ("subject_id",),
        why="a person's windows (login, tasks, caseload by `$in`) name the person; the "
        "deterministic `_id` begins with the subject id, so a person's windows stay together",
    ),
    "audit": ShardKey(
        ("_id",),
        hashed=True,
        why="append-only: `<chain>:<seq>` rises per process, so a ranged key would write to "
        "one chunk per chain; hashed spreads the largest write load evenly",
    ),
    "attachments.files": ShardKey(("_id",), why="GridFS reads a file by its id"),
    "attachments.chunks": ShardKey(
        ("files_id", "n"),
        why="MongoDB's advice for GridFS: a file's chunks together, read by `files_id`",
    ),
    "uploads": ShardKey(("_id",), hashed=True, why="an upload is found by its id only"),
    "messages": ShardKey(
        ("recipient",),
        why="an inbox (`subject:<id>`, `staff:<id>`) is read by its recipient",
    ),
    "deliveries": ShardKey(("recipient",), why="a recipient's delivery attempts"),
    "visits": ShardKey(("subject_id",), why="a person's visits and talks"),
    "sessions": ShardKey(
        ("_id",), hashed=True, why="every request resolves its session by the token's hash"
    ),
    "idempotency_keys": ShardKey(("_id",), hashed=True, why="claimed and read by the key"),
    "wechat_users": ShardKey(
        ("_id",), hashed=True, why="a WeChat user is found by the keyed hash of its openid"
    ),
}


@dataclass(frozen=True)
class Untargeted:
    """A query on a sharded collection that names no shard key: every shard answers it."""

    collection: str
    command: str  # the database command: find, update, delete, findAndModify, aggregate, count
    fields: frozenset[str]  # the filter's top-level fields, which identify the query
    reason: str
    # On a path people wait for at scale (a check-in, a login, a morning's caseload): to be
    # changed to carry the key before the collection is sharded.
    hot: bool = False


UNTARGETED: tuple[Untargeted, ...] = (
    Untargeted(
        "occurrences",
        "update",
        frozenset({"_id", "status"}),
        "a check-in meets its window by the window's `_id` (which begins with the subject id) "
        "without naming `subject_id`: sharded, every check-in's update would go to every "
        "shard. Fix before sharding: add the person's `subject_id` to the filter "
        "(`ObligationService.apply_checkin`, models/obligations.py)",
        hot=True,
    ),
    Untargeted(
        "occurrences",
        "findAndModify",
        frozenset({"_id", "status"}),
        "a worker records a result on, or excuses, one window by its `_id`: a person's action "
        "at a time, not a burst; the same fix applies (the service has read the window first)",
    ),
    Untargeted(
        "occurrences",
        "find",
        frozenset({"status", "window_end"}),
        "the sweeps (`close_windows`, `reminders`) walk every window closing or due, "
        "across all people, once a minute: a scan by design, in the jobs process",
    ),
    Untargeted(
        "occurrences",
        "aggregate",
        frozenset({"org_path", "window_end"}),
        "a monthly report aggregates a node's windows by `org_path`: one query per report",
    ),
    Untargeted(
        "checkins",
        "find",
        frozenset({"review_pending", "org_path"}),
        "the review queue of a station or county: an officer's list, not a person's path",
    ),
    Untargeted(
        "checkins",
        "find",
        frozenset({"_id"}),
        "an officer opens one check-in (review, photo) by its id; fix when convenient: the "
        "answer that lists it also knows the person",
    ),
    Untargeted(
        "checkins",
        "find",
        frozenset({"idem"}),
        "after a duplicate-key error the first check-in under the key is read back: rare, "
        "and `idem` begins with the subject id",
    ),
    Untargeted(
        "audit",
        "find",
        frozenset({"subject_id"}),
        "a case file's access log (audit administrator, county and city officers)",
    ),
    Untargeted(
        "audit",
        "find",
        frozenset({"resource_id"}),
        "the access log of one record",
    ),
    *(
        Untargeted(
            "audit",
            "find",
            frozenset({"at", by, *actor}),
            "the audit administrator's view of logins, refusals and administrative changes "
            "over a span of time: a few reads a day",
        )
        for by in ("action", "outcome")
        for actor in ((), ("actor_id",))
    ),
    Untargeted(
        "audit",
        "find",
        frozenset({"_id"}),
        "`audit verify` and the checkpoint sweep walk a chain as a range of `_id`s, which a "
        "hashed key scatters: operator scans and one sweep every 5 minutes",
    ),
    Untargeted(
        "messages",
        "update",
        frozenset({"_id"}),
        "the jobs process marks a message pushed by its id after sending it",
    ),
    Untargeted(
        "deliveries",
        "count",
        frozenset({"user_id", "outcome", "at"}),
        "the daily push cap counts a user's deliveries, in the jobs process, before a push",
    ),
    Untargeted(
        "sessions",
        "delete",
        frozenset({"user_id"}),
        "every session of an account ends when its password, role or place changes: rare",
    ),
    Untargeted(
        "sessions",
        "update",
        frozenset({"user_id"}),
        "the same, where sessions are marked rather than deleted",
    ),
    Untargeted(
        "wechat_users",
        "find",
        frozenset({"binding.target_id", "binding.kind"}),
        "binding a new WeChat user looks for the person's previous one: once per binding",
    ),
)

# Unique indexes that a sharded collection cannot keep as they are (MongoDB enforces a unique
# index across shards only when the shard key prefixes it). Before sharding, each is rebuilt
# with the key in front; the values already begin with the key's value, so the meaning stays.
REKEY_BEFORE_SHARDING: Mapping[str, tuple[str, ...]] = {
    "checkins": ("idem",),  # `idem` is `<subject id>:<Idempotency-Key>`: (subject_id, idem)
    "messages": ("dedupe_key",),  # (recipient, dedupe_key)
}


def _names(value: Any) -> bool:
    """Whether a filter's condition on a field pins it to values (equality or `$in`)."""
    if isinstance(value, Mapping):
        operators = set(value)
        if not operators or not all(str(op).startswith("$") for op in operators):
            return True  # an embedded document compared as a whole
        return bool(operators & {"$eq", "$in"})
    return True


def carries(query: Mapping[str, Any], key: ShardKey) -> bool:
    """Whether `query` names every field of `key` by value (directly or in a top-level $and),
    so mongos can send it to the shards that hold those values only."""
    named = {name for name, value in query.items() if not name.startswith("$") and _names(value)}
    for part in query.get("$and", ()):
        if isinstance(part, Mapping):
            named |= {n for n, v in part.items() if not n.startswith("$") and _names(v)}
    # A ranged key is targeted by its prefix; a hashed key only by its whole value.
    needed = key.fields if key.hashed else key.fields[:1]
    return all(name in named for name in needed)


def exception_for(collection: str, command: str, query: Mapping[str, Any]) -> Untargeted | None:
    """The declared exception this untargeted query is, if any."""
    fields = frozenset(name for name in query if not name.startswith("$"))
    for known in UNTARGETED:
        if known.collection == collection and known.command == command and known.fields == fields:
            return known
    return None

"""Today's windows under a node, for the dashboard: read whole once a day per process, then
brought up to date on each read from the windows changed since (their `changed_at`)."""

from __future__ import annotations

import datetime as dt
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection

from models.clock import LOCAL_TZ, Clock, local_midnight

# Counted whole, a county of 5,000 people's windows of today cost 0.9 s on the embedded
# database. Every write to a window stamps `changed_at` (an index on org_path and changed_at
# finds them), so after the first read of the day a read costs only what changed since.
# A write stamped before a read began may land after it: each read looks back this far (the
# database's own deadline per operation is 10 s; clocks of the hosts agree within a second).
LOOK_BACK = dt.timedelta(seconds=30)
NODES_KEPT = 64  # a few counties' and cities' windows of today, a few MB
PROJECTION = {"org_path": 1, "status": 1, "kind": 1, "window_end": 1}


@dataclass
class _Node:
    day: dt.date
    read_at: dt.datetime
    windows: dict[str, tuple[tuple[str, ...], str, str, dt.datetime]] = field(default_factory=dict)


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


class TodayWindows:
    """Kept by the obligation service for the dashboard; every writer of a window stamps it
    (`changed_at`), which is all this needs of them."""

    def __init__(self, windows: AsyncCollection, clock: Clock):
        self._windows = windows
        self._clock = clock
        self._nodes: OrderedDict[str, _Node] = OrderedDict()

    async def counts(
        self, org_id: str, depth: int
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Today's windows under the node by unit (the path's node at `depth`) and status; and
        today's check-in windows closed by now by unit, status and day (the charts' today)."""
        now = self._clock.now()
        today = now.astimezone(LOCAL_TZ).date()
        start, end = local_midnight(today), local_midnight(today + dt.timedelta(days=1))
        node = self._nodes.get(org_id)
        # A new day, or a clock set back (a test's): read whole.
        if node is None or node.day != today or now < node.read_at:
            node = _Node(today, now)
            query: dict[str, Any] = {"org_path": org_id, "window_end": {"$gt": start, "$lte": end}}
        else:
            query = {"org_path": org_id, "changed_at": {"$gt": node.read_at - LOOK_BACK}}
        found = [doc async for doc in self._windows.find(query, PROJECTION)]
        for doc in found:
            self._keep(node, doc, start, end)
        node.read_at = max(node.read_at, now)  # only once read: a failed read is read again
        self._nodes[org_id] = node
        self._nodes.move_to_end(org_id)
        while len(self._nodes) > NODES_KEPT:
            self._nodes.popitem(last=False)
        windows: Counter[tuple[Any, str]] = Counter()
        closed: Counter[tuple[Any, str]] = Counter()
        for path, status, kind, window_end in node.windows.values():
            unit = path[depth] if len(path) > depth else None
            windows[(unit, status)] += 1
            if kind == "remote_checkin" and window_end <= now:
                closed[(unit, status)] += 1
        day = today.isoformat()
        return (
            [{"u": u, "st": st, "n": n} for (u, st), n in windows.items()],
            [{"u": u, "st": st, "d": day, "n": n} for (u, st), n in closed.items()],
        )

    @staticmethod
    def _keep(node: _Node, doc: Mapping[str, Any], start: dt.datetime, end: dt.datetime) -> None:
        window_end = _utc(doc["window_end"])
        if start < window_end <= end:
            node.windows[str(doc["_id"])] = (
                tuple(str(n) for n in doc.get("org_path") or ()),
                doc["status"],
                doc.get("kind") or "",
                window_end,
            )
        else:
            node.windows.pop(str(doc["_id"]), None)  # replanned out of today

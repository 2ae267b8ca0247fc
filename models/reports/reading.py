"""The long read behind a monthly report: every person's month under a subtree (or one person),
each of eight services' collections aggregated by person in the database, through its
scope-and-time index, and read as the majority has it."""

from __future__ import annotations

import datetime as dt
from typing import Any

from models.alerts import ALERTS
from models.assistance import REFERRALS
from models.elocation import ELOCATION_ORDERS
from models.leave import LEAVE_REQUESTS
from models.obligations import OCCURRENCES
from models.programs import PROGRAMS, level_on
from models.reports.figures import (
    STATUS_FIGURE,
    Month,
    PersonMonth,
    duration_minutes,
    overlap_days,
    risk_on,
)
from models.sanctions import DETACHMENTS, SANCTIONS
from models.store import Store

# Where a person's group sits in the tree (the first record's path will do).
FIRST_PATH = {"path": {"$first": "$org_path"}}


class MonthReader:
    """Reads the records a month's figures are made of; the report service owns the reports."""

    def __init__(self, store: Store):
        # Compliance figures are read as the majority has them (DESIGN: "majority reads for
        # compliance decisions"): a signed report never shows a write a failover could undo.
        self._occurrences = store.majority_collection(OCCURRENCES)
        self._alerts = store.majority_collection(ALERTS)
        self._leave = store.majority_collection(LEAVE_REQUESTS)
        self._detachments = store.majority_collection(DETACHMENTS)
        self._sanctions = store.majority_collection(SANCTIONS)
        self._elocation = store.majority_collection(ELOCATION_ORDERS)
        self._referrals = store.majority_collection(REFERRALS)
        self._programs = store.majority_collection(PROGRAMS)

    async def person_months(
        self, match: dict[str, Any], month: Month, today: dt.date
    ) -> dict[str, PersonMonth]:
        """Every person's month under `match` (a subtree or one person), as of `today` (leave
        and 脱管 still running count up to it)."""
        rows: dict[str, PersonMonth] = {}

        def row(subject_id: Any) -> PersonMonth:
            key = str(subject_id)
            return rows.setdefault(key, PersonMonth(key))

        # Programs first: they place a person in the tree as the file stands.
        async for doc in self._programs.find(
            # No `$or` on the end: some servers scan the collection for one; the subtree's
            # programs begun before the month's end are few, and those ended earlier are
            # skipped here.
            {**match, "start_date": {"$lt": month.next_first.isoformat()}},
            {
                "subject_id": 1,
                "org_path": 1,
                "type": 1,
                "status": 1,
                "start_date": 1,
                "ended_on": 1,
                "details.supervision_level": 1,
                "details.strict_until": 1,
                "details.level_history": 1,
                "details.risk_history": 1,
            },
        ):
            if doc.get("status") == "transferred" or (
                doc.get("ended_on") and doc["ended_on"] < month.first.isoformat()
            ):
                continue
            entry = row(doc["subject_id"])
            entry.place(doc.get("org_path"))
            entry.programs.add(doc["type"])
            if month.first <= dt.date.fromisoformat(doc["start_date"]) <= month.last:
                entry.values["intakes"] += 1
            ended = doc.get("ended_on")
            if ended and month.first <= dt.date.fromisoformat(ended) <= month.last:
                entry.values["terminations"] += 1
            details = doc.get("details") or {}
            if doc["type"] == "community_corrections" and details.get("strict_until"):
                begin = max(month.first, dt.date.fromisoformat(doc["start_date"]))
                end = min(month.last, dt.date.fromisoformat(ended) if ended else month.last)
                entry.level_start = level_on(details, begin)
                entry.level_end = level_on(details, end)
            if doc["type"] == "mental_health" and details.get("risk_history"):
                entry.risk_start = risk_on(details["risk_history"], month.first)
                entry.risk_end = risk_on(details["risk_history"], month.last)

        previous = month.previous()
        pipeline = [
            {"$match": {**match, "window_end": {"$gt": previous.start, "$lte": month.end}}},
            {
                "$group": {
                    "_id": {
                        "s": "$subject_id",
                        "k": "$kind",
                        "st": "$status",
                        "r": "$result",
                        "cur": {"$gt": ["$window_end", month.start]},
                    },
                    "n": {"$sum": 1},
                    "required": {"$sum": {"$ifNull": ["$required_hours", 0]}},
                    "done": {"$sum": {"$ifNull": ["$hours_done", 0]}},
                    "path": {"$first": "$org_path"},
                }
            },
        ]
        async for group in await self._occurrences.aggregate(pipeline):
            key = group["_id"]
            entry = row(key["s"])
            entry.place(group.get("path"))
            figure = STATUS_FIGURE.get(key["st"], "missed")
            if not key["cur"]:
                if figure == "missed":
                    entry.missed_previous += group["n"]
                continue
            values = entry.values
            n = group["n"]
            values["obligations_due"] += n
            values[f"obligations_{figure}"] += n
            kind = key["k"]
            if kind == "remote_checkin":
                values["checkins_due"] += n
                values[f"checkins_{figure}"] += n
            elif kind in ("education", "community_service"):
                prefix = "education" if kind == "education" else "service"
                values[f"{prefix}_required_hours"] += group["required"]
                values[f"{prefix}_done_hours"] += group["done"]
            elif kind == "drug_test":
                result = key.get("r")
                if result in ("negative", "positive", "refused", "evaded"):
                    values[f"drug_tests_{result}"] += n
                elif figure == "missed":
                    values["drug_tests_missed"] += n
            elif kind == "mental_followup":
                values["followups_due"] += n
                if figure in ("on_time", "late"):
                    values["followups_done"] += n

        in_month = {"$gte": month.start, "$lt": month.end}
        async for group in await self._alerts.aggregate(
            [
                {"$match": {**match, "created_at": in_month, "subject_id": {"$ne": None}}},
                {
                    "$group": {
                        "_id": "$subject_id",
                        "n": {"$sum": 1},
                        "open": {"$sum": {"$cond": [{"$eq": ["$status", "open"]}, 1, 0]}},
                        "acked": {
                            "$push": {
                                "$cond": [
                                    {"$eq": ["$status", "acknowledged"]},
                                    {"$subtract": ["$acknowledged_at", "$created_at"]},
                                    None,
                                ]
                            }
                        },
                        "path": {"$first": "$org_path"},
                    }
                },
            ]
        ):
            entry = row(group["_id"])
            entry.place(group.get("path"))
            durations = [duration_minutes(d) for d in group["acked"] if d is not None]
            entry.values["alerts"] += group["n"]
            entry.values["alerts_open"] += group["open"]
            entry.values["alerts_acknowledged"] += len(durations)
            entry.ack_minutes.extend(durations)

        # Leave and 脱管 need their days inside the month: the few matching records (dates
        # only) are read, never the collection.
        async for doc in self._leave.find(
            {
                **match,
                "status": "approved",
                "start_date": {"$lte": month.last.isoformat()},
                "end_date": {"$gte": month.first.isoformat()},
            },
            {"subject_id": 1, "start_date": 1, "end_date": 1, "returned_on": 1, "org_path": 1},
        ):
            entry = row(doc["subject_id"])
            entry.place(doc.get("org_path"))
            entry.values["leave_approved"] += 1
            entry.values["leave_days"] += overlap_days(
                doc["start_date"], doc["end_date"], month, today
            )
            ended = dt.date.fromisoformat(doc["end_date"])
            if not doc.get("returned_on") and ended <= month.last and ended < today:
                entry.values["overdue_returns"] += 1
        async for doc in self._detachments.find(
            {**match, "start_date": {"$lte": month.last.isoformat()}},
            {"subject_id": 1, "start_date": 1, "end_date": 1, "org_path": 1},
        ):
            if doc.get("end_date") and doc["end_date"] < month.first.isoformat():
                continue
            entry = row(doc["subject_id"])
            entry.place(doc.get("org_path"))
            entry.values["detachments"] += 1
            entry.values["detachment_days"] += overlap_days(
                doc["start_date"], doc.get("end_date"), month, today
            )

        async for group in await self._sanctions.aggregate(
            [
                {"$match": {**match, "status": "approved", "decided_at": in_month}},
                {
                    "$group": {
                        "_id": {"s": "$subject_id", "k": "$kind"},
                        "n": {"$sum": 1},
                        "path": {"$first": "$org_path"},
                    }
                },
            ]
        ):
            entry = row(group["_id"]["s"])
            entry.place(group.get("path"))
            entry.values[group["_id"]["k"]] += group["n"]

        async def count_per_person(collection: Any, figure: str, stages: list[dict]) -> None:
            per_person = {"$group": {"_id": "$subject_id", "n": {"$sum": 1}, **FIRST_PATH}}
            async for group in await collection.aggregate([*stages, per_person]):
                entry = row(group["_id"])
                entry.place(group.get("path"))
                entry.values[figure] += group["n"]

        in_force = {
            "status": {"$in": ["approved", "ended"]},
            "start_date": {"$lte": month.last.isoformat()},
            "end_date": {"$gte": month.first.isoformat()},
        }
        await count_per_person(
            self._elocation, "elocation_orders", [{"$match": {**match, **in_force}}]
        )
        await count_per_person(
            self._referrals, "referrals", [{"$match": {**match, "created_at": in_month}}]
        )
        placed = {"history.status": {"$in": ["placed", "enrolled"]}, "history.at": in_month}
        await count_per_person(
            self._referrals,
            "placements",
            [
                {"$match": {**match, "history.at": in_month}},
                {"$unwind": "$history"},
                {"$match": placed},
            ],
        )
        async for group in await self._referrals.aggregate(
            [
                {"$match": {**match, "outcome_at": in_month}},
                {
                    "$group": {
                        "_id": {"s": "$subject_id", "k": "$outcome_kind"},
                        "n": {"$sum": 1},
                        "path": {"$first": "$org_path"},
                    }
                },
            ]
        ):
            kind = group["_id"]["k"]
            if kind in ("housing_found", "job_found", "benefits_granted"):
                entry = row(group["_id"]["s"])
                entry.place(group.get("path"))
                entry.values[kind] += group["n"]
        return rows

"""The embedded database stopped (SIGTERM, then SIGKILL) and started again under check-ins: 503
while it is down, and nothing acknowledged lost or stored twice across either restart."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient

from models.audit import MAC_KEY_ID, verify_audit
from models.clock import LOCAL_TZ, SystemClock
from models.store import Store
from server.app import build_services, collection_specs, connect_store, open_vault
from server.config import Config
from tests.process_support import (
    Attempt,
    Launched,
    Probe,
    aget,
    arun_cli,
    audit_entries_missing,
    await_ready,
    environment,
    eventually,
    launched,
    port_open,
    seed_people,
    sign_in,
    start_database,
    statuses,
    verify_checkins,
)

# Five groups: before the SIGTERM (some in flight as it lands), while stopped, after the restart
# and before the SIGKILL (some in flight as it lands), while killed, after the second restart.
GROUP = 6
STOP_AFTER_ACKNOWLEDGED = 3
# Between one send and the next in a group.
STAGGER_S = 0.01
# The API's deadline per database operation (ANBANG_DB_OPERATION_TIMEOUT_MS): short, so the
# 503s while the database is down come quickly.
OPERATION_TIMEOUT_MS = 1500
# How long a client keeps retrying while answered 503: generous, for a loaded machine; the first
# other answer ends the retries.
RETRY_FOR_S = 90
# Every write asks for the journal (j:true, models/store.py), so an acknowledged write is on
# disk before the client hears of it: a SIGKILL of the database loses nothing acknowledged.
# Before it did, the embedded database (WiredTiger with transaction_sync off) lost the writes of
# its last 30-75 ms in most runs.


@dataclass
class Stack:
    """The database process, the API in front of it, and a direct handle on the database."""

    env: dict[str, str]
    tmp_path: Path
    exits: contextlib.ExitStack
    db: Launched
    api: Launched
    store: Store
    restarts: int = 0

    @property
    def api_port(self) -> int:
        return int(self.env["ANBANG_PORT"])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"


async def check_in_all(
    attempts: list[Attempt],
    base_url: str,
    answered: Callable[[Attempt], None] | None = None,
) -> None:
    """Every attempt sent once, a few milliseconds apart (so some are still at the API or the
    database when an earlier one is answered); `answered` is called as each answer arrives."""

    async def one(index: int, attempt: Attempt) -> None:
        await asyncio.sleep(index * STAGGER_S)
        await attempt.send(base_url)
        if answered is not None:
            answered(attempt)

    async with asyncio.timeout(180):
        await asyncio.gather(*(one(index, attempt) for index, attempt in enumerate(attempts)))


async def readyz(port: int) -> Probe | None:
    with contextlib.suppress(OSError):
        return await aget(port, "/readyz", seconds=10)
    return None


async def unready(port: int) -> bool:
    answer = await readyz(port)
    return answer is not None and answer.status == 503 and "retry-after" in answer.headers


async def retry(attempt: Attempt, base_url: str) -> None:
    """The client's retry: the same key and body until an answer other than 503."""
    deadline = time.monotonic() + RETRY_FOR_S
    while time.monotonic() < deadline:
        answer = await attempt.send(base_url)
        if answer is not None and answer.status != 503:
            return
        await asyncio.sleep(0.5)


async def outage(
    stack: Stack, stop_signal: signal.Signals, before: list[Attempt], during: list[Attempt]
) -> dict[str, Any]:
    """`before` checks in and the database is stopped by `stop_signal` in mid-stream; `during`
    checks in while it is down; it is started again (same port, same data directory) and the
    API is ready again. The figures of the outage."""
    stopped: list[float] = []

    def stop_mid_stream(_: Attempt) -> None:
        # As the answers arrive, not by polling: the later check-ins are still in flight.
        acknowledged = sum(a.acknowledged is not None for a in before)
        if not stopped and acknowledged >= STOP_AFTER_ACKNOWLEDGED:
            stack.db.process.send_signal(stop_signal)
            stopped.append(time.monotonic())

    await check_in_all(before, stack.base_url, stop_mid_stream)
    assert stopped, f"the database was never stopped: {statuses(before)}"
    code = await stack.db.await_exit(60)
    assert code == (0 if stop_signal == signal.SIGTERM else -stop_signal), stack.db.output
    down = time.monotonic()

    # While it is down: /readyz says 503 with Retry-After, every check-in is refused with 503.
    await eventually(lambda: unready(stack.api_port), 60, "/readyz answering 503 with Retry-After")
    await check_in_all(during, stack.base_url)
    probe = await readyz(stack.api_port)

    assert not port_open(int(stack.env["ANBANG_DB_PORT"]))
    stack.restarts += 1
    restarted = time.monotonic()
    stack.db = start_database(
        stack.env, stack.tmp_path / f"db-{stack.restarts + 1}.log", stack.exits
    )
    await await_ready(stack.api, stack.api_port, 120)
    return {
        "stopped_at": stopped[0],
        "acknowledged_before_stop": sum(
            1 for a in before if a.acknowledged and acknowledged_at(a) < stopped[0]
        ),
        # Sent before the stop, answered after it.
        "in_flight_at_stop": sum(1 for a in before if a.sent[0] < stopped[0] <= a.times[0]),
        "down_answers": dict(sorted(statuses(during).items())),
        "down_readyz": probe.status if probe else None,
        "down_retry_after": probe.headers.get("retry-after") if probe else None,
        "down_seconds": round(restarted - down, 1),
        "ready_seconds_after_restart": round(time.monotonic() - restarted, 1),
    }


async def audit_intact(store: Store, config: Config) -> str | None:
    """The audit service's own verification (what `audit verify` runs): None when intact."""
    vault = await open_vault(config, store, SystemClock())
    report = await verify_audit(store, vault.suite, None, [], await vault.get(MAC_KEY_ID))
    return None if report.ok else report.problem


def acknowledged_at(attempt: Attempt) -> float:
    answer = attempt.acknowledged
    assert answer is not None
    return attempt.times[attempt.answers.index(answer)]


@pytest.mark.slow
async def test_a_database_stopped_or_killed_and_started_again_under_check_ins(
    tmp_path, wechat_standin, record_property
):
    env = environment(
        tmp_path,
        WECHAT_API_BASE=wechat_standin.base_url,
        ANBANG_BEHIND_PROXY="1",
        ANBANG_LOG_LEVEL="WARNING",
        ANBANG_DB_OPERATION_TIMEOUT_MS=str(OPERATION_TIMEOUT_MS),
    )
    config = Config.from_env(env)
    http = AsyncHTTPClient(force_instance=True, max_clients=GROUP + 4)
    store = connect_store(config)
    figures: dict[str, Any] = {}
    with contextlib.ExitStack() as exits:
        try:
            started = time.monotonic()
            db = start_database(env, tmp_path / "db-1.log", exits)
            await store.ensure_indexes(collection_specs())
            clock = SystemClock()
            vault = await open_vault(config, store, clock)
            services = build_services(store, config, clock, vault)
            try:
                today = clock.now().astimezone(LOCAL_TZ).date()
                people = await seed_people(services, 5 * GROUP, today)
            finally:
                await services.close()
            api = exits.enter_context(launched(["serve"], env, tmp_path / "api.log"))
            stack = Stack(env, tmp_path, exits, db, api, store)
            await await_ready(api, stack.api_port, 120)
            phones = await sign_in(stack.base_url, people, http)
            attempts = [Attempt(p, phone) for p, phone in zip(people, phones, strict=True)]
            groups = [attempts[i * GROUP : (i + 1) * GROUP] for i in range(5)]
            figures["setup_seconds"] = round(time.monotonic() - started, 1)

            # SIGTERM: a clean stop. Nothing acknowledged may be lost.
            term = await outage(stack, signal.SIGTERM, groups[0], groups[1])
            term_attempts = groups[0] + groups[1]
            term_retried = [a for a in term_attempts if a.acknowledged is None]
            async with asyncio.timeout(RETRY_FOR_S + 60):
                await asyncio.gather(*(retry(a, stack.base_url) for a in term_retried))
            term.update(await verify_checkins(store, term_attempts))
            term["retried"] = len(term_retried)
            term["audit_problem"] = await audit_intact(store, config)

            kill = await outage(stack, signal.SIGKILL, groups[2], groups[3])
            await check_in_all(groups[4], stack.base_url)
            kill_attempts = groups[2] + groups[3] + groups[4]
            kill_retried = [a for a in kill_attempts if a.acknowledged is None]
            async with asyncio.timeout(RETRY_FOR_S + 60):
                await asyncio.gather(*(retry(a, stack.base_url) for a in kill_retried))
            kill.update(await verify_checkins(store, kill_attempts))
            kill["retried"] = len(kill_retried)
            everyone = term_attempts + kill_attempts
            # What the kill took, from both phases: check-ins the clients were told were
            # stored, and stored check-ins whose window update went (the sweep's evidence
            # check would still meet those windows: close_windows in models/obligations.py).
            after_kill = await verify_checkins(store, everyone)
            stored = {
                doc["idem"]: doc
                async for doc in store.collection("checkins").find(
                    {}, {"idem": 1, "occurrence_id": 1}
                )
            }
            lost = [a for a in everyone if a.acknowledged and a.idem not in stored]
            unmet = []
            for attempt in everyone:
                doc = stored.get(attempt.idem)
                window = doc and await store.collection("occurrences").find_one(
                    {"_id": doc["occurrence_id"]}
                )
                if doc and (window is None or window.get("checkin_id") != doc["_id"]):
                    unmet.append(attempt)
            kill["lost_acknowledged"] = len(lost)
            kill["lost_acknowledged_before_sigterm_restart"] = sum(a in lost for a in term_attempts)
            # Positive: acknowledged before the signal was sent (an answer the database sent
            # as it died can reach the client a few milliseconds after).
            kill["lost_acknowledged_ms_before_kill"] = ages(lost, kill["stopped_at"])
            kill["unmet_window_ms_before_kill"] = ages(unmet, kill["stopped_at"])
            kill["audit_entries_missing"] = await audit_entries_missing(store)
            audit = await arun_cli("audit", "verify", env=env)
        finally:
            http.close()
            await store.close()

    figures.update({f"sigterm_{name}": value for name, value in term.items()})
    figures.update({f"sigkill_{name}": value for name, value in kill.items()})
    figures.update(
        {
            "people": len(everyone),
            "acknowledged": after_kill["acknowledged"],
            "acknowledged_lost": after_kill["acknowledged_lost"],
            "duplicates": after_kill["duplicates"],
            "retried": len(term_retried) + len(kill_retried),
            "answers": dict(sorted(statuses(everyone).items())),
            "audit_verify": (audit.stdout + audit.stderr).strip(),
        }
    )
    for name, value in figures.items():
        if not name.endswith("stopped_at"):
            record_property(name, value)

    assert "500" not in figures["answers"], figures["answers"]
    for phase in (term, kill):
        # Never a 201 while the database was down: only 503 with Retry-After.
        assert phase["down_answers"] == {"503": GROUP}, phase
        assert phase["down_readyz"] == 503, phase
        assert int(phase["down_retry_after"]) > 0, phase
        assert phase["in_flight_at_stop"] > 0, phase
    # Every check-in the clients were not told about was retried with its key and completed.
    assert all(a.acknowledged is not None for a in everyone), figures["answers"]

    # SIGTERM: nothing lost, nothing twice, the audit chain whole across the restart.
    assert term["acknowledged_lost"] == 0, term
    assert term["stored"] == 2 * GROUP, term
    assert term["duplicates"] == 0, term
    assert term["extra_per_person"] == 0, term
    assert term["answers_naming_another_record"] == 0, term
    assert term["windows_not_met_by_it"] == 0, term
    assert term["without_audit_entry"] == 0, term
    assert term["audit_problem"] is None, term

    # SIGKILL: likewise nothing acknowledged lost, nothing twice, every window met by its
    # check-in, and the audit chain whole.
    assert lost == [], kill
    assert unmet == [], kill
    assert kill["audit_entries_missing"] == 0, kill
    assert after_kill["acknowledged_lost"] == 0, after_kill
    assert after_kill["duplicates"] == 0, after_kill
    assert after_kill["extra_per_person"] == 0, after_kill
    assert after_kill["answers_naming_another_record"] == 0, after_kill
    assert after_kill["stored"] == len(everyone), after_kill
    assert after_kill["windows_not_met_by_it"] == 0, after_kill
    assert audit.returncode == 0, figures["audit_verify"]
    assert "audit log intact" in audit.stdout, figures["audit_verify"]


def ages(attempts: list[Attempt], moment: float) -> list[int]:
    """How long before `moment` each attempt was acknowledged, in ms, oldest first."""
    return sorted((round((moment - acknowledged_at(a)) * 1000) for a in attempts), reverse=True)

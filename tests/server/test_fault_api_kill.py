"""An API process killed (kill -9) while check-ins are in flight loses and duplicates nothing."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable

import pytest
from tornado.httpclient import AsyncHTTPClient

from models.clock import LOCAL_TZ, SystemClock
from server.app import build_services, collection_specs, connect_store, open_vault
from server.config import Config
from tests.process_support import (
    Attempt,
    Launched,
    arun_cli,
    await_ready,
    environment,
    free_port,
    launched,
    seed_people,
    sign_in,
    start_database,
    statuses,
    verify_checkins,
)

# Per process: enough that several check-ins are in flight on the one that is killed.
PEOPLE_EACH = 16
IN_FLIGHT = 8
# The victim is killed once it has acknowledged this many: mid-stream, never at the start.
KILL_AFTER_ACKNOWLEDGED = 4
# How long a client keeps retrying a check-in the survivor answers 503 (busy): generous, as a
# loaded machine can keep it busy for a while; the first other answer ends the retries.
RETRY_FOR_S = 90


async def check_in_all(
    attempts: list[Attempt],
    base_url: str,
    in_flight: int,
    answered: Callable[[Attempt], None] | None = None,
) -> None:
    """Each attempt sent once to `base_url`, `in_flight` at a time; `answered` is called after
    each."""
    waiting = iter(attempts)

    async def worker() -> None:
        for attempt in waiting:
            await attempt.send(base_url)
            if answered is not None:
                answered(attempt)

    async with asyncio.timeout(180), asyncio.TaskGroup() as workers:
        for _ in range(in_flight):
            workers.create_task(worker())


async def retry_until_acknowledged(attempt: Attempt, base_url: str) -> None:
    """The client's retry: the same key, the same body, until the survivor answers 201
    (a 503 asks to wait; anything else is final)."""
    deadline = time.monotonic() + RETRY_FOR_S
    while time.monotonic() < deadline:
        answer = await attempt.send(base_url)
        if answer is not None and answer.status != 503:
            return
        await asyncio.sleep(0.3)


@pytest.mark.slow
async def test_an_api_process_killed_mid_check_in_loses_and_duplicates_nothing(
    tmp_path, wechat_standin, record_property
):
    env = environment(
        tmp_path,
        WECHAT_API_BASE=wechat_standin.base_url,
        ANBANG_BEHIND_PROXY="1",
        ANBANG_LOG_LEVEL="WARNING",
    )
    ports = {"victim": free_port(), "survivor": free_port()}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    config = Config.from_env(env)
    http = AsyncHTTPClient(force_instance=True, max_clients=2 * IN_FLIGHT + 4)
    store = connect_store(config)
    with contextlib.ExitStack() as stack:
        try:
            started = time.monotonic()
            start_database(env, tmp_path / "db.log", stack)
            # Seeded first, so the master key exists before two processes could race to make it.
            await store.ensure_indexes(collection_specs())
            clock = SystemClock()
            vault = await open_vault(config, store, clock)
            services = build_services(store, config, clock, vault)
            try:
                today = clock.now().astimezone(LOCAL_TZ).date()
                people = await seed_people(services, 2 * PEOPLE_EACH, today)
            finally:
                await services.close()
            apis: dict[str, Launched] = {
                name: stack.enter_context(
                    launched(["serve"], {**env, "ANBANG_PORT": str(port)}, tmp_path / f"{name}.log")
                )
                for name, port in ports.items()
            }
            for name, api in apis.items():
                await await_ready(api, ports[name], 120)
            # People sign in through both processes; each checks in where they signed in.
            phones = {
                "victim": await sign_in(urls["victim"], people[:PEOPLE_EACH], http),
                "survivor": await sign_in(urls["survivor"], people[PEOPLE_EACH:], http),
            }
            attempts = {
                name: [Attempt(person, phone) for person, phone in pairs]
                for name, pairs in (
                    ("victim", zip(people[:PEOPLE_EACH], phones["victim"], strict=True)),
                    ("survivor", zip(people[PEOPLE_EACH:], phones["survivor"], strict=True)),
                )
            }
            ready_seconds = time.monotonic() - started

            killed_at: list[float] = []

            def kill_mid_stream(attempt: Attempt) -> None:
                # Called as each of the victim's answers arrives: the kill lands while its
                # other check-ins are still in flight.
                acknowledged = sum(1 for a in attempts["victim"] if a.acknowledged is not None)
                if not killed_at and acknowledged >= KILL_AFTER_ACKNOWLEDGED:
                    apis["victim"].process.send_signal(signal.SIGKILL)
                    killed_at.append(time.monotonic())

            await asyncio.gather(
                check_in_all(attempts["victim"], urls["victim"], IN_FLIGHT, kill_mid_stream),
                check_in_all(attempts["survivor"], urls["survivor"], IN_FLIGHT),
            )
            assert killed_at, "the victim was never killed"
            assert await apis["victim"].await_exit(30) == -signal.SIGKILL
            assert apis["survivor"].running(), apis["survivor"].output

            # Before any retry: what the victim stored but never answered.
            unanswered = [a for a in attempts["victim"] if a.answers == [None]]
            # Sent before the kill and never answered: in flight when it landed (the rest of
            # the unanswered were refused: the process was gone).
            in_flight_at_kill = [a for a in unanswered if a.sent[0] < killed_at[0]]
            checkins = store.collection("checkins")
            stored_unanswered = [
                doc async for doc in checkins.find({"idem": {"$in": [a.idem for a in unanswered]}})
            ]
            window_pending = 0
            for doc in stored_unanswered:
                window = await store.collection("occurrences").find_one(
                    {"_id": doc["occurrence_id"]}
                )
                window_pending += window is None or window.get("checkin_id") != doc["_id"]

            # Every check-in without an answer, retried with the same key on the survivor.
            everyone = attempts["victim"] + attempts["survivor"]
            retried = [a for a in everyone if a.acknowledged is None]
            async with asyncio.timeout(RETRY_FOR_S + 60):
                await asyncio.gather(
                    *(retry_until_acknowledged(a, urls["survivor"]) for a in retried)
                )
            figures = await verify_checkins(store, everyone)

            audit = await arun_cli("audit", "verify", env=env)
        finally:
            http.close()
            await store.close()

    answered = statuses(everyone)
    for name, value in {
        **figures,
        "people": len(everyone),
        "unanswered_by_victim": len(unanswered),
        "in_flight_at_kill": len(in_flight_at_kill),
        "stored_but_unanswered": len(stored_unanswered),
        "stored_window_not_yet_met": window_pending,
        "retried": len(retried),
        "answers": dict(sorted(answered.items())),
        "setup_seconds": round(ready_seconds, 1),
    }.items():
        record_property(name, value)

    assert in_flight_at_kill, "the kill came while nothing was in flight on the victim"
    assert "500" not in answered, answered
    assert all(a.acknowledged is not None for a in everyone), answered
    assert figures["acknowledged"] == len(everyone)
    assert figures["acknowledged_lost"] == 0, figures
    assert figures["duplicates"] == 0, figures
    assert figures["extra_per_person"] == 0, figures
    assert figures["stored"] == len(everyone), figures
    assert figures["answers_naming_another_record"] == 0, figures
    assert figures["windows_not_met_by_it"] == 0, figures
    assert figures["without_audit_entry"] == 0, figures
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "audit log intact" in audit.stdout

"""A database outage during a check-in: never a success without the record, and a retry with
the same Idempotency-Key after recovery completes the check-in exactly once.

A second application serves the same database through a fault proxy (tests/faultproxy.py); the
test reads the database directly (the `store` fixture), past the proxy, to see what was stored.
The check-in's writes go as one ordered bulkWrite (`bulk`, the default) or, as on a server before
MongoDB 8.0, as separate ordered commands (`separate`); tests that cut between writes say which.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from miniprogram_api.client import MiniProgramClient, MpAnswer
from models.passwords import TEST_COST
from models.store import DatabaseSettings, Store
from server.app import assemble_api, open_vault
from tests.conftest import ServedApp, serve_runtime
from tests.faultproxy import FaultProxy, mongodb_command, mongodb_frame_length, mongodb_ids
from tests.mp_support import STATION_CENTRE, local

# PyMongo may abandon a connection attempt the proxy cuts and leave its socket unclosed (see the
# fixture's end): expected here, so not an error here; anywhere else it still is.
pytestmark = [
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

# The application's patience with a database it cannot reach: short, so the tests are quick.
SERVER_SELECTION_S = 1.5
CONNECT_S = 1.0
# The API process's deadline per operation (ANBANG_DB_OPERATION_TIMEOUT_MS), shortened here.
OPERATION_S = 2.5
# PyMongo's default heartbeat: how long a silent server can go unnoticed by its monitor.
HEARTBEAT_S = 10.0
UNAVAILABLE_ZH = "服务暂时不可用，请稍后重试。"
# The check-in's one command when its writes go as a client-level bulkWrite.
BATCH = ("bulkWrite", 1)


@dataclass
class Outage:
    """An application whose every database connection passes through `proxy`."""

    proxy: FaultProxy
    served: ServedApp
    client: MiniProgramClient
    answers: list[MpAnswer]

    async def check_in(self, clock: Any, key: str, **options: Any) -> MpAnswer:
        """The same check-in every time (the same body, so a retry is the same request)."""
        options.setdefault("retries", 0)
        answer = await self.client.check_in(
            lat=STATION_CENTRE.lat,
            lng=STATION_CENTRE.lng,
            coord_type="wgs84",
            captured_at=clock.now(),
            key=key,
            **options,
        )
        self.answers.append(answer)
        return answer


class Answered(logging.Handler):
    """Sets `seen` when the application answers a check-in with `status` (its access log)."""

    def __init__(self, status: int):
        super().__init__()
        self.status = status
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        fields = getattr(record, "fields", None) or {}
        if fields.get("path") == "/mp/v1/checkins" and fields.get("status") == self.status:
            self.seen.set()


class LostReply:
    """Triggers for `FaultProxy.cut_before`: the server gets `command` and carries it out, and
    the connection dies before its answer reaches the application."""

    def __init__(self, command: tuple[str, str]):
        self.command = command
        self.request_id: int | None = None

    def request(self, message: bytes) -> bool:
        if mongodb_command(message) == self.command:
            self.request_id = mongodb_ids(message)[0]
        return False

    def reply(self, message: bytes) -> bool:
        return self.request_id is not None and mongodb_ids(message)[1] == self.request_id


class FalseAudit(AssertionError):
    """The audit trail contradicts what the database holds."""


class SlowAnswer(AssertionError):
    """A 503 that came later than the application's own database deadlines allow."""


@pytest_asyncio.fixture
async def outage(
    request: pytest.FixtureRequest, supervised, config, clock, database_server
) -> AsyncIterator[Outage]:
    # "bulk" (the default) or "separate": how the application sends a check-in's writes.
    mode = getattr(request, "param", "bulk")
    host, port = database_server.address
    proxy = FaultProxy(host, port, framer=mongodb_frame_length)
    await proxy.start()
    # directConnection: the embedded database is a one-member replica set, and discovery would
    # otherwise follow its advertised address, around the proxy.
    settings = DatabaseSettings(
        uri=f"mongodb://127.0.0.1:{proxy.port}/?retryWrites=false&directConnection=true",
        name=config.db_name,
        production=False,
        server_selection_timeout_ms=int(SERVER_SELECTION_S * 1000),
        connect_timeout_ms=int(CONNECT_S * 1000),
        operation_timeout_ms=int(OPERATION_S * 1000),
        client_bulk_write=mode == "bulk",
    )
    store = Store.connect(settings)
    served: ServedApp | None = None
    try:
        vault = await open_vault(config, store, clock)
        served = await serve_runtime(assemble_api(store, config, vault, clock, hash_cost=TEST_COST))
        client = supervised.client
        client.base_url = served.base_url
        clock.set(local(2026, 11, 2, 9, 0))
        assert (await client.login("probationer")).status == 200
        outage = Outage(proxy, served, client, [])
        yield outage
    finally:
        proxy.restore()
        if served is not None:
            served.server.stop()
            await served.server.close_all_connections()
            await served.runtime.services.close()
        await store.close()
        await proxy.stop()
        # A connection attempt PyMongo abandons when the proxy resets it mid-handshake leaves
        # its socket to the garbage collector: collect it here, where that is expected (as in
        # tests/handlers/test_base.py), not in some later test.
        await asyncio.sleep(0.1)
        gc.collect()
    assert proxy.connections == 0
    # Whatever the outage did, no answer was a server fault or showed the server's insides.
    for answer in outage.answers:
        assert answer.status != 500, answer.body
        text = answer.body.decode("utf-8", "replace")
        assert "Traceback" not in text and 'File "' not in text, text


def assert_unavailable(answer: MpAnswer) -> None:
    """503 with Retry-After and the mini-program's Chinese message."""
    assert answer.status == 503, answer.body
    assert int(answer.headers["Retry-After"]) > 0
    error = answer.json["error"]
    assert error["code"] == "unavailable"
    assert error["message"] == UNAVAILABLE_ZH


async def stored_checkins(store: Store, subject_id: str) -> list[dict[str, Any]]:
    return await store.collection("checkins").find({"subject_id": subject_id}).to_list()


async def occurrence(store: Store, occurrence_id: str) -> dict[str, Any]:
    found = await store.collection("occurrences").find_one({"_id": occurrence_id})
    assert found is not None
    return found


async def assert_stored_once(store: Store, subject_id: str, answer: MpAnswer) -> None:
    """The 201 names the one stored check-in, and the day's window is met by it."""
    assert answer.status == 201, answer.body
    (stored,) = await stored_checkins(store, subject_id)
    assert stored["_id"] == answer.json["id"]
    window = await occurrence(store, answer.json["obligation_id"])
    assert window["status"] == "done"
    assert window["checkin_id"] == stored["_id"]


@pytest.mark.parametrize("outage", ["bulk", "separate"], indirect=True)
async def test_a_cut_before_the_check_in_answers_503_and_the_retry_stores_it_once(
    outage, supervised, store, clock
):
    outage.proxy.cut()
    refused = await outage.check_in(clock, "outage-before-1")
    assert_unavailable(refused)
    assert await stored_checkins(store, supervised.subject_id) == []

    outage.proxy.restore()
    retried = await outage.check_in(clock, "outage-before-1")
    await assert_stored_once(store, supervised.subject_id, retried)


async def test_a_slow_database_still_stores_the_check_in_once(outage, supervised, store, clock):
    outage.proxy.delay(0.05)
    answer = await outage.check_in(clock, "outage-slow-1")
    await assert_stored_once(store, supervised.subject_id, answer)


@pytest.mark.parametrize("outage", ["separate"], indirect=True)
async def test_a_cut_between_the_check_in_and_its_window_is_finished_by_the_retry(
    outage, supervised, store, clock
):
    # The check-in is stored; the update of its window never reaches the database.
    outage.proxy.cut_before(to_server=lambda m: mongodb_command(m) == ("update", "occurrences"))
    first = await outage.check_in(clock, "outage-middle-1")
    assert outage.proxy.tripped.is_set()
    (stored,) = await stored_checkins(store, supervised.subject_id)
    assert first.status != 201 or first.json["id"] == stored["_id"]
    assert_unavailable(first)
    assert (await occurrence(store, stored["occurrence_id"]))["status"] == "scheduled"

    outage.proxy.restore()
    retried = await outage.check_in(clock, "outage-middle-1")
    await assert_stored_once(store, supervised.subject_id, retried)
    assert retried.json == stored["answer"] | {
        "arrived_at": retried.json["arrived_at"],
        "message": "签到成功，您已按时完成本次签到。",
        # No survey was sent with it.
        "survey": None,
    }


async def test_a_cut_before_the_one_batch_stores_nothing_and_the_retry_stores_it_once(
    outage, supervised, store, clock
):
    # One command carries the audit entry, the check-in and its window: there is no moment
    # between the check-in and its window to cut. Cut before it, nothing of it is stored.
    outage.proxy.cut_before(to_server=lambda m: mongodb_command(m) == BATCH)
    first = await outage.check_in(clock, "outage-batch-1")
    assert outage.proxy.tripped.is_set()
    assert_unavailable(first)
    assert await stored_checkins(store, supervised.subject_id) == []
    windows = store.collection("occurrences")
    assert await windows.count_documents({"checkin_id": {"$exists": True}}) == 0

    outage.proxy.restore()
    retried = await outage.check_in(clock, "outage-batch-1")
    await assert_stored_once(store, supervised.subject_id, retried)


@pytest.mark.parametrize(
    ("outage", "write"),
    [
        ("separate", ("insert", "audit")),
        ("separate", ("insert", "checkins")),
        ("separate", ("update", "occurrences")),
        ("bulk", BATCH),
    ],
    ids=["audit-entry", "check-in", "window", "one-batch"],
    indirect=["outage"],
)
async def test_a_lost_acknowledgement_of_any_write_is_finished_by_the_retry(
    outage, supervised, store, clock, write
):
    # The database carries out the write, and its acknowledgement is lost on the way back: the
    # application cannot know what was stored, so it answers neither success nor a refusal.
    lost = LostReply(write)
    outage.proxy.cut_before(to_server=lost.request, to_client=lost.reply)
    first = await outage.check_in(clock, "outage-ack-1")
    assert outage.proxy.tripped.is_set()
    stored = await stored_checkins(store, supervised.subject_id)
    assert len(stored) == (0 if write == ("insert", "audit") else 1)
    assert first.status != 201 or [first.json["id"]] == [doc["_id"] for doc in stored]
    assert_unavailable(first)
    if write == BATCH:
        # The whole batch landed, the window met with it: only the answer was lost.
        (stored,) = stored
        assert (await occurrence(store, stored["occurrence_id"]))["checkin_id"] == stored["_id"]

    outage.proxy.restore()
    retried = await outage.check_in(clock, "outage-ack-1")
    await assert_stored_once(store, supervised.subject_id, retried)


@pytest.mark.parametrize(
    ("outage", "write"),
    [("bulk", BATCH), ("separate", ("insert", "checkins"))],
    ids=["one-batch", "separate"],
    indirect=["outage"],
)
async def test_a_blip_that_loses_the_acknowledgement_leaves_a_truthful_audit_trail(
    outage, supervised, store, clock, write
):
    # The connection drops as the check-in is stored, and the database is back at once: the
    # audit entry for the outcome is written while the stored check-in stands.
    lost = LostReply(write)
    outage.proxy.cut_before(to_server=lost.request, to_client=lost.reply)
    first = asyncio.create_task(outage.check_in(clock, "outage-blip-1"))
    await outage.proxy.tripped.wait()
    outage.proxy.restore()
    assert_unavailable(await first)
    retried = await outage.check_in(clock, "outage-blip-1")
    await assert_stored_once(store, supervised.subject_id, retried)

    trail = (
        await store.collection("audit")
        .find({"resource": "checkin", "resource_id": retried.json["id"]})
        .sort([("chain_id", 1), ("seq", 1)])
        .to_list()
    )
    assert trail[0]["action"] == "checkins.record"
    outcomes = [entry["outcome"] for entry in trail]
    # The check-in stands and meets the window: its trail must not end in "failed".
    if outcomes[-1] == "failed":
        raise FalseAudit(f"the stored check-in's audit trail reads {outcomes}")


async def test_a_silent_database_answers_503_in_bounded_time_and_the_retry_stores_it_once(
    outage, supervised, store, clock
):
    outage.proxy.blackhole()
    started = time.monotonic()
    # Never forever: at worst the driver's monitor notices the silence, then server selection
    # gives up (the hang guard), and the answer is a 503, never a 201.
    async with asyncio.timeout(HEARTBEAT_S + CONNECT_S + SERVER_SELECTION_S + 5):
        silent = await outage.check_in(clock, "outage-silent-1")
    waited = time.monotonic() - started
    assert_unavailable(silent)
    assert await stored_checkins(store, supervised.subject_id) == []

    outage.proxy.restore()
    retried = await outage.check_in(clock, "outage-silent-1")
    await assert_stored_once(store, supervised.subject_id, retried)

    # What the application promises (models/store.py, DatabaseSettings): a 503 once its own
    # deadlines pass (connecting, choosing a server, one retry of a read), not the heartbeat's.
    if waited > CONNECT_S + 2 * SERVER_SELECTION_S + 1:
        raise SlowAnswer(f"503 after {waited:.1f} s")


async def test_the_clients_own_retries_ride_out_a_short_outage(outage, supervised, store, clock):
    answered = Answered(503)
    access_log = logging.getLogger("anbang.access")
    access_log.addHandler(answered)
    try:
        outage.proxy.cut()
        attempt = asyncio.create_task(outage.check_in(clock, "outage-retry-1", retries=3))
        # The first attempt is refused; the database is back while the client waits to retry.
        async with asyncio.timeout(SERVER_SELECTION_S * 2 + 5):
            await answered.seen.wait()
        outage.proxy.restore()
        async with asyncio.timeout(30):
            final = await attempt
    finally:
        access_log.removeHandler(answered)
    assert final.attempts == 2
    await assert_stored_once(store, supervised.subject_id, final)

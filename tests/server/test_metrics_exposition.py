"""The metrics listener, scraped over real HTTP: requests by route pattern, check-ins and their
flags, sign-in failures, the review queue, database commands, sweeps and the jobs lease."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tornado.httpclient import AsyncHTTPClient

from jobs.runner import JobsProcess
from models.clock import FixedClock
from models.leases import LeaseService
from models.store import DatabaseSettings, Store
from server.metrics import Metrics, start_listener
from tests.mp_support import STATION_CENTRE, local
from tests.process_support import (
    environment,
    free_port,
    get,
    launched,
    wait_for_ready,
    wait_until,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, keyed by its name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def scrape(port: int) -> tuple[str, str]:
    client = AsyncHTTPClient(force_instance=True)
    try:
        answer = await client.fetch(f"http://127.0.0.1:{port}/metrics", request_timeout=10)
    finally:
        client.close()
    return answer.headers["Content-Type"], answer.body.decode("utf-8")


@contextlib.contextmanager
def listening(metrics: Metrics) -> Iterator[int]:
    port = free_port()
    server = start_listener(metrics, "127.0.0.1", port)
    assert server is not None
    try:
        yield port
    finally:
        server.stop()


async def check_in(client: Any, clock: FixedClock, **extra: Any) -> Any:
    extra.setdefault("captured_at", clock.now())
    return await client.check_in(
        lat=STATION_CENTRE.lat, lng=STATION_CENTRE.lng, coord_type="wgs84", **extra
    )


async def test_a_scrape_counts_requests_check_ins_sign_in_failures_and_the_review_queue(
    api, supervised, clock, fetch
):
    metrics = api.runtime.metrics
    assert metrics is not None
    refused = await fetch(
        "/api/v1/auth/login",
        "POST",
        json_body={"username": "no.such.officer", "password": "not-the-password-1"},
    )
    assert refused.status == 401

    clock.set(local(2026, 11, 2, 9, 30))
    on_time = await check_in(supervised.client, clock)
    assert on_time.json["status"] == "on_time", on_time.body
    # Made before midnight without signal, arriving after: late, flagged, waiting for review.
    arrived = local(2026, 11, 3, 0, 0, 5)
    clock.set(arrived)
    late = await check_in(supervised.client, clock, captured_at=local(2026, 11, 2, 23, 59))
    assert (late.json["status"], late.json["review"]) == ("late", "pending"), late.body
    flags = late.json["flags"]
    assert "offline" in flags

    token = await supervised.officer_token()
    subject_id = supervised.subject_id
    assert (await fetch(f"/api/v1/subjects/{subject_id}", token=token)).status == 200
    assert (await fetch(f"/api/v1/nothing-here/{subject_id}")).status == 404

    clock.set(arrived + dt.timedelta(hours=2))
    with listening(metrics) as port:
        content_type, text = await scrape(port)
    assert content_type.startswith("text/plain; version=")
    samples = parse(text)

    # Requests are labelled by the route's pattern, never by the path that carried an id.
    assert subject_id not in text
    assert "no.such.officer" not in text
    route = "/api/v1/subjects/{subject_id}"
    assert value(samples, "anbang_http_requests_total", method="GET", route=route, status="200")
    assert value(
        samples, "anbang_http_requests_total", method="GET", route="(unmatched)", status="404"
    )
    assert value(
        samples,
        "anbang_http_requests_total",
        method="POST",
        route="/api/v1/auth/login",
        status="401",
    )
    checkins = {"method": "POST", "route": "/mp/v1/checkins", "status_class": "2xx"}
    assert value(samples, "anbang_http_request_duration_seconds_count", **checkins) == 2
    assert value(samples, "anbang_http_request_duration_seconds_bucket", le="+Inf", **checkins)

    assert value(samples, "anbang_checkins_total", status="on_time") == 1
    assert value(samples, "anbang_checkins_total", status="late") == 1
    for flag in flags:
        assert value(samples, "anbang_checkin_flags_total", flag=flag) == 1
    assert value(samples, "anbang_sign_in_failures_total", channel="staff", reason="failed") == 1

    assert value(samples, "anbang_review_queue_depth") == 1
    assert value(samples, "anbang_review_queue_oldest_age_seconds") == 2 * 3600
    assert value(samples, "anbang_process_info", role="api", version="0.1.0") == 1


async def test_a_scrape_reads_the_review_queue_afresh(api, supervised, clock):
    metrics = api.runtime.metrics
    assert metrics is not None
    with listening(metrics) as port:
        assert value(parse((await scrape(port))[1]), "anbang_review_queue_depth") == 0
        clock.set(local(2026, 11, 3, 0, 0, 5))
        late = await check_in(supervised.client, clock, captured_at=local(2026, 11, 2, 23, 59))
        assert late.json["review"] == "pending"
        samples = parse((await scrape(port))[1])
    assert value(samples, "anbang_review_queue_depth") == 1
    assert value(samples, "anbang_review_queue_oldest_age_seconds") == 0


async def test_database_commands_are_counted_by_name_and_outcome(config):
    metrics = Metrics("api")
    name = f"metrics_{uuid.uuid4().hex[:8]}"
    store = Store.connect(
        DatabaseSettings(
            uri=config.database_uri,
            name=name,
            production=False,
            event_listeners=(metrics.command_listener(),),
        )
    )
    try:
        people = store.collection("people")
        await people.insert_one({"_id": "p-1", "name": "张三"})
        # The same _id again: the server answers ok with a write error.
        with contextlib.suppress(Exception):
            await people.insert_one({"_id": "p-1", "name": "李四"})
        assert await people.find_one({"_id": "p-1"}) is not None
        with contextlib.suppress(Exception):
            await store.database.command("noSuchCommand")
        samples = parse(metrics.exposition().decode())
    finally:
        await store.database.client.drop_database(name)
        await store.close()
    assert value(samples, "anbang_db_commands_total", command="insert", outcome="ok") == 1
    assert value(samples, "anbang_db_commands_total", command="insert", outcome="write_error") == 1
    assert value(samples, "anbang_db_commands_total", command="find", outcome="ok") == 1
    assert value(samples, "anbang_db_commands_total", command="noSuchCommand", outcome="error") == 1
    assert value(samples, "anbang_db_command_duration_seconds_count", command="insert") == 2
    # Labels name commands, never what they carried.
    text = metrics.exposition().decode()
    assert "张三" not in text and "p-1" not in text


class Counted:
    name = "count_things"
    interval_seconds = 300
    description = "counts things"

    async def run(self, now: dt.datetime) -> dict[str, Any]:
        return {"things": 3, "done": True}


class Broken:
    name = "broken"
    interval_seconds = 60
    description = "always fails"

    async def run(self, now: dt.datetime) -> dict[str, Any]:
        raise RuntimeError("the sweep broke")


async def test_the_jobs_holder_reports_its_lease_and_sweeps(store):
    clock = FixedClock(dt.datetime(2026, 11, 24, tzinfo=dt.UTC))
    holder_metrics, standby_metrics = Metrics("jobs"), Metrics("jobs")
    counted, broken = Counted(), Broken()
    holder = JobsProcess(
        LeaseService(store, clock), [counted, broken], clock, holder="a", observer=holder_metrics
    )
    standby = JobsProcess(
        LeaseService(store, clock), [counted], clock, holder="b", observer=standby_metrics
    )
    for sweep in (counted, broken):
        holder_metrics.sweep_scheduled(sweep.name, sweep.interval_seconds)
    await holder.renew_lease()
    await standby.renew_lease()
    await holder.run_sweep(counted)
    await holder.run_sweep(broken)
    await standby.run_sweep(counted)

    with listening(holder_metrics) as port:
        held = parse((await scrape(port))[1])
    standing_by = parse(standby_metrics.exposition().decode())
    assert value(held, "anbang_jobs_lease_held") == 1
    assert value(standing_by, "anbang_jobs_lease_held") == 0
    assert value(held, "anbang_jobs_lease_changes_total", change="acquired") == 1
    assert value(held, "anbang_sweep_runs_total", sweep="count_things", outcome="ok") == 1
    assert value(held, "anbang_sweep_runs_total", sweep="broken", outcome="failed") == 1
    assert value(held, "anbang_sweep_items_total", sweep="count_things", item="things") == 3
    assert value(held, "anbang_sweep_duration_seconds_count", sweep="count_things") == 1
    assert value(held, "anbang_sweep_interval_seconds", sweep="count_things") == 300
    # Taking the lease starts every sweep's clock; the broken one never moved it since.
    assert value(held, "anbang_sweep_last_success_timestamp_seconds", sweep="broken")
    assert value(standing_by, "anbang_sweep_runs_total", sweep="count_things", outcome="ok") is None


@pytest.mark.slow
def test_the_api_process_serves_metrics_on_its_own_loopback_port(tmp_path, database_uri):
    metrics_port = free_port()
    env = environment(
        tmp_path,
        MONGODB_URI=database_uri,
        ANBANG_DB_NAME=f"metrics_{uuid.uuid4().hex[:8]}",
        ANBANG_METRICS_PORT=str(metrics_port),
    )
    with launched(["serve"], env, tmp_path / "serve.log") as api:
        wait_for_ready(api, int(env["ANBANG_PORT"]), 30)
        wait_until(lambda: "metrics ready" in api.output, 10, "the metrics listener")
        status, body = get(metrics_port, "/metrics")
        assert status == 200
        samples = parse(body.decode())
        # The API port does not serve them; the metrics port serves nothing else.
        assert get(int(env["ANBANG_PORT"]), "/metrics")[0] == 404
        assert get(metrics_port, "/readyz")[0] == 404
    assert value(samples, "anbang_process_info", role="api", version="0.1.0") == 1
    assert value(samples, "anbang_http_requests_total", method="GET", route="/readyz", status="200")
    # The start-up commands went through the listener registered on the client.
    assert value(samples, "anbang_db_commands_total", command="buildInfo", outcome="ok") == 1
    assert value(samples, "anbang_review_queue_depth") == 0
    assert "process_cpu_seconds_total" in {name for name, _ in samples}

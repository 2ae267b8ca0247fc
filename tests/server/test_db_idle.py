"""The first request after a quiet spell: pooled connections the database dropped are never used."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from secantus import SecantusDBServer

from jobs.runner import run_once
from models.clock import FixedClock
from models.leases import LeaseService
from models.orgs import OrgKind
from models.policy import Role
from server.app import SYSTEM, ApiRuntime, build_api
from server.config import Config
from server.embedded_tuning import plan_id_filters_by_id
from server.jobs import SWEEPS, open_jobs_context
from tests.conftest import Fetch, serve_runtime

# The database drops a connection idle this long (the embedded default is 300 s); the client
# must stop reusing pooled connections sooner.
SERVER_IDLE_SECONDS = 1.0
CLIENT_MAX_IDLE_MS = 400


@pytest.fixture(scope="module")
def impatient_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An embedded database that closes client connections idle for a second."""
    plan_id_filters_by_id()
    server = SecantusDBServer(
        host="127.0.0.1",
        port=0,
        storage_path=str(tmp_path_factory.mktemp("impatient")),
        enable_test_commands=False,
        ttl_sweep_seconds=0,
        client_idle_timeout_s=SERVER_IDLE_SECONDS,
    )
    server.start()
    host, port = server.address
    yield f"mongodb://{host}:{port}/?retryWrites=false"
    server.stop()


@pytest.fixture
def idle_config(config: Config, impatient_database: str) -> Config:
    return dataclasses.replace(
        config,
        mongodb_uri=impatient_database,
        db_name=f"idle_{uuid.uuid4().hex[:12]}",
        db_max_idle_ms=CLIENT_MAX_IDLE_MS,
    )


@pytest_asyncio.fixture
async def idle_api(idle_config: Config) -> AsyncIterator[ApiRuntime]:
    runtime = await build_api(idle_config)
    yield runtime
    await runtime.store.database.client.drop_database(idle_config.db_name)
    await runtime.close()


async def quiet_spell() -> None:
    await asyncio.sleep(SERVER_IDLE_SECONDS * 2.5)


def test_default_keeps_connections_younger_than_the_embedded_databases_idle_limit() -> None:
    config = Config.from_env({})
    assert config.db_max_idle_ms == 60_000
    assert config.db_max_idle_ms < 300_000


@pytest.mark.slow  # quiet spells on the real clock
async def test_login_after_a_quiet_spell_is_not_a_503(idle_api: ApiRuntime) -> None:
    city = await idle_api.services.orgs.create(
        SYSTEM, name="温州市", code="330300", kind=OrgKind.CITY, parent_id=None
    )
    await idle_api.services.staff.create(
        SYSTEM,
        username="quiet01",
        password="Quiet-Spell-2026",
        name="值班员",
        role=Role.CITY_OFFICER,
        org_id=city.id,
    )
    served = await serve_runtime(idle_api)
    fetch = Fetch(served.base_url)
    try:
        login = {"username": "quiet01", "password": "Quiet-Spell-2026"}
        first = await fetch("/api/v1/auth/login", "POST", json_body=login)
        assert first.status == 200, first.body
        await quiet_spell()
        again = await fetch("/api/v1/auth/login", "POST", json_body=login)
        assert again.status == 200, again.body
        await quiet_spell()
        wrong = await fetch(
            "/api/v1/auth/login", "POST", json_body={**login, "password": "Not-This-One-1"}
        )
        assert wrong.status == 401, wrong.body
    finally:
        fetch.close()
        served.server.stop()
        await served.server.close_all_connections()


@pytest.mark.slow  # quiet spells on the real clock
async def test_jobs_sweep_after_a_quiet_spell_runs(idle_config: Config) -> None:
    now = dt.datetime.now(dt.UTC)
    ctx = await open_jobs_context(idle_config, FixedClock(now))
    try:
        sweeps = [spec.build(ctx) for spec in SWEEPS]
        leases = LeaseService(ctx.store, ctx.clock)
        assert await leases.acquire("jobs", "holder-1", dt.timedelta(seconds=30))
        await run_once(sweeps, "all", now)
        await quiet_spell()
        # The jobs process's first act after a quiet spell is a write: renewing its lease.
        assert await leases.acquire("jobs", "holder-1", dt.timedelta(seconds=30))
        results = await run_once(sweeps, "all", now)
        assert [result["sweep"] for result in results] == [spec.name for spec in SWEEPS]
    finally:
        await ctx.store.database.client.drop_database(idle_config.db_name)
        await ctx.services.close()
        await ctx.store.close()

"""Wiring of the jobs process: its store, keys, lease, sweeps, and the `jobs` sub-commands."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass

from jobs.runner import JobsProcess, Sweep, run_once, select_sweeps
from jobs.sweeps import (
    AuditCheckpointSweep,
    CaseRosterSweep,
    CloseWindowsSweep,
    ElocationExpirySweep,
    IntakeDeadlineSweep,
    LeaveReturnsSweep,
    LostContactSweep,
    MaterialiseSweep,
    NoticesSweep,
    ProgramsEndingSweep,
    ReminderSweep,
    RetentionSweep,
    StaysEndingSweep,
    WeChatTokenSweep,
    WindowHistorySweep,
)
from models.audit import SIGNING_KEY_ID, AuditCheckpointer, AuditContext
from models.clock import Clock, FixedClock, SystemClock
from models.crypto import new_signing_key
from models.identity import Identity
from models.keys import KeyVault
from models.leases import LeaseService
from models.store import Store
from server.app import (
    API_VERSION,
    Services,
    build_services,
    collection_specs,
    connect_store,
    open_vault,
    wait_for_database,
)
from server.config import Config
from server.metrics import Metrics, start_listener
from server.processes import stop_event_on_signals


@dataclass(frozen=True)
class JobsContext:
    store: Store
    config: Config
    clock: Clock
    vault: KeyVault
    services: Services


# Who acts when a sweep changes a record: the jobs process itself, in every audit entry.
JOBS_ACTOR = AuditContext(
    Identity(user_id="jobs", role="system", unscoped=True), request_id="sweep"
)


@dataclass(frozen=True)
class SweepSpec:
    name: str
    interval_seconds: int
    description: str
    build: Callable[[JobsContext], Sweep]


async def audit_checkpointer(ctx: JobsContext) -> AuditCheckpointer:
    """Only the jobs process unwraps the audit signing key."""
    key = await ctx.vault.get_or_create(
        SIGNING_KEY_ID, "audit_signing", lambda: new_signing_key(ctx.vault.suite)
    )
    return AuditCheckpointer(ctx.store, ctx.clock, ctx.vault.suite, key, ctx.config.audit_export)


# The sweeps in the order `run-once all` runs them; later issues add theirs.
SWEEPS: tuple[SweepSpec, ...] = (
    SweepSpec(
        MaterialiseSweep.name,
        MaterialiseSweep.interval_seconds,
        MaterialiseSweep.description,
        lambda ctx: MaterialiseSweep(ctx.services.obligations),
    ),
    SweepSpec(
        CloseWindowsSweep.name,
        CloseWindowsSweep.interval_seconds,
        CloseWindowsSweep.description,
        lambda ctx: CloseWindowsSweep(ctx.services.obligations),
    ),
    SweepSpec(
        LostContactSweep.name,
        LostContactSweep.interval_seconds,
        LostContactSweep.description,
        lambda ctx: LostContactSweep(ctx.services.caseload),
    ),
    SweepSpec(
        ReminderSweep.name,
        ReminderSweep.interval_seconds,
        ReminderSweep.description,
        lambda ctx: ReminderSweep(ctx.services.obligations),
    ),
    SweepSpec(
        NoticesSweep.name,
        NoticesSweep.interval_seconds,
        NoticesSweep.description,
        lambda ctx: NoticesSweep(ctx.services.notifications),
    ),
    SweepSpec(
        ProgramsEndingSweep.name,
        ProgramsEndingSweep.interval_seconds,
        ProgramsEndingSweep.description,
        lambda ctx: ProgramsEndingSweep(ctx.services.programs),
    ),
    SweepSpec(
        LeaveReturnsSweep.name,
        LeaveReturnsSweep.interval_seconds,
        LeaveReturnsSweep.description,
        lambda ctx: LeaveReturnsSweep(ctx.services.leave),
    ),
    SweepSpec(
        ElocationExpirySweep.name,
        ElocationExpirySweep.interval_seconds,
        ElocationExpirySweep.description,
        lambda ctx: ElocationExpirySweep(ctx.services.elocation),
    ),
    SweepSpec(
        IntakeDeadlineSweep.name,
        IntakeDeadlineSweep.interval_seconds,
        IntakeDeadlineSweep.description,
        lambda ctx: IntakeDeadlineSweep(ctx.services.programs),
    ),
    SweepSpec(
        RetentionSweep.name,
        RetentionSweep.interval_seconds,
        RetentionSweep.description,
        lambda ctx: RetentionSweep(ctx.services.programs, ctx.services.subjects, JOBS_ACTOR),
    ),
    SweepSpec(
        CaseRosterSweep.name,
        CaseRosterSweep.interval_seconds,
        CaseRosterSweep.description,
        lambda ctx: CaseRosterSweep(ctx.services.subjects),
    ),
    SweepSpec(
        WindowHistorySweep.name,
        WindowHistorySweep.interval_seconds,
        WindowHistorySweep.description,
        lambda ctx: WindowHistorySweep(ctx.services.obligations, ctx.services.orgs),
    ),
    SweepSpec(
        StaysEndingSweep.name,
        StaysEndingSweep.interval_seconds,
        StaysEndingSweep.description,
        lambda ctx: StaysEndingSweep(ctx.services.assistance),
    ),
    SweepSpec(
        WeChatTokenSweep.name,
        WeChatTokenSweep.interval_seconds,
        WeChatTokenSweep.description,
        lambda ctx: WeChatTokenSweep(ctx.services.wechat_tokens),
    ),
    SweepSpec(
        AuditCheckpointSweep.name,
        AuditCheckpointSweep.interval_seconds,
        AuditCheckpointSweep.description,
        lambda ctx: AuditCheckpointSweep(lambda: audit_checkpointer(ctx)),
    ),
)


async def open_jobs_context(
    config: Config, clock: Clock, metrics: Metrics | None = None
) -> JobsContext:
    """The jobs process's store, vault and services, connected and ready."""
    store = connect_store(config, metrics=metrics)
    try:
        await wait_for_database(store, config.db_wait_seconds)
        await store.ensure_indexes(collection_specs())
        vault = await open_vault(config, store, clock)
    except BaseException:
        await store.close()
        raise
    services = build_services(
        store,
        config,
        clock,
        vault,
        process_role="jobs",
        push_notifications=True,
        telemetry=metrics,
    )
    return JobsContext(store, config, clock, vault, services)


async def _run_jobs(config: Config) -> None:
    stop = stop_event_on_signals()
    clock = SystemClock()
    metrics = Metrics("jobs", API_VERSION)
    ctx = await open_jobs_context(config, clock, metrics)
    listener = start_listener(metrics, config.metrics_host, config.jobs_metrics_port)
    try:
        sweeps = [spec.build(ctx) for spec in SWEEPS]
        process = JobsProcess(
            leases=LeaseService(ctx.store, clock), sweeps=sweeps, clock=clock, observer=metrics
        )
        await process.run(stop)
    finally:
        if listener is not None:
            listener.stop()
        await ctx.services.close()
        await ctx.store.close()


async def _run_once(config: Config, name: str, now: dt.datetime) -> list[dict]:
    # The simulated time lives in this process's clock only, never in shared state.
    ctx = await open_jobs_context(config, FixedClock(now))
    try:
        return await run_once([spec.build(ctx) for spec in SWEEPS], name, now)
    finally:
        await ctx.services.close()
        await ctx.store.close()


def jobs_main(config: Config, command: str | None, sweep: str | None, now: dt.datetime) -> int:
    if command == "list":
        for spec in SWEEPS:
            print(f"{spec.name}\tevery {spec.interval_seconds} s\t{spec.description}")
        return 0
    if command == "run-once":
        assert sweep is not None
        try:
            # Check the name before any connection: a typo answers at once.
            select_sweeps(SWEEPS, sweep)  # type: ignore[arg-type]
        except KeyError as exc:
            print(f"anbang: {exc.args[0]}", file=sys.stderr)
            return 2
        results = asyncio.run(_run_once(config, sweep, now))
        print(json.dumps(results, ensure_ascii=False, default=str))
        return 0
    asyncio.run(_run_jobs(config))
    return 0

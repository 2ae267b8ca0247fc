"""Prometheus metrics of one process: its own registry, the adapter the services report through,
the database command listener, and the listener that serves `GET /metrics` on a port of its own.

Every label value comes from a bounded set the code defines (a route's pattern, a status, a
command name): never a raw path, an id, a query or a document's contents. docs/metrics.md lists
each metric.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import tornado.web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from pymongo import monitoring
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from handlers.base import log_request
from handlers.openapi import path_template
from models.checkins import CheckinService
from models.clock import Clock

log = logging.getLogger("anbang.metrics")

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DB_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
SWEEP_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)
# A scrape waits at most this long for a gauge read from the database (Prometheus's own scrape
# timeout is 10 s by default); a slow read leaves the last value and counts a failure.
PROBE_SECONDS = 3.0

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "(unmatched)"
# The throttle's scopes, named for the people they refuse.
SIGN_IN_CHANNELS = {"login": "staff", "mp_login": "mp", "mp_bind": "mp_bind"}
# What WeChat says of a subscribe message (`ErrorStatus`); anything else is counted as `other`.
WECHAT_REPORTS = frozenset({"success", "failed:user block", "failed:system failed"})
# Failures a driver publishes for an exception rather than a server reply (errtype).
_NETWORK_ERRORS = frozenset(
    {"AutoReconnect", "ConnectionFailure", "NetworkTimeout", "ServerSelectionTimeoutError"}
)
_TIMEOUT_CODES = frozenset({50, 262})  # MaxTimeMSExpired, ExceededTimeLimit


class RouteTemplates:
    """The route pattern that served a request, as a label: `/api/v1/subjects/{subject_id}`."""

    def __init__(self, app: tornado.web.Application):
        self._by_handler: dict[Any, list[tuple[re.Pattern[str], str]]] = {}
        for rule in app.wildcard_router.rules:
            regex = getattr(rule.matcher, "regex", None)
            if regex is None:
                continue
            entry = (regex, path_template(regex.pattern))
            self._by_handler.setdefault(rule.target, []).append(entry)

    def of(self, handler: tornado.web.RequestHandler) -> str:
        entries = self._by_handler.get(type(handler))
        if not entries:
            return UNMATCHED
        if len(entries) == 1:
            return entries[0][1]
        # One handler class on several routes: the pattern that matches is the one it served.
        path = handler.request.path
        return next((t for p, t in entries if p.match(path)), entries[0][1])


class CommandMetrics(monitoring.CommandListener):
    """Counts every database command by name and outcome, and times it. Called on the driver's
    path, so it does a dictionary look-up and an increment, nothing more."""

    def __init__(self, commands: Counter, durations: Histogram):
        self._commands = commands
        self._durations = durations
        self._children: dict[tuple[str, str], Any] = {}
        self._timers: dict[str, Any] = {}

    def _count(self, name: str, outcome: str, seconds: float) -> None:
        child = self._children.get((name, outcome))
        if child is None:
            child = self._children[(name, outcome)] = self._commands.labels(name, outcome)
        child.inc()
        timer = self._timers.get(name)
        if timer is None:
            timer = self._timers[name] = self._durations.labels(name)
        timer.observe(seconds)

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        reply = event.reply
        # A write the server refused in part (a duplicate key) still answers ok: 1.
        failed = isinstance(reply, Mapping) and (
            reply.get("writeErrors") or reply.get("writeConcernError")
        )
        outcome = "write_error" if failed else "ok"
        self._count(event.command_name, outcome, event.duration_micros / 1e6)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        failure = event.failure if isinstance(event.failure, Mapping) else {}
        if failure.get("errtype") in _NETWORK_ERRORS:
            outcome = "network"
        elif failure.get("code") in _TIMEOUT_CODES or "Timeout" in str(failure.get("errtype")):
            outcome = "timeout"
        else:
            outcome = "error"
        self._count(event.command_name, outcome, event.duration_micros / 1e6)


class Metrics:
    """One process's registry and metric objects; also the Telemetry the services report to."""

    def __init__(self, role: str, version: str = ""):
        self.role = role
        self.registry = CollectorRegistry()
        registry = self.registry
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        Gauge(
            "anbang_process_info",
            "This process: its role and release",
            ["role", "version"],
            registry=registry,
        ).labels(role, version).set(1)

        self.requests = Counter(
            "anbang_http_requests_total",
            "Requests answered, by route pattern and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "anbang_http_request_duration_seconds",
            "Time from a request's arrival to its answer",
            ["method", "route", "status_class"],
            buckets=HTTP_BUCKETS,
            registry=registry,
        )
        self.checkins = Counter(
            "anbang_checkins_total",
            "New check-ins by classification",
            ["status"],
            registry=registry,
        )
        self.checkin_flags = Counter(
            "anbang_checkin_flags_total",
            "Flags raised on new check-ins",
            ["flag"],
            registry=registry,
        )
        self.review_queue = Gauge(
            "anbang_review_queue_depth",
            "Check-ins waiting for a station's review (read at scrape time)",
            registry=registry,
        )
        self.review_oldest = Gauge(
            "anbang_review_queue_oldest_age_seconds",
            "How long the oldest check-in waiting for review has waited (0: none waits)",
            registry=registry,
        )
        self.probe_failures = Counter(
            "anbang_metrics_probe_failures_total",
            "Scrape-time reads that failed or timed out (the gauge kept its last value)",
            ["probe"],
            registry=registry,
        )
        self.sweep_runs = Counter(
            "anbang_sweep_runs_total",
            "Sweep runs by outcome",
            ["sweep", "outcome"],
            registry=registry,
        )
        self.sweep_seconds = Histogram(
            "anbang_sweep_duration_seconds",
            "How long each sweep run took",
            ["sweep"],
            buckets=SWEEP_BUCKETS,
            registry=registry,
        )
        self.sweep_items = Counter(
            "anbang_sweep_items_total",
            "What sweeps did (the counts each run reports: alerts raised, windows closed, ...)",
            ["sweep", "item"],
            registry=registry,
        )
        self.sweep_last_success = Gauge(
            "anbang_sweep_last_success_timestamp_seconds",
            "When the sweep last succeeded here (taking the lease counts as one)",
            ["sweep"],
            registry=registry,
        )
        self.sweep_interval = Gauge(
            "anbang_sweep_interval_seconds",
            "How often the sweep is scheduled",
            ["sweep"],
            registry=registry,
        )
        self.lease_held = Gauge(
            "anbang_jobs_lease_held",
            "1 while this jobs process holds the lease (runs the sweeps), else 0",
            registry=registry,
        )
        self.lease_changes = Counter(
            "anbang_jobs_lease_changes_total",
            "The jobs lease acquired, lost (a renewal failed) or released at shutdown",
            ["change"],
            registry=registry,
        )
        self.deliveries = Counter(
            "anbang_notifier_deliveries_total",
            "Pushes outside the app (WeChat, SMS) by channel and outcome",
            ["channel", "outcome"],
            registry=registry,
        )
        self.wechat_reports = Counter(
            "anbang_wechat_delivery_reports_total",
            "WeChat's reports on subscribe messages it was given, by status",
            ["status"],
            registry=registry,
        )
        self.sign_in_refusals = Counter(
            "anbang_sign_in_failures_total",
            "Refused sign-in and binding attempts by channel and reason",
            ["channel", "reason"],
            registry=registry,
        )
        self.sign_in_lockouts = Counter(
            "anbang_sign_in_lockouts_total",
            "Account names locked by repeated failures",
            ["channel"],
            registry=registry,
        )
        self.db_commands = Counter(
            "anbang_db_commands_total",
            "Database commands by name and outcome",
            ["command", "outcome"],
            registry=registry,
        )
        self.db_seconds = Histogram(
            "anbang_db_command_duration_seconds",
            "Database command round trips",
            ["command"],
            buckets=DB_BUCKETS,
            registry=registry,
        )
        self._probes: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        self._sweeps: set[str] = set()
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        # Counters an alert watches with increase() start at 0, so their first event counts.
        for change in ("acquired", "lost", "released"):
            self.lease_changes.labels(change)
        for channel in SIGN_IN_CHANNELS.values():
            self.sign_in_lockouts.labels(channel)

    # --- requests and database commands ---------------------------------------------------------

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in METHODS else "OTHER"
        # The children are looked up once per (method, route, status): labels() validates and
        # locks each time, several times the cost of the increment itself.
        children = self._request_children.get((method, route, status))
        if children is None:
            children = self._request_children[(method, route, status)] = (
                self.requests.labels(method, route, str(status)),
                self.request_seconds.labels(method, route, f"{status // 100}xx"),
            )
        children[0].inc()
        children[1].observe(seconds)

    def command_listener(self) -> CommandMetrics:
        return CommandMetrics(self.db_commands, self.db_seconds)

    # --- Telemetry (models/telemetry.py) ---------------------------------------------------------

    def checkin_recorded(self, status: str, flags: Sequence[str]) -> None:
        self.checkins.labels(status).inc()
        for flag in flags:
            self.checkin_flags.labels(flag).inc()

    def sign_in_refused(self, scope: str, reason: str) -> None:
        self.sign_in_refusals.labels(SIGN_IN_CHANNELS.get(scope, scope), reason).inc()

    def sign_in_locked(self, scope: str) -> None:
        self.sign_in_lockouts.labels(SIGN_IN_CHANNELS.get(scope, scope)).inc()

    def delivery_attempted(self, channel: str, outcome: str) -> None:
        self.deliveries.labels(channel, outcome).inc()

    def delivery_reported(self, status: str) -> None:
        self.wechat_reports.labels(status if status in WECHAT_REPORTS else "other").inc()

    def sweep_scheduled(self, sweep: str, interval_seconds: int) -> None:
        self._sweeps.add(sweep)
        self.sweep_interval.labels(sweep).set(interval_seconds)
        for outcome in ("ok", "failed"):
            self.sweep_runs.labels(sweep, outcome)

    def sweep_finished(
        self, sweep: str, outcome: str, seconds: float, counts: Mapping[str, int]
    ) -> None:
        self.sweep_runs.labels(sweep, outcome).inc()
        self.sweep_seconds.labels(sweep).observe(seconds)
        if outcome == "ok":
            self.sweep_last_success.labels(sweep).set(time.time())
        for item, count in counts.items():
            if count > 0:
                self.sweep_items.labels(sweep, item).inc(count)

    def lease_state(self, held: bool, change: str | None) -> None:
        self.lease_held.set(1 if held else 0)
        if change is None:
            return
        self.lease_changes.labels(change).inc()
        if change == "acquired":
            # A new holder is given each sweep's interval from now before it counts as late.
            now = time.time()
            for sweep in self._sweeps:
                self.sweep_last_success.labels(sweep).set(now)

    # --- gauges read at scrape time --------------------------------------------------------------

    def watch_review_queue(self, checkins: CheckinService, clock: Clock) -> None:
        """Read the review queue's depth and oldest item at each scrape."""

        async def read() -> None:
            count, oldest = await checkins.review_backlog()
            self.review_queue.set(count)
            age = (clock.now() - oldest).total_seconds() if oldest is not None else 0.0
            self.review_oldest.set(max(0.0, age))

        self._probes.append(("review_queue", read))

    async def refresh(self) -> None:
        for name, probe in self._probes:
            try:
                async with asyncio.timeout(PROBE_SECONDS):
                    await probe()
            except Exception as exc:
                self.probe_failures.labels(name).inc()
                log.warning(
                    "metrics probe failed",
                    extra={"fields": {"probe": name, "exception": type(exc).__name__}},
                )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def request_logger(metrics: Metrics) -> Callable[[tornado.web.RequestHandler], None]:
    """The application's log_function: the access log line, then the request's metrics (the
    route table is read from the application at its first request)."""
    templates: dict[int, RouteTemplates] = {}

    def log_and_count(handler: tornado.web.RequestHandler) -> None:
        log_request(handler)
        request = handler.request
        app = handler.application
        routes = templates.get(id(app))
        if routes is None:
            routes = templates[id(app)] = RouteTemplates(app)
        metrics.observe_request(
            request.method or "",
            routes.of(handler),
            handler.get_status(),
            request.request_time(),
        )

    return log_and_count


class MetricsHandler(tornado.web.RequestHandler):
    """`GET /metrics`: the gauges read from the database are refreshed, then the text format."""

    def initialize(self, metrics: Metrics) -> None:
        self._metrics = metrics

    async def get(self) -> None:
        await self._metrics.refresh()
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.set_header("Cache-Control", "no-store")
        self.finish(self._metrics.exposition())


def metrics_app(metrics: Metrics) -> tornado.web.Application:
    # Scrapes are not requests of the API: no access log line for each.
    return tornado.web.Application(
        [(r"/metrics", MetricsHandler, {"metrics": metrics})], log_function=lambda _h: None
    )


def start_listener(metrics: Metrics, host: str, port: int) -> HTTPServer | None:
    """Serve `metrics` on host:port (port 0: not at all). A port already taken (another process
    of the same kind on this host) is logged and costs the metrics, never the process."""
    if port == 0:
        return None
    try:
        sockets = bind_sockets(port, host)
    except (OSError, OverflowError) as exc:
        log.warning(
            "metrics listener not started",
            extra={"fields": {"host": host, "port": port, "exception": type(exc).__name__}},
        )
        return None
    server = HTTPServer(metrics_app(metrics))
    server.add_sockets(sockets)
    log.info("metrics ready", extra={"fields": {"host": host, "port": port, "role": metrics.role}})
    return server

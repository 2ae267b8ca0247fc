"""The API process: serve on bound sockets and shut down gracefully on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import socket

import tornado.web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from server.app import build_api
from server.config import Config
from server.logs import configure
from server.metrics import start_listener
from server.processes import run_forked, stop_event_on_signals

log = logging.getLogger("anbang.server")

# The connection's hard limit; each route's smaller JSON limit is enforced by the base handler.
MAX_CONNECTION_BODY_BYTES = 64 << 20


def http_server(app: tornado.web.Application, config: Config) -> HTTPServer:
    """The API's HTTP server. A client's address comes from `X-Real-Ip` / `X-Forwarded-For` only
    behind the proxy (`ANBANG_BEHIND_PROXY`, nginx sets them); otherwise any client could name
    an address of its choosing to audit and the login limits."""
    return HTTPServer(
        app,
        xheaders=config.behind_proxy,
        max_body_size=MAX_CONNECTION_BODY_BYTES,
        idle_connection_timeout=60,
        body_timeout=60,
    )


async def serve_sockets(config: Config, sockets: list[socket.socket], index: int = 0) -> None:
    stop = stop_event_on_signals()
    runtime = await build_api(config)
    # Each worker answers its own scrape: worker N on the metrics port + N.
    metrics = (
        start_listener(runtime.metrics, config.metrics_host, config.metrics_port + index)
        if runtime.metrics is not None and config.metrics_port
        else None
    )
    server = http_server(runtime.app, config)
    server.add_sockets(sockets)
    address = sockets[0].getsockname()
    log.info("api ready", extra={"fields": {"host": address[0], "port": address[1]}})
    await stop.wait()

    # Stop accepting, let in-flight requests finish, then close what is left and the database.
    log.info("api stopping", extra={"fields": {"in_flight": runtime.context.in_flight.count}})
    server.stop()
    if metrics is not None:
        metrics.stop()
    finished = await runtime.context.in_flight.wait_idle(config.shutdown_grace_seconds)
    if not finished:
        log.warning(
            "requests still running at shutdown",
            extra={"fields": {"in_flight": runtime.context.in_flight.count}},
        )
    await server.close_all_connections()
    await runtime.close()
    log.info("api stopped")


def serve(config: Config, processes: int | None = None) -> int:
    count = processes or config.processes
    sockets = bind_sockets(config.port, config.host, reuse_port=False)
    if count == 1:
        asyncio.run(serve_sockets(config, sockets))
        return 0

    # Sockets are bound before the fork so workers share the port; everything else (the
    # database client above all) is built after it, in each worker.
    def worker(index: int) -> int:
        # The log writer thread does not survive a fork: each worker starts its own.
        configure(config.log_level, f"serve-{index}")
        asyncio.run(serve_sockets(config, sockets, index))
        return 0

    return run_forked(count, worker)

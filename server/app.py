"""The composition root: build the database handle, services and adapters once, and inject them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import tornado.web

from handlers import ops
from handlers.base import AppContext, NotFoundHandler, log_request
from handlers.openapi import build_openapi
from models.clock import Clock, SystemClock
from models.health import ReadinessService
from models.leases import LeaseService
from models.policy import Policy
from models.store import CollectionSpec, DatabaseSettings, Store
from server.config import Config

log = logging.getLogger("anbang.server")

API_TITLE = "Anbang (安帮) API"
API_VERSION = "0.1.0"


def all_routes() -> list[tuple[Any, ...]]:
    """Every route of the API process, gathered from each module's own route list."""
    return [*ops.routes]


def collection_specs() -> list[CollectionSpec]:
    """Every collection the services declare, for index creation at start."""
    return [*LeaseService.collections]


class DatabaseNotReady(Exception):
    pass


def connect_store(config: Config) -> Store:
    return Store.connect(
        DatabaseSettings(uri=config.database_uri, name=config.db_name, production=config.production)
    )


async def wait_for_database(store: Store, seconds: float) -> None:
    """Wait until the database answers; a process that cannot reach it stops with a clear error."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not await store.ping(timeout_seconds=2.0):
        if loop.time() >= deadline:
            raise DatabaseNotReady(
                f"the database did not answer within {seconds:.0f} s; check MONGODB_URI "
                "(or start the embedded database with `python -m server db`)"
            )
        await asyncio.sleep(0.5)


@dataclass
class ApiRuntime:
    """What one API process holds: its store, the injected context and the Tornado application."""

    store: Store
    context: AppContext
    app: tornado.web.Application

    async def close(self) -> None:
        await self.store.close()


def make_app(context: AppContext, routes: Sequence[tuple[Any, ...]]) -> tornado.web.Application:
    routes = list(routes)

    @cache
    def openapi() -> dict[str, Any]:
        return build_openapi(routes, title=API_TITLE, version=API_VERSION)

    context.openapi_factory = openapi
    return tornado.web.Application(
        routes,
        anbang=context,
        default_handler_class=NotFoundHandler,
        log_function=log_request,
        serve_traceback=False,
        debug=False,
    )


def assemble_api(store: Store, config: Config, clock: Clock | None = None) -> ApiRuntime:
    """Build the services and the application around an existing store (tests use this too)."""
    context = AppContext(
        policy=Policy(),
        readiness=ReadinessService({"database": store.ping}),
        clock=clock or SystemClock(),
        max_body_bytes=config.max_body_bytes,
    )
    return ApiRuntime(store=store, context=context, app=make_app(context, all_routes()))


async def build_api(config: Config, *, clock: Clock | None = None) -> ApiRuntime:
    store = connect_store(config)
    try:
        await wait_for_database(store, config.db_wait_seconds)
        await store.ensure_indexes(collection_specs())
    except BaseException:
        await store.close()
        raise
    return assemble_api(store, config, clock)

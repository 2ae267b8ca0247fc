"""Shared fixtures: one embedded database per session, a fresh database per test, a served app."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from secantus import SecantusDBServer
from tornado.httpclient import AsyncHTTPClient, HTTPResponse
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from models.store import DatabaseSettings, Store
from server.app import ApiRuntime, assemble_api, collection_specs
from server.config import Config


@pytest.fixture(scope="session")
def database_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecantusDBServer]:
    """The embedded database, in this process, on a free loopback port, for the whole session."""
    server = SecantusDBServer(
        host="127.0.0.1",
        port=0,
        storage_path=str(tmp_path_factory.mktemp("secantus")),
        enable_test_commands=False,
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def database_uri(database_server: SecantusDBServer) -> str:
    host, port = database_server.address
    return f"mongodb://{host}:{port}/?retryWrites=false"


@pytest.fixture
def config(database_uri: str, tmp_path: Any) -> Config:
    base = Config.from_env({"ANBANG_VAR_DIR": str(tmp_path / "var")})
    return dataclasses.replace(
        base,
        mongodb_uri=database_uri,
        db_name=f"test_{uuid.uuid4().hex[:12]}",
        master_key_file=tmp_path / "var" / "keys" / "master.key",
    )


@pytest_asyncio.fixture
async def store(config: Config) -> AsyncIterator[Store]:
    """A fresh database for this test, with every declared index; dropped afterwards."""
    store = Store.connect(
        DatabaseSettings(uri=config.database_uri, name=config.db_name, production=False)
    )
    await store.ensure_indexes(collection_specs())
    yield store
    await store.database.client.drop_database(config.db_name)
    await store.close()


@dataclass
class Answer:
    """An HTTP answer with its JSON body decoded."""

    status: int
    headers: Any
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> dict[str, Any]:
        return self.json["error"]  # type: ignore[no-any-return]


class Fetch:
    """Calls the served app over real HTTP on loopback; never raises for an error status."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.client = AsyncHTTPClient(force_instance=True)
        self.token: str | None = None

    async def __call__(
        self,
        path: str,
        method: str = "GET",
        *,
        json_body: Any = None,
        body: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        token: str | None = None,
    ) -> Answer:
        all_headers = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body, ensure_ascii=False)
            all_headers.setdefault("Content-Type", "application/json")
        if (token or self.token) and "Authorization" not in all_headers:
            all_headers["Authorization"] = f"Bearer {token or self.token}"
        if body is None and method in ("POST", "PUT", "PATCH"):
            body = b""
        response: HTTPResponse = await self.client.fetch(
            self.base_url + path,
            method=method,
            body=body,
            headers=all_headers,
            raise_error=False,
            allow_nonstandard_methods=True,
            request_timeout=30,
        )
        return Answer(response.code, response.headers, response.body or b"")

    def close(self) -> None:
        self.client.close()


@dataclass
class ServedApp:
    runtime: ApiRuntime
    server: HTTPServer
    base_url: str


async def serve_runtime(runtime: ApiRuntime) -> ServedApp:
    sockets = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(runtime.app, max_body_size=64 << 20)
    server.add_sockets(sockets)
    port = sockets[0].getsockname()[1]
    return ServedApp(runtime, server, f"http://127.0.0.1:{port}")


@pytest_asyncio.fixture
async def api(store: Store, config: Config) -> AsyncIterator[ServedApp]:
    """The real application on a free loopback port, over this test's fresh database."""
    served = await serve_runtime(assemble_api(store, config))
    yield served
    served.server.stop()
    await served.server.close_all_connections()


@pytest_asyncio.fixture
async def fetch(api: ServedApp) -> AsyncIterator[Fetch]:
    client = Fetch(api.base_url)
    yield client
    client.close()

"""Shared fixtures: one embedded database per session, a fresh database per test, a served app."""

from __future__ import annotations

import dataclasses
import datetime as dt
import gc
import hashlib
import inspect
import json
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import CodeType
from typing import Any

import pytest
import pytest_asyncio
from secantus import SecantusDBServer
from tornado.httpclient import AsyncHTTPClient, HTTPResponse
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import URLSpec

from models.clock import FixedClock
from models.identity import Identity
from models.keys import KeyVault
from models.orgs import Org, OrgKind
from models.passwords import TEST_COST
from models.policy import Role
from models.store import DatabaseSettings, Store
from server.app import (
    SYSTEM,
    ApiRuntime,
    Services,
    all_routes,
    assemble_api,
    collection_specs,
    open_vault,
    route_table,
)
from server.config import Config
from server.embedded_tuning import journal_bulk_writes, plan_id_filters_by_id
from server.wechat_standin import StandinState, make_standin_app

pytest_plugins = ["tests.mp_support", "tests.hsm_support", "tests.browser_support"]

# --- the fast tier: `make test-fast` runs `-m "not slow"` --------------------------------------
# A test is slow when it serves the API over HTTP or drives a browser (by the fixtures it uses),
# or starts a process (its code, its fixtures' code or a helper of the suite it calls names
# `subprocess`), or is marked `slow` by hand (waits on real time). Classified at collection, so a
# new test lands in the right tier without anyone remembering to mark it.
SLOW_FIXTURES = frozenset({"api", "browser"})
PROCESS_NAMES = frozenset({"subprocess", "create_subprocess_exec", "create_subprocess_shell"})
TESTS_DIR = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by the marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    starts: dict[CodeType, bool] = {}
    for item in items:
        if item.get_closest_marker("slow") is not None:
            continue
        fixtures = set(getattr(item, "fixturenames", ()))
        definitions = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
        functions = [getattr(item, "function", None)] + [
            d.func for name in fixtures for d in definitions.get(name, ())
        ]
        if fixtures & SLOW_FIXTURES or any(
            _starts_processes(f, starts) for f in functions if f is not None
        ):
            item.add_marker(pytest.mark.slow)
    # Stable: the tests of a file keep their order.
    items.sort(key=lambda item: LONGEST_FIRST.get(item.path.relative_to(ROOT).as_posix(), 0))


# The files that took longest (`--durations`, 2026-12-07), begun first. A file's tests run on one
# worker (`--dist loadfile`), and a long file begun last kept one worker busy while the other had
# nothing left. Order only: a file not listed runs after these, in its usual place.
ROOT = TESTS_DIR.parent
LONGEST_FIRST = {
    path: rank - 100
    for rank, path in enumerate(
        (
            "tests/models/test_audit.py",
            "tests/server/test_audit_cli.py",
            "tests/server/test_processes.py",
            "tests/handlers/test_access_matrix.py",
            "tests/handlers/test_access_matrix_second_half.py",
            "tests/handlers/test_hostile_input.py",
            "tests/server/test_sweep_crash.py",
            "tests/handlers/test_console.py",
            "tests/miniprogram_api/test_checkin_outage.py",
            "tests/server/test_fault_jobs_kill.py",
            "tests/handlers/test_console_casefile_gaps.py",
            "tests/server/test_fault_db_restart.py",
            "tests/handlers/test_console_casework.py",
            "tests/handlers/test_console_casefile.py",
            "tests/handlers/test_console_dashboard.py",
            "tests/ops/test_deploy_check.py",
            "tests/handlers/test_console_contact.py",
            "tests/handlers/test_documents.py",
        )
    )
}


def _starts_processes(function: Callable[..., Any], known: dict[CodeType, bool]) -> bool:
    """Whether `function`, or a function or class of the suite it names, starts a process."""
    function = inspect.unwrap(function)
    code = getattr(function, "__code__", None)
    if code is None or not _in_suite(function):
        return False
    if code not in known:
        known[code] = False  # a recursive helper ends here
        known[code] = _code_starts_processes(code, function.__globals__, known)
    return known[code]


def _code_starts_processes(code: CodeType, namespace: dict[str, Any], known: dict) -> bool:
    for name in code.co_names:
        if name in PROCESS_NAMES:
            return True
        value = namespace.get(name)
        members = vars(value).values() if inspect.isclass(value) else [value]
        functions = (getattr(m, "__func__", m) for m in members)  # classmethod, staticmethod
        if any(callable(f) and _starts_processes(f, known) for f in functions):
            return True
    return any(
        _code_starts_processes(const, namespace, known)
        for const in code.co_consts
        if isinstance(const, CodeType)
    )


def _in_suite(value: Any) -> bool:
    module = sys.modules.get(getattr(value, "__module__", None) or "")
    path = getattr(module, "__file__", None)
    return path is not None and Path(path).resolve().is_relative_to(TESTS_DIR)


@pytest.fixture(scope="session")
def database_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecantusDBServer]:
    """The embedded database, in this process, on a free loopback port, for the whole session.

    Its databases live in memory: every test's is dropped at its end, and a journal on disk
    made each journaled write wait on an fsync (a fifth of the suite's time). The tests of
    what the journal keeps across a kill start servers of their own on disk."""
    plan_id_filters_by_id()
    journal_bulk_writes()
    server = SecantusDBServer(
        host="127.0.0.1",
        port=0,
        storage_path=":memory:",
        enable_test_commands=False,
        # No TTL sweeper: tests run the application on a fixed clock, often weeks behind the
        # wall clock the database's sweeper reads, so it would delete a binding code or an
        # idempotency key a test has just written (it did, now and then, under load). The
        # application checks every expiry itself; the TTL indexes only tidy up.
        ttl_sweep_seconds=0,
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module", autouse=True)
def collect_garbage_after_each_file() -> Iterator[None]:
    """An unclosed socket or file warns in the test file that left it (the collector runs as
    the file's last test ends), not in whichever later test the collector happens to run."""
    yield
    gc.collect()


@pytest.fixture(scope="session")
def database_uri(database_server: SecantusDBServer) -> str:
    host, port = database_server.address
    return f"mongodb://{host}:{port}/?retryWrites=false"


@dataclass
class WeChatStandin:
    """The local WeChat stand-in on loopback: its address and its (inspectable) state."""

    base_url: str
    state: StandinState


@pytest_asyncio.fixture(scope="session")
async def wechat_server() -> AsyncIterator[WeChatStandin]:
    """One WeChat stand-in for the session; each test starts from a clean state."""
    state = StandinState()
    sockets = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(make_standin_app(state))
    server.add_sockets(sockets)
    yield WeChatStandin(f"http://127.0.0.1:{sockets[0].getsockname()[1]}", state)
    server.stop()
    await server.close_all_connections()


@pytest.fixture
def wechat_standin(wechat_server: WeChatStandin) -> WeChatStandin:
    wechat_server.state.reset()
    return wechat_server


@pytest.fixture
def config(database_uri: str, tmp_path: Any, wechat_standin: WeChatStandin) -> Config:
    base = Config.from_env(
        {"ANBANG_VAR_DIR": str(tmp_path / "var"), "WECHAT_API_BASE": wechat_standin.base_url}
    )
    return dataclasses.replace(
        base, mongodb_uri=database_uri, db_name=f"test_{uuid.uuid4().hex[:12]}"
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
        self.answers: list[tuple[str, Answer]] = []
        # Strings no later answer may contain: (index of the first answer to check, paths
        # where the value belongs, such as the enrolment answer that shows a TOTP secret).
        self.secrets: dict[str, tuple[int, frozenset[str]]] = {}

    def never_reveal(self, value: str, *, except_paths: tuple[str, ...] = ()) -> None:
        if value and value not in self.secrets:
            self.secrets[value] = (len(self.answers), frozenset(except_paths))

    def leaks(self) -> list[str]:
        """Every (path, secret) where an answer revealed what it must not."""
        found = []
        for index, (path, answer) in enumerate(self.answers):
            text = answer.body.decode("utf-8", "replace")
            if "$argon2" in text:
                found.append(f"{path}: a password hash")
            for value, (first, allowed) in self.secrets.items():
                if index >= first and value in text and path not in allowed:
                    found.append(f"{path}: {value[:6]}…")
        return found

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
        if isinstance(json_body, dict):
            for key in ("password", "current_password", "new_password"):
                if isinstance(json_body.get(key), str):
                    self.never_reveal(json_body[key])
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
        answer = Answer(response.code, response.headers, response.body or b"")
        self.answers.append((path.split("?", 1)[0], answer))
        if path == "/api/v1/auth/login" and answer.status == 200:
            # The token itself is the login answer; its stored hash must never appear anywhere.
            token = answer.json["token"]
            self.never_reveal(hashlib.sha256(token.encode()).hexdigest())
        return answer

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


@pytest.fixture
def clock() -> FixedClock:
    """The application's clock: real time at the start of the test, moved only by the test."""
    return FixedClock(dt.datetime.now(dt.UTC).replace(microsecond=0))


@pytest_asyncio.fixture
async def vault(store: Store, config: Config, clock: FixedClock) -> KeyVault:
    """The key vault under a master key file made for this test."""
    return await open_vault(config, store, clock)


@pytest.fixture(scope="session")
def compiled_routes() -> list[URLSpec]:
    """The application's route table, compiled once for every test's application."""
    return route_table(all_routes())


@pytest_asyncio.fixture
async def runtime(
    store: Store,
    config: Config,
    clock: FixedClock,
    vault: KeyVault,
    compiled_routes: list[URLSpec],
) -> AsyncIterator[ApiRuntime]:
    """The real application over this test's fresh database, not served: what `services`
    needs (a test that only calls services stays in the fast tier)."""
    assembled = assemble_api(
        store, config, vault, clock, hash_cost=TEST_COST, table=compiled_routes
    )
    yield assembled
    await assembled.services.close()


@pytest_asyncio.fixture
async def api(runtime: ApiRuntime) -> AsyncIterator[ServedApp]:
    """The real application on a free loopback port, over this test's fresh database."""
    served = await serve_runtime(runtime)
    yield served
    served.server.stop()
    await served.server.close_all_connections()


@pytest.fixture
def services(runtime: ApiRuntime) -> Services:
    return runtime.services


@pytest_asyncio.fixture
async def fetch(api: ServedApp) -> AsyncIterator[Fetch]:
    client = Fetch(api.base_url)
    yield client
    client.close()
    leaks = client.leaks()
    assert not leaks, f"answers revealed secrets: {leaks}"


@dataclass
class Tree:
    """Two cities' worth of organisation: city > county > station > community > grid."""

    city: Org
    county: Org
    station: Org
    station2: Org
    community: Org
    grid: Org
    other_city: Org
    other_county: Org
    other_station: Org
    other_community: Org

    def home_for(self, role: Role, *, other: bool = False) -> Org:
        """The node where a staff member of `role` naturally sits (in this city or the other)."""
        placement = {
            Role.CITY_OFFICER: "city",
            Role.OVERSIGHT: "county",
            Role.COUNTY_OFFICER: "county",
            Role.HEALTH_WORKER: "county",
            Role.POLICE: "station",
            Role.ASSISTANCE_COORDINATOR: "station",
            Role.STATION_OFFICER: "station",
            Role.SOCIAL_WORKER: "station",
            Role.GRID_WORKER: "community",
        }.get(role, "county")
        return getattr(self, f"other_{placement}" if other else placement)


@pytest_asyncio.fixture
async def tree(services: Services) -> Tree:
    orgs = services.orgs

    async def add(name: str, code: str, kind: OrgKind, parent: Org | None) -> Org:
        return await orgs.create(
            SYSTEM,
            name=name,
            code=code,
            kind=kind,
            parent_id=parent.id if parent else None,
        )

    city = await add("温州市", "330300", OrgKind.CITY, None)
    county = await add("鹿城区司法局", "330302", OrgKind.COUNTY, city)
    station = await add("五马司法所", "330302001", OrgKind.STATION, county)
    station2 = await add("南汇司法所", "330302002", OrgKind.STATION, county)
    community = await add("五马社区", "330302001001", OrgKind.COMMUNITY, station)
    grid = await add("五马一网格", "330302001001-01", OrgKind.GRID, community)
    other_city = await add("杭州市", "330100", OrgKind.CITY, None)
    other_county = await add("上城区司法局", "330102", OrgKind.COUNTY, other_city)
    other_station = await add("湖滨司法所", "330102001", OrgKind.STATION, other_county)
    other_community = await add("湖滨社区", "330102001001", OrgKind.COMMUNITY, other_station)
    return Tree(
        city,
        county,
        station,
        station2,
        community,
        grid,
        other_city,
        other_county,
        other_station,
        other_community,
    )


@dataclass
class Account:
    id: str
    username: str
    password: str
    role: Role
    org: Org

    @property
    def identity(self) -> Identity:
        return Identity(
            user_id=self.id, role=str(self.role), org_id=self.org.id, org_path=self.org.path
        )


class StaffFactory:
    def __init__(self, services: Services):
        self.services = services
        self.count = 0

    async def __call__(self, role: Role, org: Org, *, is_agency_head: bool = False) -> Account:
        self.count += 1
        username = f"{role.value.replace('_', '')}{self.count:03d}"
        password = f"Good-{uuid.uuid4().hex[:10]}"
        view = await self.services.staff.create(
            SYSTEM,
            username=username,
            password=password,
            name=f"职员{self.count}",
            role=role,
            org_id=org.id,
            is_agency_head=is_agency_head,
        )
        return Account(view.id, username, password, role, org)

    async def token_for(self, account: Account) -> str:
        """A session for `account` without the login endpoint (whose address limit would bite)."""
        return (await self.services.sessions.issue(account.identity)).token


@pytest.fixture
def make_staff(services: Services) -> StaffFactory:
    return StaffFactory(services)

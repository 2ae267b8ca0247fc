"""Helpers for tests that run `python -m server ...` as real processes (no fixtures, no plugin).

Every process runs on free loopback ports with its state under the test's temporary directory,
is waited on with a bound, and is killed (with everything it started) when the test ends.
The `a`-prefixed waits are for async tests: they keep the event loop turning, so whatever the
test serves in-process (the WeChat stand-in) answers the processes meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import http.client
import inspect
import io
import ipaddress
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from miniprogram_api.client import MiniProgramClient, MpAnswer
from models.geo import Area, Point
from models.identity_numbers import IdType
from models.orgs import OrgKind
from models.periods import add_years
from models.store import Store
from models.subjects import SubjectInput
from server.__main__ import build_parser
from server.admin_cli import run_admin
from server.app import SYSTEM, Services
from server.audit_cli import run_audit
from server.backup_cli import run_backup
from server.config import VARIABLES, Config
from server.logs import JsonFormatter
from tests.subject_factories import resident_id

REPO_ROOT = Path(__file__).resolve().parents[1]


# --- ports, environment, waiting ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def wait_until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {seconds:.0f} s")
        time.sleep(0.05)


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]],
    seconds: float,
    what: str,
    interval: float = 0.05,
) -> None:
    """Wait (without blocking the loop) until `condition` holds; fail naming `what` past
    `seconds`. The condition may be a coroutine function."""
    deadline = time.monotonic() + seconds
    while True:
        held = condition()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {seconds:.0f} s")
        await asyncio.sleep(interval)


def clean_environment(**overrides: str) -> dict[str, str]:
    """The test process's environment without any setting of ours, plus `overrides`."""
    ours = {v.name for v in VARIABLES}
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ours and not name.startswith(("ANBANG_", "WECHAT_"))
    }
    env.update(overrides)
    return env


def environment(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """A whole installation's environment: state under `tmp_path`, free ports, nothing of
    ours inherited."""
    env = clean_environment()
    var = tmp_path / "var"
    env.update(
        ANBANG_VAR_DIR=str(var),
        ANBANG_DB_PATH=str(var / "db"),
        ANBANG_MASTER_KEY_FILE=str(var / "keys" / "master.key"),
        ANBANG_DB_PORT=str(free_port()),
        ANBANG_PORT=str(free_port()),
        ANBANG_WECHAT_PORT=str(free_port()),
        ANBANG_DB_WAIT="20",
        ANBANG_SHUTDOWN_GRACE="5",
        ANBANG_DEMO="0",
        # No metrics listeners unless a test asks: tests in parallel would race for the port.
        ANBANG_METRICS_PORT="0",
        ANBANG_JOBS_METRICS_PORT="0",
    )
    env.update(overrides)
    return env


def cli_environment(config: Config, **overrides: str) -> dict[str, str]:
    """The environment of a command run against `config`'s database and state directory (the
    test's own, where its fixtures made the master key); warnings and errors logged only."""
    return clean_environment(
        MONGODB_URI=config.mongodb_uri,
        ANBANG_DB_NAME=config.db_name,
        ANBANG_VAR_DIR=str(config.var_dir),
        ANBANG_MASTER_KEY_FILE=str(config.master_key_file),
        ANBANG_LOG_LEVEL="WARNING",
        ANBANG_DB_WAIT="10",
        **overrides,
    )


# --- processes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessId:
    """A process as the kernel knows it: its pid and start time, so a reused pid is not it."""

    pid: int
    started: int

    @classmethod
    def of(cls, pid: int) -> ProcessId | None:
        stat = _stat(pid)
        return None if stat is None else cls(pid, int(stat[19]))

    @property
    def alive(self) -> bool:
        stat = _stat(self.pid)
        # A zombie has exited; it only waits for a parent to collect its status.
        return stat is not None and int(stat[19]) == self.started and stat[0] != "Z"

    @property
    def command(self) -> str:
        try:
            raw = Path(f"/proc/{self.pid}/cmdline").read_bytes()
        except OSError:
            return ""
        return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat from the state field on (the command name may contain spaces)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def descendants(pid: int) -> list[ProcessId]:
    found: list[ProcessId] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            ident = ProcessId.of(int(child))
            if ident is not None:
                found.append(ident)
                found.extend(descendants(ident.pid))
    return found


class Launched:
    """`python -m server <args>` with its output in a file; killed with its descendants at exit."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path):
        self.log_path = log
        self._log = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "server", *args],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.pid = self.process.pid

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, seconds: float) -> int:
        try:
            return self.process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"`{' '.join(self.process.args[3:])}` still running after {seconds:.0f} s:\n"
                + self.output
            ) from None

    async def await_exit(self, seconds: float) -> int:
        """`wait` for async tests: the loop keeps turning meanwhile."""
        await eventually(lambda: not self.running(), seconds, f"pid {self.pid} exiting")
        return self.wait(1)

    def running(self) -> bool:
        return self.process.poll() is None

    def kill_everything(self) -> None:
        left = [p for p in descendants(self.pid) if p.alive]
        if self.running():
            self.process.kill()
        for ident in left:
            if ident.alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(ident.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        self._log.close()


@contextlib.contextmanager
def launched(args: list[str], env: dict[str, str], log: Path) -> Iterator[Launched]:
    process = Launched(args, env, log)
    try:
        yield process
    finally:
        process.kill_everything()


def run_cli(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`python -m server <args>` to the end, its output captured (the one way the suite runs a
    command as a process; `run_in_process` when the process itself is not what is tested)."""
    return subprocess.run(
        [sys.executable, "-m", "server", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


async def arun_cli(
    *args: str, env: dict[str, str], seconds: float = 120
) -> subprocess.CompletedProcess[str]:
    """`run_cli` off the event loop (a thread waits for the process, bounded by `seconds`)."""
    return await asyncio.to_thread(run_cli, *args, env=env, timeout=seconds)


IN_PROCESS = {"admin": run_admin, "audit": run_audit, "backup": run_backup}


@dataclass(frozen=True)
class Ran:
    """A command run in this process: its exit code and output, named as a process's are."""

    returncode: int
    stdout: str
    stderr: str


async def run_in_process(config: Config, *args: str) -> Ran:
    """`python -m server admin|audit|backup ...` without a new interpreter (about 1.2 s each):
    the command's own code on `config`, as `server/__main__.py` calls it once it has read the
    environment; what it prints, and what it logs as the process would (JSON lines at
    `config.log_level`), captured as the process's output."""
    parsed = build_parser().parse_args(list(args))
    out, err = io.StringIO(), io.StringIO()
    log = logging.StreamHandler(err)
    log.setFormatter(JsonFormatter())
    log.setLevel(config.log_level)
    root = logging.getLogger()
    root.addHandler(log)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = await IN_PROCESS[parsed.command](config, parsed)
    finally:
        root.removeHandler(log)
    return Ran(code, out.getvalue(), err.getvalue())


# --- HTTP probes ----------------------------------------------------------------------------------


def get(port: int, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def wait_for_ready(process: Launched, port: int, seconds: float) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        assert process.running(), f"exited with {process.process.returncode}:\n{process.output}"
        with contextlib.suppress(OSError, http.client.HTTPException):
            status, body = get(port, "/readyz")
            if status == 200:
                return json.loads(body)  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise AssertionError(f"/readyz not 200 within {seconds:.0f} s:\n{process.output}")
        time.sleep(0.1)


@dataclass(frozen=True)
class Probe:
    """One answer to a GET: status, headers (lower-case names) and body."""

    status: int
    headers: dict[str, str]
    body: bytes


async def aget(port: int, path: str, seconds: float = 5.0) -> Probe:
    """GET over a fresh loopback connection, without blocking the loop; OSError when there
    is no answer (refused, reset, or nothing within `seconds`)."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(seconds):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
            raw = await reader.read()
    except TimeoutError:
        raise OSError(f"no answer to GET {path} within {seconds} s") from None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/1.1 "):
        raise OSError(f"not an HTTP answer to GET {path}: {raw[:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Probe(int(lines[0].split()[1]), headers, body)


async def await_ready(process: Launched, port: int, seconds: float) -> dict:
    """`wait_for_ready` for async tests."""
    deadline = time.monotonic() + seconds
    while True:
        assert process.running(), f"exited with {process.process.returncode}:\n{process.output}"
        with contextlib.suppress(OSError):
            probe = await aget(port, "/readyz", seconds=3)
            if probe.status == 200:
                return json.loads(probe.body)  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise AssertionError(f"/readyz not 200 within {seconds:.0f} s:\n{process.output}")
        await asyncio.sleep(0.1)


async def await_log(process: Launched, text: str, seconds: float) -> None:
    """Wait until the process has logged `text` (it must stay alive meanwhile)."""

    def logged() -> bool:
        if text in process.output:
            return True
        assert process.running(), f"exited with {process.process.returncode}:\n{process.output}"
        return False

    await eventually(logged, seconds, f"{text!r} in the log of pid {process.pid}")


def log_records(process: Launched, message: str) -> list[dict[str, Any]]:
    """The JSON log lines of `process` whose `msg` is `message`."""
    found = []
    for line in process.output.splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and record.get("msg") == message:
                found.append(record)
    return found


# --- the embedded database as its own process -----------------------------------------------------


def start_database(env: dict[str, str], log: Path, stack: contextlib.ExitStack) -> Launched:
    """`python -m server db` on ANBANG_DB_PORT with ANBANG_DB_PATH, listening when this returns."""
    db = stack.enter_context(launched(["db"], env, log))
    port = int(env["ANBANG_DB_PORT"])
    wait_until(lambda: port_open(port) or not db.running(), 90, "the database listening")
    assert db.running(), db.output
    return db


# --- people on the mini-program -------------------------------------------------------------------

# 五马街, 温州 (WGS-84): the station's centre, where everyone checks in.
STATION_CENTRE = Point(28.0197, 120.6543)
STATION_RADIUS_M = 3000.0


@dataclass
class Person:
    """A case file with a daily check-in window open now, and a binding code for it."""

    label: str
    subject_id: str
    code: str
    # One address per person (X-Real-Ip, the API behind a proxy): login and binding allow
    # 30 attempts per address a minute.
    address: str


class Phone(MiniProgramClient):
    """One person's mini-program, calling from an address of its own."""

    def __init__(self, base_url: str, http: AsyncHTTPClient, address: str):
        # Generous: a loaded machine answers slowly, and a timeout here reads as no answer.
        super().__init__(base_url, http=http, timeout=60)
        self.address = address

    async def call(
        self,
        method: str,
        path: str,
        json_body: Any = None,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> MpAnswer:
        headers = {"X-Real-Ip": self.address, **(headers or {})}
        return await super().call(method, path, json_body, body=body, headers=headers)

    async def check_in_at_station(
        self, key: str, captured_at: dt.datetime, base_url: str | None = None
    ) -> MpAnswer:
        """One attempt (no retries of its own) at the station; `base_url` picks the process.
        The same key and capture time every time: a retry is the same request."""
        if base_url is not None:
            self.base_url = base_url
        return await self.check_in(
            lat=STATION_CENTRE.lat,
            lng=STATION_CENTRE.lng,
            coord_type="wgs84",
            captured_at=captured_at,
            key=key,
            retries=0,
        )


async def seed_people(services: Services, count: int, today: dt.date) -> list[Person]:
    """A station with a 3 km area and `count` people under community corrections from `today`
    (strict supervision: a daily check-in window, open now on the real clock), through the
    services, as intake at a station would."""
    city = await services.orgs.create(
        SYSTEM, name="温州市", code="330300", kind=OrgKind.CITY, parent_id=None
    )
    county = await services.orgs.create(
        SYSTEM, name="鹿城区司法局", code="330302", kind=OrgKind.COUNTY, parent_id=city.id
    )
    station = await services.orgs.create(
        SYSTEM, name="五马司法所", code="330302001", kind=OrgKind.STATION, parent_id=county.id
    )
    await services.orgs.set_area(
        SYSTEM, station.id, Area(center=STATION_CENTRE, radius_m=STATION_RADIUS_M)
    )
    program = {
        "type": "community_corrections",
        "start_date": today.isoformat(),
        "end_date": add_years(today, 1).isoformat(),
        "sentence_type": "probation",
    }
    # A few at a time: each case file is several audited writes on one chain.
    slots = asyncio.Semaphore(6)

    async def enrol(index: int) -> Person:
        birth = dt.date(1970, 1, 1) + dt.timedelta(days=index * 97)
        gender = "male" if index % 2 else "female"
        async with slots:
            subject = await services.subjects.create(
                SYSTEM,
                SubjectInput(
                    name="张伟" if index % 2 else "李娜",
                    id_type=IdType.RESIDENT,
                    id_number=resident_id(birth, gender),
                    phone=f"139{index:08d}",
                    gender=gender,
                    birth_date=birth,
                    address=f"浙江省温州市鹿城区五马街{index + 1}号",
                    org_id=station.id,
                ),
            )
            await services.programs.create(SYSTEM, subject.id, program)
            issued = await services.mp_accounts.issue_code(SYSTEM, subject.id, "subject")
        address = str(ipaddress.IPv4Address("10.0.0.0") + index + 1)
        return Person(f"fault-{index}", subject.id, issued.code, address)

    return list(await asyncio.gather(*(enrol(index) for index in range(count))))


async def sign_in(base_url: str, people: list[Person], http: AsyncHTTPClient) -> list[Phone]:
    """Each person logs in through the WeChat stand-in and binds with their code, over HTTP."""

    async def one(person: Person) -> Phone:
        phone = Phone(base_url, http, person.address)
        login = await phone.login(person.label)
        assert login.status == 200, login.body
        bound = await phone.bind(person.code)
        assert bound.status == 200, bound.body
        return phone

    return list(await asyncio.gather(*(one(person) for person in people)))


# --- what happened to each check-in ---------------------------------------------------------------


@dataclass
class Attempt:
    """One check-in (one Idempotency-Key) and every answer it got, in order; None: no answer
    (the connection was refused or cut)."""

    person: Person
    phone: Phone
    key: str = field(default_factory=lambda: f"fault-{uuid.uuid4().hex}")
    captured_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    answers: list[MpAnswer | None] = field(default_factory=list)
    # The monotonic time each send started, and each answer (or failure) came.
    sent: list[float] = field(default_factory=list)
    times: list[float] = field(default_factory=list)

    @property
    def idem(self) -> str:
        """The key as the check-in stores it: per person."""
        return f"{self.person.subject_id}:{self.key}"

    @property
    def acknowledged(self) -> MpAnswer | None:
        """The first 201, if any."""
        return next((a for a in self.answers if a is not None and a.status == 201), None)

    async def send(self, base_url: str) -> MpAnswer | None:
        self.sent.append(time.monotonic())
        try:
            answer: MpAnswer | None = await self.phone.check_in_at_station(
                self.key, self.captured_at, base_url
            )
        except (ConnectionError, HTTPClientError, OSError):
            # Refused, reset or cut before an answer (Tornado raises these despite
            # raise_error=False, which only covers error statuses).
            answer = None
        self.answers.append(answer)
        self.times.append(time.monotonic())
        return answer


async def verify_checkins(store: Store, attempts: list[Attempt]) -> dict[str, int]:
    """What the database holds against what the clients were told; the figures for the report.

    Exactly once means: one stored check-in per key (and per person, each checking in once),
    every 201 naming the stored one, every retry's 201 naming the same one, and the person's
    window met by it (the obligation updated once, by that check-in)."""
    checkins = store.collection("checkins")
    people = [a.person.subject_id for a in attempts]
    stored = await checkins.find({"subject_id": {"$in": people}}).to_list()
    by_idem = Counter(doc["idem"] for doc in stored)
    by_subject = Counter(doc["subject_id"] for doc in stored)
    docs = {doc["idem"]: doc for doc in stored}
    acknowledged = lost = wrong_answer = windows_wrong = audit_missing = 0
    for attempt in attempts:
        doc = docs.get(attempt.idem)
        answered = [a for a in attempt.answers if a is not None and a.status == 201]
        if answered:
            acknowledged += 1
            if doc is None:
                lost += 1
                continue
        if doc is None:
            continue
        if any(a.json["id"] != doc["_id"] for a in answered):
            wrong_answer += 1
        window = await store.collection("occurrences").find_one({"_id": doc["occurrence_id"]})
        if window is None or window.get("checkin_id") != doc["_id"] or window["status"] != "done":
            windows_wrong += 1
        # The change is preceded by its audit entry, which the check-in names.
        if await store.collection("audit").count_documents({"_id": doc["audit_entry"]}) != 1:
            audit_missing += 1
    return {
        "acknowledged": acknowledged,
        "acknowledged_lost": lost,
        "stored": len(stored),
        # Records beyond the first under one key, and beyond one per person (each person
        # sends one check-in, under one key).
        "duplicates": sum(n - 1 for n in by_idem.values()),
        "extra_per_person": sum(n - 1 for n in by_subject.values()),
        "answers_naming_another_record": wrong_answer,
        "windows_not_met_by_it": windows_wrong,
        "without_audit_entry": audit_missing,
    }


async def audit_entries_missing(store: Store) -> int:
    """Entries missing from the middle of the audit chains (sequence numbers skipped): what a
    database that lost acknowledged writes leaves, which `audit verify` reports as deleted."""
    missing = 0
    grouped = await store.collection("audit").aggregate(
        [{"$group": {"_id": "$chain_id", "n": {"$sum": 1}, "last": {"$max": "$seq"}}}]
    )
    async for chain in grouped:
        missing += chain["last"] - chain["n"]
    return missing


def statuses(attempts: list[Attempt]) -> Counter[str]:
    """How the attempts were answered, all sends counted ("none": no answer)."""
    return Counter(
        "none" if answer is None else str(answer.status)
        for attempt in attempts
        for answer in attempt.answers
    )

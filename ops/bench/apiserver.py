"""Start the real API (`python -m server serve`) in its own process on a free loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pymongo import monitoring
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from ops.bench import PROJECT_ROOT
from ops.bench.measure import BenchError, RoundTrips

HOST = "127.0.0.1"
# Set for an API whose database commands are counted (ops.bench.serve_child reads it): where
# the count is written.
COMMANDS_FILE = "BENCH_COMMANDS_FILE"
START_COUNT, REPORT_COUNT = signal.SIGUSR1, signal.SIGUSR2


@dataclass(frozen=True)
class RunningApi:
    host: str
    port: int
    pid: int
    log_path: Path
    # Where the API writes its command count (None: not counted).
    commands_path: Path | None = None


class CommandCounter:
    """In the API process: every database command it sends, counted by kind from START_COUNT
    to REPORT_COUNT; each signal answers by writing the count (restarted, then final) to `path`.

    The signals arrive between requests (the bench sends them while no load runs); the handlers
    run on the main thread between bytecodes, where the driver's listener also runs.
    """

    def __init__(self, path: Path):
        self.path = path
        self.trips = RoundTrips()

    def install(self) -> None:
        # Registered before the application's client exists: every client made later reports.
        monitoring.register(self.trips)
        signal.signal(START_COUNT, self._start)
        signal.signal(REPORT_COUNT, self._report)

    def _write(self, phase: str) -> None:
        partial = self.path.with_suffix(".partial")
        content = {
            "phase": phase,
            "counts": dict(self.trips.counts),
            "micros": dict(self.trips.micros),
        }
        partial.write_text(json.dumps(content), encoding="utf-8")
        partial.replace(self.path)

    def _start(self, _signum: int, _frame: Any) -> None:
        self.trips.reset()
        self._write("started")

    def _report(self, _signum: int, _frame: Any) -> None:
        self._write("reported")


async def _signal_count(api: RunningApi, sig: int, phase: str) -> dict[str, Any]:
    if api.commands_path is None:
        raise BenchError("this API was started without counting its commands")
    api.commands_path.unlink(missing_ok=True)
    os.kill(api.pid, sig)
    deadline = time.monotonic() + 10
    while True:
        with contextlib.suppress(FileNotFoundError):
            document: dict[str, Any] = json.loads(api.commands_path.read_text(encoding="utf-8"))
            if document["phase"] == phase:
                return document
        if time.monotonic() >= deadline:
            raise BenchError(f"the API did not write its command count ({phase}) within 10 s")
        await asyncio.sleep(0.02)


async def start_count(api: RunningApi) -> None:
    """The API counts its database commands from now on (from zero)."""
    await _signal_count(api, START_COUNT, "started")


async def read_count(api: RunningApi) -> RoundTrips:
    """The database commands the API sent since `start_count`, by kind."""
    document = await _signal_count(api, REPORT_COUNT, "reported")
    return RoundTrips.from_tally(document["counts"], document["micros"])


def free_port(host: str = HOST) -> int:
    # The port is released before the server binds it; on a loopback-only run nothing else is
    # likely to take it in between, and a collision shows up as a clear start-up failure.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _server_environment(
    database_uri: str, db_name: str, port: int, var_dir: Path, extra: Mapping[str, str]
) -> dict[str, str]:
    # Settings from the caller's shell (ANBANG_ENV=production, a real MONGODB_URI) must not leak
    # into the benchmark; everything the server reads is set here.
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ANBANG_", "WECHAT_")) and key != "MONGODB_URI"
    }
    env.update(
        ANBANG_ENV="development",
        ANBANG_HOST=HOST,
        ANBANG_PORT=str(port),
        ANBANG_PROCESSES="1",
        MONGODB_URI=database_uri,
        ANBANG_DB_NAME=db_name,
        ANBANG_VAR_DIR=str(var_dir),
        ANBANG_MASTER_KEY_FILE=str(var_dir / "keys" / "master.key"),
        # The production default: one access-log line per request is part of what a request costs.
        ANBANG_LOG_LEVEL="INFO",
        ANBANG_DB_WAIT="20",
        ANBANG_SHUTDOWN_GRACE="5",
    )
    env.update(extra)
    return env


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no server log)"
    return "\n".join(text.splitlines()[-lines:])


async def _wait_until_ready(process: subprocess.Popen[bytes], port: int, seconds: float) -> None:
    client = AsyncHTTPClient(force_instance=True)
    deadline = time.monotonic() + seconds
    try:
        while True:
            if process.poll() is not None:
                raise BenchError(f"the API exited with code {process.returncode} at start")
            try:
                answer = await client.fetch(
                    f"http://{HOST}:{port}/readyz", request_timeout=2, connect_timeout=1
                )
            except (OSError, HTTPClientError):
                answer = None
            if answer is not None:
                document = json.loads(answer.body)
                if document.get("status") != "ready":
                    raise BenchError(f"the API is up but not ready: {document}")
                return
            if time.monotonic() >= deadline:
                raise BenchError(f"the API did not answer /readyz within {seconds:.0f} s")
            await asyncio.sleep(0.1)
    finally:
        client.close()


def _spawn(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    Path(env["ANBANG_VAR_DIR"]).mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log_file:
        # Its own session: a Ctrl-C at the terminal reaches only the bench, which stops it in order.
        return subprocess.Popen(
            [sys.executable, "-m", "ops.bench.serve_child"],
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
        )


def _stop(process: subprocess.Popen[bytes], grace: float) -> int:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return -int(signal.SIGKILL)
    return process.returncode


@contextlib.asynccontextmanager
async def running_api(
    database_uri: str,
    db_name: str,
    work_dir: Path,
    *,
    start_seconds: float = 30,
    environment: Mapping[str, str] | None = None,
    count_commands: bool = False,
) -> AsyncIterator[RunningApi]:
    """The API serving on a free loopback port until the block ends; then stopped with SIGTERM,
    as in production, and required to exit cleanly.

    Its settings are the bench's (`environment` adds or overrides some); its var directory is
    `work_dir / "var"`. With `count_commands`, `start_count` and `read_count` tell what database
    commands it sent in between.
    """
    port = free_port()
    log_path = work_dir / "api.log"
    extra = dict(environment or {})
    commands_path = work_dir / "api-commands.json" if count_commands else None
    if commands_path is not None:
        extra[COMMANDS_FILE] = str(commands_path)
    env = _server_environment(database_uri, db_name, port, work_dir / "var", extra)
    process = _spawn(env, log_path)
    code: int | None = None
    try:
        try:
            await _wait_until_ready(process, port, start_seconds)
        except BenchError as exc:
            raise BenchError(f"{exc}; the API's log ends with:\n{log_tail(log_path)}") from None
        yield RunningApi(HOST, port, process.pid, log_path, commands_path)
        code = await asyncio.to_thread(_stop, process, 15)
    except BaseException:
        await asyncio.to_thread(_stop, process, 15)
        raise
    if code != 0:
        raise BenchError(f"the API exited with code {code} after SIGTERM:\n{log_tail(log_path)}")

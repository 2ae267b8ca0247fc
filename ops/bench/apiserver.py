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
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from ops.bench import PROJECT_ROOT
from ops.bench.measure import BenchError

HOST = "127.0.0.1"


@dataclass(frozen=True)
class RunningApi:
    host: str
    port: int
    pid: int
    log_path: Path


def free_port(host: str = HOST) -> int:
    # The port is released before the server binds it; on a loopback-only run nothing else is
    # likely to take it in between, and a collision shows up as a clear start-up failure.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _server_environment(
    database_uri: str, db_name: str, port: int, var_dir: Path
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
    database_uri: str, db_name: str, work_dir: Path, *, start_seconds: float = 30
) -> AsyncIterator[RunningApi]:
    """The API serving on a free loopback port until the block ends; then stopped with SIGTERM,
    as in production, and required to exit cleanly."""
    port = free_port()
    log_path = work_dir / "api.log"
    process = _spawn(_server_environment(database_uri, db_name, port, work_dir / "var"), log_path)
    code: int | None = None
    try:
        try:
            await _wait_until_ready(process, port, start_seconds)
        except BenchError as exc:
            raise BenchError(f"{exc}; the API's log ends with:\n{log_tail(log_path)}") from None
        yield RunningApi(HOST, port, process.pid, log_path)
        code = await asyncio.to_thread(_stop, process, 15)
    except BaseException:
        await asyncio.to_thread(_stop, process, 15)
        raise
    if code != 0:
        raise BenchError(f"the API exited with code {code} after SIGTERM:\n{log_tail(log_path)}")

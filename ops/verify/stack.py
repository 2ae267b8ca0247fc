"""The development stack's parts as real processes on free loopback ports, for the verification
runs: the embedded database and the WeChat stand-in (the API is `ops.bench.apiserver`'s)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from ops.bench import PROJECT_ROOT
from ops.bench.apiserver import HOST, free_port, log_tail
from ops.bench.measure import BenchError


@dataclass(frozen=True)
class Launched:
    """A process of the stack: where it listens and where its log goes."""

    name: str
    port: int
    pid: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def database_uri(self) -> str:
        # As server.config builds it for the embedded database (no retryable writes there).
        return f"mongodb://{HOST}:{self.port}/?retryWrites=false"


def clean_environment(**settings: str) -> dict[str, str]:
    """The caller's environment without any Anbang or WeChat setting, plus `settings`: a
    production MONGODB_URI in the shell must never reach a verification run."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ANBANG_", "WECHAT_")) and key != "MONGODB_URI"
    }
    env.update(ANBANG_ENV="development", ANBANG_LOG_LEVEL="INFO", **settings)
    return env


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((HOST, port)) == 0


def stop_process(process: subprocess.Popen[bytes], grace: float = 15) -> int:
    """SIGTERM, then SIGKILL after `grace` seconds; the exit code."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def _spawn(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        # Its own session: a Ctrl-C at the terminal reaches only the runner, which stops it.
        return subprocess.Popen(  # noqa: S603 (our own interpreter and module)
            [sys.executable, "-m", "server", *command],
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
        )


@contextlib.asynccontextmanager
async def launched(
    name: str, command: list[str], env: dict[str, str], log_path: Path, port: int
) -> AsyncIterator[Launched]:
    """`python -m server <command>` until the block ends, once its port accepts connections."""
    process = await asyncio.to_thread(_spawn, command, env, log_path)
    try:
        deadline = time.monotonic() + 60
        while not await asyncio.to_thread(_port_open, port):
            if process.poll() is not None:
                raise BenchError(
                    f"{name} exited with code {process.returncode} at start:\n{log_tail(log_path)}"
                )
            if time.monotonic() >= deadline:
                raise BenchError(f"{name} did not listen within 60 s:\n{log_tail(log_path)}")
            await asyncio.sleep(0.1)
        yield Launched(name, port, process.pid, log_path)
    finally:
        await asyncio.to_thread(stop_process, process)


@contextlib.asynccontextmanager
async def embedded_database(work_dir: Path) -> AsyncIterator[Launched]:
    """`python -m server db`: the embedded database in its own process, data under work_dir."""
    port = free_port()
    env = clean_environment(ANBANG_DB_PORT=str(port), ANBANG_DB_PATH=str(work_dir / "db"))
    async with launched("the embedded database", ["db"], env, work_dir / "db.log", port) as db:
        yield db


@contextlib.asynccontextmanager
async def wechat_standin(work_dir: Path) -> AsyncIterator[Launched]:
    """`python -m server wechat-standin`: the local WeChat API in its own process."""
    port = free_port()
    env = clean_environment(ANBANG_WECHAT_PORT=str(port), ANBANG_VAR_DIR=str(work_dir / "var"))
    async with launched(
        "the WeChat stand-in", ["wechat-standin"], env, work_dir / "wechat-standin.log", port
    ) as standin:
        yield standin

"""The real command line as separate processes: the database, `dev`, `serve` and `jobs`.

Every process runs on free loopback ports with its state under the test's temporary directory,
has a timeout, and is killed (with everything it started) when the test ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import re
import signal
import socket
import time
from pathlib import Path

import pytest
from pymongo import MongoClient
from tornado.netutil import bind_sockets

from server.serving import serve_sockets
from tests.process_support import (
    Launched,
    ProcessId,
    descendants,
    environment,
    eventually,
    launched,
    port_open,
    run_cli,
    wait_for_ready,
    wait_until,
)

# --- helpers: ports, environment and processes are in tests/process_support.py ---------------


def start_dev(tmp_path: Path, stack: contextlib.ExitStack) -> tuple[Launched, dict[str, str]]:
    """`python -m server dev`, fully started (API ready, jobs holding the lease)."""
    env = environment(tmp_path, ANBANG_DEMO="1")
    dev = stack.enter_context(launched(["dev"], env, tmp_path / "dev.log"))
    ready = wait_for_ready(dev, int(env["ANBANG_PORT"]), 180)
    assert ready == {"status": "ready", "checks": {"database": True, "keys": True}}
    wait_until(lambda: '"msg": "jobs ready"' in dev.output, 120, "the jobs process starting")
    return dev, env


def role(ident: ProcessId) -> str:
    match = re.search(r"-m server (\S+)", ident.command)
    return match.group(1) if match else ident.command


# --- the embedded database ------------------------------------------------------------------------


@pytest.mark.slow
def test_the_database_keeps_data_across_a_restart(tmp_path):
    env = environment(tmp_path)
    port = int(env["ANBANG_DB_PORT"])
    uri = f"mongodb://127.0.0.1:{port}/?retryWrites=false"

    with launched(["db"], env, tmp_path / "db-1.log") as db:
        wait_until(lambda: port_open(port) or not db.running(), 90, "the database listening")
        assert db.running(), db.output
        with MongoClient(uri, serverSelectionTimeoutMS=5000) as client:
            client.anbang.kept.insert_one({"_id": "case-1", "note": "survives a restart"})
        db.process.send_signal(signal.SIGTERM)
        assert db.wait(60) == 0, db.output
        assert "embedded database stopped" in db.output
    assert not port_open(port)
    assert any((tmp_path / "var" / "db").iterdir()), "no data in ANBANG_DB_PATH"

    with launched(["db"], env, tmp_path / "db-2.log") as db:
        wait_until(lambda: port_open(port) or not db.running(), 90, "the database listening")
        assert db.running(), db.output
        with MongoClient(uri, serverSelectionTimeoutMS=5000) as client:
            found = client.anbang.kept.find_one({"_id": "case-1"})
        assert found == {"_id": "case-1", "note": "survives a restart"}
        db.process.send_signal(signal.SIGTERM)
        assert db.wait(60) == 0, db.output


# --- `dev`: everything on one machine, and nothing left behind -----------------------------------


@pytest.mark.slow
def test_dev_serves_and_sigterm_stops_every_child(tmp_path):
    with contextlib.ExitStack() as stack:
        dev, env = start_dev(tmp_path, stack)
        children = descendants(dev.pid)
        assert sorted(role(c) for c in children) == ["db", "jobs", "serve", "wechat-standin"]
        # The banner says where the console is and whom to log in as, with the seeded password.
        logins = (tmp_path / "var" / "demo-logins.txt").read_text(encoding="utf-8")
        officer = next(line.split() for line in logins.splitlines() if " wuma.officer " in line)
        console = f"http://127.0.0.1:{env['ANBANG_PORT']}/console/"
        wait_until(lambda: console in dev.output, 60, "the banner")
        banner_line = next(line for line in dev.output.splitlines() if "wuma.officer " in line)
        assert officer[2] in banner_line and "start with this one" in banner_line

        dev.process.send_signal(signal.SIGTERM)
        assert dev.wait(120) == 0, dev.output
        left = [f"{c.pid} {c.command}" for c in children if c.alive]
        assert left == [], dev.output
        for name in ("ANBANG_DB_PORT", "ANBANG_PORT", "ANBANG_WECHAT_PORT"):
            assert not port_open(int(env[name])), f"{name} still open"
        # Stopped in order and cleanly, not killed after the grace period.
        assert "embedded database stopped" in dev.output
        assert "did not stop" not in dev.output


@pytest.mark.slow
def test_dev_killed_outright_leaves_no_process_behind(tmp_path):
    with contextlib.ExitStack() as stack:
        dev, env = start_dev(tmp_path, stack)
        children = descendants(dev.pid)
        assert sorted(role(c) for c in children) == ["db", "jobs", "serve", "wechat-standin"]

        dev.process.kill()
        assert dev.wait(30) == -signal.SIGKILL
        wait_until(
            lambda: not any(c.alive for c in children),
            60,
            "every child exiting after its parent was killed: "
            + ", ".join(f"{c.pid} {role(c)}" for c in children if c.alive),
        )
        wait_until(lambda: not port_open(int(env["ANBANG_DB_PORT"])), 30, "the db port closing")
        assert not port_open(int(env["ANBANG_PORT"]))
        assert not port_open(int(env["ANBANG_WECHAT_PORT"]))


@pytest.mark.slow
def test_dev_refuses_to_start_when_the_database_port_is_taken(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = environment(tmp_path, ANBANG_DB_PORT=str(taken.getsockname()[1]))
        with launched(["dev"], env, tmp_path / "dev.log") as dev:
            code = dev.wait(120)
            assert code != 0
            assert "already in use" in dev.output
            assert "ANBANG_DB_PORT" in dev.output


# --- `serve`: graceful shutdown, in this process ----------------------------------------------
# A subprocess cannot be given a slow handler, so the API runs here through serve_sockets, the
# function `python -m server serve` runs, and the in-flight request is a client that has sent its
# headers but not yet all of its body (a slow upload).

BODY = b'{"slow": "upload"}'
REQUEST_HEAD = (
    b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n"
)


async def _refuses_connections(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return True
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return False


async def _serving(port: int, task: asyncio.Task) -> None:
    async with asyncio.timeout(60):
        while True:
            assert not task.done(), task
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                await writer.wait_closed()
                return
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def serving_api(config):
    """serve_sockets on a free port; its SIGTERM handler is removed again afterwards."""
    loop = asyncio.get_running_loop()
    sockets = bind_sockets(0, "127.0.0.1")
    port = sockets[0].getsockname()[1]
    task = asyncio.create_task(serve_sockets(config, sockets))
    try:
        await _serving(port, task)
        yield port, task
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        for sock in sockets:
            sock.close()


async def _server_has_read(port: int) -> None:
    """Until the server on `port` has accepted its connections and read all that was sent to
    them (the kernel's queues for the port, in /proc/net/tcp, are empty), then a few turns of
    the loop for the handler to start: however long that takes on a loaded machine."""

    def queued() -> list[int] | None:
        local = f"0100007F:{port:04X}"  # 127.0.0.1, as the kernel writes it
        rows = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
        established = [r for r in rows if r[1] == local and r[3] == "01"]
        if not established:
            return None
        return [int(r[4].split(":")[1], 16) for r in rows if r[1] == local]

    def read() -> bool:
        waiting = queued()
        return waiting is not None and not any(waiting)

    await eventually(read, 60, f"the server on {port} reading what was sent to it")
    await asyncio.sleep(0.2)


async def _read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
    return head, await reader.readexactly(length)


@pytest.mark.slow  # a real SIGTERM and a grace period on the real clock
async def test_serve_finishes_an_in_flight_request_on_sigterm(store, config):
    config = dataclasses.replace(config, shutdown_grace_seconds=10)
    async with serving_api(config) as (port, task):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(REQUEST_HEAD + BODY[:5])
            await writer.drain()
            await _server_has_read(port)  # the headers, and it waits for the rest

            os.kill(os.getpid(), signal.SIGTERM)
            async with asyncio.timeout(30):
                while True:
                    if await _refuses_connections(port):
                        break
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            assert not task.done(), "serve stopped before the in-flight request finished"

            writer.write(BODY[5:])
            await writer.drain()
            async with asyncio.timeout(30):
                head, body = await _read_response(reader)
            assert head.startswith(b"HTTP/1.1 200 ")
            assert json.loads(body) == {"status": "ok"}
            await asyncio.wait_for(task, 10)
        finally:
            writer.close()


@pytest.mark.slow  # a real SIGTERM and a grace period on the real clock
async def test_serve_stops_after_the_grace_period_when_a_request_never_ends(store, config, caplog):
    config = dataclasses.replace(config, shutdown_grace_seconds=1)
    async with serving_api(config) as (port, task):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(REQUEST_HEAD + BODY[:5])  # and never the rest
            await writer.drain()
            await _server_has_read(port)

            started = time.monotonic()
            with caplog.at_level(logging.WARNING, logger="anbang.server"):
                os.kill(os.getpid(), signal.SIGTERM)
                await asyncio.wait_for(task, 10)
            waited = time.monotonic() - started
            assert 0.9 <= waited < 5, waited
            assert any(
                r.getMessage() == "requests still running at shutdown" for r in caplog.records
            )
            # The stuck connection was closed, not left hanging.
            async with asyncio.timeout(30):
                assert await reader.read() == b""
        finally:
            writer.close()


# --- `jobs` on the command line ------------------------------------------------------------------


def test_jobs_list_names_the_sweeps(tmp_path):
    answer = run_cli("jobs", "list", env=environment(tmp_path))
    assert answer.returncode == 0, answer.stderr
    lines = answer.stdout.splitlines()
    assert any(line.startswith("audit_checkpoint\t") for line in lines), lines
    for line in lines:
        assert re.fullmatch(r"[a-z0-9_-]+\tevery \d+ s\t\S.*", line), line


def test_jobs_run_once_with_an_unknown_sweep_exits_2_naming_it(tmp_path, database_uri):
    env = environment(tmp_path, MONGODB_URI=database_uri, ANBANG_DB_NAME="run_once_unknown")
    answer = run_cli("jobs", "run-once", "nosuch", env=env)
    assert answer.returncode == 2
    said = answer.stdout + answer.stderr
    assert "no sweep named 'nosuch'" in said
    assert "known sweeps" in said
    assert "Traceback" not in said


def test_jobs_run_once_reports_an_unknown_sweep_on_stderr(tmp_path, database_uri):
    # stdout carries the JSON results for scripts; a refusal belongs on stderr like every other
    # error of the command line.
    env = environment(tmp_path, MONGODB_URI=database_uri, ANBANG_DB_NAME="run_once_unknown")
    answer = run_cli("jobs", "run-once", "nosuch", env=env)
    assert answer.returncode == 2
    assert "no sweep named 'nosuch'" in answer.stderr
    assert answer.stdout == ""


def test_jobs_run_once_all_prints_the_results_as_json(tmp_path, database_uri):
    env = environment(tmp_path, MONGODB_URI=database_uri, ANBANG_DB_NAME="run_once_all")
    answer = run_cli("jobs", "run-once", "all", "--now", "2026-11-24T08:00:00+08:00", env=env)
    assert answer.returncode == 0, answer.stderr
    results = json.loads(answer.stdout)
    assert isinstance(results, list)
    assert all("sweep" in result for result in results)


def test_jobs_run_once_refuses_a_time_without_offset(tmp_path, database_uri):
    env = environment(tmp_path, MONGODB_URI=database_uri, ANBANG_DB_NAME="run_once_naive")
    answer = run_cli("jobs", "run-once", "all", "--now", "2026-11-24T08:00:00", env=env)
    assert answer.returncode != 0
    assert "--now" in answer.stderr
    assert "Traceback" not in answer.stderr
    assert answer.stdout == ""

"""`make run`: start the embedded database, the WeChat stand-in, the API and the jobs process."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from server.banner import read_demo_logins, running_banner
from server.config import Config
from server.processes import die_with_parent


class LaunchError(Exception):
    pass


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.3)
        return probe.connect_ex((host, port)) == 0


def _wait_for_port(child: Child, port: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise LaunchError(f"{child.name} exited with code {child.process.returncode} at start")
        if _port_open(port):
            return
        time.sleep(0.1)
    raise LaunchError(f"{child.name} did not listen on port {port} within {seconds:.0f} s")


def _pdeathsig() -> None:
    die_with_parent(signal.SIGTERM)


def _spawn(name: str, args: list[str], env: dict[str, str]) -> Child:
    # Each child gets its own session, so a Ctrl-C reaches only this launcher, which then stops
    # the children in order (API and jobs first, the database last); and each dies with us.
    process = subprocess.Popen(
        [sys.executable, "-m", "server", *args],
        env=env,
        start_new_session=True,
        preexec_fn=_pdeathsig,
    )
    return Child(name, process)


def _stop(children: list[Child], grace: float) -> None:
    for child in reversed(children):
        if child.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)
            try:
                child.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                print(f"anbang: {child.name} did not stop in {grace:.0f} s; killing it", flush=True)
                child.process.kill()
                child.process.wait()


def run_development(config: Config) -> int:
    if config.production:
        raise LaunchError(
            "`make run` is for development; run the processes separately in production"
        )
    die_with_parent(signal.SIGTERM)
    stop_requested = False

    def request_stop(_signum: int, _frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    env = dict(os.environ)
    config.var_dir.mkdir(parents=True, exist_ok=True)
    children: list[Child] = []
    try:
        if config.embedded_database:
            if _port_open(config.db_port):
                raise LaunchError(
                    f"port {config.db_port} is already in use; stop what listens there or set "
                    "ANBANG_DB_PORT (a database left from an earlier run?)"
                )
            children.append(_spawn("database", ["db"], env))
            _wait_for_port(children[-1], config.db_port, 60)
            env["MONGODB_URI"] = config.database_uri
        if not config.wechat_api_base:
            children.append(_spawn("wechat-standin", ["wechat-standin"], env))
            _wait_for_port(children[-1], config.wechat_port, 30)
        if config.demo:
            seed = subprocess.run(
                [sys.executable, "-m", "server", "demo", "seed"], env=env, check=False
            )
            if seed.returncode != 0:
                raise LaunchError("seeding the demo data failed (see the log above)")
        children.append(_spawn("api", ["serve"], env))
        _wait_for_port(children[-1], config.port, 60)
        children.append(_spawn("jobs", ["jobs"], env))

        logins_file = Path(config.var_dir) / "demo-logins.txt"
        logins = read_demo_logins(logins_file) if config.demo else []
        print(running_banner(config, logins, logins_file), flush=True)
        while not stop_requested:
            for child in children:
                if child.process.poll() is not None:
                    raise LaunchError(
                        f"{child.name} exited with code {child.process.returncode}; stopping"
                    )
            time.sleep(0.2)
        return 0
    finally:
        _stop(children, grace=float(config.shutdown_grace_seconds) + 5)

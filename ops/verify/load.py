"""The morning burst: people log in and check in (one in five with a photo, retries included) at
a fixed offered rate against the real API, as one and as several processes; afterwards every
acknowledged check-in must be stored exactly once.

What runs, each part its own process on loopback: the embedded database (`python -m server db`),
the WeChat stand-in, the API (`python -m server serve`, ANBANG_PROCESSES=N), and this client.

- Seeded through the services (not measured): a station whose permitted area is a 3 km circle and
  `people` case files, each with a corrections program from today (a daily check-in window open
  all day) and bound to a mini-program account, as intake and a first login would leave them.
- The burst, once per process count: check-ins are offered at `rate` per second for `seconds`
  seconds on an open-loop schedule (a late answer does not slow the offered rate; latency is
  measured from the moment a request was due, so queueing shows). Check-in i belongs to person
  i mod people. At a person's first check-in of a run, one in five log in first (wx.login, then
  ours): a mini-program session lasts 7 days, so at least one in seven must each morning; the
  others use the token their phone holds. One check-in in five first uploads a photo (an 80 KB
  JPEG of its own); one in twenty "loses" its answer and sends the same request again with the
  same Idempotency-Key, which must answer the same check-in. A 503 or a dropped connection is
  retried with the same key after Retry-After (at most three times), as the mini-program does.
- Capacity, once per process count: check-ins without photos with 48 in flight for
  `capacity_seconds`, as fast as they are answered: how throughput changes with the processes.
- Verified from the database: each acknowledged check-in stored exactly once under its key with
  the id its answer gave, a photo on each that sent one, and no record for a key never answered.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import signal
import struct
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from models.clock import LOCAL_TZ, SystemClock
from models.store import DatabaseSettings, Store
from ops.bench.apiserver import HOST, RunningApi, read_count, running_api, start_count
from ops.bench.checkins import (
    ACCURACY_M,
    STATION_CENTRE,
    Person,
    seed_people,
    sign_in_people,
)
from ops.bench.loadgen import Connection, build_request, connect
from ops.bench.measure import BenchError, percentile, process_cpu_seconds
from ops.verify.stack import embedded_database, wechat_standin
from server.app import Services, build_services, collection_specs, open_vault
from server.config import Config

DB_NAME = "verify_load"
CHECKIN_PATH = "/mp/v1/checkins"
MAX_CONNECTIONS = 256
CAPACITY_IN_FLIGHT = 48
RETRIES = 3
RETRY_STATUSES = frozenset({502, 503, 504})
PHOTO_BYTES = 80 * 1024
# Past this, a request is abandoned (and counted as an error): the run must end.
REQUEST_TIMEOUT = 30.0


@dataclass(frozen=True)
class LoadSpec:
    rate: float = 100.0
    seconds: float = 60.0
    photo_share: float = 0.2
    # A mini-program session lasts 7 days (3 idle): on a given morning at least one person in
    # seven has to log in again before checking in; one in five do here.
    login_share: float = 0.2
    lost_answer_share: float = 0.05
    people: int = 1500
    processes: tuple[int, ...] = (1, 2)
    capacity_seconds: float = 15.0
    seed: int = 13


def photo(rng: random.Random, size: int = PHOTO_BYTES) -> bytes:
    """A JPEG the server's sniffer accepts (640x480, baseline), unique through its padding, as
    big as a phone's compressed photo."""
    soi, eoi = b"\xff\xd8", b"\xff\xd9"
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, 480, 640, 1) + b"\x01\x11\x00"
    filler = b""
    remaining = size - len(soi) - len(sof) - len(eoi)
    while remaining > 4:
        chunk = min(remaining - 4, 65533)
        filler += b"\xff\xfe" + struct.pack(">H", chunk + 2) + rng.randbytes(chunk)
        remaining -= chunk + 4
    return soi + filler + sof + eoi


def multipart_photo(data: bytes) -> tuple[str, bytes]:
    boundary = uuid.uuid4().hex
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="photo.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    return (
        f"multipart/form-data; boundary={boundary}",
        head + data + f"\r\n--{boundary}--\r\n".encode(),
    )


class Pool:
    """Keep-alive connections to the API, opened as needed up to a limit."""

    def __init__(self, port: int, limit: int):
        self.port = port
        self.limit = limit
        self.opened = 0
        self._idle: list[Connection] = []
        self._free = asyncio.Condition()

    async def request(self, payload: bytes) -> tuple[int, bytes, bytes]:
        """The status, head and body of the answer to `payload`."""
        connection = await self._acquire()
        healthy = False
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                status = await connection.request(payload)
            healthy = True
            return status, connection.head, connection.body
        finally:
            await self._release(connection, healthy)

    async def _acquire(self) -> Connection:
        async with self._free:
            while not self._idle and self.opened >= self.limit:
                await self._free.wait()
            if self._idle:
                return self._idle.pop()
            self.opened += 1
        try:
            return await connect(HOST, self.port)
        except BaseException:
            async with self._free:
                self.opened -= 1
                self._free.notify()
            raise

    async def _release(self, connection: Connection, healthy: bool) -> None:
        async with self._free:
            if (
                healthy
                and connection.transport is not None
                and not connection.transport.is_closing()
            ):
                self._idle.append(connection)
            else:
                connection.close()
                self.opened -= 1
            self._free.notify()

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()


@dataclass
class Tally:
    """What one phase was answered: latencies by kind, acknowledged keys, errors."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    # "<subject id>:<key>" -> the check-in id the answer gave.
    acknowledged: dict[str, str] = field(default_factory=dict)
    # Keys sent but never acknowledged (a final error): nothing may be stored for them.
    unanswered: set[str] = field(default_factory=set)
    with_photo: set[str] = field(default_factory=set)
    errors: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    retried: int = 0
    replays: int = 0
    replay_mismatches: int = 0
    error_samples: list[str] = field(default_factory=list)
    last_answer: float = 0.0

    def latency(self, kind: str, seconds: float) -> None:
        self.latencies.setdefault(kind, []).append(seconds)

    def error(self, kind: str, status: int | str, body: bytes = b"") -> None:
        self.errors[f"{kind} {status}"] += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(f"{kind} {status}: {body[:200].decode(errors='replace')}")


class Burst:
    """The client side of one process count's runs."""

    def __init__(self, api: RunningApi, people: list[Person], spec: LoadSpec):
        self.api = api
        self.people = people
        self.spec = spec
        self.pool = Pool(api.port, MAX_CONNECTIONS)
        self.rng = random.Random(spec.seed)
        self.logins: dict[str, asyncio.Future[bool]] = {}

    def _request(
        self, person: Person, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> bytes:
        all_headers = {"X-Real-Ip": person.address, **headers}
        if person.token and "Authorization" not in headers:
            all_headers["Authorization"] = f"Bearer {person.token}"
        return build_request(
            HOST,
            self.api.port,
            path,
            keep_alive=True,
            method=method,
            headers=all_headers,
            body=body,
        )

    async def _send(
        self, tally: Tally, kind: str, payload: bytes, due: float, retry: bool
    ) -> tuple[int | None, bytes]:
        """One request, retried with the same bytes (so the same key) on a retryable answer or no
        answer; its latency runs from `due` to the last answer."""
        attempt = 0
        while True:
            attempt += 1
            try:
                status, head, body = await self.pool.request(payload)
            except (BenchError, OSError, TimeoutError) as exc:
                status, body, wait = None, str(exc).encode(), 0.2 * attempt
            else:
                wait = 0.2 * attempt
                if status in RETRY_STATUSES:
                    tally.statuses[f"{kind} {status}"] += 1
                    with contextlib.suppress(ValueError, TypeError):
                        wait = min(float(_header(head, "retry-after") or wait), 5.0)
            if status is not None and (status not in RETRY_STATUSES or not retry):
                break
            if not retry or attempt > RETRIES:
                break
            tally.retried += 1
            await asyncio.sleep(wait)
        tally.latency(kind, time.perf_counter() - due)
        if status is not None:
            tally.statuses[f"{kind} {status}"] += 1
        return status, body

    async def _login(self, tally: Tally, person: Person, due: float) -> bool:
        payload = self._request(
            person,
            "POST",
            "/mp/v1/auth/login",
            json.dumps({"code": f"dev:{person.label}"}).encode(),
            {"Content-Type": "application/json", "Authorization": ""},
        )
        status, body = await self._send(tally, "login", payload, due, retry=True)
        if status != 200:
            tally.error("login", status or "no answer", body)
            return False
        person.token = json.loads(body)["token"]
        return True

    async def session(self, tally: Tally, person: Person, due: float) -> None:
        """One person's check-in, with what comes before it: at a person's first of the run, one
        in five log in first (their session ran out), and the person's later ones wait for
        that login (the phone holds one token)."""
        login = self.logins.get(person.label)
        if login is None and self.rng.random() >= self.spec.login_share:
            # Still signed in from an earlier day: the token the phone holds.
            login = self.logins[person.label] = asyncio.get_running_loop().create_future()
            login.set_result(True)
        if login is None:
            login = self.logins[person.label] = asyncio.ensure_future(
                self._login(tally, person, due)
            )
            if not await login:
                return
            due = time.perf_counter()
        elif not await asyncio.shield(login):
            return
        upload_id = None
        if self.rng.random() < self.spec.photo_share:
            content_type, body = multipart_photo(photo(self.rng))
            payload = self._request(
                person, "POST", "/mp/v1/uploads", body, {"Content-Type": content_type}
            )
            status, answer = await self._send(tally, "upload", payload, due, retry=True)
            if status != 201:
                tally.error("upload", status or "no answer", answer)
                return
            upload_id = json.loads(answer)["upload_id"]
            due = time.perf_counter()
        await self.check_in(
            tally, person, due, upload_id, lose=self.rng.random() < self.spec.lost_answer_share
        )

    async def check_in(
        self, tally: Tally, person: Person, due: float, upload_id: str | None, *, lose: bool
    ) -> None:
        key = uuid.uuid4().hex
        idem = f"{person.subject_id}:{key}"
        document: dict[str, Any] = {
            "location": {
                "lat": STATION_CENTRE.lat,
                "lng": STATION_CENTRE.lng,
                "coord_type": "wgs84",
                "accuracy": ACCURACY_M,
            },
            "captured_at": dt.datetime.now(dt.UTC).isoformat(),
            "device_id": person.device_id,
        }
        if upload_id is not None:
            document["photo_upload_id"] = upload_id
        payload = self._request(
            person,
            "POST",
            CHECKIN_PATH,
            json.dumps(document).encode(),
            {"Content-Type": "application/json", "Idempotency-Key": key},
        )
        status, body = await self._send(tally, "checkin", payload, due, retry=True)
        tally.last_answer = time.perf_counter()
        if status != 201:
            tally.unanswered.add(idem)
            tally.error("checkin", status or "no answer", body)
            return
        checkin_id = json.loads(body)["id"]
        tally.acknowledged[idem] = checkin_id
        if upload_id is not None:
            tally.with_photo.add(idem)
        if lose:
            # The answer never reached the phone: it sends the same request again.
            tally.replays += 1
            status, body = await self._send(tally, "replay", payload, time.perf_counter(), True)
            if status not in (200, 201) or json.loads(body).get("id") != checkin_id:
                tally.replay_mismatches += 1
                tally.error("replay", status or "no answer", body)

    async def burst(self) -> tuple[Tally, float]:
        """The open-loop schedule: check-in i is due at start + i / rate."""
        tally = Tally()
        total = round(self.spec.rate * self.spec.seconds)
        sessions: set[asyncio.Task[None]] = set()
        started = time.perf_counter()
        for index in range(total):
            due = started + index / self.spec.rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            person = self.people[index % len(self.people)]
            task = asyncio.create_task(self.session(tally, person, due))
            sessions.add(task)
            task.add_done_callback(sessions.discard)
        if sessions:
            async with asyncio.timeout(REQUEST_TIMEOUT * (RETRIES + 2) * 3):
                await asyncio.gather(*sessions)
        return tally, started

    async def capacity(self) -> tuple[Tally, float]:
        """Check-ins as fast as they are answered, CAPACITY_IN_FLIGHT at a time."""
        tally = Tally()
        stop_at = time.perf_counter() + self.spec.capacity_seconds
        counter = iter(range(10**9))

        async def worker() -> None:
            while time.perf_counter() < stop_at:
                person = self.people[next(counter) % len(self.people)]
                await self.check_in(tally, person, time.perf_counter(), None, lose=False)

        started = time.perf_counter()
        async with asyncio.TaskGroup() as workers:
            for _ in range(CAPACITY_IN_FLIGHT):
                workers.create_task(worker())
        return tally, started


def _header(head: bytes, name: str) -> str | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name.encode():
            return value.strip().decode("latin-1")
    return None


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants (the forked API workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                raw = stat.read()
        except OSError:
            continue
        parent = int(raw[raw.rindex(b")") + 2 :].split()[1])
        children.setdefault(parent, []).append(int(entry))
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        queue.extend(children.get(current, []))
    return found


def _cpu(pids: dict[str, list[int]]) -> dict[str, float]:
    return {
        name: sum(process_cpu_seconds(pid) or 0.0 for pid in members)
        for name, members in pids.items()
    }


def _figures(tally: Tally, started: float, offered: float | None) -> dict[str, Any]:
    def summary(values: list[float]) -> dict[str, float]:
        ordered = sorted(values)
        if not ordered:
            return {"n": 0}
        return {
            "n": len(ordered),
            "p50_ms": percentile(ordered, 50) * 1000,
            "p95_ms": percentile(ordered, 95) * 1000,
            "p99_ms": percentile(ordered, 99) * 1000,
            "max_ms": ordered[-1] * 1000,
        }

    elapsed = max(tally.last_answer - started, 1e-9)
    return {
        "offered_per_second": offered,
        "acknowledged": len(tally.acknowledged),
        "acknowledged_per_second": len(tally.acknowledged) / elapsed,
        "seconds": elapsed,
        "latency": {kind: summary(values) for kind, values in sorted(tally.latencies.items())},
        "errors": sum(tally.errors.values()),
        "errors_by_kind": dict(tally.errors),
        "error_samples": tally.error_samples,
        "answers": dict(sorted(tally.statuses.items())),
        "retried": tally.retried,
        "replays": tally.replays,
        "replay_mismatches": tally.replay_mismatches,
        "photos": len(tally.with_photo),
    }


async def verify_stored(store: Store, tallies: list[Tally]) -> dict[str, Any]:
    """Every acknowledged check-in stored once, under its key, with its answer's id."""
    checkins = store.collection("checkins")
    acknowledged: dict[str, str] = {}
    unanswered: set[str] = set()
    with_photo: set[str] = set()
    for tally in tallies:
        acknowledged.update(tally.acknowledged)
        unanswered |= tally.unanswered
        with_photo |= tally.with_photo
    keys = list(acknowledged) + sorted(unanswered)
    stored: dict[str, list[dict[str, Any]]] = {}
    for start in range(0, len(keys), 1000):
        chunk = keys[start : start + 1000]
        async for doc in checkins.find({"idem": {"$in": chunk}}, {"idem": 1, "photo_id": 1}):
            stored.setdefault(doc["idem"], []).append(doc)
    lost = [key for key in acknowledged if key not in stored]
    duplicated = [key for key, docs in stored.items() if len(docs) > 1]
    wrong_id = [
        key
        for key, checkin_id in acknowledged.items()
        if key in stored and stored[key][0]["_id"] != checkin_id
    ]
    photo_missing = [
        key for key in with_photo if key in stored and not stored[key][0].get("photo_id")
    ]
    unacknowledged_stored = [key for key in unanswered if key in stored]
    return {
        "acknowledged": len(acknowledged),
        "lost": len(lost),
        "duplicated": len(duplicated),
        "wrong_id": len(wrong_id),
        "photo_missing": len(photo_missing),
        "with_photo": len(with_photo),
        # A key answered only with an error whose first attempt did land (the retry would then
        # have found it): allowed, since nothing told the person it succeeded, but counted.
        "stored_without_acknowledgement": len(unacknowledged_stored),
        "total_stored": await checkins.count_documents({}),
    }


async def _run_processes(
    spec: LoadSpec,
    processes: int,
    people: list[Person],
    work: Path,
    env: dict[str, str],
    db_uri: str,
    db_pid: int,
) -> tuple[dict[str, Any], list[Tally]]:
    async with running_api(
        db_uri,
        DB_NAME,
        work,
        environment={**env, "ANBANG_PROCESSES": str(processes)},
        start_seconds=60,
        # The command count is kept by one process; with several, each would keep its own.
        count_commands=processes == 1,
    ) as api:
        # Let every worker come up and warm (rules, keys) before the clock starts.
        await asyncio.sleep(1.0 + processes)
        burst = Burst(api, people, spec)
        pids = {"api": _tree(api.pid), "database": [db_pid], "client": [os.getpid()]}
        if processes == 1:
            await start_count(api)
        before = _cpu(pids)
        burst_tally, burst_started = await burst.burst()
        after = _cpu(pids)
        commands = {}
        if processes == 1 and burst_tally.acknowledged:
            trips = await read_count(api)
            commands = trips.per_call(len(burst_tally.acknowledged))
        burst_figures = _figures(burst_tally, burst_started, spec.rate)
        burst_figures["cpu_cores"] = {
            name: (after[name] - before[name]) / burst_figures["seconds"] for name in pids
        }
        # CPU per acknowledged check-in (with its share of logins, uploads and re-sends): the
        # figure that carries over to another machine better than the rate does.
        burst_figures["cpu_ms_per_checkin"] = {
            name: (after[name] - before[name]) * 1000 / max(len(burst_tally.acknowledged), 1)
            for name in pids
        }
        # Database commands the API sent per acknowledged check-in, by kind (1 process only).
        burst_figures["commands_per_checkin"] = commands
        # What each command costs the database, and the rate at which its one process would be
        # busy all the time: the figures that say whether a target is within its reach.
        database_ms = burst_figures["cpu_ms_per_checkin"]["database"]
        per_checkin = sum(kind["count"] for kind in commands.values())
        burst_figures["database"] = {
            "commands_per_checkin": round(per_checkin, 2) if commands else None,
            "cpu_ms_per_command": round(database_ms / per_checkin, 3) if commands else None,
            "checkins_per_second_at_one_core": round(1000 / database_ms, 1)
            if database_ms
            else None,
        }
        # The CPU the offered rate asks for at these costs, beside the cores the machine has: more
        # than it has, and no scheduling meets the rate.
        burst_figures["cores_needed_at_offered_rate"] = round(
            sum(burst_figures["cpu_ms_per_checkin"].values()) * spec.rate / 1000, 2
        )
        burst_figures["cores_available"] = os.cpu_count()
        capacity_tally, capacity_started = await burst.capacity()
        capacity_figures = _figures(capacity_tally, capacity_started, None)
        burst.pool.close()
    return {
        "processes": processes,
        "burst": burst_figures,
        "capacity": capacity_figures,
    }, [burst_tally, capacity_tally]


async def run_load(spec: LoadSpec, work: Path, secrets: set[str] | None = None) -> dict[str, Any]:
    """Start the stack, seed, run the burst at each process count, verify; the figures.
    `secrets` receives every token and binding code handed out, for the log scan."""
    begun = time.perf_counter()
    seconds: dict[str, float] = {}
    async with embedded_database(work) as db, wechat_standin(work) as standin:
        env = {"WECHAT_API_BASE": standin.url, "ANBANG_BEHIND_PROXY": "1"}
        config = Config.from_env(
            {
                "MONGODB_URI": db.database_uri,
                "ANBANG_DB_NAME": DB_NAME,
                "ANBANG_VAR_DIR": str(work / "var"),
                "WECHAT_API_BASE": standin.url,
            }
        )
        store = Store.connect(DatabaseSettings(uri=db.database_uri, name=DB_NAME, production=False))
        services: Services | None = None
        try:
            await store.ensure_indexes(collection_specs())
            clock = SystemClock()
            vault = await open_vault(config, store, clock)
            services = build_services(store, config, clock, vault)
            started = time.perf_counter()
            today = clock.now().astimezone(LOCAL_TZ).date()
            people = await seed_people(services, spec.people, today)
            if secrets is not None:
                secrets.update(person.code for person in people)
            seconds["seeding"] = time.perf_counter() - started
            runs: list[dict[str, Any]] = []
            tallies: list[Tally] = []
            for index, processes in enumerate(spec.processes):
                if index == 0:
                    async with running_api(db.database_uri, DB_NAME, work, environment=env) as api:
                        started = time.perf_counter()
                        await sign_in_people(api, people, 32)
                        seconds["binding"] = time.perf_counter() - started
                started = time.perf_counter()
                figures, run_tallies = await _run_processes(
                    spec, processes, people, work, env, db.database_uri, db.pid
                )
                seconds[f"processes_{processes}"] = time.perf_counter() - started
                runs.append(figures)
                tallies.extend(run_tallies)
                if secrets is not None:
                    secrets.update(person.token for person in people if person.token)
                print(f"verify: load at {processes} process(es): {_one_line(figures)}", flush=True)
            verified = await verify_stored(store, tallies)
        finally:
            if services is not None:
                await services.close()
            await store.close()
    seconds["total"] = time.perf_counter() - begun
    return {"spec": asdict(spec), "runs": runs, "verified": verified, "seconds": seconds}


def _one_line(figures: dict[str, Any]) -> str:
    burst, capacity = figures["burst"], figures["capacity"]
    checkin = burst["latency"].get("checkin", {})
    return (
        f"burst {burst['acknowledged_per_second']:.1f}/s of {burst['offered_per_second']:.0f} "
        f"offered, p50 {checkin.get('p50_ms', 0):.0f} ms p95 {checkin.get('p95_ms', 0):.0f} ms "
        f"p99 {checkin.get('p99_ms', 0):.0f} ms, {burst['errors']} errors; "
        f"capacity {capacity['acknowledged_per_second']:.1f}/s"
    )


def _stop_on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    # As Ctrl-C: the `finally` blocks on the way out stop every process this run started.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.verify.load", description=__doc__)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--people", type=int, default=1500)
    parser.add_argument("--processes", default="1,2", help="process counts, e.g. 1,2,4")
    parser.add_argument("--capacity-seconds", type=float, default=15.0)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    spec = LoadSpec(
        rate=args.rate,
        seconds=args.seconds,
        people=args.people,
        processes=tuple(int(n) for n in args.processes.split(",")),
        capacity_seconds=args.capacity_seconds,
    )
    with tempfile.TemporaryDirectory(prefix="anbang-verify-load-") as temp:
        figures = asyncio.run(run_load(spec, Path(temp)))
    text = json.dumps(figures, indent=2, default=str)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

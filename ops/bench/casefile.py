"""What encryption and audit cost: per field, per audit append, and as a share of a case-file read.

Runs in a spawned process of its own, so the client does not share the embedded database's GIL.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

FIELDS_PER_READ = 6  # name, ID number, phone, gender, birth date, address


def _micros(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_us": statistics.median(ordered) * 1e6,
        "p99_us": ordered[int(len(ordered) * 0.99) - 1] * 1e6,
        "mean_us": statistics.fmean(ordered) * 1e6,
    }


async def _timed(count: int, action: Any) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await action()
        samples.append(time.perf_counter() - started)
    return samples


async def _measure_suite(uri: str, suite: str, work: Path, rounds: int) -> dict[str, Any]:
    from models.audit import AuditContext, entry_hash
    from models.clock import SystemClock
    from models.identity import Identity
    from models.identity_numbers import IdType, gb11643_check_digit
    from models.orgs import OrgKind
    from models.subjects import SubjectInput
    from server.app import SYSTEM, build_services, collection_specs, open_vault
    from server.config import Config

    config = Config.from_env(
        {
            "MONGODB_URI": uri,
            "ANBANG_DB_NAME": f"bench_casefile_{suite}",
            "ANBANG_VAR_DIR": str(work / suite),
            "ANBANG_CRYPTO_SUITE": suite,
        }
    )
    from models.store import DatabaseSettings, Store

    store = Store.connect(DatabaseSettings(uri=uri, name=config.db_name, production=False))
    try:
        await store.ensure_indexes(collection_specs())
        clock = SystemClock()
        vault = await open_vault(config, store, clock)
        services = build_services(store, config, clock, vault)
        city = await services.orgs.create(
            SYSTEM, name="市", code="b-city", kind=OrgKind.CITY, parent_id=None
        )
        county = await services.orgs.create(
            SYSTEM, name="区", code="b-county", kind=OrgKind.COUNTY, parent_id=city.id
        )
        station = await services.orgs.create(
            SYSTEM, name="所", code="b-station", kind=OrgKind.STATION, parent_id=county.id
        )
        first17 = "33030219900307123"
        subject = await services.subjects.create(
            SYSTEM,
            SubjectInput(
                name="基准测试",
                id_type=IdType.RESIDENT,
                id_number=first17 + gb11643_check_digit(first17),
                phone="13812345678",
                gender="male",
                birth_date=dt.date(1990, 3, 7),
                address="浙江省温州市鹿城区五马街88号",
                org_id=station.id,
            ),
        )
        officer = Identity(
            user_id="bench-officer",
            role="station_officer",
            org_id=station.id,
            org_path=station.path,
        )
        ctx = AuditContext(officer, request_id="bench")
        codec = services.subjects._codec
        sealed = await codec.seal(
            subject.id, None, "subjects", subject.id, "address", "浙江省温州市鹿城区五马街88号"
        )

        async def seal() -> None:
            await codec.seal(
                subject.id, None, "subjects", subject.id, "address", "浙江省温州市鹿城区五马街88号"
            )

        async def open_field() -> None:
            await codec.open("subjects", subject.id, "address", sealed)

        async def blind() -> None:
            await codec.blind_index("phone", "13812345678")

        async def audit() -> None:
            await services.audit.record(
                ctx,
                "bench.append",
                resource="subject",
                resource_id=subject.id,
                subject_id=subject.id,
            )

        sample_entry = {
            "at": clock.now(),
            "actor_id": officer.user_id,
            "role": officer.role,
            "action": "subjects.read",
            "resource": "subject",
            "resource_id": subject.id,
            "subject_id": subject.id,
            "outcome": "ok",
            "reason": None,
            "details": {"access": "scope", "masked": []},
            "request_id": "bench",
            "remote_ip": None,
            "chain_id": "c" * 32,
            "seq": 1,
            "prev": "0" * 64,
        }

        async def hash_entry() -> None:
            entry_hash(vault.suite, sample_entry)

        async def read() -> None:
            await services.subjects.read(ctx, subject.id)

        async def fetch_only() -> None:
            await services.subjects._subjects.find_one(
                {"_id": __import__("bson").ObjectId(subject.id)}
            )

        for action in (seal, open_field, blind, hash_entry, audit, read, fetch_only):
            await _timed(50, action)  # warm caches, connections and code paths
        figures = {
            "seal_field": _micros(await _timed(rounds * 4, seal)),
            "open_field": _micros(await _timed(rounds * 4, open_field)),
            "blind_index": _micros(await _timed(rounds * 4, blind)),
            "audit_entry_hash": _micros(await _timed(rounds * 4, hash_entry)),
            "audit_append": _micros(await _timed(rounds, audit)),
            "subject_read": _micros(await _timed(rounds, read)),
            "document_fetch": _micros(await _timed(rounds, fetch_only)),
        }
        read_us = figures["subject_read"]["p50_us"]
        crypto_us = figures["open_field"]["p50_us"] * FIELDS_PER_READ
        hash_us = figures["audit_entry_hash"]["p50_us"]
        figures["share_of_read"] = {
            "decryption": crypto_us / read_us,
            "audit": figures["audit_append"]["p50_us"] / read_us,
            "encryption_and_audit": (crypto_us + figures["audit_append"]["p50_us"]) / read_us,
            # What the API process itself spends: decrypting and chaining the entry. The rest
            # of the audit append is the database's round trip for the insert.
            "api_cpu_encryption_and_audit": (crypto_us + hash_us) / read_us,
        }
        await store.database.client.drop_database(config.db_name)
        return figures
    finally:
        await store.close()


def _child(uri: str, rounds: int, queue: Any) -> None:
    try:
        with tempfile.TemporaryDirectory(prefix="anbang-bench-keys-") as work:
            result = {
                suite: asyncio.run(_measure_suite(uri, suite, Path(work), rounds))
                for suite in ("standard", "sm")
            }
        queue.put(("ok", result))
    except Exception as exc:  # reported to the parent, which fails the run
        queue.put(("error", f"{type(exc).__name__}: {exc}"))


def measure_casefile(uri: str, rounds: int = 500, timeout: float = 120.0) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(uri, rounds, queue), daemon=True)
    process.start()
    try:
        status, payload = queue.get(timeout=timeout)
    finally:
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
    if status != "ok":
        from ops.bench.measure import BenchError

        raise BenchError(f"case-file benchmark: {payload}")
    return payload  # type: ignore[no-any-return]


def casefile_table(figures: dict[str, Any]) -> str:
    lines = [f"{'case files (µs, p50 / p99)':<34} {'standard':>18} {'sm (国密)':>18}", "-" * 72]
    for key in (
        "seal_field",
        "open_field",
        "blind_index",
        "audit_entry_hash",
        "audit_append",
        "document_fetch",
        "subject_read",
    ):
        cells = [
            f"{figures[s][key]['p50_us']:>8.1f} / {figures[s][key]['p99_us']:>7.1f}"
            for s in ("standard", "sm")
        ]
        lines.append(f"{key:<34} {cells[0]:>18} {cells[1]:>18}")
    for key in ("decryption", "audit", "encryption_and_audit", "api_cpu_encryption_and_audit"):
        cells = [f"{figures[s]['share_of_read'][key] * 100:>6.1f}%" for s in ("standard", "sm")]
        lines.append(f"{'share of a read: ' + key:<44} {cells[0]:>8} {cells[1]:>18}")
    return "\n".join(lines)

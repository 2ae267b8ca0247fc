"""The embedded development database (SecantusDB) as its own process; never used in production."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from server.processes import stop_event_on_signals

log = logging.getLogger("anbang.db")


async def run_embedded_database(host: str, port: int, path: Path) -> None:
    # Imported here, not at the top: only this launcher and the test fixtures know SecantusDB.
    from secantus import SecantusDBServer

    from server.embedded_tuning import journal_bulk_writes, plan_id_filters_by_id

    plan_id_filters_by_id()
    journal_bulk_writes()
    await asyncio.to_thread(path.mkdir, parents=True, exist_ok=True)
    stop = stop_event_on_signals()
    server = SecantusDBServer(
        host=host, port=port, storage_path=str(path), enable_test_commands=False
    )
    server.start()
    log.info("embedded database ready", extra={"fields": {"port": port, "path": str(path)}})
    try:
        await stop.wait()
    finally:
        # Closing WiredTiger cleanly checkpoints the data; a kill -9 relies on its journal.
        await asyncio.to_thread(server.stop)
        log.info("embedded database stopped")

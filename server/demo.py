"""Demo data for `make run`: idempotent, so every start may run it."""

from __future__ import annotations

from typing import Any

from server.app import connect_store, wait_for_database
from server.config import Config


async def seed_demo(config: Config) -> dict[str, Any]:
    store = connect_store(config)
    try:
        await wait_for_database(store, config.db_wait_seconds)
        # The organisation tree, staff and subjects arrive with the services that own them.
        return {"seeded": []}
    finally:
        await store.close()

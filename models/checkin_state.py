"""Each person's check-in state, one document per person: what a check-in decides on (the
file's place and key, windows around today, leave and e-location orders, the last check-ins),
read in one command. Built from its sources by the check-in service, marked stale by every
service whose source changes, and carried forward by each check-in's own batch write."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any, TypeGuard

from pymongo.errors import DuplicateKeyError

from models.clock import LOCAL_TZ
from models.store import CollectionSpec, Store, Write

STATES = CollectionSpec("checkin_state", ())
# The windows a state holds run from a week back (offline uploads within the grace) to this
# many days ahead, so a state built today serves every check-in of the week after it: the
# nightly materialiser adds windows far beyond that and does not have to touch it.
AHEAD_DAYS = 8
# A state serves check-ins this many days after the day it was built, while it still holds
# tomorrow's windows; after that it is built again on the next read.
SERVES_DAYS = AHEAD_DAYS - 2


class CheckinStates:
    """The `checkin_state` collection. A state is kept only if no source changed while it was
    being built: every change raises the document's version (creating a stub if there is none),
    and a build is stored on condition that the version is still the one it read."""

    collections = (STATES,)

    def __init__(self, store: Store):
        self._states = store.collection(STATES)

    async def read(self, subject_id: str) -> dict[str, Any] | None:
        return await self._states.find_one({"_id": subject_id})

    @staticmethod
    def usable(doc: dict[str, Any] | None, now: dt.datetime) -> TypeGuard[dict[str, Any]]:
        """Whether a stored state can decide a check-in now (built, not marked stale, and
        still holding tomorrow's windows)."""
        if doc is None or doc.get("stale") or "built_on" not in doc:
            return False
        built = dt.date.fromisoformat(doc["built_on"])
        today = now.astimezone(LOCAL_TZ).date()
        return built <= today <= built + dt.timedelta(days=SERVES_DAYS)

    async def keep(
        self, subject_id: str, read: Mapping[str, Any] | None, state: dict[str, Any]
    ) -> bool:
        """Store a state built from its sources after `read` was read; False if a source
        changed meanwhile (the next read builds it again)."""
        version = int(read.get("version", 0)) if read is not None else 0
        document = {**state, "_id": subject_id, "version": version, "stale": False}
        if read is None:
            with contextlib.suppress(DuplicateKeyError):
                await self._states.insert_one(document)
                return True
            return False
        result = await self._states.replace_one({"_id": subject_id, "version": version}, document)
        return result.modified_count == 1

    async def stale(self, subject_ids: Iterable[str]) -> None:
        """A source of these people's states changed: the next check-in builds them again."""
        for subject_id in dict.fromkeys(str(s) for s in subject_ids):
            # An upsert: a build that began before the change and finds no document must not
            # slip its older reading in as the first.
            with contextlib.suppress(DuplicateKeyError):
                await self._states.update_one(
                    {"_id": subject_id},
                    # The carried key goes too: a rotation or shredding may destroy it next.
                    {"$inc": {"version": 1}, "$set": {"stale": True}, "$unset": {"key": ""}},
                    upsert=True,
                )

    async def forget(self, subject_id: str) -> None:
        """The person's file is shredded: no copy of their key or whereabouts may remain."""
        await self._states.delete_one({"_id": subject_id})

    def checkin_write(
        self,
        subject_id: str,
        recent: dict[str, Any],
        keep: int,
        photo_digest: str | None,
        photos_kept: int,
    ) -> Write:
        """The write that carries a check-in into its person's state, last in the check-in's
        ordered batch; raising the version stops a build that read the check-ins before it."""
        update: dict[str, Any] = {
            "$push": {"recent": {"$each": [recent], "$sort": {"arrived_at": -1}, "$slice": keep}},
            "$inc": {"version": 1},
        }
        if photo_digest is not None:
            update["$push"]["photos"] = {"$each": [photo_digest], "$slice": -photos_kept}
        return Write(STATES.name, filter={"_id": subject_id}, update=update)

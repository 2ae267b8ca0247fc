"""Persistence plumbing shared by every service: the database handle, collection specs, indexes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymongo import AsyncMongoClient, IndexModel, InsertOne, ReturnDocument, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    AutoReconnect,
    ClientBulkWriteException,
    ConnectionFailure,
    DuplicateKeyError,
    ExecutionTimeout,
    InvalidOperation,
    NetworkTimeout,
    NotPrimaryError,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
    WaitQueueTimeoutError,
    WTimeoutError,
)
from pymongo.read_concern import ReadConcern

from models.errors import NotFound, Unavailable

# Errors that mean "the database cannot be reached right now", as opposed to a bad command: the
# caller gets 503 with Retry-After and may retry with the same idempotency key.
_UNAVAILABLE_ERRORS: tuple[type[PyMongoError], ...] = (
    ConnectionFailure,
    AutoReconnect,
    NetworkTimeout,
    ServerSelectionTimeoutError,
    NotPrimaryError,
    WaitQueueTimeoutError,
    ExecutionTimeout,
    WTimeoutError,
)


async def upsert_one(
    collection: AsyncCollection, query: dict[str, Any], update: dict[str, Any]
) -> dict[str, Any]:
    """`find_one_and_update` with upsert: the document after the change, whoever created it.

    Two first writes of one document race (a double tap, two logins from one address at once).
    The loser's insert collides with the winner's: MongoDB retries that itself for an equality on
    `_id` (4.2 and later), other servers raise DuplicateKeyError, and the change is applied by
    trying again. The embedded database applies the loser's change but answers with no document
    (found with concurrent counters: a third of racing upserts), so it is read back.
    """
    for _ in range(3):
        try:
            doc = await collection.find_one_and_update(
                query, update, upsert=True, return_document=ReturnDocument.AFTER
            )
        except DuplicateKeyError:
            continue
        if doc is None:
            doc = await collection.find_one(query)
        if doc is not None:
            return dict(doc)
    raise Unavailable("The record could not be written; try again.")


def still_there(doc: dict[str, Any] | None, what: str = "record") -> dict[str, Any]:
    """The document an update answered with (`ReturnDocument.AFTER`). None means it was
    removed between the read that found it and the update: the caller meets NotFound."""
    if doc is None:
        raise NotFound(f"No such {what}.")
    return doc


def as_unavailable(exc: BaseException) -> Unavailable | None:
    """The domain error for a database outage, or None when `exc` is something else."""
    if isinstance(exc, _UNAVAILABLE_ERRORS):
        return Unavailable("The database is temporarily unavailable; try again shortly.")
    return None


@dataclass(frozen=True)
class Write:
    """One write of an ordered batch (`Store.write_ordered`): insert `document` into
    `collection`, or apply `update` to the one document matching `filter` (creating it if
    `upsert`)."""

    collection: str
    document: dict[str, Any] | None = None
    filter: dict[str, Any] | None = None
    update: dict[str, Any] | None = None
    upsert: bool = False


class OrderedWriteError(Exception):
    """Write `index` of an ordered batch was refused (`cause`; a DuplicateKeyError for a
    unique key): every write before it landed, none after it ran."""

    def __init__(self, index: int, cause: PyMongoError):
        super().__init__(f"write {index} of an ordered batch failed: {cause}")
        self.index = index
        self.cause = cause
        # The audit entry the batch began with, once it is known to stand.
        self.entry_id: str | None = None


def _write_error(error: dict[str, Any]) -> OrderedWriteError:
    code = error.get("code")
    message = str(error.get("errmsg") or "write failed")
    cause = (
        DuplicateKeyError(message, code, error)
        if code == 11000
        else OperationFailure(message, code, error)
    )
    return OrderedWriteError(int(error.get("idx", 0)), cause)


class IndexConflict(Exception):
    """A declared index clashes with an existing one of the same keys or name."""


@dataclass(frozen=True)
class CollectionSpec:
    """A collection and the indexes its service needs, declared beside that service."""

    name: str
    indexes: tuple[IndexModel, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class DatabaseSettings:
    uri: str
    name: str
    production: bool
    app_name: str = "anbang"
    # Short enough that a request fails fast with 503 instead of hanging while the database is
    # gone; long enough to ride out a replica-set election (typically under 12 s).
    server_selection_timeout_ms: int = 5_000
    connect_timeout_ms: int = 3_000
    max_pool_size: int = 100
    # PyMongo command listeners (the round-trip counts of tests and benchmarks).
    event_listeners: tuple[Any, ...] = ()
    # A deadline for every operation (PyMongo's `timeoutMS`), for processes that answer people:
    # a silent database (a dead link, a blackholed route) answers 503 within it instead of
    # holding the request until the driver's heartbeat notices. None: no deadline (the jobs
    # process, whose sweeps walk long cursors).
    operation_timeout_ms: int | None = None
    # A pooled connection idle longer than this is closed at checkout instead of reused. A peer
    # or a middlebox that silently drops idle connections (the embedded database after 300 s,
    # firewalls and load balancers often sooner) would otherwise turn the first write after a
    # quiet spell into AutoReconnect: writes are not retried where retryable writes are off.
    max_idle_time_ms: int = 60_000
    # A hot path's writes (audit entry, record, window) go in one ordered client-level
    # bulkWrite (MongoDB 8.0+): one round trip. False, or a server without it (found at the
    # first try), sends them as separate ordered commands.
    client_bulk_write: bool = True


class Store:
    """The one database handle of a process; services get collections from it."""

    def __init__(
        self,
        client: AsyncMongoClient,
        database: AsyncDatabase,
        production: bool,
        client_bulk_write: bool = True,
    ):
        self._client = client
        self._db = database
        self.production = production
        self.client_bulk_write = client_bulk_write

    @classmethod
    def connect(cls, settings: DatabaseSettings) -> Store:
        """Build the client; no I/O happens until the first operation."""
        # A write is acknowledged only once it is in the journal on disk, so an acknowledged
        # check-in survives the database process being killed (the embedded database honours
        # j:true too: without it a kill -9 lost the writes of its last tens of milliseconds).
        # Production runs a replica set: majority-acknowledged as well, so an acknowledged
        # check-in also survives the loss of the primary.
        durability: dict[str, Any] = (
            {"w": "majority", "journal": True} if settings.production else {"journal": True}
        )
        deadline: dict[str, Any] = (
            {"timeoutMS": settings.operation_timeout_ms} if settings.operation_timeout_ms else {}
        )
        client: AsyncMongoClient = AsyncMongoClient(
            settings.uri,
            appname=settings.app_name,
            tz_aware=True,
            serverSelectionTimeoutMS=settings.server_selection_timeout_ms,
            connectTimeoutMS=settings.connect_timeout_ms,
            maxPoolSize=settings.max_pool_size,
            maxIdleTimeMS=settings.max_idle_time_ms,
            event_listeners=list(settings.event_listeners),
            **deadline,
            **durability,
        )
        return cls(client, client[settings.name], settings.production, settings.client_bulk_write)

    @property
    def database(self) -> AsyncDatabase:
        return self._db

    def collection(self, spec: CollectionSpec | str) -> AsyncCollection:
        name = spec.name if isinstance(spec, CollectionSpec) else spec
        return self._db[name]

    def majority_collection(self, spec: CollectionSpec | str) -> AsyncCollection:
        """The collection read with majority read concern, for compliance decisions."""
        return self.collection(spec).with_options(read_concern=ReadConcern("majority"))

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncClientSession]:
        """A multi-document transaction: committed when the block ends, aborted if it raises."""
        async with self._client.start_session() as session, await session.start_transaction():
            yield session

    async def write_ordered(self, writes: Sequence[Write]) -> None:
        """Carry out `writes` in order, stopping at the first refused (OrderedWriteError says
        which): one bulkWrite command where the server has it, else one command each. An
        outage raises the driver's error as any write does (what landed is then unknown)."""
        if self.client_bulk_write:
            models: list[InsertOne[Any] | UpdateOne] = [
                InsertOne(w.document, namespace=f"{self._db.name}.{w.collection}")
                if w.document is not None
                else UpdateOne(
                    w.filter or {},
                    w.update or {},
                    upsert=w.upsert,
                    namespace=f"{self._db.name}.{w.collection}",
                )
                for w in writes
            ]
            try:
                await self._client.bulk_write(models, ordered=True)
                return
            except InvalidOperation as exc:
                if "8.0" not in str(exc):
                    raise
                self.client_bulk_write = False  # an older server: separate commands from now
            except ClientBulkWriteException as exc:
                if isinstance(exc.error, BaseException):
                    raise exc.error from None
                if exc.error is not None:
                    raise OperationFailure(str(exc.error), None, exc.error) from None
                errors = exc.details.get("writeErrors") or []
                if errors:
                    raise _write_error(errors[0]) from None
                raise
        for index, w in enumerate(writes):
            collection = self.collection(w.collection)
            try:
                if w.document is not None:
                    await collection.insert_one(w.document)
                else:
                    await collection.update_one(w.filter or {}, w.update or {}, upsert=w.upsert)
            except OperationFailure as exc:
                if isinstance(exc, _UNAVAILABLE_ERRORS):
                    raise
                raise OrderedWriteError(index, exc) from None

    async def ensure_indexes(self, specs: Iterable[CollectionSpec]) -> None:
        """Create every declared index; idempotent, so every process may run it at start."""
        for spec in specs:
            if not spec.indexes:
                continue
            try:
                await self.collection(spec).create_indexes(list(spec.indexes))
            except OperationFailure as exc:
                # 85/86: an index of that name or keys exists with other options (an older
                # release's). Never dropped silently: a unique index gone is a window for
                # duplicates. Say which one, so an operator drops it knowingly.
                if exc.code in (85, 86):
                    raise IndexConflict(
                        f"collection {spec.name!r} has an index whose options changed in this "
                        f"release; drop it (db.{spec.name}.dropIndexes(...)) and start again: "
                        f"{exc.details.get('errmsg') if exc.details else exc}"
                    ) from None
                raise

    async def ping(self, timeout_seconds: float = 2.0) -> bool:
        try:
            await asyncio.wait_for(self._client.admin.command("ping"), timeout_seconds)
        except (TimeoutError, PyMongoError):
            return False
        return True

    async def close(self) -> None:
        await self._client.close()

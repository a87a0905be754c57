"""The connection, transactions and migrations: the only place that opens the database."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from databases import Database, DatabaseURL
from databases.core import Connection as DatabasesConnection

from ..errors import StoreError
from . import tally as _tally
from .batch import Committer, InThread
from .migrate import (
    SCRUBBING_VERSION,
    address_keys,
    adopt_address_key,
    current_version,
    migrate,
)

log = logging.getLogger("gateway")
T = TypeVar("T")

# Tables to scrub (see `scrub`), and the task that will: once its outermost transaction
# commits (_SCRUB), or at the end of a run of erasures (_DEFERRED, see `scrub_once`).
_Pending = ContextVar[tuple[asyncio.Task[Any] | None, set[str]] | None]
_SCRUB: _Pending = ContextVar("gateway_scrub", default=None)
_DEFERRED: _Pending = ContextVar("gateway_scrub_deferred", default=None)


def normalize_url(url: str) -> str:
    """`postgresql+asyncpg://` (SQLAlchemy's spelling) and `postgres://` mean what
    `databases` calls `postgresql://`: asyncpg."""
    for prefix in ("postgresql+asyncpg://", "postgres://", "postgres+asyncpg://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


# asyncpg's pool on PostgreSQL: one connection at start, more on demand up to max_size.
POOL = {"min_size": 1, "max_size": 20}


class StoreBase:
    def __init__(self, url: str) -> None:
        url = normalize_url(url)
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        # On SQLite a busy writer makes the others wait (up to 30 s) instead of failing at once.
        # On PostgreSQL each task holds a pooled connection while it works; open one at start
        # and more on demand (`?min_size=&max_size=` in the URL override these).
        options: dict[str, Any] = {"timeout": 30} if self.is_sqlite else {}
        if not self.is_sqlite:
            given = DatabaseURL(url).options
            options.update({k: v for k, v in POOL.items() if k not in given})
        self.db = Database(url, **options)
        # The last leases this process handed out (PostgreSQL): rows under any other lease
        # are other workers' messages in flight (see `recent_marketing`). A worker has one
        # batch on the wire and one being recorded; older batches of ours are finished.
        self.own_leases: deque[float] = deque(maxlen=16)

    @property
    def display_url(self) -> str:
        """The URL with any password hidden, for output and errors."""
        return str(self.db.url.obscure_password)

    # -- lifecycle -------------------------------------------------------------------------

    async def connect(self) -> None:
        self._write_lock = asyncio.Lock()
        self._writer: asyncio.Task[Any] | None = None
        self.committer = Committer(self)  # group commit of short writes (store/batch.py)
        try:
            if self.is_sqlite and self.db.url.database not in ("", ":memory:"):
                # Open it once synchronously: an unopenable file is reported here, before
                # aiosqlite starts a thread that would outlive the failure.
                sqlite3.connect(self.db.url.database).close()
            await self.db.connect()
            if self.is_sqlite:
                await self._share_connection()
        except Exception as exc:
            raise StoreError(
                f"cannot open database {self.db.url.obscure_password}: {exc}"
            ) from None

    async def _share_connection(self) -> None:
        # `databases` opens a new SQLite connection (and thread) for every task and every
        # query outside a held connection: about 1.3 ms each instead of 0.3 ms. One shared
        # connection serves every task instead; `transaction()` serializes writers on it.
        # (databases 0.9.0 is its last release, so this use of its global-connection slot,
        # the one its force_rollback mode uses, will not move under us.)
        connection = DatabasesConnection(self.db, self.db._backend)
        await connection.__aenter__()
        # Deleted rows are overwritten with zeros, not left in free space (PD-3: an erased
        # person leaves no byte in the file). A setting of each connection, not of the file.
        await connection.raw_connection.execute("PRAGMA secure_delete=ON")
        self.db._global_connection = connection

    async def disconnect(self) -> None:
        if hasattr(self, "committer"):
            await self.committer.wait_idle()
        connection = self.db._global_connection
        if self.is_sqlite and connection is not None:
            self.db._global_connection = None
            await connection.__aexit__()
        await self.db.disconnect()

    async def migrate(self, legacy_address_keys: Sequence[bytes] = ()) -> tuple[int | None, int]:
        """Create or update the schema. `legacy_address_keys`: the keys addresses were hashed
        under before the database had a key of its own (the gateway passes those derived
        from GATEWAY_SECRET_KEYS), kept so rows hashed under them are still found."""
        found, version = await migrate(self.db, legacy_address_keys)
        if self.is_sqlite:
            if found is not None and found < SCRUBBING_VERSION:
                # Releases before it deleted without zeroing: rows erased then may still lie
                # in free pages. Rewriting the file once leaves none.
                await self._scrub_safely("VACUUM")
                await self._scrub_safely("PRAGMA wal_checkpoint(TRUNCATE)")
            self._restrict_file()
        return found, version

    async def address_keys(
        self, legacy_address_keys: Sequence[bytes] = ()
    ) -> tuple[bytes, list[bytes]]:
        """The database's address-hashing key and the legacy keys still looked up."""
        keys = await address_keys(self.db)
        if keys is None:  # a schema made without one (by hand, say): give it one now
            async with self.transaction():
                await self.serialize("gateway.address_key")
                await adopt_address_key(self.db, legacy_address_keys)
            keys = await address_keys(self.db)
            assert keys is not None
        return keys

    async def schema_version(self) -> int | None:
        return await current_version(self.db)

    def _restrict_file(self) -> None:
        # Promise 2: the database holds personal data, so it is not world-readable.
        path = self.db.url.database
        if path and path != ":memory:":
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(path + suffix):
                    os.chmod(path + suffix, 0o600)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[None]:
        """Hold one connection for the current task: queries inside reuse it."""
        async with self.db.connection():
            yield

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """All or nothing; every write goes through here. On SQLite, tasks share one
        connection, so writers take turns (a task already inside joins its own transaction),
        and the database lock is taken up front (BEGIN IMMEDIATE) so another process's
        writer makes us wait on the busy timeout instead of failing mid-transaction."""
        task = asyncio.current_task()
        pending = _SCRUB.get()
        outermost = pending is None or pending[0] is not task
        scrub: set[str] = set()
        token = _SCRUB.set((task, scrub)) if outermost else None
        counts = _tally.Tally()  # per-day counts (store/tally.py), written just before COMMIT
        counting = _tally.CURRENT.set((task, counts)) if outermost else None
        try:
            if not self.is_sqlite:
                async with self.db.transaction():
                    yield
                    await self.run_many(_tally.UPSERT, counts.rows())
                if scrub:
                    await self._scrub_now_or_later(scrub)
                return
            if self._writer is task:
                yield
                return
            async with self._write_lock:
                self._writer = task
                try:
                    await self.run("BEGIN IMMEDIATE")
                    try:
                        yield
                        await self.run_many(_tally.UPSERT, counts.rows())
                    except BaseException:
                        await self.run("ROLLBACK")
                        raise
                    await self.run("COMMIT")
                    if scrub:  # before another writer of ours begins
                        await self._scrub_now_or_later(scrub)
                finally:
                    self._writer = None
        finally:
            if token is not None:
                _SCRUB.reset(token)
            if counting is not None:
                _tally.CURRENT.reset(counting)

    async def grouped(
        self, work: Callable[[], Awaitable[T]], in_thread: InThread[T] | None = None
    ) -> T:
        """`work()`, writes only, committed before this returns: on SQLite in a transaction
        shared with the writes of the other tasks waiting at that moment (one fsync for all;
        `in_thread`, the same writes on the sqlite3 connection, runs instead of `work` in one
        step in the database's thread), elsewhere in one of its own; inside a transaction,
        in the caller's. See store/batch.py."""
        return await self.committer.run(work, in_thread)

    async def tally(self, events: Iterable[tuple[float, str]]) -> None:
        """Count events, (when, metric), in the per-day counts the dashboard reads
        (store/tally.py): with the current transaction, or in one of its own outside one."""
        counts = _tally.current()
        if counts is not None:
            counts.add(events)
            return
        async with self.transaction():
            await self.tally(events)

    async def scrub_after_commit(self, tables: Iterable[str]) -> None:
        """Have `scrub` run over `tables` once the current transaction commits (at once
        outside one): what a committed delete leaves behind is gone too."""
        pending = _SCRUB.get()
        if pending is not None and pending[0] is asyncio.current_task():
            pending[1].update(tables)
        else:
            await self._scrub_now_or_later(set(tables))

    async def _scrub_now_or_later(self, tables: set[str]) -> None:
        deferred = _DEFERRED.get()
        if deferred is not None and deferred[0] is asyncio.current_task():
            deferred[1].update(tables)
        else:
            await self.scrub(tables)

    @asynccontextmanager
    async def scrub_once(self) -> AsyncIterator[None]:
        """Erasures inside scrub the files once, at the end, not once each (a purge)."""
        tables: set[str] = set()
        token = _DEFERRED.set((asyncio.current_task(), tables))
        try:
            yield
        finally:
            _DEFERRED.reset(token)
            if tables:
                await self.scrub(tables)

    async def scrub(self, tables: Iterable[str]) -> None:
        """Remove the bytes of deleted and overwritten rows from the database's files. SQLite
        zeroes them in the file itself (secure_delete); the write-ahead log still holds the
        old pages until it is checkpointed and truncated. PostgreSQL keeps dead row versions
        in its table and index files until they are rewritten: VACUUM FULL (it locks each
        table while it copies it). Runs outside any transaction."""
        if self.is_sqlite:
            await self._scrub_safely("PRAGMA wal_checkpoint(TRUNCATE)")
        else:
            await self._scrub_safely(f"VACUUM (FULL, ANALYZE) {', '.join(sorted(tables))}")

    async def _scrub_safely(self, statement: str) -> None:
        # What was erased is committed: a scrub that cannot run now must not report the
        # erasure as failed. It is logged with what to do instead.
        try:
            found = await self.rows(statement)
        except Exception as exc:
            log.warning(
                "erased data may remain in the database files: %s failed (%s); run it by hand",
                statement,
                exc,
            )
            return
        if found and found[0] and found[0][0] == 1:  # wal_checkpoint: (busy, log, done)
            log.warning(
                "the write-ahead log still holds erased data: another process is reading"
                " the database; it is emptied at the next full checkpoint"
            )

    async def analyze(self, *tables: str) -> None:
        """Refresh the PostgreSQL planner's statistics after a bulk load (autovacuum would,
        minutes later). SQLite plans from its indexes alone: nothing to do."""
        if not self.is_sqlite:
            await self.run(f"ANALYZE {', '.join(tables)}")

    async def serialize(self, key: str) -> None:
        """Make transactions about one key (an address, say) take turns until this one ends:
        check-then-write stays correct with several processes. On SQLite writers already
        take turns (BEGIN IMMEDIATE); on PostgreSQL a transaction-scoped advisory lock.
        Call inside a transaction."""
        if not self.is_sqlite:
            await self.run("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (key,))

    # -- the fast path: plain SQL with ? placeholders ------------------------------------------
    # The hot statements (accept, claim, recheck, finish) skip SQLAlchemy's per-call compile
    # and `databases`' per-row execute_many: on SQLite they go straight to the shared
    # aiosqlite connection, one thread hop per statement. Elsewhere they go through
    # `databases` with the placeholders renamed.

    def _raw(self) -> Any:
        connection = self.db._global_connection if self.is_sqlite else None
        return connection.raw_connection if connection is not None else None

    @staticmethod
    def _named(sql: str, params: Sequence[Any]) -> tuple[str, dict[str, Any]]:
        parts = sql.split("?")
        assert len(parts) == len(params) + 1, "placeholders and parameters differ"
        named = "".join(f"{part}:p{i}" for i, part in enumerate(parts[:-1])) + parts[-1]
        return named, {f"p{i}": value for i, value in enumerate(params)}

    @staticmethod
    def _numbered(sql: str) -> str:
        """`?` placeholders as PostgreSQL's `$1, $2, …` (asyncpg's own)."""
        parts = sql.split("?")
        return "".join(f"{part}${i}" for i, part in enumerate(parts[:-1], 1)) + parts[-1]

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raw = self._raw()
        if raw is not None:
            return list(await raw.execute_fetchall(sql, params))
        if not self.is_sqlite:
            # asyncpg directly, on the task's `databases` connection (the one its
            # transaction, if any, is on): no SQLAlchemy compile, prepared and cached.
            async with self.db.connection() as connection:
                found = await connection.raw_connection.fetch(self._numbered(sql), *params)
            return [tuple(r) for r in found]
        named, values = self._named(sql, params)
        return [tuple(r._mapping.values()) for r in await self.db.fetch_all(named, values)]

    async def run(self, sql: str, params: Sequence[Any] = ()) -> None:
        raw = self._raw()
        if raw is not None:
            await raw.execute(sql, params)
            return
        if not self.is_sqlite:
            async with self.db.connection() as connection:
                await connection.raw_connection.execute(self._numbered(sql), *params)
            return
        named, values = self._named(sql, params)
        await self.db.execute(named, values)

    async def run_many(self, sql: str, params: Sequence[Sequence[Any]]) -> None:
        if not params:
            return
        raw = self._raw()
        if raw is not None:
            await raw.executemany(sql, params)
            return
        if not self.is_sqlite:
            # one prepared statement, the rows pipelined
            async with self.db.connection() as connection:
                await connection.raw_connection.executemany(self._numbered(sql), params)
            return
        for row in params:
            await self.run(sql, row)

    @staticmethod
    def marks(count: int) -> str:
        return ",".join("?" * count)

"""Group commit: concurrent short writes share one transaction and one fsync (SQLite).

On SQLite every writer of a process takes turns on one connection, and each COMMIT waits for
the disk. A burst of one-click refusals would queue behind one fsync each. `Committer` lets
the tasks that arrive while a transaction is committing wait together: the next transaction
runs all their writes, one after another, and each task gets its answer only after the COMMIT
that holds its writes has returned (a refusal answered is a refusal stored).

A write comes as an async function (`work`), and may come with the same writes as a plain
function of the sqlite3 connection (`in_thread`): those of a batch then run in the database's
thread in one step, each under a savepoint of its own, instead of one thread hop per statement.
A write that fails is answered with its error and loses nobody else's: an in-thread one is
rolled back to its savepoint; after an async one the transaction is rolled back and run again
without it (so an async write must only touch the database, and never wait for another
writer of this process).
"""

from __future__ import annotations

import asyncio
import contextvars
import sqlite3
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from . import tally as _tally

if TYPE_CHECKING:
    from .base import StoreBase

T = TypeVar("T")
Events = list[tuple[float, str]]  # (when, metric) for the per-day counts (store/tally.py)
# What an in-thread write returns: its result, and the events it counts once committed.
InThread = Callable[[sqlite3.Connection], tuple[T, Events]]

# At most this many writes in one transaction: a burst is cut into transactions short enough
# that other writers of the process (the worker, the API) still get their turns.
MAX_BATCH = 256


@dataclass(slots=True)
class _Item(Generic[T]):
    work: Callable[[], Awaitable[T]]
    in_thread: InThread[T] | None
    future: asyncio.Future[T]


class _Failed(Exception):
    """An async write of a batch raised: roll the batch back, run it again without it."""

    def __init__(self, item: _Item[Any], error: Exception) -> None:
        self.item, self.error = item, error


def _run_in_thread(
    conn: sqlite3.Connection, writes: list[InThread[Any]]
) -> list[tuple[bool, Any, Events]]:
    """In the database's thread: each write under a savepoint; (ok, result or error, events)."""
    done: list[tuple[bool, Any, Events]] = []
    for write in writes:
        conn.execute("SAVEPOINT gateway_write")
        try:
            result, events = write(conn)
        except Exception as exc:
            conn.execute("ROLLBACK TO gateway_write")
            conn.execute("RELEASE gateway_write")
            done.append((False, exc, []))
        else:
            conn.execute("RELEASE gateway_write")
            done.append((True, result, events))
    return done


class Committer:
    """Runs writes of many tasks in shared transactions on SQLite. On PostgreSQL each runs
    at once in a transaction of its own: its commits already proceed in parallel on pooled
    connections, and the server groups their WAL flushes itself."""

    def __init__(self, store: StoreBase, max_batch: int = MAX_BATCH) -> None:
        self.store = store
        self.max_batch = max_batch
        self._queue: deque[_Item[Any]] = deque()
        self._task: asyncio.Task[None] | None = None
        self.transactions = 0  # shared transactions committed (for tests and benches)

    async def run(
        self, work: Callable[[], Awaitable[T]], in_thread: InThread[T] | None = None
    ) -> T:
        """The writes committed; returns their result once the COMMIT has returned."""
        if not self.store.is_sqlite:
            async with self.store.transaction():
                return await work()
        if _tally.current() is not None:
            # Inside the caller's own transaction: the writes join it, now.
            return await self._now(work, in_thread)
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append(_Item(work, in_thread, future))
        if self._task is None:
            # A context of its own: the caller's transaction bookkeeping (context variables)
            # must not leak into the committer's.
            self._task = asyncio.get_running_loop().create_task(
                self._drain(), context=contextvars.Context()
            )
        return await future

    async def wait_idle(self) -> None:
        """Until every write handed over so far is committed or failed: before closing."""
        while self._task is not None:
            await asyncio.shield(self._task)

    async def _now(self, work: Callable[[], Awaitable[T]], in_thread: InThread[T] | None) -> T:
        if in_thread is None:
            return await work()
        ((ok, result, events),) = await self._hop([in_thread])
        if not ok:
            raise result
        await self.store.tally(events)
        return result  # type: ignore[no-any-return]

    async def _hop(self, writes: list[InThread[Any]]) -> list[tuple[bool, Any, Events]]:
        raw = self.store._raw()
        assert raw is not None, "in-thread writes need the shared SQLite connection"
        return await raw._execute(_run_in_thread, raw._conn, writes)  # type: ignore[no-any-return]

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch: list[_Item[Any]] = []
                while self._queue and len(batch) < self.max_batch:
                    item = self._queue.popleft()
                    if not item.future.done():  # its caller gave up (cancelled) before it ran
                        batch.append(item)
                await self._commit(batch)
        finally:
            self._task = None
            # Cancelled (the loop is closing): nobody still waiting is left hanging.
            while self._queue:
                item = self._queue.popleft()
                if not item.future.done():
                    item.future.set_exception(RuntimeError("the store closed before this write"))

    async def _commit(self, batch: list[_Item[Any]]) -> None:
        while batch:
            outcomes: list[tuple[bool, Any]] = []
            try:
                async with self.store.transaction():
                    outcomes = await self._run(batch)
            except _Failed as failed:
                # Rolled back: that write gets its error, the others run again without it.
                batch.remove(failed.item)
                _settle(failed.item.future, False, failed.error)
                continue
            except Exception as exc:
                # BEGIN or COMMIT failed (the database is locked, or gone): nothing of the
                # batch is stored, and each caller hears why, as it would have on its own.
                for item in batch:
                    _settle(item.future, False, exc)
                return
            except BaseException as exc:
                for item in batch:
                    _settle(item.future, False, RuntimeError(f"interrupted: {exc!r}"))
                raise
            self.transactions += 1
            for item, (ok, value) in zip(batch, outcomes, strict=True):
                _settle(item.future, ok, value)
            return

    async def _run(self, batch: list[_Item[Any]]) -> list[tuple[bool, Any]]:
        """Every write of the batch, in order, inside the transaction: consecutive in-thread
        writes in one step. Returns (ok, result or error) of each."""
        outcomes: list[tuple[bool, Any]] = []
        counts = _tally.current()
        assert counts is not None
        i = 0
        while i < len(batch):
            item = batch[i]
            if item.in_thread is None:
                try:
                    outcomes.append((True, await item.work()))
                except Exception as exc:
                    raise _Failed(item, exc) from exc
                i += 1
                continue
            run: list[InThread[Any]] = []
            while i < len(batch) and (write := batch[i].in_thread) is not None:
                run.append(write)
                i += 1
            for ok, value, events in await self._hop(run):
                counts.add(events)
                outcomes.append((ok, value))
        return outcomes


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)

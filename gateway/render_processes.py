"""Campaign renders in child processes beside the event loop, so a page uses every core."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import pickle
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from . import render_threads
from .config import Settings
from .records import Contact
from .render import Draft, OutOfTime, Rendered, Renderer
from .tokens import Signer

log = logging.getLogger("gateway")

Item = tuple[Draft, Contact | None, Mapping[str, str] | None]

# A child stops each render at its own deadline and answers; the parent kills one that
# has not answered this long after the chunk's whole time (stuck where no check reaches).
GRACE = 0.5
# Children that die one after another without a page rendered in between: past this many
# per process, the pool is given up and pages render in this process's threads.
DEATHS_PER_PROCESS = 2


def start_method() -> str:
    """'forkserver': each child is forked from a server process started by exec, which has
    one thread and no event loop; never from this process, whose event loop, database
    driver threads and render threads may hold a lock at the moment of a fork, a lock no
    thread would then release in the child. 'spawn' where there is no forkserver."""
    methods = multiprocessing.get_all_start_methods()
    return "forkserver" if "forkserver" in methods else "spawn"


# -- in a child ----------------------------------------------------------------------------


def _serve(conn: Connection, settings: Settings, keys: tuple[str, ...], templates: Path) -> None:
    """A child's life: one Renderer, made once from what the parent's was made from, then
    chunks in, renders out, until the parent says stop or is gone."""
    # Ctrl-C reaches the whole process group: the parent stops its campaign cleanly, and
    # the children stop when it closes their pipes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    renderer = Renderer(settings, Signer(keys), templates)
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        items, timeout, message_id = request
        try:
            conn.send(_render(renderer, items, timeout, message_id))
        except OSError:  # the parent stopped waiting and is gone
            return


def _render(
    renderer: Renderer, items: Sequence[Item], timeout: float, message_id: str | None
) -> tuple[list[Rendered], BaseException | None]:
    """The chunk rendered, each item with `timeout` of its own as in a render thread; the
    first error stops it and goes back in place of the renders."""
    done: list[Rendered] = []
    last = time.monotonic() + timeout * len(items)
    for draft, contact, attributes in items:
        deadline = min(time.monotonic() + timeout, last)
        try:
            done.append(
                renderer.render(
                    draft, contact, attributes, message_id=message_id, deadline=deadline
                )
            )
        except Exception as exc:
            return [], _portable(exc)
    return done, None


def _portable(exc: Exception) -> Exception:
    """The error itself when it survives pickling, else one of its kind with its words."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        kind = ValueError if isinstance(exc, ValueError) else RuntimeError
        return kind(f"{type(exc).__name__}: {exc}")
    return exc


# -- in the parent -------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Child:
    process: BaseProcess
    conn: Connection

    def exchange(self, request: tuple[Sequence[Item], float, str | None]) -> Any:
        self.conn.send(request)
        return self.conn.recv()

    def stop(self) -> None:
        """Ask it to end; killed if it has not within two seconds."""
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.process.join(2.0)
        self.kill()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join()

    def close(self) -> None:
        """Only once no thread reads its pipe: a closed descriptor's number is soon another's."""
        self.conn.close()
        self.process.close()


class RenderProcesses:
    """`size` child processes that render and scan a campaign's pages: the database, the
    decisions and the delivery stay in this process; a child gets a chunk of a page
    (drafts, contacts and attributes) and sends back its `Rendered` messages. A child that
    dies or runs past its time is replaced, and its chunk is rendered here or refused."""

    def __init__(self, renderer: Renderer, size: int) -> None:
        if size < 1:
            raise ValueError("a render process pool needs at least one process")
        self.renderer = renderer
        self.size = size
        self.broken = False  # children kept dying: pages render in this process's threads
        self._context: Any = multiprocessing.get_context(start_method())  # spawn or forkserver
        if start_method() == "forkserver":
            # The server imports the gateway's modules this process has loaded, once; each
            # child is forked with them, so re-running the program's main module (as a
            # child started without fork does: a script needs `if __name__ == "__main__":`)
            # imports nothing again. Python 3.11's own "__main__" preload does not work.
            loaded = [m for m in sys.modules if m.partition(".")[0] == "gateway"]
            self._context.set_forkserver_preload(
                [m for m in sorted(loaded) if not m.endswith("__main__")]
            )
        # The renderer's inputs, given to each child once at its start.
        self._inputs = (renderer.settings, renderer.signer.keys, renderer._templates)
        # Pipes are read in threads: a reply of a few hundred kilobytes never blocks the loop.
        self._threads = ThreadPoolExecutor(2 * size, thread_name_prefix="gateway-render-ipc")
        # Idle children; None once the pool is given up (each taker puts it back).
        self._idle: asyncio.Queue[_Child | None] = asyncio.Queue()
        self._children: set[_Child] = set()
        self._deaths = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        started = await asyncio.gather(
            *(loop.run_in_executor(self._threads, self._spawn) for _ in range(self.size)),
            return_exceptions=True,
        )
        for child in started:
            if isinstance(child, BaseException):
                await self.close()
                raise child
            self._idle.put_nowait(child)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        children, self._children = list(self._children), set()
        await asyncio.gather(*(loop.run_in_executor(self._threads, c.stop) for c in children))
        for child in children:
            child.close()
        self._threads.shutdown(wait=True)

    @property
    def pids(self) -> list[int]:
        return [c.process.pid for c in self._children if c.process.pid is not None]

    def _spawn(self) -> _Child:
        ours, theirs = self._context.Pipe()
        process = self._context.Process(
            target=_serve, args=(theirs, *self._inputs), name="gateway-render", daemon=True
        )
        try:
            process.start()
        finally:
            theirs.close()  # else a dead child's pipe would never read as closed
        child = _Child(process, ours)
        self._children.add(child)
        return child

    async def render_many(
        self, timeout: float, items: Sequence[Item], message_id: str | None = None
    ) -> list[Rendered]:
        """`render_threads.render_many` in the children: the page split in one chunk per
        child, each item with `timeout` of its own; the first error (in page order) raised."""
        if not items:
            return []
        if self.broken:
            return await render_threads.render_many(self.renderer, timeout, items, message_id)
        step = -(-len(items) // min(self.size, len(items)))
        chunks = [items[i : i + step] for i in range(0, len(items), step)]
        outcomes = await asyncio.gather(
            *(self._render_chunk(timeout, chunk, message_id) for chunk in chunks),
            return_exceptions=True,
        )
        done: list[Rendered] = []
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
            done += outcome
        return done

    async def _render_chunk(
        self, timeout: float, chunk: Sequence[Item], message_id: str | None
    ) -> list[Rendered]:
        loop = asyncio.get_running_loop()
        reading: asyncio.Future[Any] | None = None
        # Waiting for a free child spends none of the chunk's time: only its render does.
        child = await self._idle.get()
        if child is None:
            self._idle.put_nowait(None)
            return await render_threads.render_many(self.renderer, timeout, chunk, message_id)
        try:
            async with asyncio.timeout(timeout * len(chunk) + GRACE):
                reading = loop.run_in_executor(
                    self._threads, child.exchange, (chunk, timeout, message_id)
                )
                # Shielded: after a timeout the read goes on until the child is killed.
                done, error = await asyncio.shield(reading)
        except TimeoutError:
            # Stuck past every deadline of its chunk: stop it.
            log.warning("a render process ran past its time and was replaced")
            await self._replace(child, died=False, reading=reading)
            raise render_threads.out_of_time(timeout) from None
        except Exception as exc:
            # It died (EOFError, OSError), or the chunk or its answer could not cross the
            # pipe (a pickling error): the child's state is unknown, so it is replaced.
            log.warning(
                "a render process failed (%s); its %d message(s) are rendered in this process",
                type(exc).__name__,
                len(chunk),
            )
            await self._replace(child, died=True)
            return await render_threads.render_many(self.renderer, timeout, chunk, message_id)
        self._deaths = 0
        self._idle.put_nowait(child)
        if isinstance(error, OutOfTime):
            raise render_threads.out_of_time(timeout)
        if error is not None:
            raise error
        return list(done)

    async def _replace(
        self, child: _Child, *, died: bool, reading: asyncio.Future[Any] | None = None
    ) -> None:
        loop = asyncio.get_running_loop()
        self._children.discard(child)
        await loop.run_in_executor(self._threads, child.kill)
        if reading is not None:  # its pipe reads as closed now that the child is gone
            await asyncio.wait([reading])
            reading.exception()  # EOFError, as expected: retrieved, so never reported
        child.close()
        self._deaths += died
        if self._deaths > DEATHS_PER_PROCESS * self.size:
            self._give_up("render processes keep dying")
            return
        try:
            self._idle.put_nowait(await loop.run_in_executor(self._threads, self._spawn))
        except Exception as exc:  # cannot start one now: carry on with the others, or here
            log.error("could not start a render process: %s", exc)
            if not self._children:
                self._give_up("no render process could be started")

    def _give_up(self, why: str) -> None:
        if not self.broken:
            log.error("%s: campaign messages are rendered in this process from now on", why)
            self.broken = True
            self._idle.put_nowait(None)

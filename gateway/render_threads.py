"""The threads renders run in, off the event loop, each stopped after its time is up."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from .records import Contact
from .render import Draft, OutOfTime, Rendered, Renderer

# Renders (templates and the content scan) run off the event loop in this many threads,
# shared by every gateway of the process: hostile requests wait for one, they cannot add
# threads; a render still waiting when its time is up is dropped unstarted.
RENDER_THREADS = 4
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _render_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(RENDER_THREADS, thread_name_prefix="gateway-render")
        return _pool


async def render_many(
    renderer: Renderer,
    timeout: float,
    items: Sequence[tuple[Draft, Contact | None, Mapping[str, str] | None]],
    message_id: str | None = None,
) -> list[Rendered]:
    """`Renderer.render` of each item in one trip to a render thread, each with `timeout`
    seconds of its own: a pathological template or body never holds up the event loop (and
    so every other request) and never runs on unseen."""
    if not items:
        return []
    given_up = threading.Event()
    # Nothing runs past the moment the caller stops waiting: a job that only got a thread
    # then (behind others) must not hold it for a whole `timeout` of its own.
    last = time.monotonic() + timeout * len(items)

    def job() -> list[Rendered]:
        done = []
        for draft, contact, attributes in items:
            if given_up.is_set():
                break
            deadline = min(time.monotonic() + timeout, last)
            done.append(
                renderer.render(
                    draft, contact, attributes, message_id=message_id, deadline=deadline
                )
            )
        return done

    loop = asyncio.get_running_loop()
    try:
        return await asyncio.wait_for(
            loop.run_in_executor(_render_pool(), job), timeout * len(items)
        )
    except (TimeoutError, OutOfTime):
        raise out_of_time(timeout) from None
    finally:
        given_up.set()


def out_of_time(timeout: float) -> OutOfTime:
    """The error of a render that passed its `timeout`, in a thread or a child process."""
    return OutOfTime(
        f"the message took longer than {timeout:g} s to render and check, so it was"
        " not accepted: shorten its loops and its body (or raise GATEWAY_RENDER_TIMEOUT)"
    )

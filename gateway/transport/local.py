"""Transports that write locally: a maildir for trying things out, memory for unit tests."""

from __future__ import annotations

import asyncio
import mailbox
import os
from collections.abc import Callable, Sequence

from .base import Envelope, Outcome

# --------------------------------------------------------------------------- maildir


class MaildirTransport:
    """Writes each message byte-exactly as one file in a Maildir (``new/``)."""

    concurrency = 1

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._box: mailbox.Maildir | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"MaildirTransport({self.path!r})"

    async def open(self) -> None:
        if self._box is None:
            self._box = await asyncio.to_thread(_open_maildir, self.path)

    async def close(self) -> None:
        self._box = None

    async def deliver(self, envelopes: Sequence[Envelope]) -> list[Outcome]:
        if not envelopes:
            return []
        async with self._lock:
            await self.open()
            return await asyncio.to_thread(self._write_all, envelopes)

    def _write_all(self, envelopes: Sequence[Envelope]) -> list[Outcome]:
        box = self._box
        assert box is not None
        out: list[Outcome] = []
        for env in envelopes:
            try:
                key = box.add(env.data)
            except OSError as exc:
                out.append(Outcome(False, None, f"maildir: {exc}", False))
            else:
                out.append(Outcome(True, 250, f"saved as {key}", False))
        return out


def _open_maildir(path: str) -> mailbox.Maildir:
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    return mailbox.Maildir(path, factory=None, create=True)


# --------------------------------------------------------------------------- memory


class MemoryTransport:
    """Keeps delivered envelopes in ``.sent``; ``fail(env)`` may return an Outcome."""

    def __init__(
        self,
        fail: Callable[[Envelope], Outcome | None] | None = None,
        *,
        concurrency: int = 1,
    ) -> None:
        self.fail = fail
        self.concurrency = concurrency
        self.sent: list[Envelope] = []
        self.opened = False

    def __repr__(self) -> str:
        return f"MemoryTransport(sent={len(self.sent)})"

    async def open(self) -> None:
        self.opened = True

    async def close(self) -> None:
        self.opened = False

    async def deliver(self, envelopes: Sequence[Envelope]) -> list[Outcome]:
        out: list[Outcome] = []
        for env in envelopes:
            failed = self.fail(env) if self.fail is not None else None
            if failed is not None:
                out.append(failed)
            else:
                self.sent.append(env)
                out.append(_MEMORY_OK)
        return out


_MEMORY_OK = Outcome(True, 250, "OK", False)

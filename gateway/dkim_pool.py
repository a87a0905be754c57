"""DKIM signing of a delivery batch beside the event loop, in a process of its own.

    signed = await sign_batch(signer.sign, messages)   # the worker's call, once per batch

gateway/dkim.py makes the signature (pure: no process, no I/O); this module decides where
it is made. `sign_batch` hands a batch to `sign_many` in a thread, which sends it whole to
the signer's own child process (see "a signing process" below for why not a thread alone)
and prepends the headers that come back; whatever the child cannot do is signed in the
gateway's process, so a dead child costs time, never a signature.
"""

from __future__ import annotations

import logging
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from cryptography.hazmat.primitives import serialization

from .dkim import DKIMSigner, _PrivateKey
from .errors import InvalidMessage

__all__ = ["sign_batch", "sign_many", "POOL_MIN_BATCH", "CHILD_TIMEOUT"]

log = logging.getLogger("gateway.dkim")

# Each signer's process, ended with its signer.
_POOLS: weakref.WeakKeyDictionary[DKIMSigner, _Pool] = weakref.WeakKeyDictionary()
_POOLS_LOCK = threading.Lock()


def pool_of(signer: DKIMSigner) -> _Pool:
    """The signer's child process (not started until its first big batch)."""
    with _POOLS_LOCK:
        pool = _POOLS.get(signer)
        if pool is None:
            pool = _Pool(signer._key, signer.domain.encode(), signer.selector.encode())
            _POOLS[signer] = pool
            weakref.finalize(signer, pool.close)  # the child ends with its signer
        return pool


def sign_many(
    signer: DKIMSigner, messages: Sequence[bytes], *, timestamp: int | None = None
) -> list[bytes | Exception]:
    """What `signer.sign` returns for each message, or the exception it raises, with one
    `t=` for the batch. Blocking: call it from a thread. A batch of at least POOL_MIN_BATCH
    messages is signed in the signer's own process (started at the first such batch; a
    batch that finds it busy, dead or unusable is signed here, in this thread)."""
    when = int(time.time()) if timestamp is None else int(timestamp)
    items = list(messages)
    replies: list[tuple[bytes, bytes]] | None = None
    if len(items) >= POOL_MIN_BATCH:
        replies = pool_of(signer).call(when, items)
    out: list[bytes | Exception] = []
    for i, data in enumerate(items):
        kind, value = replies[i] if replies is not None else (b"R", b"")
        if kind == b"O":
            out.append(value + data)
        elif kind == b"E":
            out.append(InvalidMessage(value.decode("utf-8", "replace")))
        else:
            try:
                out.append(signer.sign(data, timestamp=when))
            except Exception as exc:
                out.append(exc)
    return out


async def sign_batch(
    sign: Callable[[bytes], bytes], messages: Sequence[bytes]
) -> list[bytes | Exception]:
    """Sign a batch off the event loop, in one trip: `sign_many` when `sign` is a
    signer's `sign` (its process does the work), else `sign` on each message in a thread.
    Each entry is the signed message or the exception raised for it."""
    import asyncio  # here: the signing process never needs it

    signer = getattr(sign, "__self__", None)
    if isinstance(signer, DKIMSigner) and getattr(sign, "__func__", None) is DKIMSigner.sign:
        return await asyncio.to_thread(sign_many, signer, messages)
    return await asyncio.to_thread(_sign_each, sign, messages)


def _sign_each(
    sign: Callable[[bytes], bytes], messages: Sequence[bytes]
) -> list[bytes | Exception]:
    out: list[bytes | Exception] = []
    for data in messages:
        try:
            out.append(sign(data))
        except Exception as exc:
            out.append(exc)
    return out


# ---------------------------------------------------------------- a signing process
#
# OpenSSL releases the GIL for the RSA operation (measured: two threads sign 2,000 digests in
# half the time of one), but the rest of a signature (parsing, canonicalization, folding:
# ~90 us of Python a message) holds it, and the event loop waits for the GIL after each of
# its socket calls while a signing thread runs that. Measured on 2 cores, the delivering
# process spent ~890 us of CPU per message signing in a thread, ~510 with this child (which
# spends ~410 of its own). So a batch is signed whole in a child process: `python -c`
# importing this module (a fresh interpreter, no fork of a threaded parent), the key written
# once to its stdin at start, then per batch the messages in and the headers out over the
# same pipes; replies are small, the key never travels again. A child that cannot be
# started or dies mid-batch is met as an error on its pipe: that batch is signed here, in
# full, and the next big batch starts a new child (at most _RESTARTS times).

# -P: the working directory is not searched (a gateway.py there must not get the key); the
# package is imported from where this process has it.
# dns (dnspython, ~40 ms to import) is kept out: dkimpy loads it for verifying, the child
# never looks anything up.
_CHILD_CODE = (
    f"import sys; sys.path.insert(0, {os.path.dirname(os.path.dirname(os.path.abspath(__file__)))!r}); "
    "sys.modules['dns'] = None; from gateway.dkim_pool import _child_main; _child_main()"
)
_SETUP = struct.Struct(">I")
_REQUEST = struct.Struct(">qI")  # t=, count
_ITEM = struct.Struct(">I")
_REPLY = struct.Struct(">cI")  # O: header or signature, E: InvalidMessage text, R: sign here
#: Batches smaller than this are signed in the calling thread: no process for a trickle.
POOL_MIN_BATCH = 16
_RESTARTS = 3
#: A batch the child has not answered within this many seconds ends it (a hung child must
#: not hold delivery): the batch is then signed in the gateway's process.
CHILD_TIMEOUT = 30.0


def _read_exact(stream: Any, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise EOFError("the DKIM signing process closed its output")
    return data


class _Child:
    """One signing process and its two pipes."""

    def __init__(self, setup: bytes) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-P", "-c", _CHILD_CODE], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        self.stdin.write(_SETUP.pack(len(setup)) + setup)
        self.stdin.flush()

    def call(self, when: int, items: list[bytes]) -> list[tuple[bytes, bytes]]:
        parts = [_REQUEST.pack(when, len(items))]
        for data in items:
            parts += (_ITEM.pack(len(data)), data)
        watchdog = threading.Timer(CHILD_TIMEOUT, self.proc.kill)  # its pipes then fail
        watchdog.start()
        try:
            self.stdin.write(b"".join(parts))
            self.stdin.flush()
            replies = []
            for _ in items:
                kind, size = _REPLY.unpack(_read_exact(self.stdout, _REPLY.size))
                replies.append((kind, _read_exact(self.stdout, size)))
        finally:
            watchdog.cancel()
        return replies

    def close(self) -> None:
        for stream in (self.stdin, self.stdout):
            try:
                stream.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=2)  # it exits at the end of its input
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class _Pool:
    """The signer's child process, started at the first batch big enough to need it. That
    batch is signed in the calling thread while the child starts (~0.2 s of imports): the
    first batch of a delivery run has nothing to overlap with, so it must not wait for it."""

    def __init__(self, key: _PrivateKey, domain: bytes, selector: bytes) -> None:
        self.key, self.domain, self.selector = key, domain, selector
        self.lock = threading.Lock()
        self.child: _Child | None = None
        self.failures = 0

    def call(self, when: int, items: list[bytes]) -> list[tuple[bytes, bytes]] | None:
        """The child's replies, or None when it is starting, busy with another batch, or
        unusable: the caller signs the batch itself then."""
        if self.failures > _RESTARTS or not self.lock.acquire(blocking=False):
            return None
        try:
            if self.child is None:
                pem = self.key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
                self.child = _Child(b"\0".join((self.domain, self.selector, pem)))
                return None
            return self.child.call(when, items)
        except (OSError, EOFError, ValueError, struct.error) as error:
            self.failures += 1
            log.warning(
                "the DKIM signing process failed (%s); this batch is signed in the gateway%s",
                error or type(error).__name__,
                "" if self.failures <= _RESTARTS else ", and so are all the next ones",
            )
            self._stop()
            return None
        finally:
            self.lock.release()

    def _stop(self) -> None:
        child, self.child = self.child, None
        if child is not None:
            child.close()

    def close(self) -> None:
        with self.lock:
            self._stop()


def _child_main() -> None:
    """The signing process: one setup frame (domain, selector, key), then batches until EOF."""
    # Ctrl-C reaches the whole process group: the gateway stops cleanly, and this process
    # ends when its input closes (a KeyboardInterrupt here would cost a batch and a traceback).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # only replies go down the pipe
    log.setLevel(logging.ERROR)  # the gateway has already warned about the key
    (size,) = _SETUP.unpack(_read_exact(source, _SETUP.size))
    domain, selector, key_pem = _read_exact(source, size).split(b"\0", 2)
    signer = DKIMSigner.__new__(DKIMSigner)
    signer._setup(domain.decode(), selector.decode(), key_pem, "DKIM private key", validated=True)
    while True:
        head = source.read(_REQUEST.size)
        if len(head) < _REQUEST.size:
            return
        when, count = _REQUEST.unpack(head)
        replies: list[bytes] = []
        for _ in range(count):
            (size,) = _ITEM.unpack(_read_exact(source, _ITEM.size))
            data = _read_exact(source, size)
            try:
                kind, out = b"O", signer.header(data, timestamp=when)
            except InvalidMessage as error:
                kind, out = b"E", str(error).encode()
            except Exception:
                kind, out = b"R", b""
            replies += (_REPLY.pack(kind, len(out)), out)
        sink.write(b"".join(replies))
        sink.flush()

"""The discarding SMTP sink the benchmarks send to, and the raw aiosmtplib baseline.

Not a benchmark: bench/send_path.py and bench/campaign.py import it. The sink runs in a
child process with its own event loop on 127.0.0.1 (port 0), so it never shares the
client's loop; the baseline blasts pre-rendered messages into the same sink, and every
ratio a benchmark prints is against that baseline measured in the same run.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import re
import socket
import time
from typing import Any

import aiosmtplib
from _common import HOST, HTML, RAW_SENDER, SUBJECT, TOPIC, contact_email, contact_name, fail

from gateway.config import Settings
from gateway.render import Draft, Renderer
from gateway.store import Contact, Topic
from gateway.tokens import Signer

FAIL_RATE = 0.10  # faults on: DATA answered 451
DROP_RATE = 0.01  # faults on: connection aborted after the data, before the reply
RECIPIENT = re.compile(r"([a-z]+)(\d{1,8})@example\.vn")  # contact_email's spelling
OTHER_RECIPIENTS_KEPT = 10_000  # addresses outside that pattern counted one by one, at most


def gateway_count(counts: dict[str, int]) -> int:
    """Messages from the gateway: every envelope sender but the baseline's."""
    return sum(v for k, v in counts.items() if k != RAW_SENDER)


class RecipientTally:
    """Messages per recipient, so a run can tell that every recipient got exactly one. One
    byte per recipient (a bytearray per tag, indexed by the address's number; saturates at
    255): 1 MiB for a million contacts."""

    def __init__(self) -> None:
        self.seen: dict[str, bytearray] = {}
        self.other: dict[str, int] = {}
        self.other_overflow = 0

    def count(self, address: str) -> None:
        m = RECIPIENT.fullmatch(address.lower())
        if m is None:
            if address in self.other or len(self.other) < OTHER_RECIPIENTS_KEPT:
                self.other[address] = self.other.get(address, 0) + 1
            else:
                self.other_overflow += 1
            return
        tag, i = m.group(1), int(m.group(2))
        arr = self.seen.get(tag)
        if arr is None:
            arr = self.seen[tag] = bytearray()
        if i >= len(arr):
            arr.extend(bytes(max(i + 1 - len(arr), len(arr))))  # doubles: amortized O(1)
        if arr[i] < 255:
            arr[i] += 1

    def summary(self, tag: str, n: int) -> dict[str, Any]:
        """What TAG's 0..N-1 received (then forgotten)."""
        arr = self.seen.pop(tag, bytearray())
        window = bytes(arr[:n]) + bytes(max(n - len(arr), 0))
        beyond = bytes(arr[n:])
        once, missing = window.count(1), window.count(0)
        many = n - once - missing
        return {
            "expected": n,
            "distinct": n - missing,
            "exactly_once": once,
            "missing": missing,
            "more_than_once": many,
            "max_per_recipient": max(window, default=0),
            "outside_range": len(beyond) - beyond.count(0),
            "missing_first": [i for i, v in enumerate(window) if v == 0][:5] if missing else [],
            "repeated_first": [i for i, v in enumerate(window) if v > 1][:5] if many else [],
            "unrecognized": sum(self.other.values()) + self.other_overflow,
        }


def recipients_ok(r: dict[str, Any]) -> bool:
    return r["exactly_once"] == r["expected"] and not r["outside_range"]


def recipients_problem(r: dict[str, Any]) -> str:
    return (
        f"{r['exactly_once']} of {r['expected']} recipients got exactly one message;"
        f" {r['missing']} got none (first: {r['missing_first']}),"
        f" {r['more_than_once']} more than one (first: {r['repeated_first']},"
        f" at most {r['max_per_recipient']}), {r['outside_range']} outside the audience"
    )


def _sink_main(
    conn: Any, ready: Any, loop_kind: str, seed: int = 0, per_recipient: bool = False
) -> None:
    """Child process: an aiosmtpd sink that discards messages and counts them per sender
    (and per recipient with `per_recipient`). Commands on `conn`: "stats", "stop",
    "faults on", "faults off", "recipients TAG N" (see RecipientTally.summary)."""
    from aiosmtpd.smtp import SMTP

    counts: dict[str, int] = {}
    received_bytes = [0]
    faults = {"fail": 0, "drop_data": 0, "signed": 0}
    injecting = [False]
    draws = random.Random(seed)
    tally = RecipientTally() if per_recipient else None

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            if injecting[0]:
                draw = draws.random()
                if draw < DROP_RATE:
                    # The data has arrived; vanish before replying. Not counted as received.
                    faults["drop_data"] += 1
                    server.transport.abort()
                    await asyncio.sleep(3600)  # connection_lost() cancels this
                elif draw < DROP_RATE + FAIL_RATE:
                    faults["fail"] += 1
                    return "451 4.3.0 try again"
            local, at, domain = envelope.mail_from.rpartition("@")
            sender = f"{local.split('+', 1)[0]}{at}{domain}"  # VERP: one key per sender
            counts[sender] = counts.get(sender, 0) + 1
            data = envelope.original_content or b""
            received_bytes[0] += len(data)
            if data[:15].lower() == b"dkim-signature:":
                faults["signed"] += 1
            if tally is not None:
                for rcpt in envelope.rcpt_tos:
                    tally.count(rcpt)
            return "250 OK"

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        handler = Handler()
        server = await loop.create_server(
            lambda: SMTP(
                handler,
                decode_data=False,
                enable_SMTPUTF8=True,
                hostname="localhost",  # no getfqdn() per connection
                data_size_limit=None,
                loop=loop,
            ),
            HOST,
            0,
        )
        stop = asyncio.Event()

        def on_command() -> None:
            try:
                command = conn.recv()
            except EOFError:
                command = "stop"
            if command == "stats":
                conn.send(
                    {
                        "counts": dict(counts),
                        "faults": dict(faults),
                        "bytes": received_bytes[0],
                        "cpu": time.process_time(),
                        "wall": time.perf_counter(),
                    }
                )
            elif command == "stop":
                stop.set()
            elif command in ("faults on", "faults off"):
                injecting[0] = command == "faults on"
                conn.send(injecting[0])
            elif command.startswith("recipients ") and tally is not None:
                _, tag, n = command.split()
                conn.send(tally.summary(tag, int(n)))

        loop.add_reader(conn.fileno(), on_command)
        ready.send(server.sockets[0].getsockname()[1])
        await stop.wait()
        server.close()

    if loop_kind == "uvloop":
        import uvloop

        uvloop.run(serve())
    else:
        asyncio.run(serve())


class Sink:
    """The sink process seen from the benchmark: start, stats(), stop. With `per_recipient`
    it also counts messages per recipient (see recipients())."""

    def __init__(self, loop_kind: str, seed: int = 0, *, per_recipient: bool = False) -> None:
        self.loop_kind = loop_kind
        ctx = multiprocessing.get_context("spawn")
        self._conn, child_conn = ctx.Pipe()
        ready_recv, ready_send = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(
            target=_sink_main,
            args=(child_conn, ready_send, loop_kind, seed, per_recipient),
            daemon=True,
        )
        self._proc.start()
        if not ready_recv.poll(30):
            self._proc.kill()
            fail("the SMTP sink did not start within 30 s")
        self.port: int = ready_recv.recv()

    def stats(self) -> dict[str, Any]:
        self._conn.send("stats")
        return self._conn.recv()

    def faults(self, on: bool) -> None:
        """Turn fault injection (FAIL_RATE 451s, DROP_RATE dropped DATA) on or off."""
        self._conn.send("faults on" if on else "faults off")
        self._conn.recv()

    def recipients(self, tag: str, n: int) -> dict[str, Any]:
        """Whether tag000000 .. tag(n-1) each got exactly one message since the last call
        for that tag (RecipientTally.summary)."""
        self._conn.send(f"recipients {tag} {n}")
        return self._conn.recv()

    def stop(self) -> None:
        try:
            self._conn.send("stop")
        except OSError:
            pass
        self._proc.join(5)
        if self._proc.is_alive():
            self._proc.kill()


class Window:
    """Wall and CPU time of this process and of the sink over one timed phase."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.seconds = 0.0
        self.cpu = 0.0
        self.sink_cpu = 0.0
        self.sink_counts: dict[str, int] = {}
        self.sink_faults: dict[str, int] = {}

    def __enter__(self) -> Window:
        self._s0 = self.sink.stats()
        self._c0 = time.process_time()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._t0
        self.cpu = time.process_time() - self._c0
        s1 = self.sink.stats()
        self.sink_cpu = s1["cpu"] - self._s0["cpu"]
        self.sink_counts = {k: v - self._s0["counts"].get(k, 0) for k, v in s1["counts"].items()}
        self.sink_faults = {k: v - self._s0["faults"].get(k, 0) for k, v in s1["faults"].items()}

    def usage(self, n: int) -> dict[str, float]:
        return {
            "cpu_client_pct": round(100 * self.cpu / self.seconds, 1),
            "cpu_sink_pct": round(100 * self.sink_cpu / self.seconds, 1),
            "cpu_client_us_per_msg": round(1e6 * self.cpu / n, 1),
            "cpu_sink_us_per_msg": round(1e6 * self.sink_cpu / n, 1),
        }


# --------------------------------------------------------------------------- raw baseline


def build_raw_messages(settings: Settings, n: int) -> list[tuple[str, bytes]]:
    """N messages with the gateway's renderer (untimed): same size and shape as its own."""
    renderer = Renderer(settings, Signer(settings.secret_keys))
    topic = Topic(1, TOPIC, "Tin tức", False)
    messages = []
    for i in range(n):
        to = contact_email(i, "raw")
        contact = Contact(i + 1, f"uid{i:09d}", to, contact_name(i), "vi", "active")
        draft = Draft(to, SUBJECT, HTML, None, "marketing", topic)
        rendered = renderer.render(draft, contact)
        if rendered.findings:
            fail(f"the template does not pass the scan: {rendered.findings}")
        messages.append((to, rendered.raw))
    return messages


def build_raw_pool(settings: Settings, n: int, pool: int) -> tuple[list[tuple[str, bytes]], float]:
    """N (recipient, message) pairs over at most `pool` distinct rendered bodies, and their
    average size: a million messages do not need a million renders."""
    bodies = [raw for _, raw in build_raw_messages(settings, min(n, pool))]
    size = sum(len(b) for b in bodies) / len(bodies)
    return [(contact_email(i, "raw"), bodies[i % len(bodies)]) for i in range(n)], size


async def raw_baseline(
    port: int, messages: list[tuple[str, bytes]], concurrency: int, clients: list[aiosmtplib.SMTP]
) -> None:
    """The timed part: connect C clients and send every message (the QUIT comes later)."""
    work = iter(messages)
    local_hostname = socket.getfqdn() or "localhost"  # what the gateway's transport uses

    async def worker() -> None:
        client = aiosmtplib.SMTP(
            hostname=HOST, port=port, local_hostname=local_hostname, start_tls=False, timeout=30
        )
        await client.connect()
        clients.append(client)
        for rcpt, data in work:
            await client.sendmail(RAW_SENDER, [rcpt], data)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(messages)))))


async def raw_window(sink: Sink, messages: list[tuple[str, bytes]], concurrency: int) -> Window:
    """The raw baseline timed against the sink; the clients say QUIT after the window."""
    clients: list[aiosmtplib.SMTP] = []
    with Window(sink) as raw:
        await raw_baseline(sink.port, messages, concurrency, clients)
    await asyncio.gather(*(client.quit() for client in clients))
    return raw


if __name__ == "__main__":
    from _common import library_help

    library_help(__doc__)

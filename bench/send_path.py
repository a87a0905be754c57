"""Benchmark of the send path: the gateway against raw aiosmtplib, in one run.

Run it with the project's virtualenv (the package must be installed):

    .venv/bin/python bench/send_path.py            # N=5000, 4 connections
    .venv/bin/python bench/send_path.py --n 1000   # quicker
    .venv/bin/python bench/send_path.py --json     # one JSON object with every figure
    .venv/bin/python bench/send_path.py --n 1000 --profile cprofile   # where the time goes
    .venv/bin/python bench/send_path.py --n 2000 --faults        # 10% 451s, 1% dropped DATA
    .venv/bin/python bench/send_path.py --n 2000 --dkim rsa      # DKIM-signed (or ed25519)

What happens, in order:

1. An SMTP sink (aiosmtpd) starts in a child process with its own event loop on
   127.0.0.1, port 0. It accepts every message and throws it away, counting messages per
   envelope sender (a VERP return path counts under its address without the +tag). The
   baseline and the gateway send to this same sink, and the server never shares the
   client's event loop.

2. Raw baseline: N messages are rendered beforehand (untimed) with the gateway's own
   renderer, so they have exactly the size and shape of what the gateway sends:
   multipart/alternative text+html, Vietnamese text, marketing footer, List-* headers.
   aiosmtplib then sends them over C persistent connections, one recipient each. The
   timed window includes opening the C connections, as the gateway's does.

3. Gateway: a fresh SQLite database in a temporary directory gets one topic and N
   subscribed contacts (untimed, through gw.import_contacts on a generated CSV). The file
   is copied, so each accept mode below starts from an identical database and the delivery
   phase after it works on exactly N messages:
     accept/send       N x `await gw.send(...)`, one message at a time     (timed)
     accept/send_many  `await gw.send_many(batch)` in batches of --batch    (timed)
     delivery          `await gw.deliver(until_idle=True)` with concurrency C after each
                       accept mode (timed), then a check that the sink received exactly N
                       messages from the gateway's envelope sender.

Figures (msg/s and ratios are against the raw baseline measured in the same run):
  raw rate                N / raw time
  delivery ratio          delivery rate / raw rate                           target >= 0.8
  end-to-end ratio        N / (accept time + delivery time) / raw rate       target >= 0.6
                          (given for each accept mode)
  accept us/msg           accept time / N
  cpu client / sink       CPU time over wall time of this process (all threads, aiosqlite's
                          included) and of the sink, also per message. A sink near 100% means
                          the sink, not the client, limits the raw rate: the sink runs on
                          uvloop by default to push that limit up (--sink-loop asyncio for
                          the tests' setup). On a 2-core machine the sink, the event loop and
                          aiosqlite's thread share the cores; the core count is printed.

--profile cprofile|pyinstrument profiles the gateway phases of this same run (their figures
are then slower and marked as such) and prints the top functions by cumulative time in
microseconds per message. cProfile counts each resumption of a coroutine as a call, so the
calls/msg of async functions are inflated; the times are right. pyinstrument must first be
installed into the virtualenv (`.venv/bin/pip install pyinstrument`). Both see the event-loop
thread only: SQLite work in aiosqlite's thread shows up as time spent awaiting it.

--faults turns fault injection on in the sink for the gateway phases only (the raw baseline
always runs against the clean sink, so the ratios compare a faulty gateway run with a clean
raw one): 10% of DATA transfers are answered `451 4.3.0 try again` and 1% end with the sink
aborting the connection after the data, before any reply; the draws come from a seeded
random stream (--fault-seed). Neither is counted as received, so the sink check stays
"exactly N". The gateway retries on GATEWAY_RETRY_SCHEDULE=0.05,0.1,0.2 (max age 1 h) and
its delivery phase lasts until every message is sent: repeated `deliver(until_idle=True)`
runs, sleeping until the next retry is due in between. Printed per mode: the delivery rate,
retries (the worker's count), faults injected (the sink's count) and the ratio to raw.

--dkim rsa|ed25519 signs the gateway's mail: a key (RSA 2048 or Ed25519) is generated with
`cryptography` into the temporary directory and GATEWAY_DKIM_DOMAIN/SELECTOR/KEY_FILE are
set; the sink counts messages that begin with a DKIM-Signature header and the check fails
unless all N gateway messages do. The raw baseline stays unsigned, so the ratio includes the
cost of signing. When bench/dkim_cost.py is present its `measure(n)` table (microseconds per
signature: dkimpy alone, gateway.dkim RSA-2048 and Ed25519) is printed too.

Only 127.0.0.1 is used. Exit status 1 when the sink did not receive exactly N messages
from the gateway, or a message was not accepted or not sent.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import multiprocessing
import os
import random
import re
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiosmtplib

from gateway import Gateway, SendRequest
from gateway.config import Settings
from gateway.render import Draft, Renderer
from gateway.store import Contact, Topic
from gateway.tokens import Signer

HOST = "127.0.0.1"
GATEWAY_SENDER = "news@first.vn"  # GATEWAY_FROM; the envelope sender may be a VERP path
RAW_SENDER = "bulk@first.vn"  # the baseline's: the sink counts it apart from the gateway's
FAIL_RATE = 0.10  # --faults: DATA answered 451
DROP_RATE = 0.01  # --faults: connection aborted after the data, before the reply
FAULT_RETRY_SCHEDULE = "0.05,0.1,0.2"
DKIM_DOMAIN, DKIM_SELECTOR = "first.vn", "bench"
TOPIC = "news"

SUBJECT = "Ưu đãi tháng 12 dành riêng cho {{ contact.name }}"
# A short Vietnamese HTML body. The layout, the marketing footer (in both parts), the
# List-* headers and quoted-printable encoding add about 3.5 KB to any message, so a rendered
# message is about 5 KB; the run prints the average sizes of both sides.
HTML = """\
<h1>Xin chào {{ contact.name }},</h1>
<p>Nhân dịp cuối năm, cửa hàng giảm giá tới 50% cho áo khoác, giày thể thao và phụ kiện
mùa đông, miễn phí vận chuyển cho đơn hàng từ 300.000 đồng. Chương trình áp dụng từ ngày
10 đến hết ngày 24 tháng 12 tại <a href="https://first.vn/khuyen-mai">first.vn</a>.</p>
<p>Trân trọng,<br>Đội ngũ chăm sóc khách hàng</p>
"""

FAMILY = ["Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng"]
MIDDLE = ["Văn", "Thị", "Minh", "Ngọc", "Đức", "Thanh", "Quốc", "Hồng"]
GIVEN = ["An", "Bình", "Châu", "Dũng", "Giang", "Hà", "Khánh", "Linh", "Phương", "Quân"]


def contact_name(i: int) -> str:
    return f"{FAMILY[i % 10]} {MIDDLE[(i // 10) % 8]} {GIVEN[(i // 80) % 10]}"


def contact_email(i: int, tag: str = "kh") -> str:
    return f"{tag}{i:06d}@example.vn"


def gateway_env(
    tmp: Path, db: str, sink_port: int, extra: dict[str, str] | None = None
) -> dict[str, str]:
    return {
        "GATEWAY_DATABASE_URL": f"sqlite:///{tmp / db}",
        "GATEWAY_SECRET_KEYS": "bench-key-newest-4f8a2c6e0b9d1f3a7c5e,bench-key-older-9b3d7f1a5c0e8b2d6f4a",
        "GATEWAY_FROM": f"Shop <{GATEWAY_SENDER}>",
        "GATEWAY_BASE_URL": "https://mail.first.vn",
        "GATEWAY_SMTP_URL": f"smtp://{HOST}:{sink_port}",
        "GATEWAY_SENDER_NAME": "Công ty TNHH First",
        "GATEWAY_SENDER_POSTAL_ADDRESS": "12 Lê Lợi, Quận 1, TP. Hồ Chí Minh",
        "GATEWAY_SENDER_PHONE": "+84 28 1234 5678",
        "GATEWAY_SENDER_WEBSITE": "https://first.vn",
        **(extra or {}),
    }


def dkim_key(tmp: Path, kind: str) -> Path:
    """A fresh DKIM private key (PEM) in the temporary directory."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    key = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if kind == "rsa"
        else ed25519.Ed25519PrivateKey.generate()
    )
    path = tmp / f"dkim-{kind}.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


def gateway_count(counts: dict[str, int]) -> int:
    """Messages from the gateway: every envelope sender but the baseline's."""
    return sum(v for k, v in counts.items() if k != RAW_SENDER)


def dkim_cost_table(n: int) -> dict[str, float] | None:
    """bench/dkim_cost.py's measure(n), when that file is there."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        from dkim_cost import measure  # type: ignore[import-not-found]
    except ImportError:
        return None
    return measure(n)


# --------------------------------------------------------------------------- the sink


RECIPIENT = re.compile(r"([a-z]+)(\d{1,8})@example\.vn")
OTHER_RECIPIENTS_KEPT = 10_000  # addresses outside that pattern counted one by one, at most


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
    """The sink process seen from the benchmark: start, stats(), stop."""

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
            raise SystemExit("send_path: the SMTP sink did not start within 30 s")
        self.port: int = ready_recv.recv()

    def stats(self) -> dict[str, Any]:
        self._conn.send("stats")
        return self._conn.recv()

    def faults(self, on: bool) -> None:
        """Turn fault injection (FAIL_RATE 451s, DROP_RATE dropped DATA) on or off."""
        self._conn.send("faults on" if on else "faults off")
        self._conn.recv()

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


# --------------------------------------------------------------------------- profiling


class Profiling:
    """Optional profiler around the gateway phases; collects text reports."""

    def __init__(self, kind: str | None, top: int, out_dir: Path | None) -> None:
        self.kind = kind
        self.top = top
        self.out_dir = out_dir
        self.reports: list[str] = []
        if kind == "pyinstrument":
            try:
                import pyinstrument  # noqa: F401
            except ImportError:
                raise SystemExit(
                    "send_path: --profile pyinstrument needs `.venv/bin/pip install pyinstrument`"
                ) from None
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def phase(self, name: str, n: int) -> Iterator[None]:
        if self.kind is None:
            yield
            return
        if self.kind == "cprofile":
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.enable()
            try:
                yield
            finally:
                prof.disable()
            if self.out_dir is not None:
                prof.dump_stats(str(self.out_dir / f"{name}.prof"))
            self.reports.append(_cprofile_report(pstats.Stats(prof), name, n, self.top))
            return
        from pyinstrument import Profiler

        prof = Profiler(interval=0.0005, async_mode="enabled")
        prof.start()
        try:
            yield
        finally:
            prof.stop()
        if self.out_dir is not None:
            (self.out_dir / f"{name}.html").write_text(prof.output_html(), encoding="utf-8")
        text = prof.output_text(unicode=True, color=False, show_all=False)
        self.reports.append(f"=== pyinstrument: {name} (N={n}) ===\n{text}")


def _cprofile_report(stats: Any, name: str, n: int, top: int) -> str:
    """Top functions by cumulative time, with microseconds per message."""
    rows = []
    for (file, line, func), (_cc, calls, tottime, cumtime, _callers) in stats.stats.items():
        rows.append((cumtime, tottime, calls, _where(file, line, func)))
    rows.sort(reverse=True)
    total = max((r[0] for r in rows), default=0.0)
    out = io.StringIO()
    out.write(f"=== cProfile: {name} (N={n}, {total:.2f} s profiled) ===\n")
    out.write(f"{'cum us/msg':>10} {'self us/msg':>11} {'calls/msg':>9}  function\n")
    shown = 0
    for cumtime, tottime, calls, where in rows:
        if where.startswith(("<", "asyncio/events.py", "bench/")) and shown:
            continue  # loop plumbing: every coroutine step runs through it
        out.write(
            f"{1e6 * cumtime / n:10.1f} {1e6 * tottime / n:11.1f} {calls / n:9.2f}  {where}\n"
        )
        shown += 1
        if shown >= top:
            break
    out.write(f"--- top {top // 2} by self time ---\n")
    for cumtime, tottime, calls, where in sorted(rows, key=lambda r: r[1], reverse=True)[
        : top // 2
    ]:
        out.write(
            f"{1e6 * cumtime / n:10.1f} {1e6 * tottime / n:11.1f} {calls / n:9.2f}  {where}\n"
        )
    return out.getvalue()


def _where(file: str, line: int, func: str) -> str:
    if file == "~":
        return func  # a builtin
    for marker in ("site-packages/", "/lib/python3.", "/work/main/"):
        if marker in file:
            file = file.split(marker, 1)[1]
            if marker == "/lib/python3.":
                file = file.split("/", 1)[1]
            break
    return f"{file}:{line}({func})"


# --------------------------------------------------------------------------- phases


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
            raise SystemExit(f"send_path: the template does not pass the scan: {rendered.findings}")
        messages.append((to, rendered.raw))
    return messages


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


async def setup_database(env: dict[str, str], tmp: Path, n: int) -> float:
    """One topic and N subscribed contacts through the public import (untimed)."""
    path = tmp / "contacts.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["email", "name", "language"])
        for i in range(n):
            writer.writerow([contact_email(i), contact_name(i), "vi"])
    t0 = time.perf_counter()
    async with Gateway.from_env(env) as gw:
        await gw.add_topic(TOPIC, "Tin tức")
        report = await gw.import_contacts(path, subscribe=[TOPIC])
    if report.bad_rows or report.subscribed != n:
        raise SystemExit(f"send_path: contact import went wrong: {report.as_dict()}")
    return time.perf_counter() - t0


def copy_database(src: Path, dst: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        if (src.parent / (src.name + suffix)).exists():
            shutil.copyfile(src.parent / (src.name + suffix), dst.parent / (dst.name + suffix))


async def deliver_all(gw: Gateway, retries: bool) -> dict[str, int]:
    """`deliver(until_idle=True)`; with `retries`, again and again (sleeping until the next
    retry is due) until nothing waits any more. Returns the summed worker stats."""
    total: dict[str, int] = {}
    while True:
        stats = (await gw.deliver(until_idle=True)).as_dict()
        for key, value in stats.items():
            total[key] = total.get(key, 0) + value
        if not retries:
            return total
        due = await gw.store.next_due()
        if due is None:
            return total
        wait = due - time.time()
        if wait > 60:
            return total  # not a retry of this run: the check below reports what is missing
        await asyncio.sleep(max(wait, 0.0))


async def gateway_mode(
    mode: str,
    env: dict[str, str],
    n: int,
    concurrency: int,
    batch: int,
    sink: Sink,
    profiling: Profiling,
    faults: bool = False,
    dkim: str | None = None,
) -> dict[str, Any]:
    requests = [
        SendRequest(contact_email(i), SUBJECT, HTML, None, "marketing", TOPIC) for i in range(n)
    ]
    failures: list[str] = []
    async with Gateway.from_env(env, concurrency=concurrency) as gw:
        results = []
        with Window(sink) as accept, profiling.phase(f"accept-{mode}", n):
            if mode == "send":
                send = gw.send
                for r in requests:
                    results.append(
                        await send(r.to, r.subject, r.html, category=r.category, topic=r.topic)
                    )
            else:
                for start in range(0, n, batch):
                    results += await gw.send_many(requests[start : start + batch])
        not_queued = [r for r in results if r.status != "queued"]
        if len(results) != n or not_queued:
            failures.append(
                f"{mode}: {len(results) - len(not_queued)}/{n} queued; first refusal: "
                f"{not_queued[0].as_dict() if not_queued else None}"
            )
        size = await gw.store.db.fetch_val("SELECT avg(length(raw)) FROM outbox")
        if faults:
            sink.faults(True)
        try:
            with Window(sink) as deliver, profiling.phase(f"deliver-{mode}", n):
                stats = await deliver_all(gw, retries=faults)
        finally:
            if faults:
                sink.faults(False)
    got = gateway_count(deliver.sink_counts)
    signed = deliver.sink_faults.get("signed", 0)
    if stats["sent"] != n:
        failures.append(f"{mode}: the worker reports {stats}, not {n} sent")
    if got != n:
        failures.append(f"{mode}: the sink received {got} messages from the gateway, not {n}")
    if dkim and signed != got:
        failures.append(f"{mode}: {signed} of {got} messages carried a DKIM-Signature")
    extra: dict[str, Any] = {}
    if faults:
        extra["faults_injected"] = {
            k: v for k, v in deliver.sink_faults.items() if k in ("fail", "drop_data")
        }
        extra["retries"] = stats.get("retried", 0)
    if dkim:
        extra["sink_signed"] = signed
    return {
        "accept_seconds": accept.seconds,
        "accept_us_per_msg": 1e6 * accept.seconds / n,
        "accept_cpu_pct": round(100 * accept.cpu / accept.seconds, 1),
        "accept_cpu_us_per_msg": round(1e6 * accept.cpu / n, 1),
        "delivery_seconds": deliver.seconds,
        "delivery_rate": n / deliver.seconds,
        "delivery_usage": deliver.usage(n),
        "sink_received": got,
        "worker": stats,
        "avg_message_bytes": round(size or 0),
        **extra,
        "failures": failures,
    }


# --------------------------------------------------------------------------- main


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="send_path.py",
        description=__doc__.split("\n\n", 1)[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--n", type=int, default=5000, help="messages per phase (default 5000)")
    parser.add_argument(
        "--concurrency",
        "-c",
        type=int,
        default=4,
        help="SMTP connections, for the baseline and the gateway alike (default 4)",
    )
    parser.add_argument("--batch", type=int, default=500, help="send_many batch size (default 500)")
    parser.add_argument(
        "--sink-loop",
        choices=("uvloop", "asyncio"),
        default="uvloop" if _has_uvloop() else "asyncio",
        help="event loop of the sink process (default uvloop when installed: the faster the "
        "sink, the more the baseline measures the client rather than the sink)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    parser.add_argument(
        "--profile",
        choices=("cprofile", "pyinstrument"),
        help="profile the gateway's accept and delivery phases (slows them down)",
    )
    parser.add_argument(
        "--profile-top", type=int, default=30, help="functions shown per profile (default 30)"
    )
    parser.add_argument(
        "--profile-out",
        type=Path,
        help="also write the profiles here (.prof for snakeviz/pstats, .html for pyinstrument)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (databases, CSV)"
    )
    parser.add_argument(
        "--faults",
        action="store_true",
        help=f"gateway phases against a sink answering {FAIL_RATE:.0%}% of DATA with 451 and "
        f"dropping {DROP_RATE:.0%}% of connections mid-DATA (the raw baseline stays clean)",
    )
    parser.add_argument(
        "--fault-seed", type=int, default=1, help="seed of the sink's fault draws (default 1)"
    )
    parser.add_argument(
        "--dkim",
        choices=("rsa", "ed25519"),
        help="DKIM-sign the gateway's mail with a fresh RSA-2048 or Ed25519 key, and print "
        "the per-signature cost table of bench/dkim_cost.py",
    )
    args = parser.parse_args(argv)
    if args.n < 1 or args.concurrency < 1 or args.batch < 1:
        parser.error("--n, --concurrency and --batch must be at least 1")
    return args


async def run(args: argparse.Namespace, sink: Sink, tmp: Path, say: Callable[[str], None]):
    n, c = args.n, args.concurrency
    profiling = Profiling(args.profile, args.profile_top, args.profile_out)
    extra: dict[str, str] = {}
    if args.faults:
        extra.update(GATEWAY_RETRY_SCHEDULE=FAULT_RETRY_SCHEDULE, GATEWAY_RETRY_MAX_AGE="1h")
    if args.dkim:
        say(f"generating a {args.dkim} DKIM key ...")
        extra.update(
            GATEWAY_DKIM_DOMAIN=DKIM_DOMAIN,
            GATEWAY_DKIM_SELECTOR=DKIM_SELECTOR,
            GATEWAY_DKIM_KEY_FILE=str(dkim_key(tmp, args.dkim)),
        )
    base_env = gateway_env(tmp, "base.db", sink.port, extra)

    say(f"rendering {n} baseline messages and importing {n} contacts (untimed) ...")
    raw_messages = build_raw_messages(Settings.from_env(base_env), n)
    raw_size = sum(len(m) for _, m in raw_messages) / n
    setup_seconds = await setup_database(base_env, tmp, n)

    say(f"raw baseline: aiosmtplib, {c} connections ...")
    clients: list[aiosmtplib.SMTP] = []
    with Window(sink) as raw:
        await raw_baseline(sink.port, raw_messages, c, clients)
    await asyncio.gather(*(client.quit() for client in clients))
    raw_got = raw.sink_counts.get(RAW_SENDER, 0)
    del raw_messages
    raw_rate = n / raw.seconds

    modes: dict[str, dict[str, Any]] = {}
    for mode in ("send", "send_many"):
        copy_database(tmp / "base.db", tmp / f"{mode}.db")
        say(f"gateway: accept with {mode}, then deliver ...")
        modes[mode] = await gateway_mode(
            mode,
            gateway_env(tmp, f"{mode}.db", sink.port, extra),
            n,
            c,
            args.batch,
            sink,
            profiling,
            faults=args.faults,
            dkim=args.dkim,
        )
    failures = [f for m in modes.values() for f in m.pop("failures")]
    if raw_got != n:
        failures.append(f"raw: the sink received {raw_got} baseline messages, not {n}")
    result: dict[str, Any] = {
        "n": n,
        "concurrency": c,
        "batch": args.batch,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "commit": _commit(),
        "profiled": args.profile,
        "sink_loop": args.sink_loop,
        "faults": (
            {
                "fail_rate": FAIL_RATE,
                "drop_data_rate": DROP_RATE,
                "seed": args.fault_seed,
                "retry_schedule": FAULT_RETRY_SCHEDULE,
            }
            if args.faults
            else None
        ),
        "dkim": args.dkim,
        "setup_seconds": round(setup_seconds, 2),
        "raw": {
            "seconds": raw.seconds,
            "rate": raw_rate,
            "avg_message_bytes": round(raw_size),
            **raw.usage(n),
        },
    }
    for mode, m in modes.items():
        e2e = n / (m["accept_seconds"] + m["delivery_seconds"])
        m["delivery_ratio"] = m["delivery_rate"] / raw_rate
        m["end_to_end_rate"] = e2e
        m["end_to_end_ratio"] = e2e / raw_rate
        result[mode] = m
    if args.dkim:
        say("DKIM signature cost (bench/dkim_cost.py) ...")
        result["dkim_cost"] = dkim_cost_table(n)
    result["ok"] = not failures
    result["failures"] = failures
    return result, profiling.reports


def _commit() -> str | None:
    """The gateway's git commit (with +dirty when gateway/ has local changes), if known."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "gateway"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return None
    return (head + ("+dirty" if dirty else "")) or None


def human(r: dict[str, Any]) -> str:
    raw = r["raw"]

    def cpu(u: dict[str, float]) -> str:
        return (
            f"cpu client {u['cpu_client_pct']:.0f}% = {u['cpu_client_us_per_msg']:.0f} us/msg,"
            f" sink {u['cpu_sink_pct']:.0f}% = {u['cpu_sink_us_per_msg']:.0f} us/msg"
        )

    lines = [
        f"send path: N={r['n']} concurrency={r['concurrency']} batch={r['batch']}"
        f" cores={r['cores']} python={r['python']} sink loop={r['sink_loop']}"
        f" commit={r['commit']}"
        + (
            f"  [PROFILED with {r['profiled']}: rates are not representative]"
            if r["profiled"]
            else ""
        ),
        f"  raw aiosmtplib    {raw['rate']:8.0f} msg/s   {raw['seconds']:6.2f} s"
        f"  {raw['avg_message_bytes']} B/msg  {cpu(raw)}",
    ]
    faults = r.get("faults")
    if faults:
        lines.insert(
            1,
            f"  faults in the gateway phases: {faults['fail_rate']:.0%} of DATA answered 451,"
            f" {faults['drop_data_rate']:.0%} dropped after the data (seed {faults['seed']});"
            f" retry schedule {faults['retry_schedule']} s; the raw baseline ran clean",
        )
    if r.get("dkim"):
        lines.insert(1, f"  DKIM: gateway mail signed with a fresh {r['dkim']} key; raw unsigned")
    for mode in ("send", "send_many"):
        m = r[mode]
        lines += [
            f"  gateway, accept with {mode}:",
            f"    accept          {m['accept_us_per_msg']:8.0f} us/msg  {m['accept_seconds']:6.2f} s"
            f"  cpu {m['accept_cpu_pct']:.0f}% = {m['accept_cpu_us_per_msg']:.0f} us/msg",
            f"    delivery        {m['delivery_rate']:8.0f} msg/s   {m['delivery_seconds']:6.2f} s"
            f"  {m['avg_message_bytes']} B/msg  {cpu(m['delivery_usage'])}",
            f"    delivery/raw    {m['delivery_ratio']:8.2f}          target >= 0.8"
            + (" (for a clean run)" if faults else ""),
            f"    (accept+delivery)/raw {m['end_to_end_ratio']:4.2f}"
            f"  = {m['end_to_end_rate']:.0f} msg/s        target >= 0.6",
        ]
        if faults:
            injected = m["faults_injected"]
            lines.append(
                f"    faults          {injected['fail']} x 451, {injected['drop_data']} dropped"
                f" mid-DATA; {m['retries']} retries; delivered {m['sink_received']}/{r['n']}"
            )
        if r.get("dkim"):
            lines.append(f"    DKIM-signed     {m['sink_signed']}/{m['sink_received']}")
    cost = r.get("dkim_cost", False)
    if cost:
        lines += [
            f"  DKIM signature cost (bench/dkim_cost.py, {int(cost['message_bytes'])}-byte"
            " message, us per signature; messages/s on one core):",
            f"    dkimpy alone, RSA-2048   {cost['dkimpy_rsa2048_us']:8.0f}"
            f"   {1e6 / cost['dkimpy_rsa2048_us']:8.0f}/s",
            f"    gateway.dkim, RSA-2048   {cost['gateway_rsa2048_us']:8.0f}"
            f"   {1e6 / cost['gateway_rsa2048_us']:8.0f}/s",
            f"    gateway.dkim, Ed25519    {cost['gateway_ed25519_us']:8.0f}"
            f"   {1e6 / cost['gateway_ed25519_us']:8.0f}/s",
        ]
    elif cost is None:
        lines.append("  DKIM signature cost: bench/dkim_cost.py not found")
    lines.append(
        "  sink check: "
        + ("OK: exactly N baseline and N gateway messages per phase" if r["ok"] else "FAILED")
    )
    lines += [f"  FAILURE: {f}" for f in r["failures"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for key in list(os.environ):
        if key.startswith("GATEWAY_"):
            del os.environ[key]  # the run's settings are all given explicitly
    report_out = sys.stderr if args.json else sys.stdout

    def say(text: str) -> None:
        if not args.json:
            print(text, file=sys.stderr, flush=True)

    sink = Sink(args.sink_loop, args.fault_seed)
    tmp = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    cwd = os.getcwd()
    os.chdir(tmp)  # anything the gateway writes relative to cwd lands in the temp dir
    try:
        result, reports = asyncio.run(run(args, sink, tmp, say))
    finally:
        os.chdir(cwd)
        sink.stop()
        if args.keep:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    for report in reports:
        print(report, file=report_out)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        print(human(result))
    if not result["ok"]:
        print("send_path: FAILED: " + "; ".join(result["failures"]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

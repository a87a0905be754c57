"""Benchmark of SMTP submission: an application's mail through the gateway's listener
against the same messages sent straight to the sink with raw aiosmtplib, in one run.

Run it with the project's virtualenv (the package must be installed):

    .venv/bin/python bench/submission.py                   # N=2000, 4 connections
    .venv/bin/python bench/submission.py --n 500           # quicker
    .venv/bin/python bench/submission.py --category marketing --dkim rsa
    .venv/bin/python bench/submission.py --json            # one JSON object with every figure

What happens, in order:

1. An SMTP sink (aiosmtpd, bench/_sink.py) starts in a child process on 127.0.0.1, port 0.
   It accepts every message and throws it away, counting messages per envelope sender and
   per recipient. The baseline and the gateway send to this same sink.

2. N messages are built beforehand (untimed) as an application builds them with Python's
   email package: From shop@first.vn, one recipient each (kh000000@example.vn, ...),
   multipart/alternative Vietnamese text and HTML, UTF-8, quoted-printable; with
   `--category marketing` they carry `X-Gateway-Category: marketing` and
   `X-Gateway-Topic: news` (and N contacts are imported and subscribed, untimed).

3. Raw baseline: aiosmtplib sends those same message bytes straight to the sink over C
   persistent connections, no TLS (the timed window includes opening the connections).

4. Gateway: `gateway serve` runs as a child process (its web port and the submission
   listener on free ports, GATEWAY_SUBMISSION_SMTP, a self-signed certificate made with
   `cryptography`, its delivery worker in the same process, a fresh SQLite database with a
   send-scoped key made beforehand). The timed window: C aiosmtplib connections, each
   with STARTTLS (verifying the certificate) and AUTH PLAIN with the key, as an application
   would, submit the N messages (each answered 250 after accept wrote it to the outbox);
   the window ends when the sink has received N messages from the gateway (worker, fresh
   Message-ID, DKIM signature with --dkim, delivery over SMTP). End to end.

Figures (ratios are against the raw baseline of the same run):
  raw rate                 N / raw time
  submitted rate           N / time until the last 250 reply
  end-to-end rate          N / time until the sink had all N gateway messages
  end-to-end ratio         end-to-end rate / raw rate
  cpu                      CPU time over wall time, and per message, of this process (the
                           clients), of the `gateway serve` process, and of the sink. On a
                           2-core machine the three share the cores; the core count is printed
                           and a note says when other processes took a sizeable share.

Only 127.0.0.1 is used. Exit status 1 when a submission was refused, or the sink did not
receive exactly one message per recipient from the gateway (or from the baseline).
"""

from __future__ import annotations

import argparse
import asyncio
import email.policy
import email.utils
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
from _common import (
    HOST,
    RAW_SENDER,
    TOPIC,
    commit,
    contact_email,
    contact_name,
    disturbed,
    dkim_key,
    doc_parser,
    fail,
    finish,
    gateway_env,
    has_uvloop,
    outcome,
    scratch,
    speaker,
    without_gateway_env,
    write_contacts_csv,
)
from _pg import TESTS
from _proc import cpu_busy, other_pct, stat_cpu
from _sink import (
    Sink,
    Window,
    gateway_count,
    raw_window,
    recipients_ok,
    recipients_problem,
)

from gateway import Gateway

APP_SENDER = "shop@first.vn"  # the application's From and envelope sender
KEY_NAME = "shop"
DKIM_DOMAIN, DKIM_SELECTOR = "first.vn", "bench"
STALL_SECONDS = 60  # the end-to-end wait gives up after this long without progress

TEXT = """\
Xin chào {name},

Cảm ơn bạn đã đặt hàng tại Cửa hàng An. Đơn hàng #{order} gồm áo khoác mùa đông (1),
giày thể thao (1) và khăn len (2), tổng cộng 1.250.000 đồng, sẽ được giao trong 2 ngày
tới địa chỉ bạn đã chọn. Bạn có thể theo dõi đơn hàng tại https://first.vn/don-hang.

Trân trọng,
Đội ngũ chăm sóc khách hàng
"""
HTML = """\
<html><body>
<p>Xin chào {name},</p>
<p>Cảm ơn bạn đã đặt hàng tại <b>Cửa hàng An</b>. Đơn hàng <b>#{order}</b> gồm áo khoác mùa
đông (1), giày thể thao (1) và khăn len (2), tổng cộng <b>1.250.000 đồng</b>, sẽ được giao
trong 2 ngày tới địa chỉ bạn đã chọn.</p>
<p><a href="https://first.vn/don-hang">Theo dõi đơn hàng</a></p>
<p>Trân trọng,<br>Đội ngũ chăm sóc khách hàng</p>
</body></html>
"""


# --------------------------------------------------------------------------- inputs


def app_messages(n: int, category: str) -> list[tuple[str, bytes]]:
    """N (recipient, message bytes) pairs as an application builds them (untimed)."""
    messages = []
    for i in range(n):
        to = contact_email(i)
        name = contact_name(i)
        msg = EmailMessage()
        msg["From"] = f"Cửa hàng An <{APP_SENDER}>"
        msg["To"] = f"{name} <{to}>"
        msg["Subject"] = f"Đơn hàng #{100000 + i} đã được xác nhận"
        msg["Date"] = email.utils.formatdate(localtime=False)
        msg["Message-ID"] = email.utils.make_msgid(domain="app.first.vn")
        if category == "marketing":
            msg["X-Gateway-Category"] = "marketing"
            msg["X-Gateway-Topic"] = TOPIC
        msg.set_content(TEXT.format(name=name, order=100000 + i), cte="quoted-printable")
        msg.add_alternative(
            HTML.format(name=name, order=100000 + i), subtype="html", cte="quoted-printable"
        )
        messages.append((to, msg.as_bytes(policy=email.policy.SMTP)))
    return messages


def certificate(tmp: Path) -> Any:
    """tests/tls.py's throwaway CA and server certificate for 127.0.0.1, written into tmp:
    the gateway serves `cert_file`/`key_file`, the clients trust `client_context()`."""
    sys.path.insert(0, str(TESTS))
    try:
        import tls  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(TESTS))
    return tls.certificates(tmp)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- the gateway


async def setup_gateway(env: dict[str, str], tmp: Path, n: int, category: str) -> str:
    """The database of the run: a topic, a send-scoped key (returned), and for marketing N
    subscribed contacts (untimed)."""
    async with Gateway.from_env(env) as gw:
        await gw.add_topic(TOPIC, "Tin tức")
        if category == "marketing":
            path = tmp / "contacts.csv"
            write_contacts_csv(path, n)
            report = await gw.import_contacts(path, subscribe=[TOPIC])
            if report.bad_rows or report.subscribed != n:
                fail(f"contact import went wrong: {report.as_dict()}")
        return await gw.create_api_key(KEY_NAME, "send")


class Served:
    """`gateway serve` in a child process, with its submission listener on `port`."""

    def __init__(self, env: dict[str, str], tmp: Path, port: int) -> None:
        self.port = port
        self.log_path = tmp / "serve.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--port", str(free_port())],
            env={**without_gateway_env(), **env},
            cwd=tmp,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log_tail(self, lines: int = 15) -> str:
        text = self.log_path.read_text("utf-8", "replace").splitlines()
        return "\n".join(text[-lines:])

    async def ready(self, timeout: float = 60) -> None:
        """Wait until the listener answers with its 220 greeting."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                fail(f"gateway serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                reader, writer = await asyncio.open_connection(HOST, self.port)
                try:
                    greeting = await asyncio.wait_for(reader.readline(), 5)
                finally:
                    writer.close()
                if greeting.startswith(b"220"):
                    return
            except (OSError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                fail(f"the submission listener did not answer within {timeout:g} s")
            await asyncio.sleep(0.1)

    def cpu(self) -> float:
        return stat_cpu(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


async def submit(
    port: int,
    context: ssl.SSLContext,
    key: str,
    messages: list[tuple[str, bytes]],
    concurrency: int,
    clients: list[aiosmtplib.SMTP],
    refused: list[str],
) -> None:
    """C connections, each STARTTLS + AUTH, sending until the messages run out."""
    work = iter(messages)

    async def worker() -> None:
        client = aiosmtplib.SMTP(
            hostname=HOST,
            port=port,
            local_hostname="app.first.vn",
            start_tls=True,
            tls_context=context,
            timeout=60,
        )
        await client.connect()
        clients.append(client)
        await client.login(KEY_NAME, key)
        for rcpt, data in work:
            try:
                errors, reply = await client.sendmail(APP_SENDER, [rcpt], data)
            except aiosmtplib.SMTPException as exc:
                refused.append(f"{rcpt}: {exc}")
                continue
            if errors or not reply.startswith("2.0.0"):
                refused.append(f"{rcpt}: {errors or reply}")

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(messages)))))


async def wait_for_sink(sink: Sink, n: int, base: int) -> int:
    """Poll the sink until it has N more gateway messages than `base`, or no progress for
    STALL_SECONDS; the count reached."""
    last, since = -1, time.monotonic()
    while True:
        got = gateway_count(sink.stats()["counts"]) - base
        if got >= n:
            return got
        if got != last:
            last, since = got, time.monotonic()
        elif time.monotonic() - since > STALL_SECONDS:
            return got
        await asyncio.sleep(0.01)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = doc_parser("submission.py", __doc__)
    parser.add_argument("--n", type=int, default=2000, help="messages (default 2000)")
    parser.add_argument(
        "--concurrency",
        "-c",
        type=int,
        default=4,
        help="SMTP connections, for the baseline and the application alike (default 4)",
    )
    parser.add_argument(
        "--category",
        choices=("transactional", "marketing"),
        default="transactional",
        help="what the application sends (default transactional; marketing adds the"
        " X-Gateway-* headers and imports N subscribed contacts first)",
    )
    parser.add_argument(
        "--dkim",
        choices=("rsa", "ed25519"),
        help="the gateway DKIM-signs with a fresh RSA-2048 or Ed25519 key",
    )
    parser.add_argument(
        "--sink-loop",
        choices=("uvloop", "asyncio"),
        default="uvloop" if has_uvloop() else "asyncio",
        help="event loop of the sink process (default uvloop when installed)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (database, log)"
    )
    args = parser.parse_args(argv)
    if args.n < 1 or args.concurrency < 1:
        parser.error("--n and --concurrency must be at least 1")
    return args


async def run(
    args: argparse.Namespace, sink: Sink, tmp: Path, say: Callable[[str], None]
) -> tuple[dict[str, Any], list[str]]:
    n, c = args.n, args.concurrency
    failures: list[str] = []
    say(f"building {n} application messages (untimed) ...")
    messages = app_messages(n, args.category)
    size = sum(len(m) for _, m in messages) / n

    say(f"raw baseline: aiosmtplib straight to the sink, {c} connections ...")
    raw_messages = [(contact_email(i, "raw"), data) for i, (_, data) in enumerate(messages)]
    raw = await raw_window(sink, raw_messages, c)
    del raw_messages
    raw_got = raw.sink_counts.get(RAW_SENDER, 0)
    raw_rcpts = sink.recipients("raw", n)
    if raw_got != n or not recipients_ok(raw_rcpts):
        failures.append(f"raw: {recipients_problem(raw_rcpts)}")
    raw_rate = n / raw.seconds

    certs = certificate(tmp)
    submission_port = free_port()
    extra = {
        "GATEWAY_SUBMISSION_SMTP": f"{HOST}:{submission_port}",
        "GATEWAY_TLS_CERT": str(certs.cert_file),
        "GATEWAY_TLS_KEY": str(certs.key_file),
    }
    if args.dkim:
        say(f"generating a {args.dkim} DKIM key ...")
        extra.update(
            GATEWAY_DKIM_DOMAIN=DKIM_DOMAIN,
            GATEWAY_DKIM_SELECTOR=DKIM_SELECTOR,
            GATEWAY_DKIM_KEY_FILE=str(dkim_key(tmp, args.dkim)),
        )
    env = gateway_env(tmp, "gateway.db", sink.port, extra)
    say("setting up the gateway's database (untimed) ...")
    key = await setup_gateway(env, tmp, n, args.category)
    context = certs.client_context()

    served = Served(env, tmp, submission_port)
    try:
        await served.ready()
        say(f"gateway: {c} connections with STARTTLS + AUTH submit, the worker delivers ...")
        base = gateway_count(sink.stats()["counts"])
        clients: list[aiosmtplib.SMTP] = []
        refused: list[str] = []
        gw_cpu0, busy0 = served.cpu(), cpu_busy()
        with Window(sink) as window:
            t0 = time.perf_counter()
            await submit(submission_port, context, key, messages, c, clients, refused)
            submitted_seconds = time.perf_counter() - t0
            got = await wait_for_sink(sink, n, base)
        gw_cpu = served.cpu() - gw_cpu0
        busy = cpu_busy() - busy0
        await asyncio.gather(*(client.quit() for client in clients), return_exceptions=True)
    finally:
        served.stop()
    signed = window.sink_faults.get("signed", 0)
    gw_rcpts = sink.recipients("kh", n)
    if refused:
        failures.append(f"gateway: {len(refused)} submissions refused; first: {refused[0]}")
    if got != n or not recipients_ok(gw_rcpts):
        failures.append(
            f"gateway: the sink received {got} of {n} messages; {recipients_problem(gw_rcpts)}"
        )
    if args.dkim and signed != got:
        failures.append(f"gateway: {signed} of {got} messages carried a DKIM-Signature")
    seconds = window.seconds
    notes = []
    other = other_pct(busy, window.cpu + window.sink_cpu + gw_cpu, seconds)
    note = disturbed("end-to-end window", other)
    if note:
        notes.append(note)
    e2e_rate = n / seconds
    result: dict[str, Any] = {
        "n": n,
        "concurrency": c,
        "category": args.category,
        "dkim": args.dkim,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "commit": commit(),
        "sink_loop": args.sink_loop,
        "avg_message_bytes": round(size),
        "raw": {"seconds": raw.seconds, "rate": raw_rate, **raw.usage(n)},
        "gateway": {
            "submitted_seconds": submitted_seconds,
            "submitted_rate": n / submitted_seconds,
            "end_to_end_seconds": seconds,
            "end_to_end_rate": e2e_rate,
            "end_to_end_ratio": e2e_rate / raw_rate,
            "sink_received": got,
            "sink_signed": signed,
            **window.usage(n),
            "cpu_gateway_pct": round(100 * gw_cpu / seconds, 1),
            "cpu_gateway_us_per_msg": round(1e6 * gw_cpu / n, 1),
            "other_processes_pct": other,
        },
        "notes": notes,
        "ok": not failures,
        "failures": failures,
    }
    return result, []


def human(r: dict[str, Any]) -> str:
    raw, gw = r["raw"], r["gateway"]

    def cpu(u: dict[str, float]) -> str:
        return (
            f"cpu client {u['cpu_client_pct']:.0f}% = {u['cpu_client_us_per_msg']:.0f} us/msg,"
            f" sink {u['cpu_sink_pct']:.0f}% = {u['cpu_sink_us_per_msg']:.0f} us/msg"
        )

    lines = [
        f"SMTP submission: N={r['n']} concurrency={r['concurrency']} category={r['category']}"
        f" dkim={r['dkim'] or 'off'} cores={r['cores']} python={r['python']}"
        f" sink loop={r['sink_loop']} commit={r['commit']}",
        f"  application messages: {r['avg_message_bytes']} B on average"
        " (multipart/alternative, UTF-8, quoted-printable)",
        f"  raw aiosmtplib to the sink     {raw['rate']:8.0f} msg/s  {raw['seconds']:6.2f} s"
        f"  {cpu(raw)}",
        "  through the gateway (STARTTLS + AUTH, accept, worker, delivery):",
        f"    submitted (last 250)         {gw['submitted_rate']:8.0f} msg/s"
        f"  {gw['submitted_seconds']:6.2f} s",
        f"    end to end (all at the sink) {gw['end_to_end_rate']:8.0f} msg/s"
        f"  {gw['end_to_end_seconds']:6.2f} s  {cpu(gw)},"
        f" gateway serve {gw['cpu_gateway_pct']:.0f}% = {gw['cpu_gateway_us_per_msg']:.0f} us/msg",
        f"    end-to-end / raw             {gw['end_to_end_ratio']:8.2f}",
    ]
    if r["dkim"]:
        lines.append(f"    DKIM-signed                  {gw['sink_signed']}/{gw['sink_received']}")
    lines += outcome(
        r, "OK: exactly one message per recipient, raw and through the gateway", "sink check"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for key in list(os.environ):
        if key.startswith("GATEWAY_"):
            del os.environ[key]  # the run's settings are all given explicitly
    say = speaker(args.json)
    sink = Sink(args.sink_loop, per_recipient=True)
    cwd = os.getcwd()
    try:
        with scratch("gw-bench-submission-", args.keep, say) as tmp:
            os.chdir(tmp)
            try:
                result, reports = asyncio.run(run(args, sink, tmp, say))
            finally:
                os.chdir(cwd)
    finally:
        sink.stop()
    return finish(result, reports, args.json, human)


if __name__ == "__main__":
    sys.exit(main())

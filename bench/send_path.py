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
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _common import (
    HTML,
    RAW_SENDER,
    SUBJECT,
    TOPIC,
    add_profile_flags,
    commit,
    contact_email,
    dkim_key,
    doc_parser,
    fail,
    finish,
    gateway_env,
    has_uvloop,
    outcome,
    scratch,
    speaker,
    write_contacts_csv,
)
from _profile import cprofile_rows, cprofile_table
from _sink import DROP_RATE, FAIL_RATE, Sink, Window, build_raw_messages, gateway_count, raw_window

from gateway import Gateway, SendRequest
from gateway.config import Settings

FAULT_RETRY_SCHEDULE = "0.05,0.1,0.2"
DKIM_DOMAIN, DKIM_SELECTOR = "first.vn", "bench"


def dkim_cost_table(n: int) -> dict[str, float] | None:
    """bench/dkim_cost.py's measure(n), when that file is there."""
    try:
        from dkim_cost import measure  # type: ignore[import-not-found]
    except ImportError:
        return None
    return measure(n)


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
                fail("--profile pyinstrument needs `.venv/bin/pip install pyinstrument`")
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
    rows = cprofile_rows(stats)
    total = max((r[0] for r in rows), default=0.0)
    table = cprofile_table(rows, n, "msg", ("<", "asyncio/events.py", "bench/"), top)
    return f"=== cProfile: {name} (N={n}, {total:.2f} s profiled) ===\n{table}"


# --------------------------------------------------------------------------- phases


async def setup_database(env: dict[str, str], tmp: Path, n: int) -> float:
    """One topic and N subscribed contacts through the public import (untimed)."""
    path = tmp / "contacts.csv"
    write_contacts_csv(path, n)
    t0 = time.perf_counter()
    async with Gateway.from_env(env) as gw:
        await gw.add_topic(TOPIC, "Tin tức")
        report = await gw.import_contacts(path, subscribe=[TOPIC])
    if report.bad_rows or report.subscribed != n:
        fail(f"contact import went wrong: {report.as_dict()}")
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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = doc_parser("send_path.py", __doc__)
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
        default="uvloop" if has_uvloop() else "asyncio",
        help="event loop of the sink process (default uvloop when installed: the faster the "
        "sink, the more the baseline measures the client rather than the sink)",
    )
    add_profile_flags(
        parser,
        ("cprofile", "pyinstrument"),
        "profile the gateway's accept and delivery phases (slows them down)",
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
    raw = await raw_window(sink, raw_messages, c)
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
        "commit": commit(),
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
    lines += outcome(r, "OK: exactly N baseline and N gateway messages per phase", "sink check")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for key in list(os.environ):
        if key.startswith("GATEWAY_"):
            del os.environ[key]  # the run's settings are all given explicitly
    say = speaker(args.json)
    sink = Sink(args.sink_loop, args.fault_seed)
    cwd = os.getcwd()
    try:
        with scratch("gw-bench-", args.keep, say) as tmp:
            os.chdir(tmp)  # anything the gateway writes relative to cwd lands in the temp dir
            try:
                result, reports = asyncio.run(run(args, sink, tmp, say))
            finally:
                os.chdir(cwd)
    finally:
        sink.stop()
    return finish(result, reports, args.json, human)


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark of a campaign: `gateway campaign send ID` against raw aiosmtplib, in one run.

Run it with the project's virtualenv (the package must be installed):

    .venv/bin/python bench/campaign.py                 # N=20,000 subscribed contacts
    .venv/bin/python bench/campaign.py --n 100000
    .venv/bin/python bench/campaign.py --million       # 1,000,000 contacts, with its goals
    .venv/bin/python bench/campaign.py --processes 2   # passed to `campaign send --processes`
    .venv/bin/python bench/campaign.py --json          # one JSON object with every figure
    .venv/bin/python bench/campaign.py --py-spy        # where the campaign process's time goes
    .venv/bin/python bench/campaign.py --database postgresql          # 1, 2, 4 workers on PG
    .venv/bin/python bench/campaign.py --database postgresql --workers 1,2,4,8
    .venv/bin/python bench/campaign.py --database postgresql://postgres@127.0.0.1:5432/postgres
    .venv/bin/python bench/campaign.py --workers 1,2                  # several workers, SQLite

What happens, in order:

1. An SMTP sink like bench/send_path.py's (aiosmtpd in a child process on 127.0.0.1, port
   0) starts. It discards every message and counts messages and bytes per envelope sender
   (the gateway's is a VERP return path: everything but the baseline's sender counts as the
   gateway's), and messages per recipient in one byte per address, so the checks can say
   that every recipient got exactly one message (1 MiB at a million contacts).

2. Setup (untimed, but every step's time is reported): a fresh SQLite file in a temporary
   directory, made the way a marketer would, with the `gateway` command of the virtualenv
   and GATEWAY_* variables pointing at that file and at the sink:
     gateway init
     gateway topics add news --name "Tin tức"
     gateway contacts import contacts.csv --subscribe news     (--setup import, default)
     gateway campaign create --name ... --topic news --subject ... --html campaign.html
   The CSV of N contacts (email,name,language) is generated first. The import runs
   gw.import_contacts (batched); its time and peak memory are reported. --setup sqlite
   instead inserts contacts, subscriptions and opt-in consent records directly with
   sqlite3 in the same schema after `gateway init` (for when the import is too slow).

3. Campaign (timed): `gateway campaign send ID --json` runs as a subprocess. The window
   opens right before the subprocess is started and closes when it exits, which it does
   when the campaign is done: it includes the interpreter's start, opening the database,
   enqueuing (rendering) the audience in pages and the delivery. While it runs, the
   benchmark samples the sink every 20 ms (first and last gateway message, stalls),
   /proc/PID/status (VmHWM, VmRSS) and the size of the database files. The peak memory is
   the ru_maxrss the kernel reports when the process is reaped (os.wait4), or the sampled
   VmHWM when ru_maxrss cannot be told apart from this process's own peak (Linux carries
   the parent's peak into an exec'd child's ru_maxrss, so the campaign runs before the
   baseline's messages are built, while this process is small).

4. Raw baseline: messages rendered beforehand (untimed) with the gateway's own renderer,
   send_path's template (multipart/alternative, Vietnamese text, marketing footer, List-*
   headers), so they have the size and shape of the campaign's. aiosmtplib sends N of them
   over C persistent connections, one recipient each, C = the gateway's connection count.
   At most --raw-pool distinct bodies are rendered (default 20,000) and reused in turn with
   distinct recipients, so a million messages do not need a million renders; the client
   sends the same bytes either way.

Both windows also report the CPU time of each side and of the sink, and how much CPU
other processes on the machine used meanwhile (from /proc/stat): a run disturbed by them
says so in a note.

Checks (exit status 1 when one fails): the sink received exactly N messages from the
gateway and N from the baseline, every recipient of each exactly one; `campaign send` exited
0; `gateway campaign status ID --json` says done with sent == N and nothing else counted.

Figures: raw rate = N / raw time; campaign rate = N / subprocess lifetime; ratio = campaign
rate / raw rate (target >= 0.6); peak memory of the campaign process (target < 150 MiB at
1,000,000 contacts). `campaign send` may have no --concurrency flag: then the gateway uses
its default of 4 connections, the baseline uses 4 as well, and the report says so. Likewise
--processes N is passed to `campaign send` only when its --help lists the flag.

The 1,000,000-contact goals (--million is --n 1000000; every run prints them, marked with its
own N): `gateway contacts import` + `gateway campaign send` under 10 minutes (the sum of the
two processes' lifetimes; CSV writing, init and campaign create are left out and reported
apart), the send's peak RSS under 150 MB (MB = 10^6 bytes; with a process pool, the larger
of the main process's peak and the sampled peak of the sum of the proportional set sizes of
it and its children, so pages a fork shares count once; the plain RSS sum is printed too),
the import's peak RSS under 100 MB, and the database after the campaign under 1 GB (the
SQLite file with its write-ahead log). Each is printed MET or MISSED.

--py-spy runs py-spy (from the virtualenv) against the campaign process for its whole life
and prints the functions with the most samples, inclusive and self. Its figures are then
marked as profiled. Only 127.0.0.1 is used.

Several workers (--workers 1,2,4; always so on PostgreSQL, where 1,2,4 is the default):
--database postgresql starts a throwaway cluster (tests/pg.py's Cluster: a temp directory,
a free port on 127.0.0.1, fsync off; stopped and removed at the end); --database
postgresql://… uses that server, where the benchmark creates its own databases (gwbench_*)
and drops them. Setup as above, once, into a "base" database (`gateway contacts import`;
--setup sqlite is SQLite only). Then for each worker count W:
  - reset: a fresh copy of the base database (CREATE DATABASE … TEMPLATE base on
    PostgreSQL, a copied file on SQLite): the same N contacts and the same draft campaign;
  - `gateway campaign send ID --detach` (untimed: it only marks the campaign sending);
  - W `gateway worker --until-idle --concurrency C` processes started at once (C default 4,
    so W x C SMTP connections), timed from the start of the first to the exit of the last.
    The workers enqueue the audience themselves (one at a time, under the campaign's lease)
    and deliver it together;
  - checks: the sink got exactly N messages, every recipient exactly once; the workers'
    `sent` counts add up to N; `campaign status` says done, sent N; every worker exited 0.
The raw baseline runs once, after the rounds, with C connections. Printed per round: msg/s,
ratio to raw, the rate between first and last delivery, each worker's exit time, sent count
and peak RSS (ru_maxrss, or the sampled VmHWM when ru_maxrss is this process's), CPU of the
workers, of the PostgreSQL cluster (when the benchmark started it), of the sink and of every
other process on the machine (in % of one core).

On PostgreSQL, per round, what the database did (deltas of the round's database, read before
and after): commits/s and commits, rollbacks, rows fetched, inserted, updated and deleted per
delivered message (pg_stat_database); claims (the outbox's claim statement) per message, rows
per claim and statements per message from pg_stat_statements (the throwaway cluster is
restarted once at the start to load it; a server given by URL is used only when it already
has the extension, else claims are derived from the workers' batch size and the report says
so); CPU microseconds per message of the workers and of PostgreSQL. Then the commit ceiling:
single-row UPDATE commits (synchronous_commit on) from 4 and 16 connections for 2 s each, on
the cluster as the rounds used it (tests/pg.py: fsync off) and again after a restart with
fsync and full_page_writes on. Last, a sizing section: from the round with the most workers
(its CPU per message of workers and PostgreSQL, its commits and claims per message) and the
fsync-on commit ceiling, the messages per second 8 and 32 cores would give, on one machine
(workers and PostgreSQL share the cores) or with PostgreSQL on a machine of its own, and
what limits each: CPU, PostgreSQL's CPU, or commits. A model, stated as such: it assumes
the receiving mail servers are elsewhere and keep up, and that work scales with cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosmtplib
from _common import (
    HTML,
    RAW_SENDER,
    SUBJECT,
    TOPIC,
    commit,
    contact_email,
    contact_name,
    count_list,
    disturbed,
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
from _pg import PgServer, is_postgres
from _proc import (
    Measured,
    cpu_busy,
    descendants,
    file_bytes,
    other_pct,
    own_peak_reset,
    proc_pss,
    proc_status,
    run_measured,
    show,
    threads_cpu,
)
from _profile import collapsed_stacks, short_path
from _sink import (
    Sink,
    Window,
    build_raw_pool,
    gateway_count,
    raw_baseline,
    recipients_ok,
    recipients_problem,
)

from gateway.config import Settings
from gateway.tokens import Signer

VENV_BIN = Path(sys.executable).parent
GATEWAY = VENV_BIN / "gateway"  # the console script a marketer types
PY_SPY = VENV_BIN / "py-spy"
CLI_DEFAULT_CONCURRENCY = 4  # what gateway.cli.main gives a command without --concurrency
RATIO_TARGET = 0.6
MEMORY_TARGET_MIB = 150.0
MEMORY_TARGET_N = 1_000_000
MIB = 1024 * 1024
STALL = 0.2  # seconds without a delivery that count as a stall of the campaign


class Cli:
    """`gateway ...` as a subprocess with the run's environment, in the temp directory."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env = env
        self.cwd = cwd

    def cmd(self, *args: str) -> list[str]:
        return [str(GATEWAY), *args]

    def run(self, *args: str, timeout: float = 600.0, check: bool = True) -> Measured:
        m = run_measured(self.cmd(*args), self.env, self.cwd, timeout)
        if check and (m.returncode != 0 or m.timed_out):
            fail(
                f"`{show(m.cmd)}` failed (exit {m.returncode}"
                f"{', timed out' if m.timed_out else ''}):\n{m.stdout[-2000:]}{m.stderr[-2000:]}"
            )
        return m


def campaign_send_flags(cli: Cli) -> set[str]:
    """Which of the flags the benchmark may pass `gateway campaign send` lists in its help."""
    help_text = cli.run("campaign", "send", "--help").stdout
    return {flag for flag in ("--concurrency", "--processes") if flag in help_text}


# --------------------------------------------------------------------------- setup


def insert_contacts_sqlite(db: Path, settings: Settings, n: int) -> None:
    """The --setup sqlite path: what an import of N new contacts opted in to the topic
    writes (contacts, subscriptions, opt-in consent records), in one transaction."""
    signer = Signer(settings.secret_keys)
    now = time.time()
    con = sqlite3.connect(db)
    try:
        (topic_id,) = con.execute("SELECT id FROM topics WHERE slug = ?", (TOPIC,)).fetchone()
        (start,) = con.execute("SELECT COALESCE(MAX(id), 0) FROM contacts").fetchone()
        with con:
            con.executemany(
                "INSERT INTO contacts (id, uid, email, name, language, status, source,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, 'vi', 'active', 'import', ?, ?)",
                (
                    (
                        start + i + 1,
                        secrets.token_urlsafe(12),
                        contact_email(i),
                        contact_name(i),
                        now,
                        now,
                    )
                    for i in range(n)
                ),
            )
            con.executemany(
                "INSERT INTO subscriptions (contact_id, topic_id, status, created_at,"
                " subscribed_at) VALUES (?, ?, 'subscribed', ?, ?)",
                ((start + i + 1, topic_id, now, now) for i in range(n)),
            )
            con.executemany(
                "INSERT INTO consent_ledger (contact_id, subject, topic_id, action, source,"
                " policy_version, created_at) VALUES (?, ?, ?, 'opt_in', 'import', ?, ?)",
                (
                    (
                        start + i + 1,
                        signer.address_hash(contact_email(i)),
                        topic_id,
                        settings.policy_version,
                        now,
                    )
                    for i in range(n)
                ),
            )
    finally:
        con.close()


def setup(
    cli: Cli,
    tmp: Path,
    db: Path | None,
    settings: Settings,
    n: int,
    how: str,
    say: Callable[[str], None],
) -> tuple[int, dict[str, Any]]:
    """A fresh database with one topic, N subscribed contacts and one draft campaign."""
    figures: dict[str, Any] = {"how": how}
    t0 = time.perf_counter()
    cli.run("init", "--json")
    cli.run("topics", "add", TOPIC, "--name", "Tin tức", "--json")
    figures["init_seconds"] = round(time.perf_counter() - t0, 2)
    if how == "import":
        t0 = time.perf_counter()
        write_contacts_csv(tmp / "contacts.csv", n)
        figures["csv_seconds"] = round(time.perf_counter() - t0, 2)
        say(f"setup: `gateway contacts import` of {n} contacts (untimed) ...")
        m = cli.run(
            "contacts", "import", "contacts.csv", "--subscribe", TOPIC, "--json", timeout=7200
        )
        report = m.json()
        if report["bad_rows"] or report["created"] != n or report["subscribed"] != n:
            fail(f"the contact import went wrong: {str(report)[:2000]}")
        figures["import_seconds"] = round(m.seconds, 2)
        figures["import_rate"] = round(n / m.seconds)
        figures["import_peak_rss_mib"] = round(m.peak_kib()[0] / 1024, 1)
        (tmp / "contacts.csv").unlink()
    else:
        assert db is not None, "--setup sqlite needs a SQLite database"
        say(f"setup: sqlite3 insert of {n} contacts (untimed) ...")
        t0 = time.perf_counter()
        insert_contacts_sqlite(db, settings, n)
        figures["insert_seconds"] = round(time.perf_counter() - t0, 2)
        figures["insert_rate"] = round(n / (time.perf_counter() - t0))
    (tmp / "campaign.html").write_text(HTML, encoding="utf-8")
    m = cli.run(
        "campaign", "create", "--name", f"Bench {n}", "--topic", TOPIC,
        "--subject", SUBJECT, "--html", "campaign.html", "--json",
    )  # fmt: skip
    campaign_id = int(m.json()["id"])
    if db is not None:
        figures["db_mib_before"] = round(file_bytes(db) / MIB, 1)
    return campaign_id, figures


# --------------------------------------------------------------------------- raw baseline


async def raw_phase(port: int, messages: list[tuple[str, bytes]], c: int) -> None:
    clients: list[aiosmtplib.SMTP] = []
    await raw_baseline(port, messages, c, clients)
    await asyncio.gather(*(client.quit() for client in clients))


def raw_round(
    sink: Sink, settings: Settings, n: int, pool: int, c: int, say: Callable[[str], None]
) -> tuple[Window, float, float, dict[str, Any]]:
    """The raw baseline, after the gateway's run (see the docstring: memory): its window,
    average message size, CPU of other processes meanwhile, and what each recipient got."""
    say(f"rendering {min(n, pool)} baseline bodies for {n} messages (untimed) ...")
    messages, raw_size = build_raw_pool(settings, n, pool)
    say(f"raw baseline: aiosmtplib, {n} messages, {c} connections ...")
    sink.recipients("raw", n)
    busy0 = cpu_busy()
    with Window(sink) as raw:
        asyncio.run(raw_phase(sink.port, messages, c))
    raw_other = other_pct(cpu_busy() - busy0, raw.cpu + raw.sink_cpu, raw.seconds)
    del messages
    return raw, raw_size, raw_other, sink.recipients("raw", n)


def raw_figures(
    raw: Window, size: float, other: float, recipients: dict[str, Any], n: int, **more: Any
) -> dict[str, Any]:
    """The baseline's part of the report."""
    return {
        "seconds": round(raw.seconds, 3),
        "rate": round(n / raw.seconds, 1),
        **more,
        "avg_message_bytes": round(size),
        **raw.usage(n),
        "cpu_other_pct": other,
        "recipients": recipients,
    }


# --------------------------------------------------------------------------- the campaign


@dataclass
class Watch:
    """What the benchmark samples while `campaign send` runs."""

    sink: Sink
    t0: float
    db: Path
    base_count: int
    n: int
    first: float | None = None
    last: float | None = None
    count: int = 0
    db_peak: int = 0
    rss_at: dict[str, float] = field(default_factory=dict)  # "10%" -> MiB
    samples: list[tuple[float, int, float]] = field(default_factory=list)
    stalls: int = 0  # gaps of STALL s or more without a delivery, between first and last
    stall_seconds: float = 0.0
    longest_stall: tuple[float, float] = (0.0, 0.0)  # (seconds, started at +s)
    threads_cpu: dict[int, float] = field(default_factory=dict)  # tid -> CPU seconds
    main_tid: int = 0
    tree_rss_peak: float = 0.0  # MiB: the largest sum of VmRSS over the process and its children
    tree_pss_peak: float = 0.0  # MiB: the same with shared pages divided among their sharers
    _next_pss: float = 0.0
    profiled: bool = False  # under --py-spy `pid` is py-spy: its children are the gateway
    _next_sample: float = 0.0

    def final(self, end: float, total: int) -> None:
        """After the exit: messages counted since the last sample arrived before `end`."""
        if total - self.base_count > self.count:
            self.first = self.first or end
            self.last = end
            self.count = total - self.base_count

    def __call__(self, now: float, pid: int) -> None:
        count = gateway_count(self.sink.stats()["counts"]) - self.base_count
        if count > self.count:
            if self.first is None:
                self.first = now
            elif now - self.last >= STALL:  # type: ignore[operator]
                gap = now - self.last  # type: ignore[operator]
                self.stalls += 1
                self.stall_seconds += gap
                if gap > self.longest_stall[0]:
                    self.longest_stall = (round(gap, 2), round(self.last - self.t0, 2))  # type: ignore[operator]
            self.last = now
            self.count = count
        self.db_peak = max(self.db_peak, file_bytes(self.db))
        main, cpu = threads_cpu(pid, under_py_spy=self.profiled)
        self.threads_cpu.update(cpu)  # threads vanish with the process: keep the last seen
        self.main_tid = main or self.main_tid
        # the process itself, or under --py-spy the gateway that py-spy started
        kids = descendants(pid)
        rss = max(proc_status(p).get("VmRSS", 0) for p in (pid, *kids)) / 1024
        tree = (kids if self.profiled else [pid, *kids]) or [pid]
        total = sum(proc_status(p).get("VmRSS", 0) for p in tree) / 1024
        self.tree_rss_peak = max(self.tree_rss_peak, total)
        if now >= self._next_pss:  # smaps_rollup walks the page tables: 5 times a second
            self._next_pss = now + 0.2
            pss = sum(proc_pss(p) for p in tree) / 1024
            self.tree_pss_peak = max(self.tree_pss_peak, pss)
        for pct in (10, 50, 90):
            if f"{pct}%" not in self.rss_at and count >= self.n * pct / 100:
                self.rss_at[f"{pct}%"] = round(rss, 1)
        if now >= self._next_sample:
            self.samples.append((round(now - self.t0, 2), count, round(rss, 1)))
            self._next_sample = now + 1.0


def py_spy_summary(raw_file: Path, top: int, rate: int, n: int) -> tuple[str, dict[str, Any]]:
    """Top functions by inclusive and self samples from py-spy's collapsed stacks, also as
    microseconds of (sampled, non-idle) thread time per message."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    threads: dict[str, int] = {}
    total = waiting = 0
    for frames, count in collapsed_stacks(raw_file):
        labels = []
        while frames and frames[0].startswith(("thread (", "process ")):
            labels.append(frames.pop(0))
        if frames and _is_wait(frames[-1]):
            waiting += count  # blocked in a system call; py-spy cannot always tell
            continue
        total += count
        for label in labels:
            threads[label] = threads.get(label, 0) + count
        names = [_frame(f) for f in frames]
        for name in set(names):
            inclusive[name] = inclusive.get(name, 0) + count
        if names:
            own[names[-1]] = own.get(names[-1], 0) + count
    total = max(total, 1)

    def us(count: int) -> float:
        return 1e6 * count / rate / n

    def row(name: str) -> str:
        i, o = inclusive.get(name, 0), own.get(name, 0)
        return f"{100 * i / total:7.1f} {100 * o / total:7.1f} {us(i):8.0f} {us(o):8.0f}  {name}"

    lines = [
        f"=== py-spy: `campaign send` (N={n}, {total} busy samples at {rate}/s"
        f" = {us(total):.0f} us/msg of thread time; {waiting} more were waits in"
        " epoll/queue/lock calls and are left out) ===",
        "threads: "
        + ", ".join(
            f"{t} {100 * c / total:.0f}%" for t, c in sorted(threads.items(), key=lambda x: -x[1])
        ),
        f"{'incl %':>7} {'self %':>7} {'incl us':>8} {'self us':>8}  function (us per message)",
    ]
    by_incl = sorted(inclusive, key=lambda k: -inclusive[k])
    by_self = sorted(own, key=lambda k: -own[k])
    lines += [row(name) for name in by_incl[:top]]
    lines.append(f"--- top {top // 2} by self samples ---")
    lines += [row(name) for name in by_self[: top // 2]]
    data = {
        "samples": total,
        "waiting_samples": waiting,
        "rate": rate,
        "us_per_msg": round(us(total)),
        "threads": {t: round(100 * c / total, 1) for t, c in threads.items()},
        "top_inclusive": [[k, round(100 * inclusive[k] / total, 1)] for k in by_incl[:top]],
        "top_self": [[k, round(100 * own[k] / total, 1)] for k in by_self[:top]],
    }
    return "\n".join(lines), data


WAIT_CALLS = (".poll(", ".select(", ".get(", ".wait(", ".acquire(", "sleep(")


def _is_wait(frame: str) -> bool:
    """A leaf frame parked in a blocking call (epoll, a queue, a lock): py-spy calls such a
    thread idle only when it can see that it sleeps, which it cannot always (e.g. in a VM)."""
    _, _, where = frame.partition(" (")
    path, _, line = where.rstrip(")").rpartition(":")
    if not line.isdigit():
        return False
    for base in ("", *sys.path):
        source = Path(base, path) if base else Path(path)
        if source.is_file():
            import linecache

            text = linecache.getline(str(source), int(line))
            return any(call in text for call in WAIT_CALLS)
    return False


def _frame(frame: str) -> str:
    """'func (path/to/file.py:123)' -> 'func (file.py)' with site-packages/stdlib trimmed."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = short_path(where.rsplit(":", 1)[0])
    return f"{name} ({path})" if path else name


def campaign_phase(
    cli: Cli,
    sink: Sink,
    campaign_id: int,
    db: Path,
    n: int,
    concurrency: int | None,
    timeout: float,
    profile: Path | None,
    profile_rate: int,
    processes: int | None = None,
) -> tuple[Measured, Watch, dict[str, Any], Any]:
    args = ["campaign", "send", str(campaign_id), "--json"]
    if concurrency is not None:
        args += ["--concurrency", str(concurrency)]
    if processes is not None:
        args += ["--processes", str(processes)]
    cmd = cli.cmd(*args)
    if profile is not None:
        # py-spy starts the process and samples it for its whole life; the process it
        # waits for counts in py-spy's ru_maxrss, and its own VmHWM is sampled as a child.
        cmd = [
            str(PY_SPY), "record", "--format", "raw", "--rate", str(profile_rate), "--threads",
            "--output", str(profile), "--", *cmd,
        ]  # fmt: skip
    s0 = sink.stats()
    watch = Watch(sink, 0.0, db, gateway_count(s0["counts"]), n, profiled=profile is not None)
    busy0, own0 = cpu_busy(), time.process_time()
    watch.t0 = time.perf_counter()
    m = run_measured(cmd, cli.env, cli.cwd, timeout, tick=0.02, on_tick=watch)
    s1 = sink.stats()
    ours = m.cpu_seconds + (s1["cpu"] - s0["cpu"]) + (time.process_time() - own0)
    other = other_pct(cpu_busy() - busy0, ours, m.seconds)
    watch.final(watch.t0 + m.seconds, gateway_count(s1["counts"]))
    got = gateway_count(s1["counts"]) - gateway_count(s0["counts"])
    sink_figures = {
        "command": show(cli.cmd(*args)),
        "received": got,
        "bytes": s1["bytes"] - s0["bytes"],
        "cpu_seconds": s1["cpu"] - s0["cpu"],
        "cpu_other_pct": other,
    }
    status = m.json() if m.returncode == 0 else None
    return m, watch, sink_figures, status


# --------------------------------------------------------------------------- databases


class Target:
    """Where the gateway's database lives: a fresh SQLite file (the default), or databases
    the benchmark creates on a PostgreSQL server: a throwaway cluster of its own
    (`--database postgresql`, tests/pg.py's Cluster, stopped at the end) or the server of a
    URL (needs CREATEDB; the database named in the URL is only used to connect). The set-up
    database is "base"; every round of --workers gets a fresh copy of it: a copied file on
    SQLite, `CREATE DATABASE … TEMPLATE base` on PostgreSQL, dropped after the round."""

    def __init__(self, spec: str | None, tmp: Path) -> None:
        self.tmp = tmp
        self.pg: PgServer | None = None
        self.created: list[str] = []
        self.prefix = f"gwbench_{secrets.token_hex(3)}"
        self.statements_ok = False  # pg_stat_statements readable (PostgreSQL)
        spec = spec or "sqlite"
        if spec == "sqlite":
            self.kind, self.path = "sqlite", tmp / "campaign.db"
        elif spec.startswith("sqlite:///"):
            self.kind, self.path = "sqlite", Path(spec[len("sqlite:///") :]).resolve()
            if self.path.exists():
                fail(f"{self.path} exists: the benchmark needs a new file")
        elif is_postgres(spec):
            self.kind, self.path = "postgresql", None
            self.pg = PgServer(spec)
            # before anything is measured: our own cluster restarts once to load it
            self.statements_ok = self.pg.statement_counts()
        else:
            fail(
                f"--database {spec!r}: give sqlite, sqlite:///PATH, postgresql "
                "(a throwaway cluster) or postgresql://USER@HOST:PORT/DB"
            )

    def describe(self) -> str:
        if self.kind == "sqlite":
            return f"SQLite {self.path}"
        version = self._sql("SHOW server_version")[0][0]
        return f"PostgreSQL {version.split()[0]}, {self._pg().where()}"

    def _file(self, label: str) -> Path:
        assert self.path is not None
        return self.path if label == "base" else self.tmp / f"campaign-{label}.db"

    def _pg(self) -> PgServer:
        assert self.pg is not None, "a SQLite target has no PostgreSQL server"
        return self.pg

    def _name(self, label: str) -> str:
        return f"{self.prefix}_{label}"

    def url(self, label: str) -> str:
        if self.kind == "sqlite":
            return f"sqlite:///{self._file(label)}"
        return self._pg().database_url(self._name(label))

    def _sql(self, sql: str, *params: Any) -> list[Any]:
        return self._pg().sql(sql, *params)

    def create_base(self) -> str:
        if self.kind == "postgresql":
            self._sql(f"CREATE DATABASE {self._name('base')}")
            self.created.append(self._name("base"))
        return self.url("base")

    def fresh(self, label: str) -> str:
        """A copy of the set-up database for one round."""
        if self.kind == "sqlite":
            for suffix in ("", "-wal"):
                source = Path(str(self._file("base")) + suffix)
                if source.exists():
                    shutil.copyfile(source, str(self._file(label)) + suffix)
            return self.url(label)
        for attempt in range(50):  # the set-up commands' sessions may still be closing
            try:
                self._sql(f"CREATE DATABASE {self._name(label)} TEMPLATE {self._name('base')}")
                break
            except Exception as exc:
                if "being accessed by other users" not in str(exc) or attempt == 49:
                    raise
                time.sleep(0.1)
        self.created.append(self._name(label))
        return self.url(label)

    def drop(self, label: str) -> None:
        if self.kind == "sqlite":
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(str(self._file(label)) + suffix).unlink(missing_ok=True)
            return
        self._sql(f"DROP DATABASE IF EXISTS {self._name(label)} WITH (FORCE)")
        self.created.remove(self._name(label))

    def size(self, label: str) -> int:
        if self.kind == "sqlite":
            return file_bytes(self._file(label))
        return int(self._sql("SELECT pg_database_size($1)", self._name(label))[0][0])

    def db_stats(self, label: str) -> dict[str, int] | None:
        """pg_stat_database's counters of one database so far (PostgreSQL): transactions
        committed and rolled back, rows returned, fetched, inserted, updated, deleted. Read
        once no session is left in it (a backend hands its counts over when it exits), or
        after 3 s."""
        if self.kind == "sqlite":
            return None
        name = self._name(label)
        for _ in range(30):
            busy = self._sql("SELECT count(*) FROM pg_stat_activity WHERE datname = $1", name)
            if not busy[0][0]:
                break
            time.sleep(0.1)
        rows = self._sql(
            "SELECT xact_commit, xact_rollback, tup_returned, tup_fetched, tup_inserted,"
            " tup_updated, tup_deleted, pg_snapshot_xmax(pg_current_snapshot()) AS xids"
            " FROM pg_stat_database WHERE datname = $1",
            name,
        )
        if not rows:
            return None
        # xids: the next transaction id of the whole server; only a transaction that
        # writes takes one, and only such a commit waits for its WAL to reach the disk
        return {k: int(str(v or 0)) for k, v in dict(rows[0]).items()}

    def statements(self, label: str) -> dict[str, tuple[int, int]] | None:
        """Calls and rows of each statement run in one database so far (pg_stat_statements,
        when readable)."""
        if not self.statements_ok:
            return None
        found: dict[str, tuple[int, int]] = {}
        for query, calls, rows in self._pg().statements(self._name(label)):
            c, r = found.get(query, (0, 0))
            found[query] = (c + calls, r + rows)
        return found

    def commit_ceilings(self, say: Callable[[str], None]) -> list[dict[str, Any]]:
        """The server's commit rate: single-row UPDATE commits (synchronous_commit on) from
        4 and from 16 connections, 2 s each, as the server runs; on the benchmark's own
        cluster (fsync off) then again after a restart with fsync and full_page_writes on."""
        pg = self._pg()
        found = []
        for restart in (False, True):
            if restart:
                if pg.cluster is None:
                    break
                say("commit ceiling: restarting the cluster with fsync on ...")
                pg.restart("fsync=on", "synchronous_commit=on", "full_page_writes=on")
            for conns in (4, 16):
                say(f"commit ceiling: {conns} connections, 2 s ...")
                found.append(pg.commit_ceiling(f"{self.prefix}_commits", conns, 2.0))
        return found

    def campaign_state(self, label: str, campaign_id: int) -> str | None:
        if self.kind == "sqlite":
            con = sqlite3.connect(self._file(label), timeout=30)
            try:
                row = con.execute("SELECT state FROM campaigns WHERE id = ?", (campaign_id,))
                found = row.fetchone()
            finally:
                con.close()
            return found[0] if found else None

        async def go() -> str | None:
            conn = await self._pg().connect(self.url(label))
            try:
                return await conn.fetchval("SELECT state FROM campaigns WHERE id = $1", campaign_id)
            finally:
                await conn.close()

        return asyncio.run(go())

    def server_cpu(self) -> float | None:
        """CPU seconds of the throwaway cluster (None on SQLite or someone else's server)."""
        return self.pg.cpu() if self.pg is not None else None

    def close(self) -> None:
        try:
            for name in list(self.created):
                self._sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        except Exception:
            pass
        if self.pg is not None:
            self.pg.stop()


# --------------------------------------------------------------------------- several workers


def workers_round(
    cli: Cli,
    sink: Sink,
    target: Target,
    label: str,
    campaign_id: int,
    workers: int,
    concurrency: int,
    n: int,
    timeout: float,
    mode: str,
) -> dict[str, Any]:
    """W `gateway worker` processes at once; /proc is sampled every 20 ms (VmHWM of each,
    the sink's count). until-idle: `--until-idle`, timed from the start of the first to the
    exit of the last. daemon: no `--until-idle` (workers as `gateway worker` runs in
    production), timed from the start of the first to the N-th message at the sink; once the
    campaign is marked done (or 10 s later) each gets SIGTERM and stops gracefully."""
    daemon = mode == "daemon"
    cmd = cli.cmd("worker", *([] if daemon else ["--until-idle"]))
    cmd += ["--json", "--concurrency", str(concurrency)]
    s0 = sink.stats()
    base = gateway_count(s0["counts"])
    stats0, statements0 = target.db_stats(label), target.statements(label)
    busy0, own0, db0 = cpu_busy(), time.process_time(), target.server_cpu()
    inherited = own_peak_reset()
    outputs = [
        (cli.cwd / f".worker-{i}-{secrets.token_hex(3)}.out", cli.cwd / f".worker-{i}.err")
        for i in range(workers)
    ]
    procs: list[subprocess.Popen[bytes]] = []
    t0 = time.perf_counter()
    for out_path, err_path in outputs:
        with out_path.open("wb") as out, err_path.open("wb") as err:
            procs.append(
                subprocess.Popen(
                    cmd, env=cli.env, cwd=cli.cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err
                )
            )
    live = {p.pid: i for i, p in enumerate(procs)}
    ends = [0.0] * workers
    codes = [0] * workers
    cpu = [0.0] * workers
    maxrss = [0] * workers
    hwm = [0] * workers
    first: float | None = None
    last: float | None = None
    count = 0
    timed_out = False
    reached: float | None = None  # daemon: when the sink had all N
    stopped: float | None = None  # daemon: when SIGTERM was sent
    next_poll = 0.0
    while live:
        for pid, i in list(live.items()):
            got, status, usage = os.wait4(pid, os.WNOHANG)
            if got:
                ends[i] = time.perf_counter() - t0
                codes[i] = os.waitstatus_to_exitcode(status)
                procs[i].returncode = codes[i]  # reaped here, not by Popen
                cpu[i] = usage.ru_utime + usage.ru_stime
                maxrss[i] = usage.ru_maxrss
                del live[pid]
            else:
                hwm[i] = max(hwm[i], proc_status(pid).get("VmHWM", 0))
        now = time.perf_counter()
        got_now = gateway_count(sink.stats()["counts"]) - base
        if got_now > count:
            first = first or now
            last = now
            count = got_now
        if daemon and reached is None and count >= n:
            reached = now
        if daemon and reached is not None and stopped is None and now >= next_poll:
            next_poll = now + 0.2
            if now - reached > 10 or target.campaign_state(label, campaign_id) == "done":
                stopped = now
                for pid in live:
                    os.kill(pid, signal.SIGTERM)
        if live and now - t0 > timeout:
            timed_out = True
            for pid in live:
                os.kill(pid, 9)
            continue  # reaped on the next pass
        if live:
            time.sleep(0.02)
    wall = max(ends)
    s1 = sink.stats()
    received = gateway_count(s1["counts"]) - base
    if received > count:  # arrived after the last sample
        first = first or t0 + wall
        last = t0 + wall
    seconds = (last - t0 if last else wall) if daemon else wall
    db1 = target.server_cpu()
    stats1, statements1 = target.db_stats(label), target.statements(label)
    sink_cpu = s1["cpu"] - s0["cpu"]
    db_cpu = (db1 - db0) if db0 is not None and db1 is not None else None
    ours = sum(cpu) + sink_cpu + (time.process_time() - own0) + (db_cpu or 0.0)
    per_worker = []
    for i, (out_path, err_path) in enumerate(outputs):
        stdout = out_path.read_text(encoding="utf-8", errors="replace")
        stderr = err_path.read_text(encoding="utf-8", errors="replace")
        out_path.unlink()
        err_path.unlink()
        m = Measured(cmd, codes[i], ends[i], maxrss[i], cpu[i], hwm[i], inherited, 1, stdout)
        peak, source = m.peak_kib()
        try:
            stats = m.json() if codes[i] == 0 else None
        except SystemExit:
            stats = None
        per_worker.append(
            {
                "exit_s": round(ends[i], 2),
                "returncode": codes[i],
                "stats": stats,
                "sent": (stats or {}).get("sent"),
                "peak_rss_mib": round(peak / 1024, 1),
                "peak_source": source,
                "cpu_s": round(cpu[i], 2),
                "stderr_tail": stderr[-600:].strip() if codes[i] else "",
            }
        )
    rate = received / seconds if seconds else 0.0
    db = database_figures(
        stats0, stats1, statements0, statements1, n, wall, per_worker, concurrency
    )
    xacts = db["xacts"] if db else None
    return {
        "workers": workers,
        "mode": mode,
        "command": show(cmd),
        "seconds": round(seconds, 3),
        "wall_seconds": round(wall, 3),
        "stopped_at_s": round(stopped - t0, 2) if stopped else None,
        "db_transactions": xacts,
        "db_transactions_per_msg": round(xacts / n, 3) if xacts is not None else None,
        "db": db,
        "rate": round(n / seconds, 1),
        "received_rate": round(rate, 1),
        "first_delivery_s": round(first - t0, 2) if first else None,
        "last_delivery_s": round(last - t0, 2) if last else None,
        "delivery_only_rate": (
            round(received / (last - first), 1) if first and last and last > first else None
        ),
        "sink_received": received,
        "avg_message_bytes": round((s1["bytes"] - s0["bytes"]) / max(received, 1)),
        "timed_out": timed_out,
        "per_worker": per_worker,
        "peak_rss_mib_max": max(w["peak_rss_mib"] for w in per_worker),
        "cpu_workers_pct": round(100 * sum(cpu) / wall, 1),
        "cpu_workers_us_per_msg": round(1e6 * sum(cpu) / n, 1),
        "cpu_sink_pct": round(100 * sink_cpu / wall, 1),
        "cpu_db_pct": round(100 * db_cpu / wall, 1) if db_cpu is not None else None,
        "cpu_db_us_per_msg": round(1e6 * db_cpu / n, 1) if db_cpu is not None else None,
        "cpu_other_pct": other_pct(cpu_busy() - busy0, ours, wall),
    }


CLAIM_SQL = "WITH expired AS"  # how the outbox's claim statement starts on PostgreSQL


def database_figures(
    stats0: dict[str, int] | None,
    stats1: dict[str, int] | None,
    statements0: dict[str, tuple[int, int]] | None,
    statements1: dict[str, tuple[int, int]] | None,
    n: int,
    wall: float,
    per_worker: list[dict[str, Any]],
    concurrency: int,
) -> dict[str, Any] | None:
    """What one round asked of PostgreSQL, per delivered message: transactions (commits,
    rollbacks) and rows (pg_stat_database deltas of the round's database); claims and
    statements from pg_stat_statements when readable, else claims derived from the batch
    size the workers use."""
    if stats0 is None or stats1 is None:
        return None
    d = {k: stats1[k] - stats0.get(k, 0) for k in stats1}
    xacts = d["xact_commit"] + d["xact_rollback"]
    writes = d.pop("xids")
    figures: dict[str, Any] = {
        "xacts": xacts,
        "write_commits": writes,
        "write_commits_per_msg": round(writes / n, 4),
        "write_commits_per_s": round(writes / wall, 1) if wall else None,
        "commits": d["xact_commit"],
        "rollbacks": d["xact_rollback"],
        "commits_per_s": round(d["xact_commit"] / wall, 1) if wall else None,
        "commits_per_msg": round(d["xact_commit"] / n, 4),
        "xacts_per_msg": round(xacts / n, 4),
        **{f"{k}_per_msg": round(v / n, 2) for k, v in d.items() if k.startswith("tup_")},
    }
    if statements0 is not None and statements1 is not None:
        delta = {
            q: (c - statements0.get(q, (0, 0))[0], r - statements0.get(q, (0, 0))[1])
            for q, (c, r) in statements1.items()
        }
        delta = {q: v for q, v in delta.items() if v[0] > 0}
        claims = sum(c for q, (c, _) in delta.items() if q.lstrip().startswith(CLAIM_SQL))
        claimed = sum(r for q, (_, r) in delta.items() if q.lstrip().startswith(CLAIM_SQL))
        calls = sum(c for c, _ in delta.values())
        top = sorted(delta.items(), key=lambda x: -x[1][0])[:8]
        figures.update(
            {
                "claims_source": "pg_stat_statements",
                "claims": claims,
                "claimed_rows": claimed,
                "claims_per_msg": round(claims / n, 4),
                "rows_per_claim": round(claimed / claims, 1) if claims else None,
                "claims_per_s": round(claims / wall, 1) if wall else None,
                "statements": calls,
                "statements_per_msg": round(calls / n, 3),
                "top_statements": [
                    {"query": " ".join(q.split())[:120], "calls": c, "rows": r} for q, (c, r) in top
                ],
            }
        )
    else:
        claimed = sum((w["stats"] or {}).get("claimed", 0) for w in per_worker)
        batch = max(100, 50 * concurrency)  # gateway.worker.Worker's default batch size
        figures.update(
            {
                "claims_source": f"derived: claimed rows / batch size {batch}, at least",
                "claims": None,
                "claimed_rows": claimed,
                "claims_per_msg": round(1 / batch, 4),
                "rows_per_claim": None,
                "claims_per_s": None,
                "statements": None,
                "statements_per_msg": None,
                "top_statements": [],
            }
        )
    return figures


def run_workers(
    args: argparse.Namespace, sink: Sink, tmp: Path, say: Callable[[str], None]
) -> tuple[dict[str, Any], list[str]]:
    """--workers (always on PostgreSQL): set up once, then for each worker count a fresh copy
    of the set-up database, `campaign send ID --detach`, and W workers until idle."""
    n, c = args.n, args.concurrency or CLI_DEFAULT_CONCURRENCY
    load = [round(x, 2) for x in os.getloadavg()]
    notes: list[str] = []
    failures: list[str] = []
    target = Target(args.database, tmp)
    try:
        database = target.describe()
        say(f"database: {database}")
        base_url = target.create_base()
        gw_env = gateway_env(tmp, "unused.db", sink.port, {"GATEWAY_DATABASE_URL": base_url})
        env = {**without_gateway_env(), **gw_env}
        settings = Settings.from_env(gw_env)
        cli = Cli(env, tmp)
        campaign_id, setup_figures = setup(
            cli, tmp, target.path if target.kind == "sqlite" else None, settings, n,
            args.setup, say,
        )  # fmt: skip
        setup_figures["db_mib_before"] = round(target.size("base") / MIB, 1)
        timeout = args.timeout or 300 + 0.01 * n
        rounds: list[dict[str, Any]] = []
        for k, w in enumerate(args.workers):
            label = f"r{k + 1}_w{w}"
            t0 = time.perf_counter()
            url = target.fresh(label)
            fresh_s = time.perf_counter() - t0
            rcli = Cli({**env, "GATEWAY_DATABASE_URL": url}, tmp)
            sink.recipients("kh", n)  # forget whatever came before (nothing should have)
            detach = rcli.run("campaign", "send", str(campaign_id), "--detach", "--json")
            flag = "--until-idle " if args.worker_mode == "until-idle" else ""
            say(f"round {k + 1}: {w} x `gateway worker {flag}--concurrency {c}`, N={n} ...")
            r = workers_round(
                rcli, sink, target, label, campaign_id, w, c, n, timeout, args.worker_mode
            )
            r["fresh_database_s"] = round(fresh_s, 2)
            r["detach_s"] = round(detach.seconds, 2)
            r["detach_state"] = detach.json().get("state")
            r["recipients"] = sink.recipients("kh", n)
            status = rcli.run("campaign", "status", str(campaign_id), "--json", check=False)
            r["status"] = status.json() if status.returncode == 0 else None
            r["db_mib_after"] = round(target.size(label) / MIB, 1)
            r["failures"] = round_failures(r, n)
            failures += [f"{w} worker(s): {f}" for f in r["failures"]]
            if not args.keep or target.kind == "postgresql":
                target.drop(label)
            rounds.append(r)
            say(
                f"  {r['rate']:.0f} msg/s in {r['seconds']:.2f} s,"
                f" {'OK' if not r['failures'] else 'FAILED: ' + '; '.join(r['failures'])}"
            )
        ceilings = target.commit_ceilings(say) if target.kind == "postgresql" else []
    finally:
        target.close()

    raw, raw_size, raw_other, raw_recipients = raw_round(sink, settings, n, args.raw_pool, c, say)
    if raw.sink_counts.get(RAW_SENDER, 0) != n or not recipients_ok(raw_recipients):
        failures.append(f"raw: {recipients_problem(raw_recipients)}")
    raw_rate = n / raw.seconds
    for r in rounds:
        r["ratio"] = round(r["rate"] / raw_rate, 3)
    for phase, pct in [("raw baseline", raw_other)] + [
        (f"{r['workers']}-worker round", r["cpu_other_pct"]) for r in rounds
    ]:
        notes += filter(None, [disturbed(phase, pct)])
    result: dict[str, Any] = {
        "mode": "workers",
        "worker_mode": args.worker_mode,
        "n": n,
        "concurrency": c,
        "database": database,
        "database_kind": target.kind,
        "reset": (
            "each round on a fresh copy of the set-up database ("
            + ("CREATE DATABASE … TEMPLATE" if target.kind == "postgresql" else "copied file")
            + "): same contacts, same draft campaign"
        ),
        "cores": os.cpu_count(),
        "loadavg_at_start": load,
        "python": sys.version.split()[0],
        "commit": commit(),
        "sink_loop": args.sink_loop,
        "campaign_id": campaign_id,
        "setup": setup_figures,
        "raw": raw_figures(raw, raw_size, raw_other, raw_recipients, n, connections=c),
        "rounds": rounds,
        "commit_ceiling": ceilings,
        "claims_counted": target.statements_ok,
        "sizing": sizing(rounds, ceilings) if target.kind == "postgresql" else None,
        "notes": notes,
        "ok": not failures,
        "failures": failures,
    }
    if target.kind == "postgresql" and target.pg is not None and target.pg.cluster is not None:
        notes.append(
            "the rounds ran on the benchmark's own cluster, started as the test suite starts"
            " it: fsync, synchronous_commit and full_page_writes off, so a commit costs no"
            " disk flush there; the commit ceiling is measured both ways (the second after a"
            " restart with them on) and the sizing uses the one with fsync on"
        )
    return result, []


SIZING_CORES = (8, 32)


def sizing(rounds: list[dict[str, Any]], ceilings: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What 8 and 32 cores would deliver, from the CPU each message cost the workers and
    PostgreSQL and the commits it took in the round with the most workers, and where
    PostgreSQL becomes the limit: its CPU, or its commit rate with fsync on."""
    done = [r for r in rounds if r.get("db") and not r["failures"]]
    if not done:
        return None
    ref = max(done, key=lambda r: r["workers"])
    w = ref["cpu_workers_us_per_msg"]
    d = ref["cpu_db_us_per_msg"]
    cpm = ref["db"]["write_commits_per_msg"]
    claims = ref["db"]["claims_per_msg"]
    durable = [c for c in ceilings if c.get("fsync") == "on"] or ceilings
    ceiling = max(durable, key=lambda c: c["commits_per_s"]) if durable else None
    commit_limit = ceiling["commits_per_s"] / cpm if ceiling and cpm else None
    best = max(done, key=lambda r: r["rate"])
    cheapest = min(done, key=lambda r: r["cpu_workers_us_per_msg"] + (r["cpu_db_us_per_msg"] or 0))
    ref_cost = w + (d or 0.0)
    low_cost = cheapest["cpu_workers_us_per_msg"] + (cheapest["cpu_db_us_per_msg"] or 0.0)
    rows: list[dict[str, Any]] = []
    for cores in SIZING_CORES:
        for layout in ("one machine", "separate database"):
            if layout == "one machine":
                cpu_rate = cores * 1e6 / (w + (d or 0.0))
                db_cpu_rate = None
            else:
                cpu_rate = cores * 1e6 / w
                db_cpu_rate = cores * 1e6 / d if d else None
            limits = {"workers' CPU" if layout != "one machine" else "CPU": cpu_rate}
            if db_cpu_rate is not None:
                limits["PostgreSQL's CPU"] = db_cpu_rate
            if commit_limit is not None:
                limits["commits"] = commit_limit
            limit = min(limits, key=lambda k: limits[k])
            rate = limits[limit]
            rows.append(
                {
                    "cores": cores,
                    "layout": layout,
                    "rate": round(rate),
                    "limit": limit,
                    "worker_processes": max(1, round(rate * w / 1e6)),
                    "db_cores": round(rate * d / 1e6, 1) if d else None,
                    "write_commits_per_s": round(rate * cpm),
                    "claims_per_s": round(rate * claims),
                }
            )
    return {
        "from_round_workers": ref["workers"],
        "workers_us_per_msg": w,
        "db_us_per_msg": d,
        "write_commits_per_msg": cpm,
        "commits_per_msg": ref["db"]["commits_per_msg"],
        "claims_per_msg": claims,
        "claims_source": ref["db"]["claims_source"],
        "cheapest_round": {
            "workers": cheapest["workers"],
            "workers_us_per_msg": cheapest["cpu_workers_us_per_msg"],
            "db_us_per_msg": cheapest["cpu_db_us_per_msg"],
            "cpu_rates_higher_by_pct": round(100 * (ref_cost / low_cost - 1)) if low_cost else None,
        },
        "measured_best": {
            "workers": best["workers"],
            "rate": best["rate"],
            "busy_pct": round(
                sum(best[k] or 0.0 for k in ("cpu_workers_pct", "cpu_db_pct", "cpu_sink_pct"))
                + best["cpu_other_pct"]
            )
            / max(os.cpu_count() or 1, 1),
        },
        "commit_ceiling": ceiling,
        "msg_per_s_at_commit_ceiling": round(commit_limit) if commit_limit else None,
        "msg_per_s_per_db_core": round(1e6 / d) if d else None,
        "rows": rows,
    }


def round_failures(r: dict[str, Any], n: int) -> list[str]:
    found = []
    if r["timed_out"]:
        found.append(f"killed after {r['seconds']:.0f} s")
    for i, w in enumerate(r["per_worker"]):
        if w["returncode"] != 0:
            found.append(f"worker {i + 1} exited {w['returncode']}: {w['stderr_tail'][-300:]}")
    if r["sink_received"] != n:
        found.append(f"the sink received {r['sink_received']} messages from the gateway, not {n}")
    if not recipients_ok(r["recipients"]):
        found.append(recipients_problem(r["recipients"]))
    sent = [w["sent"] for w in r["per_worker"]]
    if None not in sent and sum(sent) != n:
        found.append(f"the workers say they sent {sum(sent)} ({sent}), not {n}")
    status = r["status"]
    if status is None:
        found.append("`campaign status --json` failed")
    else:
        others = {k: v for k, v in status["counts"].items() if k != "sent" and v}
        if status["state"] != "done" or status["counts"].get("sent") != n or others:
            found.append(
                f"`campaign status` says {status['state']}, counts {status['counts']},"
                f" not done with sent {n}"
            )
    return found


def human_workers(r: dict[str, Any]) -> str:
    raw, s = r["raw"], r["setup"]
    lines = [
        f"campaign, several workers: N={r['n']} database={r['database']}"
        f" concurrency={r['concurrency']} per worker cores={r['cores']}"
        f" load={r['loadavg_at_start'][0]} python={r['python']} sink loop={r['sink_loop']}"
        f" commit={r['commit']}",
    ]
    if s["how"] == "import":
        lines.append(
            f"  setup (untimed)   init {s['init_seconds']:.1f} s, `gateway contacts import`"
            f" {s['import_seconds']:.1f} s = {s['import_rate']} contacts/s, db {s['db_mib_before']} MiB"
        )
    else:
        lines.append(
            f"  setup (untimed)   init {s['init_seconds']:.1f} s, sqlite3 insert"
            f" {s['insert_seconds']:.1f} s, db {s['db_mib_before']} MiB"
        )
    lines += [
        f"  reset             {r['reset']}; then `gateway campaign send {r['campaign_id']} --detach`"
        f" (untimed) and W x `{r['rounds'][0]['command'] if r['rounds'] else 'gateway worker'}` at once",
        f"  raw aiosmtplib    {raw['rate']:8.0f} msg/s  {raw['seconds']:7.2f} s"
        f"  {raw['connections']} connections, {raw['avg_message_bytes']} B/msg,"
        f" cpu client {raw['cpu_client_pct']:.0f}%, sink {raw['cpu_sink_pct']:.0f}%,"
        f" other processes {raw['cpu_other_pct']:.0f}%",
        "",
        f"  {'workers':>7} {'msg/s':>7} {'ratio':>6} {'seconds':>8} {'1st->last':>9}"
        f" {'exits at (s)':>18} {'sent per worker':>22} {'RSS MiB/worker':>15}"
        f" {'cpu wrk':>7} {'us/msg':>6} {'db':>5} {'sink':>5} {'other':>5} {'db xact/msg':>11}  check",
    ]
    for g in r["rounds"]:
        w = g["per_worker"]
        db = f"{g['cpu_db_pct']:.0f}%" if g["cpu_db_pct"] is not None else "-"
        exits = ",".join(f"{x['exit_s']:.1f}" for x in w)
        sent = ",".join(str(x["sent"]) for x in w)
        rss = ",".join(f"{x['peak_rss_mib']:.0f}" for x in w)
        lines.append(
            f"  {g['workers']:>7} {g['rate']:7.0f} {g['ratio']:6.2f} {g['seconds']:8.2f}"
            f" {g['delivery_only_rate'] or 0:9.0f}"
            f" {exits:>18} {sent:>22} {rss:>15}"
            f" {g['cpu_workers_pct']:6.0f}% {g['cpu_workers_us_per_msg']:6.0f} {db:>5}"
            f" {g['cpu_sink_pct']:4.0f}% {g['cpu_other_pct']:4.0f}%"
            f" {g['db_transactions_per_msg'] if g['db_transactions_per_msg'] is not None else '-':>11}"
            f"  {'OK' if not g['failures'] else 'FAILED'}"
        )
    lines += [
        "",
        (
            "  msg/s = N / (first worker start .. last worker exit)"
            if r["worker_mode"] == "until-idle"
            else "  msg/s = N / (first worker start .. N-th message at the sink; SIGTERM once"
            " the campaign is done, exits after that)"
        )
        + "; ratio = that / raw;"
        " 1st->last = rate between the first and the last delivery the sink saw;"
        " cpu in % of one core (wrk: all workers; db: the PostgreSQL cluster, when the bench"
        " started it; other: every other process on the machine), over first start .. last exit;"
        " us/msg: workers' CPU per message; db xact/msg: PostgreSQL transactions in the round's"
        " database per message (pg_stat_database)",
        "  check: the sink got exactly N messages from the gateway, every recipient exactly"
        " once; the workers' sent counts add up to N; `campaign status` done, sent N",
    ]
    if any(g.get("db") for g in r["rounds"]):
        lines += database_lines(r)
    if r.get("sizing"):
        lines += sizing_lines(r["sizing"], r["cores"])
    lines += outcome(r)
    return "\n".join(lines)


def database_lines(r: dict[str, Any]) -> list[str]:
    """Per round, what the database did for each delivered message; then its commit rate."""
    lines = [
        "",
        "  PostgreSQL per round (the round's database; per delivered message unless said):",
        f"  {'workers':>7} {'commits/s':>9} {'commits':>8} {'writes/s':>8} {'writes':>7}"
        f" {'rollbk':>6} {'claims/s':>8}"
        f" {'claims':>7} {'rows/claim':>10} {'stmts':>6} {'fetched':>7} {'inserted':>8}"
        f" {'updated':>7} {'deleted':>7} {'wrk us':>6} {'db us':>6}",
    ]
    for g in r["rounds"]:
        db = g.get("db")
        if not db:
            continue

        def f(v: Any, spec: str) -> str:
            return "-" if v is None else format(v, spec)

        lines.append(
            f"  {g['workers']:>7} {f(db['commits_per_s'], '9.0f')} {db['commits_per_msg']:8.4f}"
            f" {f(db['write_commits_per_s'], '8.0f')} {db['write_commits_per_msg']:7.4f}"
            f" {db['rollbacks']:6d} {f(db['claims_per_s'], '8.1f')} {db['claims_per_msg']:7.4f}"
            f" {f(db['rows_per_claim'], '10.1f')} {f(db['statements_per_msg'], '6.2f')}"
            f" {db['tup_fetched_per_msg']:7.2f} {db['tup_inserted_per_msg']:8.2f}"
            f" {db['tup_updated_per_msg']:7.2f} {db['tup_deleted_per_msg']:7.2f}"
            f" {g['cpu_workers_us_per_msg']:6.0f} {f(g['cpu_db_us_per_msg'], '6.0f')}"
        )
    source = next((g["db"]["claims_source"] for g in r["rounds"] if g.get("db")), "")
    lines.append(
        "  commits/s over the round's wall time; commits, claims, stmts (statements),"
        " fetched/inserted/updated/deleted (rows) per message; commits count every"
        " transaction, a connection pool's reset when a connection goes back to it included;"
        " writes: the commits that wrote (took a transaction id), the only ones that wait"
        " for the disk with synchronous_commit on; rollbk: transactions rolled"
        f" back in the round; claims counted by {source}; wrk us, db us: CPU microseconds"
        " per message of all workers, of the PostgreSQL cluster"
    )
    for c in r.get("commit_ceiling") or []:
        lines.append(
            f"  commit ceiling    {c['commits_per_s']:7d} commits/s from {c['connections']:2d}"
            f" connections (single-row UPDATE, each its own commit, synchronous_commit on),"
            f" fsync {c['fsync']}, full_page_writes {c['full_page_writes']};"
            f" PostgreSQL CPU {f(c['db_cpu_us_per_commit'], '.0f')} us per commit,"
            f" this client {c['client_cpu_pct']}% of a core"
        )
    return lines


def sizing_lines(z: dict[str, Any], cores: int | None) -> list[str]:
    """The sizing section: plain words, then the table."""
    d = z["db_us_per_msg"]
    c = z["commit_ceiling"]
    lines = [
        "",
        "  sizing (a model from the figures above, not a measurement on 8 or 32 cores):",
        f"    In the {z['from_round_workers']}-worker round a message cost the workers"
        f" {z['workers_us_per_msg']:.0f} us of CPU"
        + (
            f" and PostgreSQL {d:.0f} us"
            if d is not None
            else " (PostgreSQL's CPU unknown: not our server)"
        )
        + f", and took {z['write_commits_per_msg']:.4f} commits that wrote"
        f" ({z['commits_per_msg']:.4f} in all) and {z['claims_per_msg']:.4f} claims"
        f" ({z['claims_source']}).",
        f"    Measured here ({cores} cores shared with the SMTP sink and this benchmark):"
        f" {z['measured_best']['rate']:.0f} msg/s at best, with {z['measured_best']['workers']}"
        f" worker(s), when all processes together kept {z['measured_best']['busy_pct']:.0f}%"
        f" of the {cores} cores busy (workers, PostgreSQL, the sink, other processes): what"
        " more workers can add here is the idle rest.",
        "    One machine: workers and PostgreSQL share its cores, so each message costs the"
        " sum of both; separate database: the workers have all the cores of their machine"
        " and PostgreSQL as many on its own. Either way the receiving mail servers are"
        " elsewhere and take what they get (no remote throttling), and nothing but CPU and"
        " commits limits (no lock waits: FOR UPDATE SKIP LOCKED lets workers pass each other).",
    ]
    low = z["cheapest_round"]
    if low["workers"] != z["from_round_workers"] and low["cpu_rates_higher_by_pct"]:
        lines.append(
            f"    The {low['workers']}-worker round cost less per message (workers"
            f" {low['workers_us_per_msg']:.0f} us, PostgreSQL {low['db_us_per_msg'] or 0:.0f} us):"
            " more processes than cores here add switching and idle polling. With its figures"
            f" the CPU-limited rates below would be {low['cpu_rates_higher_by_pct']}% higher; the"
            " table keeps the costlier round's, as a deployment runs many workers."
        )
    if d:
        lines.append(
            f"    PostgreSQL's CPU becomes the limit at about {z['msg_per_s_per_db_core']:,}"
            " msg/s per core it has to itself."
        )
    if c:
        lines.append(
            f"    Commits: {c['commits_per_s']:,} commits/s measured ({c['connections']}"
            f" connections, fsync {c['fsync']}) at {z['write_commits_per_msg']:.4f} commits"
            f" that wrote per message is a ceiling of about {z['msg_per_s_at_commit_ceiling']:,}"
            " msg/s"
            " (more connections commit more per flush: a lower bound for many workers)."
        )
    lines += [
        f"    {'cores':>5}  {'layout':<18} {'msg/s':>8}  {'limited by':<17} {'worker cores':>12}"
        f" {'db cores':>8} {'writes/s':>9} {'claims/s':>8}",
    ]
    for row in z["rows"]:
        lines.append(
            f"    {row['cores']:>5}  {row['layout']:<18} {row['rate']:8,}  {row['limit']:<17}"
            f" {row['worker_processes']:>12} {row['db_cores'] if row['db_cores'] is not None else '-':>8}"
            f" {row['write_commits_per_s']:>9,} {row['claims_per_s']:>8,}"
        )
    lines.append(
        "    worker cores: busy cores of `gateway worker` processes at that rate (a worker"
        " uses about one); db cores: PostgreSQL's busy cores; writes/s: commits that wrote"
    )
    return lines


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = doc_parser("campaign.py", __doc__)
    parser.add_argument("--n", type=int, help="subscribed contacts (default 20000)")
    parser.add_argument(
        "--million",
        action="store_true",
        help="the 1,000,000-contact run: --n 1000000, imported with `gateway contacts import`,"
        " and its goals (import + send under 10 minutes, send peak RSS under 150 MB,"
        " database under 1 GB) printed MET or MISSED",
    )
    parser.add_argument(
        "--processes",
        type=int,
        metavar="N",
        help="passed to `campaign send --processes N` when it has the flag (render processes);"
        " not with --workers",
    )
    parser.add_argument(
        "--concurrency",
        "-c",
        type=int,
        help="SMTP connections for the gateway (passed to `campaign send` when it has the "
        f"flag) and the baseline alike (default {CLI_DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "--setup",
        choices=("import", "sqlite"),
        default="import",
        help="contacts through `gateway contacts import` (gw.import_contacts, default) or "
        "inserted with sqlite3 after `gateway init`",
    )
    parser.add_argument(
        "--raw-pool",
        type=int,
        default=20_000,
        help="distinct pre-rendered bodies the baseline cycles through (default 20000)",
    )
    parser.add_argument(
        "--sink-loop",
        choices=("uvloop", "asyncio"),
        default="uvloop" if has_uvloop() else "asyncio",
        help="event loop of the sink process (default uvloop when installed)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        help="seconds `campaign send` may take before it is killed (default 300 + 10 ms * N)",
    )
    parser.add_argument(
        "--database",
        metavar="URL",
        help="sqlite (default: a new file in the temporary directory), sqlite:///NEW_FILE, "
        "postgresql (start a throwaway cluster with tests/pg.py, stopped at the end) or "
        "postgresql://USER@HOST:PORT/DB (the benchmark creates and drops its own databases "
        "on that server; needs CREATEDB). PostgreSQL runs --workers (default 1,2,4)",
    )
    parser.add_argument(
        "--workers",
        type=count_list("counts", "worker counts"),
        metavar="N[,N...]",
        help="instead of `campaign send` in one process: for each count W, a fresh copy of "
        "the set-up database, `campaign send ID --detach`, then W `gateway worker "
        "--until-idle` processes at once (default on PostgreSQL: 1,2,4)",
    )
    parser.add_argument(
        "--worker-mode",
        choices=("until-idle", "daemon"),
        default="until-idle",
        help="with --workers: `gateway worker --until-idle`, timed to the last exit (default),"
        " or `gateway worker` as run in production, timed to the N-th message at the sink and"
        " stopped with SIGTERM once the campaign is done",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    parser.add_argument(
        "--py-spy",
        action="store_true",
        help="profile the `campaign send` process with py-spy (slows it down a little)",
    )
    parser.add_argument("--py-spy-rate", type=int, default=100, help="samples/s (default 100)")
    parser.add_argument("--profile-top", type=int, default=30, help="functions shown (default 30)")
    parser.add_argument(
        "--profile-out", type=Path, help="also keep py-spy's collapsed stacks in this file"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (database, CSV)"
    )
    args = parser.parse_args(argv)
    if args.million and args.n not in (None, MEMORY_TARGET_N):
        parser.error(f"--million is --n {MEMORY_TARGET_N}: not with --n {args.n}")
    if args.million and args.setup != "import":
        parser.error("--million imports its contacts: not with --setup sqlite")
    args.n = MEMORY_TARGET_N if args.million else (args.n or 20_000)
    if args.processes is not None and args.processes < 1:
        parser.error("--processes must be at least 1")
    if args.n < 1 or (args.concurrency is not None and args.concurrency < 1) or args.raw_pool < 1:
        parser.error("--n, --concurrency and --raw-pool must be at least 1")
    if args.py_spy and not PY_SPY.exists():
        parser.error(f"--py-spy needs {PY_SPY} (`.venv/bin/pip install py-spy`)")
    on_pg = is_postgres(args.database or "sqlite")
    if on_pg and args.workers is None:
        args.workers = [1, 2, 4]
    if on_pg and args.setup == "sqlite":
        parser.error("--setup sqlite needs a SQLite database")
    if args.workers is not None and args.processes is not None:
        parser.error("--processes is passed to `campaign send`: not with --workers")
    if args.million and args.workers is not None:
        parser.error("--million is the SQLite run of one `campaign send`: not with --workers")
    if args.workers is not None and args.py_spy:
        parser.error("--py-spy profiles the one `campaign send` process: not with --workers")
    return args


def run(
    args: argparse.Namespace, sink: Sink, tmp: Path, say: Callable[[str], None]
) -> tuple[dict[str, Any], list[str]]:
    if args.workers is not None:
        return run_workers(args, sink, tmp, say)
    n = args.n
    db = Target(args.database, tmp).path
    assert db is not None
    env = {**without_gateway_env(), **gateway_env(tmp, str(db), sink.port)}
    settings = Settings.from_env(gateway_env(tmp, str(db), sink.port))
    cli = Cli(env, tmp)
    notes: list[str] = []
    load = [round(x, 2) for x in os.getloadavg()]

    flags = campaign_send_flags(cli)
    has_flag = "--concurrency" in flags
    if has_flag:
        c = args.concurrency or CLI_DEFAULT_CONCURRENCY
        passed: int | None = c
    else:
        c, passed = CLI_DEFAULT_CONCURRENCY, None
        notes.append(
            "`gateway campaign send` has no --concurrency flag: the gateway used its default "
            f"of {c} connections, and so did the baseline"
            + (
                f" (--concurrency {args.concurrency} ignored)"
                if args.concurrency not in (None, c)
                else ""
            )
        )

    processes: int | None = None
    if args.processes is not None and "--processes" in flags:
        processes = args.processes
    elif args.processes is not None:
        notes.append(
            f"`gateway campaign send` has no --processes flag: --processes {args.processes}"
            " was not passed (it rendered in its one process)"
        )

    campaign_id, setup_figures = setup(cli, tmp, db, settings, n, args.setup, say)

    timeout = args.timeout or 300 + 0.01 * n
    profile_file = None
    if args.py_spy:
        profile_file = args.profile_out or (tmp / "campaign.pyspy.txt")
    say(f"gateway: `gateway campaign send {campaign_id}` to {n} contacts ...")
    sink.recipients("kh", n)  # forget whatever came before (nothing should have)
    m, watch, sink_figures, final = campaign_phase(
        cli, sink, campaign_id, db, n, passed, timeout, profile_file, args.py_spy_rate, processes
    )
    recipients = sink.recipients("kh", n)

    raw, raw_size, raw_other, raw_recipients = raw_round(sink, settings, n, args.raw_pool, c, say)
    raw_got = raw.sink_counts.get(RAW_SENDER, 0)

    reports: list[str] = []
    profile_data = None
    if profile_file is not None and profile_file.exists():
        text, profile_data = py_spy_summary(profile_file, args.profile_top, args.py_spy_rate, n)
        reports.append(text)
    elif profile_file is not None:
        reports.append("py-spy wrote no profile")

    status = cli.run("campaign", "status", str(campaign_id), "--json", check=False)
    status_data = status.json() if status.returncode == 0 else None

    for phase, pct in (("raw baseline", raw_other), ("campaign", sink_figures["cpu_other_pct"])):
        notes += filter(None, [disturbed(phase, pct)])

    failures: list[str] = []
    if raw_got != n:
        failures.append(f"raw: the sink received {raw_got} baseline messages, not {n}")
    if m.timed_out:
        failures.append(f"`campaign send` was killed after {timeout:.0f} s")
    elif m.returncode != 0:
        failures.append(
            f"`campaign send` exited {m.returncode}: {(m.stderr or m.stdout)[-500:].strip()}"
        )
    if sink_figures["received"] != n:
        failures.append(
            f"the sink received {sink_figures['received']} messages from the gateway, not {n}"
        )
    if not recipients_ok(recipients):
        failures.append(f"campaign: {recipients_problem(recipients)}")
    if not recipients_ok(raw_recipients):
        failures.append(f"raw: {recipients_problem(raw_recipients)}")
    if status_data is None:
        failures.append(f"`campaign status --json` failed: {status.stderr[-300:].strip()}")
    else:
        counts = status_data["counts"]
        others = {k: v for k, v in counts.items() if k != "sent" and v}
        if status_data["state"] != "done" or counts.get("sent") != n or others:
            failures.append(
                f"`campaign status` says {status_data['state']}, counts {counts}, not done with sent {n}"
            )

    raw_rate = n / raw.seconds
    rate = n / m.seconds
    peak_kib, peak_source = m.peak_kib()
    main_cpu = watch.threads_cpu.get(watch.main_tid, 0.0)  # the event loop's thread
    peak_mib = peak_kib / 1024
    db_after = file_bytes(db)
    gw_bytes = sink_figures["bytes"] / max(sink_figures["received"], 1)
    result: dict[str, Any] = {
        "n": n,
        "database": f"SQLite {db}",
        "concurrency": c,
        "concurrency_flag": has_flag,
        "processes": processes,
        "processes_flag": "--processes" in flags,
        "cores": os.cpu_count(),
        "loadavg_at_start": load,
        "python": sys.version.split()[0],
        "commit": commit(),
        "profiled": "py-spy" if args.py_spy else None,
        "sink_loop": args.sink_loop,
        "campaign_id": campaign_id,
        "setup": setup_figures,
        "raw": raw_figures(raw, raw_size, raw_other, raw_recipients, n),
        "campaign": {
            "command": sink_figures["command"],
            "seconds": round(m.seconds, 3),
            "rate": round(rate, 1),
            "ratio": round(rate / raw_rate, 3),
            "ratio_target": RATIO_TARGET,
            "first_delivery_s": round(watch.first - watch.t0, 2) if watch.first else None,
            "last_delivery_s": round(watch.last - watch.t0, 2) if watch.last else None,
            "delivery_only_rate": (
                round(n / (watch.last - watch.first), 1)
                if watch.first and watch.last and watch.last > watch.first
                else None
            ),
            "stalls": watch.stalls,
            "stall_seconds": round(watch.stall_seconds, 2),
            "longest_stall_s_at": list(watch.longest_stall),
            "avg_message_bytes": round(gw_bytes),
            "cpu_pct": round(100 * m.cpu_seconds / m.seconds, 1),
            "cpu_us_per_msg": round(1e6 * m.cpu_seconds / n, 1),
            "cpu_main_thread_pct": round(100 * main_cpu / m.seconds, 1),
            "cpu_other_threads_pct": round(
                100 * (sum(watch.threads_cpu.values()) - main_cpu) / m.seconds, 1
            ),
            "threads": len(watch.threads_cpu),
            "cpu_sink_pct": round(100 * sink_figures["cpu_seconds"] / m.seconds, 1),
            "cpu_sink_us_per_msg": round(1e6 * sink_figures["cpu_seconds"] / n, 1),
            "cpu_other_pct": sink_figures["cpu_other_pct"],
            "peak_rss_mib": round(peak_mib, 1),
            "peak_source": peak_source,
            "ru_maxrss_mib": round(m.maxrss_kib / 1024, 1),
            "peak_vmhwm_mib": round(m.vmhwm_kib / 1024, 1),
            "bench_rss_at_start_mib": round(m.inherited_kib / 1024, 1),
            "processes": m.processes,
            "rss_mib_at_delivered": watch.rss_at,
            "memory_target_mib": MEMORY_TARGET_MIB,
            "memory_target_n": MEMORY_TARGET_N,
            "db_peak_mib": round(watch.db_peak / MIB, 1),
            "db_after_mib": round(db_after / MIB, 1),
            "tree_rss_peak_mib": round(watch.tree_rss_peak, 1),
            "tree_pss_peak_mib": round(watch.tree_pss_peak, 1),
            "sink_received": sink_figures["received"],
            "recipients": recipients,
            "final_status": final,
            "rss_timeline": watch.samples,
        },
        "status": status_data,
        "targets": million_targets(
            n, setup_figures, m.seconds, peak_mib, watch.tree_pss_peak, m.processes, db_after
        ),
        "cli_status_seconds": round(status.seconds, 2),
        "profile": profile_data,
        "notes": notes,
        "ok": not failures,
        "failures": failures,
    }
    return result, reports


WALL_TARGET_S = 600.0  # the 1,000,000-contact campaign: import + send under 10 minutes
DB_TARGET_BYTES = 1_000_000_000  # and a database under 1 GB after it (file + WAL)
IMPORT_TARGET_MB = 100.0  # `gateway contacts import` of 1,000,000 rows: peak RSS under 100 MB


def million_targets(
    n: int,
    s: dict[str, Any],
    send_seconds: float,
    main_peak_mib: float,
    tree_pss_mib: float,
    processes: int,
    db_bytes: int,
) -> dict[str, Any]:
    """The 1,000,000-contact goals, each with what this run measured and met or not. RSS
    goals are in MB (10^6 bytes), as the goals are written; a MiB is 1.049 MB."""
    imported = s["how"] == "import"
    setup_s = s["import_seconds"] if imported else s["insert_seconds"]
    wall = setup_s + send_seconds
    send_mb = max(main_peak_mib, tree_pss_mib) * MIB / 1e6
    rows = [
        {
            "goal": "import + send wall time",
            "value": round(wall, 1),
            "unit": "s",
            "target": f"< {WALL_TARGET_S:.0f} s",
            "met": wall < WALL_TARGET_S and imported,
            "detail": f"`contacts import` {setup_s:.1f} s + `campaign send` {send_seconds:.1f} s"
            + ("" if imported else " (contacts inserted with sqlite3, not imported: not the goal)"),
        },
        {
            "goal": "send peak RSS",
            "value": round(send_mb, 1),
            "unit": "MB",
            "target": f"< {MEMORY_TARGET_MIB:.0f} MB",
            "met": send_mb < MEMORY_TARGET_MIB,
            "detail": f"`campaign send` with all its {processes} processes: the larger of"
            f" the main process's peak RSS ({main_peak_mib * MIB / 1e6:.0f} MB) and the"
            " sampled peak of the sum of their proportional set sizes"
            f" ({tree_pss_mib * MIB / 1e6:.0f} MB; a page they share counted once)",
        },
        {
            "goal": "database after the campaign",
            "value": round(db_bytes / 1e6, 1),
            "unit": "MB",
            "target": f"< {DB_TARGET_BYTES / 1e9:.0f} GB",
            "met": db_bytes < DB_TARGET_BYTES,
            "detail": "the SQLite file with its write-ahead log",
        },
    ]
    if imported:
        import_mb = s["import_peak_rss_mib"] * MIB / 1e6
        rows.insert(
            1,
            {
                "goal": "import peak RSS",
                "value": round(import_mb, 1),
                "unit": "MB",
                "target": f"< {IMPORT_TARGET_MB:.0f} MB",
                "met": import_mb < IMPORT_TARGET_MB,
                "detail": "`gateway contacts import`",
            },
        )
    return {"n": n, "goals_n": MEMORY_TARGET_N, "rows": rows}


def targets_lines(t: dict[str, Any]) -> list[str]:
    scale = (
        ""
        if t["n"] >= t["goals_n"]
        else f" (this run N={t['n']:,}: the goals hold at {t['goals_n']:,}; run --million)"
    )
    lines = [f"  {t['goals_n']:,}-contact goals, measured in this run{scale}:"]
    for row in t["rows"]:
        lines.append(
            f"    {row['goal']:<28} {row['value']:>9,.1f} {row['unit']:<2}  target {row['target']:<9}"
            f"  {'MET' if row['met'] else 'MISSED'}   {row['detail']}"
        )
    return lines


def human(r: dict[str, Any]) -> str:
    raw, g, s = r["raw"], r["campaign"], r["setup"]
    flag = "" if r["concurrency_flag"] else " (campaign send has no --concurrency: default)"
    lines = [
        f"campaign: N={r['n']} concurrency={r['concurrency']}{flag} cores={r['cores']}"
        f" load={r['loadavg_at_start'][0]} python={r['python']} sink loop={r['sink_loop']}"
        f" commit={r['commit']}"
        + (
            f"  [PROFILED with {r['profiled']}: rates are not representative]"
            if r["profiled"]
            else ""
        ),
    ]
    if s["how"] == "import":
        lines.append(
            f"  setup (untimed)   init {s['init_seconds']:.1f} s, csv {s['csv_seconds']:.1f} s,"
            f" `gateway contacts import` {s['import_seconds']:.1f} s = {s['import_rate']} contacts/s"
            f" (gw.import_contacts, peak {s['import_peak_rss_mib']:.0f} MiB), db {s['db_mib_before']} MiB"
        )
    else:
        lines.append(
            f"  setup (untimed)   init {s['init_seconds']:.1f} s, sqlite3 insert {s['insert_seconds']:.1f} s"
            f" = {s['insert_rate']} contacts/s, db {s['db_mib_before']} MiB"
        )
    lines += [
        f"  raw aiosmtplib    {raw['rate']:8.0f} msg/s  {raw['seconds']:7.2f} s  {raw['avg_message_bytes']} B/msg"
        f"  cpu client {raw['cpu_client_pct']:.0f}% = {raw['cpu_client_us_per_msg']:.0f} us/msg,"
        f" sink {raw['cpu_sink_pct']:.0f}% = {raw['cpu_sink_us_per_msg']:.0f} us/msg,"
        f" other processes {raw['cpu_other_pct']:.0f}%",
        f"  campaign send     {g['rate']:8.0f} msg/s  {g['seconds']:7.2f} s  {g['avg_message_bytes']} B/msg"
        f"  cpu gateway {g['cpu_pct']:.0f}% = {g['cpu_us_per_msg']:.0f} us/msg"
        f" (event loop thread {g['cpu_main_thread_pct']:.0f}%,"
        f" {g['threads'] - 1} other threads {g['cpu_other_threads_pct']:.0f}%),"
        f" sink {g['cpu_sink_pct']:.0f}% = {g['cpu_sink_us_per_msg']:.0f} us/msg,"
        f" other processes {g['cpu_other_pct']:.0f}%",
        f"    `{g['command']}`: first delivery at +{g['first_delivery_s'] or '-'} s, last at"
        f" +{g['last_delivery_s'] or '-'} s, exit at +{g['seconds']:.2f} s"
        + (f"; first->last {g['delivery_only_rate']:.0f} msg/s" if g["delivery_only_rate"] else "")
        + f"; `campaign status` alone takes {r['cli_status_seconds']} s",
        f"    stalls (>= {STALL} s without a delivery, between first and last): {g['stalls']},"
        f" {g['stall_seconds']} s in all, longest {g['longest_stall_s_at'][0]} s"
        f" from +{g['longest_stall_s_at'][1]} s",
        f"  campaign/raw      {g['ratio']:8.2f}                  target >= {RATIO_TARGET}"
        f"  {'met' if g['ratio'] >= RATIO_TARGET else 'MISSED'}",
        f"  peak memory       {g['peak_rss_mib']:8.1f} MiB  target < {MEMORY_TARGET_MIB:.0f} MiB"
        f" at {MEMORY_TARGET_N:,} contacts"
        f"  {'met' if g['peak_rss_mib'] < MEMORY_TARGET_MIB else 'MISSED'}"
        + ("" if r["n"] >= MEMORY_TARGET_N else f" (at N={r['n']:,})"),
        f"    from {g['peak_source']} (ru_maxrss {g['ru_maxrss_mib']} MiB, VmHWM seen"
        f" {g['peak_vmhwm_mib']} MiB, this process {g['bench_rss_at_start_mib']} MiB at the start,"
        f" {g['processes']} process{'es' if g['processes'] > 1 else ''};"
        f" all of them together: RSS summed {g['tree_rss_peak_mib']} MiB,"
        f" proportional set size summed {g['tree_pss_peak_mib']} MiB)",
        "    RSS when delivered "
        + ", ".join(f"{k}: {v} MiB" for k, v in g["rss_mib_at_delivered"].items())
        + f"; database {s['db_mib_before']} MiB before, peak {g['db_peak_mib']} MiB, after {g['db_after_mib']} MiB",
    ]
    if r.get("targets"):
        lines += targets_lines(r["targets"])
    lines += outcome(
        r,
        "OK: the sink got exactly N gateway and N baseline messages, every recipient"
        " exactly once; campaign done, sent N",
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    say = speaker(args.json)
    if not GATEWAY.exists():
        fail(f"{GATEWAY} not found: install the package into the venv")
    sink = Sink(args.sink_loop, per_recipient=True)
    try:
        with scratch("gw-campaign-", args.keep, say) as tmp:
            result, reports = run(args, sink, tmp, say)
    finally:
        sink.stop()
    return finish(
        result, reports, args.json, human_workers if result.get("mode") == "workers" else human
    )


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark of the console's dashboard page (GET /admin) with 1,000,000 message log rows.

Run it with the project's virtualenv (the package must be installed):

    .venv/bin/python bench/dashboard.py                        # 1,000,000 rows over 30 days
    .venv/bin/python bench/dashboard.py --rows 100000 --requests 20   # quicker
    .venv/bin/python bench/dashboard.py --json

What is timed: GET /admin, the dashboard (gateway/web/admin/dashboard.py), through httpx's
ASGI transport against `create_app(gw, worker=False)`, signed in as a viewer: the console's
session lookup, the per-day counts of the last 30 days (gateway/stats.py, read from
daily_counts), the sender-side refusals of the last 24 hours, the outbox backlog, the four
SVG charts and the page. The median and 95th percentile of --requests requests, after
--warmup untimed ones. The dashboard never reads the message log: store/tally.py counts each
event per day in the transaction that writes it, so the page costs the same at any size.

Two rounds on one SQLite file (a new one in a temporary directory):

1. The empty database (`gateway init`'s schema, one staff member): timed.
2. Loaded (untimed; the time is reported), straight into the file with sqlite3:
   --rows message_log rows spread over the last --days days with the statuses a gateway
   writes (about 45% accepted, 43% sent, 1% bounced, 1% failed, 5% suppressed, 1% blocked
   ...), one outbox row per sent, bounced or failed message (state as the worker leaves
   it, no body), --backlog queued and a few leased outbox rows, some complaint and 5.7.x
   bounce reports, and daily_counts: what store/tally.py would have counted for those rows.
   Then timed again.

Checks (exit status 1 when one fails): the loaded median is under --limit-ms (default 300);
the dashboard's figures equal a GROUP BY over the message log it never reads (run once,
untimed); every statement the dashboard runs is an index search (SQLite's EXPLAIN QUERY
PLAN names no SCAN of message_log, outbox, bounces or daily_counts).

Only in-process requests: no socket is opened.
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from _common import SENDER_ENV, disturbed, doc_parser, finish, outcome, scratch, speaker
from _proc import cpu_busy, other_pct, stat_cpu

from gateway import Gateway
from gateway.stats import dashboard
from gateway.store.tally import utc_day
from gateway.web.admin import auth
from gateway.web.app import create_app

STAFF, PASSWORD = "viewer@first.vn", "bench dashboard password"
BASE = "https://mail.first.vn"
CHUNK = 50_000
# What a day of a gateway's message log holds, by status (weights).
STATUSES = (
    ("accepted", 450), ("sent", 430), ("suppressed", 50), ("bounced", 10), ("failed", 10),
    ("blocked", 10),
)  # fmt: skip
SCANNED = ("message_log", "outbox", "bounces", "daily_counts")


def log_rows(n: int, days: int, now: float, rnd: random.Random) -> Iterator[tuple[Any, ...]]:
    """message_log rows: (message_id, email, category, topic_id, subject, status, reason,
    created_at, source), spread evenly over the last `days` days."""
    span = days * 86400 - 3600
    names = [s for s, _ in STATUSES]
    weights = [w for _, w in STATUSES]
    for i in range(n):
        status = rnd.choices(names, weights)[0]
        created = now - span + span * i / max(n - 1, 1)
        yield (
            f"<bench{i:08d}@first.vn>",
            f"kh{i % 200_000:06d}@example.vn",
            "marketing",
            1,
            "Ưu đãi tháng 12",
            status,
            "5.1.1 user unknown" if status == "bounced" else None,
            created,
            "campaign",
        )


def load(path: Path, rows: int, days: int, backlog: int, now: float) -> dict[str, Any]:
    """Fill the file; returns what a GROUP BY over the message log says, per (day, status)."""
    rnd = random.Random(13)
    con = sqlite3.connect(path)
    counts: Counter[tuple[str, str]] = Counter()
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=OFF")
        with con:
            con.execute("INSERT INTO topics (slug, name, double_opt_in, created_at) VALUES"
                        " ('news', 'Tin tức', 0, ?)", (now,))  # fmt: skip
            batch: list[tuple[Any, ...]] = []
            outbox: list[tuple[Any, ...]] = []
            for row in log_rows(rows, days, now, rnd):
                batch.append(row)
                counts[(utc_day(row[7]), row[5])] += 1
                if row[5] in ("sent", "bounced", "failed"):
                    outbox.append((row[0], row[1], row[5], row[7]))
                if len(batch) >= CHUNK:
                    _flush(con, batch, outbox)
            _flush(con, batch, outbox)
            waiting = [
                (f"<wait{i:08d}@first.vn>", f"kh{i:06d}@example.vn", "queued", now - 900 + i * 0.01)
                for i in range(backlog)
            ] + [
                (f"<wire{i}@first.vn>", f"kw{i}@example.vn", "sending", now - 30) for i in range(8)
            ]
            _flush(con, [], waiting)
            # Complaint reports and a few sender-side refusals (5.7.x), spread like the mail.
            reports = [
                ("complaint" if i % 5 else "policy", now - rnd.uniform(0, days * 86400))
                for i in range(max(rows // 2000, 10))
            ]
            con.executemany(
                "INSERT INTO bounces (email, message_id, kind, status, detail, source, created_at)"
                " VALUES ('x@example.vn', NULL, ?, NULL, 'bench', 'arf', ?)",
                reports,
            )
            for kind, when in reports:
                counts[
                    (utc_day(when), "complained" if kind == "complaint" else "sender_refused")
                ] += 1
            con.executemany(
                "INSERT INTO daily_counts (day, metric, n) VALUES (?, ?, ?)",
                [(day, metric, n) for (day, metric), n in sorted(counts.items())],
            )
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        truth = Counter()
        for day, status, n in con.execute(
            "SELECT date(created_at, 'unixepoch'), status, COUNT(*) FROM message_log GROUP BY 1, 2"
        ):
            truth[(day, status)] = n
    finally:
        con.close()
    return {"truth": truth, "counts": counts}


def _flush(
    con: sqlite3.Connection, batch: list[tuple[Any, ...]], outbox: list[tuple[Any, ...]]
) -> None:
    con.executemany(
        "INSERT INTO message_log (message_id, email, category, topic_id, subject, status,"
        " reason, created_at, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        batch,
    )
    con.executemany(
        "INSERT INTO outbox (message_id, email, category, topic_id, sender, state, attempts,"
        " next_attempt_at, created_at, updated_at) VALUES (?, ?, 'marketing', 1,"
        " 'news@first.vn', ?, 1, ?4, ?4, ?4)",
        outbox,
    )
    batch.clear()
    outbox.clear()


async def timed(client: httpx.AsyncClient, requests: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        answer = await client.get("/admin")
        assert answer.status_code == 200, answer.text[:500]
    times = []
    for _ in range(requests):
        start = time.perf_counter()
        answer = await client.get("/admin")
        times.append((time.perf_counter() - start) * 1000)
        assert answer.status_code == 200 and answer.text.count("<svg") == 4
    times.sort()
    return {
        "median_ms": round(statistics.median(times), 2),
        "p95_ms": round(times[max(0, int(len(times) * 0.95) - 1)], 2),
        "min_ms": round(times[0], 2),
    }


async def plans(gw: Gateway, path: Path) -> list[dict[str, Any]]:
    """Every statement `dashboard()` runs, with SQLite's plan for it."""
    seen: list[tuple[str, tuple[Any, ...]]] = []
    rows = gw.store.rows

    async def recording(sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        seen.append((sql, tuple(params)))
        return await rows(sql, params)

    gw.store.rows = recording  # type: ignore[method-assign]
    try:
        await dashboard(gw)
    finally:
        gw.store.rows = rows  # type: ignore[method-assign]
    con = sqlite3.connect(path)
    try:
        found = []
        for sql, params in seen:
            plan = [r[3] for r in con.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
            scans = [p for p in plan if p.startswith("SCAN") and any(t in p for t in SCANNED)]
            found.append({"sql": sql, "plan": plan, "scans": scans})
        return found
    finally:
        con.close()


async def run(args: Any, say: Any) -> dict[str, Any]:
    failures: list[str] = []
    notes: list[str] = []
    with scratch("bench-dashboard-", args.keep, say) as tmp:
        path = tmp / "gateway.db"
        env = {
            **SENDER_ENV,
            "GATEWAY_DATABASE_URL": f"sqlite:///{path}",
            "GATEWAY_BASE_URL": BASE,
            "GATEWAY_SMTP_URL": f"maildir://{tmp / 'mail'}",
        }
        result: dict[str, Any] = {"rows": args.rows, "days": args.days, "requests": args.requests}
        async with Gateway.from_env(env) as gw:
            await auth.service(gw).add(STAFF, "viewer", PASSWORD)
        for phase in ("empty", "loaded"):
            if phase == "loaded":
                say(f"loading {args.rows:,} message log rows over {args.days} days ...")
                start = time.perf_counter()
                loaded = load(path, args.rows, args.days, args.backlog, time.time())
                result["load_s"] = round(time.perf_counter() - start, 1)
                say(f"loaded in {result['load_s']} s")
            async with Gateway.from_env(env) as gw:
                app = create_app(gw, worker=False)
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
                    answer = await client.post(
                        "/admin/login", data={"email": STAFF, "password": PASSWORD}
                    )
                    if answer.status_code != 303:
                        return {"ok": False, "failures": [f"login answered {answer.status_code}"]}
                    say(f"{phase}: {args.requests} requests of GET /admin ...")
                    busy, ours, start = cpu_busy(), stat_cpu(os.getpid()), time.perf_counter()
                    result[phase] = await timed(client, args.requests, args.warmup)
                    pct = other_pct(
                        cpu_busy() - busy,
                        stat_cpu(os.getpid()) - ours,
                        time.perf_counter() - start,
                    )
                    note = disturbed(f"{phase} requests", pct)
                    if note:
                        notes.append(note)
                if phase == "loaded":
                    board = await dashboard(gw, days=args.days)
                    truth = loaded["truth"]
                    for metric in ("sent", "bounced", "accepted", "failed"):
                        want = sum(
                            n for (d, m), n in truth.items() if m == metric and d >= board.first_day
                        )
                        if board.totals[metric] != want:
                            failures.append(
                                f"{metric}: the dashboard says {board.totals[metric]}, the log {want}"
                            )
                    result["totals"] = {
                        m: board.totals[m] for m in ("sent", "bounced", "complained")
                    }
                    result["backlog"] = board.backlog.queued if board.backlog else None
                    result["plans"] = await plans(gw, path)
                    for p in result["plans"]:
                        if p["scans"]:
                            failures.append(f"a statement reads a whole table: {p['scans']}")
        median = result["loaded"]["median_ms"]
        if median >= args.limit_ms:
            failures.append(f"median {median} ms at {args.rows:,} rows, over {args.limit_ms} ms")
    return {**result, "notes": notes, "failures": failures, "ok": not failures}


def human(r: dict[str, Any]) -> str:
    lines = [f"dashboard (GET /admin), {r['requests']} requests after warm-up, SQLite:"]
    for phase, label in (("empty", "0 rows"), ("loaded", f"{r['rows']:,} rows")):
        if phase in r:
            t = r[phase]
            lines.append(
                f"  {label:>16}: median {t['median_ms']:.1f} ms, p95 {t['p95_ms']:.1f} ms,"
                f" min {t['min_ms']:.1f} ms"
            )
    if "load_s" in r:
        lines.append(
            f"  load (untimed): {r['load_s']} s; totals {r.get('totals')}, backlog {r.get('backlog')}"
        )
    for p in r.get("plans", []):
        lines.append(f"  plan: {' | '.join(p['plan'])}")
    return "\n".join(lines + outcome(r))


def main() -> int:
    parser = doc_parser("bench/dashboard.py", __doc__ or "")
    parser.add_argument(
        "--rows", type=int, default=1_000_000, help="message log rows (default 1,000,000)"
    )
    parser.add_argument("--days", type=int, default=30, help="days they spread over (default 30)")
    parser.add_argument(
        "--backlog", type=int, default=2000, help="queued outbox rows (default 2000)"
    )
    parser.add_argument("--requests", type=int, default=50, help="timed requests (default 50)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed requests first (default 5)")
    parser.add_argument(
        "--limit-ms",
        type=float,
        default=300,
        help="the loaded median must stay under this (default 300)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (the database)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    args = parser.parse_args()
    if args.rows < 1 or args.days < 1 or args.requests < 1 or args.warmup < 0 or args.backlog < 0:
        parser.error(
            "--rows, --days and --requests must be at least 1, --warmup and --backlog at least 0"
        )
    say = speaker(args.json)
    result = asyncio.run(run(args, say))
    return finish(result, [], args.json, human)


if __name__ == "__main__":
    sys.exit(main())

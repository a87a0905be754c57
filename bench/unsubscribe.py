"""Benchmark of one-click unsubscribe: `gateway serve` against a bare Starlette endpoint, in one run.

Run it with the project's virtualenv (the package must be installed) and wrk on the PATH
(Debian: `apt-get install wrk`):

    .venv/bin/python bench/unsubscribe.py                              # 20,000 contacts, 10 s, 64 connections
    .venv/bin/python bench/unsubscribe.py --seconds 3 --contacts 5000  # quicker
    .venv/bin/python bench/unsubscribe.py --json                       # one JSON object with every figure
    .venv/bin/python bench/unsubscribe.py --profile py-spy             # where the gateway's time goes

What happens, in order:

1. Bare baseline. A SQLite file (WAL, like the gateway's) gets a table t(id, n) with one row
   per URL. A bare Starlette app, `POST /hit/{id}` -> `UPDATE t SET n = n + 1 WHERE id = :id`
   through `databases` -> "ok", runs in a child process served exactly as `gateway serve`
   serves the gateway: `uvicorn.run(app, host, port, log_level="warning", lifespan="on")`,
   one process; so the same event loop (uvloop when installed) and the same HTTP parser
   (httptools when installed). Like the gateway's store it keeps one shared SQLite connection
   (--bare-connection per-request gives `databases`' default of a new connection and thread
   for every request instead).

2. Gateway. A fresh SQLite database in a temporary directory gets a topic and N contacts
   (untimed, gw.import_contacts on a generated CSV, before the server starts). Each contact's
   unsubscribe URL is `gw.renderer.links(contact, topic)["unsubscribe_url"]`, with
   GATEWAY_BASE_URL=http://127.0.0.1:<port>. Then `python -m gateway serve --no-worker` runs
   in a child process (GATEWAY_SMTP_URL=maildir://<tmp>/mail; nothing is delivered).

Both servers get the same load, one server at a time: a few sequential warm-up POSTs (their
URLs are not reused), then wrk with --connections connections, each request a POST of
`List-Unsubscribe=One-Click` (application/x-www-form-urlencoded) to a path never requested
before. For the gateway that is a different contact each time, so every POST is a first
refusal: a suppression, an opt-out consent record and the ST-2 confirmation email in the
outbox, committed before the answer. (The gateway commits the refusals that arrive together
in one transaction, one fsync for all, and answers each after that COMMIT: group commit,
gateway/store/batch.py. The bare endpoint commits each request on its own.) The load runs
for --seconds or until the URLs run out; then no new request starts and the ones in flight
are awaited (bench/unsubscribe.lua), so the server's writes can be counted against the
answers.

Figures:
  rate                     2xx answers / wrk's wall time
  p50 / p99                wrk's latency percentiles (time from writing a request to its answer)
  rate gateway/bare        target >= 0.7
  p99 gateway/bare         target <= 1.5
  server cpu               CPU time of the server process (all its threads) over the wall time;
                           near 100% means one core is the limit (one process, one event loop)
  wrk cpu                  the same for the load generator, which shares the machine's cores

Checks (exit status 1 when one fails): no socket error and no non-2xx answer; every request
sent was answered; after the server has stopped, the gateway's database holds exactly one
suppression, one opt-out consent record and one outbox message per 2xx answer (warm-up
included), and the bare table one increment per 2xx answer, each on its own row.

--profile py-spy samples the gateway process during its timed run (py-spy must be installed:
`.venv/bin/pip install py-spy`; run as root or with ptrace allowed) and prints the functions
with the largest share of samples, inclusive and self. --profile cprofile runs the gateway
under `python -m cProfile` instead (event-loop thread only, and it slows the server down: the
figures are then marked as profiled). Either way the gateway's figures are not representative.

Only 127.0.0.1 is used. The temporary directory is removed afterwards unless --keep.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import io
import json
import os
import re
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from contextlib import asynccontextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any

from _common import (
    HOST,
    SENDER_ENV,
    TOPIC,
    add_profile_flags,
    commit,
    doc_parser,
    fail,
    finish,
    scratch,
    speaker,
    without_gateway_env,
    write_contacts_csv,
)
from _proc import stat_cpu
from _profile import collapsed_stacks, cprofile_rows, cprofile_table, short_path

ONE_CLICK = b"List-Unsubscribe=One-Click"
FORM_TYPE = "application/x-www-form-urlencoded"
BARE_UPDATE = "UPDATE t SET n = n + 1 WHERE id = :id"
LUA = Path(__file__).resolve().parent / "unsubscribe.lua"
PYSPY_RATE = 250  # samples per second


def gateway_env(tmp: Path, port: int) -> dict[str, str]:
    """The gateway serves its pages on `port`; its mail goes to a maildir nobody reads."""
    return {
        "GATEWAY_DATABASE_URL": f"sqlite:///{tmp / 'gateway.db'}",
        **SENDER_ENV,
        "GATEWAY_BASE_URL": f"http://{HOST}:{port}",
        "GATEWAY_SMTP_URL": f"maildir://{tmp / 'mail'}",
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- the bare server


def serve_bare(port: int, db_path: str, connection_mode: str, loop: str) -> None:
    """Child process: the bare endpoint, served the way cli.cmd_serve serves the gateway."""
    if loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    import uvicorn
    from databases import Database
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    database = Database(f"sqlite:///{db_path}", timeout=30)
    shared: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette):
        await database.connect()
        if connection_mode == "shared":
            # One connection for every request, as gateway/store/base.py does on SQLite;
            # `databases` serializes the queries on it with its query lock.
            connection = database.connection()
            await connection.__aenter__()
            shared["connection"] = connection
        try:
            yield
        finally:
            if "connection" in shared:
                await shared.pop("connection").__aexit__()
            await database.disconnect()

    async def hit(request: Request) -> PlainTextResponse:
        target = shared.get("connection", database)
        await target.execute(BARE_UPDATE, {"id": int(request.path_params["id"])})
        return PlainTextResponse("ok")

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    app = Starlette(
        routes=[Route("/healthz", healthz), Route("/hit/{id:int}", hit, methods=["POST"])],
        lifespan=lifespan,
    )
    uvicorn.run(app, host=HOST, port=port, log_level="warning", lifespan="on")


def setup_bare(db: Path, rows: int) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA journal_mode=WAL")  # as the gateway's migration sets it
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
        conn.executemany("INSERT INTO t (id, n) VALUES (?, 0)", ((i,) for i in range(1, rows + 1)))
    conn.close()


def count_bare(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        rows_hit, total, over = conn.execute(
            "SELECT count(*), coalesce(sum(n), 0), coalesce(sum(n > 1), 0) FROM t WHERE n > 0"
        ).fetchone()
    conn.close()
    return {"rows_updated": rows_hit, "increments": total, "rows_hit_twice": over}


# --------------------------------------------------------------------------- the gateway


async def setup_gateway(env: dict[str, str], tmp: Path, n: int) -> tuple[list[str], float]:
    """A topic and N subscribed contacts (untimed), and the path of each unsubscribe URL."""
    from gateway import Gateway
    from gateway.store import Contact

    path = tmp / "contacts.csv"
    write_contacts_csv(path, n, lambda i: "vi" if i % 4 else "en")
    t0 = time.perf_counter()
    async with Gateway.from_env(env) as gw:
        topic = await gw.add_topic(TOPIC, "Tin tức")
        report = await gw.import_contacts(path, subscribe=[TOPIC])
        if report.bad_rows or report.created != n or report.subscribed != n:
            fail(f"contact import went wrong: {report.as_dict()}")
        rows = await gw.store.rows(
            "SELECT id, uid, email, name, language, status FROM contacts ORDER BY id"
        )
        base = env["GATEWAY_BASE_URL"]
        paths = []
        for row in rows:
            url = gw.renderer.links(Contact(*row), topic)["unsubscribe_url"]
            if not url.startswith(base + "/unsubscribe/"):
                fail(f"unexpected unsubscribe URL {url}")
            paths.append(url[len(base) :])
    if len(paths) != n:
        fail(f"{len(paths)} contacts in the database, not {n}")
    return paths, time.perf_counter() - t0


def count_gateway(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        one = lambda sql: conn.execute(sql).fetchone()[0]  # noqa: E731
        counts = {
            "suppressions": one("SELECT count(*) FROM suppressions"),
            "suppressed_emails": one("SELECT count(DISTINCT email) FROM suppressions"),
            "opt_out_records": one("SELECT count(*) FROM consent_ledger WHERE action = 'opt_out'"),
            "outbox": one("SELECT count(*) FROM outbox"),
        }
    conn.close()
    return counts


# --------------------------------------------------------------------------- servers and load


class Server:
    """A server child process: started, waited for on /healthz, stopped with SIGINT (uvicorn
    then finishes the requests it has before exiting)."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], cwd: Path, port: int):
        self.name, self.port = name, port
        self.log = cwd / f"{name}.log"
        self._log = self.log.open("wb")
        self.proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=self._log, stderr=self._log)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                self._fail(f"exited with status {self.proc.returncode} while starting")
            try:
                with urllib.request.urlopen(f"http://{HOST}:{port}/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                self._fail("did not answer /healthz within 60 s")
            time.sleep(0.1)

    def _fail(self, what: str) -> None:
        self._log.flush()
        tail = self.log.read_text(errors="replace")[-3000:]
        fail(f"the {self.name} server {what}; its output:\n{tail}")

    def cpu_seconds(self) -> float:
        """User + system time of the process, all threads."""
        return stat_cpu(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def warm_up(port: int, paths: list[str]) -> int:
    """Sequential POSTs on one keep-alive connection; returns the 2xx count (untimed)."""
    ok = 0
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        for path in paths:
            conn.request("POST", path, body=ONE_CLICK, headers={"Content-Type": FORM_TYPE})
            response = conn.getresponse()
            body = response.read()
            if not 200 <= response.status < 300:
                raise SystemExit(
                    f"unsubscribe: warm-up POST {path} answered {response.status}: {body[:300]!r}"
                )
            ok += 1
    finally:
        conn.close()
    return ok


def run_wrk(
    server: Server, paths: list[str], tmp: Path, args: argparse.Namespace, sampler: Any
) -> dict[str, Any]:
    """wrk on one server; the Lua script walks `paths`, each once."""
    paths_file = tmp / f"{server.name}.paths"
    paths_file.write_text("\n".join(paths) + "\n", encoding="ascii")
    done_prefix = tmp / f"{server.name}.done"
    threads = min(args.threads, args.connections)
    backstop = int(args.seconds) + 60  # the script drains itself long before this
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{args.connections}",
        f"-d{backstop}s",
        "--timeout",
        "30s",
        "--latency",
        "-s",
        str(LUA),
        f"http://{HOST}:{server.port}",
        "--",
        str(paths_file),
        str(threads),
        str(args.seconds),
        str(done_prefix),
    ]
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu0, t0 = server.cpu_seconds(), time.perf_counter()
    spy = sampler(server) if sampler else None
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    all_done_at = None
    while proc.poll() is None and time.perf_counter() - t0 < backstop + 60:
        time.sleep(0.05)
        if all_done_at is None and all(Path(f"{done_prefix}{k}").exists() for k in range(threads)):
            all_done_at = time.perf_counter()
        if all_done_at is not None and time.perf_counter() - all_done_at > 0.5:
            # The script sends this itself when wrk's Lua has its ffi module (LuaJIT).
            proc.send_signal(signal.SIGINT)
            all_done_at = float("inf")
    if proc.poll() is None:
        proc.kill()
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    cpu1 = server.cpu_seconds()
    if spy is not None:
        spy.wait()
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((x for x in stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if line is None:
        fail(f"wrk failed (status {proc.returncode}):\n{stdout}\n{stderr}")
    w = json.loads(line.removeprefix("BENCH_JSON "))
    seconds = w["duration_us"] / 1e6
    lat = w["latency_us"]
    wrk_cpu = (children1.ru_utime - children0.ru_utime) + (children1.ru_stime - children0.ru_stime)
    wrk_cpu_pct = None if spy is not None else round(100 * wrk_cpu / wall, 1)  # py-spy: a child too
    return {
        "seconds": round(seconds, 3),
        "urls": len(paths),
        "ran_out_of_urls": w["issued"] >= len(paths),
        "issued": w["issued"],
        "ok": w["ok"],
        "non_2xx": w["non_2xx"],
        "first_non_2xx": w["first_non_2xx"] or None,
        "socket_errors": w["socket_errors"],
        "rate": w["ok"] / seconds if seconds else 0.0,
        "latency_ms": {k: round(v / 1000, 3) for k, v in lat.items()},
        "p50_ms": lat["p50"] / 1000,
        "p99_ms": lat["p99"] / 1000,
        "server_cpu_pct": round(100 * (cpu1 - cpu0) / wall, 1),
        "wrk_cpu_pct": wrk_cpu_pct,
        "bytes_per_answer": round(w["bytes"] / w["responses"]) if w["responses"] else 0,
    }


def under_load(
    server: Server,
    paths: list[str],
    tmp: Path,
    args: argparse.Namespace,
    sampler: Any,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """--warmup untimed POSTs, then wrk on the remaining paths; the server stops either way."""
    try:
        warm = warm_up(server.port, paths[: args.warmup])
        say(f"{server.name}: wrk, {args.connections} connections, {args.seconds:g} s ...")
        result = run_wrk(server, paths[args.warmup :], tmp, args, sampler)
    finally:
        server.stop()
    result["warmup_ok"] = warm
    return result


def load_failures(name: str, r: dict[str, Any]) -> list[str]:
    failures = []
    if any(r["socket_errors"].values()):
        failures.append(f"{name}: socket errors {r['socket_errors']}")
    if r["non_2xx"]:
        failures.append(f"{name}: {r['non_2xx']} non-2xx answers, first: {r['first_non_2xx']}")
    if r["ok"] + r["non_2xx"] != r["issued"]:
        failures.append(
            f"{name}: {r['issued']} requests sent but {r['ok'] + r['non_2xx']} answered"
        )
    if r["ok"] == 0:
        failures.append(f"{name}: no 2xx answer at all")
    return failures


# --------------------------------------------------------------------------- profiling


class PySpy:
    """py-spy record on the gateway process for the length of the timed run."""

    def __init__(self, out: Path, seconds: float, exe: str) -> None:
        self.out, self.seconds, self.exe = out, seconds, exe
        self.proc: subprocess.Popen[bytes] | None = None

    def __call__(self, server: Server) -> PySpy:
        self.proc = subprocess.Popen(
            [
                self.exe,
                "record",
                "--pid",
                str(server.proc.pid),
                "--duration",
                str(max(1, int(self.seconds))),
                "--rate",
                str(PYSPY_RATE),
                "--format",
                "raw",
                "--threads",
                "--output",
                str(self.out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        return self

    def wait(self) -> None:
        assert self.proc is not None
        try:
            _, err = self.proc.communicate(timeout=self.seconds + 60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            err = b""
        if self.proc.returncode != 0 and not self.out.exists():
            fail(f"py-spy failed: {err.decode(errors='replace')[-2000:]}")


_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def pyspy_report(path: Path, answers: int, top: int) -> str:
    """Collapsed stacks (py-spy --format raw --threads) -> the functions with the most samples.
    Only samples where a thread was running count (py-spy leaves idle ones out)."""
    inclusive: Counter[tuple[str, str]] = Counter()
    self_: Counter[tuple[str, str]] = Counter()
    by_thread: Counter[str] = Counter()
    for (thread, *frames), count in collapsed_stacks(path):
        thread = re.sub(r"^thread \(\d+\): ", "", thread)
        by_thread[thread] += count
        names = []
        for frame in frames:
            m = _FRAME.match(frame)
            names.append(f"{m['func']} ({short_path(m['file'])})" if m else frame)
        for name in set(names):
            inclusive[thread, name] += count
        if names:
            self_[thread, names[-1]] += count
    total = sum(by_thread.values()) or 1
    per = 1e6 / PYSPY_RATE / max(answers, 1)  # us per answer that one sample stands for
    out = io.StringIO()
    out.write(
        f"=== py-spy: gateway server during its timed run, {total} busy samples at"
        f" {PYSPY_RATE}/s, {answers} answers ===\n"
    )
    for thread, n in by_thread.most_common():
        out.write(f"  thread {thread}: {n} samples = {n * per:.0f} us/answer\n")
    main = by_thread.most_common(1)[0][0] if by_thread else ""
    n_main = by_thread[main] or 1
    for title, counter, limit in (("inclusive", inclusive, top), ("self", self_, top // 2)):
        out.write(f"--- {main}: top {limit} by {title} samples (share, us/answer) ---\n")
        rows = sorted(((n, name) for (t, name), n in counter.items() if t == main), reverse=True)
        for n, name in rows[:limit]:
            out.write(f"  {100 * n / n_main:5.1f}%  {n * per:7.0f}  {name}\n")
    return out.getvalue()


def cprofile_report(path: Path, answers: int, top: int) -> str:
    import pstats

    rows = cprofile_rows(pstats.Stats(str(path)))
    skip = ("<", "asyncio/", "uvicorn/", "runpy", "cProfile")
    return (
        f"=== cProfile: gateway server, event-loop thread ({answers} answers) ===\n"
        + cprofile_table(rows, max(answers, 1), "ans", skip, top)
    )


# --------------------------------------------------------------------------- main


def _http_impl() -> str:
    try:
        import httptools  # noqa: F401
    except ImportError:
        return "h11"
    return "httptools"


def _wrk_version() -> str:
    proc = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    m = re.search(r"wrk (\S+)", proc.stdout + proc.stderr)
    return m.group(1) if m else "?"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = doc_parser("unsubscribe.py", __doc__)
    parser.add_argument(
        "--contacts",
        type=int,
        default=20000,
        help="contacts created for the gateway; each timed POST uses up one (default 20000)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=10.0,
        help="timed load per server, unless the URLs run out first (default 10)",
    )
    parser.add_argument(
        "--connections",
        "-c",
        type=int,
        default=64,
        help="concurrent keep-alive connections, one request in flight each (default 64)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="wrk threads (default 1: one is far from its limit here, and the server needs "
        "the other cores)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=200,
        help="sequential untimed POSTs per server before the load, on URLs of their own "
        "(default 200); they are in the database checks",
    )
    parser.add_argument(
        "--bare-rows",
        type=int,
        default=200000,
        help="rows of the bare table, one URL each (default 200000: more than the bare "
        "endpoint gets through in --seconds, so its run is not cut short)",
    )
    parser.add_argument(
        "--bare-connection",
        choices=("shared", "per-request"),
        default="shared",
        help="shared (default): one SQLite connection for all requests, as the gateway's "
        "store keeps; per-request: `databases`' default, a new connection and thread per "
        "request",
    )
    add_profile_flags(
        parser,
        ("py-spy", "cprofile"),
        "profile the gateway server during its run (its figures are then not representative)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary directory (databases, server logs, path lists, profiles)",
    )
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="uvloop",
        help="uvloop (default): what `gateway serve` runs on (uvicorn.run picks uvloop when "
        "installed); asyncio is not offered separately any more",
    )
    parser.add_argument("--serve-bare", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_bare:
        return args
    if args.contacts <= args.warmup or args.connections < 1 or args.threads < 1:
        parser.error("--contacts must exceed --warmup; --connections and --threads >= 1")
    if args.seconds <= 0 or args.bare_rows <= args.warmup:
        parser.error("--seconds must be positive and --bare-rows must exceed --warmup")
    if shutil.which("wrk") is None:
        parser.error(
            "wrk is not on the PATH: `apt-get install wrk` (Debian) or build it from source"
        )
    return args


def run(args: argparse.Namespace, tmp: Path, say: Callable[[str], None]) -> dict[str, Any]:
    failures: list[str] = []
    base_env = without_gateway_env()
    sampler = None
    profile_file = tmp / ("gateway.pyspy.txt" if args.profile == "py-spy" else "gateway.prof")
    if args.profile == "py-spy":
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(exe).exists():
            fail("--profile py-spy needs `.venv/bin/pip install py-spy`")
        sampler = PySpy(profile_file, args.seconds, exe)

    # -- bare
    bare_db = tmp / "bare.db"
    say(f"bare: {args.bare_rows} rows, starting the server ...")
    setup_bare(bare_db, args.bare_rows)
    bare_paths = [f"/hit/{i}" for i in range(1, args.bare_rows + 1)]
    port = free_port()
    bare_server = Server(
        "bare",
        [sys.executable, str(Path(__file__).resolve()), "--serve-bare", str(port), str(bare_db)]
        + [args.bare_connection, args.loop],
        base_env,
        tmp,
        port,
    )
    bare = under_load(bare_server, bare_paths, tmp, args, None, say)
    bare["db"] = count_bare(bare_db)
    failures += load_failures("bare", bare)
    want = bare["ok"] + bare["warmup_ok"]
    if bare["db"]["increments"] != want or bare["db"]["rows_updated"] != want:
        failures.append(f"bare: {bare['db']} in the table, not {want} rows updated once each")

    # -- gateway
    port = free_port()
    env = gateway_env(tmp, port)
    say(f"gateway: importing {args.contacts} contacts and signing their URLs (untimed) ...")
    paths, setup_seconds = asyncio.run(setup_gateway(env, tmp, args.contacts))
    cmd = [sys.executable, "-m", "gateway", "serve", "--no-worker", "--port", str(port)]
    if args.profile == "cprofile":
        cmd[1:1] = ["-m", "cProfile", "-o", str(profile_file)]
    say("gateway: starting `gateway serve --no-worker` ...")
    gw_server = Server("gateway", cmd, {**base_env, **env}, tmp, port)
    gateway = under_load(gw_server, paths, tmp, args, sampler, say)
    gw_warm = gateway["warmup_ok"]
    gateway["db"] = count_gateway(tmp / "gateway.db")
    failures += load_failures("gateway", gateway)
    want = gateway["ok"] + gw_warm
    wrong = {k: v for k, v in gateway["db"].items() if v != want}
    if wrong:
        failures.append(f"gateway: {wrong} in the database, not {want} each (2xx answers)")

    reports = []
    if args.profile == "py-spy":
        reports.append(pyspy_report(profile_file, gateway["ok"], args.profile_top))
    elif args.profile == "cprofile":
        if profile_file.exists():
            reports.append(cprofile_report(profile_file, gateway["ok"] + gw_warm, args.profile_top))
        else:
            failures.append("cprofile: the gateway wrote no profile")

    return {
        "contacts": args.contacts,
        "connections": args.connections,
        "seconds_target": args.seconds,
        "warmup": args.warmup,
        "wrk_threads": min(args.threads, args.connections),
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "commit": commit(),
        "versions": {
            p: version(p) for p in ("uvicorn", "starlette", "databases", "aiosqlite", "httptools")
        }
        | {"wrk": _wrk_version()},
        "server": {
            "http": _http_impl(),
            "loop": "auto: uvloop when installed (uvicorn.run, as `gateway serve`)",
        },
        "bare_connection": args.bare_connection,
        "profiled": args.profile,
        "setup_seconds": round(setup_seconds, 2),
        "bare": bare,
        "gateway": gateway,
        "rate_ratio": gateway["rate"] / bare["rate"] if bare["rate"] else 0.0,
        "p99_ratio": gateway["p99_ms"] / bare["p99_ms"] if bare["p99_ms"] else None,
        "targets": {"rate_ratio_min": 0.7, "p99_ratio_max": 1.5},
        "ok": not failures,
        "failures": failures,
        "reports": reports,
    }


def human(r: dict[str, Any]) -> str:
    v = r["versions"]

    def line(label: str, x: dict[str, Any]) -> str:
        lat = x["latency_ms"]
        return (
            f"  {label:<24} {x['rate']:8.0f} req/s   p50 {lat['p50']:7.2f} ms"
            f"   p99 {lat['p99']:7.2f} ms   max {lat['max']:7.1f} ms"
            f"   {x['ok']} x 2xx in {x['seconds']:.2f} s"
            + (" (URLs ran out)" if x["ran_out_of_urls"] else "")
            + f"   cpu server {x['server_cpu_pct']:.0f}%"
            + (f" wrk {x['wrk_cpu_pct']:.0f}%" if x["wrk_cpu_pct"] is not None else "")
        )

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    rr, pr = r["rate_ratio"], r["p99_ratio"] if r["p99_ratio"] is not None else float("inf")
    g, b = r["gateway"], r["bare"]
    lines = [
        f"one-click unsubscribe: contacts={r['contacts']} connections={r['connections']}"
        f" seconds={r['seconds_target']:g} warmup={r['warmup']} wrk threads={r['wrk_threads']}"
        f" cores={r['cores']} python={r['python']} commit={r['commit']}"
        + (
            f"  [PROFILED with {r['profiled']}: gateway figures are not representative]"
            if r["profiled"]
            else ""
        ),
        f"  servers: one uvicorn {v['uvicorn']} process each, http={r['server']['http']},"
        f" loop={r['server']['loop']}; starlette {v['starlette']}, databases {v['databases']},"
        f" aiosqlite {v['aiosqlite']}, SQLite WAL; wrk {v['wrk']}",
        line(f"bare ({r['bare_connection']} conn.)", b),
        line("gateway one-click", g),
        f"  rate gateway/bare     {rr:6.2f}   target >= 0.7   {verdict(rr >= 0.7)}",
        f"  p99  gateway/bare     {pr:6.2f}   target <= 1.5   {verdict(pr <= 1.5)}",
        f"  answer size: bare {b['bytes_per_answer']} B, gateway {g['bytes_per_answer']} B;"
        f" gateway setup {r['setup_seconds']:.1f} s (untimed)",
        f"  check gateway: {g['ok']} + {g['warmup_ok']} warm-up 2xx, {g['non_2xx']} non-2xx,"
        f" {g['issued'] - g['ok'] - g['non_2xx']} unanswered; database:"
        f" {g['db']['suppressions']} suppressions ({g['db']['suppressed_emails']} addresses),"
        f" {g['db']['opt_out_records']} opt-out records, {g['db']['outbox']} outbox messages",
        f"  check bare:    {b['ok']} + {b['warmup_ok']} warm-up 2xx, {b['non_2xx']} non-2xx,"
        f" {b['issued'] - b['ok'] - b['non_2xx']} unanswered; table: {b['db']['rows_updated']}"
        f" rows updated, {b['db']['increments']} increments",
        "  checks: " + ("OK: one write set per 2xx answer, nothing else" if r["ok"] else "FAILED"),
    ]
    lines += [f"  FAILURE: {f}" for f in r["failures"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_bare:
        port, db, mode, loop = args.serve_bare
        serve_bare(int(port), db, mode, loop)
        return 0
    say = speaker(args.json)
    with scratch("gw-unsub-", args.keep, say) as tmp:
        result = run(args, tmp, say)
    return finish(result, result.pop("reports"), args.json, human)


if __name__ == "__main__":
    sys.exit(main())

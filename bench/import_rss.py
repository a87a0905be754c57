"""Benchmark of `gateway contacts import`: its peak memory (RSS) at 100,000 and 1,000,000 rows.

Run it with the project's virtualenv (the package must be installed):

    .venv/bin/python bench/import_rss.py                     # 100,000 and 1,000,000 rows
    .venv/bin/python bench/import_rss.py --n 200000          # one size
    .venv/bin/python bench/import_rss.py --json              # one JSON object with every figure

For each size N, in a fresh temporary directory with a new SQLite file:

1. `gateway init` and `gateway topics add news`, then the CSV a marketer would import:
   email,name,language for N contacts (bench/_common.py's write_contacts_csv, written a
   row at a time, so this process stays small).
2. `gateway contacts import contacts.csv --subscribe news --json` runs as a subprocess. Its
   peak RSS is the ru_maxrss the kernel reports when it is reaped (os.wait4), or the
   VmHWM sampled from /proc every 50 ms when ru_maxrss cannot be told from this process's
   own peak (bench/_proc.py's run_measured explains why). Its wall time and rows/s are
   reported too; on a busy machine those vary, the memory does not.

The floor, measured in the same run: the same command on a file of one row (the
interpreter, the gateway's modules, one SQLite connection). What the import adds on top
of it is what grows with the file.

Checks (exit status 1 when one fails): every import exits 0 and reports N created, N
subscribed and no bad row; at 1,000,000 rows (or the largest N given, when it is at least
that) the peak stays under 100 MiB, the issue's target.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path
from typing import Any

from _common import (
    ROOT,
    TOPIC,
    commit,
    count_list,
    doc_parser,
    fail,
    finish,
    outcome,
    scratch,
    speaker,
    without_gateway_env,
    write_contacts_csv,
)
from _proc import Measured, run_measured, show

GATEWAY = Path(sys.executable).parent / "gateway"
TARGET_MIB = 100.0
TARGET_N = 1_000_000
MIB = 1024.0


def gateway(env: dict[str, str], cwd: Path, *args: str, timeout: float = 600.0) -> Measured:
    m = run_measured([str(GATEWAY), *args], env, cwd, timeout)
    if m.timed_out:
        fail(f"`{show(m.cmd)}` took longer than {timeout:.0f} s")
    return m


def one_size(n: int, keep: bool, say: Any) -> dict[str, Any]:
    with scratch("gw-import-rss-", keep, say) as tmp:
        env = {
            **without_gateway_env(),
            "GATEWAY_DATABASE_URL": f"sqlite:///{tmp / 'gateway.db'}",
            "GATEWAY_SECRET_KEYS": "bench-import-rss-key-0123456789abcdef",
            "GATEWAY_SMTP_URL": f"maildir://{tmp / 'mail'}",
        }
        for args in (("init", "--json"), ("topics", "add", TOPIC, "--name", "Tin tức", "--json")):
            m = gateway(env, tmp, *args)
            if m.returncode != 0:
                fail(f"`{show(m.cmd)}` failed: {m.stderr[-1000:]}")
        write_contacts_csv(tmp / "contacts.csv", n)
        size = (tmp / "contacts.csv").stat().st_size
        say(f"`gateway contacts import` of {n:,} rows ({size / MIB / MIB:.1f} MiB of CSV) ...")
        m = gateway(
            env, tmp, "contacts", "import", "contacts.csv", "--subscribe", TOPIC, "--json",
            timeout=7200,
        )  # fmt: skip
        peak, source = m.peak_kib()
        r: dict[str, Any] = {
            "n": n,
            "csv_mib": round(size / MIB / MIB, 1),
            "exit": m.returncode,
            "seconds": round(m.seconds, 1),
            "rows_per_s": round(n / m.seconds) if m.seconds else None,
            "peak_rss_mib": round(peak / MIB, 1),
            "peak_from": source,
            "db_mib": round((tmp / "gateway.db").stat().st_size / MIB / MIB, 1),
        }
        report = m.json() if m.returncode in (0, 4) else None
        r["report_ok"] = bool(
            report
            and report["created"] == n
            and report["subscribed"] == n
            and not report["bad_rows"]
        )
        if not r["report_ok"]:
            r["output"] = (m.stdout[-500:] + m.stderr[-500:]).strip()
        return r


def run(args: argparse.Namespace) -> dict[str, Any]:
    say = speaker(args.json)
    say("floor: the same import of a one-row file ...")
    floor = one_size(1, args.keep, say)
    sizes = [one_size(n, args.keep, say) for n in args.n]
    failures = []
    for r in [floor, *sizes]:
        if r["exit"] != 0 or not r["report_ok"]:
            failures.append(f"the import of {r['n']:,} rows went wrong: {r.get('output', '')}")
    largest = max(sizes, key=lambda r: r["n"])
    target_met = None
    if largest["n"] >= TARGET_N:
        target_met = largest["peak_rss_mib"] < TARGET_MIB
        if not target_met:
            failures.append(
                f"peak RSS {largest['peak_rss_mib']} MiB at {largest['n']:,} rows"
                f" (target < {TARGET_MIB:.0f} MiB)"
            )
    return {
        "benchmark": "import_rss",
        "commit": commit(),
        "python": platform.python_version(),
        "floor": floor,
        "sizes": sizes,
        "target_mib": TARGET_MIB,
        "target_met": target_met,
        "ok": not failures,
        "failures": failures,
    }


def human(r: dict[str, Any]) -> str:
    floor = r["floor"]
    lines = [
        f"import_rss: python={r['python']} commit={r['commit']}",
        f"  floor (1 row)        peak {floor['peak_rss_mib']:6.1f} MiB  {floor['seconds']:6.1f} s",
    ]
    for s in r["sizes"]:
        lines.append(
            f"  {s['n']:>9,} rows       peak {s['peak_rss_mib']:6.1f} MiB"
            f" (+{s['peak_rss_mib'] - floor['peak_rss_mib']:.1f} over the floor, {s['peak_from']})"
            f"  {s['seconds']:6.1f} s = {s['rows_per_s']} rows/s; CSV {s['csv_mib']} MiB,"
            f" database {s['db_mib']} MiB"
        )
    if r["target_met"] is None:
        lines.append(f"  target < {r['target_mib']:.0f} MiB at {TARGET_N:,} rows: not measured")
    else:
        lines.append(
            f"  target < {r['target_mib']:.0f} MiB at {TARGET_N:,} rows: "
            + ("met" if r["target_met"] else "MISSED")
        )
    return "\n".join(lines + outcome(r))


def main(argv: list[str] | None = None) -> int:
    parser = doc_parser("import_rss.py", __doc__)
    parser.add_argument(
        "--n",
        type=count_list("row counts", "row counts"),
        default=[100_000, 1_000_000],
        metavar="N[,N...]",
        help="rows per import (default 100000,1000000)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories")
    args = parser.parse_args(argv)
    if not GATEWAY.exists():
        parser.error(f"needs {GATEWAY}: run it with the project's virtualenv ({ROOT}/.venv)")
    return finish(run(args), [], args.json, human)


if __name__ == "__main__":
    sys.exit(main())

"""Reading profiles for the benchmarks' reports: cProfile statistics and py-spy's collapsed
stacks, with paths cut to what a reader of this repository recognizes.

Not a benchmark: bench/send_path.py, bench/campaign.py and bench/unsubscribe.py import it.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _common import ROOT


def short_path(path: str) -> str:
    """`…/site-packages/databases/core.py` -> `databases/core.py`; the standard library and
    this repository likewise."""
    for marker in ("site-packages/", "/lib/python3.", str(ROOT) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "/lib/python3.":
                path = path.split("/", 1)[-1]
            break
    return path


def cprofile_rows(stats: Any) -> list[tuple[float, float, int, str]]:
    """(cumulative s, own s, calls, `file:line(function)`) of every function, largest
    cumulative time first."""
    rows = []
    for (file, line, func), (_cc, calls, tottime, cumtime, _callers) in stats.stats.items():
        where = func if file == "~" else f"{short_path(file)}:{line}({func})"  # ~: a builtin
        rows.append((cumtime, tottime, calls, where))
    rows.sort(reverse=True)
    return rows


def cprofile_table(
    rows: list[tuple[float, float, int, str]], n: int, unit: str, skip: tuple[str, ...], top: int
) -> str:
    """The top functions by cumulative time, then by own time, per `unit` (msg, ans) of n.
    Rows whose function starts with `skip` (loop plumbing every coroutine step runs through)
    are left out after the first."""
    out = io.StringIO()
    out.write(f"{f'cum us/{unit}':>10} {f'self us/{unit}':>11} {f'calls/{unit}':>9}  function\n")

    def write(cumtime: float, tottime: float, calls: int, where: str) -> None:
        out.write(
            f"{1e6 * cumtime / n:10.1f} {1e6 * tottime / n:11.1f} {calls / n:9.2f}  {where}\n"
        )

    shown = 0
    for row in rows:
        if row[3].startswith(skip) and shown:
            continue
        write(*row)
        shown += 1
        if shown >= top:
            break
    out.write(f"--- top {top // 2} by self time ---\n")
    for row in sorted(rows, key=lambda r: r[1], reverse=True)[: top // 2]:
        write(*row)
    return out.getvalue()


def collapsed_stacks(path: Path) -> Iterator[tuple[list[str], int]]:
    """py-spy's `--format raw` output: each stack (outermost frame first) and its samples."""
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if stack and count_text.isdigit():
            yield stack.split(";"), int(count_text)


if __name__ == "__main__":
    from _common import library_help

    library_help(__doc__)

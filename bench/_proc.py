"""What the benchmarks read from /proc (Linux): CPU and peak memory of processes they start.

Not a benchmark: bench/campaign.py and bench/suppression_check.py import it.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import fail


def proc_status(pid: int) -> dict[str, int]:
    """VmHWM and VmRSS (KiB) of one live process; empty once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            return {
                k: int(v.split()[0])
                for k, _, v in (line.partition(":") for line in f)
                if k in ("VmHWM", "VmRSS")
            }
    except (OSError, ValueError):
        return {}


def cpu_busy() -> float:
    """CPU seconds the whole machine has been busy (all cores), from /proc/stat."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = f.readline().split()[1:]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def other_pct(busy: float, ours: float, seconds: float) -> float:
    """Percent of one core used by processes other than ours during a window."""
    return round(max(busy - ours, 0.0) * 100 / seconds, 1)


def _stat_fields(path: str) -> list[str] | None:
    """The fields after the command name (which may hold spaces and parentheses)."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def stat_cpu(pid: int, children: bool = False) -> float:
    """utime + stime of a process (+ cutime + cstime: its reaped children), in seconds."""
    fields = _stat_fields(f"/proc/{pid}/stat")
    if fields is None:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float:
    """CPU seconds of a server and all its processes: the live ones and those it has reaped
    (a PostgreSQL postmaster and its backends)."""
    return stat_cpu(pid, children=True) + sum(stat_cpu(kid) for kid in descendants(pid))


def threads_cpu(pid: int, under_py_spy: bool = True) -> tuple[int, dict[int, float]]:
    """CPU seconds (user + system) of each thread of a process; the main thread's id is
    the process id. Under py-spy the measured program is the child of `pid` (py-spy's own
    threads are left out); with `under_py_spy` False, `pid` is the program and its children
    (a process pool) are left out."""
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[int, float] = {}
    procs = (descendants(pid)[:1] if under_py_spy else []) or [pid]
    for p in procs:
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            fields = _stat_fields(f"/proc/{p}/task/{tid}/stat")
            if fields is not None:
                found[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
    return (procs[0] if procs[0] in found else 0), found


def proc_pss(pid: int) -> int:
    """Proportional set size (KiB) of one live process: its resident pages, each page it
    shares with other processes (a forked pool) counted as its share. 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def own_peak_reset() -> int:
    """Lower this process's peak RSS to its current RSS (Linux >= 4.0, clear_refs 5), so a
    child started next inherits as little of it as possible; returns the peak in KiB."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        pass
    return proc_status(os.getpid()).get("VmHWM", 0)


def descendants(pid: int) -> list[int]:
    """Children, grandchildren, ... of a live process (via /proc/PID/task/*/children)."""
    found: list[int] = []
    todo = [pid]
    while todo and len(found) < 1000:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{parent}/task/{tid}/children", encoding="ascii") as f:
                    kids = [int(x) for x in f.read().split()]
            except (OSError, ValueError):
                continue
            found += kids
            todo += kids
    return found


def file_bytes(path: Path) -> int:
    """A SQLite database's size on disk, its write-ahead log and journal included."""
    total = 0
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            total += os.stat(str(path) + suffix).st_size
        except OSError:
            pass
    return total


# --------------------------------------------------------------------------- subprocesses


def show(cmd: list[str]) -> str:
    """A command as a person would type it (the program's name without its directory)."""
    return " ".join(
        (c if c and all(ch.isalnum() or ch in "-_./=:" for ch in c) else repr(c))
        for c in (Path(cmd[0]).name if i == 0 else c for i, c in enumerate(cmd))
    )


@dataclass
class Measured:
    """One finished subprocess: exit code, wall time, peak memory, output."""

    cmd: list[str]
    returncode: int
    seconds: float
    maxrss_kib: int  # ru_maxrss from os.wait4 (KiB on Linux)
    cpu_seconds: float
    vmhwm_kib: int = 0  # largest VmHWM seen in /proc while it ran (0 when never sampled)
    inherited_kib: int = 0  # this process's VmHWM when it started the command (see below)
    processes: int = 1  # the process and any descendants seen while sampling
    stdout: str = ""
    stderr: str = ""
    timed_out: bool = False

    def peak_kib(self) -> tuple[int, str]:
        """The command's peak RSS and where the figure comes from. Linux carries the peak
        of the address space an exec replaces into ru_maxrss, so a child's ru_maxrss is at
        least this (parent) process's peak when it started the child: it is the child's own
        peak only when it is larger than that. Otherwise the VmHWM sampled from /proc every
        few tens of milliseconds until the exit is the figure."""
        if self.maxrss_kib > self.inherited_kib:
            return max(self.maxrss_kib, self.vmhwm_kib), "ru_maxrss"
        return self.vmhwm_kib, "VmHWM sampled"

    def json(self) -> Any:
        lines = [line for line in self.stdout.splitlines() if line.startswith(("{", "["))]
        try:
            return json.loads(lines[-1])  # the last: py-spy may print around it
        except (IndexError, ValueError):
            fail(
                f"`{show(self.cmd)}` printed no JSON (exit {self.returncode}):\n"
                f"{self.stdout[-2000:]}{self.stderr[-2000:]}"
            )


def run_measured(
    cmd: list[str],
    env: dict[str, str],
    cwd: Path,
    timeout: float,
    tick: float = 0.05,
    on_tick: Callable[[float, int], None] | None = None,
) -> Measured:
    """Run one command to its end, sampling /proc while it runs; reaped with os.wait4 so
    the kernel's ru_maxrss and CPU times are those of this very process (and of children
    it waited for)."""
    out_path = cwd / f".out-{secrets.token_hex(4)}"
    err_path = cwd / f".err-{secrets.token_hex(4)}"
    hwm = 0
    seen: set[int] = set()
    timed_out = False
    with out_path.open("wb") as out, err_path.open("wb") as err:
        inherited = own_peak_reset()
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err
        )
        deadline = t0 + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            now = time.perf_counter()
            if pid:
                break
            for p in (proc.pid, *descendants(proc.pid)):
                seen.add(p)
                hwm = max(hwm, proc_status(p).get("VmHWM", 0))
            if on_tick is not None:
                on_tick(now, proc.pid)
            if now > deadline:
                timed_out = True
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                now = time.perf_counter()
                break
            time.sleep(tick)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    result = Measured(
        cmd=cmd,
        returncode=proc.returncode,
        seconds=now - t0,
        maxrss_kib=usage.ru_maxrss,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        vmhwm_kib=hwm,
        inherited_kib=max(inherited, proc_status(os.getpid()).get("VmHWM", 0)),
        processes=max(len(seen), 1),
        stdout=out_path.read_text(encoding="utf-8", errors="replace"),
        stderr=err_path.read_text(encoding="utf-8", errors="replace"),
        timed_out=timed_out,
    )
    out_path.unlink()
    err_path.unlink()
    return result


if __name__ == "__main__":
    from _common import library_help

    library_help(__doc__)

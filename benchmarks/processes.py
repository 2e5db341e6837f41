"""The processes a benchmark starts and watches: where their commands are, their CPU time.

CPU time is read from /proc (Linux): per process, per command name, and for
the whole machine, so that a report can say which process spent the cores.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# A git worktree has no venv of its own: it runs with the interpreter that runs the benchmark.
BIN = ROOT / ".venv" / "bin" if (ROOT / ".venv").exists() else Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def peak_rss_mb(pid: int) -> float:
    """The most resident memory a process has used since it started (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def system_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return total - idle, total


@dataclass(frozen=True)
class Proc:
    name: str  # the command name (comm)
    ppid: int
    cpu_s: float  # user + system, all threads


def process_cpu() -> dict[int, Proc]:
    """{pid: Proc} of every process on the machine."""
    ticks = os.sysconf("SC_CLK_TCK")
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        head, _, rest = text.rpartition(")")
        fields = rest.split()
        found[int(entry.name)] = Proc(
            head.split("(", 1)[1],
            int(fields[1]),
            (int(fields[11]) + int(fields[12])) / ticks,
        )
    return found


def descendants(roots: list[int], procs: dict[int, Proc]) -> set[int]:
    """The given pids and every process below them, in one ``process_cpu()`` snapshot."""
    children: dict[int, list[int]] = {}
    for pid, proc in procs.items():
        children.setdefault(proc.ppid, []).append(pid)
    found: set[int] = set()
    todo = [pid for pid in roots if pid in procs]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def cpu_by_command(
    before: dict[int, Proc], after: dict[int, Proc], roles: dict[int, str] | None = None
) -> dict[str, float]:
    """CPU seconds per command name between two ``process_cpu()`` snapshots (top 8);
    the service's own processes are named by their role (``roles``), e.g. ``sm:writer``."""
    roles = roles or {}
    totals: dict[str, float] = {}
    for pid, proc in after.items():
        previous = before.get(pid)
        used = proc.cpu_s - (previous.cpu_s if previous else 0.0)
        name = f"sm:{roles[pid]}" if pid in roles else proc.name
        if used > 0:
            totals[name] = totals.get(name, 0.0) + used
    top = sorted(totals.items(), key=lambda item: -item[1])[:8]
    return {name: round(seconds, 1) for name, seconds in top}

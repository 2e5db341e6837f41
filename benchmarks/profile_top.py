"""The top entries of a cProfile window taken under load, per role of the service.

    .venv/bin/python -m benchmarks.ingest ... --profile DIR     # takes the window
    .venv/bin/python -m benchmarks.profile_top DIR [--top 15] [--requests N]

``benchmarks.ingest --profile DIR`` runs ``serve``'s processes under
benchmarks/profiling/sitecustomize.py, snapshots every thread's cProfile at
the start and at the end of the measured load (SIGUSR1, SIGUSR2), and writes
``DIR/<pid>.json`` per process plus ``DIR/roles.json`` ({pid: role}). This
script sums the processes of one role (the API processes together) and ranks
their functions by self time and by inclusive time, in ms and in µs per
request. On the wall clock (the default) the waits named in ``WAITS`` are
shown but left out of the shares, which are of the rest; on the CPU clock
(``--profile-clock cpu``) there is nothing to leave out.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

# Where a thread waits rather than computes, on the wall clock: the event loop's
# epoll, idle pool threads, uvicorn's supervisor pipe, psycopg waiting for the server.
WAITS = (
    "<method 'poll' of 'select.epoll' objects>",
    "<method 'acquire' of '_thread.lock' objects>",
    "<method 'get' of '_queue.SimpleQueue' objects>",
    "<built-in method posix.read>",
    "<built-in method time.sleep>",
    "psycopg/connection.py:479(wait)",
)


def begin(pids: list[int]) -> None:
    for pid in pids:
        os.kill(pid, signal.SIGUSR1)


def end(pids: list[int], roles: dict[int, str], directory: Path) -> None:
    for pid in pids:
        os.kill(pid, signal.SIGUSR2)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(
        (directory / f"{pid}.json").exists() for pid in pids
    ):
        time.sleep(0.2)
    (directory / "roles.json").write_text(json.dumps({str(p): r for p, r in roles.items()}))


def _import(name: str) -> bool:
    """Import-time frames: a window can hold a process's start-up imports (seen in the
    writer's); they are not the steady state being ranked."""
    return "(<module>)" in name or "<frozen importlib" in name


def _short(name: str) -> str:
    for marker in ("site-packages/", "/wt-profile/", "/main/", "/lib/python3.11/"):
        if marker in name:
            return name.split(marker, 1)[1]
    return name


def load(directory: Path) -> dict[str, dict[str, Any]]:
    """{role: {"processes", "wall_s", "cpu_s", "functions": {name: [calls, self, incl]}}}."""
    roles = json.loads((directory / "roles.json").read_text())
    merged: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("[0-9]*.json")):
        data = json.loads(path.read_text())
        role = roles.get(str(data["pid"]), "other")
        into = merged.setdefault(
            role, {"processes": 0, "wall_s": 0.0, "cpu_s": 0.0, "threads": 0, "functions": {}}
        )
        into["processes"] += 1
        into["wall_s"] = max(into["wall_s"], data["wall_s"])
        into["cpu_s"] += data["cpu_s"]
        into["threads"] += data["threads"]
        into["clock"] = data.get("clock", "wall")
        for name, (calls, self_s, total_s) in data["functions"].items():
            row = into["functions"].setdefault(_short(name), [0.0, 0.0, 0.0])
            row[0] += calls
            row[1] += self_s
            row[2] += total_s
    return merged


def table(role: str, data: dict[str, Any], top: int, requests: int | None) -> str:
    imports = {k for k in data["functions"] if _import(k)}
    functions = {k: v for k, v in data["functions"].items() if k not in imports}
    waits = sum(functions.get(w, [0, 0, 0])[1] for w in WAITS)
    busy = sum(row[1] for row in functions.values()) - waits
    per = f" per request (of {requests:,})" if requests else ""
    lines = [
        f"== {role}: {data['processes']} process(es), {data['threads']} thread(s),"
        f" {data['clock']} clock, window {data['wall_s']:.1f} s,"
        f" process CPU {data['cpu_s']:.2f} s (profiled),"
        f" self time {busy:.2f} s outside waits ({waits:.2f} s in waits)",
    ]
    if imports:
        lines.append(f"   ({len(imports)} import-time frames left out)")
    for key, label in ((1, "self"), (2, "inclusive")):
        lines.append(f"-- top {top} by {label} time; share = of {busy:.2f} s non-wait self time")
        head = f"{'ms':>9} {'share':>6} {'µs/req' if requests else '':>7} {'calls':>10}  function"
        lines.append(head + per)
        ranked = sorted(functions.items(), key=lambda item: -item[1][key])
        for name, row in ranked[:top]:
            us = f"{row[key] * 1e6 / requests:7.1f}" if requests else ""
            wait = "  (wait)" if name in WAITS else ""
            lines.append(
                f"{row[key] * 1e3:9.0f} {row[key] / busy:6.1%} {us:>7} {int(row[0]):>10}"
                f"  {name}{wait}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--requests", type=int, help="requests in the window (for µs/request)")
    parser.add_argument("--role", action="append", help="only these roles (default: all)")
    args = parser.parse_args(argv)
    for role, data in sorted(load(args.directory).items()):
        if args.role is None or role in args.role:
            print(table(role, data, args.top, args.requests) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

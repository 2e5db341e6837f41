"""cProfile in every thread of a service process, for a window the benchmark chooses.

Put this directory on PYTHONPATH with ``BENCH_CPROFILE_DIR`` set, and every
Python process started with that environment (``serve``, its uvicorn API
processes, the writer) profiles each of its threads from its first line:
cProfile can only be switched on from inside the thread it profiles, so it
is on all along (threads are hooked as they start) and the window is a
difference of two snapshots. SIGUSR1 takes the first, SIGUSR2 the second and
writes the difference to ``$BENCH_CPROFILE_DIR/<pid>.json``
(``benchmarks.profile_top`` ranks it). The timer is cProfile's default, wall
clock: a function that waits (epoll, a lock, a socket) is charged its wait;
with ``BENCH_CPROFILE_CLOCK=cpu`` it is each thread's CPU time instead
(``time.thread_time``, a system call per event: ~0.6 µs more per function
call here, which inflates the functions called most often).
"""

from __future__ import annotations

import os

if os.environ.get("BENCH_CPROFILE_DIR"):
    import cProfile
    import json
    import signal
    import threading
    import time
    from typing import Any

    _profilers: list[cProfile.Profile] = []
    _start: dict[str, list[float]] = {}
    _started_at: list[float] = []

    def _profiled() -> None:
        cpu = os.environ.get("BENCH_CPROFILE_CLOCK") == "cpu"
        profiler = cProfile.Profile(time.thread_time) if cpu else cProfile.Profile()
        _profilers.append(profiler)
        profiler.enable()

    _bootstrap_inner = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]

    def _bootstrap_profiled(self: threading.Thread) -> None:
        _profiled()
        _bootstrap_inner(self)

    threading.Thread._bootstrap_inner = _bootstrap_profiled  # type: ignore[attr-defined]

    def _key(code: Any) -> str:
        if isinstance(code, str):
            return code
        return f"{code.co_filename}:{code.co_firstlineno}({code.co_name})"

    def _snapshot() -> dict[str, list[float]]:
        """{function: [calls, self s, inclusive s]} over every thread's profiler."""
        totals: dict[str, list[float]] = {}
        for profiler in list(_profilers):
            for entry in profiler.getstats():
                row = totals.setdefault(_key(entry.code), [0.0, 0.0, 0.0])
                row[0] += entry.callcount
                row[1] += entry.inlinetime
                row[2] += entry.totaltime
        return totals

    def _begin(*_: object) -> None:
        _start.clear()
        _start.update(_snapshot())
        _started_at[:] = [time.monotonic(), time.process_time()]

    def _end(*_: object) -> None:
        end = _snapshot()
        functions = {}
        for name, (calls, self_s, total_s) in end.items():
            c0, s0, t0 = _start.get(name, (0.0, 0.0, 0.0))
            if calls - c0 > 0 or self_s - s0 > 1e-6:
                functions[name] = [calls - c0, self_s - s0, total_s - t0]
        wall0, cpu0 = _started_at or (time.monotonic(), time.process_time())
        out = {
            "pid": os.getpid(),
            "wall_s": time.monotonic() - wall0,
            "cpu_s": time.process_time() - cpu0,  # with the profiler's own overhead
            "threads": len(_profilers),
            "clock": os.environ.get("BENCH_CPROFILE_CLOCK", "wall"),
            "functions": functions,
        }
        path = os.path.join(os.environ["BENCH_CPROFILE_DIR"], f"{os.getpid()}.json")
        with open(path, "w") as f:
            json.dump(out, f)

    _profiled()  # the main thread
    signal.signal(signal.SIGUSR1, _begin)
    signal.signal(signal.SIGUSR2, _end)

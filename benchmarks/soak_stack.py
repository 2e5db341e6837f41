"""The soak's processes: ``stripemeter serve`` and ``stripemeter worker``, killed and restarted.

``serve`` (two API processes under uvicorn's supervisor, and the writer
process) and the worker each run in a process group of their own, so that
a ``kill -9`` of ``serve`` takes all of its children with it whatever the
product does about orphans, and the restarted ``serve`` finds its port free.
What the product restarts itself is left to it: the writer (``serve``'s
supervisor) and an API process (uvicorn's). What an operator's supervisor
would restart (``serve``, the worker) is restarted here, a second after it
died. ``TMPDIR`` points every process at the soak's own folder, so the
writer sockets and metrics folders that a killed ``serve`` leaves behind go
with it.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from benchmarks.processes import BIN, ROOT
from benchmarks.report import log
from benchmarks.service import Service, _stop, _wait_started

KINDS = ("writer", "api", "serve", "worker")
RESTART_DELAY_S = 1.0


@dataclass
class Stack:
    """The running service of one soak, with what was killed and restarted."""

    svc: Service  # its ``process`` and ``worker`` are replaced on each restart
    serve_env: dict[str, str]
    worker_env: dict[str, str]
    logs: Path
    emulator_pid: int
    kills: Counter[str] = field(default_factory=Counter)
    restarts: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _open: list[IO[bytes]] = field(default_factory=list)

    # -- starting -----------------------------------------------------------------

    def start(self) -> None:
        self.svc.worker = self._spawn("worker", ["worker"], self.worker_env)
        self.svc.process = self._spawn(
            "serve", ["serve", "--port", str(self.svc.port)], self.serve_env
        )
        _wait_started(self.svc)

    def _spawn(self, kind: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        out = (self.logs / f"{kind}.log").open("ab")
        self._open.append(out)
        return subprocess.Popen(
            [str(BIN / "stripemeter"), *args],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a group of its own: killpg reaches every child
        )

    def roles(self) -> dict[int, str]:
        """{pid: kind} of every live process: serve, api, writer, worker, emulator."""
        with self._lock:
            found = self.svc.roles()
        found[self.emulator_pid] = "emulator"
        return found

    # -- chaos ----------------------------------------------------------------------

    def kill(self, kind: str) -> bool:
        """``kill -9`` one process of ``kind`` (``serve`` and the worker: the whole group);
        False when none is running just now (it is being restarted)."""
        with self._lock:
            if kind in ("serve", "worker"):
                proc = self.svc.process if kind == "serve" else self.svc.worker
                if proc is None or proc.poll() is not None:
                    return False
                _kill_group(proc)
            else:
                pids = [pid for pid, role in self.svc.roles().items() if role == kind]
                if not pids:
                    return False
                with contextlib.suppress(ProcessLookupError):
                    os.kill(random.choice(pids), signal.SIGKILL)
            self.kills[kind] += 1
        return True

    def keep_alive(self) -> None:
        """Restart ``serve`` or the worker if it is gone (the supervisor's job in production)."""
        with self._lock:
            proc = self.svc.process
            if proc is not None and proc.poll() is not None:
                _kill_group(proc)  # whatever of its group outlived it
                time.sleep(RESTART_DELAY_S)
                self.svc.process = self._spawn(
                    "serve", ["serve", "--port", str(self.svc.port)], self.serve_env
                )
                self.restarts["serve"] += 1
            worker = self.svc.worker
            if worker is not None and worker.poll() is not None:
                _kill_group(worker)
                time.sleep(RESTART_DELAY_S)
                self.svc.worker = self._spawn("worker", ["worker"], self.worker_env)
                self.restarts["worker"] += 1

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until both are up again and the projections have caught up."""
        deadline = time.monotonic() + timeout
        while True:
            self.keep_alive()
            try:
                _wait_started(self.svc, timeout=max(1.0, deadline - time.monotonic()))
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise

    # -- stopping -------------------------------------------------------------------

    def stop(self) -> None:
        with self._lock:
            for proc in (self.svc.process, self.svc.worker):
                if proc is not None:
                    _stop(proc)
                    _kill_group(proc)
            self.svc.client.close()
            for out in self._open:
                out.close()
        log("soak: serve and worker stopped")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def rss_kb(pid: int) -> int | None:
    """Resident memory now (VmRSS), in KiB; None when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None

"""A child process that dies with its parent, however the parent ends.

``stripemeter serve`` starts the writer and, with STRIPEMETER_API_PROCESSES > 1,
the API processes. A ``kill -9`` of ``serve`` runs none of its code, so the
children cannot be told to stop: each child arranges for its own end.

- On Linux the kernel sends a signal when the parent goes
  (``prctl(PR_SET_PDEATHSIG)``): SIGTERM, so that the child still finishes what
  it received (the writer commits and answers, uvicorn ends its requests).
- Everywhere, a daemon thread looks at the parent pid twice a second: a dead
  parent's children are handed to another process, so ``getppid()`` changes.
  Where the kernel signal is missing it sends the SIGTERM itself; either way,
  a child that has not ended ``grace_seconds`` later is ended at once, so a
  stuck shutdown cannot keep the port or the socket.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import threading
import time

log = logging.getLogger("stripemeter.lifeline")

_PR_SET_PDEATHSIG = 1
_POLL_SECONDS = 0.5


def die_with_parent(parent_pid: int, grace_seconds: float = 10.0) -> None:
    """End this process when ``parent_pid`` (its parent) ends; call right after start."""
    _ask_kernel(signal.SIGTERM)
    # The parent may have died before the call above: the kernel would never signal.
    if os.getppid() != parent_pid:
        log.warning("the parent process %s was gone before this one started; exiting", parent_pid)
        raise SystemExit(0)
    threading.Thread(
        target=_watch, args=(parent_pid, grace_seconds), name="lifeline", daemon=True
    ).start()


def _ask_kernel(sig: signal.Signals) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        return bool(libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False  # no usable libc: the thread below does the job


def _watch(parent_pid: int, grace_seconds: float) -> None:
    while os.getppid() == parent_pid:
        time.sleep(_POLL_SECONDS)
    log.warning("the parent process %s is gone; stopping", parent_pid)
    # With the kernel's signal this is a second SIGTERM: harmless.
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(grace_seconds)
    log.error("still running %.0f s after the parent went; exiting now", grace_seconds)
    os._exit(1)

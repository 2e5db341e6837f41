"""`stripemeter serve`'s children die with it, however it ends — even `kill -9`."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_real_server import ROOT, free_port

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found.update(int(c) for c in (task / "children").read_text().split())
        except FileNotFoundError:
            continue
    return found


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its new parent to reap it is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_ready(base: str, process: subprocess.Popen[bytes], log: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(f"{base}/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None, f"serve exited:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"serve not ready:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)


class Serve:
    """`stripemeter serve` in its own process group, so that cleanup reaches every child."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("ab") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "api.cli", "serve"],
                env=env,
                cwd=ROOT,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


@pytest.fixture
def serve_env(tmp_path: Path) -> Iterator[tuple[dict[str, str], str]]:
    port = free_port()
    env = {
        **os.environ,
        "STRIPEMETER_DATA_DIR": str(tmp_path / "data"),
        "STRIPEMETER_PORT": str(port),
        "STRIPEMETER_API_PROCESSES": "2",
        "STRIPEMETER_EMBEDDED_WORKER": "false",
        "STRIPEMETER_EMULATOR_PORT": "0",
    }
    env.pop("STRIPEMETER_DATABASE_URL", None)
    yield env, f"http://127.0.0.1:{port}"


def test_kill_9_of_serve_takes_every_child_with_it_and_frees_the_port_and_sigterm_too(
    serve_env: tuple[dict[str, str], str], tmp_path: Path
) -> None:
    """Both ways serve ends, on one pair of starts (each start of two API processes and a
    writer costs seconds): the first serve is killed with kill -9; the second, which shows
    that the port is free again, is then ended with SIGTERM."""
    env, base = serve_env
    first = Serve(env, tmp_path / "first.log")
    second: Serve | None = None
    try:
        wait_ready(base, first.process, first.log, 90)
        kids = children(first.process.pid)
        # The writer, two API processes (and multiprocessing's resource tracker).
        assert len(kids) >= 3, kids

        first.process.kill()  # SIGKILL: serve runs no code at all
        first.process.wait(timeout=10)
        killed = time.monotonic()
        while any(alive(pid) for pid in kids) and time.monotonic() - killed < 5:
            time.sleep(0.05)
        left = {pid for pid in kids if alive(pid)}
        assert not left, f"still running 5 s after serve's kill -9: {left}"
        print(f"children gone {time.monotonic() - killed:.2f} s after kill -9")

        # The port is free again: a new serve starts on it and answers.
        second = Serve(env, tmp_path / "second.log")
        wait_ready(base, second.process, second.log, 90)
        assert httpx.get(f"{base}/health/live").status_code == 200

        # SIGTERM of serve ends it and every child.
        kids = children(second.process.pid)
        assert len(kids) >= 3, kids
        second.process.terminate()
        assert second.process.wait(timeout=30) in (0, -signal.SIGTERM)
        deadline = time.monotonic() + 5
        while any(alive(pid) for pid in kids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not {pid for pid in kids if alive(pid)}
    finally:
        first.kill_group()
        if second is not None:
            second.kill_group()


# -- the lifeline alone: the portable watch, without the kernel's signal ---------------

CHILD = """
import sys, time
from adapters import lifeline
if sys.argv[2] == "thread-only":
    lifeline._ask_kernel = lambda sig: False
lifeline.die_with_parent(int(sys.argv[1]))
print("watching", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("mode", ["kernel", "thread-only"])
def test_a_child_with_a_lifeline_ends_when_its_parent_is_killed(mode: str) -> None:
    # A shell is the parent: it starts the child, prints the child's pid, and waits.
    script = f'{sys.executable} -c "$0" $$ {mode} & echo $!; wait'
    with subprocess.Popen(
        ["sh", "-c", script, CHILD],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as parent:
        try:
            assert parent.stdout is not None
            child = int(parent.stdout.readline())
            assert parent.stdout.readline().strip() == "watching"
            parent.kill()
            parent.wait()
            killed = time.monotonic()
            while alive(child) and time.monotonic() - killed < 5:
                time.sleep(0.02)
            assert not alive(child), f"{mode}: the child outlived its parent by 5 s"
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(parent.pid, signal.SIGKILL)


def test_a_child_whose_parent_is_already_gone_exits_at_once() -> None:
    # The race the check closes: the parent died before the kernel was asked.
    done = subprocess.run(
        [sys.executable, "-c", CHILD, "1", "kernel"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "watching" not in done.stdout

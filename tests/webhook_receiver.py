"""A real local HTTP endpoint for outbound webhook tests: records each request, answers as told."""

from __future__ import annotations

import base64
import re
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    url: str
    received: list[Received] = field(default_factory=list)
    # The statuses to answer, in order; once used up, 200.
    answers: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer_next(self, *statuses: int) -> None:
        with self.lock:
            self.answers.extend(statuses)


@contextmanager
def webhook_receiver() -> Iterator[Receiver]:
    receiver = Receiver("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            with receiver.lock:
                receiver.received.append(
                    Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                status = receiver.answers.pop(0) if receiver.answers else 200
            reply = b"ok" if status < 400 else b"receiver failed on purpose " + b"x" * 5000
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("Location", "http://elsewhere.invalid/")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


DOC = Path(__file__).resolve().parent.parent / "docs" / "webhooks.md"


def doc_snippet(language: str) -> str:
    """The first ``language`` block of docs/webhooks.md that defines ``verify``."""
    blocks = re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), re.DOTALL)
    return next(block for block in blocks if "function verify" in block or "def verify" in block)


def python_doc_verify() -> Callable[[str, bytes, str], None]:
    """docs/webhooks.md's Python ``verify``, as a receiver would paste it."""
    namespace: dict[str, Any] = {}
    exec(doc_snippet("python"), namespace)
    verify: Callable[[str, bytes, str], None] = namespace["verify"]
    return verify


def node_doc_verify(header: str, body: bytes, secret: str) -> bool:
    """docs/webhooks.md's Node ``verify`` run by node: True when it accepts."""
    harness = (
        doc_snippet("js")
        + "\nconst [header, secret, body] = process.argv.slice(1);"
        + "\ntry { verify(header, Buffer.from(body, 'base64'), secret); process.exit(0); }"
        + "\ncatch (error) { process.exit(1); }\n"
    )
    done = subprocess.run(
        ["node", "-e", harness, header, secret, base64.b64encode(body).decode()],
        check=False,
        timeout=30,
    )
    return done.returncode == 0

"""A real HTTP receiver on loopback for alert deliveries.

:class:`Receiver` is a ``ThreadingHTTPServer`` in a thread that records every
request and answers by its ``mode``:

- ``ok``: 200 (or ``status`` when set: any status, with ``reply`` as the body);
- ``error``: 500;
- ``hang``: records the request, then holds the answer until :meth:`release`
  (or ``hang_seconds``), then answers 200;
- down (:meth:`down`): the listening socket is closed, so connections are
  refused; :meth:`up` listens again on the same port.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    answered: threading.Event = field(default_factory=threading.Event)


class _Server(ThreadingHTTPServer):
    allow_reuse_address = True  # up again on the same port right after down
    daemon_threads = True
    receiver: Receiver


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        r = self.server.receiver
        length = int(self.headers.get("Content-Length", "0"))
        got = Received(
            self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
            self.rfile.read(length),
        )  # fmt: skip
        with r.changed:
            r.requests.append(got)
            r.changed.notify_all()
            mode, status, reply = r.mode, r.status, r.reply
        if mode == "hang":
            r.released.wait(r.hang_seconds)
            status = 200
        elif mode == "error":
            status = 500
        body = reply.encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the client gave up (a timeout) and closed
            pass
        got.answered.set()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Receiver:
    """Records requests on ``http://127.0.0.1:<port>``; a context manager."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.changed = threading.Condition()
        self.mode = "ok"
        self.status = 200
        self.reply = "ok"
        self.hang_seconds = 60.0
        self.released = threading.Event()
        self.port = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.receiver = self
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def down(self) -> None:
        """Stop listening: connections to the port are refused until :meth:`up`."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server = None
        if self._thread is not None:
            self._thread.join(10)

    def release(self) -> None:
        """Let hanging requests answer."""
        self.released.set()

    def wait_for(self, count: int, timeout: float = 30) -> list[Received]:
        """The requests once there are ``count`` of them (AssertionError after ``timeout``)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while len(self.requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.requests)} requests, not {count}")
                self.changed.wait(left)
            return list(self.requests)

    def keys(self) -> list[str]:
        """The Idempotency-Key of each request, in arrival order."""
        with self.changed:
            return [r.headers.get("idempotency-key", "") for r in self.requests]

    def close(self) -> None:
        self.release()
        self.down()

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""A fault-injecting TCP proxy on 127.0.0.1, between a client and a real server.

Modes (switch at any time with ``proxy.mode = ...``):

- ``pass``: forward bytes both ways;
- ``refuse``: the listening socket is closed, so connections are refused;
- ``hang``: accept, read nothing useful, never answer;
- ``slowdown``: answer every request with S3's ``503 SlowDown`` without forwarding;
- ``drop_put_response``: forward a ``PUT`` to the server (it commits it) but cut
  the connection instead of relaying the answer, as a lost response does.
"""

from __future__ import annotations

import contextlib
import socket
import threading

SLOWDOWN = (
    b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: 98\r\n"
    b"Connection: close\r\n\r\n"
    b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
    b"          "
)


class FaultProxy:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._mode = "pass"
        self._listener: socket.socket | None = None
        self.port = 0
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listen()
        self.dropped_puts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        assert value in ("pass", "refuse", "hang", "slowdown", "drop_put_response")
        self._mode = value
        self._close_connections()  # every open connection sees the new mode at once
        if value == "refuse":
            self._stop_listening()
        elif self._listener is None:
            self._listen()

    def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        self.port = sock.getsockname()[1]
        self._listener = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def _stop_listening(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None

    def _close_connections(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def close(self) -> None:
        self._stop_listening()
        self._close_connections()

    def _track(self, *socks: socket.socket) -> None:
        with self._lock:
            self._conns.extend(socks)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            self._track(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        mode = self._mode
        if mode == "hang":
            with contextlib.suppress(OSError):
                while client.recv(65536):
                    pass
            return
        if mode == "slowdown":
            with contextlib.suppress(OSError):
                client.recv(65536)
                client.sendall(SLOWDOWN)
                client.close()
            return
        try:
            upstream = socket.create_connection(self.upstream, timeout=30)
        except OSError:
            client.close()
            return
        self._track(upstream)
        state = {"drop": False}
        threading.Thread(
            target=self._pump_requests, args=(client, upstream, state), daemon=True
        ).start()
        self._pump_responses(upstream, client, state)

    def _pump_requests(
        self, client: socket.socket, upstream: socket.socket, state: dict[str, bool]
    ) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                if self._mode == "drop_put_response" and data.startswith(b"PUT "):
                    state["drop"] = True
                upstream.sendall(data)
        with contextlib.suppress(OSError):
            upstream.shutdown(socket.SHUT_WR)

    def _pump_responses(
        self, upstream: socket.socket, client: socket.socket, state: dict[str, bool]
    ) -> None:
        with contextlib.suppress(OSError):
            while data := upstream.recv(65536):
                if state["drop"]:
                    # The server has committed the PUT; the client never hears so.
                    self.dropped_puts += 1
                    break
                client.sendall(data)
        for sock in (client, upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

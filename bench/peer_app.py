"""The peer of the ingest benchmark: Gravix's intake minus durability.

A bare ASGI app (no framework) under the same uvicorn configuration as a
``gravix serve`` worker (httptools, uvloop, no access log). Per
``POST /api/v1/facts`` it does what any real intake must do:

* reads the headers into a dict and makes a request id;
* looks the API key up exactly as Gravix does
  (:class:`gravix.ingest.keys.Authenticator` over a SQLite
  :class:`~gravix.ingest.keys.KeyStore`, re-read every second);
* reads the body with Gravix's own size limit and ``Content-Encoding`` code;
* validates it with the same call Gravix makes, ``gravix.schema.decode_facts``
  with the same :class:`~gravix.schema.Limits`;
* answers 202 ``{"accepted": n, "request_id": ...}`` (errors in Gravix's shape).

It writes nothing: no spool record (no MessagePack encoding, no hand-off to a
writer thread, no write, no fsync), no series catalog, no rate limiter, no
Prometheus metrics. The gap between it and Gravix is the price of those.

Run: ``python -m bench.peer_app --data-dir DIR`` prints
``peer listening on http://127.0.0.1:PORT`` once bound (port 0: any free one).
"""

from __future__ import annotations

import argparse
import random
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import msgspec
import uvicorn

from gravix.config import Settings
from gravix.errors import GravixError, MethodNotAllowed, NotFound, error_body
from gravix.ingest.app import intake_limits
from gravix.ingest.body import read_request_body
from gravix.ingest.keys import Authenticator, KeyStore, presented_key
from gravix.schema import decode_facts

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

FACTS_PATH = "/api/v1/facts"
_json = msgspec.json.Encoder()


class PeerApp:
    """Authenticate, read, validate, answer 202; see the module docstring."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.auth = Authenticator(KeyStore(settings.keys_db), settings.key_refresh_seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = f"{random.getrandbits(128):032x}"  # as Gravix makes them
        try:
            status, body = await self._handle(scope, receive, headers, request_id)
        except GravixError as e:
            status, body = e.status, _json.encode(error_body(e, request_id))
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _handle(
        self, scope: Scope, receive: Receive, headers: dict[str, str], request_id: str
    ) -> tuple[int, bytes]:
        if scope["path"] == "/live":
            return 200, b'{"status":"live"}'
        if scope["path"] != FACTS_PATH:
            raise NotFound(f"no route {scope['path']}")
        if scope["method"] != "POST":
            raise MethodNotAllowed(f"{scope['method']} is not allowed on {FACTS_PATH}")
        s = self.settings
        self.auth.authenticate(
            presented_key(headers.get("authorization"), headers.get("x-api-key"))
        )
        body, kind = await read_request_body(receive, headers, s.max_body_bytes)
        facts = decode_facts(body, kind, intake_limits(s))
        return 202, _json.encode({"accepted": len(facts), "request_id": request_id})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peer_app", description=__doc__)
    parser.add_argument("--data-dir", type=Path, required=True, help="holds keys.db")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    # Defaults only: no .env, no gravix.toml, so both sides run with the same limits.
    settings = Settings(_env_file=None, data_dir=args.data_dir)  # type: ignore[call-arg]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(2048)
    host, port = sock.getsockname()[:2]
    print(f"peer listening on http://{host}:{port}", flush=True)
    config = uvicorn.Config(
        PeerApp(settings),
        lifespan="on",
        log_config=None,
        access_log=False,
        http="httptools",
        loop="uvloop",
        server_header=False,
    )
    uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

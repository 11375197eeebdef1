"""A real S3 endpoint on loopback for tests: moto in server mode on 127.0.0.1.

Use the pytest fixture (bind it in the test module; a plain import of the
fixture would trip ruff's F811 at every test that takes it)::

    from tests import s3server

    s3_endpoint = s3server.s3_endpoint

    def test_upload(s3_endpoint: LoopbackS3) -> None:
        store = s3_endpoint.store()              # an S3ObjectStore on the bucket
        endpoint_url, bucket = s3_endpoint       # or the raw coordinates
        s3_endpoint.stop()                       # outage: connections are refused
        s3_endpoint.start()                      # back, same port, same objects

or the context manager ``with loopback_s3() as s3: ...`` outside pytest.

For failures moto cannot produce (503 SlowDown, dropped connections),
:class:`ScriptedS3` answers each request from a list of :class:`Reply`.

Each LoopbackS3 has its own server thread, port and (uniquely named) bucket.
Objects live in moto's backends, which are global to the process, so they
survive ``stop()``/``start()``. While it runs, the environment holds dummy
credentials (``testing``), ``us-east-1``, no shared config files, no instance
metadata look-ups, and ``AWS_ENDPOINT_URL`` pointing at the loopback server,
so a boto3 client made without an endpoint still cannot reach real AWS.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from gravix.storage.s3 import S3ObjectStore

HOST = "127.0.0.1"

TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": None,
    "AWS_SESSION_TOKEN": None,
    "AWS_PROFILE": None,
    "AWS_DEFAULT_PROFILE": None,
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_ENDPOINT_URL_S3": None,
}


_moto_app: Any = None


def _moto_server_class() -> Any:
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from moto.server import ThreadedMotoServer
    from werkzeug.serving import make_server

    global _moto_app
    if _moto_app is None:
        _moto_app = DomainDispatcherApplication(create_backend_app)
    app = _moto_app

    class QuickStopMotoServer(ThreadedMotoServer):
        """ThreadedMotoServer whose stop() takes milliseconds, not half a second.

        The stock one serves with socketserver's default poll interval of
        0.5 s, which shutdown() has to wait out; this copy of its entry point
        polls every 20 ms, and every server shares one WSGI app (building
        moto's S3 app anew for each server costs ~0.1 s).
        """

        def _server_entry(self) -> None:
            self._server = make_server(
                self._ip_address, self._port, app, True, request_handler=MotoRequestHandler
            )
            self._server_ready_event.set()
            self._server.serve_forever(poll_interval=0.02)

    return QuickStopMotoServer


class LoopbackS3:
    """One moto S3 server on 127.0.0.1 with one bucket; stoppable and restartable."""

    def __init__(self, bucket: str | None = None) -> None:
        self.bucket = bucket or f"gravix-test-{uuid.uuid4().hex[:12]}"
        self.port = 0
        self._server: Any = None
        self._client: Any = None

    @property
    def endpoint_url(self) -> str:
        if not self.port:
            raise RuntimeError("the loopback S3 server has not been started")
        return f"http://{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def __iter__(self) -> Iterator[str]:
        """``endpoint_url, bucket = s3``."""
        return iter((self.endpoint_url, self.bucket))

    def start(self) -> None:
        """Start serving (again, on the same port after a stop; the objects are kept)."""
        if self._server is not None:
            return
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
        server = _moto_server_class()(ip_address=HOST, port=self.port, verbose=False)
        server.start()
        self.port = server.get_host_and_port()[1]
        self._server = server

    def stop(self) -> None:
        """Stop serving and close the listening socket: new connections are refused."""
        server, self._server = self._server, None
        if server is None:
            return
        server.stop()
        # ThreadedMotoServer.stop() leaves the socket open (connections would
        # hang in the backlog instead of failing); close it like a dead server.
        inner = getattr(server, "_server", None)
        if inner is not None:
            inner.server_close()

    def client(self) -> Any:
        """A plain boto3 S3 client on this endpoint (for setup and inspection)."""
        if self._client is None:
            import boto3

            self._client = boto3.client(
                "s3",
                endpoint_url=self.endpoint_url,
                region_name="us-east-1",
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            )
        return self._client

    def create_bucket(self) -> None:
        self.client().create_bucket(Bucket=self.bucket)

    def delete_bucket(self) -> None:
        """Remove every object and the bucket (moto keeps them for the whole process)."""
        client = self.client()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})
        client.delete_bucket(Bucket=self.bucket)

    def store(self, prefix: str = "", **options: Any) -> S3ObjectStore:
        """An S3ObjectStore on this bucket, path-style, with quick retries for tests."""
        options.setdefault("max_attempts", 3)
        options.setdefault("backoff_base", 0.01)
        options.setdefault("backoff_cap", 0.05)
        options.setdefault("connect_timeout", 2)
        options.setdefault("read_timeout", 10)
        return S3ObjectStore(
            self.bucket,
            prefix,
            endpoint_url=self.endpoint_url,
            region="us-east-1",
            path_style=True,
            access_key_id="testing",
            secret_access_key="testing",
            **options,
        )


def gravix_env(endpoint_url: str, bucket: str, prefix: str, timeout: float) -> dict[str, str]:
    """The ``GRAVIX_*`` settings of a Gravix process storing into ``s3://bucket/prefix``."""
    return {
        "GRAVIX_OBJECT_STORE_URL": f"s3://{bucket}/{prefix}",
        "GRAVIX_S3_ENDPOINT_URL": endpoint_url,
        "GRAVIX_S3_PATH_STYLE": "true",
        "GRAVIX_S3_REGION": "us-east-1",
        "GRAVIX_S3_TIMEOUT_SECONDS": str(timeout),
    }


def free_port() -> int:
    """A TCP port on loopback that nothing listens on (at the moment of asking)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@contextmanager
def _patched_env(values: dict[str, str | None]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def loopback_s3(bucket: str | None = None) -> Iterator[LoopbackS3]:
    """A started LoopbackS3 with its bucket made, and the test environment set."""
    s3 = LoopbackS3(bucket)
    with _patched_env({**TEST_ENV, "AWS_ENDPOINT_URL": None}):
        s3.start()
        os.environ["AWS_ENDPOINT_URL"] = s3.endpoint_url
        try:
            s3.create_bucket()
            yield s3
        finally:
            if not s3.running:
                s3.start()
            try:
                s3.delete_bucket()
            finally:
                s3.stop()


@pytest.fixture
def s3_endpoint() -> Iterator[LoopbackS3]:
    """A loopback S3 endpoint with a fresh bucket (see the module docstring)."""
    with loopback_s3() as s3:
        yield s3


# --- a scripted fake, for failures moto cannot produce -------------------------


@dataclass
class Reply:
    """One scripted answer: an HTTP status with headers and body, or a dropped connection."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    drop: bool = False  # read the request, then close the connection without answering

    @classmethod
    def error(cls, status: int, code: str, message: str = "scripted failure") -> Reply:
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            f"<Error><Code>{code}</Code><Message>{message}</Message>"
            "<RequestId>scripted</RequestId></Error>"
        ).encode()
        return cls(status, {"Content-Type": "application/xml"}, body)


SLOW_DOWN = Reply.error(503, "SlowDown", "Please reduce your request rate.")
DROP = Reply(drop=True)


@dataclass
class Seen:
    """One request the scripted server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class ScriptedS3:
    """An HTTP server on 127.0.0.1 answering S3 requests from a script, in order.

    Once the script runs out it answers ``default`` (200, empty, with an ETag).
    ``seen`` records every request, so a test can count attempts and check
    headers such as ``Content-MD5``.
    """

    def __init__(self, script: list[Reply], default: Reply | None = None) -> None:
        self.script = list(script)
        self.default = default or Reply(200, {"ETag": '"scripted"'})
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((HOST, 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self._httpd.server_address[1]}"

    def __enter__(self) -> ScriptedS3:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def store(self, **options: Any) -> S3ObjectStore:
        options.setdefault("max_attempts", 3)
        options.setdefault("backoff_base", 0.001)
        options.setdefault("backoff_cap", 0.005)
        options.setdefault("connect_timeout", 2)
        options.setdefault("read_timeout", 2)
        return S3ObjectStore(
            "scripted-bucket",
            endpoint_url=self.endpoint_url,
            region="us-east-1",
            path_style=True,
            access_key_id="testing",
            secret_access_key="testing",
            **options,
        )

    def _next(self, seen: Seen) -> Reply:
        with self._lock:
            self.seen.append(seen)
            return self.script.pop(0) if self.script else self.default

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                reply = server._next(Seen(self.command, self.path, dict(self.headers), body))
                if reply.drop:
                    self.close_connection = True
                    return
                self.send_response(reply.status)
                headers = {"Content-Length": str(len(reply.body)), **reply.headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(reply.body)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _answer

        return Handler

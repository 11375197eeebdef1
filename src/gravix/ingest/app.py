"""The intake HTTP service: a small ASGI application.

Routes (auth on every route except the probes and ``/metrics``, which carries
no tenant data)::

    POST /api/v1/facts    RequestFacts  -> 202 {"accepted": n, "request_id": ...}
    POST /api/v1/events   ServiceEvents -> 202 {"accepted": n, "request_id": ...}
    POST /v1/traces       OTLP/HTTP spans -> 200 ExportTraceServiceResponse (ingest/otlp.py)
    GET  /live            the process is up
    GET  /ready           the spool is writable and below its high-water mark
    GET  /metrics         Prometheus text format

A 202 (a 200 on /v1/traces) means the batch is fsynced in this worker's
spool. It is plain ASGI rather than a framework: this is the hot path, and it
has six routes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any, Protocol

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gravix.config import Settings
from gravix.errors import (
    GravixError,
    InvalidFacts,
    MethodNotAllowed,
    Misdirected,
    NotFound,
    ServiceUnavailable,
    error_body,
)
from gravix.errors import request_id as make_request_id
from gravix.ingest import metrics, otlp, rejections
from gravix.ingest.body import read_request_body
from gravix.ingest.keys import Authenticator, KeyStore, presented_key
from gravix.ingest.ratelimit import RateLimiter
from gravix.ingest.series import SeriesCatalog
from gravix.ingest.spool import SpoolWriter, claim_spool_dir
from gravix.logs import request_id_var
from gravix.schema import Limits, SpoolBatch, decode_events, decode_facts, encode_batch

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("gravix.ingest")
_json = msgspec.json.Encoder()
_ROUTES: dict[str, tuple[str, ...]] = {
    "/api/v1/facts": ("POST",),
    "/api/v1/events": ("POST",),
    "/v1/traces": ("POST",),
    "/live": ("GET", "HEAD"),
    "/ready": ("GET", "HEAD"),
    "/metrics": ("GET",),
}


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    request_id: str,
    content_type: bytes = b"application/json",
    extra: dict[str, str] | None = None,
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id.encode()),
        (b"cache-control", b"no-store"),
        (b"x-content-type-options", b"nosniff"),
    ]
    for name, value in (extra or {}).items():
        headers.append((name.lower().encode(), value.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def intake_limits(settings: Settings) -> Limits:
    """The validation limits of a batch arriving now."""
    return Limits(
        now_ms=int(time.time() * 1000),
        raw_retention_days=settings.raw_retention_days,
        max_future_seconds=settings.max_future_seconds,
        max_batch_items=settings.max_batch_items,
    )


class WorkerService(Protocol):
    """Work a worker process runs beside intake on its own spool (the uploader).

    ``start`` runs once the spool is open; ``stop`` once it is sealed, so a
    service can ship the last segment. ``status`` feeds the ``/ready`` body.
    """

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def status(self) -> dict[str, Any]: ...


ServiceFactory = Callable[[SpoolWriter], WorkerService]


class IngestApp:
    """ASGI app owning one worker's spool, key cache, limiter and series catalog."""

    def __init__(
        self,
        settings: Settings,
        services: Sequence[ServiceFactory] = (),
        fallback: Callable[[Scope, Receive, Send], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        # Requests that are not intake routes (the query API, the dashboard).
        self.fallback = fallback
        self._service_factories = list(services)
        self.services: list[WorkerService] = []
        self.spool: SpoolWriter | None = None
        self._spool_lock_fd: int | None = None
        self.keys = KeyStore(settings.keys_db, database_url=settings.metadata_url)
        self.auth = Authenticator(self.keys, settings.key_refresh_seconds)
        self.limiter = RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst)
        self.catalog: SeriesCatalog | None = None

    # --- lifecycle ----------------------------------------------------------
    def start(self) -> None:
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        if s.bootstrap_key is not None:
            try:
                self.keys.register(s.bootstrap_key.get_secret_value(), s.bootstrap_tenant)
            except ServiceUnavailable as e:  # disk full, PostgreSQL down: the spool must drain
                log.warning("bootstrap key not registered: %s; restart once it can be", e)
        spool_dir, self._spool_lock_fd = claim_spool_dir(s.spool_dir)
        self.spool = SpoolWriter(
            spool_dir,
            segment_max_age_seconds=s.segment_max_age_seconds,
            segment_max_bytes=s.segment_max_bytes,
            high_water_bytes=s.spool_high_water_bytes,
            min_free_bytes=s.spool_min_free_bytes,
        )
        report = self.spool.open()
        self.catalog = SeriesCatalog(
            s.catalog_db,
            s.max_series_per_service,
            max_services=s.max_services_per_tenant,
            max_series=s.max_series_per_tenant,
            database_url=s.metadata_url,
        )
        self.services = [factory(self.spool) for factory in self._service_factories]
        for service in self.services:
            service.start()
        log.info(
            "ingest worker ready",
            extra={"fields": {"spool": str(spool_dir), "recovery": repr(report)}},
        )

    def stop(self) -> None:
        """Seal the spool so every acknowledged fact is in a sealed segment."""
        if self.spool is not None:
            self.spool.close()
        for service in self.services:
            service.stop()
        if self.catalog is not None:
            self.catalog.close()
        if self._spool_lock_fd is not None:
            os.close(self._spool_lock_fd)
            self._spool_lock_fd = None
        log.info("ingest worker stopped; spool sealed")

    # --- ASGI ---------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            allowed = _ROUTES.get(scope["path"])
            if self.fallback is not None and (allowed is None or scope["method"] not in allowed):
                await self.fallback(scope, receive, send)
            else:
                await self._http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.start()
                except Exception as e:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(e)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        headers = _headers(scope)
        given = headers.get("x-request-id", "")
        request_id = make_request_id(given)
        token = request_id_var.set(request_id)
        path = scope["path"]
        route = path if path in _ROUTES else "other"
        status = 500
        try:
            status, body, content_type, extra = await self._dispatch(
                scope, receive, headers, request_id
            )
        except GravixError as e:
            status, body, content_type = e.status, _json.encode(error_body(e, request_id)), None
            extra = e.headers()
            if isinstance(e, InvalidFacts):
                metrics.INGESTION_REJECTED_ITEMS.labels(route).inc(len(e.items))
            self._log_rejection(scope, e)
        except Exception:
            log.exception("unexpected error", extra={"fields": {"path": path}})
            err = GravixError("internal error; the request was not acknowledged")
            status, body, content_type, extra = (
                500,
                _json.encode(error_body(err, request_id)),
                None,
                {},
            )
        try:
            await _respond(
                send, status, body, request_id, content_type or b"application/json", extra
            )
        finally:
            metrics.INGESTION_REQUESTS.labels(str(status), route).inc()
            metrics.INGESTION_LATENCY.labels(route).observe(time.perf_counter() - started)
            request_id_var.reset(token)

    def _log_rejection(self, scope: Scope, err: GravixError) -> None:
        level = logging.WARNING if err.status >= 500 else logging.INFO
        log.log(
            level,
            "request rejected",
            extra={
                "fields": {
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": err.status,
                    "code": err.code,
                    "field": err.field,
                    "reason": err.message,
                }
            },
        )

    async def _dispatch(
        self, scope: Scope, receive: Receive, headers: dict[str, str], request_id: str
    ) -> tuple[int, bytes, bytes | None, dict[str, str]]:
        path, method = scope["path"], scope["method"]
        allowed = _ROUTES.get(path)
        if allowed is None:
            raise NotFound(f"no route {path}")
        if method not in allowed:
            raise MethodNotAllowed(f"{method} is not allowed on {path}; use {', '.join(allowed)}")
        if path == "/live":
            return 200, b'{"status":"live"}', None, {}
        if path == "/ready":
            return self._ready()
        if path == "/metrics":
            return 200, generate_latest(), CONTENT_TYPE_LATEST.encode(), {}
        return await self._ingest(path, receive, headers, request_id)

    def _ready(self) -> tuple[int, bytes, bytes | None, dict[str, str]]:
        spool = self.spool
        reason = spool.unhealthy_reason() if spool is not None else ("not_ready", "starting up")
        if reason is None:
            body: dict[str, Any] = {"status": "ready"}
            for service in self.services:
                body.update(service.status())
            # Still ready (intake works), but a human should look: docs/ingest.md.
            assert spool is not None
            body["quarantined_segments"] = quarantined = len(spool.quarantined_segments())
            if quarantined:
                body["quarantine"] = (
                    f"{quarantined} damaged spool segments kept in {spool.directory.name}/"
                    "quarantine/ for an operator; see 'Damaged segments' in docs/ingest.md"
                )
            return 200, _json.encode(body), None, {}
        # The code says why (disk_full, spool_full, ...), as intake would.
        raise ServiceUnavailable(f"not ready: {reason[1]}", code=reason[0], retry_after=5)

    async def _ingest(
        self, path: str, receive: Receive, headers: dict[str, str], request_id: str
    ) -> tuple[int, bytes, bytes | None, dict[str, str]]:
        s = self.settings
        if s.role == "api":
            raise Misdirected(
                f"this node runs --role api and takes no facts: send {path} to an ingest "
                "node (docs/scale.md)"
            )
        principal = self.auth.authenticate(
            presented_key(headers.get("authorization"), headers.get("x-api-key"))
        )
        self.limiter.check(principal.key_id)
        body, kind = await read_request_body(receive, headers, s.max_body_bytes)
        limits = intake_limits(s)
        if self.spool is None or self.catalog is None:
            raise ServiceUnavailable("starting up", retry_after=1)
        batch = SpoolBatch(tenant=principal.tenant, received_ms=limits.now_ms)
        if path == "/v1/traces":
            return await self._ingest_otlp(body, kind, limits, batch)
        try:
            if path == "/api/v1/facts":
                batch.facts = decode_facts(body, kind, limits)
                if not self.catalog.knows(principal.tenant, batch.facts):
                    # A write to the store: never on the event loop (SeriesCatalog.admit).
                    await asyncio.to_thread(self.catalog.admit, principal.tenant, batch.facts)
                count, label = len(batch.facts), "fact"
            else:
                batch.events = decode_events(body, kind, limits)
                count, label = len(batch.events), "event"
        except InvalidFacts as e:  # per reason and source, for /metrics and the status page
            source = rejections.source_of(path, headers.get("user-agent", ""))
            rejections.count_refused_batch(principal.tenant, source, e)
            raise
        await self.spool.append(encode_batch(batch))
        metrics.INGESTION_FACTS.labels(label).inc(count)
        return 202, _json.encode({"accepted": count, "request_id": request_id}), None, {}

    async def _ingest_otlp(
        self, body: bytes, kind: str, limits: Limits, batch: SpoolBatch
    ) -> tuple[int, bytes, bytes | None, dict[str, str]]:
        """OTLP/HTTP traces: valid HTTP server spans are stored, invalid ones reported.

        200 with ``partial_success`` rather than 400 for invalid spans: OTLP
        exporters retry nothing on 400 but log it, and retry 429/503 (which
        keep their ``Retry-After``), so a bad span never blocks a batch.
        """
        assert self.spool is not None and self.catalog is not None  # checked by _ingest
        translation = otlp.decode_traces(body, kind, limits)
        if not self.catalog.knows(batch.tenant, translation.facts):
            await asyncio.to_thread(otlp.admit_series, self.catalog, batch.tenant, translation)
        batch.facts = translation.facts
        if batch.facts:
            await self.spool.append(encode_batch(batch))
        accepted, rejected = len(batch.facts), len(translation.rejected)
        metrics.INGESTION_FACTS.labels("fact").inc(accepted)
        metrics.OTLP_SPANS.labels("accepted").inc(accepted)
        metrics.OTLP_SPANS.labels("ignored").inc(translation.ignored)
        if rejected:
            metrics.OTLP_SPANS.labels("rejected").inc(rejected)
            metrics.INGESTION_REJECTED_ITEMS.labels("/v1/traces").inc(rejected)
            rejections.count(batch.tenant, "otlp", (r[1:] for r in translation.rejected))
            log.info(
                "OTLP spans rejected",
                extra={"fields": {"rejected": rejected, "first": translation.rejected[0][2]}},
            )
        response, content_type = otlp.export_response(kind, translation)
        return 200, response, content_type, {}

"""`gravix serve`: the composition root that runs every stage in one process.

Each worker process runs the intake app under uvicorn and, beside it, the
uploader on the worker's own spool; the worker owning spool ``w0`` also runs
the rollup (every minute) and retention (every day).

``role`` (``--role``) picks what a node runs. ``all``: everything above.
``ingest``: intake, spool, uploader, API and dashboard, never the rollup or
retention, whatever ``rollup_enabled``/``retention_enabled`` say; several
ingest nodes with distinct ``node_id`` share one object store, and one other
node (``all``, ``api``, or ``gravix rollup`` from cron) rolls up for all of
them (docs/scale.md). ``api``: everything but intake (facts sent to it get
421 ``misdirected``): the API, dashboard, alerts, rollup and retention.

With ``workers > 1`` the parent binds the socket, forks the workers (each runs
its own uvicorn server on the shared socket and claims its own spool
directory), forwards SIGTERM/SIGINT to them and restarts a worker that dies
unexpectedly. Nothing but the listening socket is shared between workers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import ssl
import sys
import threading
import time
from typing import Any

import uvicorn

from gravix.alerts.service import AlertService
from gravix.api.app import create_api
from gravix.config import Settings
from gravix.dashboard.routes import dashboard_routes
from gravix.errors import ConfigError
from gravix.ingest.app import IngestApp, ServiceFactory, WorkerService
from gravix.ingest.http_protocol import bounded_http_protocol
from gravix.ingest.spool import SpoolWriter
from gravix.ingest.uploader import Uploader
from gravix.logs import configure_logging
from gravix.migrations.commands import check as check_metadata
from gravix.rollup.service import RollupService
from gravix.storage.base import ObjectStore
from gravix.storage.factory import open_store

log = logging.getLogger("gravix.server")
STARTUP_FAILURE = 3
SWITCH_INTERVAL_SECONDS = 0.0005
# How long past shutdown_grace_seconds an orphaned worker may take to stop.
ORPHAN_EXIT_MARGIN_SECONDS = 30.0


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def object_store(settings: Settings) -> ObjectStore:
    """The object store the settings name (made per process: clients are not fork-safe)."""
    secret = settings.s3_secret_access_key
    key_id = settings.s3_access_key_id
    return open_store(
        settings.object_store_url,
        data_dir=settings.data_dir,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        path_style=settings.s3_path_style,
        access_key_id=key_id.get_secret_value() if key_id else None,
        secret_access_key=secret.get_secret_value() if secret else None,
        connect_timeout=settings.s3_timeout_seconds,
        read_timeout=settings.s3_timeout_seconds,
    )


def worker_services(settings: Settings) -> list[ServiceFactory]:
    """What runs beside intake in every worker, on that worker's spool."""

    # Set by this worker's uploader once it stored a segment: the rollup of the
    # same worker (w0) starts its pass then. Other workers' uploads are found
    # by the pass every rollup_interval_seconds.
    uploaded = threading.Event()

    def uploader(spool: SpoolWriter) -> WorkerService:
        return Uploader(
            spool,
            object_store(settings),
            settings.node_id,
            interval=settings.upload_interval_seconds,
            backoff_max=settings.upload_backoff_max_seconds,
            on_upload=uploaded.set,
        )

    def rollup(spool: SpoolWriter) -> WorkerService:
        # One rollup thread per node: in the worker that owns spool w0.
        active = spool.directory.name == "w0"
        return RollupService(settings, object_store(settings), active=active, wake=uploaded)

    def node(_spool: SpoolWriter) -> WorkerService:
        return NodeRole(settings.role, settings.node_id)

    def alerts(spool: SpoolWriter) -> WorkerService:
        # One evaluator thread per node (w0); across nodes, a lease picks one.
        return AlertService(settings, object_store(settings), active=spool.directory.name == "w0")

    services: list[ServiceFactory] = [node]
    if settings.uploader_enabled:
        services.append(uploader)
    if runs_rollup(settings):
        services.append(rollup)
    if settings.alerts_enabled and settings.role != "ingest":
        services.append(alerts)
    return services


def runs_rollup(settings: Settings) -> bool:
    """Whether this node's ``w0`` worker runs the rollup/retention thread.

    An ingest node never does: with many of them, each would contend for the
    tenant locks and scan the whole store every minute for nothing.
    """
    if settings.role == "ingest":
        return False
    return settings.rollup_enabled or settings.retention_enabled


class NodeRole:
    """Says in ``/ready`` which node this is and what it runs; starts nothing."""

    def __init__(self, role: str, node_id: str) -> None:
        self.role, self.node_id = role, node_id

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def status(self) -> dict[str, Any]:
        return {"role": self.role, "node_id": self.node_id}


def _run_worker(settings: Settings, sock: socket.socket, parent_pipe: int | None = None) -> int:
    config = uvicorn.Config(
        IngestApp(
            settings,
            worker_services(settings),
            fallback=create_api(settings, object_store(settings), dashboard_routes(settings)),
        ),
        lifespan="on",
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds) or None,
        log_config=None,
        access_log=False,
        # httptools with header/body deadlines and a connection cap (issue 16).
        http=bounded_http_protocol(settings),
        loop="uvloop",
        server_header=False,
        ssl_certfile=settings.tls_cert_file,
        ssl_keyfile=settings.tls_key_file,
    )
    server = uvicorn.Server(config)
    if parent_pipe is not None:
        _stop_when_parent_dies(server, parent_pipe, settings.shutdown_grace_seconds)
    # The spool writer thread needs the GIL for a moment after each fsync; with
    # the default 5 ms switch interval it waits behind the busy event loop for
    # that long, and every acknowledgement with it (bench/README.md).
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    # uvicorn re-raises the stop signal once it has shut down, so that the
    # process dies of it; a graceful stop is a success here, so the re-raised
    # signal lands on a handler that ignores it and the exit code is 0.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
    server.run(sockets=[sock])
    return 0 if server.started else STARTUP_FAILURE


def _stop_when_parent_dies(server: uvicorn.Server, pipe: int, grace: float) -> None:
    """Stop this worker, as on SIGTERM, once the supervisor has died.

    The supervisor holds the only write end of ``pipe`` and never writes; when
    it dies, even of SIGKILL, the kernel closes that end and the read here
    returns EOF (portable, and no race with a parent that died before the
    worker started watching). The worker then finishes its requests, seals its
    spool and closes the listening socket, so that a restart can bind the port
    (issue 16: orphans kept serving and the restart got "Address already in
    use"). Should that shutdown hang, the worker exits anyway: nothing
    acknowledged depends on it, the spool recovers like after a crash.
    """

    def watch() -> None:
        while os.read(pipe, 1):
            pass
        log.warning("the supervisor is gone; stopping this worker")
        server.handle_exit(signal.SIGTERM, None)
        time.sleep(grace + ORPHAN_EXIT_MARGIN_SECONDS)
        log.error("worker still running after its supervisor died; exiting")
        os._exit(1)

    threading.Thread(target=watch, name="gravix-parent-watch", daemon=True).start()


def serve(settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT; returns the process exit code."""
    object_store(settings)  # a bad store URL or a missing extra: one line now, not per worker
    _check_tls(settings)
    check_metadata(settings)  # a schema behind or ahead of this release: one line
    configure_logging(settings.log_level, settings.log_format)
    try:
        sock = bind(settings.host, settings.port)
    except OSError as e:
        raise ConfigError(f"cannot listen on {settings.host}:{settings.port}: {e.strerror}") from e
    host, port = sock.getsockname()[:2]
    scheme = "https" if settings.tls_cert_file else "http"
    url = f"{scheme}://{host}:{port}" if ":" not in host else f"{scheme}://[{host}]:{port}"
    print(f"Gravix listening on {url} (data dir {settings.data_dir})", flush=True)
    log.info(
        "listening",
        extra={
            "fields": {
                "url": url,
                "workers": settings.workers,
                "role": settings.role,
                "node_id": settings.node_id,
                "rollup": runs_rollup(settings),
            }
        },
    )
    if settings.workers == 1:
        return _run_worker(settings, sock)
    return _supervise(settings, sock)


def _check_tls(settings: Settings) -> None:
    """A certificate and key that do not load: one line now, not a traceback per worker."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
            settings.tls_cert_file, settings.tls_key_file
        )
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(
            f"cannot load TLS certificate {settings.tls_cert_file} with key "
            f"{settings.tls_key_file}: {e}"
        ) from e


def _supervise(settings: Settings, sock: socket.socket) -> int:
    children: dict[int, int] = {}
    stopping = False
    # Workers read the other end: EOF means this process is gone (_stop_when_parent_dies).
    parent_pipe, parent_alive = os.pipe()

    def spawn(slot: int) -> None:
        pid = os.fork()
        if pid == 0:
            os.close(parent_alive)  # else the worker would keep its own pipe open
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = STARTUP_FAILURE
            try:
                code = _run_worker(settings, sock, parent_pipe)
            finally:
                sys.stdout.flush()
                os._exit(code)
        children[pid] = slot

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for slot in range(settings.workers):
        spawn(slot)
    code = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        if pid not in children:
            continue
        slot = children.pop(pid)
        exit_code = os.waitstatus_to_exitcode(status)
        if stopping:
            code = code or max(exit_code, 0)
            continue
        if exit_code == STARTUP_FAILURE:
            log.error("worker failed to start; stopping", extra={"fields": {"slot": slot}})
            stop(signal.SIGTERM, None)
            code = STARTUP_FAILURE
            continue
        log.warning("worker died; restarting", extra={"fields": {"slot": slot, "exit": exit_code}})
        time.sleep(0.5)
        spawn(slot)
    return code

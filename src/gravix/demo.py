"""``gravix demo``: a server with synthetic traffic, for ``make demo``.

Creates a key and an admin user (``admin``, with a fresh password) for tenant
``demo``, starts ``gravix serve`` as a child process (its output goes to
``<data-dir>/server.log``), waits for ``/ready``, sends the last
``history_minutes`` of demo traffic at once (so the dashboard has something
to show from the first second; only the part not sent by an earlier run of
the same data dir, judged by when ``acked.log`` was last written), prints how
to reach it and how to log in, then runs the load generator in this process
until Ctrl-C/SIGTERM, and finally stops the server with SIGTERM so it seals
its spool. Acknowledged fact ids are appended to ``<data-dir>/acked.log``.

Alerts: the demo tenant gets the default rules (:mod:`gravix.alerts.defaults`)
with one webhook channel, :data:`DEMO_CHANNEL`, pointing at a receiver this
process runs on loopback (:class:`gravix.alerts.receiver.WebhookReceiver`),
which prints each notification above the load generator's status line. The
rules are kept disabled while past traffic is sent (a half-sent history would
look like services gone silent) and enabled once it is in.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType

import httpx
from rich.console import Console
from rich.text import Text

from gravix.config import load_settings
from gravix.errors import GravixError
from gravix.loadgen.traffic import TrafficModel

TENANT = "demo"
ADMIN = "admin"
READY_TIMEOUT_SECONDS = 20.0
STOP_TIMEOUT_SECONDS = 30.0
# Shown off in the demo: 5xx spikes of a few minutes on two endpoints, and a latency
# regression on search that every third search deploy brings and the next one fixes.
DEMO_SPIKES = ("checkout:POST:/checkout", "payments:POST:/payments")
DEMO_REGRESSIONS = ("search:GET:/search",)
# A fixed seed: the same incidents at the same times of day on every run
# (the schedules are functions of the clock), so the demo is reproducible.
DEMO_SEED = 2
DEMO_HISTORY_MINUTES = 120
DEMO_CHANNEL = "demo-terminal"
_LISTENING = "Gravix listening on "


class _Stopped(Exception):
    """SIGTERM arrived before the load generator took over signal handling."""


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    raise _Stopped


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _client_host(host: str) -> str:
    """Where a client connects to reach a server listening on ``host``."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _listening_url(log: Path) -> str | None:
    """The URL ``gravix serve`` announced once bound (it knows the port when ``--port 0``)."""
    for line in _tail(log, 200).splitlines():
        if line.startswith(_LISTENING):
            url = line[len(_LISTENING) :].split(" ", 1)[0]
            scheme, _, rest = url.partition("://")
            host, _, port = rest.rpartition(":")
            return f"{scheme}://{_client_host(host.strip('[]'))}:{port}"
    return None


def _wait_ready(proc: subprocess.Popen[bytes], log: Path) -> str:
    """Poll ``/ready`` until 200; the server's URL, or GravixError with its log tail."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    with httpx.Client(timeout=1.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            code = proc.poll()
            if code is not None:
                raise _failed(f"gravix serve exited with code {code} before it was ready", log)
            # Only once our server has bound its socket: something else may
            # already answer on that port (then our server fails to bind).
            url = _listening_url(log)
            try:
                if url and client.get(f"{url}/ready").status_code == 200:
                    return url
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    raise _failed(f"gravix serve was not ready within {READY_TIMEOUT_SECONDS:.0f} s", log)


def _failed(message: str, log: Path) -> GravixError:
    tail = _tail(log)
    if tail:
        Console(stderr=True).print(
            f"--- last lines of {log} ---\n{tail}\n---", markup=False, highlight=False
        )
    return GravixError(f"{message} (server log: {log})")


def curl_example(url: str, key: str) -> str:
    """A shell command posting one fact (with a fresh id and timestamp) to ``url``."""
    fact = (
        """{"event_id":"curl-'"$(date +%s)"'","timestamp":'"$(date +%s000)"',"""
        """"service":"checkout","method":"GET","path":"/cart/{cart_id}","status":200,"""
        """"latency_ms":12.5,"env":"prod"}"""
    )
    return (
        f"curl -sS {url}/api/v1/facts \\\n"
        f"  -H 'Authorization: Bearer {key}' \\\n"
        "  -H 'Content-Type: application/json' \\\n"
        f"  -d '[{fact}]'"
    )


def demo_admin(users_db: Path, database_url: str | None = None) -> tuple[str, str]:
    """The demo tenant's admin with a new random password: (name, password)."""
    from gravix.api.users import UserStore

    users = UserStore(users_db, database_url)
    password = secrets.token_urlsafe(12)
    existing = users.get(ADMIN)
    if existing is None:
        users.create(ADMIN, TENANT, "admin", password)
    elif existing.tenant == TENANT and existing.is_admin:
        users.set_password(ADMIN, password)  # a re-run: the old password (and sessions) end
    else:
        raise GravixError(
            f"user {ADMIN!r} in {users_db} is not the demo admin; use another --data-dir"
        )
    return ADMIN, password


def _banner(
    console: Console, url: str, key: str, data_dir: Path, login: tuple[str, str], alerts: str
) -> None:
    curl = curl_example(url, key)
    rows = (
        ("URL", f"{url}/  (the dashboard: sign in with the login below)"),
        ("tenant", TENANT),
        ("API key", key),
        ("", "(sends facts; an ingest key never reads them)"),
        ("login", f"{login[0]}  password: {login[1]}"),
        ("", f"an admin of tenant {TENANT}: POST {url}/api/v1/login (docs/access.md)"),
        ("metrics", f"{url}/metrics"),
        ("data dir", str(data_dir)),
        ("", "server.log: the server's output; acked.log: every acknowledged fact id"),
        ("store", str(data_dir / "store" / "raw")),
        (
            "",
            "spool segments are sealed every few seconds and shipped here "
            "(upload_segments_total in /metrics)",
        ),
        ("rollup", str(data_dir / "store" / "metrics_1m")),
        (
            "",
            "minute metrics in Parquet, rolled up after each upload "
            "(docs/data-model.md shows how to read them)",
        ),
        ("alerts", f"notifications go to a webhook on {alerts} (channel {DEMO_CHANNEL}),"),
        ("", "run by this process: each is printed below as a FIRING or RESOLVED line"),
        ("", f"the dashboard's Alerts view shows them too: {url}/?view=alerts"),
    )
    console.rule("[bold green]Gravix demo is running")
    for label, value in rows:
        style = "dim" if not label else ""
        # soft_wrap: long values (the key, the curl line) stay copyable in one piece.
        console.print(Text.assemble((f"{label:<9}", "bold"), (value, style)), soft_wrap=True)
    console.print(Text("\nSend a fact yourself:", style="bold"))
    console.print(Text(curl), soft_wrap=True)
    console.print(
        Text(
            f"\nSynthetic traffic: 5xx spikes of a few minutes on {', '.join(DEMO_SPIKES)}; "
            f"every third deploy of search slows {', '.join(DEMO_REGRESSIONS)} until the next "
            "deploy. Open the URL and sign in to see them. Ctrl-C stops everything."
        )
    )
    console.print(
        Text(
            "Default alert rules: 5xx rate per endpoint, p95 latency per service, "
            "availability 99.5% over 30 days, a service gone silent (docs/alerts.md)."
        )
    )
    console.rule()


@contextmanager
def _server(data_dir: Path, host: str, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``gravix serve`` as a child; on exit it gets SIGTERM and time to seal its spool."""
    command = [
        sys.executable, "-m", "gravix.cli", "serve",
        "--data-dir", str(data_dir), "--host", host, "--port", str(port),
    ]  # fmt: skip
    env = {
        "GRAVIX_OPERATOR_TENANT": TENANT,  # the demo's admin runs the node too
        **os.environ,
    }
    with log.open("wb") as out:
        # A session of its own, so a Ctrl-C in the terminal reaches only the
        # demo, which then stops the server after the load generator.
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=env,
        )  # fmt: skip
    try:
        yield proc
    finally:
        _stop_server(proc)


class _Watchdog:
    """Ends the load generator (by SIGTERM to this process) if the server dies."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.exit_code: int | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="demo-watchdog", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._done.wait(0.5):
            code = self.proc.poll()
            if code is not None:
                self.exit_code = code
                os.kill(os.getpid(), signal.SIGTERM)
                return

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def _stop_server(proc: subprocess.Popen[bytes]) -> None:
    console = Console(stderr=True)
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_TIMEOUT_SECONDS)
    except (subprocess.TimeoutExpired, KeyboardInterrupt, _Stopped):
        console.print("server did not stop in time; killing it", highlight=False)
        proc.kill()
        proc.wait()
        return
    if proc.returncode != 0:
        console.print(f"server exited with code {proc.returncode}", highlight=False)
    else:
        console.print("server stopped; its spool is sealed", highlight=False)


def history_start(ack_log: Path, now_ms: int, minutes: float) -> int:
    """Where the past traffic to send begins: ``minutes`` ago, or where the last run stopped."""
    start = now_ms - int(minutes * 60_000)
    try:
        last = int(ack_log.stat().st_mtime * 1000)
    except FileNotFoundError:
        return start
    return max(start, min(last, now_ms))


def _send_history(
    console: Console, url: str, key: str, model: TrafficModel, ack_log: Path, minutes: float
) -> None:
    from gravix.loadgen.history import send_history

    now = int(time.time() * 1000)
    start = history_start(ack_log, now, minutes)
    if minutes <= 0 or now - start < 60_000:
        return
    console.print(f"sending the last {(now - start) / 60_000:.0f} min of demo traffic ...")
    began = time.monotonic()
    sent = 0
    # Sending takes a while: catch up with the clock, so live traffic continues seamlessly.
    while now - start > 1000:
        sent += send_history(url, key, model, start, now, ack_log=ack_log)
        start, now = now, int(time.time() * 1000)
    console.print(f"sent {sent:,} facts in {time.monotonic() - began:.1f} s")


def run_demo(
    data_dir: Path,
    host: str = "127.0.0.1",
    port: int = 8080,
    rate: float = 50.0,
    history_minutes: float = DEMO_HISTORY_MINUTES,
) -> int:
    """Serve and send demo traffic until Ctrl-C/SIGTERM; returns the exit code."""
    from gravix.alerts.defaults import install
    from gravix.alerts.receiver import WebhookReceiver
    from gravix.alerts.rules import AlertStore
    from gravix.ingest.keys import KeyStore
    from gravix.loadgen.sender import LoadgenOptions, run_loadgen
    from gravix.migrations.commands import upgrade
    from gravix.schema.alerts import Webhook

    settings = load_settings(None, data_dir=data_dir)
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    # The demo's own store: a data dir left by an earlier release is brought up to
    # date here, where `gravix serve` would ask for `gravix db upgrade`.
    upgrade(settings)
    _, key = KeyStore(settings.keys_db, database_url=settings.metadata_url).create(
        TENANT, "gravix demo"
    )
    login = demo_admin(settings.users_db, settings.metadata_url)
    log = data_dir / "server.log"
    ack_log = data_dir / "acked.log"
    console = Console()
    # The load generator's console: alert lines printed on it stay above its status line.
    status_console = Console(stderr=True)
    alerts = AlertStore(settings)
    previous = signal.signal(signal.SIGTERM, _raise_stopped)
    try:
        with ExitStack() as stack:
            # The receiver outlives the server, so deliveries in flight at the end arrive.
            receiver = stack.enter_context(WebhookReceiver(console=status_console))
            channel = Webhook(name=DEMO_CHANNEL, url=receiver.url)
            install(alerts, TENANT, [channel], enabled=False, by="gravix demo")
            proc = stack.enter_context(_server(data_dir, host, port, log))
            console.print(f"starting gravix serve on {host}:{port} (log: {log}) ...")
            url = _wait_ready(proc, log)
            model = TrafficModel(
                rate=rate, seed=DEMO_SEED, spikes=DEMO_SPIKES, regressions=DEMO_REGRESSIONS
            )
            _send_history(console, url, key, model, ack_log, history_minutes)
            install(alerts, TENANT, [channel], by="gravix demo")
            _banner(console, url, key, data_dir, login, receiver.url)
            watchdog = _Watchdog(proc)
            options = LoadgenOptions(
                url=url,
                key=key,
                rate=rate,
                ack_log=ack_log,
                seed=DEMO_SEED,
                spikes=list(DEMO_SPIKES),
                regressions=list(DEMO_REGRESSIONS),
            )
            stats = run_loadgen(options, model=model, console=status_console)
            watchdog.stop()
            print(stats.summary(), flush=True)
            if watchdog.exit_code is not None:
                raise _failed(f"gravix serve exited with code {watchdog.exit_code}", log)
            if stats.fatal:
                raise GravixError(stats.fatal)
    except (_Stopped, KeyboardInterrupt):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0

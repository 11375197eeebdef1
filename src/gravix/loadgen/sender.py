"""Sending the traffic model's facts to a Gravix intake over HTTP.

One producer task turns the model's rate into batches (full ones, or whatever
accumulated within ``max_wait`` seconds at low rates) and puts them on a small
queue; ``concurrency`` worker tasks post them over one keep-alive
``httpx.AsyncClient``. A full queue slows the producer: the generator never
runs ahead of what the server accepts by more than a few batches.

Delivery of one batch (:meth:`Sender.deliver`):

* 2xx: acknowledged. For facts, every event id is appended to the ack log
  (one id a line) and the file is flushed before the next response is read.
  The ack log therefore only ever names facts the server has acknowledged.
* 429 / 503: wait ``Retry-After`` (capped) and post the *same* bytes again,
  so the same event ids; other 5xx and connection errors: back off and retry.
* 400 / 413 / 415 / 422 (any other 4xx but 408): the batch can never
  succeed; report the error once per kind and drop it.
* 401 / 403 / 404 / 405 and redirects: every batch would fail the same way;
  stop the run.

Service events go to ``/api/v1/events`` the same way but are not written to
the ack log, which lists facts only.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import httpx
import msgspec
from rich.console import Console
from rich.live import Live
from rich.text import Text

from gravix.errors import describe_error_body
from gravix.loadgen.traffic import TrafficModel
from gravix.retry import retry_after_seconds

FACTS_PATH = "/api/v1/facts"
EVENTS_PATH = "/api/v1/events"
USER_AGENT = "gravix-loadgen"
_FATAL = frozenset({401, 403, 404, 405})
_encode = msgspec.json.Encoder().encode


@dataclass(slots=True)
class LoadgenOptions:
    """What ``gravix loadgen`` was asked to do (see its ``--help``)."""

    url: str = "http://127.0.0.1:8080"
    key: str = ""
    rate: float = 50.0
    duration: float | None = None  # seconds; None or 0: until stopped
    batch: int = 100
    ack_log: Path | None = None
    seed: int | None = None
    concurrency: int = 2
    spikes: list[str] = field(default_factory=list)
    slows: list[str] = field(default_factory=list)
    regressions: list[str] = field(default_factory=list)
    events: bool = True
    quiet: bool = False
    max_wait: float = 1.0  # longest a fact waits for its batch to fill
    retry_after_cap: float = 10.0
    backoff_cap: float = 5.0
    drain_seconds: float = 5.0  # at the end, how long queued batches may still be sent
    grace_seconds: float = 5.0  # then, how long in-flight requests may finish
    request_timeout: float = 30.0


@dataclass(slots=True)
class LoadgenStats:
    """Counters of one run. Facts and events are counted separately."""

    sent: int = 0  # facts posted at least once
    acknowledged: int = 0  # facts in batches answered 2xx
    rejected: int = 0  # facts in batches refused with 4xx and dropped
    retried: int = 0  # requests repeated after 429/503/5xx/connection errors
    throttled: int = 0  # 429 and 503 responses
    server_errors: int = 0  # other 5xx responses
    connection_errors: int = 0
    generated: int = 0  # facts the model produced
    events_sent: int = 0
    events_acknowledged: int = 0
    seed: int = 0
    fatal: str | None = None
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None

    @property
    def elapsed(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    def summary(self) -> str:
        """The one line printed at the end of a run."""
        unacked = self.sent - self.acknowledged - self.rejected
        rate = self.acknowledged / self.elapsed if self.elapsed > 0 else 0.0
        return (
            f"loadgen: {self.acknowledged:,} of {self.sent:,} facts acknowledged "
            f"({rate:,.0f}/s over {self.elapsed:.1f} s), {self.rejected:,} rejected, "
            f"{unacked:,} unacknowledged, {self.retried:,} retries, "
            f"{self.connection_errors:,} connection errors, "
            f"{self.events_acknowledged:,} events; seed {self.seed}"
        )


@dataclass(frozen=True, slots=True)
class Batch:
    """One request body, encoded once so that every retry sends the same bytes."""

    kind: Literal["facts", "events"]
    ids: list[str]
    body: bytes

    @classmethod
    def of(cls, kind: Literal["facts", "events"], items: list[dict[str, Any]]) -> Batch:
        return cls(kind, [item["event_id"] for item in items], _encode(items))


def _describe_error(response: httpx.Response) -> str:
    """``code (field): message`` from the Gravix error shape, or the raw body."""
    return describe_error_body(response.content) or response.reason_phrase


class Sender:
    """Posts batches and keeps the stats and the ack log; see the module docstring."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        options: LoadgenOptions,
        stats: LoadgenStats,
        console: Console,
        ack_log: IO[str] | None = None,
        on_fatal: Callable[[], None] | None = None,
    ) -> None:
        self.client = client
        self.options = options
        self.stats = stats
        self.console = console
        self.ack_log = ack_log
        self.on_fatal = on_fatal
        self.abort = asyncio.Event()  # set: stop retrying, give up on batches
        self.last_error = ""
        self._reported: set[tuple[int, str]] = set()
        self._unreachable = False

    def _say(self, message: str) -> None:
        self.console.print(message, markup=False, highlight=False)

    async def _pause(self, seconds: float) -> bool:
        """Sleep, or return True early when the run is being aborted."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.abort.wait(), seconds)
        return self.abort.is_set()

    async def deliver(self, batch: Batch) -> bool:
        """Post ``batch`` until it is acknowledged or dropped; True if acknowledged."""
        facts = batch.kind == "facts"
        path = FACTS_PATH if facts else EVENTS_PATH
        n = len(batch.ids)
        failures = 0
        first = True
        while True:
            if self.abort.is_set():
                return False
            if not first:
                self.stats.retried += 1
            try:
                response = await self.client.post(path, content=batch.body)
            except httpx.HTTPError as e:  # connection refused/reset, timeouts, bad responses
                if first:
                    self._count_sent(facts, n)
                first = False
                failures += 1
                self.stats.connection_errors += 1
                self._connection_lost(e)
                delay = min(self.options.backoff_cap, 0.2 * 2 ** min(failures, 10))
                if await self._pause(delay * random.uniform(0.5, 1.0)):
                    return False
                continue
            if first:
                self._count_sent(facts, n)
            first = False
            if self._unreachable:
                self._unreachable = False
                self._say(f"loadgen: {self.options.url} is reachable again")
            status = response.status_code
            if 200 <= status < 300:
                self._acknowledge(batch)
                return True
            if status in (429, 503):
                self.stats.throttled += 1
                self.last_error = f"{status} {_describe_error(response)}"
                wait = retry_after_seconds(
                    response.headers.get("retry-after"), 1.0, self.options.retry_after_cap
                )
                if await self._pause(wait):
                    return False
                continue
            if 400 <= status < 500 and status not in _FATAL and status != 408:
                if facts:
                    self.stats.rejected += n
                self._report_once(status, response, f"dropped a batch of {n} {batch.kind}")
                return False
            if status in _FATAL or 300 <= status < 400:
                detail = _describe_error(response)
                if 300 <= status < 400:
                    detail = f"a redirect to {response.headers.get('location')}; fix --url"
                self.stats.fatal = f"the server at {self.options.url} answered {status}: {detail}"
                self.abort.set()
                if self.on_fatal is not None:
                    self.on_fatal()
                return False
            # Any other answer (500, 502, 504, 408...): the batch was not acknowledged.
            failures += 1
            self.stats.server_errors += 1
            self.last_error = f"{status} {_describe_error(response)}"
            delay = min(self.options.backoff_cap, 0.2 * 2 ** min(failures, 10))
            if await self._pause(delay * random.uniform(0.5, 1.0)):
                return False

    def _count_sent(self, facts: bool, n: int) -> None:
        if facts:
            self.stats.sent += n
        else:
            self.stats.events_sent += n

    def _acknowledge(self, batch: Batch) -> None:
        if batch.kind == "events":
            self.stats.events_acknowledged += len(batch.ids)
            return
        if self.ack_log is not None:
            # Flushed before anything else happens, so a crash test that reads
            # the log sees every id the server has acknowledged so far.
            self.ack_log.write("\n".join(batch.ids) + "\n")
            self.ack_log.flush()
        self.stats.acknowledged += len(batch.ids)

    def _connection_lost(self, error: httpx.HTTPError) -> None:
        self.last_error = f"{type(error).__name__}: {error}"
        if not self._unreachable:
            self._unreachable = True
            self._say(f"loadgen: cannot reach {self.options.url} ({self.last_error}); retrying")

    def _report_once(self, status: int, response: httpx.Response, what: str) -> None:
        detail = _describe_error(response)
        self.last_error = f"{status} {detail}"
        kind = (status, detail.split(":", 1)[0])
        if kind in self._reported:
            return
        self._reported.add(kind)
        self._say(f"loadgen: {what}: {status} {detail} (further ones are only counted)")


class LoadgenRun:
    """One run: producer, workers, progress display and shutdown."""

    def __init__(
        self,
        options: LoadgenOptions,
        model: TrafficModel | None = None,
        console: Console | None = None,
    ) -> None:
        self.options = options
        self.model = model or TrafficModel(
            rate=options.rate,
            seed=options.seed,
            spikes=options.spikes,
            slows=options.slows,
            regressions=options.regressions,
        )
        self.console = console or Console(stderr=True)
        self.stats = LoadgenStats(seed=self.model.seed)
        self.stop = asyncio.Event()  # set: produce no more
        self._queue: asyncio.Queue[Batch | None] = asyncio.Queue(
            maxsize=max(2, 2 * options.concurrency)
        )
        self._workers: list[asyncio.Task[None]] = []
        self._sender: Sender | None = None

    # --- control -------------------------------------------------------------
    def request_stop(self) -> None:
        """First call: finish in-flight requests and end. Second: end right away."""
        if self.stop.is_set():
            if self._sender is not None:
                self._sender.abort.set()
            for task in self._workers:
                task.cancel()
        self.stop.set()

    async def run(self) -> LoadgenStats:
        opts = self.options
        client = httpx.AsyncClient(
            base_url=opts.url,
            headers={
                "Authorization": f"Bearer {opts.key}",
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
            },
            limits=httpx.Limits(
                max_connections=opts.concurrency, max_keepalive_connections=opts.concurrency
            ),
            timeout=httpx.Timeout(opts.request_timeout, connect=5.0),
            # Talk straight to --url: a proxy from the environment has no
            # business between a load generator and a loopback server.
            trust_env=False,
        )
        with _open_ack_log(opts.ack_log) as ack_log:
            async with client:
                self._sender = sender = Sender(
                    client, opts, self.stats, self.console, ack_log, on_fatal=self.stop.set
                )
                self._workers = [
                    asyncio.create_task(self._work(sender)) for _ in range(opts.concurrency)
                ]
                with self._display():
                    await self._produce()
                    await self._shutdown(sender)
        self.stats.ended = time.monotonic()
        return self.stats

    # --- producing -----------------------------------------------------------
    async def _produce(self) -> None:
        opts, model, stats = self.options, self.model, self.stats
        deadline = time.monotonic() + opts.duration if opts.duration else math.inf
        pending: list[dict[str, Any]] = []
        oldest = time.monotonic()
        last_mono, last_wall = time.monotonic(), _now_ms()
        carry = 0.0
        while not self.stop.is_set():
            rate = model.rate_at(last_wall)
            tick = max(0.005, min(opts.max_wait, opts.batch / rate))
            tick = min(tick, max(0.0, deadline - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), tick)
            now_mono, now_wall = time.monotonic(), max(_now_ms(), last_wall + 1)
            # After the queue held us up, do not try to catch up in one burst.
            elapsed = min(now_mono - last_mono, 2 * opts.max_wait)
            due = rate * elapsed + carry
            n = int(due)
            carry = due - n
            if n:
                if not pending:
                    oldest = now_mono
                pending.extend(model.facts(n, last_wall, now_wall))
                stats.generated += n
            if opts.events:
                events = model.events_between(last_wall, now_wall)
                if events:
                    await self._put(Batch.of("events", events), deadline)
            last_mono, last_wall = now_mono, now_wall
            ending = self.stop.is_set() or now_mono >= deadline
            while len(pending) >= opts.batch:
                await self._put(Batch.of("facts", pending[: opts.batch]), deadline)
                del pending[: opts.batch]
                oldest = now_mono
            if pending and (ending or now_mono - oldest >= 0.95 * opts.max_wait):
                await self._put(Batch.of("facts", pending), deadline)
                pending = []
            if ending:
                return

    async def _put(self, batch: Batch, deadline: float) -> None:
        """Queue ``batch``, waiting for room until stopped or past the deadline."""
        try:
            self._queue.put_nowait(batch)
            return
        except asyncio.QueueFull:
            if self.stop.is_set():
                return
        put = asyncio.create_task(self._queue.put(batch))
        stopped = asyncio.create_task(self.stop.wait())
        timeout = None if deadline == math.inf else max(0.0, deadline - time.monotonic())
        await asyncio.wait((put, stopped), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        put.cancel()  # a no-op if the batch is queued; otherwise it is never sent

    # --- sending -------------------------------------------------------------
    async def _work(self, sender: Sender) -> None:
        while True:
            batch = await self._queue.get()
            try:
                if batch is None:
                    return
                await sender.deliver(batch)
            except Exception as e:
                # A bug must not silently stop a worker (the queue would back up).
                sender.last_error = f"{type(e).__name__}: {e}"
                self.console.print(
                    f"loadgen: dropped a batch after an unexpected error: {sender.last_error}",
                    markup=False,
                    highlight=False,
                )
            finally:
                self._queue.task_done()

    async def _shutdown(self, sender: Sender) -> None:
        """Drain what is queued (unless stopped), then let in-flight requests end."""
        opts = self.options
        if not self.stop.is_set() and not sender.abort.is_set():
            drained = asyncio.create_task(self._queue.join())
            stopped = asyncio.create_task(self.stop.wait())
            aborted = asyncio.create_task(sender.abort.wait())
            await asyncio.wait(
                (drained, stopped, aborted),
                timeout=opts.drain_seconds,
                return_when=asyncio.FIRST_COMPLETED,
            )
            for task in (drained, stopped, aborted):
                task.cancel()
        sender.abort.set()
        while not self._queue.empty():
            self._queue.get_nowait()
            self._queue.task_done()
        for _ in self._workers:
            self._queue.put_nowait(None)
        _, late = await asyncio.wait(self._workers, timeout=opts.grace_seconds)
        for task in late:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)

    # --- progress ------------------------------------------------------------
    @contextlib.contextmanager
    def _display(self) -> Iterator[None]:
        if self.options.quiet:
            yield
            return
        progress = _Progress(self)
        with Live(
            get_renderable=progress.render,
            console=self.console,
            refresh_per_second=4,
            transient=True,
        ):
            yield


class _Progress:
    """The one-line live status: throughput over the last few seconds and counters."""

    def __init__(self, run: LoadgenRun) -> None:
        self.run = run
        self.samples: deque[tuple[float, int]] = deque(maxlen=12)

    def render(self) -> Text:
        stats, model = self.run.stats, self.run.model
        now, now_ms = time.monotonic(), _now_ms()
        self.samples.append((now, stats.acknowledged))
        t0, acked0 = self.samples[0]
        rate = (stats.acknowledged - acked0) / (now - t0) if now > t0 else 0.0
        target = model.rate_at(now_ms)
        text = Text()
        text.append("loadgen ", style="bold cyan")
        text.append(f"{self.run.options.url}  ")
        text.append(f"{rate:,.0f} facts/s", style="bold")
        text.append(f" (target {target:,.0f})  acked {stats.acknowledged:,}  ")
        text.append(f"sent {stats.sent:,}  retried {stats.retried:,}  ")
        text.append(f"rejected {stats.rejected:,}  ", style="red" if stats.rejected else None)
        errors = stats.connection_errors + stats.server_errors + stats.throttled
        text.append(f"errors {errors:,}", style="yellow" if errors else None)
        text.append(f"  events {stats.events_acknowledged:,}")
        spiking = [model.endpoints[i] for i in model.spikes]
        slowed = [model.endpoints[i] for i in model.slows]
        active = [
            f"{ep.method} {ep.path} 5xx spike" for ep in spiking if model.spike_at(ep.key, now_ms)
        ]
        active += [f"{ep.method} {ep.path} slow" for ep in slowed if model.slow_at(ep.key, now_ms)]
        regressed = [model.endpoints[i] for i in model.regressions]
        active += [
            f"{ep.method} {ep.path} slow since a deploy"
            for ep in regressed
            if model.regression_at(ep.key, now_ms)
        ]
        if active:
            text.append("  now: " + ", ".join(active), style="magenta")
        sender = self.run._sender
        if sender is not None and sender.last_error and errors:
            text.append(f"\n  last error: {sender.last_error[:160]}", style="dim")
        return text


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@contextlib.contextmanager
def _open_ack_log(path: Path | None) -> Iterator[IO[str] | None]:
    if path is None:
        yield None
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        yield f


def run_loadgen(
    options: LoadgenOptions,
    *,
    model: TrafficModel | None = None,
    console: Console | None = None,
    handle_signals: bool = True,
) -> LoadgenStats:
    """Run until the duration ends or SIGINT/SIGTERM; returns the stats.

    With ``handle_signals`` the first SIGINT/SIGTERM ends the run gracefully
    (in-flight requests finish, so their acks are logged) and a second one
    ends it at once. The previous handlers are restored afterwards.
    """

    async def main() -> LoadgenStats:
        run = LoadgenRun(options, model, console)
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        if handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, run.request_stop)
                installed.append(sig)
        try:
            return await run.run()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return asyncio.run(main())
    finally:
        if handle_signals:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

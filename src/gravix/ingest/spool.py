"""The write-ahead spool: a request is acknowledged only after its bytes are fsynced.

One writer thread owns the spool's files (house style: requests hand it work and
wait for the commit). :meth:`SpoolWriter.append` queues ``(payload, future)`` and
waits on the future. The writer takes everything queued, writes it with one
write and makes it durable with ONE fsync (a group commit), then resolves all
those futures; requests arriving during the fsync queue for the next commit.
The file format is documented in :mod:`gravix.schema.segment`; the files
themselves are handled by :class:`~gravix.ingest.appender.SegmentAppender`.

Refusals happen before touching disk (503 ``spool_full`` / ``spool_closed`` /
``disk_full``): bytes on disk (plus queued) at the high-water mark, less free
space on the file system than ``min_free_bytes``, a full file system (below
``gravix.metadata.FULL_BELOW_BYTES`` free, whatever ``min_free_bytes`` says),
or a closed writer.

Failures: when a write or fsync raises, no payload of that commit is
acknowledged (503 ``spool_write_failed`` with Retry-After). After a failed write
the segment is truncated back to its last committed offset and reused. After a
failed fsync the page cache state is unknown ("fsyncgate": the kernel may have
dropped the dirty pages and a second fsync may report success), so the segment
is sealed and never written again; the next commit opens a new one. A seal that
fails (rename error) is counted in ``batch_rotation_errors_total`` and retried.
Nothing here needs a restart: once the disk has room, the next append works.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gravix.errors import DiskFull, GravixError, PayloadTooLarge, ServiceUnavailable
from gravix.ingest.appender import CommitFailed, SegmentAppender
from gravix.ingest.metrics import (
    SPOOL_BYTES,
    SPOOL_COMMIT_RECORDS,
    SPOOL_FSYNCS,
    SPOOL_HIGH_WATER_BYTES,
    SPOOL_PENDING_SEGMENTS,
    SPOOL_QUARANTINED_FILES,
    SPOOL_REJECTIONS,
    SPOOL_WRITE_ERRORS,
)
from gravix.ingest.recovery import RecoveryReport, recover_spool
from gravix.ingest.segment import SegmentIdGenerator, fsync_dir
from gravix.metadata import FULL_BELOW_BYTES
from gravix.schema.segment import (
    FILE_HEADER_SIZE,
    MAX_PAYLOAD_BYTES,
    SEALED_SUFFIX,
    is_segment_name,
    quarantined_files,
    record_size,
    segment_created_ms,
)

__all__ = ["RecoveryReport", "SpoolStats", "SpoolWriter", "claim_spool_dir"]

logger = logging.getLogger("gravix.spool")

MIB = 1024 * 1024
RETRY_AFTER_SECONDS = 5
CLOSED_RETRY_AFTER_SECONDS = 1  # another worker, or this one restarted, takes it soon
_MAX_COMMIT_BYTES = 16 * MIB  # bounds the memory of one joined write
_FREE_SPACE_TTL_SECONDS = 0.25  # statvfs at most this often; intake resumes within it
_UNHEALTHY_AFTER_FAILURE_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """A snapshot of one spool, for /ready, /metrics and the uploader."""

    bytes: int  # on disk, in open and sealed segments (quarantine/ not counted)
    pending_segments: int  # sealed segments waiting for the uploader
    oldest_sealed_age_seconds: float | None
    open_segment_bytes: int


@dataclass(slots=True)
class _Append:
    payload: bytes
    future: Future[None]


class _LoopGroup:
    """The appends of one event-loop iteration: one hand-off in, one wake-up back.

    Only the writer thread resolves the appends' futures, and the callbacks are
    attached before the group is queued, so ``_left`` needs no lock.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.items: list[_Append] = []
        self.done: asyncio.Future[None] = loop.create_future()
        self._left = 0

    def seal(self) -> list[_Append]:
        self._left = len(self.items)
        for item in self.items:
            item.future.add_done_callback(self._resolved)
        return self.items

    def _resolved(self, _future: Future[None]) -> None:
        self._left -= 1
        if self._left == 0:
            self.loop.call_soon_threadsafe(self._finish)

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


@dataclass(slots=True)
class _Control:
    kind: Literal["seal", "stop"]
    future: Future[None]


class SpoolWriter:
    """The one writer of a spool directory; see the module docstring.

    The four limits are plain attributes, read at every use, so they can be
    changed on a running writer.
    """

    def __init__(
        self,
        directory: Path,
        *,
        segment_max_age_seconds: float = 60,
        segment_max_bytes: int = 64 * MIB,
        high_water_bytes: int = 1024 * MIB,
        min_free_bytes: int = 64 * MIB,
    ) -> None:
        self._dir = Path(directory)
        self.segment_max_age_seconds = segment_max_age_seconds
        self.segment_max_bytes = segment_max_bytes
        self.high_water_bytes = high_water_bytes
        self.min_free_bytes = min_free_bytes
        self._ids = SegmentIdGenerator()
        self._queue: queue.SimpleQueue[_Append | list[_Append] | _Control] = queue.SimpleQueue()
        self._group: _LoopGroup | None = None  # appends of this event-loop iteration
        self._thread: threading.Thread | None = None
        # Guards the fields below, shared by request threads, the uploader and the writer.
        self._lock = threading.Lock()
        self._closed = False
        self._bytes = 0
        self._queued_bytes = 0
        self._sealed: dict[str, int] = {}  # sealed segment name -> size
        self._free: int | None = None
        self._free_checked = -_FREE_SPACE_TTL_SECONDS
        self._last_failure: float | None = None
        # Used by the writer thread only (its fault-injection seams live there too).
        self._appender = SegmentAppender(self._dir, self._ids, self._on_bytes, self._on_sealed)

    @property
    def directory(self) -> Path:
        return self._dir

    # --- lifecycle ------------------------------------------------------------

    def open(self) -> RecoveryReport:
        """Recover what a previous process left, then start the writer thread."""
        with self._lock:
            if self._thread is not None or self._closed:
                raise GravixError(f"spool {self._dir} was already opened")
        self._dir.mkdir(parents=True, exist_ok=True)
        report = recover_spool(self._dir, self._ids)
        failed = {p.name for p in report.failed}
        total = 0
        sealed: dict[str, int] = {}
        with os.scandir(self._dir) as entries:
            for entry in entries:
                if not is_segment_name(entry.name):
                    continue
                size = entry.stat().st_size
                total += size
                if entry.name.endswith(SEALED_SUFFIX) and entry.name not in failed:
                    sealed[entry.name] = size
        with self._lock:
            self._bytes = total
            self._sealed = sealed
            self._publish_gauges()
            SPOOL_QUARANTINED_FILES.set_function(lambda: len(self.quarantined_segments()))
            self._thread = threading.Thread(
                target=self._run, name=f"gravix-spool-writer:{self._dir}", daemon=True
            )
            self._thread.start()
        logger.info(
            "spool %s open: %d segments scanned, %d records recovered, %d torn tails, "
            "%d quarantined, %d bytes pending",
            self._dir,
            report.segments_scanned,
            report.records_recovered,
            report.torn_tails,
            len(report.quarantined),
            total,
        )
        return report

    def close(self) -> None:
        """Commit everything queued, seal the active segment, stop the writer. Idempotent."""
        with self._lock:
            first = not self._closed
            self._closed = True
            thread = self._thread
            if first and thread is not None:
                self._hand_over_group()  # admitted before close: committed, not dropped
                self._queue.put(_Control("stop", Future()))
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def seal_now(self) -> None:
        """Seal the active segment now (no-op without one) and wait for it."""
        with self._lock:
            if self._closed or self._thread is None:
                return
            done: Future[None] = Future()
            self._queue.put(_Control("seal", done))
        done.result()

    # --- intake -------------------------------------------------------------

    async def append(self, payload: bytes) -> None:
        """Return once ``payload`` is fsynced; raise ServiceUnavailable otherwise.

        Appends made during one event-loop iteration reach the writer thread as
        one group with one wake-up, and the group comes back with one wake-up
        of the loop. Waking the writer per request let it grab the GIL and
        commit after only 1-3 records, so each request paid for most of an
        fsync (bench/README.md); grouped, they share it.
        """
        future, group = self._submit(payload, asyncio.get_running_loop())
        assert group is not None
        # Shielded: the group's future is shared, and one cancelled request
        # (a client gone) must not cancel the wait of the others.
        await asyncio.shield(group.done)
        future.result()  # this payload's own outcome: a commit can fail for a part

    def append_blocking(self, payload: bytes, timeout: float | None = None) -> None:
        """:meth:`append` for threads: block until fsynced, or raise."""
        future, _ = self._submit(payload)
        try:
            future.result(timeout)
        except TimeoutError:
            # Not acknowledged; if the writer still commits it, that is a duplicate at worst.
            future.cancel()
            raise ServiceUnavailable(
                f"spool commit took longer than {timeout} s",
                code="spool_timeout",
                retry_after=RETRY_AFTER_SECONDS,
            ) from None

    def _submit(
        self, payload: bytes, loop: asyncio.AbstractEventLoop | None = None
    ) -> tuple[Future[None], _LoopGroup | None]:
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise PayloadTooLarge(f"a spool record holds at most {MAX_PAYLOAD_BYTES} bytes")
        size = record_size(len(payload))
        with self._lock:
            self._admit()
            future: Future[None] = Future()
            self._queued_bytes += size
            # Queued under the lock so that nothing lands behind close()'s stop marker.
            if loop is None:
                self._queue.put(_Append(payload, future))
                return future, None
            group = self._group
            if group is None:
                group = self._group = _LoopGroup(loop)
                loop.call_soon(self._flush_group)
            group.items.append(_Append(payload, future))
        return future, group

    def _flush_group(self) -> None:
        """Hand this loop iteration's appends to the writer in one go."""
        with self._lock:
            self._hand_over_group()

    def _hand_over_group(self) -> None:
        """Caller holds the lock."""
        group, self._group = self._group, None
        if group is not None and group.items:
            self._queue.put(group.seal())

    def _admit(self) -> None:
        """Refuse before touching disk. Caller holds the lock."""
        if self._closed or self._thread is None:
            SPOOL_REJECTIONS.labels("closed").inc()
            raise ServiceUnavailable(
                "the spool is closed (worker starting or shutting down)",
                code="spool_closed",
                retry_after=CLOSED_RETRY_AFTER_SECONDS,
            )
        held = self._bytes + self._queued_bytes
        if held >= self.high_water_bytes:
            SPOOL_REJECTIONS.labels("high_water").inc()
            raise ServiceUnavailable(
                f"the spool holds {held} bytes, at its high-water mark of {self.high_water_bytes}"
                " (is the uploader keeping up?)",
                code="spool_full",
                retry_after=RETRY_AFTER_SECONDS,
            )
        free = self._free_bytes()
        if free is not None and free < FULL_BELOW_BYTES:
            SPOOL_REJECTIONS.labels("disk_low").inc()
            raise DiskFull(
                f"the spool's file system is full ({free} bytes free)",
                retry_after=RETRY_AFTER_SECONDS,
            )
        if free is not None and free < self.min_free_bytes:
            SPOOL_REJECTIONS.labels("disk_low").inc()
            raise ServiceUnavailable(
                f"only {free} bytes free on the spool's file system,"
                f" {self.min_free_bytes} required",
                code="spool_full",
                retry_after=RETRY_AFTER_SECONDS,
            )

    def _free_bytes(self) -> int | None:
        now = time.monotonic()
        if now - self._free_checked >= _FREE_SPACE_TTL_SECONDS:
            try:
                st = os.statvfs(self._dir)
                self._free = st.f_bavail * st.f_frsize
            except OSError as e:
                # Unknown: let the write itself fail rather than refuse on a guess.
                logger.warning("statvfs(%s) failed: %s", self._dir, e)
                self._free = None
            self._free_checked = now
        return self._free

    # --- for the uploader, /ready and /metrics --------------------------------

    @property
    def healthy(self) -> bool:
        """Writable and below the high-water mark (for /ready)."""
        return self.unhealthy_reason() is None

    def unhealthy_reason(self) -> tuple[str, str] | None:
        """Why the spool would refuse a write now, as (error code, message); None if not."""
        with self._lock:
            thread = self._thread
            if self._closed or thread is None or not thread.is_alive():
                return "spool_closed", "the spool's writer is not running"
            if self._bytes >= self.high_water_bytes:
                return "spool_full", (
                    f"the spool holds {self._bytes} bytes, at its high-water mark of "
                    f"{self.high_water_bytes} (is the uploader keeping up?)"
                )
            free = self._free_bytes()
            if free is not None and free < FULL_BELOW_BYTES:
                return "disk_full", f"the spool's file system is full ({free} bytes free)"
            if free is not None and free < self.min_free_bytes:
                return "spool_full", (
                    f"only {free} bytes free on the spool's file system, "
                    f"{self.min_free_bytes} required"
                )
            failed = self._last_failure
        if failed is not None and time.monotonic() - failed < _UNHEALTHY_AFTER_FAILURE_SECONDS:
            return "spool_write_failed", "the spool's last write failed (see the log)"
        return None

    def quarantined_segments(self) -> list[Path]:
        """Damaged segments recovery set aside in ``quarantine/``, for an operator."""
        return quarantined_files(self._dir)

    def sealed_segments(self) -> list[Path]:
        """Sealed segments, oldest first: the uploader's input."""
        with self._lock:
            names = sorted(self._sealed)
        return [self._dir / name for name in names]

    def remove_segment(self, path: Path) -> None:
        """Delete a sealed segment after its verified upload; idempotent."""
        name = path.name
        with self._lock:
            known = name in self._sealed
        if not known:
            if (self._dir / name).exists():
                raise ValueError(f"{path} is not a sealed segment of the spool {self._dir}")
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._dir / name)
        try:
            fsync_dir(self._dir)
        except OSError as e:
            # The upload is verified, so a segment that reappears after a crash is
            # uploaded twice: a duplicate, not a loss.
            logger.warning("fsync of %s after removing %s failed: %s", self._dir, name, e)
        with self._lock:
            size = self._sealed.pop(name, None)
            if size is not None:
                self._bytes -= size
            self._publish_gauges()

    def stats(self) -> SpoolStats:
        with self._lock:
            oldest = min(self._sealed, default=None)
            stats = SpoolStats(self._bytes, len(self._sealed), None, self._appender.active_size)
        created = segment_created_ms(oldest) if oldest else None
        if created is None:
            return stats
        age = max(0.0, time.time() - created / 1000)
        return dataclasses.replace(stats, oldest_sealed_age_seconds=age)

    def _publish_gauges(self) -> None:
        """Caller holds the lock. Several spools in one process: last writer wins."""
        SPOOL_BYTES.set(self._bytes)
        SPOOL_HIGH_WATER_BYTES.set(self.high_water_bytes)
        SPOOL_PENDING_SEGMENTS.set(len(self._sealed))

    # --- the writer thread ----------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                item: _Append | list[_Append] | _Control | None = self._queue.get(
                    timeout=self._wakeup()
                )
            except queue.Empty:
                item = None
            batch: list[_Append] = []
            control: _Control | None = None
            try:
                size = 0
                while item is not None:
                    if isinstance(item, _Control):
                        control = item  # everything queued before it is in this batch
                        break
                    group = item if isinstance(item, list) else [item]
                    batch.extend(group)
                    size += sum(len(a.payload) for a in group)
                    if size >= _MAX_COMMIT_BYTES:
                        break
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        item = None
                if batch:
                    self._commit(batch)
                self._housekeeping()
                if control is not None and control.kind == "seal":
                    self._appender.seal_active()
            except Exception as e:  # a bug must not kill the only writer
                logger.exception("spool writer error")
                self._fail(batch, "internal", e)
            if control is not None and control.kind == "stop":
                try:
                    self._appender.close()
                except Exception:
                    logger.exception("spool writer error while shutting down")
                control.future.set_result(None)
                return
            if control is not None:
                control.future.set_result(None)

    def _wakeup(self) -> float | None:
        """Seconds until the active segment is due for sealing or a seal retry is due."""
        waits = [self._appender.retry_due_in()]
        age = self._appender.active_age()
        if age is not None:
            waits.append(max(0.0, self.segment_max_age_seconds - age))
        return min((w for w in waits if w is not None), default=None)

    def _housekeeping(self) -> None:
        age = self._appender.active_age()
        if age is not None and age >= self.segment_max_age_seconds:
            self._appender.seal_active()
        due = self._appender.retry_due_in()
        if due is not None and due <= 0:
            self._appender.retry_seals()

    def _commit(self, batch: list[_Append]) -> None:
        """Group commit: one write and one fsync per segment the batch lands in."""
        with self._lock:
            self._queued_bytes -= sum(record_size(len(a.payload)) for a in batch)
        # A request cancelled before its turn is skipped; once running it cannot be.
        live = [a for a in batch if a.future.set_running_or_notify_cancel()]
        appender = self._appender
        i = 0
        while i < len(live):
            first = record_size(len(live[i].payload))
            age = appender.active_age()
            if (age is not None and age >= self.segment_max_age_seconds) or (
                appender.active_records and appender.active_size + first > self.segment_max_bytes
            ):
                appender.seal_active()
            room = self.segment_max_bytes - max(appender.active_size, FILE_HEADER_SIZE)
            j, chunk_bytes = i, 0
            while j < len(live):
                size = record_size(len(live[j].payload))
                if j > i and chunk_bytes + size > room:
                    break
                chunk_bytes += size
                j += 1
            chunk = live[i:j]
            try:
                appender.commit([a.payload for a in chunk])
            except CommitFailed as e:
                self._fail(chunk, e.stage, e.error)
                # The disk just failed: don't hammer it with the rest of this batch.
                self._fail(live[j:], "skipped", None)
                return
            SPOOL_FSYNCS.inc()
            SPOOL_COMMIT_RECORDS.observe(len(chunk))
            self._last_failure = None
            for a in chunk:
                a.future.set_result(None)
            if appender.active_size >= self.segment_max_bytes:
                appender.seal_active()
            i = j

    def _fail(self, chunk: Sequence[_Append], stage: str, error: BaseException | None) -> None:
        pending = [a for a in chunk if not a.future.done()]
        if error is not None:
            SPOOL_WRITE_ERRORS.labels(stage).inc()
            self._last_failure = time.monotonic()
            logger.error(
                "spool %s failed in %s: %s; %d records not acknowledged",
                stage,
                self._dir,
                error,
                len(pending),
            )
        reason = getattr(error, "strerror", None) or error or "an earlier failure in this commit"
        for a in pending:
            a.future.set_exception(
                ServiceUnavailable(
                    f"the spool could not make the batch durable ({stage}: {reason})",
                    code="spool_write_failed",
                    retry_after=RETRY_AFTER_SECONDS,
                )
            )

    def _on_bytes(self, delta: int) -> None:
        with self._lock:
            self._bytes += delta
            SPOOL_BYTES.set(self._bytes)

    def _on_sealed(self, name: str, size: int) -> None:
        with self._lock:
            self._sealed[name] = size
            self._publish_gauges()


def try_lock_spool_dir(directory: Path) -> int | None:
    """Lock ``directory`` for this process: its lock fd, or None if a live process holds it.

    Keep the fd open while working on the directory. The flock dies with the
    process, so a restarted worker takes over (and recovers) a dead one's directory.
    """
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError:
        os.close(fd)
        raise
    # The owner's pid, for operators; the lock, not this content, is what counts.
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def claim_spool_dir(root: Path, max_slots: int = 64) -> tuple[Path, int]:
    """Claim the first free ``root/w<N>`` for this process: ``(directory, lock fd)``."""
    for n in range(max_slots):
        directory = root / f"w{n}"
        fd = try_lock_spool_dir(directory)
        if fd is not None:
            return directory, fd
    raise ServiceUnavailable(
        f"all {max_slots} spool directories under {root} are locked by running workers",
        code="spool_slots_exhausted",
        retry_after=RETRY_AFTER_SECONDS,
    )

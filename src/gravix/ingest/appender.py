"""The file side of the spool's writer thread: append commits, rotate and seal segments.

Only the spool's writer thread calls a :class:`SegmentAppender` (one writer owns the
files). It knows nothing of requests or futures: :meth:`SegmentAppender.commit`
either makes every payload it was given durable or raises :class:`CommitFailed`.

Failure rules (the why is in :mod:`gravix.ingest.spool`):

* failed write: truncate back to the last committed offset and keep the segment;
  if even the truncate fails, seal it (garbage must never precede new records);
* failed fsync: seal the segment and never write to it again ("fsyncgate");
* failed seal (truncate or rename): count ``batch_rotation_errors_total``, keep the
  file and its descriptor, retry every second; it is never written again.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from gravix.ingest.metrics import BATCH_ROTATION_ERRORS
from gravix.ingest.segment import SegmentIdGenerator
from gravix.schema.segment import FILE_HEADER, OPEN_SUFFIX, SEALED_SUFFIX, encode_records

logger = logging.getLogger("gravix.spool")

SEAL_RETRY_SECONDS = 1.0


class CommitFailed(Exception):
    """No payload of the commit is durable; ``stage`` is create, write or fsync."""

    def __init__(self, stage: str, error: OSError) -> None:
        super().__init__(f"{stage}: {error.strerror or error}")
        self.stage = stage
        self.error = error


class _Segment:
    """A segment file held open: the active one, or a retired one awaiting its seal."""

    __slots__ = ("committed", "created", "fd", "path", "records", "size", "unknown_tail")

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd
        self.size = 0  # bytes in the file as far as we know, fsynced or not
        self.committed = 0  # bytes covered by a successful fsync
        self.records = 0
        self.created = time.monotonic()
        # After a failed write and a failed truncate, the file may hold more than
        # `size` says; sealing must truncate it to `committed` regardless.
        self.unknown_tail = False


class SegmentAppender:
    """Appends group commits to the active segment of one spool directory.

    ``on_bytes(delta)`` reports every change of the bytes held on disk and
    ``on_sealed(name, size)`` every newly published ``.seg`` file.
    """

    def __init__(
        self,
        directory: Path,
        ids: SegmentIdGenerator,
        on_bytes: Callable[[int], None],
        on_sealed: Callable[[str, int], None],
    ) -> None:
        self.directory = directory
        self._ids = ids
        self._on_bytes = on_bytes
        self._on_sealed = on_sealed
        self._active: _Segment | None = None
        self._unsealed: list[_Segment] = []
        self._next_seal_retry = 0.0
        # Fault-injection seams: every file-system call whose failure the spool must
        # survive goes through these, so a test can make one raise ENOSPC or EIO
        # and a real full disk takes exactly the same path.
        self.pwrite = os.pwrite
        self.fsync = os.fsync
        self.ftruncate = os.ftruncate
        self.rename = os.rename

    @property
    def active_size(self) -> int:
        active = self._active  # read from other threads for stats(); one load, no tearing
        return active.size if active is not None else 0

    @property
    def active_records(self) -> int:
        return self._active.records if self._active is not None else 0

    def active_age(self) -> float | None:
        return time.monotonic() - self._active.created if self._active is not None else None

    def retry_due_in(self) -> float | None:
        """Seconds until failed seals should be retried, None without any."""
        if not self._unsealed:
            return None
        return max(0.0, self._next_seal_retry - time.monotonic())

    def commit(self, payloads: Sequence[bytes]) -> None:
        """Write ``payloads`` with one write and make them durable with one fsync."""
        segment = self._active if self._active is not None else self._create()
        parts = encode_records(payloads)
        if segment.committed == 0:
            parts.insert(0, FILE_HEADER)
        data = memoryview(b"".join(parts))
        try:
            written = 0
            while written < len(data):
                n = self.pwrite(segment.fd, data[written:], segment.committed + written)
                if n <= 0:
                    raise OSError(errno.EIO, "pwrite wrote nothing")
                written += n
                self._grow(segment, n)
        except OSError as e:
            try:
                self.ftruncate(segment.fd, segment.committed)
                self._grow(segment, segment.committed - segment.size)
            except OSError as te:
                logger.error("spool: truncate of %s after a failed write: %s", segment.path, te)
                segment.unknown_tail = True
                self.seal(segment)
            raise CommitFailed("write", e) from e
        try:
            self.fsync(segment.fd)
        except OSError as e:
            self.seal(segment)  # never written again
            raise CommitFailed("fsync", e) from e
        segment.committed = segment.size
        segment.records += len(payloads)

    def seal_active(self) -> None:
        if self._active is not None:
            self.seal(self._active)

    def retry_seals(self) -> None:
        for segment in list(self._unsealed):
            self.seal(segment)

    def close(self) -> None:
        """Seal everything; what still cannot be sealed stays ``.open`` for recovery."""
        self.seal_active()
        self.retry_seals()
        for segment in self._unsealed:
            with contextlib.suppress(OSError):
                os.close(segment.fd)
        self._unsealed.clear()

    def _create(self) -> _Segment:
        # Created lazily by the first commit, so an empty segment never exists.
        path = self.directory / f"{self._ids.next()}{OPEN_SUFFIX}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as e:
            raise CommitFailed("create", e) from e
        try:
            self._fsync_dir()
        except OSError as e:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise CommitFailed("create", e) from e
        self._active = _Segment(path, fd)
        return self._active

    def _grow(self, segment: _Segment, delta: int) -> None:
        if delta:
            segment.size += delta
            self._on_bytes(delta)

    def seal(self, segment: _Segment) -> None:
        """Truncate to the committed bytes, fsync, rename ``.open`` to ``.seg``, fsync the dir.

        On failure the segment is kept (never written again) and retried later.
        """
        if segment is self._active:
            self._active = None
        sealed_path = segment.path.with_suffix(SEALED_SUFFIX)
        try:
            if segment.size != segment.committed or segment.unknown_tail:
                self.ftruncate(segment.fd, segment.committed)
                self._grow(segment, segment.committed - segment.size)
                segment.unknown_tail = False
            if segment.committed == 0:
                # Nothing in it was ever acknowledged: an empty segment is never published.
                os.unlink(segment.path)
            else:
                try:
                    self.fsync(segment.fd)
                except OSError as e:
                    # Every committed record was fsynced by its own commit already.
                    logger.warning("spool: fsync while sealing %s failed: %s", segment.path, e)
                self.rename(segment.path, sealed_path)
        except OSError as e:
            BATCH_ROTATION_ERRORS.inc()
            logger.error("spool: sealing %s failed, will retry: %s", segment.path, e)
            if segment not in self._unsealed:
                self._unsealed.append(segment)
            self._next_seal_retry = time.monotonic() + SEAL_RETRY_SECONDS
            return
        with contextlib.suppress(OSError):
            os.close(segment.fd)
        if segment in self._unsealed:
            self._unsealed.remove(segment)
        if segment.committed:
            self._on_sealed(sealed_path.name, segment.committed)
        try:
            self._fsync_dir()
        except OSError as e:
            # If the rename is lost in a crash, recovery finds an .open segment and seals it.
            BATCH_ROTATION_ERRORS.inc()
            logger.error("spool: fsync of %s after sealing failed: %s", self.directory, e)

    def _fsync_dir(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            self.fsync(fd)
        finally:
            os.close(fd)

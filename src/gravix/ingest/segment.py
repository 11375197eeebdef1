"""Writing spool segments: ids, sealed files and durable renames.

The format (file names, segment ids, the byte layout of the file header and
records, and what counts as damage) is written out once, in
:mod:`gravix.schema.segment`, with the readers every stage uses. This module
holds what only intake does with it: hand out ids and write files.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from gravix.schema.segment import (
    FILE_HEADER,
    OPEN_SUFFIX,
    SEALED_SUFFIX,
    encode_records,
    segment_created_ms,
)


class SegmentIdGenerator:
    """Segment ids that sort by creation time, strictly increasing in this process."""

    def __init__(self) -> None:
        self._last_ms = 0
        self._lock = threading.Lock()

    def observe(self, name: str) -> None:
        """Never hand out an id that sorts before an existing segment's."""
        created = segment_created_ms(name)
        if created is not None:
            with self._lock:
                self._last_ms = max(self._last_ms, created)

    def next(self) -> str:
        with self._lock:
            # +1 rather than reusing the millisecond: two ids with the same time
            # would sort by their random part, not by creation order.
            self._last_ms = max(int(time.time() * 1000), self._last_ms + 1)
            created = self._last_ms
        return f"{created:013d}-{secrets.token_hex(4)}"


def fsync_dir(directory: Path) -> None:
    """Make creations, renames and deletions in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_sealed_segment(directory: Path, segment_id: str, payloads: Iterable[bytes]) -> Path:
    """Write a complete sealed segment: ``.open``, fsync, rename to ``.seg``, fsync the dir."""
    open_path = directory / f"{segment_id}{OPEN_SUFFIX}"
    sealed_path = directory / f"{segment_id}{SEALED_SUFFIX}"
    data = memoryview(b"".join([FILE_HEADER, *encode_records(payloads)]))
    fd = os.open(open_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        while data:
            data = data[os.write(fd, data) :]
        os.fsync(fd)
        os.rename(open_path, sealed_path)
    except OSError:
        # A half-written copy must not survive next to the original it was made from.
        with contextlib.suppress(OSError):
            os.unlink(open_path)
        raise
    finally:
        os.close(fd)
    fsync_dir(directory)
    return sealed_path

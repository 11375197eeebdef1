"""Reading log files: fingerprints, chunks of whole lines, gzip, rotated siblings.

A file's **fingerprint** is the first 16 hex digits of the SHA-256 of its
first line (the bytes up to and including the first ``\\n``, at most
:data:`FINGERPRINT_BYTES`). It names the *content*, not the path: a file
keeps its fingerprint when logrotate renames it to ``access.log.1`` or
compresses it to ``access.log.2.gz`` (the first line of the decompressed
stream), and a new or truncated file gets a new one. A file whose first
line is not complete yet has no fingerprint; the tailer waits for it.

Event ids are ``al-<16 hex>-<byte offset of the line>``, the hex being the
SHA-256 of the **source** (``--source``, by default the host name) and the
fingerprint: stable across rotation and re-imports on the same host, while
two web servers behind one load balancer, whose logs may well start with the
same health-check line, never share ids (the rollup would count one of them
as duplicates of the other).
"""

from __future__ import annotations

import gzip
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Final

from gravix.errors import GravixError

FINGERPRINT_BYTES: Final = 4096
CHUNK_BYTES: Final = 1 << 20


class UnreadableLog(GravixError):
    """A log file that cannot be opened or read."""

    code = "unreadable_log"


def event_id_prefix(fingerprint: str, source: str) -> str:
    """``al-<16 hex>-``: what the event ids of a file's lines start with (see above)."""
    digest = hashlib.sha256(f"{source}\0{fingerprint}".encode()).hexdigest()[:16]
    return f"al-{digest}-"


def fingerprint_of(head: bytes, *, complete: bool) -> str | None:
    """The fingerprint of a file starting with ``head``; None while its first line is open.

    ``complete`` says ``head`` is the whole file (an import, not a tail), so
    a file of one unterminated line still gets one.
    """
    nl = head.find(b"\n", 0, FINGERPRINT_BYTES)
    if nl >= 0:
        first = head[: nl + 1]
    elif len(head) >= FINGERPRINT_BYTES or (complete and head):
        first = head[:FINGERPRINT_BYTES]
    else:
        return None
    return hashlib.sha256(first).hexdigest()[:16]


def is_gzip(path: Path) -> bool:
    return path.suffix == ".gz"


def open_log(path: Path) -> tuple[IO[bytes], IO[bytes]]:
    """(stream of the log's bytes, the raw file for progress); gzip is decompressed."""
    try:
        raw = path.open("rb")
    except OSError as e:
        raise UnreadableLog(f"cannot read {path}: {e.strerror or e}") from e
    if is_gzip(path):
        return gzip.GzipFile(fileobj=raw, mode="rb"), raw  # type: ignore[return-value]
    return raw, raw


def read_head(path: Path) -> bytes:
    """The first :data:`FINGERPRINT_BYTES` of a file (decompressed for .gz)."""
    stream, raw = open_log(path)
    try:
        return stream.read(FINGERPRINT_BYTES)
    except (OSError, EOFError) as e:
        raise UnreadableLog(f"cannot read {path}: {e}") from e
    finally:
        stream.close()
        raw.close()


def file_fingerprint(path: Path, *, complete: bool = False) -> str | None:
    """The fingerprint of the file at ``path``, None if it has no first line yet or is gone."""
    try:
        return fingerprint_of(read_head(path), complete=complete)
    except UnreadableLog:
        return None


def chunks(stream: IO[bytes], size: int = CHUNK_BYTES) -> Iterator[tuple[bytes, bool]]:
    """Buffers of whole lines, and whether the stream ended after them.

    At the end of the stream a last line without ``\\n`` gets one, so an
    import reads every line.
    """
    carry = b""
    while True:
        data = stream.read(size)
        if not data:
            if carry:
                yield carry + b"\n", True
            return
        buf = carry + data if carry else data
        cut = buf.rfind(b"\n") + 1
        if cut == 0:
            carry = buf
            continue
        carry = buf[cut:]
        yield (buf if not carry else buf[:cut]), False


def rotated_siblings(path: Path) -> list[Path]:
    """Files logrotate may have made from ``path``: ``path.1``, ``path-20261122``, ``path.2.gz``.

    Newest first (by modification time).
    """
    parent = path.parent
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    found = [
        parent / name
        for name in names
        if name != path.name
        and (name.startswith(path.name + ".") or name.startswith(path.name + "-"))
    ]

    def mtime(p: Path) -> float:
        try:
            return p.stat().st_mtime
        except OSError:
            return 0.0

    return sorted(found, key=mtime, reverse=True)


def find_by_fingerprint(path: Path, fingerprint: str) -> Path | None:
    """``path`` or a rotated sibling with this fingerprint (uncompressed ones first)."""
    candidates = [path, *rotated_siblings(path)]
    candidates.sort(key=is_gzip)
    for candidate in candidates:
        if file_fingerprint(candidate) == fingerprint:
            return candidate
    return None

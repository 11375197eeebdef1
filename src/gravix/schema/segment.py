"""Spool segments: the on-disk record format, its strict reader and its tolerant scanner.

Intake writes this format (:mod:`gravix.ingest.spool`,
:mod:`gravix.ingest.segment`); the uploader, the rollup and the query layer
read it back with the readers here.

Spool directory (one per worker process)::

    <segment_id>.open   the active segment; only the spool's writer thread appends to it
    <segment_id>.seg    a sealed segment: fsynced, renamed, never written again
    quarantine/         damaged segments, moved here byte for byte by recovery and kept
                        (never deleted or shortened by Gravix; an operator removes them)
    LOCK                flock()ed by the worker process that owns the directory

``segment_id`` is ``f"{created_ms:013d}-{token}"``: milliseconds since the Unix
epoch when the segment was created (kept strictly increasing by
:class:`gravix.ingest.segment.SegmentIdGenerator`, so ids sort by creation
time as plain strings) and 8 hex digits (32 random bits), so an id is never
reused on a node even after its file has been uploaded and deleted.

A segment file is a file header followed by records, back to back, no padding.
All integers are unsigned little-endian::

    file header (8 bytes, at offset 0)
      0   4  file magic        b"GVXS"
      4   2  format version    u16 = 1
      6   2  reserved          u16 = 0

    record (16-byte header, then the payload)
      0   4  record magic      b"GVXR"
      4   4  payload length    u32
      8   4  payload CRC       u32, zlib.crc32(payload)
      12  4  header CRC        u32, zlib.crc32(record bytes 0..11)
      16  n  payload           opaque bytes (the ingest layer stores one msgpack batch)

The header CRC exists so that a flipped bit in the length field is detected as
corruption instead of looking like a record that runs past the end of the file.

How :func:`scan_segment` classifies what follows the last valid record (the
scanner does not know the file's name; what recovery does with each class
depends on it, see :mod:`gravix.ingest.recovery`):

* **torn tail** (what an interrupted append leaves, never acknowledged):
  a file shorter than the file header that is a prefix of it or all zeros; fewer
  than 16 bytes; a record whose header checks out but whose payload runs past
  the end of the file; or only zero bytes up to the end of the file.
* **corrupt** (bit rot, foreign bytes or a damaged middle):
  a wrong file header; a complete record whose payload CRC does not match;
  a header that fails its CRC followed by a valid record (found by scanning
  forward for the record magic with a valid header CRC and payload CRC); or
  16 or more non-zero bytes at the end without any valid record in them. A torn
  append never looks like that last case (a truncated record of 16 bytes or more
  has a valid header), but a bit flip in the header of the last record does, and
  that record may have been acknowledged, so the file is kept rather than cut.

Only an ``.open`` segment can have a torn tail. A ``.seg`` was fsynced whole
before its rename, so in a sealed segment a "torn tail", like a header and no
record at all, is damage too. Every record after damaged bytes is still found:
the scanner resyncs on the next record magic whose header CRC and payload CRC
both check. A sealed segment cut exactly at a record boundary cannot be told
from a shorter one (the format keeps no record count).
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from gravix.errors import GravixError

FILE_MAGIC = b"GVXS"
FORMAT_VERSION = 1
FILE_HEADER = struct.pack("<4sHH", FILE_MAGIC, FORMAT_VERSION, 0)
FILE_HEADER_SIZE = len(FILE_HEADER)

RECORD_MAGIC = b"GVXR"
# magic, payload length, payload CRC: the 12 bytes the header CRC covers
_PREFIX = struct.Struct("<4sII")
_HEADER = struct.Struct("<4sIII")
RECORD_HEADER_SIZE = _HEADER.size
MAX_PAYLOAD_BYTES = 0xFFFFFFFF

OPEN_SUFFIX = ".open"
SEALED_SUFFIX = ".seg"
QUARANTINE_DIR = "quarantine"
_SEGMENT_NAME = re.compile(r"^(\d{13})-[0-9a-f]{8}\.(open|seg)$")


class CorruptSegment(GravixError):
    """A segment holds a record that fails its checksum or is cut short."""

    code = "corrupt_segment"

    def __init__(self, path: Path, offset: int, reason: str) -> None:
        super().__init__(f"{path}: {reason} at byte {offset}")
        self.path = path
        self.offset = offset
        self.reason = reason


def encode_record(payload: bytes) -> bytes:
    """One record (header and payload) as written to a segment."""
    return b"".join(encode_records([payload]))


def encode_records(payloads: Iterable[bytes]) -> list[bytes]:
    """Headers and payloads, in order, ready for one ``b"".join`` and one write."""
    parts: list[bytes] = []
    for payload in payloads:
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
        prefix = _PREFIX.pack(RECORD_MAGIC, len(payload), zlib.crc32(payload))
        parts.append(prefix + struct.pack("<I", zlib.crc32(prefix)))
        parts.append(payload)
    return parts


def record_size(payload_len: int) -> int:
    return RECORD_HEADER_SIZE + payload_len


# --- names ------------------------------------------------------------------


def is_segment_name(name: str) -> bool:
    return _SEGMENT_NAME.match(name) is not None


def segment_created_ms(name: str) -> int | None:
    """Creation time encoded in a segment file name, or None if it is not one."""
    match = _SEGMENT_NAME.match(name)
    return int(match.group(1)) if match else None


def quarantined_files(directory: Path) -> list[Path]:
    """The files in ``directory``'s ``quarantine/`` (none if it does not exist)."""
    try:
        with os.scandir(directory / QUARANTINE_DIR) as entries:
            return sorted(Path(e.path) for e in entries if e.is_file(follow_symlinks=False))
    except OSError:
        return []  # no quarantine/ yet (or it cannot be listed: nothing to show)


# --- scanning ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScannedRecord:
    """A record that passed both checksums: where it starts and what it holds."""

    offset: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class ScanResult:
    """Everything :func:`scan_segment` learned about one segment file."""

    path: Path
    size: int
    records: list[ScannedRecord] = field(default_factory=list)
    # Where a torn tail starts (truncate the file here), or None without one.
    torn_tail: int | None = None
    # [start, end) byte ranges that failed a checksum.
    corrupt: list[tuple[int, int]] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.corrupt and self.torn_tail is None

    @property
    def payloads(self) -> list[bytes]:
        return [record.payload for record in self.records]


def _valid_header(data: memoryview, pos: int) -> tuple[int, int] | None:
    """(payload length, payload CRC) if a record header with a valid CRC starts at pos."""
    if len(data) - pos < RECORD_HEADER_SIZE:
        return None
    magic, length, payload_crc, header_crc = _HEADER.unpack_from(data, pos)
    if magic != RECORD_MAGIC or zlib.crc32(data[pos : pos + 12]) != header_crc:
        return None
    return length, payload_crc


def _valid_record_at(data: memoryview, pos: int) -> bool:
    header = _valid_header(data, pos)
    if header is None:
        return False
    length, payload_crc = header
    start = pos + RECORD_HEADER_SIZE
    end = start + length
    return end <= len(data) and zlib.crc32(data[start:end]) == payload_crc


def _resync(raw: bytes, data: memoryview, start: int) -> int | None:
    """Offset of the next complete valid record at or after start, if any."""
    pos = raw.find(RECORD_MAGIC, start)
    while pos != -1:
        if _valid_record_at(data, pos):
            return pos
        pos = raw.find(RECORD_MAGIC, pos + 1)
    return None


def _all_zero(raw: bytes, start: int = 0) -> bool:
    return raw.count(0, start) == len(raw) - start


def scan_segment(path: Path) -> ScanResult:
    """Check every record of a segment; never raises on bad data (only on I/O errors).

    See the module docstring for what counts as a torn tail and what as corrupt.
    """
    raw = path.read_bytes()
    data = memoryview(raw)
    size = len(raw)
    records: list[ScannedRecord] = []
    corrupt: list[tuple[int, int]] = []

    if size < FILE_HEADER_SIZE:
        if FILE_HEADER.startswith(raw) or _all_zero(raw):
            return ScanResult(path, size, torn_tail=0 if size else None)
        return ScanResult(path, size, corrupt=[(0, size)])
    if raw[:FILE_HEADER_SIZE] != FILE_HEADER:
        if _all_zero(raw):
            return ScanResult(path, size, torn_tail=0)
        corrupt.append((0, FILE_HEADER_SIZE))  # foreign, damaged or a future version
    pos = FILE_HEADER_SIZE

    torn_tail: int | None = None
    while pos < size:
        header = _valid_header(data, pos)
        if header is not None:
            length, payload_crc = header
            start = pos + RECORD_HEADER_SIZE
            end = start + length
            if end > size:
                torn_tail = pos  # a header that checks out cannot lie about the length
                break
            if zlib.crc32(data[start:end]) == payload_crc:
                records.append(ScannedRecord(pos, bytes(data[start:end])))
            else:
                corrupt.append((pos, end))
            pos = end
            continue
        if size - pos < RECORD_HEADER_SIZE:
            torn_tail = pos  # no valid record fits, whatever these bytes are
            break
        found = _resync(raw, data, pos + 1)
        if found is None:
            if _all_zero(raw, pos):
                torn_tail = pos
            else:
                corrupt.append((pos, size))
            break
        corrupt.append((pos, found))
        pos = found
    return ScanResult(path, size, records, torn_tail, corrupt)


def read_records(path: Path) -> tuple[bytes, list[tuple[int, int]]]:
    """A sealed segment's bytes and the ``[start, end)`` span of each record, in order.

    Every record is checked; raises :class:`CorruptSegment` on the first one
    that fails a checksum or is cut short. A span covers the record's header and
    payload, so ``data[start:end]`` is the record exactly as stored.
    """
    data = path.read_bytes()
    return data, record_spans(data, path)


def record_spans(data: bytes, path: Path | str) -> list[tuple[int, int]]:
    """The checked record spans of segment-format ``data`` (a file or an uploaded object)."""
    path = Path(path)
    view = memoryview(data)
    if data[:FILE_HEADER_SIZE] != FILE_HEADER:
        raise CorruptSegment(path, 0, "bad file header")
    spans: list[tuple[int, int]] = []
    offset = FILE_HEADER_SIZE
    while offset < len(data):
        if len(data) - offset < RECORD_HEADER_SIZE:
            raise CorruptSegment(path, offset, "truncated record header")
        magic, length, payload_crc, header_crc = _HEADER.unpack_from(data, offset)
        if magic != RECORD_MAGIC or zlib.crc32(view[offset : offset + 12]) != header_crc:
            raise CorruptSegment(path, offset, "bad record header")
        end = offset + RECORD_HEADER_SIZE + length
        if end > len(data):
            raise CorruptSegment(path, offset, "truncated record payload")
        if zlib.crc32(view[offset + RECORD_HEADER_SIZE : end]) != payload_crc:
            raise CorruptSegment(path, offset, "payload checksum mismatch")
        spans.append((offset, end))
        offset = end
    return spans


def read_segment(path: Path) -> Iterator[bytes]:
    """Yield the payloads of a sealed segment, in order.

    Raises :class:`CorruptSegment` (before yielding anything) if any record
    fails a checksum or is cut short.
    """
    data, spans = read_records(path)
    for start, end in spans:
        yield data[start + RECORD_HEADER_SIZE : end]

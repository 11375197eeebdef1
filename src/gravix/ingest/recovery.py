"""Spool recovery at start: cut torn tails, seal leftovers, quarantine damaged segments.

Runs before the spool's writer thread starts, so nothing else touches the files.
It must never crash-loop a worker: a segment that cannot be handled now (an I/O
error while reading or rewriting it) is logged, left in place and retried at the
next start, and the worker starts anyway.

What each file gets (the damage classes are defined in :mod:`gravix.schema.segment`):

* ``.open`` (left by a crash): a torn tail is cut (it was never acknowledged: an
  append is acknowledged only after its fsync), then the file is sealed, or
  removed if no record is left.
* ``.seg`` (sealed: fsynced whole, then renamed): verified; any damage at all,
  a "torn tail" or no record included, is corruption. Nothing is ever cut from it.
* corrupt, either kind: every record that passes both checksums, before and
  after the damage, is copied into a new sealed segment (shipped by the
  uploader like any other), and the original moves byte for byte to
  ``quarantine/`` (never shortened or deleted), counted in
  ``spool_quarantined_segments_total`` and logged at ERROR level.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from gravix.ingest.metrics import SPOOL_QUARANTINED, SPOOL_RECOVERED_RECORDS, SPOOL_TORN_TAILS
from gravix.ingest.segment import SegmentIdGenerator, fsync_dir, write_sealed_segment
from gravix.schema.segment import (
    FILE_HEADER_SIZE,
    QUARANTINE_DIR,
    SEALED_SUFFIX,
    ScanResult,
    is_segment_name,
    scan_segment,
)

logger = logging.getLogger("gravix.spool")


@dataclass(slots=True)
class RecoveryReport:
    """What :func:`recover_spool` found and did.

    ``records_recovered`` counts records salvaged from ``.open`` segments (left by
    a crash) and from quarantined segments; records of intact sealed segments are
    only verified. ``quarantined`` holds the new paths, inside ``quarantine/``.
    ``failed`` holds segments that could not be recovered now (kept in place,
    retried at the next start, not offered to the uploader meanwhile).
    """

    segments_scanned: int = 0
    records_recovered: int = 0
    torn_tails: int = 0
    quarantined: list[Path] = field(default_factory=list)
    failed: list[Path] = field(default_factory=list)


def recover_spool(directory: Path, ids: SegmentIdGenerator) -> RecoveryReport:
    """Scan every segment in ``directory`` (``.open`` and ``.seg``) and repair it."""
    names = sorted(name for name in os.listdir(directory) if is_segment_name(name))
    for name in names:
        ids.observe(name)
    report = RecoveryReport()
    for name in names:
        path = directory / name
        report.segments_scanned += 1
        try:
            _recover_segment(path, ids, report)
        except OSError as e:
            logger.error("spool recovery could not handle %s, kept for the next start: %s", path, e)
            report.failed.append(path)
    return report


def damaged_ranges(result: ScanResult, sealed: bool) -> list[tuple[int, int]]:
    """The ``[start, end)`` byte ranges of a segment that hold no valid record.

    In a sealed segment a torn tail is damage too; in an ``.open`` one it is not.
    """
    ranges = list(result.corrupt)
    if sealed and result.torn_tail is not None:
        ranges.append((result.torn_tail, result.size))
    return ranges


def is_damaged(result: ScanResult, sealed: bool) -> bool:
    """Whether recovery must quarantine this segment rather than cut or seal it."""
    if result.corrupt:
        return True
    # A sealed segment always holds a record: the writer never publishes an empty one.
    return sealed and (result.torn_tail is not None or not result.records)


def _recover_segment(path: Path, ids: SegmentIdGenerator, report: RecoveryReport) -> None:
    result = scan_segment(path)
    sealed = path.suffix == SEALED_SUFFIX
    if is_damaged(result, sealed):
        _quarantine(path, result, ids, report)
        return
    if sealed:
        return  # intact: the uploader ships it
    if result.torn_tail is not None:
        _truncate(path, result.torn_tail)
        report.torn_tails += 1
        SPOOL_TORN_TAILS.inc()
        logger.warning(
            "spool segment %s: torn tail of %d bytes at byte %d truncated (never acknowledged)",
            path,
            result.size - result.torn_tail,
            result.torn_tail,
        )
    if not result.records:
        # Nothing was ever acknowledged in it (acknowledged records pass their checksums).
        path.unlink()
        fsync_dir(path.parent)
        return
    os.rename(path, path.with_suffix(SEALED_SUFFIX))
    fsync_dir(path.parent)
    report.records_recovered += len(result.records)
    SPOOL_RECOVERED_RECORDS.inc(len(result.records))
    logger.info("spool segment %s: %d records recovered and sealed", path, len(result.records))


def _truncate(path: Path, size: int) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)


def _quarantine(
    path: Path, result: ScanResult, ids: SegmentIdGenerator, report: RecoveryReport
) -> None:
    """Copy the valid records to a new sealed segment, then move the original aside, unchanged."""
    directory = path.parent
    copy: Path | None = None
    if result.records:
        # Durable before the original moves: a crash in between leaves both, and
        # the next start quarantines the original again (duplicates, never loss).
        copy = write_sealed_segment(directory, ids.next(), result.payloads)
    quarantine = directory / QUARANTINE_DIR
    if not quarantine.is_dir():
        quarantine.mkdir()
        fsync_dir(directory)
    target = quarantine / path.name
    n = 1
    while target.exists():
        target = quarantine / f"{path.name}.{n}"
        n += 1
    os.rename(path, target)
    fsync_dir(quarantine)
    fsync_dir(directory)
    report.quarantined.append(target)
    report.records_recovered += len(result.records)
    SPOOL_QUARANTINED.inc()
    SPOOL_RECOVERED_RECORDS.inc(len(result.records))
    sealed = path.suffix == SEALED_SUFFIX
    ranges = damaged_ranges(result, sealed)
    # Each damaged range held (part of) at least one record, but for a damaged file
    # header alone; a sealed segment without any record lost at least one.
    lost = sum(1 for start, _ in ranges if start >= FILE_HEADER_SIZE)
    if sealed and not result.records:
        lost = max(lost, 1)
    logger.error(
        "spool segment %s is damaged: %d records recovered into %s, at least %d lost in %d"
        " unreadable bytes (ranges %s); the original is kept unchanged as %s for an"
        " operator (docs/ingest.md)",
        path,
        len(result.records),
        copy,
        lost,
        sum(end - start for start, end in ranges),
        ranges[:10] or "none: the segment holds no record",
        target,
    )

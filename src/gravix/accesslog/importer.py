"""``gravix import-logs``: read whole files, send their facts, report what happened.

Reading and sending overlap: this thread parses 1 MiB chunks into batches
while the :class:`~gravix.accesslog.shipper.Shipper` thread posts the previous
ones. Every file is checked to be readable before anything is sent.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from gravix.accesslog.parser import BadLine, LineParser
from gravix.accesslog.reader import (
    UnreadableLog,
    chunks,
    event_id_prefix,
    fingerprint_of,
    open_log,
    read_head,
)
from gravix.accesslog.shipper import Batch, Shipper, ShipperStopped, ShipStats


@dataclass(slots=True)
class FileReport:
    path: Path
    lines: int = 0
    bad: int = 0
    untimed: int = 0  # facts of lines without a request time
    bad_samples: list[BadLine] = field(default_factory=list)


@dataclass(slots=True)
class ImportReport:
    """Counts of one run: lines read, bad lines, and what the server did.

    ``latency_hint`` is said in the summary (an import); a tail says it when
    it first meets such a line, and leaves it None here.
    """

    files: list[FileReport] = field(default_factory=list)
    ship: ShipStats = field(default_factory=ShipStats)
    seconds: float = 0.0
    stopped: bool = False
    latency_hint: str | None = None

    @property
    def lines(self) -> int:
        return sum(f.lines for f in self.files)

    @property
    def bad(self) -> int:
        return sum(f.bad for f in self.files)

    @property
    def untimed(self) -> int:
        return sum(f.untimed for f in self.files)

    @property
    def nothing_accepted(self) -> bool:
        """Lines were read and each was bad or its fact refused: none was accepted.

        Facts not sent yet (a tail stopped while the server is down) are not
        refused: they are sent when the tail resumes.
        """
        ship = self.ship
        return self.lines > 0 and ship.accepted == 0 and self.bad + ship.rejected >= self.lines

    def summary(self, show: int, verb: str = "import-logs") -> list[str]:
        """The lines printed at the end: totals, the first ``show`` bad lines and rejections."""
        rate = self.lines / self.seconds if self.seconds > 0 else 0.0
        ship = self.ship
        out = [
            f"{verb}: {self.lines:,} lines read from {len(self.files)} file(s) in "
            f"{self.seconds:.1f} s ({rate:,.0f} lines/s): {ship.accepted:,} facts accepted, "
            f"{self.bad:,} bad lines, {ship.rejected:,} rejected by the server"
        ]
        if self.untimed:
            out.append(f"{self.untimed:,} facts without a latency (no request time)")
        if self.latency_hint:
            out.append(f"{verb}: {self.latency_hint}")
        samples = [(f.path, b) for f in self.files for b in f.bad_samples][:show]
        if samples:
            out.append(f"bad lines (first {len(samples)} of {self.bad:,}):")
            out += [f"  {p.name}:{b.line}: {b.reason}: {b.text}" for p, b in samples]
        rejections = ship.rejections[:show]
        if rejections:
            out.append(f"rejected by the server (first {len(rejections)} of {ship.rejected:,}):")
            out += [f"  {r}" for r in rejections]
        return out


def _progress(console: Console, quiet: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=quiet or not console.is_terminal,
    )


def check_readable(paths: list[Path]) -> None:
    """UnreadableLog for the first file that cannot be opened."""
    for path in paths:
        read_head(path)


def import_logs(
    paths: list[Path],
    parser: LineParser,
    shipper: Shipper,
    *,
    batch_size: int = 5000,
    console: Console | None = None,
    quiet: bool = False,
    stop: Callable[[], bool] | None = None,
) -> ImportReport:
    """Read every file to its end and send its facts; the shipper is started and closed here."""
    console = console or Console(stderr=True)
    check_readable(paths)
    report = ImportReport()
    started = time.perf_counter()
    shipper.start()
    try:
        with _progress(console, quiet) as bar:
            for path in paths:
                file_report = FileReport(path)
                report.files.append(file_report)
                parser.lines, parser.bad, parser.untimed, parser.bad_samples = 0, 0, 0, []
                try:
                    _import_one(path, parser, shipper, batch_size, bar, stop)
                finally:
                    file_report.lines, file_report.bad = parser.lines, parser.bad
                    file_report.untimed = parser.untimed
                    file_report.bad_samples = parser.bad_samples
                if stop is not None and stop():
                    report.stopped = True
                    break
    except ShipperStopped:
        pass
    finally:
        report.ship = shipper.close()
        report.seconds = time.perf_counter() - started
        if report.untimed:
            report.latency_hint = parser.latency_hint()
    return report


def _checked(reading: Iterator[tuple[bytes, bool]], path: Path) -> Iterator[tuple[bytes, bool]]:
    """The chunks of a file; UnreadableLog when reading fails (a corrupt .gz, an I/O error)."""
    try:
        yield from reading
    except (OSError, EOFError, zlib.error) as e:
        raise UnreadableLog(f"cannot read {path}: {e}") from e


def _import_one(
    path: Path,
    parser: LineParser,
    shipper: Shipper,
    batch_size: int,
    bar: Progress,
    stop: Callable[[], bool] | None,
) -> None:
    fingerprint = fingerprint_of(read_head(path), complete=True)
    if fingerprint is None:  # an empty file
        return
    prefix = event_id_prefix(fingerprint, parser.source)
    stream, raw = open_log(path)
    task = bar.add_task(path.name, total=path.stat().st_size)
    pending: list[dict[str, Any]] = []
    base = 0
    try:
        for buf, _eof in _checked(chunks(stream), path):
            pos, end = 0, len(buf)
            while pos < end:
                pos = parser.parse(buf, pos, end, base, prefix, pending, batch_size)
                if len(pending) >= batch_size:
                    shipper.put(Batch(pending))
                    pending = []
            base += end
            bar.update(task, completed=raw.tell())
            if stop is not None and stop():
                break
        if pending:
            shipper.put(Batch(pending))
    finally:
        stream.close()
        raw.close()
        bar.remove_task(task)

"""`gravix upload --once`: ship every spool directory no live worker owns.

For cron, and for spools left behind (a node shut down while its store was
down, or a worker count lowered). A directory whose lock a running worker holds
is skipped: that worker's own uploader ships it. Each directory taken is first
recovered exactly as a worker would at start, so a crash's ``.open`` segment is
sealed and shipped too.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gravix.ingest.spool import SpoolWriter, try_lock_spool_dir
from gravix.ingest.uploader import PassReport, Uploader
from gravix.storage.base import ObjectStore


@dataclass
class BacklogReport:
    """Per directory: what was shipped, what failed, what a live worker owns."""

    passes: dict[str, PassReport] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        return [name for name, report in self.passes.items() if report.failed is not None]


def pending_segments(spool_root: Path) -> int:
    """Sealed and open segments on disk under ``spool_root`` (for a progress bar)."""
    return sum(1 for p in spool_root.glob("w*/*") if p.suffix in (".seg", ".open"))


def upload_spools_once(
    spool_root: Path,
    store: ObjectStore,
    node_id: str,
    progress: Callable[[str, int], None] | None = None,
) -> BacklogReport:
    report = BacklogReport()
    for directory in sorted(p for p in spool_root.glob("w*") if p.is_dir()):
        fd = try_lock_spool_dir(directory)
        if fd is None:
            report.skipped.append(directory.name)
            continue
        try:
            spool = SpoolWriter(directory, min_free_bytes=0)
            spool.open()
            try:
                uploader = Uploader(spool, store, node_id)
                report.passes[directory.name] = uploader.run_once(progress=progress)
            finally:
                spool.close()
        finally:
            os.close(fd)
    return report

"""Compaction off the tenant's lock, for `gravix serve`.

Compacting a settled hour sorts all its facts (an hour of 5,000 facts/s holds
18M): tens of seconds. Done inside a pass, under the tenant's lock, it holds
up every fold behind it, so the stored minutes fall that far behind. Here the
sort runs in a thread of its own (:func:`gravix.rollup.fold.prepare`), which
reads only the parts' files (immutable) and writes only a local file; no
object is written and no lock is needed. A later pass, under the lock, finds
the file ready, checks that the hour's parts are still the ones it was made
from, and publishes it (:func:`gravix.rollup.fold.publish_compaction`): a
copy and a few puts and deletes. If a late fact added a part meanwhile, the
file is stale: it is dropped and the hour sorted again.

One preparation at a time, so that the sort's memory (its DuckDB limit,
spilling beyond it) is spent once. A failed preparation is logged and tried
again by the next pass; a stopped process leaves only a temporary file,
swept at the next start.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import duckdb

from gravix.rollup import fold
from gravix.storage.copies import LocalCopies

log = logging.getLogger("gravix.rollup")

_HourKey = tuple[str, int]  # (tenant, hour start ms)


class Compactor:
    """Prepares one settled hour's ``facts.parquet`` at a time, in a daemon thread."""

    def __init__(
        self,
        files: LocalCopies,
        connect: Callable[[], duckdb.DuckDBPyConnection],
        temp_dir: Path,
    ) -> None:
        """``connect`` makes the thread's own DuckDB (the pass's is not shared);
        ``temp_dir`` is this compactor's own folder, emptied here."""
        self.files, self.connect, self.temp_dir = files, connect, temp_dir
        self._lock = threading.Lock()
        self._ready: dict[_HourKey, fold.Prepared] = {}
        self._running: _HourKey | None = None
        self._con: duckdb.DuckDBPyConnection | None = None
        temp_dir.mkdir(parents=True, exist_ok=True)
        for stale in temp_dir.glob("compact-*.parquet"):
            stale.unlink(missing_ok=True)

    def ready(self, state: fold.HourState) -> fold.Prepared | None:
        """The hour's prepared file if it holds exactly the hour's parts now;
        else None, having started its preparation unless another one runs."""
        key = (state.tenant, state.hour_ms)
        names = tuple(sorted(state.parts))
        with self._lock:
            prepared = self._ready.pop(key, None)
            if prepared is not None:
                if prepared.names == names:
                    return prepared
                prepared.discard()  # a part came or went since: sort again
            if self._running is None:
                self._running = key
                snapshot = fold.HourState(state.tenant, state.hour_ms, dict(state.parts))
                threading.Thread(
                    target=self._prepare, args=(snapshot,), name="gravix-compact", daemon=True
                ).start()
        return None

    def busy(self) -> bool:
        with self._lock:
            return self._running is not None

    def close(self) -> None:
        """Drop the files prepared and not taken (a running thread's file stays
        until the next start sweeps the folder)."""
        with self._lock:
            for prepared in self._ready.values():
                prepared.discard()
            self._ready.clear()

    def _prepare(self, state: fold.HourState) -> None:
        key = (state.tenant, state.hour_ms)
        prepared: fold.Prepared | None = None
        try:
            if self._con is None:
                self._con = self.connect()
            prepared = fold.prepare(self.files, self._con, state, self.temp_dir)
        except Exception:  # the next pass starts it again
            log.exception("compaction of %s hour %d failed", state.tenant, state.hour_ms)
        finally:
            with self._lock:
                self._running = None
                if prepared is not None:
                    old = self._ready.pop(key, None)
                    if old is not None:
                        old.discard()
                    self._ready[key] = prepared

"""Which pending event ids an hour's archive already counts, from its event_id column alone.

The rollup keeps, per (event_id, event hour), the copy it folded first
(docs/data-model.md), so a pending fact whose event id its hour's archive
holds adds nothing to the answer after the rollup, and must add nothing
before it. Only the parts the hour's minute file counts are asked
(:mod:`gravix.schema.archive`): the minute file of the level the query reads,
so a fact counts in the minute rows or as pending, never both, never neither
(a part a stopped pass wrote but the minutes do not count yet leaves its
facts pending).

What is read: per hour with pending facts, the minute file's footer (cached by
the file's identity, its :data:`Version`), and the ``event_id`` column of its
counted parts, in DuckDB, for just the pending ids not looked up yet: per
(tenant, hour, counted parts) the ids looked up and those found are kept, so a
dashboard refresh with the same pending facts reads no part, and a new
segment's facts are looked up alone. A ``part-*`` name stands for fixed
contents (its event ids' digest); ``facts.parquet`` does not (each compaction
rewrites it), so the ids found in it are kept with its identity and looked up
again once it changed. Files are local
(:class:`gravix.storage.copies.LocalCopies`: a local store's own files, a
remote store's copied once into a bounded cache folder).

A minute file's identity also tells the query layer whether a pass published
the hour while a query read the tiers (:meth:`ArchivedIds.version`): a file is
replaced whole by a new one, so the identity changes with every publication.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from gravix.rollup import aggregate
from gravix.schema import archive, layout
from gravix.storage.base import ObjectNotFound, ObjectStore
from gravix.storage.copies import DEFAULT_CACHE_BYTES, LocalCopies
from gravix.storage.local import LocalObjectStore

Parts = tuple[str, ...]
# A stored file's identity, None for no file: a local store's (path, inode, size,
# mtime), a remote store's local copy's path (named by the object's SHA-256) for
# a minute file, its (size, SHA-256) from ``head`` for a compacted part.
Version = tuple[object, ...] | None
# Footers of minute files kept at most (one per hour with pending facts and level).
_MAX_FOOTERS: Final = 4096


class PartsChanged(Exception):
    """A part the minute file names is gone: the minute file was replaced meanwhile."""


@dataclass(frozen=True, slots=True)
class _Held:
    checked: pa.Array  # distinct pending ids looked up in the parts
    held: pa.Array  # those the parts hold
    compacted: Version  # the identity of the parts' facts.parquet (None without one)


class ArchivedIds:
    """The parts each hour's minutes count, and which pending ids those parts hold."""

    def __init__(
        self,
        store: ObjectStore,
        cache_dir: Path | None = None,
        max_bytes: int = DEFAULT_CACHE_BYTES,
        memory_limit: str = "256MB",
    ) -> None:
        if cache_dir is None and not isinstance(store, LocalObjectStore):
            cache_dir = Path(tempfile.gettempdir()) / "gravix-query-archive"
        self.files = LocalCopies(store, cache_dir, max_bytes)
        self._db = aggregate.connect(memory_limit)
        self._footers: dict[str, tuple[Version, Parts]] = {}
        # (tenant, hour, counted parts) -> ids looked up, ids found
        self._held: dict[tuple[str, int, Parts], _Held] = {}
        self._lock = threading.Lock()
        self.lookups = 0  # reads of parts' event ids, for tests and benchmarks

    def counted(self, tenant: str, hour_ms: int, lvl: layout.Level = "series") -> Parts:
        """The parts the hour's minute file at ``lvl`` counts; () without a minute file."""
        return self.minute_file(tenant, hour_ms, lvl)[1]

    def minute_file(
        self, tenant: str, hour_ms: int, lvl: layout.Level = "series"
    ) -> tuple[Version, Parts]:
        """The identity of the hour's minute file at ``lvl`` and the parts it counts,
        read from one open file; (None, ()) without a minute file.

        A service-level minute file missing (written before that level
        existed) is read at the series level, as the engines do.
        """
        path = self._minute_path(tenant, hour_ms, lvl)
        if path is None:
            return None, ()
        try:
            with open(path, "rb") as f:
                version = self._version(path, os.fstat(f.fileno()))
                with self._lock:
                    cached = self._footers.get(path)
                if cached is not None and cached[0] == version:
                    return cached
                parts = archive.counted_parts(pq.read_metadata(f).metadata)
        except FileNotFoundError:  # deleted since found (retention, cache eviction)
            return None, ()
        with self._lock:
            if len(self._footers) >= _MAX_FOOTERS:
                self._footers.clear()
            self._footers[path] = (version, parts)
        return version, parts

    def version(self, tenant: str, hour_ms: int, lvl: layout.Level = "series") -> Version:
        """The identity of the hour's minute file at ``lvl`` now, as :meth:`minute_file`
        gives it: a ``stat`` (a remote store: a ``head``, and a new version is copied)."""
        path = self._minute_path(tenant, hour_ms, lvl)
        if path is None:
            return None
        try:
            return self._version(path, os.stat(path))
        except FileNotFoundError:
            return None

    def _minute_path(self, tenant: str, hour_ms: int, lvl: layout.Level) -> str | None:
        path = self.files.path(layout.metrics_key("1m", tenant, hour_ms, lvl))
        if path is None and lvl == "service":
            path = self.files.path(layout.metrics_key("1m", tenant, hour_ms))
        return path

    def _version(self, path: str, st: os.stat_result) -> Version:
        if self.files.local is None:
            return (path,)  # a copy named by its contents, never rewritten
        return (path, st.st_ino, st.st_size, st.st_mtime_ns)

    def _compacted(self, tenant: str, hour_ms: int) -> Version:
        """The identity of the hour's ``facts.parquet`` now (None without one)."""
        key = archive.part_key(tenant, hour_ms, archive.COMPACTED)
        if self.files.local is not None:
            try:
                st = os.stat(self.files.local.file_path(key))
            except FileNotFoundError:
                return None
            return (st.st_ino, st.st_size, st.st_mtime_ns)
        try:
            info = self.files.store.head(key)
        except ObjectNotFound:
            return None
        # A store that cannot tell the checksum: never the same, looked up every time.
        return (info.size, info.sha256 if info.sha256 is not None else object())

    def held(
        self, tenant: str, hour_ms: int, parts: Parts, ids: pa.Array, *, missing_ok: bool = False
    ) -> pa.Array:
        """Which of ``ids`` (distinct event ids of the hour's pending facts) ``parts`` hold.

        Raises :class:`PartsChanged` if a part is gone, unless ``missing_ok``
        (retention dropped the hour's archive and kept its minutes: its facts
        cannot be checked, and the rollup adds them too).
        """
        key = (tenant, hour_ms, parts)
        compacted = self._compacted(tenant, hour_ms) if archive.COMPACTED in parts else None
        with self._lock:
            entry = self._held.get(key)
        if entry is not None and entry.compacted != compacted:
            entry = None  # a compaction rewrote facts.parquet: it holds more ids now
        new = ids
        if entry is not None:
            new = ids.filter(pc.invert(pc.is_in(ids, value_set=entry.checked)))
        if len(new) == 0 and entry is not None:
            return entry.held
        found = self._look_up(tenant, hour_ms, parts, new, missing_ok)
        if entry is not None:
            new = pa.concat_arrays([entry.checked, new])
            found = pa.concat_arrays([entry.held, found])
        with self._lock:
            self._held[key] = _Held(new, found, compacted)
        return found

    def keep(self, tenant: str, used: set[tuple[int, Parts]]) -> None:
        """Forget the lookups of ``tenant`` but those of ``used`` (hour, parts) pairs."""
        with self._lock:
            for key in [k for k in self._held if k[0] == tenant and k[1:] not in used]:
                del self._held[key]

    def _look_up(
        self, tenant: str, hour_ms: int, parts: Parts, ids: pa.Array, missing_ok: bool
    ) -> pa.Array:
        with contextlib.ExitStack() as pins:
            # Each part is opened once and read through that open file: one the
            # rollup deletes meanwhile (a compaction) is still read whole.
            paths = [
                _pin(self.files.path(archive.part_key(tenant, hour_ms, name)), pins)
                for name in parts
            ]
            if None in paths and not missing_ok:
                raise PartsChanged(archive.hour_folder(tenant, hour_ms))
            found = [p for p in paths if p is not None]
            if not found or len(ids) == 0:
                return pa.array([], pa.string())
            cursor = self._db.cursor()
            try:
                held = archive.held_ids(cursor, found, ids)
            finally:
                cursor.close()
        with self._lock:
            self.lookups += 1
        return held


_PROC_FD = os.path.isdir("/proc/self/fd")


def _pin(path: str | None, pins: contextlib.ExitStack) -> str | None:
    """A name for ``path`` that reads the version open now (None if there is none)."""
    if path is None or not _PROC_FD:
        return path
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    pins.callback(os.close, fd)
    return f"/proc/self/fd/{fd}"

"""Local files for objects of any store, for readers that want a path (DuckDB, Spark).

A local folder's own files are used as they are; a remote store's objects are
copied into a bounded cache folder (:class:`LocalCopies`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import threading
from collections import OrderedDict
from pathlib import Path

from gravix.storage.base import ObjectNotFound, ObjectStore
from gravix.storage.local import LocalObjectStore

DEFAULT_CACHE_BYTES = 1 << 30


class LocalCopies:
    """A local file for each object of a store, or None if there is no object.

    A :class:`LocalObjectStore`'s own file is used as is: Gravix replaces
    objects whole by rename, so an open file is always one whole version. For
    another store, the object is fetched into ``cache_dir`` under a name made
    of its key and SHA-256 (a new version is a new file, never rewritten in
    place) and the least recently used copies beyond ``max_bytes`` are deleted.
    """

    def __init__(
        self,
        store: ObjectStore,
        cache_dir: Path | None = None,
        max_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        self.store = store
        self.local = store if isinstance(store, LocalObjectStore) else None
        # One folder per process (workers share a data dir); those of dead
        # processes are swept when another one starts.
        self.cache_dir = None
        if cache_dir is not None and self.local is None:
            _sweep(cache_dir)
            self.cache_dir = cache_dir / f"p{os.getpid()}"
        self.max_bytes = max_bytes
        self._copies: OrderedDict[str, tuple[str, int]] = OrderedDict()  # key -> (path, size)
        self._bytes = 0
        self._lock = threading.Lock()

    def path(self, key: str) -> str | None:
        if self.local is not None:
            path = self.local.file_path(key)
            return str(path) if path.is_file() else None
        try:
            info = self.store.head(key)
        except ObjectNotFound:
            return None
        if self.cache_dir is None:
            raise RuntimeError(f"no local copy of {key}: a remote store needs a cache folder")
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        if info.sha256 is not None:  # None: a store that cannot tell; fetched every time
            name = str(self.cache_dir / f"{digest}-{info.sha256}.parquet")
            with self._lock:
                cached = self._copies.get(key)
                if cached is not None and cached[0] == name and os.path.exists(name):
                    self._copies.move_to_end(key)
                    return name
        data = self.store.get(key)
        # Named by what was fetched: if the object was replaced between head and
        # get, this version is whole too.
        name = str(self.cache_dir / f"{digest}-{hashlib.sha256(data).hexdigest()}.parquet")
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        temp = f"{name}.{os.getpid()}.{threading.get_ident()}.tmp"
        with open(temp, "wb") as f:
            f.write(data)
        os.replace(temp, name)
        with self._lock:
            old = self._copies.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
                if old[0] != name:
                    _unlink(old[0])
            self._copies[key] = (name, len(data))
            self._bytes += len(data)
            while self._bytes > self.max_bytes and len(self._copies) > 1:
                _, (dropped, size) = self._copies.popitem(last=False)
                self._bytes -= size
                _unlink(dropped)
        return name


def _sweep(cache_dir: Path) -> None:
    """Delete the cache folders of processes that are gone."""
    if not cache_dir.is_dir():
        return
    for folder in cache_dir.glob("p*"):
        pid = folder.name[1:]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:  # alive, another user's
            pass


def _unlink(path: str) -> None:
    # A query reading it keeps its open file; one about to open it retries.
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)

"""The local object store: one file per object under a root folder.

Layout: key ``a/b/c.gvx`` is the file ``<root>/a/b/c.gvx``. Folders are made
on demand and removed again when their last object is deleted, so the tree
looks like a bucket listing. While an object is being written it lives in a
temporary file ``.tmp-<random>`` in its final folder; temporary files are never
listed, and no key may name one (see :mod:`gravix.storage.keys`).

Durability: every write goes to a temporary file, which is fsynced and then
renamed (``put``) or hard-linked (``publish``) into place, and the folder is
fsynced after that; new folders are fsynced into their parents as they are
made. A crash at any point leaves either the old object or the new one, never
a torn one (at worst a stray ``.tmp-*`` file).

The local store cannot hold both ``a`` and ``a/b`` (a name is a file or a
folder, not both); S3 can. Gravix's key layout never needs both.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from gravix.storage.base import InvalidKey, ObjectInfo, ObjectNotFound, StoreUnavailable
from gravix.storage.keys import TEMP_PREFIX, validate_key, validate_prefix

_BLOCK = 1 << 20
_MISSING = (FileNotFoundError, NotADirectoryError, IsADirectoryError)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as e:
        # Some file systems cannot fsync a folder; their rename is as durable as it gets.
        if e.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


class LocalObjectStore:
    """An :class:`~gravix.storage.base.ObjectStore` in a folder (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()
        self.url = f"file://{self.root}"

    def __repr__(self) -> str:
        return f"LocalObjectStore({str(self.root)!r})"

    # --- public API -------------------------------------------------------

    def put(self, key: str, data: bytes) -> ObjectInfo:
        self._put(key, lambda f: f.write(data))
        return ObjectInfo(key=key, size=len(data), sha256=hashlib.sha256(data).hexdigest())

    def put_file(self, key: str, path: Path) -> ObjectInfo:
        digest = hashlib.sha256()

        def copy(f: BinaryIO) -> None:
            with open(path, "rb") as source:
                while block := source.read(_BLOCK):
                    digest.update(block)
                    f.write(block)

        self._put(key, copy)
        return ObjectInfo(key=key, size=path.stat().st_size, sha256=digest.hexdigest())

    def _put(self, key: str, write: Callable[[BinaryIO], object]) -> None:
        path = self._path(key)
        try:
            tmp = self._write_temp(key, path.parent, write)
            try:
                os.replace(tmp, path)
            finally:
                _unlink_quietly(tmp)
            _fsync_dir(path.parent)
        except IsADirectoryError as e:
            raise self._folder_clash(key) from e
        except OSError as e:
            raise self._unavailable("write", key, e) from e

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                return f.read()
        except _MISSING as e:
            raise ObjectNotFound(f"no object {key!r} in {self.url}") from e
        except OSError as e:
            raise self._unavailable("read", key, e) from e

    def head(self, key: str) -> ObjectInfo:
        """Size and sha256 of what is on disk now (the file is read in full)."""
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                digest = hashlib.file_digest(f, "sha256").hexdigest()
        except _MISSING as e:
            raise ObjectNotFound(f"no object {key!r} in {self.url}") from e
        except OSError as e:
            raise self._unavailable("read", key, e) from e
        return ObjectInfo(key=key, size=size, sha256=digest)

    def exists(self, key: str) -> bool:
        path = self._path(key)
        try:
            return stat.S_ISREG(os.stat(path).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as e:
            raise self._unavailable("look up", key, e) from e

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            os.unlink(path)
        except _MISSING:
            return
        except OSError as e:
            raise self._unavailable("delete", key, e) from e
        try:
            _fsync_dir(path.parent)
            self._prune(path.parent)
        except OSError as e:
            raise self._unavailable("delete", key, e) from e

    def publish(self, key: str, data: bytes) -> bool:
        """Write ``key`` only if absent: temp file, fsync, then ``link()`` (fails if present)."""
        path = self._path(key)
        try:
            tmp = self._write_temp(key, path.parent, lambda f: f.write(data))
            try:
                os.link(tmp, path)
            except FileExistsError:
                if path.is_dir():
                    raise self._folder_clash(key) from None
                return False
            finally:
                _unlink_quietly(tmp)
            _fsync_dir(path.parent)
        except OSError as e:
            if e.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise StoreUnavailable(
                    f"local object store {self.root}: cannot publish {key!r}: the file "
                    f"system refuses hard links ({e.strerror}), which atomic publish needs"
                ) from e
            raise self._unavailable("write", key, e) from e
        return True

    def ping(self) -> None:
        """Check the root is a writable folder (made on first use) by writing a probe file."""
        probe = self.root / f"{TEMP_PREFIX}ping-{secrets.token_hex(8)}"
        try:
            self._ensure_dir("", self.root)
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise StoreUnavailable(
                f"local object store {self.root} is not writable: {e.strerror or e}"
            ) from e

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix``, in key order; ``sha256`` is None.

        Files whose names are not valid keys (strays, temporary files) and
        symlinks are not listed.
        """
        validate_prefix(prefix)
        folder, _, _ = prefix.rpartition("/")
        start = self._path(folder) if folder else self.root
        base = f"{folder}/" if folder else ""
        return self._walk(start, base, prefix)

    def file_path(self, key: str) -> Path:
        """Where ``key``'s file is (or would be), for readers that open files themselves.

        The file is replaced whole by rename: a reader that has it open keeps
        reading one whole version.
        """
        return self._path(key)

    # --- helpers ----------------------------------------------------------

    def _path(self, key: str) -> Path:
        """The file for ``key``, refused unless it really resolves inside the root."""
        validate_key(key)
        target = self.root.joinpath(*key.split("/"))
        real_root = os.path.realpath(self.root)
        real = os.path.realpath(target)
        if real == real_root or os.path.commonpath([real_root, real]) != real_root:
            raise InvalidKey(f"key {key!r} resolves outside the store root {self.root}")
        return target

    def _ensure_dir(self, key: str, directory: Path) -> None:
        """Make ``directory`` and its missing parents, fsyncing each into its parent."""
        missing: list[Path] = []
        here = directory
        while not here.is_dir():
            if here.exists() or here.is_symlink():
                if here.is_dir():  # a concurrent writer made it since the check above
                    break
                if here.is_relative_to(self.root) and here != self.root:
                    raise self._folder_clash(key, here)
                raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(here))
            missing.append(here)
            if here.parent == here:
                break
            here = here.parent
        for folder in reversed(missing):
            try:
                os.mkdir(folder)
            except FileExistsError:
                if not folder.is_dir():
                    raise
            _fsync_dir(folder.parent)

    def _write_temp(self, key: str, directory: Path, write: Callable[[BinaryIO], object]) -> Path:
        """Make a fresh temporary file in ``directory``, ``write`` it, fsync it."""
        # A concurrent delete may prune the folder between mkdir and open: make it again.
        for attempt in range(3):
            self._ensure_dir(key, directory)
            tmp = directory / f"{TEMP_PREFIX}{secrets.token_hex(8)}"
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileNotFoundError:
                if attempt == 2:
                    raise
                continue
            try:
                with os.fdopen(fd, "wb") as f:
                    write(f)
                    f.flush()
                    os.fsync(f.fileno())
            except BaseException:
                _unlink_quietly(tmp)
                raise
            return tmp
        raise AssertionError("unreachable")

    def _prune(self, folder: Path) -> None:
        """Remove folders left empty by a delete, up to (not including) the root."""
        while folder != self.root and folder.is_relative_to(self.root):
            try:
                os.rmdir(folder)
            except OSError as e:
                if e.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                    return
                raise
            _fsync_dir(folder.parent)
            folder = folder.parent

    def _walk(self, folder: Path, base: str, prefix: str) -> Iterator[ObjectInfo]:
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as e:
            raise self._unavailable("list", base or "/", e) from e
        # Sorting a folder as "name/" puts its keys exactly where a sort of the
        # full keys would ("a-b" < "a/c" because "-" < "/"), like an S3 listing.
        named: list[tuple[str, os.DirEntry[str]]] = []
        for entry in entries:
            if entry.name.startswith(TEMP_PREFIX):
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                continue
            named.append((f"{entry.name}/" if is_dir else entry.name, entry))
        named.sort(key=lambda pair: pair[0])
        for name, entry in named:
            key = base + name
            if name.endswith("/"):
                if key.startswith(prefix) or prefix.startswith(key):
                    yield from self._walk(Path(entry.path), key, prefix)
                continue
            if not key.startswith(prefix):
                continue
            try:
                validate_key(key)
                st = entry.stat(follow_symlinks=False)
            except (InvalidKey, FileNotFoundError):
                continue
            except OSError as e:
                raise self._unavailable("list", key, e) from e
            if stat.S_ISREG(st.st_mode):
                yield ObjectInfo(key=key, size=st.st_size, sha256=None)

    def _folder_clash(self, key: str, where: Path | None = None) -> InvalidKey:
        if where is None:
            return InvalidKey(
                f"key {key!r} names a folder of other objects in {self.url}: the local "
                "store cannot hold both 'x' and 'x/...'"
            )
        clash = where.relative_to(self.root).as_posix()
        return InvalidKey(
            f"key {key!r} cannot be stored in {self.url}: {clash!r} is an object, and the "
            "local store cannot hold both 'x' and 'x/...'"
        )

    def _unavailable(self, action: str, key: str, e: OSError) -> StoreUnavailable:
        reason = e.strerror or str(e)
        name = errno.errorcode.get(e.errno or 0)
        if name:
            reason = f"{reason} ({name})"
        return StoreUnavailable(
            f"local object store {self.root}: cannot {action} {key!r}: {reason}"
        )


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)

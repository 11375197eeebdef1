"""The ObjectStore protocol: the only way any stage touches stored objects.

Keys are ``/``-separated relative names such as
``raw/tenant=acme/date=2026-11-22/hour=10/node-w0-<segment>.gvx``; every backend
validates them with :func:`gravix.storage.keys.validate_key` before use.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from gravix.errors import GravixError, ServiceUnavailable


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a store knows of one object: enough to verify an upload."""

    key: str
    size: int
    sha256: str | None  # hex; None when the backend cannot tell


class ObjectNotFound(GravixError):
    status = 404
    code = "object_not_found"


class StoreUnavailable(ServiceUnavailable):
    """The store cannot be reached or refuses work now; try again later."""

    code = "object_store_unavailable"


class InvalidKey(GravixError):
    status = 400
    code = "invalid_key"


@runtime_checkable
class ObjectStore(Protocol):
    """A flat namespace of immutable-ish objects (a folder, a bucket prefix)."""

    url: str

    def put(self, key: str, data: bytes) -> ObjectInfo:
        """Store ``data`` under ``key`` (replacing any object there), durably."""
        ...

    def put_file(self, key: str, path: Path) -> ObjectInfo:
        """Store the local file at ``path`` under ``key`` as :meth:`put` does, read
        in pieces, never whole in memory (an hour's compacted archive)."""
        ...

    def get(self, key: str) -> bytes:
        """The object's bytes; raises ObjectNotFound."""
        ...

    def head(self, key: str) -> ObjectInfo:
        """Size and checksum of the object as stored now; raises ObjectNotFound."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove ``key``; removing a missing key is not an error."""
        ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix``, in key order.

        Key order is plain string (byte) order of the whole keys, as S3 lists
        them. Listed ObjectInfos carry the size but ``sha256=None``: use
        :meth:`head` for the checksum. Bad prefixes raise InvalidKey at once,
        not on iteration.
        """
        ...

    def publish(self, key: str, data: bytes) -> bool:
        """Make ``data`` visible at ``key`` in one step, only if ``key`` is absent.

        Readers never see a partial object. Returns False (and changes
        nothing) when ``key`` already exists: the rollup uses this for atomic,
        exactly-once output.
        """
        ...

    def ping(self) -> None:
        """Raise StoreUnavailable if the store cannot be reached now."""
        ...

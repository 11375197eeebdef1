"""Object stores: where sealed spool segments and rollup output live.

:class:`ObjectStore` is the protocol every stage uses; :func:`open_store`
picks :class:`LocalObjectStore` or :class:`S3ObjectStore` from a URL. The S3
store is imported lazily (it needs the ``s3`` extra). See ``docs/storage.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gravix.storage.base import (
    InvalidKey,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    StoreUnavailable,
)
from gravix.storage.factory import open_store
from gravix.storage.keys import validate_key, validate_prefix
from gravix.storage.local import LocalObjectStore

if TYPE_CHECKING:
    from gravix.storage.s3 import S3ObjectStore

__all__ = [
    "InvalidKey",
    "LocalObjectStore",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "S3ObjectStore",
    "StoreUnavailable",
    "open_store",
    "validate_key",
    "validate_prefix",
]


def __getattr__(name: str) -> Any:
    # S3ObjectStore's module is cheap to import (boto3 is imported on use),
    # but keeping it lazy keeps `import gravix.storage` free of it entirely.
    if name == "S3ObjectStore":
        from gravix.storage.s3 import S3ObjectStore

        return S3ObjectStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Choose an object store from its URL.

============================  ==================================================
URL                           store
============================  ==================================================
empty or None                 LocalObjectStore at ``<data_dir>/store``
``file:///srv/gravix/store``  LocalObjectStore at that absolute path
``file://store2``             LocalObjectStore at ``<data_dir>/store2``
                              (anything not starting with ``/`` after
                              ``file://`` is relative to ``data_dir``)
``s3://bucket``               S3ObjectStore, objects at the top of the bucket
``s3://bucket/gravix/prod``   S3ObjectStore, objects under ``gravix/prod/``
============================  ==================================================

File URLs are taken literally: no ``%``-decoding, no ``~`` expansion, no host
part (``file://localhost/x`` would mean ``<data_dir>/localhost/x``). A relative
one with a ``..`` part (``file://../x``) would leave the data directory and is
a ConfigError, as is any other scheme or a bare path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gravix.errors import ConfigError
from gravix.storage.base import ObjectStore
from gravix.storage.local import LocalObjectStore

DEFAULT_LOCAL_DIR = "store"


def _plain(value: Any) -> Any:
    """Unwrap a pydantic SecretStr (or anything with ``get_secret_value``)."""
    reveal = getattr(value, "get_secret_value", None)
    return reveal() if callable(reveal) else value


def open_store(url: str | None, *, data_dir: Path, **s3_options: Any) -> ObjectStore:
    """The ObjectStore that ``url`` names (see the module docstring).

    ``s3_options`` are passed to :class:`~gravix.storage.s3.S3ObjectStore`
    (``endpoint_url``, ``region``, ``path_style``, ``access_key_id``,
    ``secret_access_key``, ``max_attempts``, ...); ``None`` values are dropped
    and SecretStr values unwrapped. They are ignored for a local store, so a
    caller may always pass all of its settings.
    """
    url = (url or "").strip()
    if not url:
        return LocalObjectStore(data_dir / DEFAULT_LOCAL_DIR)
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigError(
            f"object store URL {url!r} has no scheme: use file:///absolute/path, "
            "file://path-under-data-dir or s3://bucket/prefix"
        )
    scheme = scheme.lower()
    if scheme == "file":
        if not rest.strip("/"):
            raise ConfigError(f"object store URL {url!r} names no folder")
        if not rest.startswith("/") and ".." in Path(rest).parts:
            # A relative URL is a folder under the data directory; ".." would
            # put the objects beside it, wherever the server was started.
            raise ConfigError(
                f"object_store_url (GRAVIX_OBJECT_STORE_URL) {url!r} leaves the data "
                "directory: file://path is a folder under data_dir; for another place "
                "use file:///absolute/path"
            )
        path = Path(rest) if rest.startswith("/") else data_dir / rest
        return LocalObjectStore(path)
    if scheme == "s3":
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise ConfigError(f"object store URL {url!r} names no bucket (s3://bucket/prefix)")
        from gravix.storage.s3 import S3ObjectStore

        options = {name: _plain(v) for name, v in s3_options.items() if v is not None}
        try:
            return S3ObjectStore(bucket, prefix, **options)
        except TypeError as e:  # an option S3ObjectStore does not take
            raise ConfigError(f"bad S3 option for {url!r}: {e}") from e
    raise ConfigError(
        f"object store URL {url!r} has the unknown scheme {scheme!r}: use file:// or s3://"
    )

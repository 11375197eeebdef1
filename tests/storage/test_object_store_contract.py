"""One contract, every backend: the local store and S3 (moto on loopback).

Concurrent publish races are tested on the local store only
(test_local_object_store.py): for S3 the atomicity is the server's, and
moto's If-None-Match is a check-then-write without a lock.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from gravix.storage import (
    InvalidKey,
    LocalObjectStore,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
)
from tests.s3server import loopback_s3


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "local":
        yield LocalObjectStore(tmp_path / "store")
    else:
        with loopback_s3() as s3:
            yield s3.store(prefix="gravix/test")


def keys_of(store: ObjectStore, prefix: str = "") -> list[str]:
    return [info.key for info in store.list(prefix)]


def test_is_an_object_store(store: ObjectStore) -> None:
    assert isinstance(store, ObjectStore)
    assert store.url.startswith(("file://", "s3://"))
    store.ping()


def test_put_get_head_round_trip(store: ObjectStore) -> None:
    data = b"hello, object store\n"
    info = store.put("raw/tenant=acme/date=2026-11-22/hour=10/node-w0-1.gvx", data)
    digest = hashlib.sha256(data).hexdigest()
    assert info == ObjectInfo(
        key="raw/tenant=acme/date=2026-11-22/hour=10/node-w0-1.gvx", size=len(data), sha256=digest
    )
    assert store.get(info.key) == data
    assert store.head(info.key) == info
    assert store.exists(info.key)


def test_empty_object(store: ObjectStore) -> None:
    store.put("empty", b"")
    assert store.get("empty") == b""
    assert store.head("empty") == ObjectInfo("empty", 0, hashlib.sha256(b"").hexdigest())


def test_put_overwrites(store: ObjectStore) -> None:
    store.put("a/b", b"first")
    info = store.put("a/b", b"second, longer")
    assert store.get("a/b") == b"second, longer"
    assert store.head("a/b") == info
    assert keys_of(store) == ["a/b"]


def test_missing_key_is_object_not_found(store: ObjectStore) -> None:
    store.put("a/present", b"x")
    for key in ("missing", "a/missing", "no/such/folder/x"):
        with pytest.raises(ObjectNotFound):
            store.get(key)
        with pytest.raises(ObjectNotFound):
            store.head(key)
        assert not store.exists(key)


def test_delete(store: ObjectStore) -> None:
    store.put("x/y/z", b"1")
    store.put("x/keep", b"2")
    store.delete("x/y/z")
    assert not store.exists("x/y/z")
    with pytest.raises(ObjectNotFound):
        store.get("x/y/z")
    assert keys_of(store) == ["x/keep"]
    store.delete("x/y/z")  # deleting a missing key is fine
    store.delete("never/there")
    store.put("x/y/z", b"3")  # the emptied "folder" can be used again
    assert store.get("x/y/z") == b"3"


def test_list_is_in_key_order(store: ObjectStore) -> None:
    # "-" and "." sort before "/", "=" and letters after it: a naive walk of
    # folders would put "a/..." before "a-b".
    keys = [
        "a/c",
        "a-b",
        "a.b",
        "a=b",
        "a_b",
        "ab",
        "a/b/c",
        "a/b-c",
        "Z",
        "0",
        "raw/tenant=acme/date=2026-11-22/hour=09/n-1.gvx",
        "raw/tenant=acme/date=2026-11-22/hour=10/n-1.gvx",
        "raw/tenant=acme2/date=2026-11-22/hour=10/n-1.gvx",
        "raw/tenant=bob/date=2026-11-22/hour=10/n-1.gvx",
    ]
    for i, key in enumerate(keys):
        store.put(key, b"x" * i)
    listed = list(store.list())
    assert [info.key for info in listed] == sorted(keys)
    assert {info.key: info.size for info in listed} == {k: i for i, k in enumerate(keys)}
    assert all(info.sha256 is None for info in listed)


def test_list_by_prefix(store: ObjectStore) -> None:
    keys = [
        "raw/tenant=acme/date=2026-11-22/hour=09/n-1.gvx",
        "raw/tenant=acme/date=2026-11-22/hour=10/n-1.gvx",
        "raw/tenant=acme2/date=2026-11-22/hour=10/n-1.gvx",
        "raw/tenant=bob/date=2026-11-22/hour=10/n-1.gvx",
        "rollup/tenant=acme/x.parquet",
        "rawfile",
    ]
    for key in keys:
        store.put(key, b"x")
    assert keys_of(store, "raw/") == sorted(k for k in keys if k.startswith("raw/"))
    assert keys_of(store, "raw") == sorted(k for k in keys if k.startswith("raw"))
    assert keys_of(store, "raw/tenant=acme/") == keys[:2]
    assert keys_of(store, "raw/tenant=acme") == keys[:3]
    assert keys_of(store, "raw/tenant=ac") == keys[:3]
    assert keys_of(store, "raw/tenant=acme/date=2026-11-22/hour=10/") == [keys[1]]
    assert keys_of(store, "raw/tenant=acme/date=2026-11-22/hour=10/n-1.gvx") == [keys[1]]
    assert keys_of(store, "rollup/tenant=zed/") == []
    assert keys_of(store, "nothing") == []


def test_list_of_empty_store(store: ObjectStore) -> None:
    assert keys_of(store) == []
    assert keys_of(store, "raw/") == []


def test_publish_only_if_absent(store: ObjectStore) -> None:
    assert store.publish("rollup/minute=1.parquet", b"first") is True
    assert store.publish("rollup/minute=1.parquet", b"second") is False
    assert store.get("rollup/minute=1.parquet") == b"first"
    assert store.head("rollup/minute=1.parquet").sha256 == hashlib.sha256(b"first").hexdigest()
    assert keys_of(store) == ["rollup/minute=1.parquet"]
    store.put("rollup/minute=1.parquet", b"put still replaces")
    assert store.get("rollup/minute=1.parquet") == b"put still replaces"
    store.delete("rollup/minute=1.parquet")
    assert store.publish("rollup/minute=1.parquet", b"again") is True


def test_large_object(store: ObjectStore) -> None:
    data = os.urandom(6 * 1024 * 1024 + 7)
    info = store.put("big/object.bin", data)
    assert info.size == len(data)
    assert store.get("big/object.bin") == data
    assert store.head("big/object.bin") == info
    assert store.head("big/object.bin").sha256 == hashlib.sha256(data).hexdigest()


def test_put_file_stores_a_local_file_as_put_does(store: ObjectStore, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 11)  # several read blocks
    source = tmp_path / "hour.parquet"
    source.write_bytes(data)
    store.put("big/first", b"old")
    info = store.put_file("big/first", source)
    assert info == ObjectInfo("big/first", len(data), hashlib.sha256(data).hexdigest())
    assert store.get("big/first") == data and store.head("big/first") == info
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert store.put_file("empty", empty).size == 0 and store.get("empty") == b""


@pytest.mark.parametrize("key", ["", "/abs", "../up", "a//b", "a/./b", "a\\b", "a%2fb", "é"])
def test_invalid_keys_are_refused_everywhere(store: ObjectStore, key: str) -> None:
    with pytest.raises(InvalidKey):
        store.put(key, b"x")
    with pytest.raises(InvalidKey):
        store.publish(key, b"x")
    with pytest.raises(InvalidKey):
        store.get(key)
    with pytest.raises(InvalidKey):
        store.head(key)
    with pytest.raises(InvalidKey):
        store.exists(key)
    with pytest.raises(InvalidKey):
        store.delete(key)
    assert keys_of(store) == []


@pytest.mark.parametrize("prefix", ["/abs", "../", "a//", "a/../", "%2e%2e/"])
def test_invalid_prefixes_are_refused(store: ObjectStore, prefix: str) -> None:
    with pytest.raises(InvalidKey):
        store.list(prefix)

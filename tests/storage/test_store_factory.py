"""open_store: which URL gives which store."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from gravix.errors import ConfigError
from gravix.storage import LocalObjectStore, open_store
from gravix.storage.s3 import S3ObjectStore


@pytest.mark.parametrize("url", [None, "", "  "])
def test_no_url_means_the_store_folder_in_the_data_dir(tmp_path: Path, url: str | None) -> None:
    store = open_store(url, data_dir=tmp_path)
    assert isinstance(store, LocalObjectStore)
    assert store.root == tmp_path / "store"
    assert store.url == f"file://{tmp_path / 'store'}"


def test_absolute_file_url(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}/objects", data_dir=Path("/unused"))
    assert isinstance(store, LocalObjectStore)
    assert store.root == tmp_path / "objects"


def test_relative_file_url_is_under_the_data_dir(tmp_path: Path) -> None:
    store = open_store("file://stores/main", data_dir=tmp_path)
    assert isinstance(store, LocalObjectStore)
    assert store.root == tmp_path / "stores" / "main"


def test_local_store_ignores_s3_options(tmp_path: Path) -> None:
    store = open_store("", data_dir=tmp_path, endpoint_url="http://x", path_style=True)
    assert isinstance(store, LocalObjectStore)


def test_s3_url(tmp_path: Path) -> None:
    store = open_store(
        "s3://gravix-data/prod/eu/",
        data_dir=tmp_path,
        endpoint_url="http://127.0.0.1:9000",
        region=None,
        path_style=True,
        access_key_id="minio",
        secret_access_key=SecretStr("minio-secret"),
    )
    assert isinstance(store, S3ObjectStore)
    assert (store.bucket, store.prefix, store.url) == (
        "gravix-data",
        "prod/eu",
        "s3://gravix-data/prod/eu",
    )
    assert store.endpoint_url == "http://127.0.0.1:9000"


def test_s3_url_without_prefix(tmp_path: Path) -> None:
    store = open_store("s3://gravix-data", data_dir=tmp_path)
    assert isinstance(store, S3ObjectStore)
    assert store.prefix == ""


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://host/x", "unknown scheme 'ftp'"),
        ("gs://bucket", "unknown scheme 'gs'"),
        ("/var/lib/gravix", "no scheme"),
        ("store", "no scheme"),
        ("file://", "no folder"),
        ("file://../x", "leaves the data directory"),
        ("file://a/../../x", "leaves the data directory"),
        ("s3://", "no bucket"),
        ("s3:///prefix", "no bucket"),
        ("s3://Bad_Bucket/x", "not a valid S3 bucket"),
        ("s3://bucket/../x", "invalid S3 key prefix"),
        ("s3://bucket/a%2fb", "invalid S3 key prefix"),
    ],
)
def test_bad_urls_are_config_errors(tmp_path: Path, url: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        open_store(url, data_dir=tmp_path)
    assert reason in caught.value.message


def test_unknown_s3_option_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="bad S3 option"):
        open_store("s3://gravix-data", data_dir=tmp_path, colour="blue")

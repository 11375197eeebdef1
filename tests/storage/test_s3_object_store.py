"""What only the S3 store does: retries, outages, metadata, conditional writes."""

from __future__ import annotations

import base64
import hashlib
import sys

import pytest

from gravix.errors import ConfigError, GravixError
from gravix.storage import ObjectNotFound, StoreUnavailable
from gravix.storage.s3 import MISSING_BOTO3, S3ObjectStore
from tests import s3server
from tests.s3server import DROP, SLOW_DOWN, LoopbackS3, Reply, ScriptedS3, free_port

s3_endpoint = s3server.s3_endpoint  # the fixture


def test_missing_boto3_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(GravixError) as caught:
        S3ObjectStore("some-bucket")
    assert caught.value.message == MISSING_BOTO3
    assert "pip install gravix[s3]" in str(caught.value)
    assert isinstance(caught.value, ConfigError)


@pytest.mark.parametrize("bucket", ["", "ab", "Upper", "under_score", "-dash", "x" * 64])
def test_bad_bucket_names_are_config_errors(bucket: str) -> None:
    with pytest.raises(ConfigError, match="bucket"):
        S3ObjectStore(bucket)


def test_half_given_credentials_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="both"):
        S3ObjectStore("some-bucket", access_key_id="only-the-id")


def test_sha256_lives_in_object_metadata(s3_endpoint: LoopbackS3) -> None:
    store = s3_endpoint.store(prefix="p")
    info = store.put("a/b.gvx", b"payload")
    raw = s3_endpoint.client().head_object(Bucket=s3_endpoint.bucket, Key="p/a/b.gvx")
    assert raw["Metadata"] == {"sha256": hashlib.sha256(b"payload").hexdigest()}
    assert raw["ContentLength"] == 7
    assert store.head("a/b.gvx") == info


def test_objects_from_other_tools(s3_endpoint: LoopbackS3) -> None:
    client = s3_endpoint.client()
    bucket = s3_endpoint.bucket
    client.put_object(Bucket=bucket, Key="p/foreign", Body=b"no metadata")
    client.put_object(Bucket=bucket, Key="p/has space", Body=b"not a valid key")
    client.put_object(Bucket=bucket, Key="outside-the-prefix", Body=b"x")
    client.put_object(Bucket=bucket, Key="pp/also-outside", Body=b"x")
    store = s3_endpoint.store(prefix="p")
    assert store.head("foreign").sha256 is None
    assert store.head("foreign").size == len(b"no metadata")
    assert [info.key for info in store.list()] == ["foreign"]
    with pytest.raises(ObjectNotFound):
        store.get("outside-the-prefix")


def test_list_pages_through_everything(s3_endpoint: LoopbackS3) -> None:
    store = s3_endpoint.store(prefix="paged", page_size=2)
    keys = [f"k/{i:02d}" for i in range(7)]
    for key in reversed(keys):
        store.put(key, b"x")
    assert [info.key for info in store.list()] == keys
    assert [info.key for info in store.list("k/0")] == keys


def test_outage_then_recovery_keeps_objects(s3_endpoint: LoopbackS3) -> None:
    store = s3_endpoint.store(max_attempts=2)
    store.put("before/outage", b"kept")
    port = s3_endpoint.port

    s3_endpoint.stop()
    with pytest.raises(StoreUnavailable, match="after 2 attempts"):
        store.put("during/outage", b"lost")
    with pytest.raises(StoreUnavailable):
        store.get("before/outage")
    with pytest.raises(StoreUnavailable):
        store.ping()

    s3_endpoint.start()
    assert s3_endpoint.port == port
    store.ping()
    assert store.get("before/outage") == b"kept"
    assert not store.exists("during/outage")
    store.put("after/outage", b"fine")
    assert [info.key for info in store.list()] == ["after/outage", "before/outage"]


def test_nothing_listening_is_unavailable_after_bounded_attempts() -> None:
    store = S3ObjectStore(
        "gravix-test",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        region="us-east-1",
        path_style=True,
        access_key_id="testing",
        secret_access_key="testing",
        max_attempts=4,
        backoff_base=0.01,
        backoff_cap=0.02,
        connect_timeout=1,
        read_timeout=1,
    )
    # Bounded by attempts, not by a stopwatch (the suite asserts no timings).
    with pytest.raises(StoreUnavailable, match="after 4 attempts") as caught:
        store.put("x", b"y")
    assert "127.0.0.1" in caught.value.message
    assert caught.value.status == 503

    with pytest.raises(StoreUnavailable, match="after 1 attempt"):
        store.ping()


def test_slow_down_is_retried_then_succeeds() -> None:
    with ScriptedS3([SLOW_DOWN, Reply.error(500, "InternalError")]) as fake:
        info = fake.store(max_attempts=3).put("a/b", b"payload")
    assert info.size == 7
    assert [seen.method for seen in fake.seen] == ["PUT"] * 3
    last = fake.seen[-1]
    assert last.path == "/scripted-bucket/a/b"
    assert last.body == b"payload"
    md5 = base64.b64encode(hashlib.md5(b"payload").digest()).decode()
    assert last.headers["Content-MD5"] == md5
    assert last.headers["x-amz-meta-sha256"] == hashlib.sha256(b"payload").hexdigest()


def test_persistent_slow_down_gives_up() -> None:
    with (
        ScriptedS3([], default=SLOW_DOWN) as fake,
        pytest.raises(StoreUnavailable, match="SlowDown") as caught,
    ):
        fake.store(max_attempts=3).get("a/b")
    assert len(fake.seen) == 3
    assert "after 3 attempts" in caught.value.message


def test_dropped_connections_are_retried() -> None:
    with ScriptedS3([DROP, DROP]) as fake:
        fake.store(max_attempts=3).delete("a/b")
    assert len(fake.seen) == 3


def test_refusals_are_not_retried() -> None:
    with (
        ScriptedS3([], default=Reply.error(403, "AccessDenied")) as fake,
        pytest.raises(StoreUnavailable, match=r"refused.*AccessDenied"),
    ):
        fake.store(max_attempts=5).put("a/b", b"x")
    assert len(fake.seen) == 1


def test_publish_sends_if_none_match_and_reads_412_as_taken() -> None:
    with ScriptedS3([Reply(200, {"ETag": '"1"'}), Reply.error(412, "PreconditionFailed")]) as fake:
        store = fake.store()
        assert store.publish("k", b"v") is True
        assert store.publish("k", b"v") is False
    assert [seen.headers.get("If-None-Match") for seen in fake.seen] == ["*", "*"]


@pytest.mark.parametrize(("stored", "won"), [(b"mine", True), (b"theirs", False)])
def test_publish_retried_into_412_checks_whose_object_it_is(stored: bytes, won: bool) -> None:
    # The first attempt's response is lost; the retry finds the key taken. The
    # stored sha256 tells whether that was our own first attempt.
    head = Reply(200, {"x-amz-meta-sha256": hashlib.sha256(stored).hexdigest(), "ETag": '"e"'})
    script = [DROP, Reply.error(412, "PreconditionFailed"), head]
    with ScriptedS3(script) as fake:
        assert fake.store().publish("k", b"mine") is won
    assert [seen.method for seen in fake.seen] == ["PUT", "PUT", "HEAD"]


def test_missing_credentials_are_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never ask 169.254.169.254
    with ScriptedS3([]) as fake:
        store = S3ObjectStore("gravix-test", endpoint_url=fake.endpoint_url, path_style=True)
        with pytest.raises(StoreUnavailable, match="credentials"):
            store.put("a", b"b")
    assert fake.seen == []


def test_backoff_is_full_jitter_and_capped() -> None:
    store = S3ObjectStore(
        "gravix-test",
        endpoint_url="http://127.0.0.1:9",
        access_key_id="x",
        secret_access_key="y",
        backoff_base=0.1,
        backoff_cap=0.5,
    )
    for attempt, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (10, 0.5)]:
        waits = [store._backoff(attempt) for _ in range(200)]
        assert all(0 <= w <= ceiling for w in waits)
        assert max(waits) > ceiling / 2  # jitter spreads over the range

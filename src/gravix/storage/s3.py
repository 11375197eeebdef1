"""The S3 object store: AWS S3, MinIO or any S3-compatible endpoint.

Layout: key ``a/b/c.gvx`` is the S3 object ``<prefix>/a/b/c.gvx`` in the
bucket (just ``a/b/c.gvx`` when the prefix is empty). Each object is written
in one ``PutObject`` with

* ``Content-MD5``, so the server refuses a body damaged in transit, and
* the user metadata ``x-amz-meta-sha256`` (hex), which :meth:`head` returns so
  an uploader can verify what landed. Objects written by other tools have no
  such metadata; their ``sha256`` is None.

``publish`` is a conditional write (``If-None-Match: *``), supported by AWS S3
(since 2024-08), MinIO and moto 5: the server refuses it with 412 when the key
exists, so two writers can never both win.

Retries: botocore's own retries are switched off and this module retries
instead, ``max_attempts`` times in all, on transient failures only
(connection errors, timeouts, 5xx, 429, ``SlowDown`` and other throttling),
sleeping a random time in ``[0, min(backoff_cap, backoff_base * 2**n))``
between attempts ("full jitter"). The longest one call can take is therefore
``max_attempts * (connect_timeout + read_timeout)`` plus at most
``(max_attempts - 1) * backoff_cap`` of sleep. After that it raises
StoreUnavailable naming the last cause. ``ping`` makes a single attempt.

boto3 is imported only when an S3ObjectStore is made; it is the ``s3`` extra.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import random
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from gravix.errors import ConfigError
from gravix.storage.base import InvalidKey, ObjectInfo, ObjectNotFound, StoreUnavailable
from gravix.storage.keys import validate_key, validate_prefix

T = TypeVar("T")

SHA256_METADATA = "sha256"  # sent as the header x-amz-meta-sha256

# Error codes worth another try, whatever their HTTP status.
_TRANSIENT_CODES = frozenset(
    {
        "BadDigest",  # the body was damaged on the way: send it again
        "ConditionalRequestConflict",
        "InternalError",
        "OperationAborted",
        "RequestLimitExceeded",
        "RequestTimeout",
        "ServiceUnavailable",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",
    }
)
_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})

# S3 bucket naming rules (the subset every S3-compatible server accepts).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")

MISSING_BOTO3 = "the S3 object store needs boto3: run `pip install gravix[s3]`"


_shared_loader: Any = None


def _botocore_session() -> Any:
    """A fresh botocore session that shares one data loader with the others.

    Each store gets its own session (so credentials are resolved per store),
    but parsing botocore's S3 model anew costs ~0.1 s per session; the loader
    only caches those read-only models.
    """
    global _shared_loader
    import botocore.session

    session = botocore.session.Session()
    if _shared_loader is None:
        _shared_loader = session.get_component("data_loader")
    else:
        session.register_component("data_loader", _shared_loader)
    return session


def _error_code(e: Any) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


def _error_status(e: Any) -> int:
    return int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def _describe(e: BaseException) -> str:
    response = getattr(e, "response", None)
    if isinstance(response, dict):
        error = response.get("Error", {})
        status = _error_status(e)
        return f"HTTP {status} {error.get('Code', '')}: {error.get('Message', '')}".strip()
    return f"{type(e).__name__}: {e}"


class S3ObjectStore:
    """An :class:`~gravix.storage.base.ObjectStore` in an S3 bucket (see the module docstring).

    Credentials not given here come from boto3's usual chain
    (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``~/.aws``, instance
    roles). ``path_style=True`` addresses ``<endpoint>/<bucket>/<key>``, which
    MinIO and most self-hosted servers want.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        path_style: bool = False,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        max_attempts: int = 5,
        connect_timeout: float = 5,
        read_timeout: float = 30,
        backoff_base: float = 0.2,
        backoff_cap: float = 5.0,
        page_size: int = 1000,
    ) -> None:
        try:
            import boto3
            import botocore.exceptions
            from botocore.config import Config
        except ImportError as e:
            raise ConfigError(MISSING_BOTO3) from e

        if not _BUCKET.fullmatch(bucket or ""):
            raise ConfigError(f"{bucket!r} is not a valid S3 bucket name")
        prefix = prefix.strip("/")
        if prefix:
            try:
                validate_key(prefix)
            except InvalidKey as e:
                raise ConfigError(f"invalid S3 key prefix: {e.message}") from e
        if (access_key_id is None) != (secret_access_key is None):
            raise ConfigError("give both an S3 access key id and a secret access key, or neither")
        if max_attempts < 1:
            raise ConfigError("max_attempts must be at least 1")
        if not 1 <= page_size <= 1000:
            raise ConfigError("page_size must be between 1 and 1000")

        self.bucket = bucket
        self.prefix = prefix
        self.endpoint_url = endpoint_url
        self.url = f"s3://{bucket}/{prefix}"
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.page_size = page_size
        self._key_prefix = f"{prefix}/" if prefix else ""

        exc = botocore.exceptions
        self._client_error: type[Exception] = exc.ClientError
        self._transient_errors: tuple[type[Exception], ...] = (
            exc.ConnectionError,  # refused, DNS, connect timeout, TLS
            exc.HTTPClientError,  # read timeout, connection closed, broken stream
            exc.IncompleteReadError,
            exc.ChecksumError,
        )
        self._credential_errors: tuple[type[Exception], ...] = (
            exc.NoCredentialsError,
            exc.PartialCredentialsError,
            exc.CredentialRetrievalError,
        )

        config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            # One attempt per botocore call: the retry loop here owns retrying.
            retries={"total_max_attempts": 1, "mode": "standard"},
            s3={"addressing_style": "path" if path_style else "auto"},
            # Integrity comes from Content-MD5; botocore's newer default CRC
            # trailers trip some S3-compatible servers.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            user_agent_extra="gravix",
        )
        try:
            session = boto3.session.Session(
                botocore_session=_botocore_session(),
                aws_access_key_id=access_key_id,
                aws_secret_access_key=secret_access_key,
                aws_session_token=session_token,
                region_name=region,
            )
            self._client: Any = session.client("s3", endpoint_url=endpoint_url, config=config)
        except (exc.BotoCoreError, ValueError) as e:  # bad profile, region, endpoint URL...
            raise ConfigError(f"cannot set up the S3 client for {self.url}: {e}") from e

    def __repr__(self) -> str:
        where = f", endpoint_url={self.endpoint_url!r}" if self.endpoint_url else ""
        return f"S3ObjectStore({self.url!r}{where})"

    # --- public API -------------------------------------------------------

    def put(self, key: str, data: bytes) -> ObjectInfo:
        full = self._full(key)
        sha = hashlib.sha256(data).hexdigest()
        call = functools.partial(self._client.put_object, **self._put_args(full, data, sha))
        try:
            self._call("put", key, call)
        except self._client_error as e:
            raise self._refused("put", key, e) from e
        return ObjectInfo(key=key, size=len(data), sha256=sha)

    def put_file(self, key: str, path: Path) -> ObjectInfo:
        """One ``PutObject`` whose body is read from the file (reopened for each retry)."""
        full = self._full(key)
        sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                sha.update(block)
                md5.update(block)

        def send() -> Any:
            with open(path, "rb") as body:
                args = self._put_args(full, b"", sha.hexdigest(), md5.digest())
                return self._client.put_object(**{**args, "Body": body})

        try:
            self._call("put", key, send)
        except self._client_error as e:
            raise self._refused("put", key, e) from e
        return ObjectInfo(key=key, size=path.stat().st_size, sha256=sha.hexdigest())

    def get(self, key: str) -> bytes:
        full = self._full(key)

        def fetch() -> bytes:
            response = self._client.get_object(Bucket=self.bucket, Key=full)
            return bytes(response["Body"].read())

        try:
            return self._call("get", key, fetch)
        except self._client_error as e:
            if _error_code(e) in _NOT_FOUND_CODES:
                raise ObjectNotFound(f"no object {key!r} in {self.url}") from e
            raise self._refused("get", key, e) from e

    def head(self, key: str) -> ObjectInfo:
        """Size, and the sha256 recorded at upload (None for objects from other tools)."""
        full = self._full(key)
        call = functools.partial(self._client.head_object, Bucket=self.bucket, Key=full)
        try:
            response = self._call("head", key, call)
        except self._client_error as e:
            if _error_code(e) in _NOT_FOUND_CODES or _error_status(e) == 404:
                raise ObjectNotFound(f"no object {key!r} in {self.url}") from e
            raise self._refused("head", key, e) from e
        sha = response.get("Metadata", {}).get(SHA256_METADATA)
        return ObjectInfo(key=key, size=int(response["ContentLength"]), sha256=sha)

    def exists(self, key: str) -> bool:
        try:
            self.head(key)
        except ObjectNotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        full = self._full(key)
        call = functools.partial(self._client.delete_object, Bucket=self.bucket, Key=full)
        try:
            self._call("delete", key, call)
        except self._client_error as e:
            if _error_code(e) in _NOT_FOUND_CODES:
                return
            raise self._refused("delete", key, e) from e

    def publish(self, key: str, data: bytes) -> bool:
        """``PutObject`` with ``If-None-Match: *``; False when the server answers 412.

        When an earlier attempt of this same call failed on the way back (its
        write may have landed) and a retry then meets 412, the stored object's
        sha256 is compared with ``data``'s: equal means this call wrote it.
        """
        full = self._full(key)
        sha = hashlib.sha256(data).hexdigest()
        args = self._put_args(full, data, sha)
        attempts = 0

        def send() -> Any:
            nonlocal attempts
            attempts += 1
            return self._client.put_object(IfNoneMatch="*", **args)

        try:
            self._call("publish", key, send)
        except self._client_error as e:
            if _error_status(e) == 412 or _error_code(e) == "PreconditionFailed":
                if attempts > 1:
                    return self.head(key).sha256 == sha
                return False
            raise self._refused("publish", key, e) from e
        return True

    def ping(self) -> None:
        """One ``HeadBucket``, no retries: raise StoreUnavailable unless it succeeds."""
        call = functools.partial(self._client.head_bucket, Bucket=self.bucket)
        try:
            self._call("ping", "", call, attempts=1)
        except self._client_error as e:
            raise self._refused("ping", "", e) from e

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix``, in key order; ``sha256`` is None.

        Objects under the store's prefix whose names are not valid keys (put
        there by other tools) are not listed.
        """
        validate_prefix(prefix)
        return self._list(prefix)

    # --- helpers ----------------------------------------------------------

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        args: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": self._key_prefix + prefix,
            "MaxKeys": self.page_size,
        }
        while True:
            call = functools.partial(self._client.list_objects_v2, **args)
            try:
                page = self._call("list", prefix, call)
            except self._client_error as e:
                raise self._refused("list", prefix, e) from e
            for item in page.get("Contents", []):
                key = str(item["Key"])[len(self._key_prefix) :]
                try:
                    validate_key(key)
                except InvalidKey:
                    continue
                yield ObjectInfo(key=key, size=int(item["Size"]), sha256=None)
            if not page.get("IsTruncated"):
                return
            args["ContinuationToken"] = page["NextContinuationToken"]

    def _full(self, key: str) -> str:
        return self._key_prefix + validate_key(key)

    def _put_args(
        self, full: str, data: bytes, sha: str, md5: bytes | None = None
    ) -> dict[str, Any]:
        if md5 is None:
            md5 = hashlib.md5(data, usedforsecurity=False).digest()
        return {
            "Bucket": self.bucket,
            "Key": full,
            "Body": data,
            "ContentMD5": base64.b64encode(md5).decode("ascii"),
            "ContentType": "application/octet-stream",
            "Metadata": {SHA256_METADATA: sha},
        }

    def _call(self, op: str, key: str, fn: Callable[[], T], *, attempts: int | None = None) -> T:
        """Run ``fn``, retrying transient failures (see the module docstring).

        A ClientError that is not transient is re-raised for the caller to
        interpret (404, 412, 403...).
        """
        limit = attempts or self.max_attempts
        last: BaseException | None = None
        for attempt in range(1, limit + 1):
            try:
                return fn()
            except self._credential_errors as e:
                raise StoreUnavailable(
                    f"S3 {op} on {self._where(key)}: no usable credentials ({e}); give an "
                    "access key id and secret access key, or set AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY"
                ) from e
            except self._transient_errors as e:
                last = e
            except self._client_error as e:
                if not self._is_transient(e):
                    raise
                last = e
            if attempt < limit:
                time.sleep(self._backoff(attempt))
        tries = f"{limit} attempts" if limit > 1 else "1 attempt"
        raise StoreUnavailable(
            f"S3 {op} on {self._where(key)} failed after {tries}: {_describe(last)}"
            if last is not None
            else f"S3 {op} on {self._where(key)} failed"
        ) from last

    @staticmethod
    def _is_transient(e: Exception) -> bool:
        status = _error_status(e)
        return status >= 500 or status == 429 or _error_code(e) in _TRANSIENT_CODES

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**(attempt-1)))."""
        return random.uniform(0, min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1)))

    def _refused(self, op: str, key: str, e: Exception) -> StoreUnavailable:
        return StoreUnavailable(f"S3 {op} on {self._where(key)} was refused: {_describe(e)}")

    def _where(self, key: str) -> str:
        where = f"s3://{self.bucket}/{self._key_prefix}{key}"
        return f"{where} at {self.endpoint_url}" if self.endpoint_url else where

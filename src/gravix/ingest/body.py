"""Reading request bodies: size limits, decompression and media types.

The size limit applies to the *decompressed* body, and decompression stops as
soon as the limit is passed, so a decompression bomb costs at most
``limit + 1`` bytes of memory and gets 413.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

import zstandard

from gravix.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]

SUPPORTED_MEDIA_TYPES = ("application/json", "application/x-ndjson", "application/x-protobuf")
_MEDIA_ALIASES = {
    "application/jsonl": "application/x-ndjson",
    "application/ndjson": "application/x-ndjson",
    "application/protobuf": "application/x-protobuf",
    "application/octet-stream+protobuf": "application/x-protobuf",
}


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body is larger than {limit} bytes (after decompression)")


async def read_body(receive: Receive, declared_length: int | None, limit: int) -> bytes:
    """The raw (possibly compressed) body, refusing more than ``limit`` bytes."""
    if declared_length is not None and declared_length > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequest("client disconnected before the body was complete")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def read_request_body(
    receive: Receive, headers: Mapping[str, str], limit: int
) -> tuple[bytes, str]:
    """The decompressed body and its bare media type, within ``limit`` bytes."""
    kind = media_type(headers.get("content-type"))
    declared = headers.get("content-length")
    raw = await read_body(
        receive, int(declared) if declared and declared.isdigit() else None, limit
    )
    return decompress(raw, headers.get("content-encoding"), limit), kind


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo ``Content-Encoding`` (identity, gzip, zstd) within ``limit`` bytes."""
    encoding = (encoding or "identity").strip().lower()
    if encoding in ("identity", ""):
        return body
    if encoding in ("gzip", "x-gzip"):
        return _gunzip(body, limit)
    if encoding == "zstd":
        return _unzstd(body, limit)
    raise UnsupportedMediaType(
        f"Content-Encoding {encoding!r} is not supported; use gzip, zstd or identity",
        field="Content-Encoding",
        code="unsupported_encoding",
    )


def _gunzip(body: bytes, limit: int) -> bytes:
    out = bytearray()
    data = body
    try:
        while data:
            d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            out += d.decompress(data, limit + 1 - len(out))
            if len(out) > limit or d.unconsumed_tail:
                raise _too_large(limit)
            if not d.eof:
                raise BadRequest("gzip body is truncated", code="malformed_body")
            data = d.unused_data  # concatenated gzip members are legal
    except zlib.error as e:
        raise BadRequest(f"gzip body cannot be decompressed: {e}", code="malformed_body") from e
    return bytes(out)


def _unzstd(body: bytes, limit: int) -> bytes:
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(
            io.BytesIO(body), read_across_frames=True
        )
        out = reader.read(limit + 1)
    except zstandard.ZstdError as e:
        raise BadRequest(f"zstd body cannot be decompressed: {e}", code="malformed_body") from e
    if len(out) > limit:
        raise _too_large(limit)
    return out


def media_type(content_type: str | None) -> str:
    """The bare media type of ``Content-Type``, mapped to one we support or 415."""
    bare = (content_type or "application/json").split(";", 1)[0].strip().lower()
    bare = _MEDIA_ALIASES.get(bare, bare)
    if bare not in SUPPORTED_MEDIA_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type {bare!r} is not supported; use {', '.join(SUPPORTED_MEDIA_TYPES)}",
            field="Content-Type",
        )
    return bare

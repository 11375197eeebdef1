"""One error hierarchy and one JSON error shape for every HTTP surface.

Every error a client sees is rendered by :func:`error_body` as::

    {"error": {"code": "invalid_fact",          # stable, machine-readable
               "message": "2 of 3 facts are invalid",
               "field": "status",               # the first offending field, or null
               "request_id": "6f1c...",
               "items": [                       # only for batch validation errors
                   {"index": 0, "field": "status", "message": "..."}]}}

``tests/test_error_shape.py`` pins this shape.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from typing import Any

MAX_ITEM_ERRORS = 100
# A client's X-Request-ID is echoed when it looks like an id, never when it could
# smuggle anything into a log line or a header.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id(given: str | None) -> str:
    """The client's X-Request-ID if it is a sane id, else a new random one.

    Not uuid4: its os.urandom call releases the GIL on every request, which
    wakes the spool writer early and shrinks group commits (bench/README.md).
    ``random`` is reseeded in each forked worker.
    """
    if given and _REQUEST_ID.match(given):
        return given
    return f"{random.getrandbits(128):032x}"


@dataclass(frozen=True, slots=True)
class ItemError:
    """One invalid item of a batch: its position, the field and why."""

    index: int
    field: str | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "message": self.message}


class GravixError(Exception):
    """Base of every error Gravix raises on purpose."""

    status: int = 500
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        code: str | None = None,
        items: list[ItemError] | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code
        self.items = items or []
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, int(self.retry_after)))}


class BadRequest(GravixError):
    status = 400
    code = "bad_request"


class InvalidFacts(BadRequest):
    """A batch with at least one invalid item; the whole batch is rejected."""

    code = "invalid_fact"


class Unauthorized(GravixError):
    status = 401
    code = "unauthorized"


class Forbidden(GravixError):
    status = 403
    code = "forbidden"


class NotFound(GravixError):
    status = 404
    code = "not_found"


class MethodNotAllowed(GravixError):
    status = 405
    code = "method_not_allowed"


class PayloadTooLarge(GravixError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(GravixError):
    status = 415
    code = "unsupported_media_type"


class RequestTimeout(GravixError):
    """A request whose headers or body did not arrive in time; the connection is closed."""

    status = 408
    code = "request_timeout"


class Misdirected(GravixError):
    """A request this node does not take (facts sent to a ``role=api`` node)."""

    status = 421
    code = "misdirected"


class TooManyRequests(GravixError):
    status = 429
    code = "rate_limited"


class ServiceUnavailable(GravixError):
    status = 503
    code = "unavailable"


class DiskFull(ServiceUnavailable):
    """The data directory's file system has no room for the write (ENOSPC, SQLite full)."""

    code = "disk_full"


class ConfigError(GravixError):
    """Bad configuration: the CLI prints the message and exits non-zero."""

    code = "config_error"


def error_body(err: GravixError, request_id: str | None) -> dict[str, Any]:
    """The one JSON error shape (see the module docstring)."""
    body: dict[str, Any] = {
        "code": err.code,
        "message": err.message,
        "field": err.field,
        "request_id": request_id,
    }
    if err.items:
        body["items"] = [item.as_dict() for item in err.items[:MAX_ITEM_ERRORS]]
    return {"error": body}


def describe_error_body(body: bytes) -> str:
    """One line from a response body in the error shape, for Gravix's own senders.

    ``code (field F): message; first: item I F: message``, or the body's first
    200 characters when it is not in the shape.
    """
    try:
        error = json.loads(body)["error"]
        text = f"{error['code']}: {error['message']}"
        if error.get("field"):
            text = f"{error['code']} (field {error['field']}): {error['message']}"
        items = error.get("items") or []
        if items:
            first = items[0]
            text += f"; first: item {first.get('index')} {first.get('field')}: "
            text += str(first.get("message"))
        return text
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return body[:200].decode("utf-8", "replace")

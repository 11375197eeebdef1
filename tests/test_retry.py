"""Retry-After as Gravix's senders (loadgen, import-logs, gravix.client) read it."""

from __future__ import annotations

from gravix.retry import retry_after_seconds


def test_retry_after_parsing() -> None:
    assert retry_after_seconds("3", 1.0, 10.0) == 3.0
    assert retry_after_seconds(" 2 ", 1.0, 10.0) == 2.0
    assert retry_after_seconds("300", 1.0, 10.0) == 10.0  # capped
    assert retry_after_seconds(None, 1.0, 10.0) == 1.0
    assert retry_after_seconds(None, 60.0, 10.0) == 10.0
    assert retry_after_seconds("soon", 2.0, 10.0) == 2.0
    assert retry_after_seconds("nan", 2.0, 10.0) == 2.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", 1.0, 10.0) == 0.05

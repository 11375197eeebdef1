"""Per-key token buckets: ``rate`` requests a second, bursts up to ``burst``."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from gravix.errors import TooManyRequests
from gravix.ingest.metrics import RATE_LIMITED


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """In-process limiter; each worker process limits its own share."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, _Bucket] = {}

    def check(self, key_id: str, now: float | None = None) -> None:
        """Take one token for ``key_id`` or raise 429 with the wait in Retry-After."""
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(key_id)
        if bucket is None:
            bucket = self._buckets[key_id] = _Bucket(float(self.burst), now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return
        RATE_LIMITED.inc()
        wait = math.ceil((1.0 - bucket.tokens) / self.rate)
        raise TooManyRequests(
            f"rate limit of {self.rate:g} requests/s per key exceeded; retry after {wait} s",
            retry_after=wait,
        )

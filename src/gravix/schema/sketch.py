"""The latency sketch: log-spaced buckets with a 1% relative-error bound.

A sketch is a map ``key -> count`` (DDSketch's logarithmic mapping). A
latency ``x`` in milliseconds goes to key ``k = ceil(ln(x) / ln(GAMMA))``,
the bucket ``(GAMMA**(k-1), GAMMA**k]``, where ``GAMMA = (1 + ALPHA) /
(1 - ALPHA)``. The bucket's value is ``2 * GAMMA**k / (GAMMA + 1)``, which is
within ``ALPHA`` (1%) of every latency in the bucket, relative to that
latency. Latencies below ``MIN_MS`` (one microsecond) go to ``ZERO_KEY``,
whose value is 0. Sketches merge by adding counts key by key, so a sketch of
any set of minutes is exact about which bucket each latency fell in.

**Percentile definition** (nearest rank): the q-quantile of n latencies is
the value of rank ``r = ceil(q * n)`` (at least 1) in ascending order, so
p50 of [1, 2, 3, 4] is 2 and p99 of 100 values is the 99th smallest. ``q * n``
is rounded to 6 decimals before the ceiling, so that float noise such as
``0.07 * 100 = 7.000000000000001`` does not move the rank. The sketch's
quantile is the value of the bucket holding the rank-r latency, hence within
ALPHA of the exact nearest-rank value. Keys 1 ms apart are about 35 keys
apart, and 1 microsecond to the 1 hour latency cap spans about 1,100 keys,
so a sketch holds at most that many entries and usually a few dozen.

:func:`key_sql` is the same mapping as SQL, for the engines that build
sketches; keep both in step (tests compare them).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Final

ALPHA: Final = 0.01
GAMMA: Final = (1 + ALPHA) / (1 - ALPHA)
LN_GAMMA: Final = math.log(GAMMA)
MIN_MS: Final = 0.001
ZERO_KEY: Final = -32768

Sketch = Mapping[int, int]


def key(latency_ms: float) -> int:
    """The sketch key of one latency."""
    if latency_ms < MIN_MS:
        return ZERO_KEY
    return math.ceil(math.log(latency_ms) / LN_GAMMA)


def key_sql(column: str) -> str:
    """A SQL expression (DuckDB, Spark, Trino) computing :func:`key` of ``column``."""
    return (
        f"CASE WHEN {column} < {MIN_MS!r} THEN {ZERO_KEY} "
        f"ELSE CAST(ceil(ln({column}) / {LN_GAMMA!r}) AS INTEGER) END"
    )


def value(k: int) -> float:
    """The value a key stands for (within ALPHA of every latency in its bucket)."""
    if k == ZERO_KEY:
        return 0.0
    return 2.0 * GAMMA**k / (GAMMA + 1.0)


def rank(q: float, n: int) -> int:
    """The 1-based nearest rank of quantile ``q`` among ``n`` values."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], not {q}")
    return max(1, math.ceil(round(q * n, 6)))


def build(latencies_ms: Iterable[float]) -> dict[int, int]:
    """The sketch of some latencies."""
    sketch: dict[int, int] = {}
    for latency in latencies_ms:
        k = key(latency)
        sketch[k] = sketch.get(k, 0) + 1
    return sketch


def merge(sketches: Iterable[Sketch]) -> dict[int, int]:
    """The sketch of the union of the sketches' latencies."""
    merged: dict[int, int] = {}
    for sketch in sketches:
        for k, count in sketch.items():
            merged[k] = merged.get(k, 0) + count
    return merged


def quantile(sketch: Sketch, q: float) -> float | None:
    """The nearest-rank q-quantile (see module docstring); None for an empty sketch."""
    total = sum(sketch.values())
    if total == 0:
        return None
    target = rank(q, total)
    seen = 0
    for k in sorted(sketch):
        seen += sketch[k]
        if seen >= target:
            return value(k)
    raise AssertionError("unreachable: counts add up to total")


def exact_quantile(latencies_ms: Iterable[float], q: float) -> float | None:
    """The exact nearest-rank q-quantile, for tests and benchmarks."""
    ordered = sorted(latencies_ms)
    if not ordered:
        return None
    return ordered[rank(q, len(ordered)) - 1]

"""The latency sketch: its definition, its bound, and SQL that agrees with Python."""

from __future__ import annotations

import math

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gravix.schema import sketch

latencies = st.lists(
    st.integers(min_value=0, max_value=3_600_000_000).map(lambda us: us / 1000),
    min_size=1,
    max_size=400,
)
quantiles = st.sampled_from([0.0, 0.01, 0.07, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0])


def test_nearest_rank_definition() -> None:
    assert sketch.exact_quantile([1, 2, 3, 4], 0.5) == 2
    assert sketch.exact_quantile([4, 3, 2, 1], 0.75) == 3
    assert sketch.exact_quantile(range(1, 101), 0.99) == 99
    assert sketch.exact_quantile(range(1, 101), 0.07) == 7  # 0.07 * 100 is 7.000000000000001
    assert sketch.exact_quantile([5], 0.0) == 5
    assert sketch.exact_quantile([], 0.5) is None
    with pytest.raises(ValueError):
        sketch.rank(1.5, 10)


def test_every_value_is_within_alpha_of_its_bucket_value() -> None:
    for x in [0.001, 0.0015, 0.5, 1.0, 1.0202, 7.3, 99.99, 1234.5, 3_600_000.0]:
        estimate = sketch.value(sketch.key(x))
        assert abs(estimate - x) <= sketch.ALPHA * x * (1 + 1e-12)
    assert sketch.value(sketch.key(0.0)) == 0.0
    assert sketch.key(0.0) == sketch.ZERO_KEY


@given(latencies, quantiles)
@settings(max_examples=300, deadline=None)
def test_sketch_quantile_is_within_the_bound_of_the_exact_one(
    values: list[float], q: float
) -> None:
    exact = sketch.exact_quantile(values, q)
    estimate = sketch.quantile(sketch.build(values), q)
    assert exact is not None and estimate is not None
    assert abs(estimate - exact) <= sketch.ALPHA * exact * (1 + 1e-9)


@given(st.lists(latencies, min_size=1, max_size=8), quantiles)
@settings(max_examples=200, deadline=None)
def test_merged_sketches_equal_the_sketch_of_the_union(parts: list[list[float]], q: float) -> None:
    merged = sketch.merge(sketch.build(p) for p in parts)
    union = [x for p in parts for x in p]
    assert merged == sketch.build(union)
    exact = sketch.exact_quantile(union, q)
    estimate = sketch.quantile(merged, q)
    assert exact is not None and estimate is not None
    assert abs(estimate - exact) <= sketch.ALPHA * exact * (1 + 1e-9)


def test_sql_keys_equal_python_keys() -> None:
    values = [us / 1000 for us in range(0, 20_000)] + [
        round(1.0202**k * 1000) / 1000 for k in range(-300, 760)
    ]
    con = duckdb.connect()
    con.execute("CREATE TABLE v (x DOUBLE)")
    con.executemany("INSERT INTO v VALUES (?)", [[x] for x in values])
    rows = con.sql(f"SELECT x, {sketch.key_sql('x')} FROM v").fetchall()
    mismatches = [(x, k) for x, k in rows if k != sketch.key(x)]
    assert mismatches == []


def test_a_sketch_stays_small() -> None:
    assert sketch.key(3_600_000) - sketch.key(0.001) < 1200
    assert math.isclose(sketch.GAMMA, 1.0202, rel_tol=1e-4)

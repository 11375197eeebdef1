"""Plan -> SQL over metric rows (docs/data-model.md), and the tiers to read.

The SQL reads one relation (``metric_rows`` unless told), holding rows of any
tier and level in the metric row shape; :func:`segments` says which tier covers which part of the
range, so the engine loads the fewest rows. Percentiles come from merged
sketches (never averaged), with the nearest-rank definition of
:mod:`gravix.schema.sketch`. Latency metrics count only the requests with a
latency (``latency_count``); rows written before a latency could be unknown
have no such column (NULL in the relation), and every request of theirs had one.

One compiler serves every engine (issue #7): :func:`compile_sql` writes SQL
that DuckDB, Spark SQL and Trino all read the same way (``x - x % g``, not
``//``; ``power``; doubles written ``1.5E0`` so no engine reads a DECIMAL;
``FILTER (WHERE ...)``; every derived table named). The one thing they spell
differently, turning a map into key and value rows, is :func:`_explode`.

``slow_requests`` counts the sketch entries whose key is above the key of the
plan's ``slow_ms``: every request in them is slower than ``slow_ms``, and a
request slower than it is missed only when it shares slow_ms's bucket (less
than 2% over it: :mod:`gravix.schema.sketch`).
"""

from __future__ import annotations

from typing import Final, Literal

import pyarrow as pa

from gravix.query.model import METRICS, SERIES_DIMENSIONS, TIERS
from gravix.query.spec import Filter, Plan
from gravix.schema import layout, sketch

Segment = tuple[str, int, int]  # (tier, start ms, end ms)
Dialect = Literal["duckdb", "spark", "trino"]
DIALECTS: Final[tuple[Dialect, ...]] = ("duckdb", "spark", "trino")


def segments(plan: Plan) -> list[Segment]:
    """Cover [from, to) with the coarsest tiers that fit the grain, finest at the edges."""
    usable = [(name, ms) for name, ms in TIERS if plan.grain_ms is None or plan.grain_ms % ms == 0]
    return _cover(plan.from_ms, plan.to_ms, usable)


def level(plan: Plan) -> layout.Level:
    """The service level answers a query using no dimension but service, env and status."""
    used = {*plan.dimensions, *(f.dimension for f in plan.filters)} - {"status"}
    return "service" if used <= set(layout.SERVICE_LEVEL) else "series"


def result_schema(plan: Plan) -> pa.Schema:
    """The Arrow schema of every engine's answer: time, dimensions, metrics, in order."""
    fields = [pa.field("time", pa.int64())] if plan.grain_ms else []
    fields += [pa.field(d, pa.int16() if d == "status" else pa.string()) for d in plan.dimensions]
    fields += [
        pa.field(m, pa.int64() if METRICS[m].kind == "sum" else pa.float64()) for m in plan.metrics
    ]
    return pa.schema(fields)


def _cover(start: int, end: int, tiers: list[tuple[str, int]]) -> list[Segment]:
    if start >= end:
        return []
    (name, ms), finer = tiers[0], tiers[1:]
    first = -(-start // ms) * ms  # first boundary at or after start
    last = end // ms * ms
    if not finer:
        return [(name, start, end)]
    if first >= last:
        return _cover(start, end, finer)
    return [*_cover(start, first, finer), (name, first, last), *_cover(last, end, finer)]


def literal(value: str | int, dialect: Dialect = "duckdb") -> str:
    """A SQL literal of ``value`` (strings quoted by doubling ``'``)."""
    if isinstance(value, int):
        return str(value)
    if dialect == "spark":  # Spark reads a backslash in a string literal as an escape
        value = value.replace("\\", "\\\\")
    return "'" + value.replace("'", "''") + "'"


def double(value: float) -> str:
    """A DOUBLE literal in every dialect (``0.5`` alone is a DECIMAL in Spark and Trino)."""
    text = repr(float(value))
    return text.upper() if "e" in text else f"{text}E0"


def _filter_sql(f: Filter, column: str, dialect: Dialect) -> str:
    values = ", ".join(literal(v, dialect) for v in f.values)
    negate = f.op in ("neq", "not_in")
    return f"{column} {'NOT IN' if negate else 'IN'} ({values})"


def _value_sql(key: str) -> str:
    g = double(sketch.GAMMA)
    zero = sketch.ZERO_KEY
    return (
        f"(CASE WHEN {key} = {zero} THEN 0.0E0 ELSE 2.0E0 * power({g}, {key}) / ({g} + 1.0E0) END)"
    )


def compile_sql(plan: Plan, source: str = "metric_rows", dialect: Dialect = "duckdb") -> str:
    """One SQL statement answering the plan over ``source`` (a relation of metric rows).

    ``source`` is a table or view name or a parenthesized query; its columns
    are those of docs/data-model.md with ``bucket_ms`` (BIGINT epoch ms) in
    place of ``bucket``. The answer's columns and types are
    :func:`result_schema`'s in every dialect.
    """
    if dialect not in DIALECTS:
        raise ValueError(f"unknown SQL dialect {dialect!r}")
    slow = None
    dims = list(plan.dimensions)
    by_status = "status" in dims or any(f.dimension == "status" for f in plan.filters)
    g = plan.grain_ms
    time_sql = f"bucket_ms - bucket_ms % {g}" if g else "0"
    series_filters = [
        _filter_sql(f, f.dimension, dialect)
        for f in plan.filters
        if f.dimension in SERIES_DIMENSIONS
    ]
    status_filters = [
        _filter_sql(f, "status", dialect) for f in plan.filters if f.dimension == "status"
    ]
    keys = ["t", *dims]
    key_list = ", ".join(keys)
    bounds = [f"bucket_ms >= {plan.from_ms}", f"bucket_ms < {plan.to_ms}"]
    where = " AND ".join([*bounds, *series_filters])
    if by_status:
        # One row per status code: counts only (the spec refuses latency here).
        exploded = _explode(
            dialect,
            f"{time_sql} AS t, {', '.join(SERIES_DIMENSIONS)}",
            "status_counts",
            ("status", "n"),
            f"{source} AS src",
            where,
        )
        base = f"""
            SELECT x.*, n AS requests,
                   CASE WHEN status >= 500 THEN n ELSE 0 END AS errors,
                   CASE WHEN status >= 400 AND status < 500 THEN n ELSE 0 END AS client_errors
            FROM ({exploded}) AS x WHERE {" AND ".join(status_filters) or "TRUE"}"""
        totals = f"""
            SELECT {key_list}, sum(requests) AS requests, sum(errors) AS errors,
                   sum(client_errors) AS client_errors
            FROM base GROUP BY {key_list}"""
        percentiles = None
    else:
        base = f"SELECT {time_sql} AS t, src.* FROM {source} AS src WHERE {where}"
        totals = f"""
            SELECT {key_list}, sum(requests) AS requests, sum(errors) AS errors,
                   sum(client_errors) AS client_errors,
                   sum(coalesce(latency_count, requests)) AS latency_count,
                   sum(latency_sum_us) AS latency_sum_us, max(latency_max_us) AS latency_max_us
            FROM base GROUP BY {key_list}"""
        wanted = [METRICS[m] for m in plan.metrics if METRICS[m].kind == "percentile"]
        percentiles = _percentiles_sql(
            dialect, keys, [m.name for m in wanted], [m.quantile or 0 for m in wanted]
        )
        if "slow_requests" in plan.metrics and plan.slow_ms is not None:
            slow = _slow_sql(dialect, keys, sketch.key(plan.slow_ms))
    seconds = (plan.grain_ms or (plan.to_ms - plan.from_ms)) / 1000
    columns = [("time", "t")] if plan.grain_ms else []
    columns += [(d, d) for d in dims]
    for name in plan.metrics:
        columns.append((name, _metric_sql(name, seconds)))
    select = ", ".join(f"{expr} AS {name}" for name, expr in columns)
    join = ""
    if percentiles:
        join = f"LEFT JOIN percentiles p ON {_same_keys(keys, 'p')}"
    if slow:
        join += f" LEFT JOIN slow s ON {_same_keys(keys, 's')}"
    natural = [name for name, _ in columns if name in ("time", *dims)]
    asked = [f"{o.by} {'DESC' if o.desc else 'ASC'} NULLS LAST" for o in plan.order]
    # Time and dimensions break ties, so equal values come back in a stable order.
    order = ", ".join(
        [*asked, *(f"{n} NULLS FIRST" for n in natural if n not in {o.by for o in plan.order})]
    )
    limit = f"LIMIT {plan.limit}" if plan.limit else ""
    ctes = [f"base AS ({base})", f"totals AS ({totals})"]
    if percentiles:
        ctes.append(percentiles)
    if slow:
        ctes.append(slow)
    return f"""
        WITH {", ".join(ctes)}
        SELECT {select} FROM totals {join}
        ORDER BY {order or "1"} {limit}"""


def _same_keys(keys: list[str], alias: str) -> str:
    """Each group key of ``totals`` equal to ``alias``'s, a null (a series without
    env or version) equal to a null: ``USING`` would match no null, and leave
    such a series without percentiles."""
    return " AND ".join(f"{k} IS NOT DISTINCT FROM {alias}.{_JOINED}{k}" for k in keys)


def _joined_keys(keys: list[str]) -> str:
    """The group keys under the names :func:`_same_keys` joins on."""
    return ", ".join(f"{k} AS {_JOINED}{k}" for k in keys)


def _percentiles_sql(
    dialect: Dialect, keys: list[str], names: list[str], quantiles: list[float]
) -> str | None:
    if not names:
        return None
    key_list = ", ".join(keys)
    # q is a DECIMAL literal on purpose: q * total is then exact in every engine.
    picks = ", ".join(
        f"min(k) FILTER (WHERE seen >= greatest(1, ceil(round({q!r} * total, 6)))) AS k_{name}"
        for name, q in zip(names, quantiles, strict=True)
    )
    return f"""percentiles AS (
        SELECT {_joined_keys(keys)}, {picks}
        FROM (
            SELECT {key_list}, k,
                   -- One partitioning and order for both sums: one sort, not two.
                   sum(n) OVER (PARTITION BY {key_list} ORDER BY k
                                ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS seen,
                   sum(n) OVER (PARTITION BY {key_list} ORDER BY k
                                ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
                       AS total
            FROM (
                SELECT {key_list}, k, sum(n) AS n
                FROM ({_explode(dialect, key_list, "latency_sketch", ("k", "n"), "base", "TRUE")})
                    AS sketch_rows
                GROUP BY {key_list}, k
            ) AS merged
        ) AS ranked
        GROUP BY {key_list}
    )"""


def _slow_sql(dialect: Dialect, keys: list[str], above: int) -> str:
    """Per group, the latencies whose sketch key is above ``above`` (module docstring)."""
    key_list = ", ".join(keys)
    exploded = _explode(dialect, key_list, "latency_sketch", ("k", "n"), "base", "TRUE")
    return f"""slow AS (
        SELECT {_joined_keys(keys)}, sum(n) AS n_slow
        FROM ({exploded}) AS sketch_rows
        WHERE k > {above}
        GROUP BY {key_list}
    )"""


def _explode(
    dialect: Dialect,
    columns: str,
    map_column: str,
    names: tuple[str, str],
    source: str,
    where: str,
) -> str:
    """``SELECT columns, key, value FROM source WHERE where``, one row per map entry.

    The only SQL the dialects spell differently. A row whose map is empty or
    NULL yields no rows in all three.
    """
    key, value = names
    if dialect == "duckdb":
        return (
            f"SELECT {columns}, unnest(map_keys({map_column})) AS {key}, "
            f"unnest(map_values({map_column})) AS {value} FROM {source} WHERE {where}"
        )
    if dialect == "spark":
        return (
            f"SELECT {columns}, explode({map_column}) AS ({key}, {value}) "
            f"FROM {source} WHERE {where}"
        )
    # The casts change nothing in Trino; they give the columns a declared type
    # for readers that check the SQL without the server (tests/query/test_trino_sql.py).
    key_type, value_type = _MAP_TYPES[map_column]
    return (
        f"SELECT {columns}, CAST(entry_key AS {key_type}) AS {key}, "
        f"CAST(entry_value AS {value_type}) AS {value} FROM {source} "
        f"CROSS JOIN UNNEST({map_column}) AS entry (entry_key, entry_value) WHERE {where}"
    )


# The prefix of the group keys of the percentiles and slow requests, joined to ``totals``.
_JOINED: Final = "j_"
# Key and value types of the metric rows' maps (docs/data-model.md).
_MAP_TYPES: Final = {
    "status_counts": ("SMALLINT", "BIGINT"),
    "latency_sketch": ("INTEGER", "BIGINT"),
}


def _metric_sql(name: str, seconds: float) -> str:
    metric = METRICS[name]
    if name == "slow_requests":
        return "CAST(coalesce(s.n_slow, 0) AS BIGINT)"
    if metric.kind == "sum":
        return f"CAST({name} AS BIGINT)"
    if name == "error_rate":
        return "CAST(errors AS DOUBLE) / nullif(requests, 0)"
    if name == "client_error_rate":
        return "CAST(client_errors AS DOUBLE) / nullif(requests, 0)"
    if metric.kind == "percentile":
        return _value_sql(f"p.k_{name}")
    if name == "avg_latency":
        return "CAST(latency_sum_us AS DOUBLE) / nullif(latency_count, 0) / 1000.0E0"
    if name == "max_latency":
        return "CAST(latency_max_us AS DOUBLE) / 1000.0E0"
    if name == "throughput":
        return f"CAST(requests AS DOUBLE) / {double(seconds)}"
    raise AssertionError(f"no SQL for metric {name}")

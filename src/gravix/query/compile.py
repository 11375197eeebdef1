"""Plan -> SQL over metric rows (docs/data-model.md), and the tiers to read.

The SQL reads one relation (``metric_rows`` unless told), holding rows of any
tier and level in the metric row shape; :func:`segments` says which tier covers which part of the
range, so the engine loads the fewest rows. Percentiles come from merged
sketches (never averaged), with the nearest-rank definition of
:mod:`gravix.rollup.sketch`. Engine-specific SQL is kept to DuckDB's
``unnest`` of map keys and values, in :func:`_explode`.
"""

from __future__ import annotations

from gravix.query.model import METRICS, SERIES_DIMENSIONS, TIERS
from gravix.query.spec import Filter, Plan
from gravix.rollup import layout, sketch

Segment = tuple[str, int, int]  # (tier, start ms, end ms)


def segments(plan: Plan) -> list[Segment]:
    """Cover [from, to) with the coarsest tiers that fit the grain, finest at the edges."""
    usable = [(name, ms) for name, ms in TIERS if plan.grain_ms is None or plan.grain_ms % ms == 0]
    return _cover(plan.from_ms, plan.to_ms, usable)


def level(plan: Plan) -> layout.Level:
    """The service level answers a query using no dimension but service, env and status."""
    used = {*plan.dimensions, *(f.dimension for f in plan.filters)} - {"status"}
    return "service" if used <= set(layout.SERVICE_LEVEL) else "series"


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


def _literal(value: str | int) -> str:
    if isinstance(value, int):
        return str(value)
    return "'" + value.replace("'", "''") + "'"


def _filter_sql(f: Filter, column: str) -> str:
    values = ", ".join(_literal(v) for v in f.values)
    negate = f.op in ("neq", "not_in")
    return f"{column} {'NOT IN' if negate else 'IN'} ({values})"


def _value_sql(key: str) -> str:
    g = repr(sketch.GAMMA)
    zero = sketch.ZERO_KEY
    return f"(CASE WHEN {key} = {zero} THEN 0.0 ELSE 2.0 * pow({g}, {key}) / ({g} + 1.0) END)"


def compile_sql(plan: Plan, source: str = "metric_rows") -> str:
    """One SQL statement answering the plan over ``source`` (a relation of metric rows)."""
    dims = list(plan.dimensions)
    by_status = "status" in dims or any(f.dimension == "status" for f in plan.filters)
    time_sql = f"bucket_ms // {plan.grain_ms} * {plan.grain_ms}" if plan.grain_ms else "0"
    series_filters = [
        _filter_sql(f, f.dimension) for f in plan.filters if f.dimension in SERIES_DIMENSIONS
    ]
    status_filters = [_filter_sql(f, "status") for f in plan.filters if f.dimension == "status"]
    keys = ["t", *dims]
    key_list = ", ".join(keys)
    bounds = [f"bucket_ms >= {plan.from_ms}", f"bucket_ms < {plan.to_ms}"]
    where = " AND ".join([*bounds, *series_filters])
    if by_status:
        # One row per status code: counts only (the spec refuses latency here).
        exploded = f"""
            SELECT {time_sql} AS t, {", ".join(SERIES_DIMENSIONS)},
                   unnest(map_keys(status_counts)) AS status,
                   unnest(map_values(status_counts)) AS n
            FROM {source} WHERE {where}"""
        base = f"""
            SELECT *, n AS requests,
                   CASE WHEN status >= 500 THEN n ELSE 0 END AS errors,
                   CASE WHEN status >= 400 AND status < 500 THEN n ELSE 0 END AS client_errors
            FROM ({exploded}) WHERE {" AND ".join(status_filters) or "TRUE"}"""
        totals = f"""
            SELECT {key_list}, sum(requests) AS requests, sum(errors) AS errors,
                   sum(client_errors) AS client_errors
            FROM base GROUP BY {key_list}"""
        percentiles = None
    else:
        base = f"SELECT {time_sql} AS t, * FROM {source} WHERE {where}"
        totals = f"""
            SELECT {key_list}, sum(requests) AS requests, sum(errors) AS errors,
                   sum(client_errors) AS client_errors, sum(latency_sum_us) AS latency_sum_us,
                   max(latency_max_us) AS latency_max_us
            FROM base GROUP BY {key_list}"""
        wanted = [METRICS[m] for m in plan.metrics if METRICS[m].kind == "percentile"]
        percentiles = _percentiles_sql(
            keys, [m.name for m in wanted], [m.quantile or 0 for m in wanted]
        )
    seconds = (plan.grain_ms or (plan.to_ms - plan.from_ms)) / 1000
    columns = [("time", "t")] if plan.grain_ms else []
    columns += [(d, d) for d in dims]
    for name in plan.metrics:
        columns.append((name, _metric_sql(name, seconds)))
    select = ", ".join(f"{expr} AS {name}" for name, expr in columns)
    join = ""
    if percentiles:
        join = "LEFT JOIN percentiles p USING (" + key_list + ")"
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
    return f"""
        WITH {", ".join(ctes)}
        SELECT {select} FROM totals {join}
        ORDER BY {order or "1"} {limit}"""


def _percentiles_sql(keys: list[str], names: list[str], quantiles: list[float]) -> str | None:
    if not names:
        return None
    key_list = ", ".join(keys)
    picks = ", ".join(
        f"min(k) FILTER (WHERE seen >= greatest(1, ceil(round({q!r} * total, 6)))) AS k_{name}"
        for name, q in zip(names, quantiles, strict=True)
    )
    return f"""percentiles AS (
        SELECT {key_list}, {picks}
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
                FROM ({_explode(key_list)})
                GROUP BY {key_list}, k
            )
        )
        GROUP BY {key_list}
    )"""


def _explode(key_list: str) -> str:
    return f"""SELECT {key_list}, unnest(map_keys(latency_sketch)) AS k,
                      unnest(map_values(latency_sketch)) AS n FROM base"""


def _metric_sql(name: str, seconds: float) -> str:
    metric = METRICS[name]
    if metric.kind == "sum":
        return f"CAST({name} AS BIGINT)"
    if name == "error_rate":
        return "CAST(errors AS DOUBLE) / nullif(requests, 0)"
    if metric.kind == "percentile":
        return _value_sql(f"p.k_{name}")
    if name == "avg_latency":
        return "CAST(latency_sum_us AS DOUBLE) / nullif(requests, 0) / 1000.0"
    if name == "max_latency":
        return "CAST(latency_max_us AS DOUBLE) / 1000.0"
    if name == "throughput":
        return f"CAST(requests AS DOUBLE) / {seconds!r}"
    raise AssertionError(f"no SQL for metric {name}")

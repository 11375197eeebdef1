"""One query for many rules: what an evaluation reads, asked together.

A rule asks for a few metrics of some groups over a range (a :class:`Need`).
Rules that differ only in their metrics, or in the one service they watch,
are answered by one wider query: the union of their metrics, grouped by
``service`` too, filtered to the union of their services. Each rule then
keeps its service's rows and its own columns. A group's figures do not
depend on the other groups of a query (a p95 is the p95 of that group's
requests), so a rule reads from the wide query what it would have read alone.

A thousand rules over twenty services with three windows and two groupings
are a dozen queries instead of several hundred (``bench/README.md``, Alerts).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from gravix.query.spec import Filter, Query

SERVICE: Final = "service"
# A batch that holds a rule watching every service reads them all.
ALL: Final = "*"


@dataclass(frozen=True, slots=True)
class Need:
    """``metrics`` of each group of ``dims`` over [from_ms, to_ms) under ``filters``."""

    from_ms: int
    to_ms: int
    dims: tuple[str, ...]
    filters: tuple[Filter, ...]
    metrics: tuple[str, ...]
    slow_ms: float | None = None
    grain: str = "all"  # or "1m": a row per minute, its start first


Key = tuple[Any, ...]


def _one_service(filters: Sequence[Filter]) -> Filter | None:
    """The filter naming exactly one service, if that is the only service filter."""
    on_service = [f for f in filters if f.dimension == SERVICE]
    if len(on_service) == 1 and on_service[0].op in ("eq", "in") and len(on_service[0].values) == 1:
        return on_service[0]
    return None


def split(need: Need) -> tuple[Key, str | None]:
    """The batch ``need`` joins, and the service it keeps (:data:`ALL`: each;
    None: the batch is rules with this very range, groups and filters)."""
    shared = (need.from_ms, need.to_ms, need.slow_ms, need.grain)
    one = _one_service(need.filters)
    if one is not None:
        rest = [f for f in need.filters if f is not one]
        dims = tuple(sorted({*need.dims, SERVICE}))
        return ("by service", *shared, dims, msgspec.json.encode(rest)), str(one.values[0])
    if SERVICE in need.dims and not any(f.dimension == SERVICE for f in need.filters):
        dims = tuple(sorted(need.dims))
        return ("by service", *shared, dims, msgspec.json.encode(list(need.filters))), ALL
    return ("alone", *shared, need.dims, msgspec.json.encode(list(need.filters))), None


@dataclass
class _Wide:
    need: Need
    services: set[str] = field(default_factory=set)
    metrics: set[str] = field(default_factory=set)


class Batches:
    """The needs of one evaluation, gathered before any is read (:meth:`add`),
    then each read through its batch's query (:meth:`query`, :meth:`project`)."""

    def __init__(self) -> None:
        self._wide: dict[Key, _Wide] = {}
        # a query -> its rows by service (what project keeps of them for one service)
        self._by_service: dict[bytes, dict[str, list[Sequence[Any]]]] = {}
        # what the evaluator derives once per evaluation from rows many rules share
        self.memo: dict[Any, Any] = {}

    def add(self, need: Need) -> None:
        key, service = split(need)
        wide = self._wide.setdefault(key, _Wide(need))
        wide.metrics.update(need.metrics)
        if service is not None:
            wide.services.add(service)

    def query(self, need: Need) -> Query:
        """The query whose rows hold ``need``'s (its batch's, or its own if never added)."""
        key, service = split(need)
        wide = self._wide.get(key)
        if (
            wide is None
            or not set(need.metrics) <= wide.metrics
            or (service is not None and not {service, ALL} & wide.services)
        ):
            wide = _Wide(need, {service} if service is not None else set(), set(need.metrics))
        filters = [*msgspec.json.decode(key[-1], type=list[Filter])]
        if service is not None and ALL not in wide.services:
            filters.append(Filter(SERVICE, sorted(wide.services), "in"))
        return Query(
            metrics=sorted(wide.metrics), dimensions=list(key[-2]), filters=filters,
            from_=need.from_ms, to=need.to_ms, grain=need.grain, slow_ms=need.slow_ms,
        )  # fmt: skip

    def project(self, need: Need, query: Query, rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
        """``need``'s rows out of ``query``'s: the minute (with a grain), its groups,
        then its metrics in its order."""
        _, service = split(need)
        first = 0 if need.grain == "all" else 1  # the minute's column
        dims = query.dimensions
        at = list(range(first))
        at += [first + dims.index(d) for d in need.dims]
        at += [first + len(dims) + query.metrics.index(m) for m in need.metrics]
        if service is not None and service != ALL:
            rows = self._of_service(query, rows, first + dims.index(SERVICE)).get(service, [])
        return [[row[i] for i in at] for row in rows]

    def _of_service(
        self, query: Query, rows: Sequence[Sequence[Any]], column: int
    ) -> dict[str, list[Sequence[Any]]]:
        key = msgspec.json.encode(query)
        found = self._by_service.get(key)
        if found is None:
            found = defaultdict(list)
            for row in rows:
                found[str(row[column])].append(row)
            self._by_service[key] = found
        return found

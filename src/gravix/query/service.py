"""Answer a query for a tenant: plan, engine, pending facts, comparison, freshness.

A result is::

    {"columns": [{"name": "time", "type": "time"}, {"name": "service", ...}, ...],
     "rows": [[1763798400000, "checkout", 12, 0.01, 183.2], ...],
     "compare": {"offset": "1d", "rows": [...]}        # only with "compare"
     "meta": {"grain": "1h", "tiers": ["1m", "1h"], "level": "series", "from": ms, "to": ms,
              "requested": {"from": ms, "to": ms},
              "freshness": {"newest_fact_ms": ms | null, "last_rollup_ms": ms | null,
                            "pending_facts_included": true}}}

``from`` / ``to`` are the range counted: whole minutes (the finest bucket
stored), [from, to), from moved back to the start of its bucket with a
grain; ``requested`` is the range asked (see :mod:`gravix.query.spec`).

``pending_facts_included`` is false when the engine reads only the store
(Trino): facts not rolled up yet are then missing from the answer.

An answer is the pending facts of one moment and the tiers of the same
moment: after the engine has read the tiers, the service asks whether a
rollup pass replaced a minute file the pending scan checked its facts against
(:meth:`PendingFacts.changed`: the pass's newly folded facts would count
twice), and if so scans and reads again, up to :data:`ATTEMPTS` times in all
(``query_pending_rereads_total``). The last attempt answers anyway, logged as
a warning and counted in ``query_inexact_answers_total``: a pass publishing
during each of three attempts in a row.

Times are epoch milliseconds (UTC). Comparison rows are moved forward by the
offset, so they line up with the current rows they compare with.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
from prometheus_client import Counter

from gravix.query.compile import level, segments
from gravix.query.engine import DuckDBEngine, Engine
from gravix.query.model import METRICS
from gravix.query.pending import PendingFacts, PendingScan
from gravix.query.spec import Plan, Query, plan
from gravix.schema import layout
from gravix.storage.base import ObjectNotFound, ObjectStore

log = logging.getLogger(__name__)

# Pending scans and engine reads per answer, at most (module docstring).
ATTEMPTS: Final = 3
PENDING_REREADS = Counter(
    "query_pending_rereads_total",
    "Answers read again because a rollup pass published minutes the query's pending "
    "facts were checked against while the engine read the tiers.",
)
INEXACT_ANSWERS = Counter(
    "query_inexact_answers_total",
    "Answers given although a rollup pass published minutes during each attempt: "
    "facts that pass folded may count twice in them.",
)


class QueryService:
    """The semantic layer's entry point, shared by the HTTP API and tests."""

    def __init__(
        self,
        store: ObjectStore,
        spool_dir: Path | None = None,
        engine: Engine | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        """``cache_dir``: where a remote store's objects are copied to be read (the
        default engine's tier files, and the archive parts pending facts are checked in)."""
        self.store = store
        self.engine = engine or DuckDBEngine(store, cache_dir=cache_dir)
        # Its own folder: the engine's cache evicts only what it copied itself.
        self.pending = PendingFacts(store, spool_dir, cache_dir and cache_dir / "pending")
        # (tenant, level) -> the pending scan every query of a moment reads (one_moment)
        self._moment = threading.local()

    @contextmanager
    def one_moment(self) -> Iterator[None]:
        """Queries this thread runs inside read the pending facts as the first of
        them found them: one scan per tenant and level, not one per query (facts
        keep arriving in an open segment, which a scan would read again each
        time). What the block answers is of one moment; facts accepted during it
        count from the next. A rollup pass publishing meanwhile still makes a
        query scan again (:meth:`_read`)."""
        self._moment.scans = {}
        try:
            yield
        finally:
            self._moment.scans = None

    def run(self, tenant: str, query: Query, now_ms: int | None = None) -> dict[str, Any]:
        now = int(time.time() * 1000) if now_ms is None else now_ms
        p = plan(query, now)
        table, earlier, seen = self._read(tenant, p)
        result: dict[str, Any] = {
            "columns": _columns(p),
            "rows": _rows(table),
        }
        if p.compare_ms is not None and earlier is not None:
            rows = _rows(earlier)
            if p.grain_ms is not None:
                for row in rows:
                    row[0] += p.compare_ms
            result["compare"] = {"offset": query.compare, "offset_ms": p.compare_ms, "rows": rows}
        state = self.rollup_state(tenant)
        newest = max(
            (n for n in (state.get("newest_fact_ms"), seen.newest) if n is not None),
            default=None,
        )
        result["meta"] = {
            "grain": p.grain,
            "tiers": sorted({s[0] for s in segments(p)}),
            "level": level(p),
            "from": p.from_ms,
            "to": p.to_ms,
            "requested": {"from": p.requested[0], "to": p.requested[1]},
            "freshness": {
                "newest_fact_ms": newest,
                "last_rollup_ms": state.get("last_success_ms"),
                "pending_facts_included": self.engine.includes_pending,
            },
        }
        return result

    def _read(self, tenant: str, p: Plan) -> tuple[pa.Table, pa.Table | None, PendingScan]:
        """The engine's answers to ``p`` (and to its comparison) with the pending rows
        of the same moment (module docstring), and the pending scan used."""
        lvl = level(p)
        for attempt in range(1, ATTEMPTS + 1):
            # An engine that cannot see this node's pending rows (Trino) is not
            # handed them, and the answer says so.
            included = self.engine.includes_pending
            pinned: dict[tuple[str, str], PendingScan] | None = getattr(self._moment, "scans", None)
            held = pinned.get((tenant, lvl)) if pinned is not None else None
            # The moment's scan at the other level: the same facts (PendingFacts.scan).
            like = next(
                (s for (t, _), s in (pinned or {}).items() if t == tenant and s is not None),
                None,
            )
            seen = (
                held
                if held is not None
                else (
                    self.pending.scan(tenant, lvl, like)
                    if included
                    else PendingScan(tenant, lvl, None, None)
                )
            )
            if pinned is not None:
                pinned[(tenant, lvl)] = seen
            table = self.engine.run(tenant, p, seen.rows)
            earlier = None
            if p.compare_ms is not None:
                earlier = self.engine.run(tenant, p.shifted(p.compare_ms), seen.rows)
            if not self.pending.changed(seen):
                break
            if pinned is not None:
                pinned.pop((tenant, lvl), None)  # scan again, and let the moment keep that
            if attempt < ATTEMPTS:
                PENDING_REREADS.inc()
                continue
            INEXACT_ANSWERS.inc()
            log.warning(
                "a rollup pass published minutes during each attempt of a query: "
                "the facts it folded may count twice in this answer",
                extra={"fields": {"tenant": tenant, "attempts": attempt}},
            )
        return table, earlier, seen

    def rollup_state(self, tenant: str) -> dict[str, Any]:
        try:
            state = json.loads(self.store.get(layout.state_key(tenant)))
        except (ObjectNotFound, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def plan(self, query: Query, now_ms: int | None = None) -> Plan:
        return plan(query, now_ms)


def _columns(p: Plan) -> list[dict[str, str]]:
    columns = [{"name": "time", "type": "time", "unit": "ms"}] if p.grain_ms else []
    columns += [{"name": d, "type": "integer" if d == "status" else "string"} for d in p.dimensions]
    columns += [{"name": m, "type": "number", "unit": METRICS[m].unit} for m in p.metrics]
    return columns


def _rows(table: pa.Table) -> list[list[Any]]:
    columns = [column.to_pylist() for column in table.columns]
    return [list(row) for row in zip(*columns, strict=True)] if columns else []

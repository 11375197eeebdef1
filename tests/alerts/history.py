"""A stored history for the SLO and backtest tests: facts minute by minute, rolled up
into real tier files, and the live evaluator on a settable clock over them (the
World of tests/alerts/test_evaluate.py, with histories of hours)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import msgspec

from gravix.alerts.evaluate import Evaluator
from gravix.alerts.rules import AlertStore
from gravix.config import load_settings
from gravix.query.service import QueryService
from gravix.rollup.job import RollupJob
from gravix.schema import alerts as schema
from gravix.storage.local import LocalObjectStore
from tests.rollup.conftest import T0, fact, put_raw

MINUTE = 60_000
# The status and latency (None: unknown) of the i-th request of a minute.
Shape = Callable[[int, int], tuple[int, float | None]]


class History:
    """A data dir with a store of facts, the alert store and an evaluator."""

    def __init__(self, tmp_path: Path) -> None:
        self.settings = load_settings(data_dir=tmp_path / "data", public_url="https://gx.test")
        self.store = LocalObjectStore(self.settings.data_dir / "store")
        self.alerts = AlertStore(self.settings)
        self.now_ms = T0
        self.queries = QueryService(self.store, None)
        self.evaluator = Evaluator(
            self.settings, self.alerts, self.queries, clock=lambda: self.now_ms / 1000
        )
        self.alerts.save_channel("acme", schema.Webhook(name="hook", url="http://127.0.0.1:9/x"))
        self.facts: list[dict[str, Any]] = []
        self._ids = itertools.count()

    def traffic(
        self, minutes: Iterable[int], requests: int, shape: Shape | None = None, **dims: Any
    ) -> None:
        """``requests`` facts in each minute (T0-relative) of ``minutes``, spread over it;
        ``shape(minute, i)`` gives the i-th one's status and latency (200, 12.5 ms)."""
        batch = []
        for minute in minutes:
            for i in range(requests):
                status, latency = shape(minute, i) if shape else (200, 12.5)
                batch.append(
                    fact(next(self._ids), timestamp=T0 + minute * MINUTE + i * (MINUTE // requests),
                         status=status, latency_ms=latency, **dims)
                )  # fmt: skip
        self.facts += batch
        for n in range(0, len(batch), 20_000):
            put_raw(self.store, "acme", batch[n : n + 20_000], created_ms=T0)

    def rollup(self) -> None:
        """Fold the facts put so far into the tiers (queries read them faster there)."""
        RollupJob(self.store).run()

    def at(self, minute: float) -> dict[str, Any]:
        """One live evaluation at T0 + ``minute``."""
        self.now_ms = T0 + int(minute * MINUTE)
        return self.evaluator.run_once()

    def rows(self, sql: str, *args: Any) -> list[Any]:
        with self.alerts.db.reading() as conn:
            return conn.execute(sql, args).fetchall()

    def transitions(self) -> list[tuple[int, str, str, str]]:
        """(at, series, from, to) of every transition, oldest first."""
        return [
            (r[0], r[1], r[2], r[3])
            for r in self.rows(
                "SELECT at_ms, series, from_state, to_state FROM transitions ORDER BY id"
            )
        ]

    def outbox(self) -> list[schema.Notification]:
        return [
            msgspec.json.decode(r[0], type=schema.Notification)
            for r in self.rows("SELECT payload FROM outbox ORDER BY id")
        ]

    def between(self, start: int, end: int, **match: Any) -> list[dict[str, Any]]:
        """The facts sent with a timestamp in [start, end) whose fields match."""
        return [
            f
            for f in self.facts
            if start <= f["timestamp"] < end and all(f[k] == v for k, v in match.items())
        ]


def rule(body: dict[str, Any]) -> schema.Rule:
    converted: schema.Rule = msgspec.convert(body, schema.Rule)  # type: ignore[arg-type]
    return converted

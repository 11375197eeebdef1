"""The series catalog: which (method, path, env, version) each service has sent.

It enforces the per-tenant, per-service cap on distinct series that keeps
cardinality (and so storage and query cost) bounded. SQLite in WAL mode at
``<data_dir>/catalog.db`` so several worker processes share one view::

    series(tenant, service, method, path, env, version) PRIMARY KEY all six

Each process remembers the series it has seen, so the database is touched only
when a batch brings a series this process has not seen before.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from gravix.errors import InvalidFacts, ItemError, ServiceUnavailable
from gravix.schema import RequestFact

SeriesKey = tuple[str, str, str, str, str]  # service, method, path, env, version

_SCHEMA = """
CREATE TABLE IF NOT EXISTS series (
    tenant TEXT NOT NULL, service TEXT NOT NULL, method TEXT NOT NULL,
    path TEXT NOT NULL, env TEXT NOT NULL, version TEXT NOT NULL,
    PRIMARY KEY (tenant, service, method, path, env, version)
) WITHOUT ROWID
"""


def series_key(fact: RequestFact) -> SeriesKey:
    return (fact.service, fact.method, fact.path, fact.env or "", fact.version or "")


class SeriesCatalog:
    """Admits a batch's new series, or rejects the batch once a service is at its cap."""

    def __init__(self, path: Path, max_per_service: int) -> None:
        self.max_per_service = max_per_service
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(
            path, timeout=10, isolation_level=None, check_same_thread=False
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(_SCHEMA)
        self._lock = threading.Lock()
        self._known: dict[str, set[SeriesKey]] = {}

    def close(self) -> None:
        self._conn.close()

    def admit(self, tenant: str, facts: Sequence[RequestFact]) -> None:
        """Record new series; raise InvalidFacts naming the facts over the cap."""
        known = self._known.setdefault(tenant, set())
        # The hot path: a set difference, no per-fact Python branching.
        fresh = {(f.service, f.method, f.path, f.env or "", f.version or "") for f in facts} - known
        if not fresh:
            return
        new: dict[SeriesKey, int] = {}
        for index, fact in enumerate(facts):
            key = series_key(fact)
            if key in fresh and key not in new:
                new[key] = index
        with self._lock:
            try:
                self._admit_new(tenant, new)
            except sqlite3.OperationalError as e:
                # A full disk or a locked database: the batch is not accepted,
                # and the client is told to come back, like a spool failure.
                raise ServiceUnavailable(
                    f"series catalog unavailable: {e}", code="catalog_unavailable", retry_after=2
                ) from e

    def _admit_new(self, tenant: str, new: dict[SeriesKey, int]) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            missing = [
                key
                for key in new
                if conn.execute(
                    "SELECT 1 FROM series WHERE tenant=? AND service=? AND method=? AND path=?"
                    " AND env=? AND version=?",
                    (tenant, *key),
                ).fetchone()
                is None
            ]
            counts: dict[str, int] = {}
            errors: list[ItemError] = []
            for key in missing:
                service = key[0]
                if service not in counts:
                    counts[service] = conn.execute(
                        "SELECT COUNT(*) FROM series WHERE tenant=? AND service=?",
                        (tenant, service),
                    ).fetchone()[0]
                if counts[service] >= self.max_per_service:
                    errors.append(
                        ItemError(
                            new[key],
                            "path",
                            f"service {service!r} already has {self.max_per_service} distinct "
                            "series (method, path, env, version); template the path "
                            "(/users/{id}) or raise max_series_per_service",
                        )
                    )
                counts[service] += 1
            if errors:
                conn.execute("ROLLBACK")
                raise InvalidFacts(
                    f"{len(errors)} facts would exceed the series limit; the batch was rejected",
                    field="path",
                    code="series_limit",
                    items=sorted(errors, key=lambda e: e.index),
                )
            conn.executemany(
                "INSERT OR IGNORE INTO series VALUES (?, ?, ?, ?, ?, ?)",
                [(tenant, *key) for key in missing],
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._known.setdefault(tenant, set()).update(new)

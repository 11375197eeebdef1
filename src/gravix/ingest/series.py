"""The series catalog: which (method, path, env, version) each service has sent.

It enforces the caps that keep cardinality (and so storage and query cost)
bounded, all per tenant: distinct series per service (``max_series_per_service``),
services (``max_services_per_tenant``) and series in all (``max_series_per_tenant``).
SQLite in WAL mode at
``<data_dir>/catalog.db`` so several worker processes share one view::

    series(tenant, service, method, path, env, version) PRIMARY KEY all six

Each process remembers the series it has seen, so the database is touched only
when a batch brings a series this process has not seen before. The database is
opened at that first use, and again after a failure: a server started on a full
disk starts, a batch with a new series answers 503 ``disk_full`` meanwhile,
and the catalog opens once there is room.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from gravix.errors import InvalidFacts, ItemError, ServiceUnavailable
from gravix.metadata import disk_full_error, out_of_space
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

    def __init__(
        self,
        path: Path,
        max_per_service: int,
        max_services: int | None = None,
        max_series: int | None = None,
    ) -> None:
        self.max_per_service = max_per_service
        self.max_services = max_services  # per tenant; None: no cap
        self.max_series = max_series  # per tenant, all services; None: no cap
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn: sqlite3.Connection | None = None  # opened at first use
        self._lock = threading.Lock()
        self._known: dict[str, set[SeriesKey]] = {}

    def _connection(self) -> sqlite3.Connection:
        """The open connection; caller holds the lock."""
        if self._conn is None:
            conn = sqlite3.connect(
                self.path, timeout=10, isolation_level=None, check_same_thread=False
            )
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(_SCHEMA)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

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
                if out_of_space(e, self.path):
                    raise disk_full_error("the series catalog", self.path, e) from e
                raise ServiceUnavailable(
                    f"series catalog unavailable: {e}", code="catalog_unavailable", retry_after=2
                ) from e

    def _admit_new(self, tenant: str, new: dict[SeriesKey, int]) -> None:
        conn = self._connection()
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
            errors = self._over_caps(conn, tenant, missing, new)
            if errors:
                conn.execute("ROLLBACK")
                raise InvalidFacts(
                    f"{len(errors)} facts would exceed the series limits; the batch was "
                    f"rejected ({errors[0].message})",
                    field=errors[0].field,
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

    def _over_caps(
        self,
        conn: sqlite3.Connection,
        tenant: str,
        missing: list[SeriesKey],
        new: dict[SeriesKey, int],
    ) -> list[ItemError]:
        """The facts whose new series would take the tenant past a cap, in batch order."""
        per_service: dict[str, int] = {}
        services = set() if self.max_services is None else _services(conn, tenant)
        total = 0 if self.max_series is None else _count(conn, tenant)
        errors: list[ItemError] = []
        for key in sorted(missing, key=new.__getitem__):
            service = key[0]
            if service not in per_service:
                per_service[service] = _count(conn, tenant, service)
            if self.max_services is not None and service not in services:
                if len(services) >= self.max_services:
                    errors.append(ItemError(new[key], "service", _too_many_services(self)))
                    continue
                services.add(service)
            if per_service[service] >= self.max_per_service:
                errors.append(ItemError(new[key], "path", _too_many_paths(self, service)))
                continue
            if self.max_series is not None and total >= self.max_series:
                errors.append(ItemError(new[key], "path", _too_many_series(self)))
                continue
            per_service[service] += 1
            total += 1
        return errors


def _count(conn: sqlite3.Connection, tenant: str, service: str | None = None) -> int:
    if service is None:
        row = conn.execute("SELECT COUNT(*) FROM series WHERE tenant=?", (tenant,)).fetchone()
    else:
        row = conn.execute(
            "SELECT COUNT(*) FROM series WHERE tenant=? AND service=?", (tenant, service)
        ).fetchone()
    return int(row[0])


def _services(conn: sqlite3.Connection, tenant: str) -> set[str]:
    rows = conn.execute("SELECT DISTINCT service FROM series WHERE tenant=?", (tenant,))
    return {row[0] for row in rows}


def _too_many_paths(catalog: SeriesCatalog, service: str) -> str:
    return (
        f"service {service!r} already has {catalog.max_per_service} distinct series "
        "(method, path, env, version); template the path (/users/{id}) or raise "
        "max_series_per_service"
    )


def _too_many_services(catalog: SeriesCatalog) -> str:
    return (
        f"this tenant already has {catalog.max_services} services; a new service name is "
        "refused (is an id or a host name in it?) until max_services_per_tenant is raised"
    )


def _too_many_series(catalog: SeriesCatalog) -> str:
    return (
        f"this tenant already has {catalog.max_series} distinct series across its services; "
        "template the paths or raise max_series_per_tenant"
    )

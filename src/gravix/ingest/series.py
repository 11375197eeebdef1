"""The series catalog: which (method, path, env, version) each service has sent.

It enforces the caps that keep cardinality (and so storage and query cost)
bounded, all per tenant: distinct series per service (``max_series_per_service``),
services (``max_services_per_tenant``) and series in all (``max_series_per_tenant``).
Table ``series`` (columns in :mod:`gravix.schema.metadata_tables`) of the
metadata store (:mod:`gravix.metadata`)::

    series(tenant, service, method, path, env, version) PRIMARY KEY all six

- SQLite by default, ``<data_dir>/catalog.db`` in WAL mode, so the worker
  processes of a node share one view.
- The PostgreSQL database of ``database_url``, shared by every node, so the
  caps hold across nodes: a batch's new series are admitted in one
  SERIALIZABLE transaction (count, check the caps, insert), and one that
  conflicts with another node's is run again.

Each process remembers the series it has seen, so the store is touched only
when a batch brings a series this process has not seen before: batches of
known series are accepted while the store cannot be written. A batch with a
new series meanwhile answers 503 ``disk_full`` (SQLite on a full disk) or
``metadata_unavailable`` (PostgreSQL down), with Retry-After. The store is
opened at that first use, and again after a failure: a server started on a
full disk starts, and the catalog opens once there is room.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import Connection, exc, func, select

from gravix.errors import InvalidFacts, ItemError, ServiceUnavailable
from gravix.metadata import MetadataStore
from gravix.schema import RequestFact
from gravix.schema.metadata_tables import SERIES, SERIES_COLUMNS

SeriesKey = tuple[str, str, str, str, str]  # service, method, path, env, version
_KEY_COLUMNS = SERIES_COLUMNS[1:]  # a SeriesKey's, in its order


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
        database_url: str | None = None,
    ) -> None:
        self.max_per_service = max_per_service
        self.max_services = max_services  # per tenant; None: no cap
        self.max_series = max_series  # per tenant, all services; None: no cap
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = MetadataStore("the series catalog", [SERIES], path, database_url)
        # One admission at a time per process: the store serializes across processes.
        self._lock = threading.Lock()
        self._known: dict[str, frozenset[SeriesKey]] = {}

    def close(self) -> None:
        """Nothing is held open between uses (kept for the ingest app's stop)."""

    def knows(self, tenant: str, facts: Sequence[RequestFact]) -> bool:
        """Whether this process has seen every series of ``facts`` (then :meth:`admit`
        touches no database): the hot path, a set difference."""
        return not self._fresh(tenant, facts)

    def _fresh(self, tenant: str, facts: Sequence[RequestFact]) -> set[SeriesKey]:
        known = self._known.get(tenant, frozenset())
        return {(f.service, f.method, f.path, f.env or "", f.version or "") for f in facts} - known

    def admit(self, tenant: str, facts: Sequence[RequestFact]) -> None:
        """Record new series; raise InvalidFacts naming the facts over the cap.

        A batch with a series this process has not seen writes to the store (a
        commit's fsync, a round trip to PostgreSQL, or its connect timeout while
        it is down): the ingest app calls it from a thread then (:meth:`knows`)."""
        fresh = self._fresh(tenant, facts)
        if not fresh:
            return
        new: dict[SeriesKey, int] = {}
        for index, fact in enumerate(facts):
            key = series_key(fact)
            if key in fresh and key not in new:
                new[key] = index
        with self._lock:
            try:
                self.db.write(lambda conn: self._admit_new(conn, tenant, new))
            except exc.DBAPIError as e:
                # A locked SQLite file, say (a full disk and PostgreSQL down are
                # 503s already): the client is told to come back, like a spool failure.
                raise ServiceUnavailable(
                    f"series catalog unavailable: {e.orig}",
                    code="catalog_unavailable",
                    retry_after=2,
                ) from e
            # A new set, not an update: other threads read the old one unlocked.
            self._known[tenant] = self._known.get(tenant, frozenset()).union(new)

    def _admit_new(self, conn: Connection, tenant: str, new: dict[SeriesKey, int]) -> None:
        """In the store's write transaction: insert the new series, or raise for the caps."""
        services = sorted({key[0] for key in new})
        rows = conn.execute(
            select(*(SERIES.c[name] for name in _KEY_COLUMNS)).where(
                SERIES.c.tenant == tenant, SERIES.c.service.in_(services)
            )
        ).all()
        stored: set[SeriesKey] = {(r.service, r.method, r.path, r.env, r.version) for r in rows}
        per_service = dict.fromkeys(services, 0)
        for key in stored:
            per_service[key[0]] += 1
        missing = [key for key in new if key not in stored]
        errors = self._over_caps(conn, tenant, missing, new, per_service)
        if errors:
            raise InvalidFacts(
                f"{len(errors)} facts would exceed the series limits; the batch was "
                f"rejected ({errors[0].message})",
                field=errors[0].field,
                code="series_limit",
                items=sorted(errors, key=lambda e: e.index),
            )
        if missing:
            conn.execute(
                SERIES.insert(),
                [
                    {"tenant": tenant, **dict(zip(_KEY_COLUMNS, key, strict=True))}
                    for key in missing
                ],
            )

    def _over_caps(
        self,
        conn: Connection,
        tenant: str,
        missing: list[SeriesKey],
        new: dict[SeriesKey, int],
        per_service: dict[str, int],
    ) -> list[ItemError]:
        """The facts whose new series would take the tenant past a cap, in batch order."""
        services: set[str] = set()
        if self.max_services is not None:
            found = conn.execute(
                select(SERIES.c.service).where(SERIES.c.tenant == tenant).distinct()
            )
            services = set(found.scalars())
        total = 0
        if self.max_series is not None:
            counted = select(func.count()).select_from(SERIES).where(SERIES.c.tenant == tenant)
            total = conn.execute(counted).scalar_one()
        errors: list[ItemError] = []
        for key in sorted(missing, key=new.__getitem__):
            service = key[0]
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

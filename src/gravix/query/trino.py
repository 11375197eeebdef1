"""The Trino query engine: the same SQL, sent to a Trino coordinator.

Trino reads the object store itself, through tables registered over the
layout's folders (deploy/trino/register.sql) in ``<catalog>.<schema>``, each
named like its area: ``metrics_1m``, ``metrics_1h``, ``metrics_1d`` and
``service_metrics_1m``, ``_1h``, ``_1d``. Their columns are the Parquet
files' (``bucket timestamp(3)``, read in UTC; ``status_counts
map(smallint, bigint)``; ``latency_sketch map(integer, bigint)``; the
rest varchar or bigint) and the Hive partitions ``tenant``, ``date``
('YYYY-MM-DD') and, for minutes, ``hour`` ('HH'), all varchar.

One statement answers a plan: per segment of the plan, a SELECT of the
segment's tier table cut to the tenant, the dates (partition pruning) and
the bucket range, giving ``bucket_ms``; their UNION ALL is the relation
:func:`compile_sql` reads in the ``trino`` dialect.

Pending facts (``extra_rows``, rows in this node's memory) are not sent to
Trino: ``includes_pending`` is False, and answers say so in
``meta.freshness.pending_facts_included``. The ``trino`` client is the
``trino`` extra.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pyarrow as pa

from gravix.errors import ConfigError
from gravix.query.compile import (
    Segment,
    compile_sql,
    level,
    literal,
    result_schema,
    segments,
)
from gravix.query.engine import QueryEngineUnavailable, object_keys
from gravix.query.spec import Plan
from gravix.schema import layout
from gravix.storage.base import ObjectStore

if TYPE_CHECKING:
    from gravix.config import Settings

log = logging.getLogger(__name__)

# The relation's columns after bucket_ms, as compile_sql reads them.
COLUMNS = (
    "service", "method", "path", "env", "version", "requests", "errors", "client_errors",
    "status_counts", "latency_sum_us", "latency_max_us", "latency_sketch",
)  # fmt: skip
_EPOCH = "TIMESTAMP '1970-01-01 00:00:00.000'"


class TrinoEngine:
    """Queries answered by Trino over the tables of deploy/trino/register.sql.

    ``store`` is only asked whether service-level objects exist, to read
    the series level where they do not (objects written before that level
    existed), as the other engines do.
    """

    name = "trino"
    includes_pending = False

    def __init__(
        self,
        store: ObjectStore,
        url: str = "http://127.0.0.1:8080",
        catalog: str = "gravix",
        schema: str = "gravix",
        user: str = "gravix",
        password: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"trino_url {url!r} is not an http(s) URL")
        if password is not None and parts.scheme != "https":
            raise ConfigError("trino_password is sent only over https: use an https trino_url")
        self.store = store
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.catalog, self.schema, self.user = catalog, schema, user
        self._password = password
        self.timeout = timeout

    @classmethod
    def from_settings(cls, settings: Settings, store: ObjectStore) -> TrinoEngine:
        password = settings.trino_password
        return cls(
            store,
            url=settings.trino_url,
            catalog=settings.trino_catalog,
            schema=settings.trino_schema,
            user=settings.trino_user,
            password=password.get_secret_value() if password is not None else None,
        )

    def table(self, tier: str, lvl: layout.Level) -> str:
        area = layout.metrics_prefix(tier, lvl).rstrip("/")  # type: ignore[arg-type]
        return f"{self.catalog}.{self.schema}.{area}"

    def sql(self, tenant: str, plan: Plan) -> str:
        """The one statement Trino runs for ``plan``."""
        lvl = level(plan)
        parts = [
            self.segment_sql(tenant, segment, self.segment_level(tenant, segment, lvl))
            for segment in segments(plan)
        ]
        source = "(" + " UNION ALL ".join(parts) + ")"
        return compile_sql(plan, source, "trino")

    def segment_level(self, tenant: str, segment: Segment, lvl: layout.Level) -> layout.Level:
        """The level to read ``segment`` at.

        The series level where some of its service-level objects are missing
        (written before that level existed): one ``exists`` per object of the
        segment, asked only for service-level plans.
        """
        if lvl == "series":
            return lvl
        for key in object_keys(tenant, segment, "service"):
            if not self.store.exists(key) and self.store.exists(key.removeprefix("service_")):
                return "series"
        return lvl

    def segment_sql(self, tenant: str, segment: Segment, lvl: layout.Level) -> str:
        """The metric rows of ``segment`` (``bucket_ms`` first), from its tier's table."""
        tier, start, end = segment
        first, last = _date(start), _date(end - 1)
        return (
            f"SELECT CAST(date_diff('millisecond', {_EPOCH}, bucket) AS BIGINT) AS bucket_ms, "
            f"{', '.join(COLUMNS)} FROM {self.table(tier, lvl)} "
            f"WHERE tenant = {literal(tenant, 'trino')} "
            f"AND \"date\" BETWEEN '{first}' AND '{last}' "
            f"AND bucket >= {_timestamp(start)} AND bucket < {_timestamp(end)}"
        )

    def run(self, tenant: str, plan: Plan, extra_rows: pa.Table | None = None) -> pa.Table:
        sql = self.sql(tenant, plan)
        rows = self._fetch(sql)
        schema = result_schema(plan)
        return pa.table(
            [pa.array([row[i] for row in rows], f.type) for i, f in enumerate(schema)],
            schema=schema,
        )

    def _fetch(self, sql: str) -> list[list[Any]]:
        try:
            import trino.auth
            import trino.dbapi
            import trino.exceptions
        except ImportError:
            raise ConfigError(
                "the Trino engine needs the trino client: pip install 'gravix[trino]'"
            ) from None
        auth = None
        if self._password is not None:
            auth = trino.auth.BasicAuthentication(self.user, self._password)
        try:
            connect: Any = trino.dbapi.connect  # untyped
            connection = connect(
                host=self.host,
                port=self.port,
                user=self.user,
                catalog=self.catalog,
                schema=self.schema,
                http_scheme=self.scheme,
                auth=auth,
                request_timeout=self.timeout,
                max_attempts=2,
            )
            try:
                cursor = connection.cursor()
                cursor.execute(sql)
                rows: list[list[Any]] = cursor.fetchall()
                return rows
            finally:
                connection.close()
        except trino.exceptions.TrinoQueryError as e:
            # A table not registered, a file Trino cannot read: the deployment's fault.
            log.error("Trino failed a query", exc_info=e)
            raise QueryEngineUnavailable(
                f"the Trino query engine failed the query ({_reason(e)}); "
                "the server log has the details",
                retry_after=30,
            ) from e
        except Exception as e:  # connection refused, TLS, HTTP 5xx, timeouts
            log.error("Trino could not be reached", exc_info=e)
            raise QueryEngineUnavailable(
                f"the Trino query engine at {self.scheme}://{self.host}:{self.port} "
                f"could not be reached ({type(e).__name__})",
                retry_after=30,
            ) from e


def _reason(e: Exception) -> str:
    name = getattr(e, "error_name", None)
    return str(name) if name else type(e).__name__


def _date(ms: int) -> str:
    return f"{datetime.fromtimestamp(ms // 1000, UTC):%Y-%m-%d}"


def _timestamp(ms: int) -> str:
    """A timestamp(3) literal of epoch ms, in UTC (the tables' ``bucket`` is read in UTC)."""
    moment = datetime.fromtimestamp(ms // 1000, UTC)
    return f"TIMESTAMP '{moment:%Y-%m-%d %H:%M:%S}.{ms % 1000:03d}'"

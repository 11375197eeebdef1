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
the bucket range, giving ``bucket_ms``; and the facts not rolled up yet
(:meth:`TrinoEngine.pending_sql`); their UNION ALL is the relation
:func:`compile_sql` reads in the ``trino`` dialect.

Pending facts are read from the ``raw`` table (the raw objects the uploader
stored and the rollup has not folded yet), as the rollup will count them:
one row per (event_id, event hour), the copy accepted first, and none for an
(event_id, event hour) the ``archive`` table already holds (a retry after its
first copy was folded, or a raw object folded and not deleted yet). A raw
object's folder is the hour its segment was *created*, unrelated to its
facts' times, so the store is listed (``raw/tenant=<t>/``: the few objects
not folded yet) and only the folders holding some are read; none, and the
pending part reads nothing. Only the raw facts of the plan's hours count,
and only the archive partitions of hours holding some of them are read (a
join on the partition columns, which Trino's dynamic filtering prunes).
Unlike the embedded engines, which ask only the archive parts the minute
file counts, every file of the hour's folder is asked: after a rollup pass
stopped between writing a part and publishing the minutes, that part's facts
are missing until the next pass. The facts still in a node's spool are not
in the store and not in the answer: ``includes_pending`` is False (this
node's pending rows are not handed to the engine), and answers say so in
``meta.freshness.pending_facts_included``. Legacy ``.gvx`` raw objects are
not Parquet: Trino fails on a folder holding one (``gravix rollup`` folds
them).

No partition is registered: the tables project theirs from each query's
``tenant``, ``date`` and ``hour`` cuts (deploy/trino/register.sql), so a
new hour is read as soon as its file is published. The ``trino`` client is
the ``trino`` extra.
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
from gravix.schema import layout, sketch
from gravix.storage.base import ObjectStore

if TYPE_CHECKING:
    from gravix.config import Settings

log = logging.getLogger(__name__)

# The relation's columns after bucket_ms, as compile_sql reads them.
COLUMNS = (
    "service", "method", "path", "env", "version", "requests", "errors", "client_errors",
    "status_counts", "latency_count", "latency_sum_us", "latency_max_us", "latency_sketch",
)  # fmt: skip
_EPOCH = "TIMESTAMP '1970-01-01 00:00:00.000'"


class TrinoEngine:
    """Queries answered by Trino over the tables of deploy/trino/register.sql.

    ``store`` is only asked whether service-level objects exist, to read
    the series level where they do not (objects written before that level
    existed), as the other engines do, and which folders hold the tenant's
    raw objects (:meth:`raw_folders`).
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
        parts.append(self.pending_sql(tenant, plan))
        source = "(" + " UNION ALL ".join(parts) + ")"
        return compile_sql(plan, source, "trino")

    def pending_sql(self, tenant: str, plan: Plan) -> str:
        """Metric rows (``bucket_ms`` first), one per pending fact of the plan's hours
        that the rollup will count (module docstring)."""
        start, end = layout.hour_start(plan.from_ms), plan.to_ms
        who = f"tenant = {literal(tenant, 'trino')}"
        facts = (
            'SELECT event_id, "timestamp", service, method, path, status, latency_us, env, '
            "version, received, date_format(\"timestamp\", '%Y-%m-%d') AS event_date, "
            "date_format(\"timestamp\", '%H') AS event_hour "
            f"FROM {self.table_of('raw')} WHERE {who} AND {self.raw_folders(tenant)} "
            f'AND "timestamp" >= {_timestamp(start)} AND "timestamp" < {_timestamp(end)}'
        )
        same = 'h.event_id = p.event_id AND h."date" = p.event_date AND h."hour" = p.event_hour'
        # The archive's (event_id, hour) among the pending facts' ones. The pending
        # facts, the small side, are the right one (Trino's build side): the
        # archive streams past them, its date and hour partitions pruned by
        # the dynamic filter of the join.
        held = (
            'SELECT DISTINCT h.event_id, h."date", h."hour" '
            f"FROM {self.table_of('archive')} h JOIN ({facts}) p ON {same} "
            f"WHERE h.{who} AND h.\"date\" BETWEEN '{_date(start)}' AND '{_date(end - 1)}'"
        )
        order = (
            'p.received, p."timestamp", p.service, p.method, p.path, p.status, p.latency_us, '
            "p.env NULLS FIRST, p.version NULLS FIRST"
        )
        once = (
            "SELECT p.*, row_number() OVER (PARTITION BY p.event_id, p.event_date, "
            f"p.event_hour ORDER BY {order}) AS copy_rank "
            f"FROM ({facts}) p LEFT JOIN ({held}) h ON {same} WHERE h.event_id IS NULL"
        )
        ms = f"CAST(date_diff('millisecond', {_EPOCH}, \"timestamp\") AS BIGINT)"
        key = sketch.key_sql("(CAST(latency_us AS DOUBLE) / 1.0E3)")
        return (
            f"SELECT {ms} - {ms} % 60000 AS bucket_ms, service, method, path, env, version, "
            "CAST(1 AS BIGINT) AS requests, "
            "CAST(CASE WHEN status >= 500 THEN 1 ELSE 0 END AS BIGINT) AS errors, "
            "CAST(CASE WHEN status >= 400 AND status < 500 THEN 1 ELSE 0 END AS BIGINT) "
            "AS client_errors, "
            "MAP(ARRAY[status], ARRAY[CAST(1 AS BIGINT)]) AS status_counts, "
            # A fact without a latency (NULL latency_us): counted, not in the latency columns.
            "CAST(CASE WHEN latency_us IS NULL THEN 0 ELSE 1 END AS BIGINT) AS latency_count, "
            "coalesce(latency_us, CAST(0 AS BIGINT)) AS latency_sum_us, "
            "latency_us AS latency_max_us, "
            "CASE WHEN latency_us IS NULL THEN CAST(MAP() AS MAP(INTEGER, BIGINT)) "
            f"ELSE MAP(ARRAY[{key}], ARRAY[CAST(1 AS BIGINT)]) END AS latency_sketch "
            f"FROM ({once}) q WHERE copy_rank = 1"
        )

    def raw_folders(self, tenant: str) -> str:
        """The ``raw`` table's cut to the folders (segment hours) holding the tenant's
        raw objects now, ``false`` when none: its partitions, projected from this cut,
        are not known otherwise (module docstring)."""
        found = set()
        for info in self.store.list(layout.tenant_prefix(layout.RAW, tenant)):
            part = layout.parse_key(info.key)
            if (
                part is not None
                and part.hour is not None
                and part.name.endswith(layout.OBJECT_SUFFIX)
            ):
                found.add((part.day.isoformat(), f"{part.hour:02d}"))
        if not found:
            return "false"
        dates = ", ".join(sorted({f"'{d}'" for d, _ in found}))
        hours = ", ".join(sorted({f"'{h}'" for _, h in found}))
        return f'"date" IN ({dates}) AND "hour" IN ({hours})'

    def table_of(self, area: str) -> str:
        """The table of a layout area (``raw``, ``archive``)."""
        return f"{self.catalog}.{self.schema}.{area}"

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

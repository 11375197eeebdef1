-- Register Gravix's object store layout (docs/data-model.md) as Trino tables.
--
-- Catalog `gravix` is a Hive connector catalog over the object store; schema
-- `gravix`; store `s3://gravix/raw` (GRAVIX_OBJECT_STORE_URL of the Compose
-- stack and the Kubernetes base: bucket `gravix`, key prefix `raw/`), so the
-- areas are under `s3://gravix/raw/<area>/`. Change the locations if your
-- store URL differs. Change the three
-- together if yours differ: the query engine reads `<trino_catalog>.<trino_schema>`
-- (settings `trino_catalog`, `trino_schema`), src/gravix/query/trino.py.
--
-- The tables are external: Trino only reads the Parquet files Gravix writes
-- (DROP TABLE leaves the files). Run this file once. No partition is ever
-- registered: the tables use the Hive connector's partition projection, so
-- Trino computes a query's partitions (tenant, date, hour folders) from its
-- WHERE clause and the table's template, and a new tenant, day or hour is
-- read as soon as its file is published, with no `sync_partition_metadata`.
--   tenant  INJECTED: a query must say `tenant = '<t>'` (Gravix's always do);
--   date    DATE 'yyyy-MM-dd' from 2020-01-01 to tomorrow (a node's clock a
--           little ahead): a fact dated outside that range is not read;
--   hour    INTEGER 00..23.
-- A folder a query names that does not exist is read as empty (the catalog's
-- hive.ignore-absent-partitions=true; S3 has no folders to miss).
--
-- Catalog properties this file assumes (etc/catalog/gravix.properties):
--   connector.name=hive
--   hive.metastore=file (or thrift), hive.non-managed-table-writes-enabled=false
--   hive.partition-projection-enabled=true, hive.ignore-absent-partitions=true
--   hive.parquet.time-zone=UTC      -- the files' times are UTC instants
--   hive.timestamp-precision=MILLISECONDS
--   fs.native-s3.enabled=true, s3.endpoint=..., s3.path-style-access=true, ...
-- and the coordinator runs with -Duser.timezone=UTC.
--
-- Types. The files store times as Parquet TIMESTAMP(MILLIS, isAdjustedToUTC=true);
-- the Hive connector has no `timestamp with time zone` columns, so they are
-- `timestamp(3)` read in UTC (hive.parquet.time-zone=UTC): the wall-clock value
-- is the UTC time. Gravix's SQL turns `bucket` into epoch ms with
-- date_diff('millisecond', TIMESTAMP '1970-01-01 00:00:00.000', bucket).
-- `status` keys are Parquet INT(16) -> smallint; sketch keys INT32 -> integer.
-- Partition columns come last, in folder order, and are varchar:
-- tenant (`tenant=<t>`), date ('YYYY-MM-DD', UTC) and, for hourly folders,
-- hour ('HH', UTC). Tested against a real Trino 476 over a local store
-- (tests/query/test_trino_engine.py; `s3://gravix/raw/` read as `local:///`).
--
-- Do not read both `metrics_*` and `service_metrics_*` in one query: the
-- service level holds the same requests merged by (bucket, service, env).
--
-- `latency_count` (requests with a known latency) is NULL in files written
-- before it existed; Gravix's SQL reads NULL as `requests`. Parquet columns
-- are matched by name, so a registration made before it gets the column with
-- `ALTER TABLE gravix.gravix.<table> ADD COLUMN latency_count bigint` on each
-- of the six metric tables.

CREATE SCHEMA IF NOT EXISTS gravix.gravix
WITH (location = 's3://gravix/');

-- Minute metrics: one file per tenant and UTC hour.
CREATE TABLE IF NOT EXISTS gravix.gravix.metrics_1m (
    bucket timestamp(3),
    service varchar,
    method varchar,
    path varchar,
    env varchar,
    version varchar,
    requests bigint,
    errors bigint,
    client_errors bigint,
    status_counts map(smallint, bigint),
    latency_count bigint,
    latency_sum_us bigint,
    latency_max_us bigint,
    latency_sketch map(integer, bigint),
    tenant varchar WITH (partition_projection_type = 'INJECTED'),
    "date" varchar WITH (
        partition_projection_type = 'DATE',
        partition_projection_format = 'yyyy-MM-dd',
        partition_projection_range = ARRAY['2020-01-01', 'NOW+1DAYS']
    ),
    "hour" varchar WITH (
        partition_projection_type = 'INTEGER',
        partition_projection_range = ARRAY['0', '23'],
        partition_projection_digits = 2
    )
)
WITH (
    external_location = 's3://gravix/raw/metrics_1m/',
    format = 'PARQUET',
    partitioned_by = ARRAY['tenant', 'date', 'hour'],
    partition_projection_enabled = true,
    partition_projection_location_template = 's3://gravix/raw/metrics_1m/tenant=${tenant}/date=${date}/hour=${hour}/'
);

-- Hourly metrics: one file per tenant and UTC day.
CREATE TABLE IF NOT EXISTS gravix.gravix.metrics_1h (
    bucket timestamp(3),
    service varchar,
    method varchar,
    path varchar,
    env varchar,
    version varchar,
    requests bigint,
    errors bigint,
    client_errors bigint,
    status_counts map(smallint, bigint),
    latency_count bigint,
    latency_sum_us bigint,
    latency_max_us bigint,
    latency_sketch map(integer, bigint),
    tenant varchar WITH (partition_projection_type = 'INJECTED'),
    "date" varchar WITH (
        partition_projection_type = 'DATE',
        partition_projection_format = 'yyyy-MM-dd',
        partition_projection_range = ARRAY['2020-01-01', 'NOW+1DAYS']
    )
)
WITH (
    external_location = 's3://gravix/raw/metrics_1h/',
    format = 'PARQUET',
    partitioned_by = ARRAY['tenant', 'date'],
    partition_projection_enabled = true,
    partition_projection_location_template = 's3://gravix/raw/metrics_1h/tenant=${tenant}/date=${date}/'
);

-- Daily metrics: one file (one bucket) per tenant and UTC day.
CREATE TABLE IF NOT EXISTS gravix.gravix.metrics_1d (
    bucket timestamp(3),
    service varchar,
    method varchar,
    path varchar,
    env varchar,
    version varchar,
    requests bigint,
    errors bigint,
    client_errors bigint,
    status_counts map(smallint, bigint),
    latency_count bigint,
    latency_sum_us bigint,
    latency_max_us bigint,
    latency_sketch map(integer, bigint),
    tenant varchar WITH (partition_projection_type = 'INJECTED'),
    "date" varchar WITH (
        partition_projection_type = 'DATE',
        partition_projection_format = 'yyyy-MM-dd',
        partition_projection_range = ARRAY['2020-01-01', 'NOW+1DAYS']
    )
)
WITH (
    external_location = 's3://gravix/raw/metrics_1d/',
    format = 'PARQUET',
    partitioned_by = ARRAY['tenant', 'date'],
    partition_projection_enabled = true,
    partition_projection_location_template = 's3://gravix/raw/metrics_1d/tenant=${tenant}/date=${date}/'
);

-- The service level: the same three tiers merged by (bucket, service, env);
-- method, path and version are NULL.
CREATE TABLE IF NOT EXISTS gravix.gravix.service_metrics_1m (
    bucket timestamp(3),
    service varchar,
    method varchar,
    path varchar,
    env varchar,
    version varchar,
    requests bigint,
    errors bigint,
    client_errors bigint,
    status_counts map(smallint, bigint),
    latency_count bigint,
    latency_sum_us bigint,
    latency_max_us bigint,
    latency_sketch map(integer, bigint),
    tenant varchar WITH (partition_projection_type = 'INJECTED'),
    "date" varchar WITH (
        partition_projection_type = 'DATE',
        partition_projection_format = 'yyyy-MM-dd',
        partition_projection_range = ARRAY['2020-01-01', 'NOW+1DAYS']
    ),
    "hour" varchar WITH (
        partition_projection_type = 'INTEGER',
        partition_projection_range = ARRAY['0', '23'],
        partition_projection_digits = 2
    )
)
WITH (
    external_location = 's3://gravix/raw/service_metrics_1m/',
    format = 'PARQUET',
    partitioned_by = ARRAY['tenant', 'date', 'hour'],
    partition_projection_enabled = true,
    partition_projection_location_template = 's3://gravix/raw/service_metrics_1m/tenant=${tenant}/date=${date}/hour=${hour}/'
);

CREATE TABLE IF NOT EXISTS gravix.gravix.service_metrics_1h (
    bucket timestamp(3),
    service varchar,
    method varchar,
    path varchar,
    env varchar,
    version varchar,
    requests bigint,
    errors bigint,
    client_errors bigint,
    status_counts map(smallint, bigint),
    latency_count bigint,
    latency_sum_us bigint,
    latency_max_us bigint,
    latency_sketch map(integer, bigint),
    tenant varchar WITH (partition_projection_type = 'INJECTED'),
    "date" varchar WITH (
        partition_projection_type = 'DATE',
        partition_projection_format = 'yyyy-MM-dd',
        partition_projection_range = ARRAY['2020-01-01', 'NOW+1DAYS']
    )
)
WITH (
    external_location = 's3://gravix/raw/service_metrics_1h/',
    format = 'PARQUET',
    partitioned_by = ARRAY['tenant', 'date'],
    partition_projection_enabled = true,
    partition_projection_location_template = 's3://gravix/raw/service_metrics_1h/tenant=${tenant}/date=${date}/'
);

CREATE TABLE IF NOT EXISTS gravix.gravix.service_metrics_1d (
    bucket timestamp(3),
    service varchar,
    method varchar,
    path varchar,
    env varchar,
    version varchar,
    requests bigint,
    errors bigint,
    client_errors bigint,
    status_counts map(smallint, bigint),
    latency_count bigint,
    latency_sum_us bigint,
    latency_max_us bigint,
    latency_sketch map(integer, bigint),
    tenant varchar WITH (partition_projection_type = 'INJECTED'),
    "date" varchar WITH (
        partition_projection_type = 'DATE',
        partition_projection_format = 'yyyy-MM-dd',
        partition_projection_range = ARRAY['2020-01-01', 'NOW+1DAYS']
    )
)
WITH (
    external_location = 's3://gravix/raw/service_metrics_1d/',
    format = 'PARQUET',
    partitioned_by = ARRAY['tenant', 'date'],
    partition_projection_enabled = true,
    partition_projection_location_template = 's3://gravix/raw/service_metrics_1d/tenant=${tenant}/date=${date}/'
);

-- The raw archive: every deduplicated fact, in the files of each tenant and UTC
-- event hour (facts.parquet, and part-*.parquet until the hour is compacted).
-- latency_us is microseconds, NULL when unknown; env and version are NULL when not sent.
CREATE TABLE IF NOT EXISTS gravix.gravix.archive (
    event_id varchar,
    "timestamp" timestamp(3),
    service varchar,
    method varchar,
    path varchar,
    status smallint,
    latency_us bigint,
    env varchar,
    version varchar,
    received timestamp(3),
    tenant varchar WITH (partition_projection_type = 'INJECTED'),
    "date" varchar WITH (
        partition_projection_type = 'DATE',
        partition_projection_format = 'yyyy-MM-dd',
        partition_projection_range = ARRAY['2020-01-01', 'NOW+1DAYS']
    ),
    "hour" varchar WITH (
        partition_projection_type = 'INTEGER',
        partition_projection_range = ARRAY['0', '23'],
        partition_projection_digits = 2
    )
)
WITH (
    external_location = 's3://gravix/raw/archive/',
    format = 'PARQUET',
    partitioned_by = ARRAY['tenant', 'date', 'hour'],
    partition_projection_enabled = true,
    partition_projection_location_template = 's3://gravix/raw/archive/tenant=${tenant}/date=${date}/hour=${hour}/'
);

-- Service events (deploys, config changes, incidents, notes), one file per tenant and UTC day.
-- Pending raw facts: what the uploader shipped and the rollup has not folded yet
-- (src/gravix/schema/raw.py), one file per tenant and spool segment, partitioned
-- by the hour the segment was created. A fact can also be in `archive` for the
-- moment between the rollup publishing it and deleting its raw object, and a
-- client's retry is a second row until the rollup: deduplicate by event_id
-- and event hour, and leave out what `archive` holds, when counting across
-- both (Gravix's Trino engine does: TrinoEngine.pending_sql).
CREATE TABLE IF NOT EXISTS gravix.gravix.raw (
    event_id varchar,
    "timestamp" timestamp(3),
    service varchar,
    method varchar,
    path varchar,
    status smallint,
    latency_us bigint,
    env varchar,
    version varchar,
    received timestamp(3),
    node varchar,
    segment varchar,
    tenant varchar WITH (partition_projection_type = 'INJECTED'),
    "date" varchar WITH (
        partition_projection_type = 'DATE',
        partition_projection_format = 'yyyy-MM-dd',
        partition_projection_range = ARRAY['2020-01-01', 'NOW+1DAYS']
    ),
    "hour" varchar WITH (
        partition_projection_type = 'INTEGER',
        partition_projection_range = ARRAY['0', '23'],
        partition_projection_digits = 2
    )
)
WITH (
    external_location = 's3://gravix/raw/raw/',
    format = 'PARQUET',
    partitioned_by = ARRAY['tenant', 'date', 'hour'],
    partition_projection_enabled = true,
    partition_projection_location_template = 's3://gravix/raw/raw/tenant=${tenant}/date=${date}/hour=${hour}/'
);

CREATE TABLE IF NOT EXISTS gravix.gravix.events (
    event_id varchar,
    "timestamp" timestamp(3),
    service varchar,
    kind varchar,
    message varchar,
    version varchar,
    received timestamp(3),
    tenant varchar WITH (partition_projection_type = 'INJECTED'),
    "date" varchar WITH (
        partition_projection_type = 'DATE',
        partition_projection_format = 'yyyy-MM-dd',
        partition_projection_range = ARRAY['2020-01-01', 'NOW+1DAYS']
    )
)
WITH (
    external_location = 's3://gravix/raw/events/',
    format = 'PARQUET',
    partitioned_by = ARRAY['tenant', 'date'],
    partition_projection_enabled = true,
    partition_projection_location_template = 's3://gravix/raw/events/tenant=${tenant}/date=${date}/'
);

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
-- The tables are external: Trino only reads the Parquet files the rollup
-- writes (DROP TABLE leaves the files). Run this file once, then
-- `CALL system.sync_partition_metadata(...)` (at the end) after new
-- partitions appear, e.g. every minute from cron. A partition Trino does not
-- know yet is simply not read: the newest minutes show up after the next sync.
--
-- Catalog properties this file assumes (etc/catalog/gravix.properties):
--   connector.name=hive
--   hive.metastore=file (or thrift), hive.non-managed-table-writes-enabled=false
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
-- hour ('HH', UTC).
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
    tenant varchar,
    "date" varchar,
    "hour" varchar
)
WITH (
    external_location = 's3://gravix/raw/metrics_1m/',
    format = 'PARQUET',
    partitioned_by = ARRAY['tenant', 'date', 'hour']
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
    tenant varchar,
    "date" varchar
)
WITH (
    external_location = 's3://gravix/raw/metrics_1h/',
    format = 'PARQUET',
    partitioned_by = ARRAY['tenant', 'date']
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
    tenant varchar,
    "date" varchar
)
WITH (
    external_location = 's3://gravix/raw/metrics_1d/',
    format = 'PARQUET',
    partitioned_by = ARRAY['tenant', 'date']
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
    tenant varchar,
    "date" varchar,
    "hour" varchar
)
WITH (
    external_location = 's3://gravix/raw/service_metrics_1m/',
    format = 'PARQUET',
    partitioned_by = ARRAY['tenant', 'date', 'hour']
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
    tenant varchar,
    "date" varchar
)
WITH (
    external_location = 's3://gravix/raw/service_metrics_1h/',
    format = 'PARQUET',
    partitioned_by = ARRAY['tenant', 'date']
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
    tenant varchar,
    "date" varchar
)
WITH (
    external_location = 's3://gravix/raw/service_metrics_1d/',
    format = 'PARQUET',
    partitioned_by = ARRAY['tenant', 'date']
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
    tenant varchar,
    "date" varchar,
    "hour" varchar
)
WITH (
    external_location = 's3://gravix/raw/archive/',
    format = 'PARQUET',
    partitioned_by = ARRAY['tenant', 'date', 'hour']
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
    tenant varchar,
    "date" varchar,
    "hour" varchar
)
WITH (
    external_location = 's3://gravix/raw/raw/',
    format = 'PARQUET',
    partitioned_by = ARRAY['tenant', 'date', 'hour']
);

CREATE TABLE IF NOT EXISTS gravix.gravix.events (
    event_id varchar,
    "timestamp" timestamp(3),
    service varchar,
    kind varchar,
    message varchar,
    version varchar,
    received timestamp(3),
    tenant varchar,
    "date" varchar
)
WITH (
    external_location = 's3://gravix/raw/events/',
    format = 'PARQUET',
    partitioned_by = ARRAY['tenant', 'date']
);

-- Pick up partitions (new tenants, days and hours) written since the last
-- call; 'FULL' also drops those that retention deleted. Run after this
-- file, then periodically.
CALL gravix.system.sync_partition_metadata('gravix', 'metrics_1m', 'FULL');
CALL gravix.system.sync_partition_metadata('gravix', 'metrics_1h', 'FULL');
CALL gravix.system.sync_partition_metadata('gravix', 'metrics_1d', 'FULL');
CALL gravix.system.sync_partition_metadata('gravix', 'service_metrics_1m', 'FULL');
CALL gravix.system.sync_partition_metadata('gravix', 'service_metrics_1h', 'FULL');
CALL gravix.system.sync_partition_metadata('gravix', 'service_metrics_1d', 'FULL');
CALL gravix.system.sync_partition_metadata('gravix', 'archive', 'FULL');
CALL gravix.system.sync_partition_metadata('gravix', 'raw', 'FULL');
CALL gravix.system.sync_partition_metadata('gravix', 'events', 'FULL');

"""Which engine answers queries: ``query_engine`` in the settings.

``duckdb`` (the default) runs in the server process; ``spark`` starts or
joins a Spark session (``spark_master``, ``spark_conf``; the ``spark``
extra and Java 17+); ``trino`` sends SQL to a Trino coordinator
(``trino_url``, ``trino_catalog``, ``trino_schema``, ``trino_user``,
``trino_password``; the ``trino`` extra and deploy/trino/register.sql).
All three answer every query with the same columns, types and values.
"""

from __future__ import annotations

from gravix.config import Settings
from gravix.query.engine import DuckDBEngine, Engine
from gravix.storage.base import ObjectStore


def make_engine(settings: Settings, store: ObjectStore) -> Engine:
    """The query engine ``settings.query_engine`` names, over ``store``."""
    cache_dir = settings.data_dir / "cache" / "query"
    if settings.query_engine == "spark":
        from gravix.query.spark import SparkEngine

        return SparkEngine(
            store, master=settings.spark_master, conf=settings.spark_conf, cache_dir=cache_dir
        )
    if settings.query_engine == "trino":
        from gravix.query.trino import TrinoEngine

        return TrinoEngine.from_settings(settings, store)
    return DuckDBEngine(
        store,
        cache_dir=cache_dir,
        memory_limit=settings.query_memory_limit,
        spill_dir=settings.data_dir / "cache" / "query-spill",
    )

"""The series catalog in PostgreSQL: two catalogs (two nodes) racing past the caps.

Each catalog is one node's (its own engine use and memory of seen series),
both on one database of a real cluster (tests/pg.py). Batches of one new
series each come from several threads per node, in shuffled orders that
overlap, so the same series is also admitted by both nodes at once.
"""

from __future__ import annotations

import random
import threading
from pathlib import Path

import msgspec
import pytest
from sqlalchemy import create_engine, func, select

from gravix.errors import InvalidFacts
from gravix.ingest.series import SeriesCatalog
from gravix.metadata import postgresql_url
from gravix.schema import RequestFact
from gravix.schema.metadata_tables import SERIES
from tests.factories import fact
from tests.pg import pg_url, postgres

__all__ = ["pg_url", "postgres"]  # fixtures
pytestmark = pytest.mark.slow
PER_SERVICE, SERVICES, IN_ALL = 10, 3, 25
THREADS_PER_NODE = 3


def one_fact(service: str, path: str) -> RequestFact:
    return msgspec.convert(fact(service=service, path=path), RequestFact)


def test_two_nodes_racing_past_the_caps_admit_exactly_the_caps(pg_url: str, tmp_path: Path) -> None:
    nodes = [
        SeriesCatalog(
            tmp_path / name / "catalog.db",
            PER_SERVICE,
            max_services=SERVICES,
            max_series=IN_ALL,
            database_url=pg_url,
        )
        for name in ("node-a", "node-b")
    ]
    # 5 services of 20 paths each: far more than the caps let in.
    wanted = [(f"svc-{s}", f"/p{p}") for s in range(5) for p in range(20)]
    admitted: list[tuple[str, str]] = []
    refused = {"service": 0, "path": 0}
    failures: list[BaseException] = []
    lock = threading.Lock()

    def send(catalog: SeriesCatalog, seed: int) -> None:
        order = wanted[:]
        random.Random(seed).shuffle(order)
        try:
            for service, path in order:
                try:
                    catalog.admit("acme", [one_fact(service, path)])
                except InvalidFacts as e:
                    assert e.code == "series_limit", e.message
                    with lock:
                        refused[e.field or ""] += 1
                else:
                    with lock:
                        admitted.append((service, path))
        except BaseException as e:  # shown by the assertion below
            failures.append(e)

    threads = [
        threading.Thread(target=send, args=(node, seed))
        for seed in range(THREADS_PER_NODE)
        for node in nodes
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert failures == []

    engine = create_engine(postgresql_url(pg_url))
    with engine.connect() as conn:
        rows = conn.execute(select(SERIES.c.service, SERIES.c.path)).all()
        per_service = dict(
            conn.execute(select(SERIES.c.service, func.count()).group_by(SERIES.c.service)).all()
        )
    engine.dispose()
    # Exactly the caps: 3 services (every attempt of a 4th is refused), no
    # service past 10, and 25 in all (3 x 10 would be more).
    assert len(rows) == IN_ALL, per_service
    assert len(per_service) == SERVICES
    assert max(per_service.values()) <= PER_SERVICE
    # Every series a node said yes to is stored, and no other.
    assert set(admitted) == {(row.service, row.path) for row in rows}
    assert refused["service"] > 0 and refused["path"] > 0
    print(f"stored {per_service}; {len(admitted)} admissions, refused {refused}")

"""The event_id lookup of the fold: exact whatever the ids, and reading only the
row groups whose id range can hold a new id."""

from __future__ import annotations

import uuid
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gravix.rollup import fold
from gravix.schema import parquet
from gravix.schema.raw import FACT_SCHEMA
from gravix.storage.copies import LocalCopies
from gravix.storage.local import LocalObjectStore
from tests.rollup.conftest import T0


def facts(ids: list[str]) -> pa.Table:
    n = len(ids)
    return pa.table(
        {
            "event_id": ids,
            "timestamp_ms": [T0] * n,
            "service": ["shop"] * n,
            "method": ["GET"] * n,
            "path": ["/"] * n,
            "status": [200] * n,
            "latency_us": [1000] * n,
            "env": ["prod"] * n,
            "version": ["v1"] * n,
            "received_ms": [T0] * n,
        },
        schema=FACT_SCHEMA,
    )


def hour_with_parts(root: Path, parts: list[list[str]], row_group_rows: int) -> fold.HourState:
    store = LocalObjectStore(root)
    state = fold.HourState("acme", T0)
    for n, ids in enumerate(parts):
        name = f"part-{n:016x}.parquet"
        store.put(state.key(name), parquet.encode(facts(ids), row_group_rows))
        state.parts[name] = 0
    return state


def index(root: Path) -> fold.IdIndex:
    return fold.IdIndex(LocalCopies(LocalObjectStore(root)), duckdb.connect())


@settings(max_examples=60, deadline=None)
@given(
    parts=st.lists(st.lists(st.text("0123456789abcdef", min_size=1, max_size=4), max_size=30)),
    new=st.lists(st.text("0123456789abcdef", min_size=1, max_size=4), max_size=30),
    row_group_rows=st.integers(1, 8),
)
def test_the_mask_is_exact_membership(
    tmp_path_factory: pytest.TempPathFactory,
    parts: list[list[str]],
    new: list[str],
    row_group_rows: int,
) -> None:
    root = tmp_path_factory.mktemp("ids")
    held = {i for part in parts for i in part}
    state = hour_with_parts(root, [p for p in parts if p], row_group_rows)
    mask = index(root).seen(state, facts(new))
    assert mask.to_pylist() == [i in held for i in new]


def test_time_ordered_ids_read_only_the_overlapping_row_groups(tmp_path: Path) -> None:
    # UUIDv7-like: ids sort in the order they were minted; 10 parts of 1,000
    # in row groups of 250.
    ids = sorted(str(uuid.uuid4()) for _ in range(10_000))
    parts = [ids[n * 1000 : (n + 1) * 1000] for n in range(10)]
    state = hour_with_parts(tmp_path, parts, 250)
    # a retry of part 3's ids, a late fact from part 0, and ids past the last part
    new = [*ids[3100:3110], ids[5], *(f"{ids[-1]}-{n}" for n in range(20))]
    read = index(tmp_path).overlapping(state, facts(new))
    assert [Path(p).name for p in read] == [
        "part-0000000000000000.parquet",
        "part-0000000000000003.parquet",
    ]
    mask = index(tmp_path).seen(state, facts(new))
    assert mask.to_pylist() == [True] * 11 + [False] * 20


def test_a_part_name_depends_on_the_ids_in_order_not_on_how_they_are_held() -> None:
    ids = [str(uuid.uuid4()) for _ in range(50)]
    whole = pa.table({"event_id": ids})
    chunked = pa.Table.from_batches(whole.to_batches(max_chunksize=7))
    sliced = pa.table({"event_id": ["x", *ids, "y"]}).slice(1, len(ids))
    assert fold.part_name(whole) == fold.part_name(chunked) == fold.part_name(sliced)
    assert fold.part_name(pa.table({"event_id": ids[::-1]})) != fold.part_name(whole)
    split = [fold.part_name(pa.table({"event_id": pair})) for pair in (["ab", "c"], ["a", "bc"])]
    assert split[0] != split[1]

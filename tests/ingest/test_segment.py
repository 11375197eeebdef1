"""Writing segments: ids that sort by creation time, and whole sealed files.

The format itself is tested in tests/schema/test_segment.py.
"""

from __future__ import annotations

from pathlib import Path

from gravix.ingest.segment import SegmentIdGenerator, write_sealed_segment
from gravix.schema.segment import is_segment_name, read_segment, segment_created_ms


def test_segment_ids_sort_by_creation_and_never_repeat() -> None:
    ids = SegmentIdGenerator()
    made = [ids.next() for _ in range(2000)]
    assert made == sorted(made)
    assert len(set(made)) == len(made)
    assert all(is_segment_name(f"{i}.seg") and is_segment_name(f"{i}.open") for i in made)
    later = SegmentIdGenerator()
    later.observe("5000000000000-00000000.seg")  # a segment from a clock that ran ahead
    assert later.next() > "5000000000000-00000000"
    assert segment_created_ms(f"{made[0]}.seg") == int(made[0][:13])
    assert segment_created_ms("LOCK") is None
    assert not is_segment_name("0000000000001-0000000g.seg")


def test_write_sealed_segment(tmp_path: Path) -> None:
    path = write_sealed_segment(tmp_path, "0000000000001-abcdef01", [b"a", b"", b"c"])
    assert path.name == "0000000000001-abcdef01.seg"
    assert list(read_segment(path)) == [b"a", b"", b"c"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]

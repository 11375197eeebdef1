"""The segment format: encode/read round trips, torn tails and bit flips, found by scan."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gravix.schema.segment import (
    FILE_HEADER,
    FILE_HEADER_SIZE,
    QUARANTINE_DIR,
    RECORD_HEADER_SIZE,
    RECORD_MAGIC,
    CorruptSegment,
    encode_records,
    quarantined_files,
    read_segment,
    scan_segment,
)

# Payloads that like to contain the record magic, to tempt a resync into false records.
payload_strategy = st.one_of(
    st.binary(max_size=64),
    st.lists(st.sampled_from([RECORD_MAGIC, b"\x00", b"\xff", b"GVX", b"R"]), max_size=12).map(
        b"".join
    ),
)
payload_lists = st.lists(payload_strategy, max_size=12)


def segment_bytes(payloads: list[bytes]) -> bytes:
    return b"".join([FILE_HEADER, *encode_records(payloads)])


def record_offsets(payloads: list[bytes]) -> list[int]:
    """Start offset of every record, plus the end of the last one."""
    offsets = [FILE_HEADER_SIZE]
    for payload in payloads:
        offsets.append(offsets[-1] + RECORD_HEADER_SIZE + len(payload))
    return offsets


def write(directory: Path, data: bytes, name: str = "0000000000001-00000000.seg") -> Path:
    path = directory / name
    path.write_bytes(data)
    return path


@settings(max_examples=100, deadline=None)
@given(payload_lists)
def test_encode_then_read_round_trips(payloads: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = write(Path(tmp), segment_bytes(payloads))
        assert list(read_segment(path)) == payloads
        result = scan_segment(path)
        assert result.clean
        assert result.payloads == payloads
        assert [r.offset for r in result.records] == record_offsets(payloads)[:-1]


def test_empty_payload_and_magic_payload_round_trip(tmp_path: Path) -> None:
    payloads = [b"", RECORD_MAGIC, RECORD_MAGIC * 5 + b"\x00" * 16, b""]
    path = write(tmp_path, segment_bytes(payloads))
    assert list(read_segment(path)) == payloads


@settings(max_examples=100, deadline=None)
@given(st.lists(payload_strategy, min_size=1, max_size=8), st.data())
def test_any_cut_is_a_torn_tail_never_corruption(
    payloads: list[bytes], data: st.DataObject
) -> None:
    full = segment_bytes(payloads)
    cut = data.draw(st.integers(0, len(full)), label="cut")
    offsets = record_offsets(payloads)
    with tempfile.TemporaryDirectory() as tmp:
        result = scan_segment(write(Path(tmp), full[:cut]))
    assert result.corrupt == []
    complete = sum(1 for end in offsets[1:] if end <= cut)
    assert result.payloads == payloads[:complete]
    at_boundary = cut in offsets or cut == 0
    assert (result.torn_tail is None) == at_boundary
    if result.torn_tail is not None:
        assert result.torn_tail == (offsets[complete] if cut >= FILE_HEADER_SIZE else 0)


@settings(max_examples=150, deadline=None)
@given(st.lists(payload_strategy, min_size=3, max_size=6), st.data())
def test_a_flipped_bit_is_detected_and_others_survive(
    payloads: list[bytes], data: st.DataObject
) -> None:
    victim = data.draw(st.integers(1, len(payloads) - 2), label="victim")
    offsets = record_offsets(payloads)
    start, end = offsets[victim], offsets[victim + 1]
    bit = data.draw(st.integers(start * 8, end * 8 - 1), label="bit")
    damaged = bytearray(segment_bytes(payloads))
    damaged[bit // 8] ^= 1 << (bit % 8)
    with tempfile.TemporaryDirectory() as tmp:
        path = write(Path(tmp), bytes(damaged))
        result = scan_segment(path)
        assert result.corrupt, "a flipped bit must be seen as corruption"
        assert result.torn_tail is None
        assert result.payloads == payloads[:victim] + payloads[victim + 1 :]
        with pytest.raises(CorruptSegment) as info:
            list(read_segment(path))
        assert info.value.offset == start


def test_flip_in_the_last_record_is_corrupt_not_torn(tmp_path: Path) -> None:
    # The last record may have been acknowledged: keep it for a human, don't cut it.
    payloads = [b"a" * 40, b"b" * 40]
    damaged = bytearray(segment_bytes(payloads))
    damaged[record_offsets(payloads)[1] + 5] ^= 0x10  # inside the length field
    result = scan_segment(write(tmp_path, bytes(damaged)))
    assert result.corrupt and result.torn_tail is None
    assert result.payloads == [b"a" * 40]


def test_trailing_zeros_are_a_torn_tail(tmp_path: Path) -> None:
    good = segment_bytes([b"one", b"two"])
    result = scan_segment(write(tmp_path, good + b"\x00" * 4096))
    assert result.torn_tail == len(good)
    assert result.corrupt == []
    assert result.payloads == [b"one", b"two"]


def test_zeros_followed_by_a_record_are_corrupt(tmp_path: Path) -> None:
    data = segment_bytes([b"one"]) + b"\x00" * 100 + encode_records([b"two"])[0] + b"two"
    result = scan_segment(write(tmp_path, data))
    assert result.payloads == [b"one", b"two"]
    assert len(result.corrupt) == 1


def test_trailing_garbage_is_corrupt(tmp_path: Path) -> None:
    good = segment_bytes([b"one"])
    result = scan_segment(write(tmp_path, good + b"\x01garbage garbage garbage"))
    assert result.corrupt == [(len(good), len(good) + 24)]


def test_file_header(tmp_path: Path) -> None:
    assert scan_segment(write(tmp_path, b"")).clean
    assert scan_segment(write(tmp_path, FILE_HEADER[:3])).torn_tail == 0
    assert scan_segment(write(tmp_path, b"\x00" * 40)).torn_tail == 0
    assert scan_segment(write(tmp_path, b"nonsense")).corrupt == [(0, 8)]
    wrong_version = b"GVXS\x02\x00\x00\x00" + segment_bytes([b"x"])[FILE_HEADER_SIZE:]
    result = scan_segment(write(tmp_path, wrong_version))
    assert result.corrupt == [(0, FILE_HEADER_SIZE)]
    assert result.payloads == [b"x"]
    with pytest.raises(CorruptSegment, match="bad file header"):
        list(read_segment(write(tmp_path, wrong_version)))


def test_read_segment_rejects_a_torn_tail(tmp_path: Path) -> None:
    data = segment_bytes([b"hello", b"world"])
    path = write(tmp_path, data[:-2])
    # The whole segment is checked before the first payload is handed out, so a
    # reader never acts on part of a damaged segment.
    reader = read_segment(path)
    with pytest.raises(CorruptSegment, match="truncated record payload"):
        next(reader)


def test_quarantined_files(tmp_path: Path) -> None:
    assert quarantined_files(tmp_path) == []  # no quarantine/ yet
    (tmp_path / QUARANTINE_DIR).mkdir()
    (tmp_path / QUARANTINE_DIR / "b.seg.1").write_bytes(b"x")
    (tmp_path / QUARANTINE_DIR / "a.seg").write_bytes(b"")
    (tmp_path / QUARANTINE_DIR / "notes").mkdir()
    assert [p.name for p in quarantined_files(tmp_path)] == ["a.seg", "b.seg.1"]

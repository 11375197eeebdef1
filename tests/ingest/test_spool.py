"""The write-ahead spool: group commit, rotation, recovery, faults, refusals, worker slots."""

from __future__ import annotations

import asyncio
import errno
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from gravix.errors import ServiceUnavailable
from gravix.ingest import appender
from gravix.ingest.spool import SpoolWriter, claim_spool_dir
from gravix.schema.segment import FILE_HEADER_SIZE, RECORD_HEADER_SIZE, RECORD_MAGIC, read_segment

KIB = 1024


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def read_all(spool: SpoolWriter) -> list[bytes]:
    """Every payload of every sealed segment, oldest segment first (strict reader)."""
    return [payload for path in spool.sealed_segments() for payload in read_segment(path)]


def names(directory: Path, suffix: str) -> list[str]:
    return sorted(p.name for p in directory.glob(f"*{suffix}"))


@pytest.fixture
def make_spool(tmp_path: Path) -> Iterator[Callable[..., SpoolWriter]]:
    made: list[SpoolWriter] = []

    def make(directory: Path | None = None, **options: Any) -> SpoolWriter:
        options.setdefault("min_free_bytes", 0)
        spool = SpoolWriter(directory or tmp_path / "spool", **options)
        spool.open()
        made.append(spool)
        return spool

    yield make
    for spool in made:
        spool.close()


def failing(err: int, calls: list[int] | None = None) -> Callable[..., Any]:
    def fail(*args: Any) -> Any:
        if calls is not None:
            calls.append(1)
        raise OSError(err, os.strerror(err))

    return fail


# --- round trip and group commit ----------------------------------------------


@settings(max_examples=15, deadline=None)
@given(
    st.lists(
        st.one_of(st.binary(max_size=300), st.just(b""), st.just(RECORD_MAGIC * 3)), max_size=20
    ),
    st.sampled_from([256, 4 * KIB, 1024 * KIB]),
)
def test_appended_payloads_read_back_identical(payloads: list[bytes], max_bytes: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        spool = SpoolWriter(Path(tmp), segment_max_bytes=max_bytes, min_free_bytes=0)
        spool.open()
        for payload in payloads:
            spool.append_blocking(payload)
        spool.close()
        assert read_all(spool) == payloads
        assert names(Path(tmp), ".open") == []


def test_concurrent_appends_share_fsyncs(make_spool: Callable[..., SpoolWriter]) -> None:
    spool = make_spool()
    payloads = [f"request-{i}".encode() * 10 for i in range(200)]
    fsyncs = metric("spool_fsyncs_total")
    commits = metric("spool_commit_records_count")

    async def main() -> None:
        await asyncio.gather(*(spool.append(p) for p in payloads))

    asyncio.run(main())
    used = metric("spool_fsyncs_total") - fsyncs
    assert 1 <= used <= 20, f"{used} fsyncs for 200 concurrent appends"
    assert metric("spool_commit_records_count") - commits == used
    spool.close()
    assert sorted(read_all(spool)) == sorted(payloads)


def test_group_commit_from_threads(make_spool: Callable[..., SpoolWriter]) -> None:
    spool = make_spool()
    records = metric("spool_commit_records_sum")
    threads = [
        threading.Thread(target=lambda i=i: [spool.append_blocking(b"%d" % i) for _ in range(20)])
        for i in range(10)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert metric("spool_commit_records_sum") - records == 200  # each in exactly one commit
    spool.close()
    assert len(read_all(spool)) == 200


# --- rotation ----------------------------------------------------------------------


def test_rotation_by_size(make_spool: Callable[..., SpoolWriter], tmp_path: Path) -> None:
    spool = make_spool(segment_max_bytes=256)
    payloads = [bytes([i]) * 50 for i in range(20)]  # 66 bytes a record: 3 per segment
    for payload in payloads:
        spool.append_blocking(payload)
    sealed = spool.sealed_segments()
    assert len(sealed) >= 5
    assert (
        sealed
        == sorted(sealed)
        == [tmp_path / "spool" / n for n in names(sealed[0].parent, ".seg")]
    )
    assert all(p.stat().st_size <= 256 for p in sealed)
    spool.close()
    assert read_all(spool) == payloads  # oldest first means append order


def test_a_record_bigger_than_a_segment_gets_its_own(
    make_spool: Callable[..., SpoolWriter],
) -> None:
    spool = make_spool(segment_max_bytes=100)
    spool.append_blocking(b"small")
    spool.append_blocking(b"x" * 500)
    spool.append_blocking(b"small again")
    spool.close()
    assert [len(list(read_segment(p))) for p in spool.sealed_segments()] == [1, 1, 1]
    assert read_all(spool) == [b"small", b"x" * 500, b"small again"]


def test_rotation_by_age_without_traffic(make_spool: Callable[..., SpoolWriter]) -> None:
    spool = make_spool(segment_max_age_seconds=0.05)
    directory = spool.directory
    spool.append_blocking(b"lonely")
    assert len(names(directory, ".open")) == 1
    deadline = time.monotonic() + 5
    while names(directory, ".open") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert names(directory, ".open") == []
    time.sleep(0.15)  # and no empty segment appears after it
    assert len(names(directory, ".seg")) == 1
    spool.append_blocking(b"next")
    spool.close()
    assert read_all(spool) == [b"lonely", b"next"]
    assert len(spool.sealed_segments()) == 2


def test_seal_now_and_stats(make_spool: Callable[..., SpoolWriter]) -> None:
    spool = make_spool()
    spool.seal_now()  # nothing to seal: no empty segment
    assert spool.sealed_segments() == []
    spool.append_blocking(b"a" * 100)
    stats = spool.stats()
    record = FILE_HEADER_SIZE + RECORD_HEADER_SIZE + 100
    assert (stats.bytes, stats.pending_segments, stats.open_segment_bytes) == (record, 0, record)
    assert stats.oldest_sealed_age_seconds is None
    spool.seal_now()
    stats = spool.stats()
    assert (stats.bytes, stats.pending_segments, stats.open_segment_bytes) == (record, 1, 0)
    assert stats.oldest_sealed_age_seconds is not None
    assert 0 <= stats.oldest_sealed_age_seconds < 60
    assert metric("spool_pending_segments") == 1
    spool.remove_segment(spool.sealed_segments()[0])
    assert spool.stats().bytes == 0
    assert metric("spool_bytes") == 0


def test_reopen_keeps_sealed_segments_in_order(tmp_path: Path) -> None:
    first = SpoolWriter(tmp_path, min_free_bytes=0)
    first.open()
    first.append_blocking(b"old")
    first.close()
    first.close()  # idempotent
    second = SpoolWriter(tmp_path, min_free_bytes=0)
    report = second.open()
    assert report.segments_scanned == 1 and report.quarantined == []
    second.append_blocking(b"new")
    second.close()
    assert read_all(second) == [b"old", b"new"]


def test_remove_segment(make_spool: Callable[..., SpoolWriter]) -> None:
    spool = make_spool()
    spool.append_blocking(b"x")
    spool.seal_now()
    (segment,) = spool.sealed_segments()
    spool.remove_segment(segment)
    spool.remove_segment(segment)  # a retried removal is fine
    assert not segment.exists()
    assert spool.sealed_segments() == []
    (spool.directory / "stray").write_bytes(b"")
    with pytest.raises(ValueError):
        spool.remove_segment(spool.directory / "stray")


# --- recovery --------------------------------------------------------------------


def crashed_segment(tmp_path: Path, payloads: list[bytes]) -> bytes:
    """The bytes of an .open segment as a crash would leave them."""
    spool = SpoolWriter(tmp_path / "source", min_free_bytes=0)
    spool.open()
    for payload in payloads:
        spool.append_blocking(payload)
    spool.close()
    (segment,) = spool.sealed_segments()
    return segment.read_bytes()


def test_torn_tail_at_any_offset_is_truncated(tmp_path: Path) -> None:
    payloads = [b"alpha", b"", b"gamma" * 4, RECORD_MAGIC + b"delta"]
    data = crashed_segment(tmp_path, payloads)
    ends = [FILE_HEADER_SIZE]
    for p in payloads:
        ends.append(ends[-1] + RECORD_HEADER_SIZE + len(p))
    assert ends[-1] == len(data)
    torn_before = metric("spool_torn_tails_total")
    torn_expected = 0
    for cut in range(len(data)):
        directory = tmp_path / f"cut{cut}"
        directory.mkdir()
        (directory / "1700000000000-0badc0de.open").write_bytes(data[:cut])
        spool = SpoolWriter(directory, min_free_bytes=0)
        report = spool.open()
        spool.close()
        complete = sum(1 for end in ends[1:] if end <= cut)
        torn = cut not in ends and cut != 0
        torn_expected += torn
        assert read_all(spool) == payloads[:complete], cut
        assert report.quarantined == [] and not (directory / "quarantine").exists()
        assert report.torn_tails == torn
        assert names(directory, ".open") == []
        if complete == 0:
            assert names(directory, ".seg") == []  # nothing to keep, no empty segment
    assert metric("spool_torn_tails_total") - torn_before == torn_expected


def test_flipped_bit_quarantines_and_keeps_the_rest(tmp_path: Path) -> None:
    payloads = [b"first" * 3, b"second" * 5, b"third" * 4, b"fourth"]
    data = crashed_segment(tmp_path, payloads)
    start = FILE_HEADER_SIZE + RECORD_HEADER_SIZE + len(payloads[0])
    end = start + RECORD_HEADER_SIZE + len(payloads[1])
    rng = random.Random(7)
    header_bits = range(start * 8, (start + RECORD_HEADER_SIZE) * 8)
    payload_bits = range((start + RECORD_HEADER_SIZE) * 8, end * 8)
    bits = rng.sample(header_bits, 40) + rng.sample(payload_bits, 20)
    quarantined = metric("spool_quarantined_segments_total")
    for n, bit in enumerate(bits):
        damaged = bytearray(data)
        damaged[bit // 8] ^= 1 << (bit % 8)
        directory = tmp_path / f"flip{n}"
        directory.mkdir()
        suffix = ".open" if n % 2 else ".seg"
        (directory / f"1700000000000-0badc0de{suffix}").write_bytes(damaged)
        spool = SpoolWriter(directory, min_free_bytes=0)
        report = spool.open()
        spool.close()
        assert read_all(spool) == [payloads[0], payloads[2], payloads[3]], bit
        assert report.quarantined == [directory / "quarantine" / f"1700000000000-0badc0de{suffix}"]
        assert report.quarantined[0].read_bytes() == damaged  # kept as it was found
        assert report.records_recovered == 3
    assert metric("spool_quarantined_segments_total") - quarantined == len(bits)


def test_segment_without_valid_records_is_just_quarantined(tmp_path: Path) -> None:
    (tmp_path / "1700000000000-0badc0de.seg").write_bytes(b"\x01" * 100)
    spool = SpoolWriter(tmp_path, min_free_bytes=0)
    report = spool.open()
    spool.close()
    assert report.records_recovered == 0
    assert [p.name for p in report.quarantined] == ["1700000000000-0badc0de.seg"]
    assert spool.sealed_segments() == []


def test_recovery_scans_sealed_segments_and_ignores_other_files(tmp_path: Path) -> None:
    data = crashed_segment(tmp_path, [b"keep"])
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    (spool_dir / "1700000000000-00000001.seg").write_bytes(data)
    (spool_dir / "1700000000001-00000002.open").write_bytes(b"")  # crashed right after create
    (spool_dir / "LOCK").write_bytes(b"123\n")
    (spool_dir / "notes.txt").write_bytes(b"not a segment")
    spool = SpoolWriter(spool_dir, min_free_bytes=0)
    report = spool.open()
    spool.close()
    assert report.segments_scanned == 2
    assert read_all(spool) == [b"keep"]
    assert sorted(p.name for p in spool_dir.iterdir()) == [
        "1700000000000-00000001.seg",
        "LOCK",
        "notes.txt",
    ]


# --- faults ----------------------------------------------------------------------


def test_fsync_failure_fails_the_commit_and_retires_the_segment(
    make_spool: Callable[..., SpoolWriter],
) -> None:
    spool = make_spool()
    directory = spool.directory
    spool.append_blocking(b"acked")
    (before,) = names(directory, ".open")
    errors = metric("spool_write_errors_total", reason="fsync")
    spool._appender.fsync = failing(errno.EIO)
    with pytest.raises(ServiceUnavailable) as info:
        spool.append_blocking(b"never acked")
    assert info.value.code == "spool_write_failed"
    assert info.value.retry_after and info.value.headers()["Retry-After"]
    assert metric("spool_write_errors_total", reason="fsync") - errors == 1
    assert names(directory, ".open") == []  # sealed, never written to again
    assert names(directory, ".seg") == [before.replace(".open", ".seg")]
    assert not spool.healthy
    spool._appender.fsync = os.fsync
    spool.append_blocking(b"after")
    assert len(names(directory, ".open")) == 1 and names(directory, ".open") != [before]
    spool.close()
    assert read_all(spool) == [b"acked", b"after"]


def test_fsync_failure_on_a_fresh_segment_leaves_no_empty_file(
    make_spool: Callable[..., SpoolWriter],
) -> None:
    spool = make_spool()
    real = os.fsync
    file_fsyncs: list[int] = []

    def fail_files_only(fd: int) -> None:
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            return real(fd)
        file_fsyncs.append(fd)
        raise OSError(errno.EIO, "injected")

    spool._appender.fsync = fail_files_only
    with pytest.raises(ServiceUnavailable):
        spool.append_blocking(b"lost but never acked")
    assert file_fsyncs
    assert names(spool.directory, ".open") == [] and names(spool.directory, ".seg") == []
    spool._appender.fsync = real
    spool.append_blocking(b"ok")
    spool.close()
    assert read_all(spool) == [b"ok"]


def test_write_failure_truncates_and_reuses_the_segment(
    make_spool: Callable[..., SpoolWriter],
) -> None:
    spool = make_spool()
    directory = spool.directory
    spool.append_blocking(b"acked")
    (segment,) = names(directory, ".open")
    size = (directory / segment).stat().st_size
    real = os.pwrite

    def short_then_enospc(fd: int, data: Any, offset: int) -> int:
        spool._appender.pwrite = failing(errno.ENOSPC)
        return real(fd, bytes(data[:7]), offset)  # a partial write, as a filling disk does

    spool._appender.pwrite = short_then_enospc
    with pytest.raises(ServiceUnavailable) as info:
        spool.append_blocking(b"x" * 100)
    assert info.value.code == "spool_write_failed"
    assert (directory / segment).stat().st_size == size  # truncated back
    assert spool.stats().bytes == size
    spool._appender.pwrite = real
    spool.append_blocking(b"after")
    assert names(directory, ".open") == [segment]
    spool.close()
    assert read_all(spool) == [b"acked", b"after"]  # strict reader: no garbage in between


def test_failed_truncate_after_failed_write_retires_the_segment(
    make_spool: Callable[..., SpoolWriter],
) -> None:
    spool = make_spool()
    spool.append_blocking(b"acked")
    rotation_errors = metric("batch_rotation_errors_total")
    real_pwrite, real_truncate = os.pwrite, os.ftruncate

    def garbage_then_eio(fd: int, data: Any, offset: int) -> int:
        real_pwrite(fd, b"\x01garbage", offset)
        raise OSError(errno.EIO, "injected")

    spool._appender.pwrite = garbage_then_eio
    spool._appender.ftruncate = failing(errno.EIO)
    with pytest.raises(ServiceUnavailable):
        spool.append_blocking(b"y")
    assert metric("batch_rotation_errors_total") - rotation_errors >= 1
    spool._appender.pwrite, spool._appender.ftruncate = real_pwrite, real_truncate
    spool.append_blocking(b"in a new segment")
    assert len(names(spool.directory, ".open")) == 2  # the retired one awaits its seal
    spool.close()  # retries the seal, which now truncates the garbage away
    assert names(spool.directory, ".open") == []
    assert read_all(spool) == [b"acked", b"in a new segment"]


def test_failed_rename_is_counted_and_retried(
    make_spool: Callable[..., SpoolWriter], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(appender, "SEAL_RETRY_SECONDS", 0.05)
    spool = make_spool()
    spool.append_blocking(b"one")
    rotation_errors = metric("batch_rotation_errors_total")
    spool._appender.rename = failing(errno.EIO)
    spool.seal_now()
    assert metric("batch_rotation_errors_total") - rotation_errors == 1
    assert spool.sealed_segments() == []
    spool.append_blocking(b"two")  # goes to a new segment, never to the unsealed one
    assert len(names(spool.directory, ".open")) == 2
    spool._appender.rename = os.rename
    deadline = time.monotonic() + 5  # the writer retries on its own
    while len(names(spool.directory, ".open")) > 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(spool.sealed_segments()) == 1
    spool.close()
    assert read_all(spool) == [b"one", b"two"]


def test_intake_resumes_after_errors_without_restart(
    make_spool: Callable[..., SpoolWriter],
) -> None:
    spool = make_spool()
    calls: list[int] = []
    spool._appender.pwrite = failing(errno.ENOSPC, calls)

    async def burst(n: int) -> list[BaseException | None]:
        return await asyncio.gather(
            *(spool.append(b"%d" % i) for i in range(n)), return_exceptions=True
        )

    results = asyncio.run(burst(50))
    assert all(isinstance(r, ServiceUnavailable) for r in results)
    assert len(calls) < 50  # a failing disk is not hammered once per request
    spool._appender.pwrite = os.pwrite
    assert asyncio.run(burst(50)) == [None] * 50
    spool.close()
    assert len(read_all(spool)) == 50


# --- refusals before touching disk --------------------------------------------------


def test_high_water_mark_refuses_until_the_uploader_catches_up(
    make_spool: Callable[..., SpoolWriter],
) -> None:
    spool = make_spool(high_water_bytes=200)
    spool.append_blocking(b"x" * 300)
    rejections = metric("spool_rejections_total", reason="high_water")
    with pytest.raises(ServiceUnavailable) as info:
        spool.append_blocking(b"y")
    assert info.value.status == 503 and info.value.code == "spool_full"
    assert info.value.retry_after
    assert metric("spool_rejections_total", reason="high_water") - rejections == 1
    assert not spool.healthy
    spool.seal_now()
    spool.remove_segment(spool.sealed_segments()[0])
    assert spool.healthy
    spool.append_blocking(b"y")


def test_low_free_space_refuses(make_spool: Callable[..., SpoolWriter]) -> None:
    spool = make_spool(min_free_bytes=1 << 62)
    with pytest.raises(ServiceUnavailable) as info:
        spool.append_blocking(b"x")
    assert info.value.code == "spool_full" and info.value.retry_after
    assert "free" in info.value.message
    assert not spool.healthy
    assert not any(spool.directory.iterdir())  # refused before touching disk
    spool.min_free_bytes = 0
    time.sleep(0.3)  # free space is re-read within a quarter of a second
    spool.append_blocking(b"x")


def test_closed_or_unopened_spool_refuses(tmp_path: Path) -> None:
    spool = SpoolWriter(tmp_path, min_free_bytes=0)
    with pytest.raises(ServiceUnavailable, match="closed"):
        spool.append_blocking(b"x")
    assert not spool.healthy
    spool.open()
    assert spool.healthy
    spool.close()
    with pytest.raises(ServiceUnavailable) as info:
        asyncio.run(spool.append(b"x"))
    assert info.value.code == "spool_closed"


def test_close_drains_in_flight_appends(tmp_path: Path) -> None:
    spool = SpoolWriter(tmp_path, min_free_bytes=0, segment_max_bytes=4 * KIB)
    spool.open()
    acked: list[bytes] = []
    refused: list[bytes] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        for i in range(1000):
            payload = b"%d-%d" % (n, i)
            try:
                spool.append_blocking(payload, timeout=10)
            except ServiceUnavailable:
                with lock:
                    refused.append(payload)
                return
            with lock:
                acked.append(payload)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    spool.close()
    for t in threads:
        t.join()
    assert acked and len(refused) == 8  # every client saw either success or a 503
    on_disk = read_all(spool)
    assert set(acked) <= set(on_disk)
    assert names(tmp_path, ".open") == []


def test_close_during_async_burst(tmp_path: Path) -> None:
    spool = SpoolWriter(tmp_path, min_free_bytes=0)
    spool.open()

    async def main() -> list[BaseException | None]:
        tasks = [asyncio.ensure_future(spool.append(b"%d" % i)) for i in range(300)]
        await asyncio.sleep(0)
        await asyncio.get_running_loop().run_in_executor(None, spool.close)
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(main())
    acked = {b"%d" % i for i, r in enumerate(results) if r is None}
    assert all(r is None or isinstance(r, ServiceUnavailable) for r in results)
    assert acked <= set(read_all(spool))


# --- worker slots ----------------------------------------------------------------


def test_claim_spool_dir(tmp_path: Path) -> None:
    first, fd0 = claim_spool_dir(tmp_path)
    second, fd1 = claim_spool_dir(tmp_path)
    assert (first.name, second.name) == ("w0", "w1")
    assert (first / "LOCK").read_text() == f"{os.getpid()}\n"
    with pytest.raises(ServiceUnavailable):
        claim_spool_dir(tmp_path, max_slots=2)
    os.close(fd0)  # the worker owning w0 died: its directory is free for a successor
    again, fd2 = claim_spool_dir(tmp_path)
    assert again.name == "w0"
    os.close(fd1)
    os.close(fd2)


def test_claim_spool_dir_across_processes(tmp_path: Path) -> None:
    _, fd = claim_spool_dir(tmp_path)
    code = (
        "import sys; from pathlib import Path; from gravix.ingest.spool import claim_spool_dir;"
        "print(claim_spool_dir(Path(sys.argv[1]))[0].name)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "w1"  # its lock died with it: w1 is free again
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "w1"
    os.close(fd)

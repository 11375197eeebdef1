"""Damaged segments (issue 16, item 2): a sealed one is quarantined whole, never cut.

A sealed ``.seg`` was fsynced whole before its rename, so any damage in it is
corruption: recovery moves it, byte for byte, into ``quarantine/`` and copies
every record that still checks into a new sealed segment. Only an ``.open``
segment may end in a torn tail, and only its tail is cut.

The segments are written by a real :class:`SpoolWriter` (every record was
acknowledged), then one file is damaged: a zeroed range, a truncation or
flipped bits, at any offset, in a sealed or in the open segment.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from gravix.ingest.keys import KeyStore
from gravix.ingest.spool import SpoolWriter
from gravix.schema import RequestFact, SpoolBatch, decode_batch, encode_batch
from gravix.schema.segment import (
    FILE_HEADER_SIZE,
    OPEN_SUFFIX,
    QUARANTINE_DIR,
    SEALED_SUFFIX,
    read_segment,
    scan_segment,
)
from tests.api.test_sessions import PASSWORD, build_api, login
from tests.factories import fact
from tests.procs import ServerProcess

KINDS = ("zeroed", "truncated", "flipped")


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


@dataclass(frozen=True)
class Record:
    start: int
    end: int
    event_ids: tuple[str, ...]


class Spool:
    """Segment files as a real SpoolWriter left them, and the facts it acknowledged."""

    def __init__(self, files: dict[str, bytes], records: dict[str, list[Record]]) -> None:
        self.files = files
        self.records = records

    def __repr__(self) -> str:  # Hypothesis prints its arguments: sizes, not every byte
        return f"Spool({ {name: len(data) for name, data in self.files.items()} })"

    def sealed(self) -> list[str]:
        return sorted(n for n in self.files if n.endswith(SEALED_SUFFIX))

    def open(self) -> list[str]:
        return sorted(n for n in self.files if n.endswith(OPEN_SUFFIX))

    def write(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in self.files.items():
            (directory / name).write_bytes(data)


def read_spool(directory: Path) -> Spool:
    files: dict[str, bytes] = {}
    records: dict[str, list[Record]] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix not in (SEALED_SUFFIX, OPEN_SUFFIX):
            continue
        files[path.name] = path.read_bytes()
        result = scan_segment(path)
        assert result.clean, path
        records[path.name] = [
            Record(
                r.offset,
                r.offset + 16 + len(r.payload),
                tuple(f.event_id for f in decode_batch(r.payload).facts),
            )
            for r in result.records
        ]
    return Spool(files, records)


def batch(event_ids: list[str]) -> bytes:
    facts = [msgspec.convert(fact(event_id=i), RequestFact) for i in event_ids]
    return encode_batch(SpoolBatch("acme", int(time.time() * 1000), facts=facts))


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Spool:
    """Three sealed segments and one left ``.open`` (as a crash leaves it), all acknowledged."""
    directory = tmp_path_factory.mktemp("written")
    spool = SpoolWriter(directory, min_free_bytes=0)
    spool.open()
    for segment, count in enumerate((4, 5, 3, 4)):
        for r in range(count):
            # append_blocking returns only once the record is fsynced: acknowledged.
            spool.append_blocking(batch([f"s{segment}-r{r}-f{i}" for i in range(3)]))
        spool.seal_now()
    spool.close()
    last = sorted(directory.glob(f"*{SEALED_SUFFIX}"))[-1]
    last.rename(last.with_suffix(OPEN_SUFFIX))
    return read_spool(directory)


# --- damage -----------------------------------------------------------------


@dataclass(frozen=True)
class Damage:
    kind: str
    start: int  # first damaged byte (the cut, for a truncation)
    end: int  # one past the last damaged byte
    bits: tuple[int, ...] = ()

    def apply(self, data: bytes) -> bytes:
        if self.kind == "truncated":
            return data[: self.start]
        if self.kind == "zeroed":
            return data[: self.start] + bytes(self.end - self.start) + data[self.end :]
        damaged = bytearray(data)
        for bit in self.bits:
            damaged[bit // 8] ^= 1 << (bit % 8)
        return bytes(damaged)


@st.composite
def damages(draw: st.DrawFn, size: int, boundaries: list[int]) -> Damage:
    kind = draw(st.sampled_from(KINDS), label="kind")
    # Record boundaries and the file header's end are where a classifier slips.
    offset = st.one_of(
        st.integers(0, size - 1), st.sampled_from([b for b in boundaries if b < size])
    )
    start = draw(offset, label="start")
    if kind == "truncated":
        return Damage(kind, start, size)
    if kind == "zeroed":
        length = draw(st.one_of(st.integers(1, 40), st.just(size - start)), label="length")
        return Damage(kind, start, min(size, start + length))
    bits = draw(
        st.lists(st.integers(start * 8, min(size, start + 32) * 8 - 1), min_size=1, max_size=3),
        label="bits",
    )
    return Damage(kind, min(bits) // 8, max(bits) // 8 + 1, tuple(bits))


def boundaries(records: list[Record]) -> list[int]:
    return [FILE_HEADER_SIZE, *(r.start for r in records), *(r.end for r in records)]


def undamaged_ids(spool: Spool, victim: str, damaged: bytes) -> set[str]:
    """Facts of every record the damage left intact, in any file."""
    return {
        event_id
        for name, records in spool.records.items()
        for record in records
        # Zeroing bytes that were zero already leaves a record intact.
        if name != victim
        or spool.files[name][record.start : record.end] == damaged[record.start : record.end]
        for event_id in record.event_ids
    }


def spooled_ids(directory: Path) -> list[str]:
    """Facts in the spool's segments after recovery; every one must read strictly."""
    found: list[str] = []
    for path in sorted(directory.glob(f"*{SEALED_SUFFIX}")):
        for payload in read_segment(path):  # raises if a damaged segment was left behind
            found.extend(f.event_id for f in decode_batch(payload).facts)
    return found


def check_recovered(
    directory: Path, spool: Spool, victim: str, damaged: bytes, quarantined_delta: float
) -> None:
    """The invariants of recovery after one file of ``spool`` became ``damaged``."""
    assert list(directory.glob(f"*{OPEN_SUFFIX}")) == []
    assert undamaged_ids(spool, victim, damaged) <= set(spooled_ids(directory))
    kept = directory / QUARANTINE_DIR / victim
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / victim
        probe.write_bytes(damaged)
        result = scan_segment(probe)  # what the damage looks like to the scanner
    if victim.endswith(SEALED_SUFFIX):
        if result.clean and result.records:
            # Cut exactly at a record boundary: the format cannot tell (no record
            # count or trailer). Recovery leaves the file exactly as it found it.
            assert (directory / victim).read_bytes() == damaged
            assert quarantined_delta == 0
        else:
            # Never deleted, never shortened: every byte is kept in quarantine.
            assert kept.read_bytes() == damaged
            assert not (directory / victim).exists()
            assert quarantined_delta == 1
    elif result.corrupt:
        # Damage followed by anything but zeros is corruption in an .open segment too.
        assert kept.read_bytes() == damaged
        assert quarantined_delta == 1
    else:
        # A torn tail (a cut, or zeros to the end): only the tail goes.
        assert not kept.exists() and quarantined_delta == 0
        sealed = directory / Path(victim).with_suffix(SEALED_SUFFIX)
        if result.records:
            assert sealed.read_bytes() == damaged[: result.torn_tail]
        else:
            assert not sealed.exists()
    # The files nobody damaged are untouched.
    for name, data in spool.files.items():
        if name != victim and name.endswith(SEALED_SUFFIX):
            assert (directory / name).read_bytes() == data


def recover(directory: Path) -> float:
    """Open and close a SpoolWriter on ``directory``: the spool's start-up recovery.

    Returns how many segments it quarantined.
    """
    before = metric("spool_quarantined_segments_total")
    spool = SpoolWriter(directory, min_free_bytes=0)
    spool.open()
    spool.close()
    quarantine = directory / QUARANTINE_DIR
    present = len(list(quarantine.iterdir())) if quarantine.exists() else 0
    assert metric("spool_quarantined_files") == present
    return metric("spool_quarantined_segments_total") - before


# --- in-process recovery, any damage --------------------------------------------


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.data())
def test_any_damage_loses_only_the_damaged_records(written: Spool, data: st.DataObject) -> None:
    victim = data.draw(
        st.one_of(st.sampled_from(written.sealed()), st.sampled_from(written.open())),
        label="victim",
    )
    original = written.files[victim]
    damage = data.draw(damages(len(original), boundaries(written.records[victim])), label="damage")
    damaged = damage.apply(original)
    assume(damaged != original)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "w0"
        written.write(directory)
        (directory / victim).write_bytes(damaged)
        delta = recover(directory)
        check_recovered(directory, written, victim, damaged, delta)
        # A second start finds nothing left to do.
        assert recover(directory) == 0


# --- the two reported cases -----------------------------------------------------


def damage_and_recover(tmp_path: Path, written: Spool, damage: Damage) -> tuple[Path, str, bytes]:
    directory = tmp_path / "w0"
    written.write(directory)
    victim = written.sealed()[1]
    damaged = damage.apply(written.files[victim])
    (directory / victim).write_bytes(damaged)
    delta = recover(directory)
    check_recovered(directory, written, victim, damaged, delta)
    return directory, victim, damaged


def test_sealed_segment_zeroed_after_its_header_is_quarantined(
    tmp_path: Path, written: Spool
) -> None:
    size = len(written.files[written.sealed()[1]])
    directory, victim, _ = damage_and_recover(
        tmp_path, written, Damage("zeroed", FILE_HEADER_SIZE, size)
    )
    assert (directory / QUARANTINE_DIR / victim).stat().st_size == size


def test_sealed_segment_with_its_last_record_cut_is_quarantined(
    tmp_path: Path, written: Spool
) -> None:
    victim = written.sealed()[1]
    last = written.records[victim][-1]
    directory, _, damaged = damage_and_recover(
        tmp_path, written, Damage("truncated", last.end - 3, len(written.files[victim]))
    )
    # The records before the cut are copied into a new sealed segment.
    survivors = {i for r in written.records[victim][:-1] for i in r.event_ids}
    assert survivors <= set(spooled_ids(directory))
    assert (directory / QUARANTINE_DIR / victim).read_bytes() == damaged


def test_damage_in_the_middle_of_an_open_segment_is_not_a_torn_tail(
    tmp_path: Path, written: Spool
) -> None:
    directory = tmp_path / "w0"
    written.write(directory)
    victim = written.open()[0]
    records = written.records[victim]
    # Zeros over the second record, valid records after it: corruption, not a crash.
    damaged = Damage("zeroed", records[1].start, records[1].end).apply(written.files[victim])
    (directory / victim).write_bytes(damaged)
    delta = recover(directory)
    check_recovered(directory, written, victim, damaged, delta)
    assert delta == 1
    after = {i for r in records[2:] for i in r.event_ids}
    assert after <= set(spooled_ids(directory))


# --- a real `gravix serve` restart ------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Spool]:
    """A data dir whose spool a real server filled with acknowledged facts, then crashed."""
    data_dir = tmp_path_factory.mktemp("served") / "data"
    data_dir.mkdir()
    key = KeyStore(data_dir / "keys.db").create("acme")[1]
    env = {"GRAVIX_SEGMENT_MAX_BYTES": "4096", "GRAVIX_UPLOADER_ENABLED": "false"}
    acked: list[str] = []
    with ServerProcess(data_dir, env=env) as server:
        with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=10) as client:
            for b in range(12):
                ids = [f"p{b}-{i}" for i in range(10)]
                r = client.post(f"{server.url}/api/v1/facts", json=[fact(event_id=i) for i in ids])
                assert r.status_code == 202, r.text
                acked.extend(ids)
        server.kill9()  # leaves the active segment .open, as any crash does
    spool = read_spool(data_dir / "spool" / "w0")
    assert len(spool.sealed()) >= 3 and len(spool.open()) == 1
    assert sorted(i for rs in spool.records.values() for r in rs for i in r.event_ids) == sorted(
        acked
    )
    return data_dir, spool


@pytest.mark.slow
@settings(
    max_examples=6,
    deadline=None,
    phases=[Phase.generate],  # a shrink would restart servers for minutes
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.data())
def test_server_restart_after_any_damage(served: tuple[Path, Spool], data: st.DataObject) -> None:
    source, spool = served
    victim = data.draw(
        st.one_of(st.sampled_from(spool.sealed()), st.sampled_from(spool.open())), label="victim"
    )
    original = spool.files[victim]
    damage = data.draw(damages(len(original), boundaries(spool.records[victim])), label="damage")
    damaged = damage.apply(original)
    assume(damaged != original)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        shutil.copytree(source, data_dir)
        directory = data_dir / "spool" / "w0"
        (directory / victim).write_bytes(damaged)
        quarantined = restart(data_dir)
        check_recovered(directory, spool, victim, damaged, quarantined)


@pytest.mark.slow
def test_server_restart_after_the_reported_damage(
    tmp_path: Path, served: tuple[Path, Spool]
) -> None:
    """Both cases of the issue at once: zeroed after the header, last record cut."""
    source, spool = served
    data_dir = tmp_path / "data"
    shutil.copytree(source, data_dir)
    directory = data_dir / "spool" / "w0"
    zeroed, cut = spool.sealed()[0], spool.sealed()[-1]
    damaged = {
        zeroed: Damage("zeroed", FILE_HEADER_SIZE, len(spool.files[zeroed])),
        cut: Damage("truncated", spool.records[cut][-1].end - 3, len(spool.files[cut])),
    }
    for name, damage in damaged.items():
        (directory / name).write_bytes(damage.apply(spool.files[name]))
    assert restart(data_dir) == 2
    for name, damage in damaged.items():
        assert (directory / QUARANTINE_DIR / name).read_bytes() == damage.apply(spool.files[name])
        assert not (directory / name).exists()
    kept = {i for n, rs in spool.records.items() for r in rs for i in r.event_ids if n != zeroed}
    lost = {i for r in spool.records[cut][-1:] for i in r.event_ids}
    assert kept - lost <= set(spooled_ids(directory))


def restart(data_dir: Path) -> float:
    """Start `gravix serve` on a damaged spool; check /ready and /metrics; stop it.

    Returns the server's ``spool_quarantined_segments_total``.
    """
    with ServerProcess(data_dir, env={"GRAVIX_UPLOADER_ENABLED": "false"}) as server:
        ready = httpx.get(f"{server.url}/ready")
        metrics = httpx.get(f"{server.url}/metrics").text
        assert server.terminate() == 0
    assert ready.status_code == 200, ready.text  # a quarantine does not stop intake
    quarantined = metric_value(metrics, "spool_quarantined_segments_total")
    present = data_dir / "spool" / "w0" / QUARANTINE_DIR
    files = len(list(present.iterdir())) if present.exists() else 0
    assert metric_value(metrics, "spool_quarantined_files") == files
    assert ready.json()["quarantined_segments"] == files
    assert ("quarantine" in ready.json()) == (files > 0)  # tells an operator where to look
    return quarantined


def metric_value(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not in /metrics")


# --- reported on the status page ------------------------------------------------


async def test_status_shows_the_quarantine_to_admins_only(tmp_path: Path) -> None:
    api = build_api(tmp_path, operator_tenant="acme")
    api.sessions.users.create("ana", "acme", "admin", PASSWORD)
    api.sessions.users.create("vic", "acme", "viewer", PASSWORD)
    quarantine = tmp_path / "spool" / "w1" / QUARANTINE_DIR
    quarantine.mkdir(parents=True)
    (quarantine / "1700000000000-0badc0de.seg").write_bytes(b"\x00" * 100)
    async with api.client() as client:
        admin = (await login(client, "ana")).cookie_only
        reply = await client.get("/api/v1/status", headers=admin)
        assert reply.status_code == 200, reply.text
        assert reply.json()["spool_quarantine"] == {"segments": 1, "bytes": 100}
        viewer = (await login(client, "vic")).cookie_only
        reply = await client.get("/api/v1/status", headers=viewer)
        assert reply.status_code == 200, reply.text
        assert "spool_quarantine" not in reply.json()  # node-level, not the tenant's
    other = build_api(tmp_path / "other")  # no operator tenant: no admin sees the node
    other.sessions.users.create("ana", "acme", "admin", PASSWORD)
    async with other.client() as client:
        admin = (await login(client, "ana")).cookie_only
        reply = await client.get("/api/v1/status", headers=admin)
        assert reply.status_code == 200 and "spool_quarantine" not in reply.json()

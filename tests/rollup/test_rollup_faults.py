"""Rollups under faults, with real processes on a real local store.

Issue #4: "10 concurrent rollups of the same partition: one winner, result
identical to a single run; a kill -9 at any point of publishing leaves readers
seeing only complete old or complete new data, and the next run finishes the
job. Readers querying in a loop during rollups never fail or see partial data."

Every check compares whole objects byte for byte with a fault-free reference
run over the same input; nothing here asserts how fast anything was.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from gravix.query import engine
from gravix.rollup import fold
from gravix.rollup.job import RollupJob
from gravix.rollup.lock import ALREADY_RUNNING_EXIT, LeaseLock, LockHeld
from gravix.schema import archive, layout, parquet
from gravix.storage.keys import TEMP_PREFIX
from gravix.storage.local import LocalObjectStore
from tests.rollup.conftest import HOUR, T0, fact, put_raw

TENANT = "acme"
METRIC_AREAS = tuple(
    layout.metrics_prefix(tier, level).rstrip("/")
    for level in layout.LEVELS
    for tier in layout.TIERS
)
OUTPUT_AREAS = ("archive", "events", *METRIC_AREAS)
PATHS = ("/cart/{id}/pay", "/cart/{id}", "/search", "/login", "/items/{id}")
SERVICES = ("checkout", "search", "auth")
STATUSES = (200, 200, 200, 200, 201, 204, 304, 404, 429, 500, 503)
Outputs = dict[str, bytes]


# --- input -------------------------------------------------------------------


@dataclass(frozen=True)
class RawObject:
    """One raw object as the uploader writes it: a batch of facts and events."""

    facts: list[dict[str, Any]]
    events: list[dict[str, Any]]
    received_ms: int


def traffic(rng: random.Random, prefix: str, count: int, start_ms: int, hours: float) -> list[Any]:
    """``count`` varied facts with ids ``<prefix>-<n>``, spread over ``hours`` from ``start_ms``."""
    return [
        fact(
            0,
            event_id=f"{prefix}-{n}",
            timestamp=start_ms + rng.randrange(int(hours * HOUR)),
            service=rng.choice(SERVICES),
            path=rng.choice(PATHS),
            status=rng.choice(STATUSES),
            latency_ms=round(min(rng.lognormvariate(3, 1.2), 60_000.0), 3),
            version=rng.choice(("v42", "v43", None)),
        )
        for n in range(count)
    ]


def deploy(event_id: str, timestamp: int, version: str) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "timestamp": timestamp,
        "service": "checkout",
        "kind": "deploy",
        "message": f"deployed {version}",
        "version": version,
    }


def split(
    facts: list[Any], parts: int, received_ms: int, events: list[Any] | None = None
) -> list[RawObject]:
    """``facts`` dealt round-robin into ``parts`` objects; the events go with the first."""
    return [
        RawObject(facts[k::parts], (events or []) if k == 0 else [], received_ms)
        for k in range(parts)
    ]


def put_all(store: LocalObjectStore, objects: list[RawObject]) -> None:
    for obj in objects:
        put_raw(store, TENANT, obj.facts, obj.events, received_ms=obj.received_ms)


def input_a(rng: random.Random) -> list[RawObject]:
    """The first upload: 6 hours of traffic (08:00-14:00Z) and two deploys."""
    facts = traffic(rng, "a", 18_000, T0, 6)
    events = [deploy("dep-1", T0 + 600_000, "v42"), deploy("dep-2", T0 + 3 * HOUR, "v43")]
    return split(facts, 5, T0 + 6 * HOUR, events)


def input_b(rng: random.Random, a: list[RawObject]) -> list[RawObject]:
    """The next upload: more of the same hours, new hours, late facts, retries, a re-upload."""
    received = T0 + 20 * HOUR
    fresh = traffic(rng, "b", 8_000, T0 + 3 * HOUR, 5)  # 11:00-16:00Z, half of it new hours
    late = traffic(rng, "late", 800, T0, 1)  # the first hour, long after it was rolled up
    next_day = traffic(rng, "night", 800, T0 + 17 * HOUR, 1)  # 01:00Z the next day
    a_facts = [f for obj in a for f in obj.facts]
    retries = rng.sample(a_facts, 1_500)  # same content, accepted again later
    events = [deploy("dep-2", T0 + 3 * HOUR, "v43"), deploy("dep-3", T0 + 17 * HOUR, "v44")]
    objects = split(fresh + late + next_day + retries, 4, received, events)
    return [*objects, objects[1]]  # a segment uploaded twice


# --- looking at a store ---------------------------------------------------------


def output_files(root: Path) -> dict[str, Path]:
    """Every file under the output areas (temporary files included), by relative path."""
    return {
        path.relative_to(root).as_posix(): path
        for area in OUTPUT_AREAS
        for path in sorted((root / area).rglob("*"))
        if path.is_file()
    }


def outputs(root: Path) -> Outputs:
    """Every output object byte for byte (no temporary files; no locks, state or raw)."""
    return {
        key: path.read_bytes()
        for key, path in output_files(root).items()
        if not path.name.startswith(TEMP_PREFIX)
    }


def raw_files(root: Path) -> list[Path]:
    """Raw object files now; os.walk, unlike rglob on 3.11, skips a folder the
    rollup prunes while it is being walked."""
    return [Path(d, f) for d, _, names in os.walk(root / "raw") for f in names]


def lock_keys(store: LocalObjectStore) -> list[str]:
    """Lock generations still held (a released one stays, rewritten as expired)."""
    return [
        info.key
        for info in store.list(layout.LOCKS)
        if json.loads(store.get(info.key))["expires_ms"] > 0
    ]


def assert_same_outputs(actual: Outputs, expected: Outputs) -> None:
    assert sorted(actual) == sorted(expected)
    differ = [key for key in expected if actual[key] != expected[key]]
    detail = ""
    for key in differ[:1]:
        a, b = (pq.read_table(pa.BufferReader(x[key])) for x in (actual, expected))
        detail = f" ({key}: {a.num_rows} rows vs {b.num_rows}; metadata {a.schema.metadata})"
        if a.num_rows == b.num_rows:
            for name in a.column_names:
                if not a[name].equals(b[name]):
                    detail += f" column {name} differs"
    assert not differ, f"objects differ from the reference: {differ}{detail}"


def duckdb_reads_everything(root: Path) -> None:
    """DuckDB reads every area as a Hive-partitioned table (a torn file would raise)."""
    con = duckdb.connect()
    try:
        for area in OUTPUT_AREAS:
            if any((root / area).rglob("*.parquet")):
                glob = f"{root}/{area}/**/*.parquet"
                con.execute("SELECT count(*) FROM read_parquet(?, hive_partitioning=true)", [glob])
                con.fetchall()
    finally:
        con.close()


# --- processes -------------------------------------------------------------------


def cli_env(data_dir: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRAVIX_")}
    env["GRAVIX_DATA_DIR"] = str(data_dir)  # the store is <data_dir>/store
    env.update({f"GRAVIX_{name.upper()}": value for name, value in settings.items()})
    return env


def start_rollup(data_dir: Path, **settings: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "gravix.cli", "rollup", "--tenant", TENANT],
        env=cli_env(data_dir, **settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def run_rollup(data_dir: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gravix.cli", "rollup", "--tenant", TENANT],
        env=cli_env(data_dir, **settings),
        capture_output=True,
        text=True,
        timeout=120,
    )


def killed(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(30)


# --- 1. concurrent rollups ---------------------------------------------------------

# A rollup in its own process that starts when it reads a line on stdin.
_RACER = """
import json, sys
from pathlib import Path
from gravix.rollup import fold
from gravix.rollup.job import RollupJob
from gravix.storage.local import LocalObjectStore

job = RollupJob(LocalObjectStore(Path(sys.argv[1])))
print("ready", flush=True)
sys.stdin.readline()
report = job.run(sys.argv[2])
print(json.dumps({"tenants": sorted(report.tenants), "busy": report.busy}), flush=True)
"""


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_ten_concurrent_rollups_have_one_winner_and_match_a_single_run(tmp_path: Path) -> None:
    rng = random.Random(7)
    # Enough for one run to take a while: the other nine all try while it works.
    objects = split(traffic(rng, "f", 60_000, T0, 12), 8, T0 + 12 * HOUR)
    store = LocalObjectStore(tmp_path / "store")
    reference = LocalObjectStore(tmp_path / "reference")
    put_all(store, objects)
    put_all(reference, objects)
    RollupJob(reference).run(TENANT)

    racers = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, str(store.root), TENANT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(10)
    ]
    try:
        for racer in racers:  # every one has imported everything and waits
            assert racer.stdout is not None
            assert racer.stdout.readline().strip() == "ready"
        for racer in racers:
            assert racer.stdin is not None
            racer.stdin.write("go\n")
            racer.stdin.flush()
        results = []
        for racer in racers:
            out, err = racer.communicate(timeout=180)
            assert racer.returncode == 0, err
            results.append(json.loads(out))
    finally:
        for racer in racers:
            if racer.poll() is None:
                racer.kill()
                racer.wait(10)

    winners = [r for r in results if r["tenants"] == [TENANT]]
    losers = [r for r in results if r["tenants"] == [] and list(r["busy"]) == [TENANT]]
    assert (len(winners), len(losers)) == (1, 9), results
    assert winners[0]["busy"] == {}
    assert all("already running" in r["busy"][TENANT] for r in losers)
    assert raw_files(store.root) == []
    assert lock_keys(store) == []
    assert_same_outputs(outputs(store.root), outputs(reference.root))


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_cli_exits_75_while_the_lock_is_held_and_takes_an_expired_one(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    store = LocalObjectStore(data_dir / "store")
    reference = LocalObjectStore(tmp_path / "reference")
    objects = split(traffic(random.Random(3), "f", 2_000, T0, 2), 2, T0 + 2 * HOUR)
    put_all(store, objects)
    put_all(reference, objects)
    RollupJob(reference).run(TENANT)
    raw_before = sorted(raw_files(store.root))

    holder = LeaseLock(store, TENANT, 60)
    holder.acquire()
    busy = run_rollup(data_dir)
    assert busy.returncode == ALREADY_RUNNING_EXIT, busy.stderr
    assert "already running" in busy.stderr
    assert holder.owner in busy.stderr  # it names who holds the lock
    assert sorted(raw_files(store.root)) == raw_before
    assert outputs(store.root) == {}
    holder.release()

    # A lock whose lease ran out unrenewed (its run hung, or died on another
    # machine): the process that took it is alive, so only the lease frees it.
    stale = LeaseLock(store, TENANT, 1.0)
    stale.acquire()
    while time.time() * 1000 <= stale.expires_ms:
        time.sleep(0.1)
    done = run_rollup(data_dir)
    assert done.returncode == 0, done.stderr
    assert f"tenant {TENANT}: 2 raw objects, 2000 facts" in done.stderr
    assert raw_files(store.root) == []
    assert lock_keys(store) == []  # the dead generation was pruned, the new one released
    assert_same_outputs(outputs(store.root), outputs(reference.root))


# --- 2. kill -9 while publishing ------------------------------------------------------


class StoreWatch:
    """How far a run got, seen from outside: objects replaced, raw objects deleted."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.inodes = {key: path.stat().st_ino for key, path in output_files(root).items()}
        assert not any(key.rpartition("/")[2].startswith(TEMP_PREFIX) for key in self.inodes)
        self.raw_before = len(raw_files(root))

    def progress(self) -> tuple[int, int]:
        replaced = 0
        for key, path in output_files(self.root).items():
            if path.name.startswith(TEMP_PREFIX):
                continue  # a put under way
            with contextlib.suppress(FileNotFoundError):  # renamed meanwhile
                replaced += path.stat().st_ino != self.inodes.get(key, -1)
        return replaced, self.raw_before - len(raw_files(self.root))


def kill_when(proc: subprocess.Popen[bytes], root: Path, done: Callable[[int, int], bool]) -> None:
    """Kill ``proc`` as soon as ``done(objects replaced, raw objects deleted)`` holds."""
    watch = StoreWatch(root)
    while proc.poll() is None and not done(*watch.progress()):
        time.sleep(0.001)
    killed(proc)


@dataclass
class KillSetup:
    """The old state (input A rolled up, input B pending) and the fault-free new state.

    The times are those of one uninterrupted `gravix rollup` of B, from its
    start: when the first object was replaced, when the last raw object went,
    and when the process exited.
    """

    old_dir: Path  # a data dir; its store is old_dir / "store"
    old: Outputs
    new: Outputs
    first_publish: float
    raw_gone: float
    exited: float

    def changed(self) -> int:
        return sum(1 for key, data in self.new.items() if self.old.get(key) != data)


@pytest.fixture(scope="module")
def kill_setup(tmp_path_factory: pytest.TempPathFactory) -> KillSetup:
    base = tmp_path_factory.mktemp("kill9")
    rng = random.Random(42)
    a = input_a(rng)
    b = input_b(rng, a)

    old_dir = base / "old"
    old_store = LocalObjectStore(old_dir / "store")
    put_all(old_store, a)
    RollupJob(old_store).run(TENANT)
    put_all(old_store, b)

    new_dir = base / "new"
    shutil.copytree(old_dir, new_dir)
    watch = StoreWatch(new_dir / "store")
    started = time.monotonic()
    proc = start_rollup(new_dir)
    first_publish = raw_gone = 0.0
    try:
        while proc.poll() is None:
            replaced, deleted = watch.progress()
            now = time.monotonic() - started
            first_publish = first_publish or (now if replaced else 0.0)
            raw_gone = raw_gone or (now if deleted == watch.raw_before else 0.0)
            time.sleep(0.001)
    finally:
        killed(proc)
    exited = time.monotonic() - started
    assert proc.returncode == 0
    assert raw_files(new_dir / "store") == []
    new = outputs(new_dir / "store")

    # The incremental result is the one a single run over A and B gives.
    scratch = LocalObjectStore(base / "scratch")
    put_all(scratch, a + b)
    RollupJob(scratch).run(TENANT)
    assert_same_outputs(outputs(scratch.root), new)

    setup = KillSetup(
        old_dir,
        outputs(old_dir / "store"),
        new,
        first_publish or exited,
        raw_gone or exited,
        exited,
    )
    assert setup.changed() >= 15  # B rewrites many objects: lots of places to be killed
    return setup


@dataclass
class Trial:
    """What one killed run left: how many objects were new, and what it held."""

    label: str
    new_objects: int = 0
    raw_left: int = 0
    temp_files: int = 0
    lock_left: bool = False


def check_killed_state(setup: KillSetup, root: Path, trial: Trial) -> None:
    """Every output is complete, and is its old or its new version or a state the fold
    protocol (gravix.rollup.fold) allows: an archive part written before its minutes,
    minute rows that count exactly the facts of the parts they name, or tiers and
    service rows not yet rebuilt from them. Nothing old is lost."""
    files = output_files(root)
    for key, path in files.items():
        if path.name.startswith(TEMP_PREFIX):
            trial.temp_files += 1  # an unfinished put: never listed, never *.parquet
            continue
        if path.name == fold.MARKER:  # a compaction under way (gravix.rollup.fold)
            assert json.loads(path.read_bytes())["replaces"], f"{trial.label}: {key}"
            continue
        data = path.read_bytes()
        pq.read_table(path)  # complete: the footer is there
        if data in (setup.old.get(key), setup.new.get(key)):
            trial.new_objects += data == setup.new.get(key) != setup.old.get(key)
            continue
        if key.startswith("archive/"):
            name = key.rsplit("/", 1)[1]
            assert name.startswith("part-") or name == fold.COMPACTED, f"{trial.label}: {key}"
        elif key.startswith("metrics_1m/"):
            assert_minutes_count_their_parts(root, key, trial)
        else:
            assert key.startswith(METRIC_AREAS), f"{trial.label}: unexpected object {key}"
    missing = {k for k in set(setup.old) - set(files) if "/part-" not in k}
    assert not missing, f"{trial.label}: a kill lost objects {sorted(missing)}"
    duckdb_reads_everything(root)
    trial.raw_left = len(raw_files(root))


def assert_minutes_count_their_parts(root: Path, key: str, trial: Trial) -> None:
    """The requests of an hour's minute file are the distinct facts of the parts it names."""
    meta = pq.read_metadata(root / key).metadata or {}
    named = json.loads(meta.get(archive.PARTS_KEY.encode(), b'["facts.parquet"]'))
    folder = root / ("archive/" + key.split("/", 1)[1].rsplit("/", 1)[0])
    ids: set[str] = set()
    for name in named:
        if (folder / name).exists():
            ids.update(pq.read_table(folder / name, columns=["event_id"])["event_id"].to_pylist())
    requests = pc.sum(pq.read_table(root / key, columns=["requests"])["requests"]).as_py()
    assert requests == len(ids), f"{trial.label}: {key} counts {requests}, its parts {len(ids)}"


def finish(setup: KillSetup, data_dir: Path, killed_pid: int, trial: Trial, *, cli: bool) -> None:
    """The next rollup takes the dead run's lock at once and finishes the job.

    The killed runs keep the default 600 s lease: the lock names a process of
    this machine that is gone, so nobody has to wait for the lease. The next
    run is `gravix rollup` (``cli``) or, quicker, a RollupJob in this process.
    """
    store = LocalObjectStore(data_dir / "store")
    left = lock_keys(store)
    trial.lock_left = bool(left)
    if left:
        owner = json.loads(store.get(left[-1]))["owner"]
        assert f":{killed_pid}:" in owner, (trial.label, owner)
    if cli:
        result = run_rollup(data_dir)
        assert result.returncode == 0, (trial.label, result.stderr)
    else:
        report = RollupJob(store).run(TENANT)
        assert TENANT in report.tenants, (trial.label, report.busy)
    assert_finished(setup, data_dir, trial)


def assert_finished(setup: KillSetup, data_dir: Path, trial: Trial) -> None:
    root = data_dir / "store"
    assert raw_files(root) == [], trial.label
    assert lock_keys(LocalObjectStore(root)) == [], trial.label
    assert_same_outputs(outputs(root), setup.new)


def summary(trials: list[Trial]) -> str:
    return "\n".join(
        f"{t.label}: {t.new_objects} new objects, {t.raw_left} raw left, "
        f"{t.temp_files} temp files, lock left: {t.lock_left}"
        for t in trials
    )


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_kill_9_after_spread_delays_leaves_old_or_new_and_the_next_run_finishes(
    kill_setup: KillSetup, tmp_path: Path
) -> None:
    # Two kills before the first publish, eight spread over the publishing
    # (objects replaced, then raw objects deleted), two after it.
    first, last, end = kill_setup.first_publish, kill_setup.raw_gone, kill_setup.exited
    delays = [0.0, first / 2]
    delays += [first + (last - first) * i / 7 for i in range(8)]
    delays += [(last + end) / 2, end * 1.1]
    trials = []
    for i, delay in enumerate(delays):
        data_dir = tmp_path / f"trial-{i}"
        shutil.copytree(kill_setup.old_dir, data_dir)
        trial = Trial(f"kill after {delay:.2f} s")
        proc = start_rollup(data_dir)
        try:
            time.sleep(delay)
        finally:
            killed(proc)
        check_killed_state(kill_setup, data_dir / "store", trial)
        finish(kill_setup, data_dir, proc.pid, trial, cli=False)
        trials.append(trial)
        shutil.rmtree(data_dir)
    print(summary(trials))


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_kill_9_at_each_publishing_step_leaves_old_or_new_and_the_next_run_finishes(
    kill_setup: KillSetup, tmp_path: Path
) -> None:
    """Kills placed by watching the store, not the clock: after k objects, or mid-delete."""
    changed = kill_setup.changed()
    steps: list[tuple[str, Callable[[int, int], bool]]] = [
        (f"kill after {k} objects replaced", lambda replaced, _d, k=k: replaced >= k)
        for k in sorted({1, 2, changed // 4, changed // 2, 3 * changed // 4, changed - 1})
    ]
    steps.append(("kill after the first raw object went", lambda _r, deleted: deleted >= 1))
    trials = []
    for i, (label, done) in enumerate(steps):
        data_dir = tmp_path / f"step-{i}"
        shutil.copytree(kill_setup.old_dir, data_dir)
        trial = Trial(label)
        proc = start_rollup(data_dir)
        try:
            kill_when(proc, data_dir / "store", done)
        finally:
            killed(proc)
        check_killed_state(kill_setup, data_dir / "store", trial)
        finish(kill_setup, data_dir, proc.pid, trial, cli=True)
        trials.append(trial)
        shutil.rmtree(data_dir)
    print(summary(trials))


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_lock_of_a_run_killed_on_another_machine_is_taken_after_its_lease(
    kill_setup: KillSetup, tmp_path: Path
) -> None:
    """Only the lease frees the lock of a killed run whose process this host cannot see."""
    data_dir = tmp_path / "data"
    shutil.copytree(kill_setup.old_dir, data_dir)
    store = LocalObjectStore(data_dir / "store")
    half = kill_setup.changed() // 2
    proc = start_rollup(data_dir, rollup_lease_seconds="5")  # the shortest lease allowed
    try:
        kill_when(proc, store.root, lambda replaced, _d: replaced >= half)
    finally:
        killed(proc)
    trial = Trial(f"kill after {half} objects replaced")
    check_killed_state(kill_setup, store.root, trial)
    left = lock_keys(store)
    if left:  # else the run finished before the kill landed: nothing to take over
        # Make the lock say its process ran elsewhere, as on a store shared by nodes.
        body = json.loads(store.get(left[-1]))
        host, rest = body["process"].split("/", 1)
        body["process"] = f"elsewhere-{host}/{rest}"
        store.put(left[-1], json.dumps(body).encode())
        before_expiry = LeaseLock(store, TENANT, 5, clock=lambda: body["expires_ms"] / 1000 - 1)
        with pytest.raises(LockHeld, match="already running"):
            before_expiry.acquire()
        while time.time() * 1000 <= body["expires_ms"]:
            time.sleep(0.1)
    result = run_rollup(data_dir, rollup_lease_seconds="5")
    assert result.returncode == 0, result.stderr
    assert_finished(kill_setup, data_dir, trial)


# --- 3. readers during rollups ----------------------------------------------------------


def totals_by_file(store: LocalObjectStore) -> dict[str, int]:
    """Requests per metric object of every tier, by key."""
    return {
        info.key: pc.sum(parquet.decode(store.get(info.key))["requests"]).as_py()
        for area in METRIC_AREAS
        for info in store.list(f"{area}/")
    }


class Reader(threading.Thread):
    """Sums requests per metric object of every tier in a loop, as a dashboard would.

    ``by_path``: DuckDB ``read_parquet`` over each tier's folder and pyarrow
    ``read_table`` of each file path, the way an outside engine reads the
    store as is. Otherwise each object is read once through the store
    (``get``), then summed by pyarrow and by DuckDB over the Arrow tables.
    """

    def __init__(self, store: LocalObjectStore, *, by_path: bool, pinned: bool = False) -> None:
        super().__init__(name="reader", daemon=True)
        self.store, self.by_path, self.pinned = store, by_path, pinned
        self.seen: list[tuple[str, str, int]] = []  # (reader, key, requests)
        self.errors: list[str] = []
        self.loops = 0
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        self.join(60)
        assert not self.is_alive()

    def run(self) -> None:
        con = duckdb.connect()  # one long-lived connection, like a query server's
        try:
            while not self._halt.is_set():
                self.read_once(con)
        finally:
            con.close()

    def read_once(self, con: duckdb.DuckDBPyConnection) -> None:
        read = (
            self._read_pinned
            if self.pinned
            else self._read_paths
            if self.by_path
            else self._read_objects
        )
        for area in METRIC_AREAS:
            try:
                read(con, area)
            except Exception as e:  # every failed query counts; the loop goes on
                self.errors.append(f"{area}: {type(e).__name__}: {e}")
        self.loops += 1

    def _read_paths(self, con: duckdb.DuckDBPyConnection, area: str) -> None:
        root = self.store.root
        hour = ", hour" if area.endswith("_1m") else ""
        rows = con.execute(
            f"""
            SELECT filename, tenant, date{hour}, sum(requests)::BIGINT
            FROM read_parquet(?, hive_partitioning=true, filename=true)
            GROUP BY ALL
            """,
            [f"{root}/{area}/**/*.parquet"],
        ).fetchall()
        for row in rows:
            key = Path(row[0]).relative_to(root).as_posix()
            assert f"tenant={row[1]}/date={row[2]}" in key, (key, row)
            self.seen.append(("duckdb", key, row[-1]))
        for path in sorted((root / area).rglob("*.parquet")):
            total = pc.sum(pq.read_table(path)["requests"]).as_py()
            self.seen.append(("pyarrow", path.relative_to(root).as_posix(), total))

    def _read_pinned(self, con: duckdb.DuckDBPyConnection, area: str) -> None:
        # As Gravix's query engine reads: each file opened once, read_parquet
        # on that open file.
        root = self.store.root
        for path in sorted((root / area).rglob("*.parquet")):
            with contextlib.ExitStack() as pins:
                pinned = engine._pin(str(path), pins)
                if pinned is None:
                    continue
                [(total,)] = con.execute(
                    "SELECT sum(requests)::BIGINT FROM read_parquet(?)", [pinned]
                ).fetchall()
            self.seen.append(("duckdb", path.relative_to(root).as_posix(), total))

    def _read_objects(self, con: duckdb.DuckDBPyConnection, area: str) -> None:
        tables = []
        for info in self.store.list(f"{area}/"):
            table = parquet.decode(self.store.get(info.key)).select(["requests"])
            self.seen.append(("pyarrow", info.key, pc.sum(table["requests"]).as_py()))
            tables.append(table.append_column("key", pa.array([info.key] * table.num_rows)))
        con.register("tier", pa.concat_tables(tables))
        try:
            rows = con.execute("SELECT key, sum(requests)::BIGINT FROM tier GROUP BY key")
            self.seen.extend(("duckdb", key, total) for key, total in rows.fetchall())
        finally:
            con.unregister("tier")


def rollups_under_readers(store: LocalObjectStore, reader: Reader) -> dict[str, set[int]]:
    """Several rollups, new data arriving before each, while ``reader`` reads.

    Returns every total each metric object had after some complete run.
    """
    job = RollupJob(store)  # one chunk per run: each object is replaced at most once a run
    rng = random.Random(5)
    valid: dict[str, set[int]] = {}

    def roll_up() -> None:
        report = job.run(TENANT)
        assert TENANT in report.tenants
        for key, total in totals_by_file(store).items():
            valid.setdefault(key, set()).add(total)

    put_all(store, split(traffic(rng, "r0", 6_000, T0, 6), 3, T0 + 6 * HOUR))
    roll_up()  # the reader starts on a store that has every tier
    reader.start()
    try:
        for round_ in range(1, 7):
            received = T0 + (6 + round_) * HOUR
            facts = traffic(rng, f"r{round_}", 4_000, T0 + round_ * HOUR, 6)  # later hours
            facts += traffic(rng, f"late{round_}", 300, T0, 1)  # the first hour, late
            facts += rng.sample(facts, 200)  # retries within the upload
            put_all(store, split(facts, 3, received))
            roll_up()
    finally:
        reader.stop()
    return valid


def assert_reads_saw_complete_runs(reader: Reader, valid: dict[str, set[int]]) -> None:
    assert reader.loops > 0
    assert {key for _how, key, _n in reader.seen} <= set(valid)
    wrong = [(how, key, n) for how, key, n in reader.seen if n not in valid[key]]
    assert not wrong, f"{len(wrong)} reads saw totals no complete run wrote: {wrong[:10]}"


def assert_quiet_read_sees_the_last_run(store: LocalObjectStore, *, by_path: bool) -> None:
    final = Reader(store, by_path=by_path)
    con = duckdb.connect()
    final.read_once(con)
    con.close()
    assert final.errors == []
    latest = set(totals_by_file(store).items())
    for how in ("duckdb", "pyarrow"):
        assert {(key, n) for reader, key, n in final.seen if reader == how} == latest


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_readers_of_whole_objects_during_rollups_never_fail_or_see_partial_data(
    tmp_path: Path,
) -> None:
    store = LocalObjectStore(tmp_path / "store")
    reader = Reader(store, by_path=False)
    valid = rollups_under_readers(store, reader)
    assert reader.errors == []
    assert_reads_saw_complete_runs(reader, valid)
    assert_quiet_read_sees_the_last_run(store, by_path=False)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_the_query_engine_reading_open_files_during_rollups_never_fails(
    tmp_path: Path,
) -> None:
    store = LocalObjectStore(tmp_path / "store")
    reader = Reader(store, by_path=True, pinned=True)
    valid = rollups_under_readers(store, reader)
    assert reader.errors == []
    assert_reads_saw_complete_runs(reader, valid)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_engines_reading_the_folders_during_rollups_never_see_partial_data(
    tmp_path: Path,
) -> None:
    store = LocalObjectStore(tmp_path / "store")
    reader = Reader(store, by_path=True)
    valid = rollups_under_readers(store, reader)
    # Whatever a query returned was a complete run's data...
    assert_reads_saw_complete_runs(reader, valid)
    assert_quiet_read_sees_the_last_run(store, by_path=True)
    # ... but DuckDB's read_parquet and pyarrow's read_table open a file by
    # name more than once per query (schema, then data), so a query racing a
    # replace may read the footer of one version and the pages of the other.
    # It then fails loudly, never with wrong numbers, and a retry reads one
    # complete version (docs/data-model.md, "Reading while the rollup runs").
    # Gravix itself reads each file through one open descriptor (the test above).
    torn = ("Error", "IOException", "InvalidInputException", "OSError", "ArrowInvalid")
    unexpected = [e for e in reader.errors if e.split(": ")[1] not in torn]
    assert unexpected == [], unexpected[:5]

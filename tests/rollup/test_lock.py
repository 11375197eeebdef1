"""The rollup's lease lock on the object store."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gravix.rollup.lock import LeaseLock, LockHeld, LockLost
from gravix.schema.layout import lock_prefix
from gravix.storage.local import LocalObjectStore


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_one_holder_at_a_time(store: LocalObjectStore) -> None:
    clock = Clock()
    first = LeaseLock(store, "acme", 60, clock)
    first.acquire()
    with pytest.raises(LockHeld, match="already running"):
        LeaseLock(store, "acme", 60, clock).acquire()
    LeaseLock(store, "other", 60, clock).acquire()  # locks are per tenant
    first.release()
    with LeaseLock(store, "acme", 60, clock):
        pass
    # Released generations stay, marked expired; only the newest is kept.
    [released] = [i.key for i in store.list(lock_prefix("acme"))]
    assert json.loads(store.get(released))["expires_ms"] == 0


def test_a_run_that_stalled_past_its_lease_learns_it_lost_the_lock(
    store: LocalObjectStore,
) -> None:
    clock = Clock()
    stalled = LeaseLock(store, "acme", 10, clock)
    stalled.acquire()
    clock.now += 20
    with LeaseLock(store, "acme", 10, clock):
        pass  # took the expired lock, worked, released
    with pytest.raises(LockLost):
        stalled.renew_if_due()


def test_an_expired_lease_is_taken_over_and_the_old_holder_loses(store: LocalObjectStore) -> None:
    clock = Clock()
    old = LeaseLock(store, "acme", 60, clock)
    old.acquire()
    clock.now += 61
    new = LeaseLock(store, "acme", 60, clock)
    new.acquire()
    with pytest.raises(LockLost):
        old.renew_if_due()
    with pytest.raises(LockHeld):
        LeaseLock(store, "acme", 60, clock).acquire()
    new.renew_if_due()  # not due yet: nothing happens
    clock.now += 50
    new.renew_if_due()
    clock.now += 50  # past the first lease, within the renewed one
    with pytest.raises(LockHeld):
        LeaseLock(store, "acme", 60, clock).acquire()


def test_a_lock_of_a_dead_process_on_this_host_is_taken_at_once(store: LocalObjectStore) -> None:
    code = (
        "import sys; from pathlib import Path;"
        "from gravix.storage.local import LocalObjectStore;"
        "from gravix.rollup.lock import LeaseLock;"
        f"LeaseLock(LocalObjectStore(Path({str(store.root)!r})), 'acme', 3600).acquire()"
    )
    subprocess.run([sys.executable, "-c", code], check=True)  # exits holding the lock
    [info] = list(store.list(lock_prefix("acme")))
    assert json.loads(store.get(info.key))["process"]
    with LeaseLock(store, "acme", 3600):
        pass


def test_a_live_process_keeps_its_lock(store: LocalObjectStore) -> None:
    holder = LeaseLock(store, "acme", 3600)
    holder.acquire()
    with pytest.raises(LockHeld):
        LeaseLock(store, "acme", 3600).acquire()
    holder.release()


def test_an_unreadable_lock_counts_as_expired(store: LocalObjectStore) -> None:
    store.put(f"{lock_prefix('acme')}000000000007.lock", b"not json")
    with LeaseLock(store, "acme", 60) as lock:
        assert lock.generation == 8

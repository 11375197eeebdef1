"""A lease lock in the object store: one rollup per tenant at a time.

The lock of a tenant is a series of generation objects under
``_locks/rollup/tenant=<t>/``, named ``<generation, 12 digits>.lock`` and
holding JSON ``{"owner": str, "expires_ms": int, "process": str}``, where
``process`` is ``<host>/<pid namespace>/<pid>/<process start time>``. Taking the lock means
creating the next generation with :meth:`ObjectStore.publish` (create only
if absent), so of several runs racing for it exactly one wins, on the local
store (a hard link) as on S3 (``If-None-Match``):

- no generation exists, or the newest is past ``expires_ms`` (its run was
  killed, or the clock moved on): publish newest + 1;
- the newest names a process of this machine that is gone (same host name
  and PID namespace, and no process with that PID and start time): its run
  was killed, so the lock is taken at once rather than after the lease;
- otherwise someone else holds it; the caller exits "already running"
  (:data:`ALREADY_RUNNING_EXIT`).

The holder renews by publishing the next generation itself before the lease
runs out, and releases by rewriting its own generation as expired (never by
deleting it, so generation numbers only grow). Older generations are pruned
by whoever takes the lock next. A run whose renewal loses the race has
lost the lock and must stop before publishing anything else.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Self

from gravix.errors import GravixError
from gravix.schema.layout import lock_prefix
from gravix.storage.base import ObjectNotFound, ObjectStore

ALREADY_RUNNING_EXIT: Final = 75  # EX_TEMPFAIL: try again later
_SUFFIX: Final = ".lock"


class LockHeld(GravixError):
    """Another live run holds the lock."""

    code = "rollup_already_running"

    def __init__(self, tenant: str, owner: str, expires_ms: int) -> None:
        self.tenant, self.owner, self.expires_ms = tenant, owner, expires_ms
        until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires_ms / 1000))
        super().__init__(
            f"rollup of tenant {tenant!r} already running ({owner}, lease until {until})"
        )


class LockLost(GravixError):
    """The lease ran out and another run took the lock."""

    code = "rollup_lock_lost"


@dataclass(frozen=True, slots=True)
class _Generation:
    number: int
    owner: str
    expires_ms: int
    process: str = ""


def _process_id(pid: int) -> str | None:
    """``host/pidns/pid/start`` of a live process of this machine; None if gone."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # Field 22 (start time) counts from after the parenthesised command name.
    start = stat[stat.rindex(b")") + 2 :].split()[19].decode()
    return f"{socket.gethostname()}/{namespace}/{pid}/{start}"


def _dead_here(process: str) -> bool:
    """True when ``process`` names a process of this host and namespace that is gone."""
    parts = process.split("/")
    if len(parts) != 4 or not parts[2].isdigit():
        return False
    mine = _process_id(os.getpid())
    if mine is None or mine.split("/")[:2] != parts[:2]:
        return False  # another machine or container: only its lease tells
    return _process_id(int(parts[2])) != process


class LeaseLock:
    """The lease lock of one tenant's rollup; use as a context manager."""

    def __init__(
        self,
        store: ObjectStore,
        tenant: str,
        lease_seconds: float,
        clock: Callable[[], float] = time.time,
        prefix: str | None = None,
    ) -> None:
        """``prefix``: where the generations go (default: the tenant's rollup lock);
        the alert evaluator's lease uses the same lock elsewhere."""
        self.store, self.tenant = store, tenant
        self.lease_ms = int(lease_seconds * 1000)
        self.clock = clock
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.process = _process_id(os.getpid()) or ""
        self.prefix = prefix or lock_prefix(tenant)
        self.generation: int | None = None
        self.expires_ms = 0

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _key(self, number: int) -> str:
        return f"{self.prefix}{number:012d}{_SUFFIX}"

    def _newest(self) -> tuple[_Generation | None, list[int]]:
        numbers = sorted(
            int(info.key[len(self.prefix) : -len(_SUFFIX)])
            for info in self.store.list(self.prefix)
            if info.key.endswith(_SUFFIX) and info.key[len(self.prefix) : -len(_SUFFIX)].isdigit()
        )
        while numbers:
            try:
                body = json.loads(self.store.get(self._key(numbers[-1])))
                owner, expires = str(body["owner"]), int(body["expires_ms"])
                process = str(body.get("process", ""))
                return _Generation(numbers[-1], owner, expires, process), numbers
            except ObjectNotFound:
                numbers.pop()  # pruned meanwhile by a newer holder
            except (ValueError, KeyError, TypeError):
                # An unreadable lock body (a hand edit): treat as expired.
                return _Generation(numbers[-1], "unknown", 0), numbers
        return None, numbers

    def _publish(self, number: int) -> bool:
        expires = self._now_ms() + self.lease_ms
        body = json.dumps(
            {"owner": self.owner, "expires_ms": expires, "process": self.process}
        ).encode()
        if not self.store.publish(self._key(number), body):
            return False
        self.generation, self.expires_ms = number, expires
        return True

    def acquire(self) -> None:
        """Take the lock or raise LockHeld."""
        newest, numbers = self._newest()
        if (
            newest is not None
            and newest.expires_ms > self._now_ms()
            and not _dead_here(newest.process)
        ):
            raise LockHeld(self.tenant, newest.owner, newest.expires_ms)
        number = newest.number + 1 if newest is not None else 1
        if not self._publish(number):
            winner, _ = self._newest()
            raise LockHeld(
                self.tenant,
                winner.owner if winner else "another run",
                winner.expires_ms if winner else 0,
            )
        for old in numbers:
            if old < number:
                self.store.delete(self._key(old))

    def renew_if_due(self) -> None:
        """Extend the lease when a third of it is left; raise LockLost if taken."""
        if self.generation is None:
            raise LockLost(f"rollup lock of tenant {self.tenant!r} is not held")
        if self.expires_ms - self._now_ms() > self.lease_ms // 3:
            return
        old = self.generation
        # Whoever reclaims an expired lease publishes old + 1 too, so winning
        # that name proves nobody took the lock, even after the lease ran out.
        if not self._publish(old + 1):
            self.generation = None
            raise LockLost(f"rollup lock of tenant {self.tenant!r} expired and was taken over")
        self.store.delete(self._key(old))

    def release(self) -> None:
        # Mark the generation expired rather than deleting it: numbers then
        # only grow, so a run that stalled past its lease can never re-create a
        # number someone else already used, and its renewal fails as it must.
        if self.generation is not None:
            body = json.dumps({"owner": self.owner, "expires_ms": 0, "process": ""})
            self.store.put(self._key(self.generation), body.encode())
            self.generation = None

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

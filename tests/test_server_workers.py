"""Workers die with their parent: kill -9 of `gravix serve --workers 2` (issue 16, item 4).

Before the fix both workers kept serving on the inherited socket and a restart
on the same port failed with "Address already in use".
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.factories import fact
from tests.procs import Sender, ServerProcess, durable_event_ids

TRIALS = 5
WORKERS = 2

pytestmark = pytest.mark.slow


def _children(pid: int) -> list[int]:
    """Live child processes of ``pid``, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            state = _stat(int(entry.name))
            if state is not None and state[1] == pid and state[0] != "Z":
                found.append(int(entry.name))
    return found


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: split after the last ")".
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1])


def _alive(pid: int) -> bool:
    state = _stat(pid)
    return state is not None and state[0] != "Z"  # a zombie holds no socket any more


def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def _kill_parent_during_load(server: ServerProcess, key: str) -> list[str]:
    """kill -9 the parent while facts are sent; wait for its workers to exit; acked ids."""
    assert server.proc is not None
    parent = server.proc.pid
    workers: list[int] = []
    try:
        _wait_for(lambda: len(_children(parent)) == WORKERS, 30, "both workers")
        workers = _children(parent)
        with Sender(server.url, key, threads=2) as sender:
            _wait_for(lambda: len(sender.acked) >= 100, 30, "facts to be acknowledged")
            server.kill9()
        _wait_for(lambda: not any(_alive(pid) for pid in workers), 30, f"workers {workers} to exit")
    finally:
        for pid in workers:  # never leave an orphan serving the port behind a failure
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return sender.acked


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds workers through /proc")
def test_workers_exit_when_the_parent_is_killed(tmp_path: Path, tenant_key_factory: Any) -> None:
    data_dir = tmp_path / "data"
    key = tenant_key_factory(data_dir)
    env = {"GRAVIX_SHUTDOWN_GRACE_SECONDS": "3"}
    acked: list[str] = []
    port = 0
    for _trial in range(TRIALS):
        # On the port of the previous trial: its workers must have let go of it.
        with ServerProcess(data_dir, env=env, workers=WORKERS, port=port) as server:
            port = urlsplit(server.url).port or 0
            acked.extend(_kill_parent_during_load(server, key))

    with ServerProcess(data_dir, workers=WORKERS, port=port) as final:
        response = httpx.post(
            f"{final.url}/api/v1/facts",
            json=[fact(event_id="after-restart")],
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )
        assert response.status_code == 202
        assert final.terminate() == 0
    stored = set(durable_event_ids(data_dir))
    missing = set(acked) - stored
    assert len(acked) >= TRIALS * 100
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged facts lost"
    assert "after-restart" in stored

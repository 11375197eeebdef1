"""`gravix tail-logs` against a real `gravix serve`: rotation, restarts, kill -9, SIGTERM."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from gravix.accesslog.reader import event_id_prefix, file_fingerprint
from tests.accesslog.logs import combined
from tests.procs import ServerProcess, durable_event_ids

SERVER_ENV = {"GRAVIX_UPLOADER_ENABLED": "false"}


class LogWriter:
    """Appends combined lines to a file and remembers every line's event id."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ids: set[str] = set()
        self.n = 0

    def write(self, count: int, path: Path | None = None) -> None:
        path = path or self.path
        with path.open("ab") as f:
            for _ in range(count):
                offset = f.tell()
                line = combined(time.time(), url=f"/items/{self.n}").encode()
                f.write(line)
                f.flush()
                self.n += 1
                fingerprint = file_fingerprint(path)
                assert fingerprint is not None
                self.ids.add(f"{event_id_prefix(fingerprint, socket.gethostname())}{offset}")


class Tail:
    """A `gravix tail-logs` child process (killed at the end of the test, if still running)."""

    running: ClassVar[list[subprocess.Popen[str]]] = []

    def __init__(self, log: Path, state: Path, server: Any, *extra: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRAVIX_")}
        env["GRAVIX_KEY"] = server.key
        env["PYTHONFAULTHANDLER"] = "1"  # SIGABRT prints every thread's stack (stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gravix.cli", "tail-logs", str(log), "--url", server.url,
             "--service", "web", "--state", str(state), "--poll", "0.05", "--batch", "50",
             *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        Tail.running.append(self.proc)
        self.seen = ""  # stderr read by wait_for, before stop reads the rest

    def wait_for(self, text: str) -> None:
        """Read stderr until ``text`` shows (the tailer runs, its signal handlers set)."""
        assert self.proc.stderr is not None
        while text not in self.seen:
            line = self.proc.stderr.readline()
            assert line, f"tail-logs ended before saying {text!r}: {self.seen}"
            self.seen += line

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        """Signal the tail and wait for it to exit: within its 10 s grace and 5 s
        more for a post in flight (:meth:`Shipper.close`), with room for a busy machine."""
        self.proc.send_signal(sig)
        try:
            _, err = self.proc.communicate(timeout=40)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)  # where is it stuck?
            _, err = self.proc.communicate(timeout=10)
            raise AssertionError(f"tail-logs did not exit: {self.seen + err}") from None
        return self.proc.returncode, self.seen + err


def wait_durable(data_dir: Path, ids: set[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    missing = ids
    while time.monotonic() < deadline:
        missing = ids - set(durable_event_ids(data_dir))
        if not missing:
            return
        time.sleep(0.1)
    raise AssertionError(f"{len(missing)} of {len(ids)} lines never arrived")


def wait_saved(state: Path, before: str, timeout: float = 30) -> str:
    """The tailer's saved position (the state file's text), once it differs from ``before``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            saved = state.read_text()
            if saved != before:
                return saved
        time.sleep(0.02)
    raise AssertionError(f"the tailer saved no new position in {timeout} s")


@pytest.fixture(autouse=True)
def _no_tailer_left() -> Iterator[None]:
    yield
    while Tail.running:
        proc = Tail.running.pop()
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


@pytest.fixture
def server(tmp_path: Path, tenant_key_factory: Any) -> Iterator[Any]:
    data = tmp_path / "data"
    key = tenant_key_factory(data)
    with ServerProcess(data, env=SERVER_ENV) as proc:
        proc.key = key  # type: ignore[attr-defined]
        yield proc


def test_tail_follows_rename_rotation(tmp_path: Path, server: Any) -> None:
    log, state = tmp_path / "access.log", tmp_path / "state.json"
    writer = LogWriter(log)
    writer.write(100)
    tail = Tail(log, state, server)
    writer.write(100)
    wait_durable(server.data_dir, writer.ids)
    log.rename(tmp_path / "access.log.1")
    writer.write(20, tmp_path / "access.log.1")  # the web server has not reopened yet
    writer.write(30)  # the new file
    wait_durable(server.data_dir, writer.ids)
    code, err = tail.stop()
    assert code == 0, err
    assert "was rotated" in err and "250 facts accepted" in err
    saved = json.loads(state.read_text())
    assert saved["fingerprint"] == file_fingerprint(log)
    assert saved["offset"] == log.stat().st_size
    assert set(durable_event_ids(server.data_dir)) == writer.ids


def test_tail_follows_copytruncate(tmp_path: Path, server: Any) -> None:
    log, state = tmp_path / "access.log", tmp_path / "state.json"
    writer = LogWriter(log)
    writer.write(50)
    # A long poll: the rotation below happens while the tailer sleeps at the end of the file.
    tail = Tail(log, state, server, "--poll", "1.5")
    wait_durable(server.data_dir, writer.ids)
    time.sleep(0.2)
    writer.write(25)  # not read yet: only the copy will hold these
    shutil.copyfile(log, tmp_path / "access.log.1")
    with log.open("r+") as f:
        f.truncate(0)
    writer.write(200)  # the new content grows past the old offset
    wait_durable(server.data_dir, writer.ids)
    code, err = tail.stop()
    assert code == 0, err
    assert "was truncated; finishing its copy" in err
    assert set(durable_event_ids(server.data_dir)) == writer.ids


def test_kill_9_and_a_rotation_while_down_lose_nothing(tmp_path: Path, server: Any) -> None:
    log, state = tmp_path / "access.log", tmp_path / "state.json"
    writer = LogWriter(log)
    saved = ""
    for round_ in range(3):
        tail = Tail(log, state, server)
        for _ in range(5):
            writer.write(40)
            time.sleep(0.05)
        # Killed once it has saved a position past the last one (its start-up
        # time varies), while lines may still be in flight.
        saved = wait_saved(state, saved)
        time.sleep(0.1 * round_)
        tail.stop(signal.SIGKILL)
        if round_ == 1:
            writer.write(30)  # nobody reads these before the rotation
            log.rename(tmp_path / "access.log.1")
            writer.write(10)
    code, err = Tail(log, state, server, "--once").stop(0)  # signal 0: just wait for the exit
    assert code == 0, err
    wait_durable(server.data_dir, writer.ids, timeout=5)
    assert set(durable_event_ids(server.data_dir)) == writer.ids


def test_sigterm_flushes_and_once_exits(tmp_path: Path, server: Any) -> None:
    log, state = tmp_path / "access.log", tmp_path / "state.json"
    writer = LogWriter(log)
    writer.write(7)  # fewer than a batch: sent by the flush
    code, err = Tail(log, state, server, "--once").stop(0)
    assert code == 0, err
    assert "7 facts accepted" in err
    assert json.loads(state.read_text())["offset"] == log.stat().st_size
    # A second run has nothing new to send.
    code, err = Tail(log, state, server, "--once").stop(0)
    assert code == 0 and "0 facts accepted" in err
    tail = Tail(log, state, server)
    time.sleep(1)
    writer.write(3)
    with log.open("a") as f:
        f.write("a bad line\n")
    tail.wait_for("bad line at byte")
    code, err = tail.stop(signal.SIGINT)
    assert code == 0, err
    assert "tail-logs: bad line at byte" in err and "does not match the log format" in err
    assert set(durable_event_ids(server.data_dir)) == writer.ids


def test_tail_keeps_retrying_while_the_server_is_down(tmp_path: Path, server: Any) -> None:
    log, state = tmp_path / "access.log", tmp_path / "state.json"
    writer = LogWriter(log)
    writer.write(10)
    wait_durable(server.data_dir, set())
    url = server.url
    server.terminate()
    port = int(url.rsplit(":", 1)[1])
    tail = Tail(log, state, server)
    time.sleep(2)
    assert tail.proc.poll() is None  # still trying
    with ServerProcess(server.data_dir, env=SERVER_ENV, port=port) as again:
        wait_durable(again.data_dir, writer.ids)
        code, err = tail.stop()
        assert code == 0, err
        assert "cannot reach" in err and "reachable again" in err


def test_sigterm_ends_a_tail_whose_server_is_down(tmp_path: Path, server: Any) -> None:
    # More batches than the shipper queues, the server gone: SIGTERM must still
    # end the tailer (after its grace period), and the next run sends them all.
    log, state = tmp_path / "access.log", tmp_path / "state.json"
    writer = LogWriter(log)
    writer.write(1000)
    data, url = server.data_dir, server.url
    server.terminate()
    tail = Tail(log, state, server)
    tail.wait_for("cannot reach")  # not a fixed sleep: under load the start takes longer
    code, err = tail.stop()
    assert code == 0, err
    assert not state.exists()  # nothing was acknowledged
    with ServerProcess(data, env=SERVER_ENV, port=int(url.rsplit(":", 1)[1])) as again:
        again.key = server.key  # type: ignore[attr-defined]
        code, err = Tail(log, state, again, "--once").stop(0)
        assert code == 0, err
        wait_durable(again.data_dir, writer.ids)


def test_from_end_skips_what_the_file_held(tmp_path: Path, server: Any) -> None:
    log, state = tmp_path / "access.log", tmp_path / "state.json"
    old = LogWriter(log)
    old.write(5)
    code, err = Tail(log, state, server, "--once", "--from-end").stop(0)
    assert code == 0 and "0 facts accepted" in err, err
    new = LogWriter(log)
    new.write(4)
    code, err = Tail(log, state, server, "--once", "--from-end").stop(0)
    assert code == 0 and "4 facts accepted" in err, err
    assert set(durable_event_ids(server.data_dir)) == new.ids

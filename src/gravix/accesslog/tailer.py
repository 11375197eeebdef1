"""``gravix tail-logs``: follow one log like ``tail -F``, across rotation and restarts.

The tailer reads whole lines from the file it has open, sends them in
batches, and saves its state (:mod:`gravix.accesslog.state`) after each
batch the server acknowledges, so a restart, even after ``kill -9``, resends
at most the unacknowledged lines, with the same event ids (counted once).

When the file reaches its end it looks at what happened to the path:

* **renamed** (logrotate's default: ``access.log`` -> ``access.log.1``, then
  a new ``access.log``): the path names another inode. The old file is
  still open; it is read until it has been quiet for ``drain_seconds``
  (the web server writes to it until it reopens its logs), then the new file
  is read from its start.
* **copied and truncated** (``copytruncate``): the open file got shorter, or
  its first line changed. The copy holding the rest of the old content is
  found by fingerprint (``access.log.1``) and read from the saved offset;
  then the truncated file is read from its start.
* **gone** (deleted, or renamed with no new file yet): keep reading the open
  file and look again later.

At start the saved fingerprint is looked for in the file and in its rotated
siblings, so a tailer stopped before a rotation finishes the rotated file
first, then moves on to the new one.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from gravix.accesslog.importer import FileReport, ImportReport
from gravix.accesslog.parser import LineParser
from gravix.accesslog.reader import (
    CHUNK_BYTES,
    FINGERPRINT_BYTES,
    UnreadableLog,
    event_id_prefix,
    file_fingerprint,
    find_by_fingerprint,
    fingerprint_of,
    open_log,
    rotated_siblings,
)
from gravix.accesslog.shipper import Batch, Shipper, ShipperStopped
from gravix.accesslog.state import TailState, load_state, save_state


class Tailer:
    """Follow ``path``; see the module docstring."""

    def __init__(
        self,
        path: Path,
        parser: LineParser,
        shipper: Shipper,
        state_path: Path,
        *,
        batch_size: int = 5000,
        poll_seconds: float = 0.2,
        flush_seconds: float = 1.0,
        drain_seconds: float = 1.0,
        from_end: bool = False,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.path = path
        self.parser = parser
        self.shipper = shipper
        self.state_path = state_path
        self.batch_size = batch_size
        self.poll = poll_seconds
        self.flush_seconds = flush_seconds
        self.drain_seconds = drain_seconds
        self.from_end = from_end
        self.say = say or (lambda _message: None)
        shipper.on_ack = self._acknowledged
        self._stream: IO[bytes] | None = None
        self._raw: IO[bytes] | None = None
        self._reading: Path = path
        self._fingerprint = ""
        self._first_line = b""  # the bytes the fingerprint was taken of
        self._inode = self._device = 0
        self._base = 0  # file offset of the first byte not yet made into lines
        self._carry = b""  # bytes read after _base: an unfinished line
        self._draining_until: float | None = None  # reading a rotated file: leave it then
        self._pending: list[dict[str, Any]] = []
        self._queued = (self._fingerprint, -1)  # the last mark handed to the shipper
        self._last_flush = time.monotonic()
        self._stop = threading.Event()
        self._shown_bad = 0
        self._hinted = False  # said how to log the request time

    # --- state ----------------------------------------------------------
    def _acknowledged(self, batch: Batch) -> None:
        state: TailState = batch.mark
        save_state(self.state_path, state)

    def _mark(self) -> TailState:
        return TailState(str(self.path), self._fingerprint, self._base, self._inode, self._device)

    def _flush(self) -> None:
        """Hand the pending facts (or just the new position) to the shipper."""
        self._last_flush = time.monotonic()
        if not self._fingerprint:
            return
        if not self._pending and self._queued == (self._fingerprint, self._base):
            return
        self._queued = (self._fingerprint, self._base)
        batch, self._pending = Batch(self._pending, self._mark()), []
        self.shipper.put(batch, self._stop)

    # --- opening files --------------------------------------------------
    def _close(self) -> None:
        for f in {id(f): f for f in (self._stream, self._raw) if f is not None}.values():
            f.close()
        self._stream = self._raw = None

    def _open(self, path: Path, offset: int, *, complete: bool) -> bool:
        """Open ``path`` at ``offset``; False when it is missing or has no first line yet."""
        try:
            stream, raw = open_log(path)
        except UnreadableLog:  # missing for now, or not readable yet
            return False
        head = stream.read(FINGERPRINT_BYTES)
        fingerprint = fingerprint_of(head, complete=complete)
        if fingerprint is None:
            stream.close()
            raw.close()
            return False
        st = os.fstat(raw.fileno())
        if offset == -1:  # --from-end: after the last whole line
            offset = (head + stream.read()).rfind(b"\n") + 1
        stream.seek(offset)
        self._close()
        self._stream, self._raw, self._reading = stream, raw, path
        self._fingerprint, self._inode, self._device = fingerprint, st.st_ino, st.st_dev
        nl = head.find(b"\n")
        self._first_line = head[: nl + 1] if nl >= 0 else head
        self._base, self._carry = offset, b""
        return True

    def _resume(self) -> None:
        """Open what the saved state points at, or the followed file."""
        state = load_state(self.state_path)
        if state is not None:
            found = find_by_fingerprint(self.path, state.fingerprint)
            if found is None:
                self.say(
                    f"tail-logs: the content last read ({state.fingerprint}) is in neither "
                    f"{self.path} nor a rotated copy; reading {self.path} from its start"
                )
            elif self._open(found, state.offset, complete=found != self.path):
                if found != self.path:
                    self.say(f"tail-logs: finishing rotated {found} from byte {state.offset}")
                    self._draining_until = time.monotonic()
                return
        self._open(self.path, -1 if self.from_end and state is None else 0, complete=False)

    def _next_file(self) -> None:
        """Leave the file being read (its last unfinished line counts) for the followed path."""
        if self._carry:
            self._lines(self._carry + b"\n", final=True)
        self._flush()
        self._close()
        self._draining_until = None
        self._open(self.path, 0, complete=False)

    # --- reading --------------------------------------------------------
    def _lines(self, buf: bytes, *, final: bool = False) -> None:
        cut = len(buf) if final else buf.rfind(b"\n") + 1
        prefix = event_id_prefix(self._fingerprint, self.parser.source)
        pos, base = 0, self._base
        while pos < cut:
            pos = self.parser.parse(buf, pos, cut, base, prefix, self._pending, self.batch_size)
            if len(self._pending) >= self.batch_size:
                self._base = base + pos
                self._flush()
        self._base = base + (cut if not final else len(buf) - 1)
        self._carry = buf[cut:]
        # A long-running tail shows its first bad lines when they happen.
        for bad in self.parser.bad_samples[self._shown_bad :]:
            self.say(f"tail-logs: bad line at byte {bad.offset}: {bad.reason}: {bad.text}")
        self._shown_bad = len(self.parser.bad_samples)
        if self.parser.untimed and not self._hinted:
            self._hinted = True
            self.say(f"tail-logs: {self.parser.latency_hint()}")

    def _same_content(self) -> bool:
        """False once the open file was truncated (its first line is not ours any more)."""
        assert self._raw is not None
        if self._draining_until is not None or self._stream is not self._raw:
            return True  # a rotated file (or a .gz): nobody rewrites it
        fd = self._raw.fileno()
        size = os.fstat(fd).st_size
        if size < self._base + len(self._carry):
            return False
        return os.pread(fd, len(self._first_line), 0) == self._first_line

    def _rotation(self) -> None:
        """At the end of the open file: look for a rename or a truncation (module docstring)."""
        try:
            st = os.stat(self.path)
        except OSError:
            return  # gone for now: keep the open file
        if (st.st_ino, st.st_dev) != (self._inode, self._device):
            self.say(f"tail-logs: {self.path} was rotated; finishing the old file")
            self._draining_until = time.monotonic() + self.drain_seconds
            return
        if not self._same_content():
            self._truncated()

    def _truncated(self) -> None:
        """The open file was truncated (copytruncate): the rest of our content is in the copy."""
        copy = next(
            (p for p in rotated_siblings(self.path) if file_fingerprint(p) == self._fingerprint),
            None,
        )
        if copy is not None and self._open(copy, self._base, complete=True):
            self.say(f"tail-logs: {self.path} was truncated; finishing its copy {copy}")
            self._draining_until = time.monotonic()
            return
        self.say(f"tail-logs: {self.path} was truncated and no copy was found; reading it anew")
        self._carry = b""
        self._next_file()

    def run(
        self,
        stop: threading.Event,
        *,
        once: bool = False,
        duration: float | None = None,
    ) -> ImportReport:
        """Follow until ``stop`` is set, ``duration`` ends, or (``once``) the end of the file."""
        self._stop = stop
        report = ImportReport(files=[FileReport(self.path)])
        started = time.perf_counter()
        deadline = time.monotonic() + duration if duration else None
        self.shipper.start()
        try:
            self._resume()
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                if self._stream is None and not self._open(self.path, 0, complete=False):
                    if once:
                        break
                    stop.wait(self.poll)
                    continue
                assert self._stream is not None
                data = self._stream.read(CHUNK_BYTES)
                if data and not self._same_content():
                    self._truncated()  # what was read may be new content: dropped
                    continue
                if data:
                    self._lines(self._carry + data if self._carry else data)
                    continue
                if self._draining_until is not None:
                    if time.monotonic() >= self._draining_until:
                        self._next_file()
                    else:
                        stop.wait(self.poll)
                    continue
                if once:
                    break
                if time.monotonic() - self._last_flush >= self.flush_seconds:
                    self._flush()
                self._rotation()
                if self._draining_until is None:
                    stop.wait(self.poll)
            self._flush()
        except ShipperStopped:
            pass
        finally:
            self._close()
            report.ship = self.shipper.close(grace=10.0)
            report.seconds = time.perf_counter() - started
            file_report = report.files[0]
            file_report.lines, file_report.bad = self.parser.lines, self.parser.bad
            file_report.untimed = self.parser.untimed
            file_report.bad_samples = self.parser.bad_samples
        return report

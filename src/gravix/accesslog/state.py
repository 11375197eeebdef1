"""The tailer's saved position: which content it was reading, and how far the server has it.

One small JSON file, rewritten after every acknowledged batch by
write-to-temp, fsync, rename, fsync of the directory::

    {"version": 1,
     "path": "/var/log/nginx/access.log",   # the file being followed
     "fingerprint": "3f2a9c0e8a7d6b4c",      # first-line hash of the content read
     "offset": 1048576,                      # bytes of it that are durable in Gravix
     "inode": 1234, "device": 2049}          # of the file when it was saved (informative)

On restart the tailer looks for the content by fingerprint (the file itself,
or a rotated ``access.log.1``) and resumes at ``offset``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from gravix.errors import ConfigError


@dataclass(frozen=True, slots=True)
class TailState:
    path: str
    fingerprint: str
    offset: int
    inode: int = 0
    device: int = 0
    version: int = 1


def default_state_path(log: Path) -> Path:
    """``$XDG_STATE_HOME/gravix/tail/<hash of the log's absolute path>.json``."""
    root = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    digest = hashlib.sha256(str(log.absolute()).encode()).hexdigest()[:16]
    return Path(root) / "gravix" / "tail" / f"{log.name}-{digest}.json"


def load_state(path: Path) -> TailState | None:
    """The saved state, None when there is none; ConfigError when it is unreadable."""
    try:
        data = json.loads(path.read_text())
        return TailState(
            path=str(data["path"]),
            fingerprint=str(data["fingerprint"]),
            offset=int(data["offset"]),
            inode=int(data.get("inode", 0)),
            device=int(data.get("device", 0)),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(
            f"tail state {path} is unreadable ({e}); move it away to start over"
        ) from e


def save_state(path: Path, state: TailState) -> None:
    """Publish the state atomically and durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as f:
        json.dump(asdict(state), f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""What only the local store does: files, folders, fsync order, OS errors."""

from __future__ import annotations

import errno
import os
import re
import threading
from pathlib import Path
from typing import Any

import pytest

from gravix.storage import InvalidKey, LocalObjectStore, StoreUnavailable


def files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def test_layout_is_one_file_per_key(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "store")
    store.put("raw/tenant=acme/x.gvx", b"data")
    assert (tmp_path / "store" / "raw" / "tenant=acme" / "x.gvx").read_bytes() == b"data"
    assert store.url == f"file://{tmp_path / 'store'}"


def test_relative_root_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = LocalObjectStore(Path("rel"))
    assert store.root == tmp_path / "rel"


def test_temp_and_stray_files_are_not_listed(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    store.put("a/b", b"x")
    (tmp_path / "a" / ".tmp-half-written").write_bytes(b"partial")
    (tmp_path / ".tmp-1234").write_bytes(b"partial")
    (tmp_path / "a" / "has space").write_bytes(b"not a key")
    (tmp_path / "caf\u00e9").write_bytes(b"not a key")
    (tmp_path / "a" / "link").symlink_to(tmp_path / "a" / "b")
    assert [info.key for info in store.list()] == ["a/b"]


def test_delete_prunes_empty_folders_but_keeps_the_root(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = LocalObjectStore(root)
    store.put("a/b/c/d", b"1")
    store.put("a/keep", b"2")
    store.delete("a/b/c/d")
    assert files_under(root) == ["a", "a/keep"]
    store.delete("a/keep")
    assert root.is_dir() and files_under(root) == []


def test_a_key_cannot_be_both_object_and_folder(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    store.put("a/b", b"x")
    with pytest.raises(InvalidKey, match="cannot hold both"):
        store.put("a", b"y")
    with pytest.raises(InvalidKey, match="cannot hold both"):
        store.publish("a", b"y")
    with pytest.raises(InvalidKey, match="'a/b' is an object"):
        store.put("a/b/c", b"y")
    assert not store.exists("a")
    store.delete("a")  # a folder is not an object: nothing to delete
    assert store.get("a/b") == b"x"
    assert files_under(tmp_path) == ["a", "a/b"]


def test_symlinks_out_of_the_root_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "store"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    root.mkdir()
    (root / "door").symlink_to(outside, target_is_directory=True)
    (root / "file-door").symlink_to(outside / "secret")
    store = LocalObjectStore(root)
    for key in ("door/secret", "door/new", "file-door"):
        with pytest.raises(InvalidKey, match="outside the store root"):
            store.get(key)
        with pytest.raises(InvalidKey, match="outside the store root"):
            store.put(key, b"overwritten")
    with pytest.raises(InvalidKey, match="outside the store root"):
        store.list("door/")
    assert (outside / "secret").read_bytes() == b"secret"
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]


def test_a_symlinked_root_is_fine(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real", target_is_directory=True)
    store = LocalObjectStore(tmp_path / "alias")
    store.put("a/b", b"x")
    assert (tmp_path / "real" / "a" / "b").read_bytes() == b"x"
    assert [info.key for info in store.list()] == ["a/b"]


def test_head_rereads_the_disk(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    info = store.put("k", b"good")
    (tmp_path / "k").write_bytes(b"rot!")
    again = store.head("k")
    assert again.size == info.size and again.sha256 != info.sha256


def test_put_writes_fsyncs_renames_then_fsyncs_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, Any]] = []
    real_fsync, real_replace, real_mkdir = os.fsync, os.replace, os.mkdir

    def fsync(fd: int) -> None:
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        calls.append(("replace", (Path(src).name[:5], str(dst))))
        real_replace(src, dst)

    def mkdir(path: Any, *args: Any) -> None:
        calls.append(("mkdir", str(path)))
        real_mkdir(path, *args)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "mkdir", mkdir)
    store = LocalObjectStore(tmp_path / "store")
    store.put("a/b", b"x")
    target = str(tmp_path / "store" / "a" / "b")
    assert calls == [
        ("mkdir", str(tmp_path / "store")),
        ("fsync", str(tmp_path)),
        ("mkdir", str(tmp_path / "store" / "a")),
        ("fsync", str(tmp_path / "store")),
        ("fsync", calls[4][1]),  # the temp file, before it becomes visible
        ("replace", (".tmp-", target)),
        ("fsync", str(tmp_path / "store" / "a")),
    ]
    assert Path(calls[4][1]).name.startswith(".tmp-")


@pytest.mark.parametrize(
    ("err", "text"), [(errno.ENOSPC, "No space left on device (ENOSPC)"), (errno.EIO, "EIO")]
)
def test_os_errors_are_unavailable_and_leave_no_temp_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, err: int, text: str
) -> None:
    store = LocalObjectStore(tmp_path)
    store.put("a/old", b"old")

    def broken_fsync(fd: int) -> None:
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(os, "fsync", broken_fsync)
    for write in (store.put, store.publish):
        with pytest.raises(
            StoreUnavailable, match=f"cannot write 'a/new'.*{re.escape(text)}"
        ) as caught:
            write("a/new", b"new")
        assert caught.value.status == 503
    monkeypatch.undo()
    assert files_under(tmp_path) == ["a", "a/old"]


def test_publish_without_hard_links_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(src: Any, dst: Any) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    store = LocalObjectStore(tmp_path)
    with pytest.raises(StoreUnavailable, match="hard links"):
        store.publish("k", b"v")
    assert files_under(tmp_path) == []


def test_losing_publish_leaves_no_temp_file(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    assert store.publish("k", b"first")
    assert not store.publish("k", b"second")
    assert files_under(tmp_path) == ["k"]
    assert (tmp_path / "k").stat().st_nlink == 1


def test_ping_makes_the_root_and_probes_it(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "new" / "store")
    store.ping()
    assert (tmp_path / "new" / "store").is_dir()
    assert files_under(tmp_path / "new" / "store") == []


def test_ping_fails_when_the_root_cannot_be_a_folder(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    for root in (tmp_path / "file", tmp_path / "file" / "store"):
        with pytest.raises(StoreUnavailable, match="not writable"):
            LocalObjectStore(root).ping()
        with pytest.raises(StoreUnavailable):
            LocalObjectStore(root).put("k", b"v")


def test_publish_race_has_one_winner(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    results: dict[int, bool] = {}
    barrier = threading.Barrier(8)

    def racer(i: int) -> None:
        barrier.wait()
        results[i] = store.publish("race/key", f"writer {i}".encode())

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, won in results.items() if won]
    assert len(results) == 8 and len(winners) == 1
    assert store.get("race/key") == f"writer {winners[0]}".encode()
    assert files_under(tmp_path) == ["race", "race/key"]

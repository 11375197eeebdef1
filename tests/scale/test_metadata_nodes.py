"""Three nodes on one PostgreSQL: keys, revocation, sessions and series caps across nodes, and
PostgreSQL down.

Two `gravix serve --role ingest` nodes and one `--role all` node (the API and
rollup node) share one local object store and one PostgreSQL
(``GRAVIX_DATABASE_URL``, a cluster of their own from tests/pg.py). Keys and
users are made with the CLI, as docs/scale.md says.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.factories import fact
from tests.pg import PostgresCluster, new_cluster
from tests.procs import ServerProcess

pytestmark = pytest.mark.slow
WITH_ROLE_INGEST = ["sh", "-c", 'exec "$@" --role ingest', "sh"]
PASSWORD = "correct horse battery"
# Polls end here; the revocation window itself is key_refresh_seconds (1 s).
POLL_SECONDS = 30.0


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    made = new_cluster()
    try:
        yield made
    finally:
        made.remove()


def gravix(url: str, data_dir: Path, *args: str, stdin: str | None = None) -> str:
    """Run the `gravix` CLI against the PostgreSQL store; its standard output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRAVIX_")}
    env["GRAVIX_DATABASE_URL"] = url
    done = subprocess.run(
        [sys.executable, "-m", "gravix.cli", *args, "--data-dir", str(data_dir)],
        input=stdin, capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def send_fact(
    node: ServerProcess, key: str, event_id: str, path: str | None = None
) -> httpx.Response:
    """One fact of the series of tests.factories.fact(), or of ``path``."""
    overrides = {} if path is None else {"path": path}
    return httpx.post(
        f"{node.url}/api/v1/facts",
        json=[fact(event_id=event_id, timestamp=int(time.time() * 1000), **overrides)],
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )


def post_fact(node: ServerProcess, key: str, event_id: str) -> int:
    return send_fact(node, key, event_id).status_code


def poll(check: Callable[[], bool], what: str) -> float:
    """Seconds until ``check()`` holds; fails after POLL_SECONDS."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < POLL_SECONDS, f"never: {what}"
        time.sleep(0.05)
    return time.monotonic() - start


def login(node: ServerProcess) -> httpx.Response:
    return httpx.post(
        f"{node.url}/api/v1/login", json={"name": "ana", "password": PASSWORD}, timeout=10
    )


def test_keys_sessions_and_postgresql_down_across_nodes(
    tmp_path: Path, cluster: PostgresCluster
) -> None:
    url = cluster.create_database()
    env = {
        "GRAVIX_DATABASE_URL": url,
        "GRAVIX_OBJECT_STORE_URL": (tmp_path / "shared-store").as_uri(),
        "GRAVIX_KEY_REFRESH_SECONDS": "1",
        "GRAVIX_MAX_SERIES_PER_SERVICE": "2",
    }
    nodes: dict[str, ServerProcess] = {}
    try:
        for name in ("node-a", "node-b", "node-c"):
            node_env = {**env, "GRAVIX_NODE_ID": name}
            prefix = WITH_ROLE_INGEST if name != "node-c" else []
            nodes[name] = ServerProcess(tmp_path / name, env=node_env, prefix=prefix).start()
        a, b, c = nodes["node-a"], nodes["node-b"], nodes["node-c"]

        # A key made once (with the CLI, on node-a's data dir) works on every node.
        key = gravix(url, a.data_dir, "keys", "create", "--tenant", "acme")
        spare = gravix(url, a.data_dir, "keys", "create", "--tenant", "acme", "--label", "kept")
        for node in (a, b):
            poll(lambda n=node: post_fact(n, key, f"k-{n.url[-5:]}") == 202, "key accepted")

        # The series cap holds across nodes: fact()'s series and /second make 2 for
        # checkout, so /third is refused on the node that has not seen /second.
        second = send_fact(a, spare, "second", path="/second")
        assert second.status_code == 202, second.text
        third = send_fact(b, spare, "third", path="/third")
        assert third.status_code == 400, third.text
        assert third.json()["error"]["code"] == "series_limit"

        # Revoked (CLI on node-b's data dir): refused by both ingest nodes.
        key_id = key.split("_")[1]
        gravix(url, b.data_dir, "keys", "revoke", key_id)
        for node in (a, b):
            took = poll(lambda n=node: post_fact(n, key, "revoked") == 401, "revoked key refused")
            print(f"revoked key refused by {node.url} {took:.2f} s after `gravix keys revoke`")

        # A session made on one node is valid on another.
        gravix(url, c.data_dir, "users", "create", "ana", "--tenant", "acme", "--role", "admin",
               "--password-stdin", stdin=PASSWORD + "\n")  # fmt: skip
        reply = login(a)
        assert reply.status_code == 200, reply.text
        cookie = reply.cookies["gravix_session"]
        me = httpx.get(f"{c.url}/api/v1/me", cookies={"gravix_session": cookie}, timeout=10)
        assert me.status_code == 200 and me.json()["name"] == "ana", me.text

        # PostgreSQL stopped: intake with a known key and known series goes on; a new
        # series and login are 503 with Retry-After.
        cluster.stop()
        for i, node in enumerate((a, b)):
            assert post_fact(node, spare, f"down-{i}") == 202
        new_series = send_fact(b, spare, "new-while-down", path="/second")
        assert new_series.status_code == 503, new_series.text
        assert new_series.json()["error"]["code"] == "metadata_unavailable"
        assert int(new_series.headers["retry-after"]) >= 1
        down = login(c)
        assert down.status_code == 503, down.text
        assert down.json()["error"]["code"] == "metadata_unavailable"
        assert int(down.headers["retry-after"]) >= 1
        assert all(n.proc is not None and n.proc.poll() is None for n in nodes.values())

        # Restarted: login works again without restarting Gravix.
        cluster.start()
        poll(lambda: login(c).status_code == 200, "login after PostgreSQL restarted")
        assert post_fact(b, spare, "up-again") == 202
        again = send_fact(b, spare, "new-after-down", path="/second")
        assert again.status_code == 202, again.text
        for node in nodes.values():
            assert "Traceback" not in node.log_tail(200), node.log_tail(200)
    finally:
        for node in nodes.values():
            if node.proc is not None and node.proc.poll() is None:
                node.terminate()

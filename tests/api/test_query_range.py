"""An answer says what it counted (issue #18): ``meta.from`` / ``meta.to`` are the range
counted, ``meta.requested`` the range asked.

A real `gravix serve` holds two days of facts at random milliseconds: most of
them rolled up by the real `gravix upload --once` and `gravix rollup` (minute,
hourly and daily tiers), the rest pending in the spool. For ranges whose
ends are not on minute boundaries, at every grain, each answer must count
exactly the facts whose timestamps lie in [meta.from, meta.to), per row.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

from gravix.api.auth import token_store
from gravix.ingest.keys import KeyStore
from gravix.query.model import GRAINS
from tests.factories import fact
from tests.procs import ServerProcess

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
OFF = {"GRAVIX_UPLOADER_ENABLED": "false", "GRAVIX_ROLLUP_ENABLED": "false"}


def gravix(*args: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRAVIX_")}
    out = subprocess.run(
        [sys.executable, "-m", "gravix.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr


def facts_between(rng: random.Random, prefix: str, start: int, end: int, n: int) -> list[Any]:
    return [
        fact(
            event_id=f"{prefix}{i}",
            timestamp=rng.randrange(start, end),
            status=rng.choice([200, 200, 200, 503]),
        )
        for i in range(n)
    ]


def post(url: str, key: str, facts: list[Any]) -> None:
    for i in range(0, len(facts), 1000):
        reply = httpx.post(
            f"{url}/api/v1/facts",
            json=facts[i : i + 1000],
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        assert reply.status_code == 202, reply.text


def next_minute(ms: int) -> int:
    return -(-ms // MINUTE) * MINUTE


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """(url, token, every timestamp sent, now): rolled-up facts and pending ones."""
    data_dir = tmp_path_factory.mktemp("range") / "data"
    _, key = KeyStore(data_dir / "keys.db").create("acme")
    _, token = token_store(data_dir / "tokens.db").create("acme")
    rng = random.Random(18)
    now = int(time.time() * 1000)
    start = now - 2 * DAY - 7 * HOUR
    rolled = facts_between(rng, "r", start, now - HOUR, 4000)
    with ServerProcess(data_dir, env=OFF) as server:
        post(server.url, key, rolled)
        assert server.terminate() == 0
    gravix("upload", "--once", "--data-dir", str(data_dir))
    gravix("rollup", "--data-dir", str(data_dir))
    # Pending: not rolled up, over the same two days (late facts) and the last hour.
    pending = facts_between(rng, "p", start, now, 1500)
    with ServerProcess(data_dir, env=OFF) as server:
        post(server.url, key, pending)
        sent = sorted(f["timestamp"] for f in rolled + pending)
        yield server.url, token, sent, now
        assert server.terminate() == 0


def query(url: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
    reply = httpx.post(
        f"{url}/api/v1/query", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=60
    )
    assert reply.status_code == 200, reply.text
    result: dict[str, Any] = reply.json()
    return result


def count(sent: list[int], start: int, end: int) -> int:
    return sum(start <= t < end for t in sent)


@pytest.mark.timeout(300)
def test_meta_states_the_range_counted_at_every_grain(served: Any) -> None:
    url, token, sent, now = served
    everything = {"metrics": ["requests"], "from": "now-3d", "grain": "all"}
    assert query(url, token, everything)["rows"] == [[len(sent)]]  # rolled up and pending
    rng = random.Random(5)
    ranges = [
        (sent[0] + 12_345, now - 3 * HOUR + 17_500),  # days, hours and minutes, pending too
        (sent[0] - 59_999, sent[-1] + 1),
        (now - HOUR - 30_000, now - 29_999),  # the pending last hour
        *((t - rng.randrange(1, 2 * DAY), t) for t in rng.sample(sent, 4)),
    ]
    tiers_read: set[str] = set()
    for asked_from, asked_to in ranges:
        asked_from = max(asked_from, 1)
        for grain in ["all", *GRAINS]:
            if grain != "all" and (asked_to - asked_from) / GRAINS[grain] > 20_000:
                continue
            body = {"metrics": ["requests"], "from": asked_from, "to": asked_to, "grain": grain}
            result = query(url, token, body)
            meta = result["meta"]
            g = GRAINS.get(grain)
            assert meta["requested"] == {"from": asked_from, "to": asked_to}
            assert meta["from"] == (asked_from - asked_from % g if g else next_minute(asked_from))
            assert meta["to"] == next_minute(asked_to)
            tiers_read.update(meta["tiers"])
            counted = sum(row[-1] for row in result["rows"])
            assert counted == count(sent, meta["from"], meta["to"]), (grain, meta)
            if g:  # each row: the facts of its bucket, cut to the range counted
                for t, n in result["rows"]:
                    assert n == count(sent, max(t, meta["from"]), min(t + g, meta["to"]))
    assert tiers_read == {"1m", "1h", "1d"}


@pytest.mark.timeout(120)
def test_the_issue_example_no_longer_hides_the_gap(served: Any) -> None:
    """from/to inside minutes: what is counted differs from what was asked, and says so."""
    url, token, sent, _ = served
    asked_from, asked_to = next_minute(sent[100]) + 30_000, next_minute(sent[-100]) + 30_000
    body = {"metrics": ["requests"], "from": asked_from, "to": asked_to, "grain": "all"}
    result = query(url, token, body)
    meta = result["meta"]
    assert (meta["from"], meta["to"]) != (asked_from, asked_to)
    assert meta["from"] % MINUTE == 0 and meta["to"] % MINUTE == 0
    assert result["rows"] == [[count(sent, meta["from"], meta["to"])]]
    # A default "to" (now) is counted to the end of the current minute.
    result = query(url, token, {"metrics": ["requests"], "from": "now-1h", "grain": "all"})
    meta = result["meta"]
    assert meta["to"] == next_minute(meta["requested"]["to"])
    assert meta["to"] - meta["requested"]["to"] < MINUTE

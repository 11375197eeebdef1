"""Past traffic sent at once, so that a fresh ``gravix demo`` has history to show.

:func:`send_history` asks the traffic model for the facts and service events
of ``[start_ms, end_ms)``, as live traffic would have produced them (slices
of :data:`SLICE_MS`, the model's rate at each), and posts them in batches as
fast as the server takes them: 429 and 503 wait for ``Retry-After``,
connection errors back off and retry the same bytes (so the same event ids).
Acknowledged fact ids are appended to the ack log, one a line, like the live
load generator's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import httpx
import msgspec

from gravix.errors import GravixError
from gravix.loadgen.sender import EVENTS_PATH, FACTS_PATH, USER_AGENT
from gravix.loadgen.traffic import TrafficModel
from gravix.retry import retry_after_seconds

SLICE_MS = 5_000  # spikes and slow windows are taken at a slice's middle
BATCH = 5_000
ATTEMPTS = 20
_encode = msgspec.json.Encoder().encode


def _post(client: httpx.Client, path: str, items: list[dict[str, Any]]) -> None:
    body = _encode(items)
    for attempt in range(ATTEMPTS):
        try:
            response = client.post(path, content=body)
        except httpx.TransportError:
            time.sleep(min(5.0, 0.2 * 2**attempt))
            continue
        if 200 <= response.status_code < 300:
            return
        if response.status_code in (429, 503):
            time.sleep(retry_after_seconds(response.headers.get("retry-after"), 1.0, 10.0))
            continue
        raise GravixError(
            f"sending past traffic: {path} answered {response.status_code}: {response.text[:200]}"
        )
    raise GravixError(f"sending past traffic: {path} failed {ATTEMPTS} times; is the server up?")


def send_history(
    url: str,
    key: str,
    model: TrafficModel,
    start_ms: int,
    end_ms: int,
    *,
    ack_log: Path | None = None,
    batch: int = BATCH,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Post the model's traffic of ``[start_ms, end_ms)``; returns the facts acknowledged."""
    headers = {
        "Authorization": f"Bearer {key}",
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
    }
    acked = 0
    with (
        httpx.Client(base_url=url, headers=headers, timeout=30.0, trust_env=False) as client,
        ack_log.open("a", encoding="utf-8") if ack_log else nullcontext() as log,
    ):
        events = model.events_between(start_ms, end_ms)
        for i in range(0, len(events), batch):
            _post(client, EVENTS_PATH, events[i : i + batch])

        def send(facts: list[dict[str, Any]]) -> None:
            nonlocal acked
            _post(client, FACTS_PATH, facts)
            acked += len(facts)
            if log is not None:
                log.write("\n".join(f["event_id"] for f in facts) + "\n")
                log.flush()

        pending: list[dict[str, Any]] = []
        carry = 0.0
        t = start_ms
        while t < end_ms:
            end = min(t + SLICE_MS, end_ms)
            due = model.rate_at(t) * (end - t) / 1000 + carry
            n = int(due)
            carry = due - n
            pending.extend(model.facts(n, t, end))
            while len(pending) >= batch:
                send(pending[:batch])
                del pending[:batch]
            t = end
            if progress is not None:
                progress(t - start_ms, end_ms - start_ms)
        if pending:
            send(pending)
    return acked

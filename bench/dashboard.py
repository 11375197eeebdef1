"""The dashboard benchmark: from navigation to every overview chart drawn, in Chromium.

From issue #6: a real ``gravix serve`` reads the query benchmark's 30-day
dataset (:mod:`bench.query_data`: 1,200 series x 30 days of minute rows for
tenant ``bench``, with its hourly and daily tiers) straight from that
object store, read-only (rollup, retention and uploader off), and headless
Chromium (Debian's, driven by Playwright) opens the overview over those 30
days (a fixed range: the data lies in the future of the real clock) as a
signed-in viewer. The time is the page's own ``gravix:charts-drawn``
performance mark, set when uPlot has drawn all three charts (error rate,
latency, throughput), measured from the start of the navigation
(``performance.timeOrigin``); the page's other panels (services with their
change and sparklines, top failing endpoints, events) go on loading and are
timed too (``gravix:refreshed``).

* **Cold**: the first navigation after the server started (its tier cache
  empty; the tier files in the OS page cache), ``--cold-runs`` servers.
* **Warm**: ``--runs`` further navigations on the last server, each in a new
  browser context (no HTTP cache, a full page load).

Goal: <= 1 s to all overview charts drawn. Run
``.venv/bin/python -m bench dashboard`` (the dataset is made by the query
benchmark if missing, which takes most of an hour); results go to
``bench/results/dashboard-<UTC time>.json`` and bench/README.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.machine import describe_machine, probe_fsync, publish_results, results_head
from bench.query_peers import NOW_BEFORE_END_MS
from bench.servers import REPO, BenchError, ServerProcess

RESULTS_DIR = REPO / "bench" / "results"
DATA_DIR = Path(tempfile.gettempdir()) / "gravix-bench-query"
SCREENSHOT = REPO / "test-artifacts" / "screenshots" / "bench-overview-30d.png"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
USER, PASSWORD = "bench-viewer", "a long benchmark passphrase"
GOAL_MS = 1000.0
DAY_MS = 86_400_000
MARKS = """() => {
  const mark = (name) => {
    const found = performance.getEntriesByName(name);
    return found.length ? found[0].startTime : null;
  };
  const nav = performance.getEntriesByType("navigation")[0];
  return {
    charts_ms: mark("gravix:charts-drawn"),
    panels_ms: mark("gravix:refreshed"),
    dom_content_loaded_ms: nav.domContentLoadedEventEnd,
    api_requests: performance.getEntriesByType("resource")
      .filter((r) => r.name.includes("/api/v1/"))
      .map((r) => ({name: r.name.split("/api/v1/")[1], start_ms: r.startTime,
                    ms: r.responseEnd - r.startTime})),
  };
}"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def warm_tiers(store: Path) -> float:
    """Read the hourly and daily tiers into the page cache (what the 30-day charts read)."""
    started = time.perf_counter()
    for tier in ("metrics_1h", "metrics_1d"):
        for path in sorted((store / tier).rglob("*.parquet")):
            path.read_bytes()
    return time.perf_counter() - started


def start_server(work: Path, store: Path, n: int) -> ServerProcess:
    data_dir = work / f"serve-{n}"
    data_dir.mkdir()
    from gravix.api.users import UserStore

    UserStore(data_dir / "users.db").create(USER, "bench", "viewer", PASSWORD)
    argv = [sys.executable, "-m", "gravix.cli", "serve", "--port", "0", "--workers", "1",
            "--data-dir", str(data_dir)]  # fmt: skip
    env = {
        "GRAVIX_OBJECT_STORE_URL": f"file://{store}",
        # Read-only on the shared dataset: nothing may write to or delete from it.
        "GRAVIX_ROLLUP_ENABLED": "false",
        "GRAVIX_RETENTION_ENABLED": "false",
        "GRAVIX_UPLOADER_ENABLED": "false",
        "GRAVIX_DASHBOARD_REFRESH_SECONDS": "3600",  # no refresh during a measurement
        "GRAVIX_LOG_LEVEL": "warning",
    }
    server = ServerProcess("gravix", argv, cpu=0, ready_path="/ready", cwd=work,
                           log_path=work / f"serve-{n}.log", env=env)  # fmt: skip
    # Not pinned to a CPU: the page's queries run side by side, as for a user.
    server.argv = argv
    return server.start()


def sign_in(browser: Any, url: str) -> dict[str, Any]:
    context = browser.new_context()
    reply = context.request.post(f"{url}/api/v1/login", data={"name": USER, "password": PASSWORD})
    if reply.status != 200:
        raise BenchError(f"login: {reply.status} {reply.text()}")
    state: dict[str, Any] = context.storage_state()
    context.close()
    return state


def navigate(
    browser: Any, url: str, state: dict[str, Any], shot: Path | None = None
) -> dict[str, Any]:
    """One page load: the marks of the page, checked to show three charts of real data."""
    context = browser.new_context(
        storage_state=state, viewport={"width": 1280, "height": 900}, timezone_id="UTC"
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(url, wait_until="commit")
        page.locator("html[data-charts-drawn]").wait_for(state="attached", timeout=120_000)
        page.locator("html[data-refreshed]").wait_for(state="attached", timeout=120_000)
        marks: dict[str, Any] = page.evaluate(MARKS)
        canvases = page.locator(".chart-panel canvas").count()
        rows = page.locator("table.services tbody tr").count()
        banner = page.locator("#error-banner").count()
        if canvases != 3 or rows == 0 or banner or errors or marks["charts_ms"] is None:
            raise BenchError(
                f"the overview is not what it should be: {canvases} charts, {rows} services, "
                f"error banner: {bool(banner)}, page errors: {errors}"
            )
        if shot is not None:
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), full_page=True)
        marks["services"] = rows
        return marks
    finally:
        context.close()


def stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]
    return {"n": len(values), "p50": statistics.median(values), "p95": p95, "max": max(values)}


def markdown(cold: list[dict[str, Any]], warm: list[dict[str, Any]]) -> str:
    rows = [
        ("all 3 overview charts drawn, first load after start (cold)", cold, "charts_ms", True),
        ("all 3 overview charts drawn, later loads (warm)", warm, "charts_ms", True),
        ("every overview panel loaded, cold", cold, "panels_ms", False),
        ("every overview panel loaded, warm", warm, "panels_ms", False),
        ("page ready to run (DOMContentLoaded), warm", warm, "dom_content_loaded_ms", False),
    ]
    lines = [
        "| navigation -> | loads | p50 | p95 | max | goal | met |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for label, runs, key, judged in rows:
        s = stats([r[key] for r in runs])
        goal = f"<= {GOAL_MS:.0f} ms" if judged else ""
        met = ("yes" if s["max"] <= GOAL_MS else "**no**") if judged else ""
        lines.append(
            f"| {label} | {s['n']} | {s['p50']:.0f} ms | {s['p95']:.0f} ms | {s['max']:.0f} ms "
            f"| {goal} | {met} |"
        )
    return "\n".join(lines)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench dashboard",
        description="Navigation to all overview charts drawn, over the 30-day dataset.",
    )
    parser.add_argument("--series", type=int, default=1200, help="series (default 1200)")
    parser.add_argument("--days", type=int, default=30, help="days of data (default 30)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=20, help="warm page loads (default 20)")
    parser.add_argument("--cold-runs", type=int, default=3, help="fresh servers (default 3)")
    parser.add_argument(
        "--data-dir", type=Path, default=DATA_DIR, help=f"data cache (default {DATA_DIR})"
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.runs < 1 or args.cold_runs < 1:
        parser.error("--runs and --cold-runs are at least 1")
    return args


def cached_dataset(args: argparse.Namespace) -> dict[str, Any]:
    """The query benchmark's data set, used as it is; made (by bench.query_data) if missing.

    A cached one is never rewritten here (bench.query_data would redo an older
    layout in place): the query benchmark owns it, and this one only reads it.
    """
    import json

    from bench.query_data import dataset

    meta_path = args.data_dir / f"query-{args.series}s-{args.days}d-seed{args.seed}" / "meta.json"
    if meta_path.exists():
        meta: dict[str, Any] = json.loads(meta_path.read_text())
        meta["cached"] = True
        return meta
    return dataset(args.data_dir, args.series, args.days, args.seed, log=log)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    started = datetime.now(UTC)
    try:
        if not CHROMIUM.exists():
            raise BenchError(f"{CHROMIUM} is missing: apt-get install chromium (make bench does)")
        try:
            from playwright.sync_api import sync_playwright
        except ImportError as e:
            raise BenchError(
                f"playwright is in the dev extra: pip install -e '.[dev]' ({e})"
            ) from e
        meta = cached_dataset(args)
        store = Path(meta["store"])
        log(f"data: {meta['store']} (layout {meta.get('layout', 1)}), tenant {meta['tenant']}")
        now_ms = meta["end_ms"] - NOW_BEFORE_END_MS
        from_ms = now_ms - args.days * DAY_MS
        path = f"/?from={iso(from_ms)}&to={iso(now_ms)}"
        with tempfile.TemporaryDirectory(prefix="gravix-bench-dashboard-") as tmp:
            work = Path(tmp)
            machine = describe_machine(work)
            for name in ("wrk", "hey"):
                machine.pop(name, None)
            machine["packages"] = {p: metadata.version(p) for p in ("duckdb", "playwright")}
            machine["fsync_probe"] = probe_fsync(work, 0)
            log(f"tiers read into the page cache in {warm_tiers(store):.1f} s; page {path}")
            cold: list[dict[str, Any]] = []
            warm: list[dict[str, Any]] = []
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
                )
                machine["chromium"] = browser.version
                for n in range(args.cold_runs):
                    server = start_server(work, store, n)
                    try:
                        state = sign_in(browser, server.url)
                        cold.append(navigate(browser, server.url + path, state))
                        log(f"cold load {n + 1}: charts drawn at {cold[-1]['charts_ms']:.0f} ms")
                        if n == args.cold_runs - 1:
                            for i in range(args.runs):
                                shot = SCREENSHOT if i == 0 else None
                                warm.append(navigate(browser, server.url + path, state, shot))
                            median = statistics.median(r["charts_ms"] for r in warm)
                            log(f"warm loads: charts drawn at p50 {median:.0f} ms")
                    finally:
                        server.stop()
                browser.close()
    except BenchError as e:
        print(f"bench: error: {e}", flush=True)
        return 1
    table = markdown(cold, warm)
    seconds = (datetime.now(UTC) - started).total_seconds()
    out, head = results_head("dashboard", args, started, seconds, argv)
    result = {
        **head,
        "machine": machine,
        "goal_ms": GOAL_MS,
        "data": meta,
        "page": path,
        "summary": {
            "cold_charts": stats([r["charts_ms"] for r in cold]),
            "warm_charts": stats([r["charts_ms"] for r in warm]),
            "cold_panels": stats([r["panels_ms"] for r in cold]),
            "warm_panels": stats([r["panels_ms"] for r in warm]),
        },
        "cold": cold,
        "warm": warm,
        "table": table,
    }
    publish_results(out, result, table, machine, "work dir", seconds)
    return 0

"""The charts show what matters, at 1366 px and on a 375 px phone (issue #18, items 6-11).

One server for the module holds traffic shaped to trip each item:

- ``shop``: six hours, a request every 1.2 s, whose p50 is about 20 ms, p95
  about 250 ms and p99 a minute (item 6: on a linear axis p50 and p95 lie on
  "0 ms"), and a deploy every two minutes with an incident every half hour
  (item 8: lines across the plot made a barcode of it);
- ``alpha`` to ``golf``: the last hour, from 40% errors down to none (item 7:
  the top five by errors get a line each, the rest are "others"), and the
  same hour a day earlier at half the traffic and a quarter of the errors
  (alpha: 2 in 10, not 8 in 20), but nothing the hour before (item 10: against the previous period a
  table says "new"; against the day before it must say how much more).

What each test checks is on the page: the pixels of the plot canvas (which
colour is drawn where), the legend's text, the lane's markers, the tables,
the downloaded files. Screenshots go to ``test-artifacts/screenshots/charts-*``
(conftest.py), which ``make test`` leaves for CI to keep.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
from playwright.sync_api import Locator, Page, expect

from tests.dashboard.conftest import Dashboard, Screen, screenshot
from tests.dashboard.conftest import start_dashboard as start

pytestmark = pytest.mark.slow

MINUTE, HOUR, DAY = 60_000, 3_600_000, 86_400_000
# service -> 5xx answers out of every 20 requests, in the last hour
ERRORS_IN_20 = {
    "alpha": 8,
    "bravo": 6,
    "charlie": 4,
    "delta": 3,
    "echo": 2,
    "foxtrot": 1,
    "golf": 0,
}
TOP_FIVE = ["alpha", "bravo", "charlie", "delta", "echo"]
SHOP_PATH = "/items/{id}"
NO_VALUE = "\u2013"  # what a legend showed without a pointer: an en dash
DEPLOY_EVERY_MS = 2 * MINUTE
INCIDENT_EVERY_MS = 30 * MINUTE


def _facts(
    service: str, path: str, start_ms: int, latencies: list[float], errors: int
) -> list[Any]:
    """One minute of facts from ``start_ms``, evenly spaced; the first ``errors`` are 500s."""
    step = MINUTE // len(latencies)
    return [
        {"event_id": f"{service}-{start_ms}-{i}", "timestamp": start_ms + i * step,
         "service": service, "method": "GET", "path": path, "status": 500 if i < errors else 200,
         "latency_ms": latency, "env": "prod", "version": "v1"}
        for i, latency in enumerate(latencies)
    ]  # fmt: skip


def shop_minute(start_ms: int) -> list[Any]:
    # 50 requests: 45 near 20 ms, 3 near 250 ms, 2 of a minute; one 500.
    latencies = [15.0 + i for i in range(45)] + [240.0, 250.0, 260.0] + [60_000.0, 61_000.0]
    latencies = latencies[45:] + latencies[:45]  # the slow ones are not the error
    return _facts("shop", SHOP_PATH, start_ms, latencies, errors=1)


def service_minute(service: str, start_ms: int, per_minute: int, errors: int) -> list[Any]:
    return _facts(service, "/work", start_ms, [30.0] * per_minute, errors)


@pytest.fixture(scope="module")
def end() -> int:
    """The end of the module's traffic (a whole minute); the tests look at fixed ranges up to it."""
    now = int(time.time() * 1000)
    return now - now % MINUTE


def until_end(end: int, hours: int) -> str:
    """The query string of the fixed range of the last ``hours`` before ``end``."""
    return f"from={end - hours * HOUR}&to={end}"


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory, end: int) -> Iterator[Dashboard]:
    dashboard = start(tmp_path_factory.mktemp("charts"))
    try:
        this_minute = end
        items: list[Any] = []
        for m in range(6 * 60):  # whole minutes only, none in the future
            items += shop_minute(this_minute - (m + 1) * MINUTE)
        for m in range(60):
            start_ms = this_minute - (m + 1) * MINUTE
            for service, errors in ERRORS_IN_20.items():
                items += service_minute(service, start_ms, 20, errors)
                # A day earlier: half the requests, a quarter of the errors.
                items += service_minute(service, start_ms - DAY, 10, errors // 4)
        for i in range(0, len(items), 10_000):
            dashboard.post("/api/v1/facts", items[i : i + 10_000])
        events: list[Any] = []
        first = this_minute - 6 * HOUR + 10 * MINUTE  # none near the ends of the 6 h range
        for t in range(first, this_minute - 10 * MINUTE, DEPLOY_EVERY_MS):
            n = (t - first) // DEPLOY_EVERY_MS
            kind = "incident" if (t - first) % INCIDENT_EVERY_MS == 0 else "deploy"
            events.append({"event_id": f"shop-{kind}-{n}", "timestamp": t + 7_000,
                           "service": "shop", "kind": kind, "message": f"{kind} number {n}",
                           "version": f"v{n}"})  # fmt: skip
        dashboard.post("/api/v1/events", events)
        assert len(dashboard.wait_for_events(len(events), timeout=60, **{"from": "now-7h"})) == len(
            events
        )
        yield dashboard
    finally:
        dashboard.server.__exit__()


def chart(page: Page, chart_id: str) -> Locator:
    return page.locator(f"[data-chart='{chart_id}']")


# What the plot canvas holds: for each CSS colour variable, how many pixels of the
# plotting area have that colour, and the median of their heights above its bottom (CSS px).
PIXELS = """([chartId, names]) => {
  const panel = document.querySelector(`[data-chart='${chartId}']`);
  const canvas = panel.querySelector("canvas"), over = panel.querySelector(".u-over");
  const c = canvas.getBoundingClientRect(), o = over.getBoundingClientRect();
  const k = canvas.width / c.width;
  const x0 = Math.round((o.left - c.left) * k), y0 = Math.round((o.top - c.top) * k);
  const w = Math.round(o.width * k), h = Math.round(o.height * k);
  const data = canvas.getContext("2d").getImageData(x0, y0, w, h).data;
  const probe = document.createElement("i");
  document.body.append(probe);
  const out = {};
  for (const name of names) {
    probe.style.color = `var(${name})`;
    const rgb = getComputedStyle(probe).color.match(/\\d+/g).slice(0, 3).map(Number);
    const heights = [];
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
      const i = (y * w + x) * 4;
      const near = [0, 1, 2].every((j) => Math.abs(data[i + j] - rgb[j]) < 24);
      if (data[i + 3] > 200 && near) heights.push((h - y) / k);
    }
    heights.sort((a, b) => a - b);
    const median = heights.length ? heights[heights.length >> 1] : null;
    out[name] = { count: heights.length, median };
  }
  probe.remove();
  return out;
}"""


def pixels(page: Page, chart_id: str, *names: str) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate(PIXELS, [chart_id, list(names)])
    return result


def legend(page: Page, chart_id: str) -> dict[str, str]:
    """The legend's rows: label -> value."""
    rows = chart(page, chart_id).locator(".u-legend .u-series")
    labels = rows.locator("th").all_inner_texts()
    values = rows.locator("td").all_inner_texts()
    return {label.strip(): value.strip() for label, value in zip(labels, values, strict=True)}


# --- item 6: latency on a log axis ----------------------------------------------------


def test_latency_is_drawn_on_a_log_axis_with_a_linear_switch(screen: Screen, end: int) -> None:
    page = screen.open(f"/?service=shop&{until_end(end, 6)}")
    latency = chart(page, "latency")
    expect(latency).to_have_attribute("data-scale", "log")
    expect(latency.locator("h3")).to_have_text("Latency, log scale")
    drawn = pixels(page, "latency", "--c-1", "--c-2", "--c-3")
    p50, p95, p99 = (drawn[name] for name in ("--c-1", "--c-2", "--c-3"))
    # Three lines apart, p50 well above the bottom: 20 ms, 250 ms and 60 s all readable.
    assert p50["count"] > 50 and p95["count"] > 50 and p99["count"] > 50, drawn
    assert p50["median"] > 15, drawn
    assert p95["median"] - p50["median"] > 20, drawn
    assert p99["median"] - p95["median"] > 20, drawn
    values = legend(page, "latency")
    assert re.fullmatch(r"\d+(\.\d+)? ms", values["p50"]), values
    assert re.fullmatch(r"\d+(\.\d+)? s", values["p99"]), values
    screenshot(page, f"charts-latency-log-{screen.name}")
    screen.fits()

    # The switch: linear squashes p50 and p95 onto the bottom (the bug), and the URL keeps it.
    latency.get_by_role("link", name="linear").click()
    expect(page).to_have_url(re.compile(r"latency=linear"))
    expect(chart(page, "latency")).to_have_attribute("data-scale", "linear")
    expect(page.locator("html")).to_have_attribute("data-charts-drawn", "true")
    flat = pixels(page, "latency", "--c-1", "--c-2")
    for line in flat.values():  # on the bottom edge, or not to be seen at all
        assert line["count"] == 0 or line["median"] < 4, flat
    screenshot(page, f"charts-latency-linear-{screen.name}")
    page.reload()
    expect(chart(page, "latency")).to_have_attribute("data-scale", "linear")
    expect(chart(page, "latency").get_by_role("link", name="linear")).to_have_attribute(
        "aria-current", "true"
    )


def test_the_endpoint_view_has_the_log_axis_too(screen: Screen, end: int) -> None:
    path = "view=endpoint&service=shop&method=GET&path=%2Fitems%2F%7Bid%7D"
    page = screen.open(f"/?{path}&{until_end(end, 6)}")
    expect(chart(page, "latency")).to_have_attribute("data-scale", "log")
    drawn = pixels(page, "latency", "--c-1", "--c-2")
    assert drawn["--c-2"]["median"] - drawn["--c-1"]["median"] > 20, drawn
    screenshot(page, f"charts-endpoint-{screen.name}")
    screen.fits()


# --- item 7: the overview's error rate per service -------------------------------------


def test_the_overview_draws_the_error_rate_of_each_top_service(screen: Screen, end: int) -> None:
    page = screen.open(f"/?{until_end(end, 1)}")
    errors = chart(page, "error-rate")
    expect(errors.locator("h3")).to_have_text("Error rate (5xx share) by service")
    labels = errors.locator(".u-legend .u-series th").all_inner_texts()
    assert [label.strip() for label in labels] == ["Time", *TOP_FIVE, "others (3 services)"]
    colours = ["--s-1", "--s-2", "--s-3", "--s-4", "--s-5", "--s-other"]
    drawn = pixels(page, "error-rate", *colours)
    assert all(drawn[c]["count"] > 20 for c in colours), drawn
    # alpha (40%) above bravo (30%) above ... above the others (about 2%).
    heights = [drawn[c]["median"] for c in colours]
    assert heights == sorted(heights, reverse=True), drawn
    values = legend(page, "error-rate")
    assert values["alpha"] == "40.0%" and values["echo"] == "10.0%", values
    screenshot(page, f"charts-error-rate-by-service-{screen.name}")
    screen.fits()

    # One service in scope: its own line.
    page.get_by_label("Service", exact=True).select_option("alpha")
    expect(errors.locator("h3")).to_have_text("Error rate (5xx share)")
    expect(errors.locator(".u-legend .u-series th")).to_have_text(["Time", "error rate"])


# --- item 8: markers in a lane, clustered ---------------------------------------------


def test_markers_sit_in_a_lane_and_cluster(screen: Screen, board: Dashboard, end: int) -> None:
    page = screen.open(f"/?service=shop&{until_end(end, 6)}")
    errors = chart(page, "error-rate")
    markers = errors.locator(".marker-lane .marker")
    expect(markers.first).to_be_visible()
    shop_events = board.get("/api/v1/events", service="shop", **{"from": end - 6 * HOUR, "to": end})
    counts = [int(n) for n in markers.evaluate_all("(ms) => ms.map((m) => m.dataset.count)")]
    assert sum(counts) == len(shop_events["events"]) == 170, counts
    assert max(counts) > 1  # 170 events over a few hundred pixels: clusters with a count
    boxes = [box for box in (m.bounding_box() for m in markers.all()) if box is not None]
    lane = errors.locator(".marker-lane").bounding_box()
    assert lane is not None and len(boxes) == len(counts)
    for left, right in itertools.pairwise(boxes):
        assert right["x"] >= left["x"] + left["width"], (left, right)  # none overlaps
    assert boxes[0]["x"] >= lane["x"]
    assert boxes[-1]["x"] + boxes[-1]["width"] <= lane["x"] + lane["width"]
    # Nothing of the deploys is drawn across the plots: no deploy green in them at all.
    for chart_id in ("error-rate", "latency", "throughput"):
        assert pixels(page, chart_id, "--c-deploy")["--c-deploy"]["count"] == 0, chart_id

    # A cluster's events, listed on hover (desktop) or tap (phone).
    busiest = markers.nth(counts.index(max(counts)))
    if screen.phone:
        busiest.tap()
    else:
        busiest.hover()
    items = errors.locator(".marker-list li")
    expect(items).to_have_count(max(counts))
    expect(items.first).to_have_text(
        re.compile(r"^(deploy|incident) v\d+ · shop · .* — (deploy|incident) number \d+$")
    )
    expect(busiest).to_have_attribute("aria-expanded", "true")
    screenshot(page, f"charts-markers-{screen.name}")
    if screen.phone:
        busiest.tap()  # tapped again: let go
    else:
        page.mouse.move(0, 0)
    expect(items).to_have_count(0)
    expect(busiest).to_have_attribute("aria-expanded", "false")
    screen.fits()


# --- item 9: values without a pointer -------------------------------------------------


def test_legends_show_the_latest_values_and_a_tapped_point(screen: Screen, end: int) -> None:
    page = screen.open(f"/?service=shop&{until_end(end, 1)}")
    for chart_id in ("error-rate", "latency", "throughput"):
        values = legend(page, chart_id)
        assert values["Time"].endswith("(latest)"), values
        assert all(v not in (NO_VALUE, "--", "") for v in values.values()), values
    assert legend(page, "error-rate")["error rate"] == "2.00%"  # 1 in 50, every minute
    assert legend(page, "throughput")["requests/s"] == "0.833 req/s"  # 50 a minute
    latest = legend(page, "latency")["Time"]
    screenshot(page, f"charts-values-{screen.name}")

    # Tap (or click) a point a third of the way in: the legend keeps it once the pointer is gone.
    plot = chart(page, "latency").locator(".u-over")
    box = plot.bounding_box()
    assert box is not None
    spot = {"x": box["width"] / 3, "y": box["height"] / 2}

    def touch() -> None:
        if screen.phone:
            plot.tap(position=spot)
            page.locator("#view-title").tap()
        else:
            plot.click(position=spot)
            page.mouse.move(0, 0)

    touch()
    time_cell = chart(page, "latency").locator(".u-legend .u-series").first.locator("td")
    expect(time_cell).to_have_text(re.compile(r"\(selected\)$"))
    held = legend(page, "latency")
    assert held["Time"].replace("selected", "latest") != latest, (held, latest)
    assert re.fullmatch(r"\d+(\.\d+)? ms", held["p50"]), held
    selected = chart(page, "latency").get_attribute("data-selected")
    assert selected and end - HOUR < int(selected) < end - 30 * MINUTE, selected
    touch()  # the same point again lets go: back to the latest
    expect(time_cell).to_have_text(latest)


# --- item 10: the chosen baseline -----------------------------------------------------


def _deltas(page: Page, service: str) -> Locator:
    return page.locator("table.services tbody tr").filter(has_text=service).locator(".delta")


def test_tables_compare_with_the_chosen_baseline(screen: Screen, end: int) -> None:
    page = screen.open(f"/?{until_end(end, 1)}")
    hint = page.locator("[data-panel='services'] .panel-hint")
    expect(hint).to_have_text("Change against the previous period of the same length.")
    expect(_deltas(page, "alpha").first).to_have_text("new")  # nothing the hour before

    page.get_by_role("button", name="Day before").click()
    expect(page).to_have_url(re.compile(r"compare=1d"))
    expect(hint).to_have_text("Change against the same period a day earlier.")
    deltas = _deltas(page, "alpha")
    expect(deltas.nth(0)).to_have_text("+100%")  # twice the requests
    expect(deltas.nth(1)).to_have_text("+20.0 pp")  # 40% against 20%
    expect(deltas.nth(0)).to_have_attribute(
        "title", "up 100% against the same period a day earlier"
    )
    endpoint = page.locator("table.endpoints tbody tr").filter(has_text="alpha").locator(".delta")
    expect(endpoint.first).to_have_text("+20.0 pp")
    # The charts use it too: the day before, dashed.
    expect(chart(page, "error-rate").locator(".u-legend")).to_contain_text(
        "all services, a day earlier"
    )
    expect(chart(page, "throughput").locator(".u-legend")).to_contain_text(
        "requests/s, a day earlier"
    )
    screenshot(page, f"charts-compare-day-before-{screen.name}")
    screen.fits()

    # The endpoint view's figures against the day before.
    alpha = "view=endpoint&service=alpha&method=GET&path=%2Fwork&compare=1d"
    page.goto(f"{screen.base}/?{alpha}&{until_end(end, 1)}")
    requests = page.locator(".figure").filter(has_text="Requests").locator(".delta")
    expect(requests).to_have_text("+100%")
    expect(page.locator("[data-panel='figures'] .panel-hint")).to_have_text(
        "Change against the same period a day earlier."
    )


def test_the_services_table_follows_the_service_filter(screen: Screen, end: int) -> None:
    page = screen.open(f"/?service=bravo&{until_end(end, 1)}")
    expect(page.locator("table.services tbody th")).to_have_text(["bravo"])
    expect(page.locator("table.services tr[aria-current='true'] th")).to_have_text("bravo")


# --- item 11: downloads -----------------------------------------------------------------


def _range_of(filename: str) -> tuple[int, int]:
    found = re.fullmatch(r"gravix-query-(\d{8}T\d{6}Z)-(\d{8}T\d{6}Z)\.(csv|parquet)", filename)
    assert found, filename
    start, stop = (
        int(datetime.strptime(t, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp() * 1000)
        for t in found.groups()[:2]
    )
    return start, stop


def test_the_chart_data_and_the_tables_download(screen: Screen, board: Dashboard, end: int) -> None:
    page = screen.open(f"/?service=shop&{until_end(end, 1)}")
    section = page.locator("section.charts")
    with page.expect_download() as csv_download:
        section.get_by_role("button", name="Download the chart data as CSV").click()
    download = csv_download.value
    assert _range_of(download.suggested_filename) == (end - HOUR, end)
    rows = list(csv.reader(io.StringIO(download.path().read_text())))
    assert rows[0] == ["time", "requests", "error_rate", "p50", "p95", "p99", "latency_count"]
    body = {"metrics": ["requests", "error_rate", "p50", "p95", "p99"],
            "from": end - HOUR, "to": end, "grain": "1m",
            "filters": [{"dimension": "service", "op": "eq", "values": ["shop"]}]}  # fmt: skip
    answer = query(board, body)
    assert [int(r[1]) for r in rows[1:]] == [row[1] for row in answer["rows"]] == [50] * 60

    services = page.locator("[data-panel='services']")
    with page.expect_download() as parquet_download:
        services.get_by_role("button", name="Download the services table as Parquet").click()
    table = pq.read_table(parquet_download.value.path())
    assert table.column_names == ["period", "service", "requests", "error_rate", "p95"]
    current = [r for r in table.to_pylist() if r["period"] == "current"]
    assert [r["service"] for r in current] == ["shop"]
    assert [r["requests"] for r in current] == [3000]
    expect(page.locator("table.services tbody th")).to_have_text(["shop"])
    screen.fits()


def query(board: Dashboard, body: dict[str, Any]) -> Any:
    reply = httpx.post(
        f"{board.url}/api/v1/query", json=body, headers={"Authorization": f"Bearer {board.token}"}
    )
    assert reply.status_code == 200, reply.text
    return reply.json()

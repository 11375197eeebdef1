"""The "what changed" benchmark (issue #21): accuracy on planted incidents, and speed.

* **Accuracy**: ``--incidents`` (100) incidents with random, known causes
  (:mod:`bench.explain_data`: one route; one version of one service; one
  env; one status; a latency regression on one route; one route on one
  version), each in the loadgen's traffic, sent through a real ``gravix
  serve`` (intake, spool, uploader, rollup: every fact in the minute tier
  before the first question), then asked as a user asks:
  ``POST /api/v1/explain`` with the incident's window, its baseline
  (``previous`` or ``1d``, every other one) and measure. A hit when the top
  finding names the cause (the same facts of the window; a parent of the
  two-dimension cause alone is a miss); also counted in the top three.
  Goal: first in >= 95 of 100, in the top three in >= 99. **Peer**: the
  naive ranking, "the element with the largest increase of the measure",
  over the same rows (``POST /api/v1/query``, the series and status, grain
  all, compared with the same baseline; the same dimensions and pairs, and
  status; elements that select the same facts counted once).
* **Speed**: over 24 h of 1,200 series (:mod:`bench.query_data`, two days:
  the second is the window, the first the baseline), ``--asks`` (36)
  questions of different filters, baselines and measures through
  ``POST /api/v1/explain`` of a real ``gravix serve``, each in turn with its
  **peer**: the one grouped query it is made of (``POST /api/v1/query``: the
  series dimensions, grain all, ``compare``). Goal: p95 <= 1 s.

Run ``.venv/bin/python -m bench explain [--only accuracy,speed]``; ``--help``
lists the knobs; raw results go to ``bench/results/explain-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import httpx

from bench.alerts_detect import spread
from bench.alerts_noise import SERVER_ENV
from bench.explain_data import KINDS, Incident, IncidentModel, Key, plan, same_facts, selects
from bench.machine import describe_machine, probe_fsync, publish_results, results_head
from bench.servers import REPO, BenchError, ServerProcess, gravix_server, make_key
from bench.steady import minute_tier_requests
from gravix.api.auth import token_store
from gravix.explain.analysis import DIMENSIONS
from gravix.loadgen.history import send_history

RESULTS_DIR: Final = REPO / "bench" / "results"
DAY_MS: Final = 86_400_000
DATA_DIR: Final = Path(tempfile.gettempdir()) / "gravix-bench-query"
TENANT: Final = "bench"
PARTS: Final = ("accuracy", "speed")
GOALS: Final = {"first": 95, "top3": 99, "speed_p95_s": 1.0}
SERIES: Final = ("service", "method", "path", "env", "version")
METRIC: Final = {"errors": "errors", "client_errors": "client_errors", "latency": "slow_requests"}
# The elements the peer ranks: explain's dimensions and their pairs, and status.
PEER_DIMS: Final = ("service", "route", "env", "version")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Api:
    """POST /api/v1/explain and /api/v1/query with a token, timed."""

    def __init__(self, server: ServerProcess, token: str) -> None:
        self.client = httpx.Client(
            base_url=server.url, timeout=120.0, headers={"Authorization": f"Bearer {token}"}
        )

    def post(self, path: str, body: dict[str, Any]) -> tuple[dict[str, Any], float]:
        started = time.perf_counter()
        reply = self.client.post(path, json=body)
        seconds = time.perf_counter() - started
        if reply.status_code != 200:
            raise BenchError(f"POST {path}: {reply.status_code} {reply.text[:300]}")
        document: dict[str, Any] = reply.json()
        return document, seconds

    def close(self) -> None:
        self.client.close()


def peer_query(question: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    """The grouped query an explanation is made of: its series rows (and status, where
    the measure is a count), grain all, compared with its baseline."""
    latency = question.get("measure") == "latency"
    body: dict[str, Any] = {
        "metrics": ["requests", METRIC[question.get("measure", "errors")]],
        "from": question["from"],
        "to": question.get("to", "now"),
        "dimensions": [*SERIES, *([] if latency else ["status"])],
        "filters": question.get("filters", []),
        "grain": "all",
        "compare": answer["baseline"]["offset"],
    }
    if latency:
        body["slow_ms"] = answer["slow_ms"]
    return body


# --- accuracy ---------------------------------------------------------------------------
def naive_ranking(
    document: dict[str, Any], names: list[str], keys: list[Key]
) -> list[dict[str, Any]]:
    """The peer: every element (dimensions, pairs, status) by its increase of the measure,
    window minus baseline, largest first; one of each set of elements selecting the same
    facts of the window. ``names``: the dimensions of the rows."""
    width = len(names)

    def cells(rows: list[list[Any]]) -> dict[tuple[tuple[str, str], ...], float]:
        out: dict[tuple[tuple[str, str], ...], float] = {}
        combos = [(d,) for d in PEER_DIMS] + list(itertools.combinations(PEER_DIMS, 2))
        if "status" in names:
            combos.append(("status",))
        for row in rows:
            values = dict(zip(names, row[:width], strict=True))
            values["route"] = f"{values['method']} {values['path']}"
            for combo in combos:
                element = tuple((d, str(values[d])) for d in combo)
                out[element] = out.get(element, 0.0) + float(row[width + 1] or 0)
        return out

    now = cells(document["rows"])
    before = cells(document.get("compare", {}).get("rows", []))
    ranked = sorted(now.keys() | before.keys(),
                    key=lambda e: (-(now.get(e, 0.0) - before.get(e, 0.0)), len(e), e))  # fmt: skip
    out: list[dict[str, Any]] = []
    seen: list[frozenset[Key]] = []
    for element in ranked:
        chosen = dict(element)
        facts = frozenset(k for k in keys if selects(chosen, k))
        if facts in seen:
            continue
        seen.append(facts)
        out.append({"element": chosen, "increase": now.get(element, 0) - before.get(element, 0)})
        if len(out) == 3:
            break
    return out


def _rank(elements: list[dict[str, Any]], incident: Incident) -> int | None:
    keys = list(incident.window_keys)
    for i, e in enumerate(elements):
        if same_facts(e["element"], incident.cause, keys):
            return i
    return None


def _scores(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"element": f["element"], "share": f["share"], "surprise": f["surprise"],
         "risk_ratio": f["risk_ratio"], "window": f["window"], "baseline": f["baseline"]}
        for f in findings
    ]  # fmt: skip


def accuracy(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    data_dir = work / "accuracy"
    data_dir.mkdir()
    key = make_key(data_dir, tenant=TENANT)
    _, token = token_store(data_dir / "tokens.db").create(TENANT, "bench")
    window_ms = int(args.window_minutes * 60_000)
    # The last window ends at today's 00:00 UTC: the same seed on the same day sends
    # the same facts (the deploy schedule is fixed in epoch time, not in the run's).
    end_ms = int(time.time() * 1000) // DAY_MS * DAY_MS
    log(f"accuracy: seed {args.seed} (--seed), {args.incidents} incidents, "
        f"{args.window_minutes:g}-minute windows, {args.rate:g} facts/s of background")  # fmt: skip
    model_incidents = plan(
        _model_probe(args.rate, args.seed), args.incidents, end_ms, window_ms, args.seed,
        args.min_share,
    )  # fmt: skip
    model = IncidentModel(model_incidents, rate=args.rate, seed=args.seed)
    server = gravix_server(data_dir, cpu=None, log_path=work / "accuracy.log", env=SERVER_ENV)
    server.start()
    api = Api(server, token)
    t0 = time.monotonic()
    try:
        acked = 0
        for incident in model_incidents:  # the day-earlier baselines first: they are older
            if incident.baseline == "1d":
                acked += send_history(server.url, key, model, *incident.baseline_range)
        start_ms = model_incidents[0].from_ms - window_ms
        acked += send_history(server.url, key, model, start_ms, end_ms)
        sent_s = time.monotonic() - t0
        log(f"accuracy: {acked:,} facts acknowledged in {sent_s:.0f} s; waiting for the rollup")
        folded = 0
        deadline = time.monotonic() + args.fold_timeout
        while time.monotonic() < deadline:
            folded = minute_tier_requests(data_dir / "store")
            if folded >= acked:
                break
            time.sleep(5)
        if folded < acked:
            raise BenchError(f"the minute tier holds {folded:,} of {acked:,} facts after "
                             f"{args.fold_timeout:.0f} s")  # fmt: skip
        fold_s = time.monotonic() - t0 - sent_s
        log(f"accuracy: all in the minute tier {fold_s:.0f} s later; asking")
        trials = [_ask(api, incident) for incident in model_incidents]
    finally:
        api.close()
        server.stop()
    return _accuracy_summary(args, trials, acked, sent_s, fold_s)


def _model_probe(rate: float, seed: int) -> IncidentModel:
    """A model with the benchmark's seed, to read its deploy schedule from."""
    return IncidentModel([], rate=rate, seed=seed)


def _ask(api: Api, incident: Incident) -> dict[str, Any]:
    question = {"from": incident.from_ms, "to": incident.to_ms, "baseline": incident.baseline,
                "measure": incident.measure, "limit": 5}  # fmt: skip
    answer, seconds = api.post("/api/v1/explain", question)
    body = peer_query(question, answer)
    rows, _ = api.post("/api/v1/query", body)
    naive = naive_ranking(rows, body["dimensions"], list(incident.window_keys))
    findings = answer["findings"]
    rank, peer_rank = _rank(findings, incident), _rank(naive, incident)
    trial: dict[str, Any] = {
        "n": incident.n, "kind": incident.kind, "baseline": incident.baseline,
        "measure": incident.measure, "from_ms": incident.from_ms, "to_ms": incident.to_ms,
        "cause": incident.cause, "size": round(incident.size, 3),
        "delay_ms": incident.delay_ms, "planted": incident.planted,
        "window_facts": sum(incident.window_keys.values()),
        "rank": rank, "peer_rank": peer_rank, "seconds": round(seconds, 3),
        "summary": answer["summary"], "actual": answer["actual"],
        "expected": answer["expected"], "slow_ms": answer["slow_ms"],
        "findings": _scores(findings), "peer_top3": naive,
    }  # fmt: skip
    if rank != 0:
        trial["why"] = _why(incident, answer, rank)
        log(f"miss: incident {incident.n} ({incident.describe()}, baseline {incident.baseline}): "
            f"{trial['why']}")  # fmt: skip
        for f in trial["findings"]:
            log(f"    {f['element']}: share {f['share']}, surprise {f['surprise']}, "
                f"risk ratio {f['risk_ratio']}")  # fmt: skip
    return trial


def _why(incident: Incident, answer: dict[str, Any], rank: int | None) -> str:
    """Why the top finding is not the cause, in one line."""
    findings = answer["findings"]
    if incident.kind == "status" and "status" not in DIMENSIONS:
        return "status dimension missing"
    if not findings:
        return f"no finding: {answer['summary']}"
    top = findings[0]
    first = top["element"]
    where = f"ranked {rank + 1}" if rank is not None else "not in the findings"
    items = {(d, str(v)) for d, v in first.items()}
    cause = set(incident.cause.items())
    version = first.get("version")
    then, now = top["baseline"]["requests"], top["window"]["requests"]
    if items == cause | {("env", "prod")}:
        reason = ("its child on env=prod (92% of the requests) ranked instead: a child is kept "
                  "over its parent when it explains 80% of it")  # fmt: skip
    elif version is not None and version != incident.cause.get("version") and then < now / 2:
        reason = (f"version {version}, {'new' if not then else 'deployed'} since the baseline "
                  f"({then:,.0f} requests then, {now:,.0f} in the window), ranked instead "
                  f"({_element(first)}, surprise {top['surprise']})")  # fmt: skip
    elif _covers(first, incident):
        reason = (f"a parent of the cause ranked first, {_element(first)}"
                  f"{', new since the baseline' if not then else ''} "
                  f"(risk ratio {top['risk_ratio']})")  # fmt: skip
    elif incident.cause == {"env": "prod"}:
        reason = (f"prod holds 92% of the requests, so its share of the 5xx moves little; "
                  f"first {_element(first)} (surprise {top['surprise']})")  # fmt: skip
    elif incident.cause == {"env": "staging"} and version is not None:
        reason = (f"staging runs one version per service (the next one): those versions are "
                  f"listed one by one instead, first {_element(first)}")  # fmt: skip
    else:
        reason = f"{_element(first)} ranked first"
    if rank is not None:
        f = findings[rank]
        if (f["share"], f["surprise"]) == (top["share"], top["surprise"]):
            reason += (f"; the cause ties with it on share and surprise "
                       f"(risk ratio {f['risk_ratio']} against {top['risk_ratio']})")  # fmt: skip
    return f"{where}: {reason}"


def _covers(element: dict[str, Any], incident: Incident) -> bool:
    """Whether ``element`` selects all of the cause's facts of the window, and more."""
    keys = list(incident.window_keys)
    cause = {k for k in keys if selects(incident.cause, k)}
    found = {k for k in keys if selects(element, k)}
    return bool(cause) and cause < found


def _accuracy_summary(
    args: argparse.Namespace, trials: list[dict[str, Any]], acked: int, sent_s: float,
    fold_s: float,
) -> dict[str, Any]:  # fmt: skip
    def count(ranks: list[int | None], top: int) -> int:
        return sum(1 for r in ranks if r is not None and r < top)

    ranks = [t["rank"] for t in trials]
    peer = [t["peer_rank"] for t in trials]
    by_kind = {}
    for kind in [k for k in KINDS if any(t["kind"] == k for t in trials)]:
        ts = [t for t in trials if t["kind"] == kind]
        by_kind[kind] = {
            "incidents": len(ts),
            "first": count([t["rank"] for t in ts], 1),
            "top3": count([t["rank"] for t in ts], 3),
            "peer_first": count([t["peer_rank"] for t in ts], 1),
            "peer_top3": count([t["peer_rank"] for t in ts], 3),
        }
    status_missing = [t for t in trials if t.get("why") == "status dimension missing"]
    return {
        "seed": args.seed,
        "incidents": len(trials),
        "facts": acked,
        "send_seconds": round(sent_s, 1),
        "fold_seconds": round(fold_s, 1),
        "status_dimension": "status" in DIMENSIONS,
        "first": count(ranks, 1),
        "top3": count(ranks, 3),
        "peer_first": count(peer, 1),
        "peer_top3": count(peer, 3),
        "status_dimension_missing": len(status_missing),
        "by_kind": by_kind,
        "ask_s": spread([t["seconds"] for t in trials]),
        "misses": [t for t in trials if t["rank"] != 0],
        "trials": trials,
    }


# --- speed ------------------------------------------------------------------------------
def questions(meta: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """``count`` questions over the data set's last 24 h: filters, baselines and
    measures in turn."""
    from bench.query_data import SERVICES

    day_ms = 86_400_000
    to_ms = int(meta["end_ms"])
    filters: list[list[dict[str, Any]]] = [[]]
    filters += [[{"dimension": "service", "values": [s]}] for s in SERVICES[:8]]
    filters += [[{"dimension": "env", "values": ["prod"]}],
                [{"dimension": "env", "values": ["staging"]}],
                [{"dimension": "service", "values": ["checkout", "payments"]},
                 {"dimension": "env", "values": ["prod"]}]]  # fmt: skip
    measures = ("errors", "client_errors", "latency")
    out = []
    for i in range(count):
        out.append({
            "from": to_ms - day_ms, "to": to_ms,
            "baseline": ("1d", "previous")[i % 2],
            "measure": measures[i % 3],
            "filters": filters[i % len(filters)],
        })  # fmt: skip
    return out


def speed(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from bench.query_data import dataset

    meta = dataset(args.data_dir, args.series, 2, args.data_seed, log=log)
    log(f"speed: {meta['minute_rows']:,} minute rows of {meta['series']:,} series over 2 days "
        f"({'cached' if meta['cached'] else 'made'})")  # fmt: skip
    data_dir = work / "speed"
    data_dir.mkdir()
    # A hard-linked copy: the server writes its own state, never into the cached set.
    subprocess.run(["cp", "-al", meta["store"], str(data_dir / "store")], check=True)
    _, token = token_store(data_dir / "tokens.db").create(str(meta["tenant"]), "bench")
    env = {**SERVER_ENV, "GRAVIX_RETENTION_ENABLED": "false"}  # the data set is from 2026-11
    server = gravix_server(data_dir, cpu=None, log_path=work / "speed.log", env=env).start()
    api = Api(server, token)
    asks: list[dict[str, Any]] = []
    try:
        qs = questions(meta, args.asks)
        _, first_s = api.post("/api/v1/explain", qs[0])  # untimed: the first of the process
        log(f"speed: first explanation of the process {first_s:.2f} s (not counted)")
        for i, question in enumerate(qs):
            answer, explain_s = api.post("/api/v1/explain", question)
            query, query_s = api.post("/api/v1/query", peer_query(question, answer))
            asks.append({
                "question": question, "explain_s": round(explain_s, 4),
                "query_s": round(query_s, 4), "findings": len(answer["findings"]),
                "summary": answer["summary"], "series_rows": len(query["rows"]),
            })  # fmt: skip
            log(f"speed: ask {i + 1}/{len(qs)} {question['measure']:13} "
                f"{question['baseline']:8} {_filters(question):40} "
                f"explain {explain_s:.3f} s, query {query_s:.3f} s")  # fmt: skip
    finally:
        api.close()
        server.stop()
    e = spread([a["explain_s"] for a in asks])
    q = spread([a["query_s"] for a in asks])
    return {
        "data": {k: meta[k] for k in ("series", "days", "seed", "minute_rows", "facts", "cached")},
        "first_s": round(first_s, 3),
        "explain_s": e,
        "query_s": q,
        "explain_over_query_p50": round(e["p50"] / q["p50"], 2) if e["p50"] and q["p50"] else None,
        "goal_met": e["p95"] is not None and e["p95"] <= GOALS["speed_p95_s"],
        "asks": asks,
    }


def _filters(question: dict[str, Any]) -> str:
    fs = question.get("filters") or []
    return " ".join(f"{f['dimension']}={','.join(f['values'])}" for f in fs) or "(everything)"


# --- report -----------------------------------------------------------------------------
def markdown(summary: dict[str, Any]) -> str:
    rows = ["| measure | Gravix | peer | goal | met |", "|---|---:|---:|---|---|"]
    acc = summary.get("accuracy")
    if acc:
        n = acc["incidents"]
        rows += [
            f"| cause ranked first ({n} incidents, seed {acc['seed']}) | {acc['first']} | "
            f"{acc['peer_first']} (naive: largest increase) | >= {GOALS['first']} | "
            f"{_met(acc['first'] >= GOALS['first'] * n / 100)} |",
            f"| cause in the top three | {acc['top3']} | {acc['peer_top3']} | "
            f">= {GOALS['top3']} | {_met(acc['top3'] >= GOALS['top3'] * n / 100)} |",
            f"| hits, Gravix over the peer (first) | "
            f"{_ratio(acc['first'], acc['peer_first'])} | | | |",
        ]
        for kind, k in acc["by_kind"].items():
            rows.append(
                f"| {kind}: first / top three ({k['incidents']}) | {k['first']} / {k['top3']} "
                f"| {k['peer_first']} / {k['peer_top3']} | | |"
            )
        a = acc["ask_s"]
        rows.append(f"| one question over 5 min, p50 / max | {a['p50']:.2f} s / {a['max']:.2f} s "
                    "| | | |")  # fmt: skip
    sp = summary.get("speed")
    if sp:
        e, q = sp["explain_s"], sp["query_s"]
        rows += [
            f"| speed: explanation over 24 h of {sp['data']['series']:,} series, p50 "
            f"({e['n']} asks) | {e['p50']:.3f} s | {q['p50']:.3f} s (its grouped query) | | |",
            f"| speed: p95 | {e['p95']:.3f} s | {q['p95']:.3f} s | <= 1 s | "
            f"{_met(sp['goal_met'])} |",
            f"| speed: max | {e['max']:.3f} s | {q['max']:.3f} s | | |",
            f"| speed: explanation over its query (p50) | {sp['explain_over_query_p50']}x | | | |",
        ]
    if acc and acc["misses"]:
        rows += ["", "Misses (rank 1 is a hit):", ""]
        for t in acc["misses"]:
            cause = ", ".join(f"{k}={v}" for k, v in t["cause"].items())
            top = (
                "; ".join(
                    f"{_element(f['element'])} (share {f['share']}, surprise {f['surprise']}, "
                    f"risk ratio {f['risk_ratio']})"
                    for f in t["findings"][:3]
                )
                or "no finding"
            )
            rows.append(f"- #{t['n']} {t['kind']} {cause} ({t['size']:.0%}, baseline "
                        f"{t['baseline']}): {t['why']}. Findings: {top}")  # fmt: skip
    return "\n".join(rows)


def _element(element: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in element.items())


def _ratio(a: int, b: int) -> str:
    return f"{a / b:.2f}x" if b else "-"


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench explain",
        description="What changed: accuracy on planted incidents, and speed over 24 h.",
    )
    p.add_argument("--only", default=",".join(PARTS), help="which parts, comma-separated")
    a = p.add_argument_group("accuracy")
    a.add_argument("--seed", type=int, default=21, help="causes, sizes and traffic (default 21)")
    a.add_argument("--incidents", type=int, default=100, help="incidents (default 100)")
    a.add_argument("--rate", type=float, default=30.0,
                   help="facts/s of background traffic, mean of the day (default 30)")  # fmt: skip
    a.add_argument("--window-minutes", type=float, default=5.0, help="incident window (default 5)")
    a.add_argument("--min-share", type=float, default=0.03,
                   help="least share of the traffic a cause holds (default 0.03)")  # fmt: skip
    a.add_argument("--fold-timeout", type=float, default=900.0,
                   help="seconds the rollup may take to fold everything sent")  # fmt: skip
    s = p.add_argument_group("speed")
    s.add_argument("--asks", type=int, default=36, help="questions (default 36)")
    s.add_argument("--series", type=int, default=1200, help="series (default 1200)")
    s.add_argument("--data-seed", type=int, default=1, help="the query data set's seed")
    s.add_argument("--data-dir", type=Path, default=DATA_DIR,
                   help=f"the query data cache (default {DATA_DIR})")  # fmt: skip
    p.add_argument("--tmp-dir", type=Path, default=None, help="where the data dirs go")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--keep", action="store_true", help="keep the data dirs and the servers' logs")
    args = p.parse_args(argv)
    args.parts = [x.strip() for x in args.only.split(",") if x.strip()]
    if not args.parts or set(args.parts) - set(PARTS):
        p.error(f"--only takes some of {', '.join(PARTS)}")
    if args.incidents < 1 or args.rate <= 0 or args.asks < 1 or args.window_minutes < 1:
        p.error("--incidents, --rate, --asks and --window-minutes must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    started = datetime.now(UTC)
    work = Path(tempfile.mkdtemp(prefix="gravix-explain-", dir=args.tmp_dir))
    summary: dict[str, Any] = {}
    try:
        machine = describe_machine(work)
        for name in ("wrk", "hey"):
            machine.pop(name, None)
        machine["fsync_probe"] = probe_fsync(work, min(os.sched_getaffinity(0)))
        for part in args.parts:
            summary[part] = accuracy(args, work) if part == "accuracy" else speed(args, work)
    except BenchError as e:
        print(f"bench: error: {e}", flush=True)
        return 1
    finally:
        if args.keep:
            print(f"kept the data dirs and the servers' logs in {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    seconds = (datetime.now(UTC) - started).total_seconds()
    table = markdown(summary)
    out, head = results_head("explain", args, started, seconds, argv)
    result = {
        **head,
        "machine": machine,
        "goals": GOALS,
        **summary,
        "table": table,
    }
    publish_results(out, result, table, machine, "data dirs", seconds)
    return 0

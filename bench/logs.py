"""Access log import speed: parse-only and end to end, beside plain-``re`` and ``wc -l`` peers.

Goal (issue #8): ``gravix import-logs`` reads >= 200,000 lines/s on one core.

1. **Parse only**, in this process pinned to one CPU: the importer's own
   loop (:class:`gravix.accesslog.parser.LineParser` over 1 MiB chunks,
   facts encoded to JSON with msgspec in batches of 5,000, as the shipper
   does), with the ``combined`` preset and no route rules. Beside it, the
   same CPU running two peers: a plain ``re`` match of every line with the
   groups taken out (what any Python log reader does at the least, no facts
   built), and ``wc -l`` (reading the bytes, the floor).
2. **End to end**: ``taskset -c 0 gravix import-logs FILE --quiet`` into a
   real ``gravix serve --workers 1`` pinned to CPU 1, on a fresh data dir,
   wall time from start to exit (every batch acknowledged, so fsynced).

The log (2,000,000 lines by default, about 430 MB) is generated once and
cached under ``/tmp/gravix-bench-logs``; its timestamps are the last hour
before it was made, so it is made again after a day (the intake refuses facts
older than the raw retention). Raw results go to
``bench/results/logs-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from bench.machine import describe_machine, probe_fsync, publish_results, results_head
from bench.servers import REPO, BenchError, gravix_server, make_key
from gravix.accesslog.parser import make_parser
from gravix.accesslog.reader import chunks

GOAL_LINES_PER_S = 200_000
RESULTS_DIR = REPO / "bench" / "results"
CACHE_DIR = Path("/tmp/gravix-bench-logs")
BATCH = 5000
UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0 Safari/537.36"
)
PEER_RE = re.compile(
    rb'(\S+) \S+ \S+ \[([^\]]+)\] "(\S+) (\S+) [^"]*" (\d+) \d+ "[^"]*" "[^"]*" (\S+)'
)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def make_log(lines: int) -> Path:
    """A combined-format log of ``lines`` lines (cached for a day)."""
    path = CACHE_DIR / f"combined-{lines}.log"
    if path.exists() and time.time() - path.stat().st_mtime < 86_400:
        return path
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    log(f"writing {lines:,} lines to {path}")
    rng = random.Random(8)
    now = time.time()
    routes = [
        lambda: f"/users/{rng.randrange(10**6)}",
        lambda: f"/users/{rng.randrange(10**6)}/orders?page={rng.randrange(9)}",
        lambda: "/health",
        lambda: f"/products/{rng.choice(['red-shoes', 'blue-hat', 'socks'])}",
        lambda: f"/carts/{rng.getrandbits(64):016x}/pay",
        lambda: "/api/v1/search?q=shoes",
    ]
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as f:
        start = now - 3600
        step = 3600 / lines
        block: list[str] = []
        for i in range(lines):
            t = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(start + i * step))
            block.append(
                f"10.{i % 256}.{i % 199}.{i % 251} - - [{t}] "
                f'"{rng.choice(("GET", "GET", "GET", "POST", "PUT"))} {rng.choice(routes)()} '
                f'HTTP/1.1" {rng.choice((200, 200, 200, 201, 304, 404, 500))} '
                f'{rng.randrange(100, 90_000)} "https://shop.example.com/" "{UA}" '
                f"{rng.expovariate(20):.3f}\n"
            )
            if len(block) == 10_000:
                f.write("".join(block))
                block = []
        f.write("".join(block))
    tmp.rename(path)
    return path


def parse_only(path: Path) -> dict[str, Any]:
    """The importer's parse loop and JSON encoding, in this process (already pinned)."""
    parser = make_parser("combined", service="web")
    encode = msgspec.json.Encoder().encode
    started = time.perf_counter()
    facts = 0
    body_bytes = 0
    with path.open("rb") as stream:
        base = 0
        pending: list[Any] = []
        for buf, _eof in chunks(stream):
            pos, end = 0, len(buf)
            while pos < end:
                pos = parser.parse(buf, pos, end, base, "al-0123456789abcdef-", pending, BATCH)
                if len(pending) >= BATCH:
                    body_bytes += len(encode(pending))
                    facts += len(pending)
                    pending = []
            base += end
        if pending:
            body_bytes += len(encode(pending))
            facts += len(pending)
    seconds = time.perf_counter() - started
    return {
        "lines": parser.lines,
        "facts": facts,
        "bad": parser.bad,
        "seconds": seconds,
        "lines_per_s": parser.lines / seconds,
        "json_bytes": body_bytes,
    }


def peer_re(path: Path) -> dict[str, Any]:
    """A plain ``re`` match of every line, groups taken out; no facts."""
    match = PEER_RE.match
    started = time.perf_counter()
    lines = 0
    with path.open("rb") as f:
        for line in f:
            m = match(line)
            if m is not None:
                m.groups()
            lines += 1
    seconds = time.perf_counter() - started
    return {"lines": lines, "seconds": seconds, "lines_per_s": lines / seconds}


def peer_wc(path: Path, cpu: int) -> dict[str, Any]:
    started = time.perf_counter()
    out = subprocess.run(
        ["taskset", "-c", str(cpu), "wc", "-l", str(path)], capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    lines = int(out.stdout.split()[0])
    return {"lines": lines, "seconds": seconds, "lines_per_s": lines / seconds}


def end_to_end(path: Path, lines: int, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """``gravix import-logs`` pinned to one CPU into a fresh ``gravix serve`` on another."""
    data = work / f"data-{time.monotonic_ns()}"
    key = make_key(data)
    server = gravix_server(data, cpu=args.server_cpu, log_path=work / "server.log")
    server.start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRAVIX_")}
        env.update(GRAVIX_KEY=key, GRAVIX_URL=server.url)
        argv = ["taskset", "-c", str(args.cpu), sys.executable, "-m", "gravix.cli"]
        argv += ["import-logs", str(path), "--service", "web", "--quiet"]
        cpu_before = server.cpu_times()
        started = time.perf_counter()
        out = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=work)
        seconds = time.perf_counter() - started
        cpu = server.cpu_times() - cpu_before
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)
    if out.returncode != 0 or f"{lines:,} facts accepted" not in out.stderr:
        raise BenchError(f"import-logs failed ({out.returncode}): {out.stderr.strip()[-400:]}")
    return {
        "lines": lines,
        "seconds": seconds,
        "lines_per_s": lines / seconds,
        "server_cpu_seconds": cpu.user + cpu.system,
        "summary": out.stderr.strip().splitlines()[0],
    }


def markdown(rows: dict[str, dict[str, Any]], lines: int) -> str:
    goal = rows["end_to_end"]["lines_per_s"] >= GOAL_LINES_PER_S
    out = [
        f"Access log import, {lines:,} combined-format lines, one core "
        f"(goal: end to end >= {GOAL_LINES_PER_S:,} lines/s: {'met' if goal else 'NOT met'})",
        "",
        "| what | lines/s (median) | best | vs wc -l |",
        "|---|---:|---:|---:|",
    ]
    names = {
        "parse_only": "Gravix parse + JSON encode (in process)",
        "end_to_end": "Gravix `import-logs` end to end (acknowledged, fsynced)",
        "peer_re": "peer: plain `re` match per line, no facts",
        "peer_wc": "peer: `wc -l`",
    }
    wc = rows["peer_wc"]["lines_per_s"]
    for key, name in names.items():
        row = rows[key]
        out.append(
            f"| {name} | {row['lines_per_s']:,.0f} | {row['best']:,.0f} | "
            f"{row['lines_per_s'] / wc:.3f}x |"
        )
    return "\n".join(out)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench logs", description=__doc__.split("\n")[0])
    p.add_argument("--lines", type=int, default=2_000_000, help="lines in the log")
    p.add_argument("--rounds", type=int, default=3, help="runs of each measurement")
    p.add_argument("--cpu", type=int, default=0, help="CPU of the parser / importer")
    p.add_argument("--server-cpu", type=int, default=1, help="CPU of gravix serve")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--tmp-dir", type=Path, default=None, help="parent of the server's data dir")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    started = datetime.now(UTC)
    if shutil.which("taskset") is None:
        print("bench: error: taskset is needed (util-linux)", flush=True)
        return 1
    path = make_log(args.lines)
    runs: list[dict[str, Any]] = []
    previous = os.sched_getaffinity(0)
    try:
        with tempfile.TemporaryDirectory(prefix="gravix-bench-", dir=args.tmp_dir) as tmp:
            work = Path(tmp)
            machine = describe_machine(work)
            for name in ("wrk", "hey"):
                machine.pop(name, None)
            machine["fsync_probe"] = probe_fsync(work, args.server_cpu)
            os.sched_setaffinity(0, {args.cpu})
            for round_ in range(args.rounds):
                for name, run in (
                    ("peer_wc", lambda: peer_wc(path, args.cpu)),
                    ("peer_re", lambda: peer_re(path)),
                    ("parse_only", lambda: parse_only(path)),
                    ("end_to_end", lambda: end_to_end(path, args.lines, work, args)),
                ):
                    figure = run()
                    runs.append({"name": name, "round": round_, **figure})
                    log(f"round {round_} {name}: {figure['lines_per_s']:,.0f} lines/s")
    except BenchError as e:
        print(f"bench: error: {e}", flush=True)
        return 1
    finally:
        os.sched_setaffinity(0, previous)
    rows: dict[str, dict[str, Any]] = {}
    for name in ("parse_only", "end_to_end", "peer_re", "peer_wc"):
        rates = [r["lines_per_s"] for r in runs if r["name"] == name]
        rows[name] = {"lines_per_s": statistics.median(rates), "best": max(rates), "runs": rates}
    table = markdown(rows, args.lines)
    seconds = (datetime.now(UTC) - started).total_seconds()
    out, head = results_head("logs", args, started, seconds, argv)
    result = {
        **head,
        "log": {"path": str(path), "bytes": path.stat().st_size, "lines": args.lines},
        "machine": machine,
        "goal_lines_per_s": GOAL_LINES_PER_S,
        "summary": rows,
        "runs": runs,
        "table": table,
    }
    publish_results(out, result, table, machine, "work dir", seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

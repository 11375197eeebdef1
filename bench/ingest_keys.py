"""Durable ingest with the keys in PostgreSQL beside the keys in SQLite (issue #20).

``python -m bench ingest --database postgresql``: the key check must not lower
durable facts/s by more than 5% when ``GRAVIX_DATABASE_URL`` puts the keys in
PostgreSQL. Two ``gravix serve --role ingest`` servers, alike but for that
variable, take the place of the peer:

* ``sqlite``: the keys in ``<data dir>/keys.db``, the default;
* ``postgresql``: ``GRAVIX_DATABASE_URL`` pointing at a PostgreSQL cluster the
  bench starts itself with :class:`tests.pg.PostgresCluster` (Debian's
  ``initdb``/``pg_ctl``, its own temporary directory, loopback, run as
  ``nobody`` when root), so the keys, the series catalog and everything else
  of the metadata store live there.

Both run with the uploader off (``GRAVIX_UPLOADER_ENABLED=false``, see
``BOTH_ENV``); every 202 is still fsynced to the spool.

One key serves both: made in PostgreSQL with the product's
:class:`~gravix.ingest.keys.KeyStore`, then registered in the SQLite file.
Each server checks keys against a copy it re-reads every
``key_refresh_seconds`` (1 s by default), so the PostgreSQL server runs a
query over loopback every second, inside a request. The load is that of the
peer comparison's maximum-rate runs (:meth:`IngestBench.maximum`): 100-fact
batches, then single facts, over each connection count, both servers pinned to
the server CPU and ``wrk`` to the other, taking turns: sqlite, postgresql,
sqlite, ... so that each run follows one of the other side. (Swapping the order
every round made each side run twice in a row; the second of those runs paid
for the work its own first left behind, the uploader's among it, and the
ratio swung by 0.7-1.4x with the order alone.) PostgreSQL itself is not pinned.

Raw results go to ``bench/results/ingest-keys-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from bench.ingest import BATCH, IngestBench
from bench.servers import BenchError, ServerProcess, gravix_server
from gravix.ingest.keys import KeyStore
from tests.pg import PostgresCluster, find_bin_dir

GOALS = {"batch_ratio": 0.95, "single_ratio": 0.95}
BASE = "sqlite"  # the side the other is measured against
OTHER = {"postgresql": "postgresql", "sqlite": "sqlite-2"}  # by --database
LABELS = {"sqlite": "SQLite", "postgresql": "PostgreSQL", "sqlite-2": "SQLite, 2nd server"}
BODIES = {"batch": BATCH, "single": 1}  # facts per request
# On both sides. The uploader never reads the metadata store, and its work (a
# Parquet file per sealed 64 MiB segment, every few seconds at these rates) lands
# on the server CPU at moments of its own, during either side's run.
BOTH_ENV = {"GRAVIX_UPLOADER_ENABLED": "false"}


class KeysBench(IngestBench):
    """Gravix with its keys in SQLite beside Gravix with its keys in PostgreSQL.

    With ``--database sqlite`` the other server keeps its keys in SQLite too: the
    same comparison between two like servers shows how far the machine alone
    moves the ratio.
    """

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        super().__init__(args, work)
        self.other = OTHER[args.database]
        self.SIDES = (BASE, self.other)
        self.GRAVIX_SIDES = frozenset(self.SIDES)
        self.cluster: PostgresCluster | None = None
        self.database_url = ""

    def setup(self) -> None:
        if self.other == "postgresql":
            self.start_postgresql()
        dirs = {side: self.work / f"gravix-{side}" for side in self.SIDES}
        for path in dirs.values():
            path.mkdir()
        url = self.database_url or None
        _, self.key = KeyStore(dirs[self.other] / "keys.db", database_url=url).create(
            "bench", "bench"
        )
        KeyStore(dirs[BASE] / "keys.db").register(self.key, "bench", "bench")
        self.write_bodies()
        env = {BASE: BOTH_ENV, self.other: BOTH_ENV}
        if url:
            env[self.other] = {**BOTH_ENV, "GRAVIX_DATABASE_URL": url}
        for side, data_dir in dirs.items():
            self.servers[side] = gravix_server(
                data_dir,
                cpu=self.args.server_cpu,
                log_path=self.work / "logs" / f"{side}.log",
                role="ingest",
                env=env[side],
            )
        self.start_servers()

    def start_postgresql(self) -> None:
        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise BenchError("PostgreSQL is not installed (initdb); `make apt-deps` installs it")
        try:
            self.cluster = PostgresCluster(bin_dir)
            self.cluster.start()
            self.database_url = self.cluster.create_database()
        except (AssertionError, psycopg.Error, subprocess.TimeoutExpired) as e:
            raise BenchError(f"PostgreSQL did not start: {e}") from e
        self.log(f"PostgreSQL {bin_dir} on 127.0.0.1:{self.cluster.port}")

    def stop(self) -> None:
        super().stop()
        if self.cluster is not None:
            self.cluster.remove()

    def _measured(
        self, side: str, run: Callable[[ServerProcess], Any], **labels: Any
    ) -> dict[str, Any]:
        record = super()._measured(side, run, **labels)
        # The machine is shared: how busy it was at the end of each run.
        record["load_average_1m"] = round(os.getloadavg()[0], 2)
        return record

    def transactions(self) -> int:
        """Transactions PostgreSQL has counted in the bench's database (its statistics
        lag by up to a second); 0 without PostgreSQL."""
        if not self.database_url:
            return 0
        with psycopg.connect(self.database_url) as conn:
            row = conn.execute(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database "
                "WHERE datname = current_database()"
            ).fetchone()
        return int(row[0]) if row else 0

    def run(self) -> dict[str, Any]:
        before = self.transactions()
        figures: dict[str, Any] = {"sides": list(self.SIDES)}
        figures |= {body: self.maximum(body) for body in BODIES}
        figures["postgresql_transactions"] = self.transactions() - before
        figures["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        figures["gravix_ready"] = {
            side: json.loads(server.get("/ready")) for side, server in self.servers.items()
        }
        # The PostgreSQL side must not have fallen back to a key file of its own.
        stray = self.work / "gravix-postgresql" / "keys.db"
        if self.database_url and stray.exists():
            raise BenchError(f"the PostgreSQL side made {stray}: its keys were not in PostgreSQL")
        return figures

    def report(self, figures: dict[str, Any]) -> tuple[dict[str, Any], str]:
        summary = summarise(figures, self.runs)
        return summary, markdown(figures, summary)


def _paired_ratios(runs: list[dict[str, Any]], body: str, other: str) -> list[float]:
    """``other`` over SQLite for each (round, connection count) both ran."""
    rates: dict[tuple[int, int, str], float] = {
        (r["round"], r["connections"], r["side"]): r["requests_per_s"]
        for r in runs
        if r["kind"] == "max" and not r["warmup"] and r["body"] == body
    }
    return sorted(
        round(rate / rates[(n, c, BASE)], 3)
        for (n, c, side), rate in rates.items()
        if side == other and (n, c, BASE) in rates
    )


def summarise(figures: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    sides = figures["sides"]
    other = sides[1]
    summary: dict[str, Any] = {}
    for body, per_request in BODIES.items():
        best = figures[body]
        facts = {side: best[side]["requests_per_s"] * per_request for side in sides}
        ratio = facts[other] / facts[BASE]
        summary[f"{body}_facts_per_s"] = facts
        summary[f"{body}_ratio"] = round(ratio, 3)
        summary[f"{body}_goal_met"] = ratio >= GOALS[f"{body}_ratio"]
        # Requests per CPU-second, the other side over SQLite.
        summary[f"{body}_cpu_ratio"] = round(
            best[BASE]["cpu_us_per_request"] / best[other]["cpu_us_per_request"], 3
        )
        paired = _paired_ratios(runs, body, other)
        summary[f"{body}_paired_ratios"] = paired
        # Each pair ran back to back, so the machine's load moved both about alike.
        summary[f"{body}_paired_median"] = round(statistics.median(paired), 3)
    summary["min_server_cpu_share"] = {
        side: min(
            r["server_cpu_share"]
            for r in runs
            if r["side"] == side and r["kind"] == "max" and not r["warmup"]
        )
        for side in sides
    }
    summary["postgresql_transactions"] = figures["postgresql_transactions"]
    loads = [r["load_average_1m"] for r in runs if r["kind"] == "max" and not r["warmup"]]
    summary["load_average_1m_during"] = [min(loads), max(loads)]
    return summary


def markdown(figures: dict[str, Any], summary: dict[str, Any]) -> str:
    def met(ok: bool) -> str:
        return "**yes**" if ok else "**no**"

    base, other = figures["sides"]
    name = {side: LABELS[side] for side in (base, other)}
    rows = [
        f"| measure | keys in {name[base]} | keys in {name[other]} "
        f"| {name[other]} / {name[base]} | goal | met |",
        "|---|---:|---:|---:|---|---|",
    ]
    for body, what in (("batch", "100-fact batches"), ("single", "single-fact POSTs")):
        best, facts = figures[body], summary[f"{body}_facts_per_s"]
        rows += [
            f"| {what}: durable facts/s, median of the best connection count "
            f"| {facts[base]:,.0f} (c={best[base]['connections']}) "
            f"| {facts[other]:,.0f} (c={best[other]['connections']}) "
            f"| {summary[f'{body}_ratio']:.2f}x "
            f"| >= {GOALS[f'{body}_ratio']}x | {met(summary[f'{body}_goal_met'])} |",
            f"| {what}: median of the back-to-back pairs | | "
            f"| {summary[f'{body}_paired_median']:.2f}x | | |",
            f"| {what}: CPU per request | {best[base]['cpu_us_per_request']:.0f} us "
            f"| {best[other]['cpu_us_per_request']:.0f} us "
            f"| {summary[f'{body}_cpu_ratio']:.2f}x (CPU) | | |",
        ]
    shares, load = summary["min_server_cpu_share"], summary["load_average_1m_during"]
    fsyncs = {side: figures["batch"][side]["requests_per_fsync"] for side in (base, other)}
    notes = [
        "",
        f"{name[other]} / {name[base]} per round and connection count: batches "
        f"{', '.join(f'{r:.2f}' for r in summary['batch_paired_ratios'])}; single facts "
        f"{', '.join(f'{r:.2f}' for r in summary['single_paired_ratios'])}. "
        f"Batches per fsync at the best batch rate: {fsyncs[base]:.1f} ({name[base]}), "
        f"{fsyncs[other]:.1f} ({name[other]}). "
        f"Least server CPU share in a run: {shares[base]:.0%} ({name[base]}), "
        f"{shares[other]:.0%} ({name[other]}). PostgreSQL counted about "
        f"{summary['postgresql_transactions']:,} transactions in the bench's database "
        "during the runs. Load average (1 min) after each run: "
        f"{load[0]:.1f} to {load[1]:.1f}.",
    ]
    return "\n".join(rows + notes)

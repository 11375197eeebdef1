"""``python -m bench`` (what ``make bench`` runs): every benchmark: ingest, upload, rollup, fold,
query, dashboard, footprint, spark, otlp, logs, alerts.

``python -m bench ingest [options]`` (or ``upload``, ``rollup``, ``fold``, ``steady``,
``query``, ``dashboard``, ``footprint``, ``spark``, ``otlp``, ``logs``, ``alerts``) runs one;
``--help`` after the name lists its options. Options given without a name go
to the ingest benchmark, as before there was a second one; the others then run
with their defaults. ``steady`` (an hour of load) and ``explain`` run only when named.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from bench import (
    alerts,
    dashboard,
    explain,
    fold,
    footprint,
    ingest,
    logs,
    otlp,
    query,
    rollup,
    spark,
    steady,
    upload,
)

BENCHMARKS: dict[str, Callable[[list[str] | None], int]] = {
    "ingest": ingest.main,
    "upload": upload.main,
    "rollup": rollup.main,
    "fold": fold.main,
    "steady": steady.main,
    "query": query.main,
    "dashboard": dashboard.main,
    "footprint": footprint.main,
    "spark": spark.main,
    "otlp": otlp.main,
    "logs": logs.main,
    "alerts": alerts.main,
    "explain": explain.main,
}
USAGE = """\
usage: python -m bench [NAME] [options]
  NAME: ingest|upload|rollup|fold|steady|query|dashboard|footprint|spark|otlp|logs|alerts

  python -m bench                   all of them but steady, in this order
  python -m bench ingest [options]  durable ingest beside a non-durable peer
  python -m bench upload [options]  spool upload beside a plain copy of the files
  python -m bench rollup [options]  facts to minute rows beside DuckDB, chdb and Polars
  python -m bench fold [options]    gravix rollup over spooled, uploaded facts beside DuckDB
  python -m bench steady [options]  gravix serve under 5,000 facts/s for an hour
  python -m bench query [options]   dashboard panels beside DuckDB and chdb; freshness
  python -m bench dashboard [...]   navigation to all overview charts drawn, in Chromium
  python -m bench footprint [...]   memory, cold start and installed size of gravix serve
  python -m bench spark [options]   the rollup on Spark local[2] and a 1-, 2-worker cluster, DuckDB
  python -m bench otlp [options]    OTLP spans/s through /v1/traces beside native facts/s
  python -m bench logs [options]    gravix import-logs lines/s beside a plain regex and wc -l
  python -m bench alerts [options]  alert detection time, noise over 24 h, cost of 1,000 rules
  python -m bench explain [...]     what changed: 100 planted causes found; speed (not in run-all)
  python -m bench NAME --help       the options of one benchmark

Results: bench/README.md; raw figures in bench/results/<name>-<UTC time>.json.
"""


def main(argv: list[str]) -> int:
    if argv and argv[0] in BENCHMARKS:
        return BENCHMARKS[argv[0]](argv[1:])
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0
    if argv and not argv[0].startswith("-"):
        print(f"{USAGE}\nbench: error: no benchmark named {argv[0]!r}", file=sys.stderr)
        return 2
    # Run them all; one failing does not skip the others, but fails the command.
    codes = [
        ingest.main(argv),
        upload.main([]),
        rollup.main([]),
        fold.main([]),
        query.main([]),
        dashboard.main([]),
        footprint.main([]),
        spark.main([]),
        otlp.main([]),
        logs.main([]),
        alerts.main([]),
    ]
    return max(codes)


raise SystemExit(main(sys.argv[1:]))

"""``gravix explain``: what changed, on the local data dir (docs/explain.md).

The same answer as ``POST /api/v1/explain``, read in process from the data
dir's store and spool (as ``gravix alerts`` reads ``alerts.db``): the
findings as a table, or with ``--json`` the API's JSON document.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gravix.config import load_settings
from gravix.errors import ConfigError, GravixError

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="TOML config file (default ./gravix.toml).")
]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Root of local state.")]


def explain(
    tenant: Annotated[str, typer.Option(help="The tenant.")],
    since: Annotated[
        str, typer.Option("--from", help="Start of the window: epoch ms, RFC 3339, now-<duration>.")
    ] = "now-30m",
    until: Annotated[str, typer.Option("--to", help="End of the window (excluded).")] = "now",
    baseline: Annotated[
        str,
        typer.Option(
            help="1d (a day earlier), 7d (a week earlier), previous, or deploy "
            "(just before the latest deploy)."
        ),
    ] = "1d",
    deploy_at: Annotated[
        str | None,
        typer.Option(
            "--deploy-at", help="With --baseline deploy: the latest deploy at or before this time."
        ),
    ] = None,
    measure: Annotated[
        str, typer.Option(help="errors (extra 5xx), client_errors (4xx) or latency.")
    ] = "errors",
    service: Annotated[str | None, typer.Option(help="Only this service.")] = None,
    path: Annotated[str | None, typer.Option(help="Only this path (route template).")] = None,
    env: Annotated[str | None, typer.Option(help="Only this env.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=20, help="Findings shown.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="The API's JSON document.")] = False,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Say what accounts for the extra 5xx (or 4xx) of a window against a baseline."""
    from gravix.explain.analysis import answer, decode_question
    from gravix.query.engines import make_engine
    from gravix.query.service import QueryService
    from gravix.query.spec import time_text
    from gravix.server import object_store

    filters = [
        {"dimension": name, "op": "eq", "values": [value]}
        for name, value in (("service", service), ("path", path), ("env", env))
        if value is not None
    ]
    body: dict[str, Any] = {
        "from": time_text(since),
        "to": time_text(until),
        "baseline": baseline,
        "measure": measure,
        "filters": filters,
        "limit": limit,
    }
    if deploy_at is not None:
        body["deploy_at"] = time_text(deploy_at)
    try:
        question = decode_question(json.dumps(body).encode())
    except GravixError as e:
        raise ConfigError(f"--{(e.field or 'from').replace('_', '-')}: {e.message}") from None
    settings = load_settings(config, data_dir=data_dir)
    store = object_store(settings)
    queries = QueryService(store, settings.spool_dir, make_engine(settings, store))
    try:
        found = answer(queries, tenant, question)
    except GravixError as e:  # no deploy marker to compare with
        if e.field not in ("baseline", "deploy_at"):
            raise
        raise ConfigError(f"--{(e.field or 'from').replace('_', '-')}: {e.message}") from None
    if as_json:
        print(json.dumps(found, indent=2))
        return
    console = Console()
    console.print(escape(found["summary"]), highlight=False, soft_wrap=True)
    table = Table("share", "element", "window", "baseline", "surprise")
    for f in found["findings"]:
        element = ", ".join(f"{k}={v}" for k, v in f["element"].items())
        table.add_row(
            f"{f['share']:.0%}",
            escape(element),
            _side(f["window"]),
            _side(f["baseline"]),
            f"{f['surprise']:.3f}",
        )
    console.print(table)
    console.print(
        f"baseline: {found['baseline']['description']}; "
        f"{found['actual']:,.0f} against {found['expected']:,.1f} expected",
        highlight=False,
    )


def _side(side: dict[str, float | None]) -> str:
    rate = side["rate"]
    shown = "-" if rate is None else f"{rate:.1%}"
    return f"{side['value']:,.0f} of {side['requests']:,.0f} ({shown})"

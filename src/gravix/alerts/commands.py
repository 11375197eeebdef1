"""The ``gravix alerts`` commands, on the local data dir's ``alerts.db`` (as ``gravix
users`` works on ``users.db``): list the rules, apply a rule file, show the history,
add a silence, list the channels.

:mod:`gravix.cli` registers them with its one-line error handling (exit 2).
Each prints a table, or with ``--json`` one JSON document on standard output
for scripts: ``list`` and ``history`` an array, ``apply`` and ``silence`` an
object. The work is imported when a command runs, so ``gravix --help`` stays
fast.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gravix.config import Settings, load_settings
from gravix.errors import ConfigError, GravixError

err_console = Console(stderr=True)
MAX_FILE_BYTES = 1 << 20

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="TOML config file (default ./gravix.toml).")
]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Root of local state.")]
TenantOpt = Annotated[str, typer.Option(help="The tenant.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON document, for scripts.")]


def _settings(config: Path | None, data_dir: Path | None) -> Settings:
    return load_settings(config, data_dir=data_dir)


def _when(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _series(series: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in series.items()) or "(all)"


def _emit(data: Any) -> None:
    print(json.dumps(data, indent=2))


def _show(table: Table) -> None:
    Console().print(table)


def _problem(e: GravixError) -> str:
    return f"{e.field}: {e.message}" if e.field else e.message


def list_rules(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's rules.")] = None,
    as_json: JsonOpt = False,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """List alert rules with how many of their series are in each state."""
    from gravix.alerts import views
    from gravix.alerts.rules import AlertStore

    store = AlertStore(_settings(config, data_dir))
    counts = views.state_counts(store)
    rules = store.rules(tenant)
    if as_json:
        _emit([{"tenant": r.tenant, **r.as_json(), "states": dict(counts.get((r.tenant, r.id),
                                                                              {}))}
               for r in rules])  # fmt: skip
        return
    table = Table("id", "tenant", "name", "kind", "severity", "source", "states")
    for r in rules:
        states: dict[str, int] = dict(counts.get((r.tenant, r.id), {}))
        shown = ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "no data yet"
        name = r.rule.name if r.rule.enabled else f"{r.rule.name} (disabled)"
        table.add_row(str(r.id), r.tenant, escape(name), views.kind_of(r), r.rule.severity,
                      r.source, shown)  # fmt: skip
    _show(table)


def apply_file(
    file: Annotated[Path, typer.Argument(help="A YAML or JSON rule file (docs/alerts.md).")],
    tenant: TenantOpt,
    as_json: JsonOpt = False,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Make the tenant's file rules, channels and maintenance windows what FILE says.

    The file is checked whole first: one with an error changes nothing. Rules
    from a file are changed by applying a file again, not through the API.
    """
    import msgspec
    import yaml

    from gravix.alerts.rules import AlertStore, convert
    from gravix.schema.alerts import Channel, Rule, RuleFile
    from gravix.schema.tenant import TENANT_RE

    if not TENANT_RE.fullmatch(tenant):
        raise ConfigError(f"--tenant: {tenant!r} is not a tenant name")
    try:
        data = file.read_bytes()
    except OSError as e:
        raise ConfigError(f"{file}: {e.strerror}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"{file}: larger than {MAX_FILE_BYTES} bytes")
    try:
        raw = yaml.safe_load(data) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{file}: not valid YAML: {getattr(e, 'problem', e)}{where}") from None
    store = AlertStore(_settings(config, data_dir))
    try:
        # Each rule and channel first: convert() names the field inside a tagged union
        # (rules[1].kind), not inside a list of them in a struct.
        for key, union, what in (("rules", Rule, "rule"), ("channels", Channel, "channel")):
            items = raw.get(key) if isinstance(raw, dict) else None
            for i, item in enumerate(items if isinstance(items, list) else []):
                convert(item, union, what, f"{key}[{i}]")
        parsed = convert(raw, RuleFile, "rule file")
        before = {r.rule.name: r.rule for r in store.rules(tenant) if r.source == "file"}
        counts = store.apply_file(tenant, parsed, str(file.resolve()))
    except GravixError as e:
        raise ConfigError(f"{file}: {_problem(e)}") from None
    after = {r.rule.name: r.rule for r in store.rules(tenant) if r.source == "file"}
    kept = set(after) & set(before)
    same = {n for n in kept if msgspec.json.encode(after[n]) == msgspec.json.encode(before[n])}
    names = {
        "added": sorted(set(after) - set(before)),
        "changed": sorted(kept - same),
        "removed": sorted(set(before) - set(after)),
        "unchanged": sorted(same),
    }
    windows = len(parsed.maintenance)
    if as_json:
        _emit({"tenant": tenant, **names, "channels": counts["channels"], "maintenance": windows})
        return
    for what in ("added", "changed", "removed"):
        for name in names[what]:
            print(f"{what} rule {name!r}")
    err_console.print(
        f"tenant {tenant}: {len(after)} file rules ({len(names['added'])} added, "
        f"{len(names['changed'])} changed, {len(names['removed'])} removed), "
        f"{counts['channels']} file channels, {windows} maintenance windows",
        highlight=False,
        soft_wrap=True,
    )


def history(
    tenant: TenantOpt,
    since: Annotated[
        str, typer.Option(help="From: epoch ms, RFC 3339, or now-<duration> (now-7d).")
    ] = "now-1d",
    rule: Annotated[int | None, typer.Option(help="Only this rule's (its id).")] = None,
    as_json: JsonOpt = False,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Show the transitions of the tenant's alerts, newest first (at most 1,000)."""
    from gravix.alerts import views
    from gravix.alerts.rules import AlertStore
    from gravix.query.spec import parse_time, time_text

    now = int(time.time() * 1000)
    try:
        from_ms = parse_time(time_text(since), "--since", now)
    except GravixError as e:
        raise ConfigError(f"--since: {e.message}") from None
    store = AlertStore(_settings(config, data_dir))
    found = views.transitions(store, tenant, from_ms, now + 1, rule)
    if as_json:
        _emit(found)
        return
    table = Table("at (UTC)", "rule", "series", "from", "to", "detail")
    for t in found:
        table.add_row(_when(t["at"]), escape(t["rule"]), escape(_series(t["series"])),
                      t["from"], t["to"], escape(t["detail"]))  # fmt: skip
    _show(table)


def silence(
    tenant: TenantOpt,
    matcher: Annotated[
        list[str],
        typer.Option(
            metavar="DIMENSION=VALUE[,VALUE]",
            help="Series to silence (repeatable, all must match); != for all but these; "
            "rule=NAME for one rule.",
        ),
    ],
    duration: Annotated[str, typer.Option(help="How long, from now: 30m, 2h, 1d.")],
    comment: Annotated[str, typer.Option(help="Why (shown with the silence).")] = "",
    as_json: JsonOpt = False,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Stop notifications for matching series for a while (transitions are still kept)."""
    from gravix.alerts.rules import AlertStore
    from gravix.schema import alerts as schema

    matchers = []
    for text in matcher:
        dimension, sep, values = text.partition("=")
        negated = dimension.endswith("!")
        dimension = dimension.removesuffix("!").strip()
        if not sep or not dimension or not values:
            raise ConfigError(f"--matcher {text!r}: use DIMENSION=VALUE, like service=checkout")
        matchers.append(schema.Matcher(dimension, list(values.split(",")),
                                       "not_in" if negated else "in"))  # fmt: skip
    try:
        length = schema.duration_ms(duration, "--duration")
    except GravixError as e:
        raise ConfigError(f"--duration: {e.message}") from None
    now = int(time.time() * 1000)
    body = schema.Silence(matchers=matchers, starts=now, ends=now + length, comment=comment)
    store = AlertStore(_settings(config, data_dir))
    try:
        silence_id = store.add_silence(tenant, body, "cli")
    except GravixError as e:
        raise ConfigError(_problem(e)) from None
    item = next(s for s in store.silences(tenant) if s["id"] == silence_id)
    if as_json:
        _emit(item)
        return
    err_console.print(
        f"silence {silence_id} of tenant {tenant} until {_when(body.ends)} UTC", highlight=False
    )


def channels(
    tenant: TenantOpt,
    as_json: JsonOpt = False,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """List the tenant's channels (a secret is named, never shown)."""
    import msgspec

    from gravix.alerts.rules import AlertStore

    store = AlertStore(_settings(config, data_dir))
    sources = store.channel_sources(tenant)
    found = [
        {**msgspec.to_builtins(channel), "source": sources.get(name, "api")}
        for name, channel in store.channels(tenant).items()
    ]
    if as_json:
        _emit(found)
        return
    table = Table("name", "kind", "to", "secret (its name)", "source")
    for c in found:
        target = c.get("url") or ", ".join(c.get("to", []))
        secret = c.get("secret") or c.get("url_secret") or ""
        table.add_row(escape(c["name"]), c["kind"], escape(target), escape(secret), c["source"])
    _show(table)

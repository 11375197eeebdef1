"""The ``gravix`` command.

User mistakes print one line and exit non-zero (no tracebacks). Options left
unset fall through to the environment, the config file, then defaults.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gravix.accesslog import commands as accesslog_commands
from gravix.alerts import commands as alert_commands
from gravix.config import Settings, load_settings
from gravix.errors import ConfigError, GravixError
from gravix.explain import commands as explain_commands

app = typer.Typer(
    name="gravix",
    help="Gravix: know which endpoint broke and when.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(help="Manage ingest API keys (stored as hashes only).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
tokens_app = typer.Typer(
    help="Manage query API tokens (gvq_..., for scripts; stored as hashes only).",
    no_args_is_help=True,
)
app.add_typer(tokens_app, name="tokens")
users_app = typer.Typer(
    help="Manage dashboard users (scrypt password hashes).", no_args_is_help=True
)
app.add_typer(users_app, name="users")
alerts_app = typer.Typer(
    help="Alert rules, history, silences and channels on the local data dir (docs/alerts.md).",
    no_args_is_help=True,
)
app.add_typer(alerts_app, name="alerts")
db_app = typer.Typer(
    help="The metadata store's schema: upgrade it, copy it to PostgreSQL (docs/scale.md).",
    no_args_is_help=True,
)
app.add_typer(db_app, name="db")
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="TOML config file (default ./gravix.toml).")
]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Root of local state.")]


def friendly(func: F) -> F:
    """Turn GravixError into a one-line message and exit code 2."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except GravixError as e:
            # The message is text: "[a-z0-9]" in it is not rich markup.
            err_console.print(
                f"[red]error:[/red] {escape(e.message)}", highlight=False, soft_wrap=True
            )
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _settings(config: Path | None, **flags: Any) -> Settings:
    return load_settings(config, **flags)


@app.command()
@friendly
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address.")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port (0: any free port).")] = None,
    workers: Annotated[int | None, typer.Option(help="Ingest worker processes.")] = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="PEM certificate: serve HTTPS.")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", help="PEM private key of --tls-cert.")
    ] = None,
    role: Annotated[
        str | None,
        typer.Option(
            metavar="all|ingest|api",
            help=(
                "all: the whole pipeline; ingest: no rollup or retention; api: no intake "
                "(docs/scale.md)."
            ),
        ),
    ] = None,
) -> None:
    """Run Gravix: intake, spool, uploader, API and dashboard, and (role all) the rollup."""
    from gravix.server import serve as run

    settings = _settings(
        config,
        host=host,
        port=port,
        workers=workers,
        data_dir=data_dir,
        tls_cert_file=tls_cert,
        tls_key_file=tls_key,
        role=role,
    )
    raise typer.Exit(run(settings))


@keys_app.command("create")
@friendly
def keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant the key belongs to.")],
    label: Annotated[str, typer.Option(help="A note to recognise the key by.")] = "",
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Create a key; it is printed once and stored only as a hash."""
    from gravix.ingest.keys import KeyStore

    settings = _settings(config, data_dir=data_dir)
    key, secret = KeyStore(settings.keys_db, database_url=settings.metadata_url).create(
        tenant, label
    )
    err_console.print(f"created key {key.id} for tenant {key.tenant}; store it now:")
    print(secret)


@keys_app.command("list")
@friendly
def keys_list(data_dir: DataDirOpt = None, config: ConfigOpt = None) -> None:
    """List keys (ids, tenants, state): never the secrets."""
    from gravix.ingest.keys import KeyStore

    settings = _settings(config, data_dir=data_dir)
    table = Table("id", "tenant", "label", "created", "state")
    for key in KeyStore(settings.keys_db, database_url=settings.metadata_url).list():
        created = datetime.fromtimestamp(key.created_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")
        table.add_row(key.id, key.tenant, key.label, created, "active" if key.active else "revoked")
    Console().print(table)


@keys_app.command("revoke")
@friendly
def keys_revoke(
    key_id: Annotated[str, typer.Argument(metavar="ID", help="The key id from `keys list`.")],
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Revoke a key; running servers refuse it within seconds."""
    from gravix.ingest.keys import KeyStore

    settings = _settings(config, data_dir=data_dir)
    key = KeyStore(settings.keys_db, database_url=settings.metadata_url).revoke(key_id)
    err_console.print(f"revoked key {key.id} of tenant {key.tenant}")


@tokens_app.command("create")
@friendly
def tokens_create(
    tenant: Annotated[str, typer.Option(help="The only tenant the token can query.")],
    label: Annotated[str, typer.Option(help="A note to recognise the token by.")] = "",
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Create a query API token; it is printed once and stored only as a hash."""
    from gravix.api.auth import token_store

    settings = _settings(config, data_dir=data_dir)
    token, secret = token_store(settings.tokens_db, settings.metadata_url).create(tenant, label)
    err_console.print(f"created token {token.id} for tenant {token.tenant}; store it now:")
    print(secret)


@tokens_app.command("list")
@friendly
def tokens_list(data_dir: DataDirOpt = None, config: ConfigOpt = None) -> None:
    """List query API tokens (ids, tenants, state): never the secrets."""
    from gravix.api.auth import token_store

    settings = _settings(config, data_dir=data_dir)
    table = Table("id", "tenant", "label", "created", "state")
    for token in token_store(settings.tokens_db, settings.metadata_url).list():
        created = datetime.fromtimestamp(token.created_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")
        state = "active" if token.active else "revoked"
        table.add_row(token.id, token.tenant, token.label, created, state)
    Console().print(table)


@tokens_app.command("revoke")
@friendly
def tokens_revoke(
    token_id: Annotated[str, typer.Argument(metavar="ID", help="The id from `tokens list`.")],
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Revoke a query API token; servers refuse it within seconds."""
    from gravix.api.auth import token_store

    settings = _settings(config, data_dir=data_dir)
    token = token_store(settings.tokens_db, settings.metadata_url).revoke(token_id)
    err_console.print(f"revoked token {token.id} of tenant {token.tenant}")


def _new_password(password_stdin: bool) -> str:
    if password_stdin:
        return sys.stdin.readline().rstrip("\n")
    password: str = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    return password


PasswordStdinOpt = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from standard input.")
]


@users_app.command("create")
@friendly
def users_create(
    name: Annotated[str, typer.Argument(help="Login name.")],
    tenant: Annotated[str, typer.Option(help="The only tenant this user sees.")],
    role: Annotated[
        str, typer.Option(help="viewer, editor (changes alert rules) or admin.")
    ] = "viewer",
    password_stdin: PasswordStdinOpt = False,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Create a user (the password is asked for, or read with --password-stdin)."""
    from gravix.api.users import UserStore

    settings = _settings(config, data_dir=data_dir)
    user = UserStore(settings.users_db, settings.metadata_url).create(
        name, tenant, role, _new_password(password_stdin)
    )
    err_console.print(f"created {user.role} {user.name} of tenant {user.tenant}", highlight=False)


@users_app.command("set-password")
@friendly
def users_set_password(
    name: Annotated[str, typer.Argument(help="Login name.")],
    password_stdin: PasswordStdinOpt = False,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Set a user's password."""
    from gravix.api.users import UserStore

    settings = _settings(config, data_dir=data_dir)
    UserStore(settings.users_db, settings.metadata_url).set_password(
        name, _new_password(password_stdin)
    )
    err_console.print(f"password of {name} changed", highlight=False)


@users_app.command("list")
@friendly
def users_list(data_dir: DataDirOpt = None, config: ConfigOpt = None) -> None:
    """List users (never their password hashes)."""
    from gravix.api.users import UserStore

    settings = _settings(config, data_dir=data_dir)
    table = Table("name", "tenant", "role", "created")
    for user in UserStore(settings.users_db, settings.metadata_url).list():
        created = datetime.fromtimestamp(user.created_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")
        table.add_row(user.name, user.tenant, user.role, created)
    Console().print(table)


@db_app.command("upgrade")
@friendly
def db_upgrade(data_dir: DataDirOpt = None, config: ConfigOpt = None) -> None:
    """Run the metadata store's migrations to head (GRAVIX_DATABASE_URL, else the data dir)."""
    from gravix.migrations.commands import upgrade

    settings = _settings(config, data_dir=data_dir)
    for line in upgrade(settings):
        print(line, flush=True)


@db_app.command("copy")
@friendly
def db_copy(
    to: Annotated[
        str, typer.Option("--to", metavar="postgresql://...", help="The PostgreSQL to fill.")
    ],
    force: Annotated[
        bool, typer.Option("--force", help="Delete the rows the target holds first.")
    ] = False,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Copy the SQLite store of the data dir (keys, tokens, users, sessions) into PostgreSQL."""
    from gravix.migrations.commands import copy_to_postgresql

    settings = _settings(config, data_dir=data_dir)
    print(copy_to_postgresql(settings, to, force=force), flush=True)


@app.command()
@friendly
def loadgen(
    url: Annotated[
        str, typer.Option(help="Base URL of a Gravix intake.")
    ] = "http://127.0.0.1:8080",
    key: Annotated[
        str | None,
        typer.Option(envvar="GRAVIX_LOADGEN_KEY", show_envvar=True, help="Ingest API key."),
    ] = None,
    rate: Annotated[
        float, typer.Option(min=0.001, help="Mean facts/s (it swings over the day).")
    ] = 50.0,
    duration: Annotated[
        float | None, typer.Option(min=0, help="Seconds to run; unset or 0: until Ctrl-C.")
    ] = None,
    batch: Annotated[
        int, typer.Option(min=1, max=10_000, help="Facts per request (sent within ~1 s).")
    ] = 100,
    ack_log: Annotated[
        Path | None,
        typer.Option(help="Append each acknowledged fact id here, one a line, after each 2xx."),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the traffic model.")] = None,
    concurrency: Annotated[
        int, typer.Option(min=1, max=64, help="Requests in flight at once.")
    ] = 2,
    spike: Annotated[
        list[str] | None,
        typer.Option(
            metavar="SERVICE:METHOD:PATH", help="Give this endpoint 5xx spikes (repeatable)."
        ),
    ] = None,
    slow: Annotated[
        list[str] | None,
        typer.Option(metavar="SERVICE:METHOD:PATH", help="Give this endpoint latency regressions."),
    ] = None,
    regress: Annotated[
        list[str] | None,
        typer.Option(
            metavar="SERVICE:METHOD:PATH",
            help="Make every third deploy of its service slow this endpoint until the next one.",
        ),
    ] = None,
    no_events: Annotated[
        bool, typer.Option("--no-events", help="Send facts only, no service events.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """Send realistic synthetic traffic (facts and service events) to a Gravix intake."""
    from gravix.loadgen.sender import LoadgenOptions, run_loadgen
    from gravix.loadgen.traffic import TrafficModel

    if not key:
        raise GravixError(
            "no API key: pass --key or set GRAVIX_LOADGEN_KEY "
            "(make one with `gravix keys create --tenant NAME`)"
        )
    if not url.startswith(("http://", "https://")):
        raise GravixError(f"--url must start with http:// or https://, not {url!r}")
    options = LoadgenOptions(
        url=url.rstrip("/"),
        key=key,
        rate=rate,
        duration=duration or None,
        batch=batch,
        ack_log=ack_log,
        seed=seed,
        concurrency=concurrency,
        spikes=spike or [],
        slows=slow or [],
        regressions=regress or [],
        events=not no_events,
        quiet=quiet,
    )
    model = TrafficModel(
        rate=rate,
        seed=seed,
        spikes=options.spikes,
        slows=options.slows,
        regressions=options.regressions,
    )
    stats = run_loadgen(options, model=model)
    print(stats.summary(), flush=True)
    if stats.fatal:
        raise GravixError(stats.fatal)


app.command("import-logs")(friendly(accesslog_commands.import_logs))
app.command("tail-logs")(friendly(accesslog_commands.tail_logs))
alerts_app.command("list")(friendly(alert_commands.list_rules))
alerts_app.command("apply")(friendly(alert_commands.apply_file))
alerts_app.command("history")(friendly(alert_commands.history))
alerts_app.command("silence")(friendly(alert_commands.silence))
alerts_app.command("channels")(friendly(alert_commands.channels))
app.command("explain")(friendly(explain_commands.explain))


@app.command()
@friendly
def demo(
    data_dir: Annotated[
        Path, typer.Option(help="Root of the demo's state (created if missing).")
    ] = Path("gravix-demo"),
    host: Annotated[str, typer.Option(help="Listen address.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="TCP port (0: any free port).")
    ] = 8080,
    rate: Annotated[float, typer.Option(min=0.001, help="Mean facts/s of demo traffic.")] = 50.0,
    history: Annotated[
        float,
        typer.Option(min=0, help="Minutes of past traffic to send at start (0: none)."),
    ] = 120,
) -> None:
    """Run a server with synthetic traffic and print its URL and API key (`make demo`)."""
    from gravix.demo import run_demo

    raise typer.Exit(run_demo(data_dir, host, port, rate, history))


@app.command()
@friendly
def upload(
    once: Annotated[
        bool, typer.Option("--once", help="One pass over every spool no server owns, then exit.")
    ] = False,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Ship sealed spool segments to the object store (`gravix serve` does this itself)."""
    from rich.progress import Progress

    from gravix.ingest.backlog import pending_segments, upload_spools_once
    from gravix.server import object_store

    if not once:
        raise ConfigError("only `gravix upload --once` exists: `gravix serve` uploads continuously")
    settings = _settings(config, data_dir=data_dir)
    store = object_store(settings)
    with Progress(console=err_console, transient=True) as bar:
        task = bar.add_task("uploading segments", total=pending_segments(settings.spool_dir))
        report = upload_spools_once(
            settings.spool_dir,
            store,
            settings.node_id,
            progress=lambda _name, _size: bar.advance(task),
        )
    shipped = sum(len(p.uploaded) for p in report.passes.values())
    size = sum(p.bytes for p in report.passes.values())
    err_console.print(f"uploaded {shipped} segments ({size} bytes) to {store.url}")
    for name in report.skipped:
        err_console.print(f"skipped spool {name}: a running server owns it and uploads it")
    for name in report.failed:
        err_console.print(f"[red]spool {name}:[/red] {report.passes[name].error}", soft_wrap=True)
    unreadable = [(n, seg) for n, p in report.passes.items() for seg in p.unreadable]
    for name, segment in unreadable:
        err_console.print(f"[red]spool {name}:[/red] {segment} is unreadable; kept, not uploaded")
    if report.failed or unreadable:
        raise typer.Exit(1)


def _when(value: str | None, name: str) -> int | None:
    """Epoch ms of an ISO 8601 date or time (UTC unless it says otherwise)."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"{name}: {value!r} is not an ISO 8601 date or time (2026-11-22 or 2026-11-22T10:00)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


@app.command()
@friendly
def rollup(
    tenant: Annotated[
        str | None, typer.Option(help="Only this tenant (default: every one).")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--from", help="Backfill: also recompute archived hours from this time."),
    ] = None,
    until: Annotated[
        str | None, typer.Option("--to", help="Backfill: ... up to this time (exclusive).")
    ] = None,
    engine: Annotated[
        str | None,
        typer.Option(
            metavar="duckdb|spark",
            help="What computes the rollup: embedded DuckDB or Spark (docs/scale.md).",
        ),
    ] = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Roll raw facts up into minute, hourly and daily metrics, once (for cron).

    Exit codes: 0 done; 75 another run holds a tenant's lock ("already
    running"; the other tenants were still rolled up); 1 some raw objects
    are unreadable (kept, skipped) or the store failed; 2 bad options.
    """
    from rich.progress import Progress

    from gravix.rollup.lock import ALREADY_RUNNING_EXIT
    from gravix.rollup.service import rollup_job
    from gravix.server import object_store
    from gravix.storage.base import StoreUnavailable

    since_ms, until_ms = _when(since, "--from"), _when(until, "--to")
    if since_ms is not None and until_ms is not None and since_ms >= until_ms:
        raise ConfigError("--from must be before --to")
    settings = _settings(config, data_dir=data_dir, rollup_engine=engine)
    job = rollup_job(settings, object_store(settings))
    with Progress(console=err_console, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def progress(what: str, done: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = bar.add_task(what, total=total)
            bar.update(tasks[what], completed=done, total=total)

        try:
            report = job.run(tenant, since_ms=since_ms, until_ms=until_ms, progress=progress)
        except StoreUnavailable as e:
            err_console.print(f"[red]error:[/red] {e.message}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
    for name, result in report.tenants.items():
        err_console.print(
            f"tenant {name}: {result.objects} raw objects, {result.facts_in} facts "
            f"({result.late_facts} late), {len(result.hours)} hours recomputed, "
            f"{result.rows_out} metric rows written",
            highlight=False,
            soft_wrap=True,
        )
        for key in result.unreadable:
            err_console.print(f"[red]unreadable raw object kept:[/red] {key}", soft_wrap=True)
    for message in report.busy.values():
        err_console.print(f"[yellow]{message}[/yellow]", soft_wrap=True, highlight=False)
    if report.busy:
        raise typer.Exit(ALREADY_RUNNING_EXIT)
    if any(result.unreadable for result in report.tenants.values()):
        raise typer.Exit(1)


@app.command()
@friendly
def retention(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be deleted; delete nothing.")
    ] = False,
    tenant: Annotated[
        str | None, typer.Option(help="Only this tenant (default: every tenant).")
    ] = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Delete partitions older than the retention policy (`gravix serve` does this daily)."""
    from gravix.rollup.retention import apply_retention
    from gravix.server import object_store
    from gravix.storage.base import StoreUnavailable

    settings = _settings(config, data_dir=data_dir)
    store = object_store(settings)
    try:
        report = apply_retention(store, settings, dry_run=dry_run, tenant=tenant, progress=print)
    except StoreUnavailable as e:
        err_console.print(f"[red]error:[/red] {e.message}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if report.skipped_clock:
        now, last = (
            datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
            for ms in (report.reference_ms, report.last_run_ms or 0)
        )
        err_console.print(
            f"nothing deleted: the clock ({now} UTC) is behind the last retention run "
            f"({last} UTC); it may have jumped backwards",
            highlight=False,
            soft_wrap=True,
        )
        return
    for key in report.skipped:
        err_console.print(f"left alone (not a partition key): {key}", markup=False, soft_wrap=True)
    verb = "would delete" if dry_run else "deleted"
    err_console.print(
        f"{verb} {len(report.deleted)} objects ({report.kept} kept) in {store.url}",
        highlight=False,
        soft_wrap=True,
    )


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()

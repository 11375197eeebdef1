"""The ``gravix import-logs`` and ``gravix tail-logs`` commands.

:mod:`gravix.cli` registers them (with its one-line error handling); the
work is imported when a command runs, so ``gravix --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from gravix.errors import ConfigError

err_console = Console(stderr=True)


LogUrlOpt = Annotated[
    str,
    typer.Option(envvar="GRAVIX_URL", show_envvar=True, help="Base URL of a Gravix intake."),
]
LogKeyOpt = Annotated[
    str | None, typer.Option(envvar="GRAVIX_KEY", show_envvar=True, help="Ingest API key.")
]
LogFormatOpt = Annotated[
    str,
    typer.Option(
        "--format",
        help="combined (nginx's or Apache's, with or without $request_time at the end), "
        "common (Apache's, with or without %D), apache (Apache's combined, with or "
        "without %D), json, or an nginx log_format / Apache LogFormat string "
        "(docs/sending-data.md).",
    ),
]
LogFieldOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--field", metavar="ROLE=KEY", help="JSON logs: the key holding a field (repeatable)."
    ),
]
LogServiceOpt = Annotated[
    str | None, typer.Option(help="Service of every line (or of hosts the rules do not map).")
]
LogFromHostOpt = Annotated[
    bool,
    typer.Option("--service-from-host", help="Service from $host through the --routes file."),
]
LogRoutesOpt = Annotated[
    Path | None, typer.Option(help="TOML route rules per service (docs/sending-data.md).")
]
LogEnvOpt = Annotated[str | None, typer.Option(help="env of every fact.")]
LogVersionOpt = Annotated[
    str | None, typer.Option("--service-version", help="version of every fact.")
]
LogBatchOpt = Annotated[int, typer.Option(min=1, max=10_000, help="Facts per request.")]
LogShowBadOpt = Annotated[
    int, typer.Option(min=0, help="Show the first N bad lines and rejected facts.")
]
LogQuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
LogSourceOpt = Annotated[
    str | None,
    typer.Option(
        help="Name of the host that wrote the log, part of the event ids (default: this "
        "host's name); give the same one to re-import a copy elsewhere."
    ),
]


def _say(message: str) -> None:
    err_console.print(message, markup=False, highlight=False, soft_wrap=True)


def _log_parser_and_shipper(
    url: str,
    key: str | None,
    log_format: str,
    field: list[str] | None,
    service: str | None,
    service_from_host: bool,
    routes: Path | None,
    env: str | None,
    service_version: str | None,
    show_bad: int,
    retry_for: float | None,
    source: str | None,
) -> tuple[Any, Any]:
    from gravix.accesslog.parser import make_parser
    from gravix.accesslog.shipper import Shipper

    if not key:
        raise ConfigError(
            "no API key: pass --key or set GRAVIX_KEY "
            "(make one with `gravix keys create --tenant NAME`)"
        )
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"--url must start with http:// or https://, not {url!r}")
    parser = make_parser(
        log_format,
        fields=field,
        routes=routes,
        service=service,
        service_from_host=service_from_host,
        env=env,
        version=service_version,
        keep_bad=show_bad,
        source=source,
    )
    # An import may post two batches at once; a tail posts in order (it saves offsets).
    senders = 2 if retry_for is not None else 1
    shipper = Shipper(
        url, key, retry_for=retry_for, keep_rejections=show_bad, say=_say, senders=senders
    )
    return parser, shipper


# Lines were read and none was accepted: a cron job must not import nothing for ever.
NOTHING_ACCEPTED = 3


def _log_summary(report: Any, show_bad: int, verb: str) -> None:
    for line in report.summary(show_bad, verb):
        err_console.print(line, markup=False, highlight=False, soft_wrap=True)
    if report.ship.fatal:
        err_console.print(
            f"[red]error:[/red] {escape(report.ship.fatal)}", highlight=False, soft_wrap=True
        )
        raise typer.Exit(1)
    if report.nothing_accepted:
        why = "every line was bad" if report.bad == report.lines else "the server refused them"
        err_console.print(
            f"[red]error:[/red] {verb} read {report.lines:,} lines and Gravix accepted no "
            f"fact of them ({why}; the reasons are above): check --format and --service "
            "(docs/sending-data.md)",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(NOTHING_ACCEPTED)


def import_logs(
    files: Annotated[list[Path], typer.Argument(metavar="FILE", help="Access logs (.gz too).")],
    url: LogUrlOpt = "http://127.0.0.1:8080",
    key: LogKeyOpt = None,
    log_format: LogFormatOpt = "combined",
    field: LogFieldOpt = None,
    service: LogServiceOpt = None,
    service_from_host: LogFromHostOpt = False,
    routes: LogRoutesOpt = None,
    env: LogEnvOpt = None,
    service_version: LogVersionOpt = None,
    batch: LogBatchOpt = 5000,
    show_bad: LogShowBadOpt = 10,
    retry_for: Annotated[
        float, typer.Option(min=0, help="Give up when the server fails this many seconds.")
    ] = 60.0,
    quiet: LogQuietOpt = False,
    source: LogSourceOpt = None,
) -> None:
    """Send the requests of access log files to Gravix as facts (re-importing is harmless).

    Exit codes: 0 done (bad lines and rejected facts are reported, not
    fatal); 1 the server refused the key or could not be reached; 2 bad
    options or an unreadable file; 3 lines were read but no fact was
    accepted (every line bad or refused).
    """
    from gravix.accesslog.importer import import_logs as run

    parser, shipper = _log_parser_and_shipper(
        url, key, log_format, field, service, service_from_host, routes, env,
        service_version, show_bad, retry_for, source,
    )  # fmt: skip
    report = run(files, parser, shipper, batch_size=batch, console=err_console, quiet=quiet)
    _log_summary(report, show_bad, "import-logs")


def tail_logs(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="The access log to follow.")],
    url: LogUrlOpt = "http://127.0.0.1:8080",
    key: LogKeyOpt = None,
    log_format: LogFormatOpt = "combined",
    field: LogFieldOpt = None,
    service: LogServiceOpt = None,
    service_from_host: LogFromHostOpt = False,
    routes: LogRoutesOpt = None,
    env: LogEnvOpt = None,
    service_version: LogVersionOpt = None,
    batch: LogBatchOpt = 5000,
    show_bad: LogShowBadOpt = 10,
    state: Annotated[
        Path | None,
        typer.Option(help="Where the position is saved (default under $XDG_STATE_HOME/gravix)."),
    ] = None,
    from_end: Annotated[
        bool, typer.Option("--from-end", help="Without saved state, skip the lines already there.")
    ] = False,
    once: Annotated[
        bool, typer.Option("--once", help="Read what is there (and rotated leftovers), then exit.")
    ] = False,
    duration: Annotated[
        float | None, typer.Option(min=0, help="Seconds to follow; unset: until SIGTERM/Ctrl-C.")
    ] = None,
    poll: Annotated[float, typer.Option(min=0.01, help="Seconds between looks at the file.")] = 0.2,
    source: LogSourceOpt = None,
) -> None:
    """Follow an access log like `tail -F` (rotation too), resuming where it stopped.

    Exit codes as import-logs': 3 when lines were read but no fact was accepted.
    """
    import signal
    import threading

    from gravix.accesslog.state import default_state_path
    from gravix.accesslog.tailer import Tailer

    parser, shipper = _log_parser_and_shipper(
        url, key, log_format, field, service, service_from_host, routes, env,
        service_version, show_bad, None, source,
    )  # fmt: skip
    tailer = Tailer(
        file,
        parser,
        shipper,
        state or default_state_path(file),
        batch_size=batch,
        poll_seconds=poll,
        from_end=from_end,
        say=_say,
    )
    stop = threading.Event()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda *_: stop.set())
    try:
        report = tailer.run(stop, once=once, duration=duration or None)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    _log_summary(report, show_bad, "tail-logs")

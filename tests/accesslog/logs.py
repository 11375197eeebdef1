"""Access log lines as nginx and Apache write them, and the CLI that reads them, for the
accesslog tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time

UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0"


def clf_time(epoch_s: float) -> str:
    return time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(epoch_s))


def combined(
    epoch_s: float,
    method: str = "GET",
    url: str = "/users/123",
    status: int = 200,
    seconds: str = "0.042",
    addr: str = "203.0.113.7",
) -> str:
    """One line of the `combined` preset (nginx combined + $request_time)."""
    return (
        f'{addr} - - [{clf_time(epoch_s)}] "{method} {url} HTTP/1.1" {status} 512 '
        f'"https://example.com/" "{UA}" {seconds}\n'
    )


def apache(epoch_s: float, method: str = "GET", url: str = "/", status: int = 200,
           micros: int = 42000) -> str:  # fmt: skip
    """One line of the `apache` preset (Apache combined + %D)."""
    return (
        f'203.0.113.7 - frank [{clf_time(epoch_s)}] "{method} {url} HTTP/1.1" {status} 2326 '
        f'"-" "{UA}" {micros}\n'
    )


def stock_combined(epoch_s: float, method: str = "GET", url: str = "/users/123",
                   status: int = 200, size: int = 512) -> str:  # fmt: skip
    """One line of nginx's own `combined` (no request time): what a stock nginx writes."""
    return (
        f'203.0.113.7 - - [{clf_time(epoch_s)}] "{method} {url} HTTP/1.1" {status} {size} '
        f'"https://example.com/" "{UA}"\n'
    )


def common(epoch_s: float, method: str = "GET", url: str = "/", status: int = 200,
           size: str = "2326", micros: int | None = None) -> str:  # fmt: skip
    """One line of Apache's `common` (with ``micros``: plus %D)."""
    tail = "" if micros is None else f" {micros}"
    return (
        f'203.0.113.7 - frank [{clf_time(epoch_s)}] "{method} {url} HTTP/1.0" {status} {size}'
        f"{tail}\n"
    )


def gravix(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``gravix <args>`` in a fresh process, without the caller's GRAVIX_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRAVIX_")}
    return subprocess.run(
        [sys.executable, "-m", "gravix.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )

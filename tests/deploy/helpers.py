"""Helpers for the deploy/ tests: the tools they run, and PromQL metric names.

A missing tool (promtool, prometheus, kubectl) skips a test on a developer's
machine with the reason, and fails it under ``CI=true``: `make test` installs
them (the Makefile's APT_PACKAGES), so in CI a missing one is a broken setup.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

DEPLOY = Path(__file__).parents[2] / "deploy"

# PromQL words that look like metric names but are not.
_PROMQL_WORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
     "bool", "offset", "inf", "nan",
     # aggregations, which may be followed by `by (...)` before their parenthesis
     "sum", "min", "max", "avg", "count", "group", "stddev", "stdvar", "topk", "bottomk",
     "quantile", "count_values"}
)  # fmt: skip
# What Prometheus itself adds to every target; not exported by /metrics.
SYNTHETIC_METRICS = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})


def require_tool(name: str, package: str) -> str:
    """The tool's path; skip without it (fail under CI=true).

    ``package`` is the Debian package `make test` installs, or for a tool that
    is not one (kubectl), how to get it.
    """
    path = shutil.which(name)
    if path is None:
        how = package if " " in package else f"apt-get install {package}; `make test` does it"
        reason = f"{name} is not installed ({how})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}: under CI=true this is a failure, not a skip")
        pytest.skip(reason)
    return path


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (functions, labels, keywords left out)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range and subquery durations
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", expr)
    expr = re.sub(r"\$\{?\w+\}?", "", expr)  # Grafana variables ($__rate_interval)
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", expr):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in _PROMQL_WORDS:
            continue
        names.add(word)
    return names

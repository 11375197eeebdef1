"""Retention: delete rolled-up partitions once their date is past the policy.

What is deleted, by area of the key layout (:mod:`gravix.schema.layout`)::

    archive/     raw facts           raw_retention_days
    events/      service events      minute_retention_days (deploy markers live
                                     as long as the minute charts they mark)
    metrics_1m/  minute tier         minute_retention_days
    metrics_1h/  hourly tier         hour_retention_days (0: forever)
    metrics_1d/  daily tier          day_retention_days (0: forever)
    service_metrics_1m/, _1h/, _1d/  the same tiers at the service level,
                 kept as long as their tier

Nothing else is ever touched: not ``raw/`` (facts not rolled up yet), not
``_locks/`` or ``_state/``, not the spool on local disk. A key under one of
the areas above that does not parse as a partition is left alone and
reported as skipped.

**Rule.** With the reference time ``now`` (UTC) and ``today`` its date, an
object whose partition date is before ``today - days`` is deleted; dates from
``today - days`` on are kept. The granularity is whole days: an hour partition
goes only once its whole date is past the window. Today's partitions, and
anything dated in the future, are never deleted.

**Clock.** Each real run first records its reference time in the object store
at ``_state/retention.json``::

    {"last_run_ms": 1767225600000, "last_run": "2026-01-01T00:00:00Z"}

A run whose ``now`` is earlier than the recorded time (the clock jumped
backwards) deletes nothing and says so. The time is recorded *before* any
delete, so every deletion ever made is covered by the check. A dry run
neither records nor deletes.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Final

from prometheus_client import Counter, Gauge

from gravix.config import Settings
from gravix.errors import ConfigError, GravixError
from gravix.schema.layout import (
    ARCHIVE,
    EVENTS,
    LEVELS,
    TIERS,
    metrics_prefix,
    parse_key,
    tenant_prefix,
)
from gravix.schema.tenant import TENANT_RE
from gravix.storage.base import ObjectNotFound, ObjectStore

log = logging.getLogger("gravix.retention")

STATE_KEY: Final = "_state/retention.json"

RETENTION_DELETED = Counter(
    "retention_deleted_objects_total",
    "Objects deleted by retention, by area (archive, events, metrics_1m..1d, service_metrics_*).",
    ["area"],
)
RETENTION_RUNS = Counter(
    "retention_runs_total",
    "Retention runs (dry runs excluded), by result (success, failure, clock_behind).",
    ["result"],
)
RETENTION_LAST_SUCCESS = Gauge(
    "retention_last_success_timestamp_seconds",
    "Unix time at which the last successful retention run finished.",
)
# With the success gauge, "the last run failed" is one comparison (deploy/prometheus);
# a counter alone cannot say it when its first failure is also its first sample.
RETENTION_LAST_FAILURE = Gauge(
    "retention_last_failure_timestamp_seconds",
    "Unix time at which the last failed retention run (failure or clock_behind) ended.",
)

_SETTING_OF_FIELD: Final = {
    "raw_days": "raw_retention_days",
    "minute_days": "minute_retention_days",
    "hour_days": "hour_retention_days",
    "day_days": "day_retention_days",
}
# Raw facts and minute metrics must expire (0 is refused for them, as in Settings).
_MIN_DAYS: Final = {
    "raw_retention_days": 1,
    "minute_retention_days": 1,
    "hour_retention_days": 0,
    "day_retention_days": 0,
}


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Days kept per kind of data; 0 keeps it forever."""

    raw_days: int
    minute_days: int
    hour_days: int
    day_days: int

    def days_for(self, area: str) -> int:
        """The days kept of ``area`` (``archive``, ``events``, ``metrics_1m``...)."""
        return {
            "archive": self.raw_days,
            "events": self.minute_days,
            "metrics_1m": self.minute_days,
            "metrics_1h": self.hour_days,
            "metrics_1d": self.day_days,
        }[area.removeprefix("service_")]

    def keeps(self, area: str, day: date, today: date) -> bool:
        """Whether a partition of ``area`` dated ``day`` survives a run on ``today``."""
        days = self.days_for(area)
        if days == 0 or day >= today:
            return True
        try:
            return day >= today - timedelta(days=days)
        except OverflowError:  # a window reaching back before year 1 keeps everything
            return True


# Every area retention may delete from, as a key prefix; raw/, _locks/ and _state/ are absent.
AREAS: Final[tuple[str, ...]] = (
    ARCHIVE,
    EVENTS,
    *(metrics_prefix(tier, level) for level in LEVELS for tier in TIERS),
)


def check_overrides(settings: Settings) -> None:
    """Raise ConfigError unless every ``tenant_retention`` entry is usable."""
    for tenant, override in settings.tenant_retention.items():
        where = f"tenant_retention.{tenant}"
        if not TENANT_RE.match(tenant):
            raise ConfigError(
                f"invalid setting {where}: {tenant!r} is not a tenant name "
                "(lowercase letters, digits and '-', at most 63 characters)"
            )
        for name, days in override.items():
            if name not in _MIN_DAYS:
                raise ConfigError(
                    f"invalid setting {where}: unknown setting {name!r}; use {', '.join(_MIN_DAYS)}"
                )
            if days < _MIN_DAYS[name]:
                raise ConfigError(
                    f"invalid setting {where}.{name}: must be at least {_MIN_DAYS[name]}, "
                    f"not {days}"
                )


def policy_for(settings: Settings, tenant: str) -> RetentionPolicy:
    """The policy of ``tenant``: the four ``*_retention_days``, then its override."""
    check_overrides(settings)
    override = settings.tenant_retention.get(tenant, {})
    values = {
        field_name: override.get(setting, getattr(settings, setting))
        for field_name, setting in _SETTING_OF_FIELD.items()
    }
    return RetentionPolicy(**values)


@dataclass
class RetentionReport:
    """What one run did (or, with ``dry_run``, would do).

    ``deleted`` holds the keys deleted (would-be deleted in a dry run), in the
    order they went; ``kept`` counts the partitions the policy keeps;
    ``skipped`` holds the keys under a retention area that are not partitions
    of the layout (left alone). ``skipped_clock`` is True when ``reference_ms``
    was before ``last_run_ms``, the reference time of the previous real run:
    then nothing at all was deleted.
    """

    reference_ms: int
    dry_run: bool
    last_run_ms: int | None = None
    skipped_clock: bool = False
    deleted: list[str] = field(default_factory=list)
    kept: int = 0
    skipped: list[str] = field(default_factory=list)


def apply_retention(
    store: ObjectStore,
    settings: Settings,
    *,
    now_ms: int | None = None,
    dry_run: bool = False,
    tenant: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> RetentionReport:
    """Delete what the retention policy no longer keeps, for every tenant or one.

    ``now_ms`` is the reference time (default: the clock). ``progress`` is
    called with each key as it is deleted (or, in a dry run, found to go).
    Raises ConfigError for a bad ``tenant_retention`` or ``tenant``,
    StoreUnavailable when the store fails (objects deleted by then stay
    deleted; the next run carries on).
    """
    check_overrides(settings)
    if tenant is not None and not TENANT_RE.match(tenant):
        raise ConfigError(f"{tenant!r} is not a tenant name")
    reference_ms = int(time.time() * 1000) if now_ms is None else now_ms
    report = RetentionReport(reference_ms=reference_ms, dry_run=dry_run)
    try:
        report.last_run_ms = _read_last_run(store)
        if report.last_run_ms is not None and reference_ms < report.last_run_ms:
            report.skipped_clock = True
            log.warning(
                "clock is behind the last retention run; nothing deleted",
                extra={"fields": {"now_ms": reference_ms, "last_run_ms": report.last_run_ms}},
            )
            if not dry_run:
                RETENTION_RUNS.labels("clock_behind").inc()
                RETENTION_LAST_FAILURE.set(time.time())
            return report
        if not dry_run:
            _write_last_run(store, reference_ms)
        _sweep(store, settings, tenant, report, progress)
    except Exception:
        if not dry_run:
            RETENTION_RUNS.labels("failure").inc()
            RETENTION_LAST_FAILURE.set(time.time())
        raise
    if not dry_run:
        RETENTION_RUNS.labels("success").inc()
        RETENTION_LAST_SUCCESS.set(time.time())
        log.info(
            "retention done",
            extra={"fields": {"deleted": len(report.deleted), "kept": report.kept}},
        )
    return report


def _sweep(
    store: ObjectStore,
    settings: Settings,
    tenant: str | None,
    report: RetentionReport,
    progress: Callable[[str], None] | None,
) -> None:
    today = datetime.fromtimestamp(report.reference_ms / 1000, UTC).date()
    policies: dict[str, RetentionPolicy] = {}
    for key, area in _candidates(store, tenant):
        partition = parse_key(key)
        if partition is None:
            report.skipped.append(key)
            continue
        policy = policies.get(partition.tenant)
        if policy is None:
            policy = policies[partition.tenant] = policy_for(settings, partition.tenant)
        if policy.keeps(area, partition.day, today):
            report.kept += 1
            continue
        if not report.dry_run:
            store.delete(key)
            RETENTION_DELETED.labels(area).inc()
        report.deleted.append(key)
        if progress is not None:
            progress(key)


def _candidates(store: ObjectStore, tenant: str | None) -> Iterator[tuple[str, str]]:
    """(key, area name) of every object in the retention areas, of one tenant or all."""
    for prefix in AREAS:
        listed = prefix if tenant is None else tenant_prefix(prefix, tenant)
        for info in store.list(listed):
            yield info.key, prefix.rstrip("/")


def _read_last_run(store: ObjectStore) -> int | None:
    try:
        data = store.get(STATE_KEY)
    except ObjectNotFound:
        return None
    try:
        value = json.loads(data)["last_run_ms"]
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"last_run_ms is {value!r}, not an integer")
    except (ValueError, KeyError, TypeError) as e:
        # Guessing could let a clock that jumped backwards delete: make a person look.
        raise GravixError(
            f"cannot read {STATE_KEY} in {store.url} ({e}); fix or delete it "
            "(retention then trusts the clock)"
        ) from e
    return value


def _write_last_run(store: ObjectStore, reference_ms: int) -> None:
    moment = datetime.fromtimestamp(reference_ms / 1000, UTC)
    state = {"last_run_ms": reference_ms, "last_run": moment.strftime("%Y-%m-%dT%H:%M:%SZ")}
    store.put(STATE_KEY, json.dumps(state).encode())

"""One evaluation of every enabled rule: measure, step each series, keep the
transitions and queue the notifications, all in one transaction per tenant.

**What is measured.** A rule's query goes through the query layer
(:class:`gravix.query.service.QueryService`): the minute tier plus the
pending facts not rolled up yet, each fact counted once.

- Ratios and latencies (``error_rate``, ``p95``...) are measured over the
  last ``window`` up to now, the current minute included as far as it has
  arrived: a share of what arrived is a share of the minute. A high-side
  rule on ``error_rate`` or ``client_error_rate`` is also judged on the
  requests counted since its previous evaluation (:func:`_recent`), which
  a spike late in a minute does not dilute.
- Counts (``requests``, ``errors``, ``throughput``...) and "went silent"
  need whole minutes: they end at the tenant's **watermark**, the newest
  minute every active service has moved past (:meth:`Evaluator.watermark`),
  measured from the facts each evaluation, never a fixed delay.

**Kill -9.** A tenant's new states, its transitions and the outbox rows
they cause are one SQLite transaction per evaluation (:mod:`gravix.alerts.db`):
an evaluation killed half-way leaves the tenant's rules as before or as
after, and the next evaluation goes on from there. A notification's content is fixed when
its row is written, so a retry after a kill sends the same bytes.
"""

from __future__ import annotations

import functools
import json
import logging
import sqlite3
import time
import urllib.parse
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Literal, NamedTuple

import msgspec
from prometheus_client import Counter, Histogram

from gravix.alerts import dispatch, silences
from gravix.alerts.batch import Batches, Need
from gravix.alerts.rules import COUNT_METRICS, AlertStore, StoredRule
from gravix.alerts.states import Change, Hold, Series, Verdict, policy_verdict, step, verdict
from gravix.config import Settings
from gravix.errors import BadRequest, GravixError
from gravix.explain.analysis import Question, answer
from gravix.query.events import read_events
from gravix.query.model import LATENCY_METRICS
from gravix.query.service import QueryService
from gravix.query.spec import Filter, Query
from gravix.schema import alerts as schema

log = logging.getLogger("gravix.alerts")

MINUTE_MS: Final = 60_000
# Services that sent nothing for this long no longer hold the watermark back
# (a "went silent" rule says so instead).
ACTIVE_MS: Final = 2 * MINUTE_MS
# How far back "went silent" looks for a series that used to send.
SILENT_LOOKBACK_MS: Final = 60 * MINUTE_MS
SAMPLES: Final = 5
DEPLOY_LOOKBACK_MS: Final = 7 * 86_400_000
# What changed, in a firing notification: the top three, over the incident and
# the minutes before it, for at most this many transitions an evaluation of a tenant.
CAUSES: Final = 3
CAUSE_LEAD_MS: Final = 5 * MINUTE_MS
CAUSE_ANALYSES: Final = 20
MAX_SETTLED: Final = 10_000
# Ratios of counts, and the count over requests each is: what arrived between
# two evaluations has a ratio of its own (_recent).
RATIO_COUNTS: Final = {"error_rate": "errors", "client_error_rate": "client_errors"}

EVALUATIONS = Counter("alert_evaluations_total", "Alert evaluations of a tenant.", ["result"])
TRANSITIONS = Counter("alert_transitions_total", "Changes of state of alert series.", ["to"])
EVAL_SECONDS = Histogram(
    "alert_evaluation_seconds",
    "Time one evaluation of every rule of every tenant took.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


@dataclass(frozen=True, slots=True)
class Reading:
    """What one evaluation found for one series of a rule."""

    series: dict[str, str]
    verdict: Verdict
    value: float | None = None
    requests: int | None = None
    threshold: float | None = None
    # Empty for a threshold rule's usual reading: made from its figures only when
    # shown (:func:`_said`), as most readings never are.
    summary: str = ""


class Counted(NamedTuple):
    """A series' bad and total requests in one minute, as counted at ``at_ms``."""

    minute_ms: int
    at_ms: int
    bad: int
    requests: int


@dataclass
class TenantReport:
    rules: int = 0
    errors: list[str] = field(default_factory=list)
    transitions: int = 0
    notifications: int = 0
    watermark_ms: int = 0


def series_key(series: dict[str, str]) -> str:
    """The series' key in ``alerts.db``: its dimension values as JSON, sorted."""
    return _key(tuple(series.items()))


# An evaluation keys about 15,000 series of a few thousand distinct ones (a
# service's endpoints, under many rules): each is written once, not each time.
@functools.lru_cache(maxsize=65_536)
def _key(items: tuple[tuple[str, str], ...]) -> str:
    return json.dumps(dict(items), sort_keys=True, separators=(",", ":"))


class Evaluator:
    """Evaluates every tenant's rules; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        store: AlertStore,
        queries: QueryService,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings, self.store, self.queries, self.clock = settings, store, queries, clock
        # (tenant, rule) -> (the watermark it was measured at, its readings)
        self._settled: dict[tuple[str, bytes], tuple[int, list[Reading]]] = {}
        # (tenant, rule) -> series -> its current minute's counts at the rule's last
        # evaluation, to measure what arrived since (_recent).
        self._counts: dict[tuple[str, bytes], dict[str, Counted]] = {}
        # What this evaluation's rules read, asked together (gravix.alerts.batch).
        self._batches = Batches()
        # "What changed" analyses run by this evaluation of a tenant (_causes).
        self._analyses = 0

    # --- one evaluation ---------------------------------------------------------
    def run_once(self) -> dict[str, TenantReport]:
        started = time.monotonic()
        by_tenant: dict[str, list[StoredRule]] = defaultdict(list)
        for stored in self.store.rules():
            if stored.rule.enabled:
                by_tenant[stored.tenant].append(stored)
        reports = {}
        for tenant, rules in sorted(by_tenant.items()):
            t0 = time.monotonic()
            report = self.evaluate_tenant(tenant, rules)
            reports[tenant] = report
            self._record(tenant, report, int((time.monotonic() - t0) * 1000))
            EVALUATIONS.labels("error" if report.errors else "ok").inc()
        EVAL_SECONDS.observe(time.monotonic() - started)
        return reports

    def evaluate_tenant(self, tenant: str, rules: Iterable[StoredRule]) -> TenantReport:
        # Every rule of the tenant reads the same pending facts: one scan, and
        # answers of one moment (QueryService.one_moment).
        with self.queries.one_moment():
            return self._evaluate_tenant(tenant, rules)

    def _evaluate_tenant(self, tenant: str, rules: Iterable[StoredRule]) -> TenantReport:
        now_ms = int(self.clock() * 1000)
        report = TenantReport()
        cache: dict[bytes, dict[str, Any]] = {}
        try:
            report.watermark_ms = self.watermark(tenant, now_ms, cache)
        except Exception as e:  # the query layer is down: every rule errs below
            log.warning("alert watermark of %s failed: %s", tenant, e)
            report.watermark_ms = now_ms // MINUTE_MS * MINUTE_MS
        rules = list(rules)
        self._batches = Batches()
        self._analyses = 0
        for stored in rules:
            for need in self.needs(tenant, stored.rule, now_ms, report.watermark_ms):
                self._batches.add(need)
        measured = []
        for stored in rules:
            report.rules += 1
            try:
                readings = self.measure(tenant, stored.rule, now_ms, report.watermark_ms, cache)
                error = None
            except Exception as e:
                readings, error = [], _reason(e)
                report.errors.append(f"{stored.rule.name}: {error}")
                log.warning(
                    "alert rule failed",
                    extra={"fields": {"tenant": tenant, "rule": stored.id, "error": error}},
                )
            measured.append((stored, readings, error))
        # One transaction for the tenant: one fsync per evaluation, and a kill
        # leaves every rule as before or as after (module docstring).
        with self.store.db.writing() as conn:
            # The tenant's states read by one statement and written by three, not
            # two per series (15,000 series: bench/README.md, Alerts).
            states = _states(conn, tenant)
            writes = StateWrites(tenant, now_ms)
            for stored, readings, error in measured:
                self._apply(conn, tenant, stored, readings, error, now_ms, report,
                            states.get(stored.id, {}), writes)  # fmt: skip
            writes.write(conn)
        return report

    # --- measuring ----------------------------------------------------------------
    def _query(self, tenant: str, query: Query, now_ms: int, cache: dict[bytes, Any]) -> Any:
        key = msgspec.json.encode(query)
        if key not in cache:
            cache[key] = self.queries.run(tenant, query, now_ms)
        return cache[key]

    def rows(self, tenant: str, need: Need, now_ms: int, cache: dict[bytes, Any]) -> list[Any]:
        """``need``'s rows (its groups, then its metrics), read through its batch's query."""
        query = self._batches.query(need)
        try:
            result = self._query(tenant, query, now_ms, cache)
        except BadRequest:
            # A query refused for one rule's sake: that rule errs alone, not those
            # it shared the query with.
            alone = Batches().query(need)
            if alone == query:
                raise
            query, result = alone, self._query(tenant, alone, now_ms, cache)
        return self._batches.project(need, query, result["rows"])

    def _tail(
        self, tenant: str, tail: Need, now_ms: int, cache: dict[bytes, Any]
    ) -> dict[str, dict[int, tuple[int, int]]]:
        """Per series, (bad, requests) per minute of ``tail``; read once an evaluation
        for the rules that share it (a rule's windows and thresholds do not change it)."""
        key = ("tail", tail.from_ms, tail.to_ms, tail.dims, tail.metrics,
               msgspec.json.encode(list(tail.filters)))  # fmt: skip
        found: dict[str, dict[int, tuple[int, int]]] | None = self._batches.memo.get(key)
        if found is None:
            found = defaultdict(dict)
            dims = len(tail.dims)
            for row in self.rows(tenant, tail, now_ms, cache):
                names = {d: str(v) for d, v in zip(tail.dims, row[1 : dims + 1], strict=True)}
                found[series_key(names)][int(row[0])] = (int(row[-2] or 0), int(row[-1] or 0))
            self._batches.memo[key] = found
        return found

    def needs(self, tenant: str, rule: schema.Rule, now_ms: int, watermark_ms: int) -> list[Need]:
        """What measuring ``rule`` now will read (nothing if it is kept from before)."""
        if self._kept(tenant, rule, watermark_ms) is not None:
            return []
        if isinstance(rule, schema.Silent):
            return list(_silent_needs(rule, now_ms, watermark_ms))
        if isinstance(rule, schema.Threshold):
            tail = _tail_need(rule, now_ms)
            return [_threshold_need(rule, now_ms, watermark_ms), *([tail] if tail else [])]
        from gravix.alerts import slo

        return slo.needs(rule, watermark_ms)

    def _kept(self, tenant: str, rule: schema.Rule, watermark_ms: int) -> list[Reading] | None:
        """The readings of a rule measured at this watermark already, if they still hold:
        SLO windows and counts end at the watermark, so until it moves what they
        measure cannot change; they are measured once a minute, not every 10 s."""
        if not _settles(rule):
            return None
        kept = self._settled.get((tenant, msgspec.json.encode(rule)))
        return kept[1] if kept is not None and kept[0] == watermark_ms else None

    def watermark(self, tenant: str, now_ms: int, cache: dict[bytes, Any] | None = None) -> int:
        """The newest minute start W such that every minute before it is complete:
        each service that sent facts in the last :data:`ACTIVE_MS` has sent facts
        of minute W or later. Facts of one sender arrive about in time order, so
        a sender's minute is over once a later one has begun."""
        current = now_ms // MINUTE_MS * MINUTE_MS
        query = Query(metrics=["requests"], dimensions=["service"],
                      from_=current - 5 * MINUTE_MS, to=now_ms, grain="1m")  # fmt: skip
        result = self._query(tenant, query, now_ms, {} if cache is None else cache)
        newest: dict[str, int] = {}
        for minute, service, requests in result["rows"]:
            if requests:
                newest[service] = max(newest.get(service, 0), minute)
        active = [m for m in newest.values() if m >= current - ACTIVE_MS + MINUTE_MS]
        return min(active, default=current)

    def measure(
        self,
        tenant: str,
        rule: schema.Rule,
        now_ms: int,
        watermark_ms: int,
        cache: dict[bytes, Any],
    ) -> list[Reading]:
        if isinstance(rule, schema.Silent):
            return self._silent(tenant, rule, now_ms, watermark_ms, cache)
        kept = self._kept(tenant, rule, watermark_ms)
        if kept is not None:
            return kept
        if isinstance(rule, schema.Threshold):
            readings = self._threshold(tenant, rule, now_ms, watermark_ms, cache)
        else:
            from gravix.alerts import slo

            readings = slo.measure(self, tenant, rule, now_ms, watermark_ms, cache)
        if _settles(rule):
            if len(self._settled) > MAX_SETTLED:
                self._settled.clear()
            self._settled[(tenant, msgspec.json.encode(rule))] = (watermark_ms, readings)
        return readings

    def _threshold(
        self,
        tenant: str,
        rule: schema.Threshold,
        now_ms: int,
        watermark_ms: int,
        cache: dict[bytes, Any],
    ) -> list[Reading]:
        need = _threshold_need(rule, now_ms, watermark_ms)
        dims = len(rule.group_by)
        min_requests = self._min_requests(rule)
        current = now_ms // MINUTE_MS * MINUTE_MS
        counts_key = (tenant, msgspec.json.encode(rule))
        before = self._counts.pop(counts_key, {})
        counted: dict[str, Counted] = {}
        tail = _tail_need(rule, now_ms)
        minutes = self._tail(tenant, tail, now_ms, cache) if tail is not None else {}
        readings = []
        for row in self.rows(tenant, need, now_ms, cache):
            series = {d: str(v) for d, v in zip(rule.group_by, row[:dims], strict=True)}
            value = row[dims]
            requests = int(row[dims + 1] or 0)
            summary = ""
            if tail is not None:  # a ratio of counts: also what arrived lately
                key = series_key(series)
                now = Counted(current, now_ms, *minutes[key].get(current, (0, 0)))
                counted[key] = now
                recent = _recent(rule, before.get(key), minutes[key], now, max(min_requests, 1))
                # The worse of the two that count at least min_requests requests.
                if recent is not None and (
                    value is None or requests < min_requests or recent[0] > float(value)
                ):
                    value, requests, summary = recent
            found = verdict(
                None if value is None else float(value),
                requests,
                op=rule.op,
                threshold=rule.threshold,
                recover_threshold=rule.recover_threshold,
                min_requests=min_requests,
                firing=False,
            )
            readings.append(
                Reading(series, found, None if value is None else float(value), requests,
                        rule.threshold, summary)
            )  # fmt: skip
        if counted:
            if len(self._counts) > MAX_SETTLED:
                self._counts.clear()
            self._counts[counts_key] = counted
        return readings

    def _min_requests(self, rule: schema.Threshold) -> int:
        if rule.metric in COUNT_METRICS:
            return 0  # a count is its own evidence
        return self.settings.alert_min_requests if rule.min_requests is None else rule.min_requests

    def _silent(
        self,
        tenant: str,
        rule: schema.Silent,
        now_ms: int,
        watermark_ms: int,
        cache: dict[bytes, Any],
    ) -> list[Reading]:
        after = schema.duration_ms(rule.after, "after")

        def seen(need: Need) -> dict[str, tuple[dict[str, str], int]]:
            found = {}
            for row in self.rows(tenant, need, now_ms, cache):
                series = {d: str(v) for d, v in zip(rule.group_by, row[:-1], strict=True)}
                found[series_key(series)] = (series, int(row[-1] or 0))
            return found

        before, recent = (seen(n) for n in _silent_needs(rule, now_ms, watermark_ms))
        readings = []
        for key, (series, n) in before.items():
            if key not in recent:
                said = f"no facts for {after // MINUTE_MS} min (had {n:,} before)"
                readings.append(Reading(series, "bad", 0, n, None, said))
        for series, n in recent.values():
            readings.append(Reading(series, "good", n, n, None, f"{n:,} facts lately"))
        return readings

    # --- stepping and keeping -------------------------------------------------------
    def _hold(self, rule: schema.Rule) -> Hold:
        repeat = int(self.settings.alert_repeat_interval_seconds * 1000)
        if isinstance(rule, schema.Threshold):
            return Hold(
                schema.duration_ms(rule.for_, "for", zero=True),
                schema.duration_ms(rule.keep_firing_for, "keep_firing_for", zero=True),
                repeat,
            )
        return Hold(repeat_ms=repeat)

    def _apply(
        self,
        conn: sqlite3.Connection,
        tenant: str,
        stored: StoredRule,
        readings: list[Reading],
        error: str | None,
        now_ms: int,
        report: TenantReport,
        states: dict[str, tuple[Any, ...]],
        writes: StateWrites,
    ) -> None:
        """Step each series of ``stored`` from its ``states`` (its rows in ``alerts.db``,
        :func:`_states`), keep its transitions and queue its notifications; the new
        states go to ``writes``."""
        rule = stored.rule
        hold = self._hold(rule)
        no_data = rule.no_data if isinstance(rule, schema.Threshold) else "ok"
        found = {series_key(r.series): r for r in readings}
        notes: list[tuple[str, Change, Reading | None, int]] = []
        for key in sorted(set(found) | set(states)):
            held = states.get(key)
            prev = Series(*held[:5]) if held is not None else Series(since_ms=now_ms)
            reading = found.get(key)
            if error is not None:
                raw: Verdict = "error"
            elif reading is None:
                raw = "nodata"
            else:
                raw = reading.verdict
                if isinstance(rule, schema.Threshold) and prev.state in (
                    "firing",
                    "recovering",
                ):
                    raw = self._still(rule, reading)
            change = step(prev, policy_verdict(raw, no_data, rule.on_error), now_ms, hold)
            transition_id = None
            if change.transition is not None:
                transition_id = _keep_transition(
                    conn, tenant, stored, key, change, reading, error, now_ms
                )
                report.transitions += 1
                TRANSITIONS.labels(change.series.state).inc()
            same = held is not None and change.series == prev
            writes.add(stored.id, key, change.series, reading, transition_id, same=same)
            if change.notify is not None:
                last = transition_id or (held[5] if held is not None else None) or 0
                notes.append((key, change, reading, last))
        if notes:
            report.notifications += self._notify(conn, tenant, stored, notes, error, now_ms)

    def _still(self, rule: schema.Threshold, reading: Reading) -> Verdict:
        """A firing series' verdict: bad until it crosses ``recover_threshold``."""
        return verdict(
            reading.value,
            reading.requests or 0,
            op=rule.op,
            threshold=rule.threshold,
            recover_threshold=rule.recover_threshold,
            min_requests=self._min_requests(rule),
            firing=True,
        )

    def _notify(
        self,
        conn: sqlite3.Connection,
        tenant: str,
        stored: StoredRule,
        notes: list[tuple[str, Change, Reading | None, int]],
        error: str | None,
        now_ms: int,
    ) -> int:
        """Queue one notification per (status, service, repeat) of this rule's changes,
        for each of its channels."""
        rule = stored.rule
        groups: dict[tuple[str, str | None, int], list[schema.AlertEntry]] = defaultdict(list)
        for key, change, reading, transition_id in notes:
            series = json.loads(key)
            entry = self._entry(tenant, stored, series, change, reading, error, transition_id,
                                now_ms)  # fmt: skip
            status = "resolved" if change.notify == "resolved" else "firing"
            service = series.get("service") or _filtered_service(rule)
            groups[(status, service, change.series.repeats)].append(entry)
        active = silences.active(self.store, tenant, now_ms)
        sent = 0
        for (status, service, repeat), entries in sorted(
            groups.items(), key=lambda g: (g[0][0], g[0][1] or "", g[0][2])
        ):
            first = min(e.id for e in entries)
            key = f"{tenant}/{stored.id}/{first}/{status}" + (f"/r{repeat}" if repeat else "")
            note = schema.Notification(
                idempotency_key=key, tenant=tenant, status=status,  # type: ignore[arg-type]
                rule=rule.name, service=service, repeat=repeat, alerts=entries,
            )  # fmt: skip
            silenced = all(silences.covers(active, rule.name, e.series, now_ms) for e in entries)
            for channel in rule.channels:
                dispatch.enqueue(conn, tenant, channel, note, now_ms,
                                 status="silenced" if silenced else "pending")  # fmt: skip
                sent += 1
        return sent

    def _entry(
        self,
        tenant: str,
        stored: StoredRule,
        series: dict[str, str],
        change: Change,
        reading: Reading | None,
        error: str | None,
        transition_id: int,
        now_ms: int,
    ) -> schema.AlertEntry:
        rule = stored.rule
        state = change.series.state
        previous = change.transition[0] if change.transition else state
        since = change.series.incident_ms or change.series.since_ms
        threshold = isinstance(rule, schema.Threshold)
        summary = _said(rule, reading) if reading is not None else ""
        if error is not None:
            summary = f"evaluation failed: {error}"
        elif reading is None:
            summary = "no data in the window"
        entry = schema.AlertEntry(
            id=f"t{transition_id}",
            rule=rule.name,
            rule_id=stored.id,
            kind=_kind(rule),
            severity=rule.severity,
            state=state,
            previous_state=previous,
            series=series,
            at=now_ms,
            since=since,
            summary=summary,
            metric=rule.metric if threshold else None,  # type: ignore[union-attr]
            value=reading.value if reading else None,
            threshold=reading.threshold if reading else None,
            op=rule.op if threshold else None,  # type: ignore[union-attr]
            requests=reading.requests if reading else None,
            window=rule.window if threshold else None,  # type: ignore[union-attr]
            url=self._url(series, rule, since, now_ms),
        )
        service = series.get("service") or _filtered_service(rule)
        if change.notify != "resolved" and state == "firing":
            entry.deploy = self._deploy(tenant, service, now_ms)
            entry.samples = self._samples(tenant, rule, series, since, now_ms)
            if change.notify == "firing":  # the transition, not its repeats
                entry.causes = self._causes(tenant, rule, series, since, now_ms)
        return entry

    def _causes(
        self, tenant: str, rule: schema.Rule, series: dict[str, str], since: int, now_ms: int
    ) -> list[schema.Cause]:
        """What changed over the incident, the top :data:`CAUSES` (docs/explain.md):
        the rule's selection and series from a few minutes before the incident
        began, against the analysis' default baseline. At most
        :data:`CAUSE_ANALYSES` an evaluation of a tenant; a failure leaves them out."""
        measure = _measure(rule)
        if measure is None or self._analyses >= CAUSE_ANALYSES:
            return []
        self._analyses += 1
        filters = _filters(rule) + [
            Filter(d, [v], "eq") for d, v in series.items() if d != "status"
        ]
        question = Question(from_=min(since, now_ms) - CAUSE_LEAD_MS, to=now_ms,
                            filters=filters, measure=measure, limit=CAUSES)  # fmt: skip
        try:
            found = answer(self.queries, tenant, question, now_ms)
        except Exception as e:
            log.warning("what changed of an alert unreadable: %s", _reason(e))
            return []
        return [
            schema.Cause(f["text"], f["element"], f["share"]) for f in found["findings"][:CAUSES]
        ]

    def _url(self, series: dict[str, str], rule: schema.Rule, since: int, now_ms: int) -> str:
        base = self.settings.public_url.rstrip("/") or (
            f"http://{self.settings.host}:{self.settings.port}"
        )
        params = {"from": str(since - 30 * MINUTE_MS), "to": str(now_ms + 5 * MINUTE_MS)}
        service = series.get("service") or _filtered_service(rule)
        if service:
            params["service"] = service
        if service and "path" in series and "method" in series:
            params |= {"view": "endpoint", "method": series["method"], "path": series["path"]}
        return f"{base}/?{urllib.parse.urlencode(params)}"

    def _deploy(self, tenant: str, service: str | None, now_ms: int) -> schema.Deploy | None:
        if service is None:
            return None
        try:
            events = read_events(
                self.queries.store, tenant, now_ms - DEPLOY_LOOKBACK_MS, now_ms + 1, service
            )
        except Exception as e:
            log.warning("deploy markers of %s unreadable: %s", tenant, e)
            return None
        deploys = [e for e in events if e["kind"] == "deploy"]
        if not deploys:
            return None
        last = max(deploys, key=lambda e: e["timestamp"])
        return schema.Deploy(last["service"], last["version"], last["timestamp"], last["message"])

    def _samples(
        self, tenant: str, rule: schema.Rule, series: dict[str, str], since: int, now_ms: int
    ) -> list[schema.Sample]:
        """The most frequent failing (status, method, path) since the incident began."""
        floor = (
            400 if getattr(rule, "metric", "") in ("client_errors", "client_error_rate") else 500
        )
        filters = _filters(rule) + [
            Filter(d, [v], "eq") for d, v in series.items() if d != "status"
        ]
        query = Query(metrics=["requests"], dimensions=["status", "method", "path"],
                      filters=filters, from_=min(since, now_ms - 5 * MINUTE_MS), to=now_ms,
                      grain="all", order=[], limit=None)  # fmt: skip
        try:
            rows = self.queries.run(tenant, query, now_ms)["rows"]
        except (GravixError, Exception) as e:
            log.warning("failing requests of an alert unreadable: %s", e)
            return []
        failing = sorted((r for r in rows if r[0] >= floor), key=lambda r: -r[3])
        return [schema.Sample(int(s), str(m), str(p), int(n)) for s, m, p, n in failing[:SAMPLES]]

    def _record(self, tenant: str, report: TenantReport, duration_ms: int) -> None:
        with self.store.db.writing() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO evaluations (tenant, at_ms, duration_ms, watermark_ms, "
                "rules, errors, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (tenant, int(self.clock() * 1000), duration_ms, report.watermark_ms,
                 report.rules, len(report.errors), "\n".join(report.errors[:20])),
            )  # fmt: skip


# --- helpers -------------------------------------------------------------------------
def _reason(e: Exception) -> str:
    if isinstance(e, GravixError):
        return e.message
    return f"{type(e).__name__}: {e}"[:500]


def _measure(rule: schema.Rule) -> Literal["errors", "client_errors", "latency"] | None:
    """The measure of "what changed" that explains ``rule`` firing (None: nothing
    to explain, as for a series that went silent)."""
    if isinstance(rule, schema.Silent):
        return None
    if isinstance(rule, schema.Slo):
        return "latency" if rule.objective == "latency" else "errors"
    if rule.metric in ("client_errors", "client_error_rate"):
        return "client_errors"
    return "latency" if rule.metric in LATENCY_METRICS else "errors"


def _kind(rule: schema.Rule) -> str:
    return str(rule.__struct_config__.tag)


def _settles(rule: schema.Rule) -> bool:
    """Whether what ``rule`` measures ends at the watermark (see :meth:`Evaluator._kept`)."""
    return isinstance(rule, schema.Slo) or (
        isinstance(rule, schema.Threshold) and rule.metric in COUNT_METRICS
    )


def _threshold_need(rule: schema.Threshold, now_ms: int, watermark_ms: int) -> Need:
    """Ratios and latencies up to now; counts up to the watermark (module docstring)."""
    window = schema.duration_ms(rule.window, "window")
    end = watermark_ms if rule.metric in COUNT_METRICS else now_ms
    metrics = ("requests", "requests") if rule.metric == "requests" else (rule.metric, "requests")
    return Need(end - window, end, tuple(rule.group_by), tuple(_filters(rule)), metrics)


def _tail_need(rule: schema.Threshold, now_ms: int) -> Need | None:
    """A high-side ratio of counts: its numerator and requests in the minute before
    the current one and in the current one so far, a row each (:func:`_recent`)."""
    if rule.metric not in RATIO_COUNTS or rule.op not in (">", ">="):
        return None
    start = now_ms // MINUTE_MS * MINUTE_MS - MINUTE_MS
    metrics = (RATIO_COUNTS[rule.metric], "requests")
    return Need(start, now_ms, tuple(rule.group_by), tuple(_filters(rule)), metrics, grain="1m")


def _recent(
    rule: schema.Threshold,
    before: Counted | None,
    minutes: dict[int, tuple[int, int]],
    now: Counted,
    min_requests: int,
) -> tuple[float, int, str] | None:
    """The ratio of what was counted since the previous evaluation, if at least
    ``min_requests`` requests were: (value, requests, summary).

    A spike that starts late in a minute is diluted by the minute's healthy
    requests before it; the counts added since the last evaluation (10 s
    earlier) are not. ``minutes``: the series' (bad, requests) per minute start,
    of the minute before the current one and of the current one; ``before``
    and ``now``: the current minute's counts at the previous evaluation and now.
    """
    if before is None or now.at_ms - before.at_ms >= MINUTE_MS:
        return None  # a minute or more: the window itself holds what arrived since
    if before.minute_ms == now.minute_ms:
        bad, requests = now.bad - before.bad, now.requests - before.requests
    elif before.minute_ms == now.minute_ms - MINUTE_MS:  # the rest of that minute, then this
        done_bad, done_requests = minutes.get(before.minute_ms, (before.bad, before.requests))
        bad = done_bad - before.bad + now.bad
        requests = done_requests - before.requests + now.requests
    else:
        return None
    if requests < min_requests or bad < 0:
        return None
    seconds = max(1, round((now.at_ms - before.at_ms) / 1000))
    value = bad / requests
    said = (
        f"{rule.metric} {value:.4g} {rule.op} {rule.threshold:g} over the last {seconds} s "
        f"({requests:,} requests)"
    )
    return value, requests, said


def _silent_needs(rule: schema.Silent, now_ms: int, watermark_ms: int) -> tuple[Need, Need]:
    """The facts of each series in the hour before ``after``, and within it."""
    after = schema.duration_ms(rule.after, "after")
    end = max(watermark_ms, now_ms // MINUTE_MS * MINUTE_MS)
    dims, filters = tuple(rule.group_by), tuple(_filters(rule))
    return (
        Need(end - after - SILENT_LOOKBACK_MS, end - after, dims, filters, ("requests",)),
        Need(end - after, end, dims, filters, ("requests",)),
    )


def _filters(rule: schema.Rule) -> list[Filter]:
    return [Filter(f.dimension, list(f.values), f.op) for f in rule.filters]


def _filtered_service(rule: schema.Rule) -> str | None:
    """The one service a rule's filters name, if they name exactly one."""
    for f in rule.filters:
        if f.dimension == "service" and f.op in ("eq", "in") and len(f.values) == 1:
            return str(f.values[0])
    return None


def _said(rule: schema.Rule, reading: Reading) -> str:
    """The reading's summary (a threshold rule's made from its figures)."""
    if reading.summary or not isinstance(rule, schema.Threshold):
        return reading.summary
    return _summary(rule, reading.value, reading.requests or 0)


def _summary(rule: schema.Threshold, value: Any, requests: int) -> str:
    if value is None:
        return f"{rule.metric}: no value ({requests:,} requests)"
    return (
        f"{rule.metric} {float(value):.4g} {rule.op} {rule.threshold:g} over {rule.window} "
        f"({requests:,} requests)"
    )


def _states(conn: sqlite3.Connection, tenant: str) -> dict[int, dict[str, tuple[Any, ...]]]:
    """Every series state of ``tenant`` by rule id and series key: its :class:`Series`'
    fields, then its last transition's id (or None)."""
    found: dict[int, dict[str, tuple[Any, ...]]] = defaultdict(dict)
    for row in conn.execute(
        "SELECT rule_id, series, state, since_ms, incident_ms, notified_ms, repeats, "
        "last_transition FROM states WHERE tenant = ?",
        (tenant,),
    ):
        found[row[0]][row[1]] = row[2:]
    return found


class StateWrites:
    """The states an evaluation writes, written together at its end (:meth:`write`)."""

    def __init__(self, tenant: str, now_ms: int) -> None:
        self.tenant, self.now_ms = tenant, now_ms
        self.gone: list[tuple[str, int, str]] = []
        self.same: list[tuple[Any, ...]] = []
        self.changed: list[tuple[Any, ...]] = []

    def add(
        self,
        rule_id: int,
        key: str,
        series: Series,
        reading: Reading | None,
        transition_id: int | None,
        *,
        same: bool,
    ) -> None:
        """``same``: the series' row holds ``series`` already (only its value and time
        change). A normal series without data is dropped."""
        value = reading.value if reading is not None else None
        if series.state == "normal" and reading is None:
            self.gone.append((self.tenant, rule_id, key))
        elif same:
            self.same.append((value, self.now_ms, self.tenant, rule_id, key))
        else:
            self.changed.append((self.tenant, rule_id, key, series.state, series.since_ms,
                                 series.incident_ms, value, self.now_ms, series.notified_ms,
                                 series.repeats, transition_id))  # fmt: skip

    def write(self, conn: sqlite3.Connection) -> None:
        conn.executemany(
            "DELETE FROM states WHERE tenant = ? AND rule_id = ? AND series = ?", self.gone
        )
        conn.executemany(
            "UPDATE states SET value = ?, evaluated_ms = ? WHERE tenant = ? AND rule_id = ? "
            "AND series = ?",
            self.same,
        )
        conn.executemany(
            "INSERT INTO states (tenant, rule_id, series, state, since_ms, incident_ms, value, "
            "evaluated_ms, notified_ms, repeats, last_transition) VALUES (?, ?, ?, ?, ?, ?, ?, "
            "?, ?, ?, ?) ON CONFLICT (tenant, rule_id, series) DO UPDATE SET "
            "state = excluded.state, since_ms = excluded.since_ms, "
            "incident_ms = excluded.incident_ms, value = excluded.value, "
            "evaluated_ms = excluded.evaluated_ms, notified_ms = excluded.notified_ms, "
            "repeats = excluded.repeats, "
            "last_transition = coalesce(excluded.last_transition, states.last_transition)",
            self.changed,
        )


def _keep_transition(
    conn: sqlite3.Connection,
    tenant: str,
    stored: StoredRule,
    key: str,
    change: Change,
    reading: Reading | None,
    error: str | None,
    now_ms: int,
) -> int:
    assert change.transition is not None
    before, after = change.transition
    detail = error or (_said(stored.rule, reading) if reading else "no data")
    cur = conn.execute(
        "INSERT INTO transitions (tenant, rule_id, rule_name, series, from_state, to_state, "
        "at_ms, value, threshold, requests, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (tenant, stored.id, stored.rule.name, key, before, after, now_ms,
         reading.value if reading else None, reading.threshold if reading else None,
         reading.requests if reading else None, detail),
    )  # fmt: skip
    return int(cur.lastrowid or 0)

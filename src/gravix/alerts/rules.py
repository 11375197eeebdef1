"""Rules, channels and silences of a tenant: checked against the query model, kept
in ``alerts.db`` (:mod:`gravix.alerts.db`).

Every refusal is a :class:`gravix.errors.BadRequest` naming the field, as
``rules[2].window`` in a file or ``window`` in an API body. What a rule may
name is what the query API accepts: its query is planned with
:func:`gravix.query.spec.plan` when it is saved, so a rule that is saved can
be evaluated.
"""

from __future__ import annotations

import math
import re
import sqlite3
import time
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from gravix.alerts.db import alerts_db
from gravix.config import Settings
from gravix.errors import BadRequest, GravixError, NotFound
from gravix.metadata import MetadataDB
from gravix.query.model import DIMENSIONS, LATENCY_METRICS, METRICS
from gravix.query.spec import MAX_SLOW_MS, MAX_TIME_MS, Filter, Query, plan
from gravix.schema import alerts as schema
from gravix.schema.problems import json_problem, struct_problem

# Metrics that are counts over the window: evaluated on complete minutes only.
COUNT_METRICS: Final = frozenset(name for name, m in METRICS.items() if m.kind in ("sum", "rate"))
MAX_INT: Final = 2**53  # exact in JSON and in every reader; SQLite holds 2**63
MAX_WINDOW_MS: Final = 86_400_000
MAX_HOLD_MS: Final = 86_400_000  # for / keep_firing_for
MAX_SILENT_MS: Final = 7 * 86_400_000
_NAME: Final = re.compile(r"[^\x00-\x1f\x7f]{1,200}")
_CHANNEL_NAME: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_EMAIL: Final = re.compile(r"[^@\s<>,;\"]{1,64}@[A-Za-z0-9.-]{1,253}")
_URL: Final = re.compile(r"https?://[^\s/?#]+[^\s]*")
_HHMM: Final = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")


class Conflict(GravixError):
    status = 409
    code = "conflict"


class ReadOnly(GravixError):
    status = 409
    code = "managed_by_file"


def _at(prefix: str, field: str | None) -> str | None:
    if not prefix:
        return field
    return f"{prefix}.{field}" if field else prefix


def decode(data: bytes, kind: Any, what: str) -> Any:
    """``data`` (JSON) as ``kind``; BadRequest naming the field otherwise."""
    try:
        raw = msgspec.json.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as e:
        raise BadRequest(f"the body is not valid JSON: {json_problem(e, data)}") from None
    return convert(raw, kind, what)


def convert(raw: Any, kind: Any, what: str, path: str = "") -> Any:
    """``raw`` (decoded JSON or YAML) as ``kind``: a struct, a tagged union of them,
    or a :class:`RuleFile` (each of its items checked on its own, so that the
    field named is ``rules[2].window``)."""
    _check_numbers(raw, path)
    if kind is schema.RuleFile and isinstance(raw, dict):
        items = {"rules": schema.Rule, "channels": schema.Channel,
                 "maintenance": schema.Maintenance}  # fmt: skip
        for key, item_kind in items.items():
            if isinstance(raw.get(key), list):
                for i, item in enumerate(raw[key]):
                    convert(item, item_kind, key.rstrip("s"), f"{key}[{i}]")
    try:
        return msgspec.convert(raw, kind)
    except msgspec.ValidationError:
        pass
    struct = kind
    members = getattr(kind, "__args__", None)
    if members:  # a tagged union: pick the member its "kind" names
        tags = {m.__struct_config__.tag: m for m in members}
        if not isinstance(raw, dict):
            raise BadRequest(f"{path or 'the body'} must be a JSON object", field=path or None)
        tag = raw.get("kind")
        if not isinstance(tag, str) or tag not in tags:  # {"kind": {}} is not hashable
            known = ", ".join(sorted(tags))
            raise BadRequest(f"a {what} needs a kind: one of {known}", field=_at(path, "kind"))
        struct = tags[tag]
        raw = {k: v for k, v in raw.items() if k != "kind"}
    message, field = struct_problem(raw, struct, path)
    raise BadRequest(message, field=field or None)


def _check_numbers(raw: Any, path: str) -> None:
    """Refuse integers SQLite cannot hold and numbers that are not finite, anywhere
    in ``raw`` (a stored rule must stay readable)."""
    if isinstance(raw, bool):
        return
    if isinstance(raw, int) and not -MAX_INT <= raw <= MAX_INT:
        raise BadRequest(f"{raw} is out of range", field=path or None)
    if isinstance(raw, float) and not math.isfinite(raw):
        raise BadRequest("numbers must be finite", field=path or None)
    if isinstance(raw, dict):
        for key, value in raw.items():
            _check_numbers(value, _at(path, str(key)) or "")
    elif isinstance(raw, list):
        for i, value in enumerate(raw):
            _check_numbers(value, f"{path}[{i}]")


# --- checks --------------------------------------------------------------------------
def check_rule(rule: schema.Rule, channels: set[str] | None, at: str = "") -> None:
    """Refuse a rule the evaluator could not run; ``channels``: the tenant's channel
    names (None: not checked)."""
    if not _NAME.fullmatch(rule.name):
        raise BadRequest(
            "a name is 1 to 200 characters, no control characters", field=_at(at, "name")
        )
    if len(rule.description) > schema.MAX_DESCRIPTION:
        raise BadRequest(
            f"a description is at most {schema.MAX_DESCRIPTION} characters",
            field=_at(at, "description"),
        )
    for i, name in enumerate(rule.channels):
        if channels is not None and name not in channels:
            raise BadRequest(
                f"no channel named {name!r}; create it first", field=_at(at, f"channels[{i}]")
            )
    for i, dim in enumerate(rule.group_by):
        if dim not in DIMENSIONS:
            raise BadRequest(
                f"unknown dimension {dim!r}; known: {', '.join(DIMENSIONS)}",
                field=_at(at, f"group_by[{i}]"),
            )
    if isinstance(rule, schema.Threshold):
        _check_threshold(rule, at)
    elif isinstance(rule, schema.Silent):
        after = schema.duration_ms(rule.after, _at(at, "after") or "after")
        if not 60_000 <= after <= MAX_SILENT_MS:
            raise BadRequest("after is between 1m and 7d", field=_at(at, "after"))
        _plan(rule, ["requests"], "5m", at)
    else:
        _check_slo(rule, at)


def _check_threshold(rule: schema.Threshold, at: str) -> None:
    if rule.metric not in METRICS:
        raise BadRequest(
            f"unknown metric {rule.metric!r}; known: {', '.join(METRICS)}",
            field=_at(at, "metric"),
        )
    if rule.metric == "slow_requests":
        raise BadRequest(
            "slow_requests needs a latency: use an SLO rule with objective latency and "
            "latency_ms, or a percentile (p95) threshold",
            field=_at(at, "metric"),
        )
    window = schema.duration_ms(rule.window, _at(at, "window") or "window")
    if not 60_000 <= window <= MAX_WINDOW_MS:
        raise BadRequest("window is between 1m and 1d", field=_at(at, "window"))
    for name in ("for_", "keep_firing_for"):
        shown = "for" if name == "for_" else name
        hold = schema.duration_ms(getattr(rule, name), _at(at, shown) or shown, zero=True)
        if hold > MAX_HOLD_MS:
            raise BadRequest(f"{shown} is at most 1d", field=_at(at, shown))
    if rule.min_requests is not None and rule.min_requests < 0:
        raise BadRequest("min_requests is 0 or more", field=_at(at, "min_requests"))
    if rule.recover_threshold is not None:
        upward = rule.op in (">", ">=")
        if (
            (rule.recover_threshold > rule.threshold)
            if upward
            else (rule.recover_threshold < rule.threshold)
        ):
            raise BadRequest(
                "recover_threshold must be on the good side of threshold "
                f"(a rule firing when {rule.metric} {rule.op} {rule.threshold:g} recovers "
                f"{'below' if rule.op in ('>', '>=') else 'above'} it)",
                field=_at(at, "recover_threshold"),
            )
    _plan(rule, [rule.metric, "requests"], rule.window, at)


def _check_slo(rule: schema.Slo, at: str) -> None:
    if not 0.5 <= rule.target < 1:
        raise BadRequest("target is a share of good requests: 0.5 to below 1 (0.999)",
                         field=_at(at, "target"))  # fmt: skip
    if rule.objective == "latency":
        if rule.latency_ms is None or not 0 < rule.latency_ms <= MAX_SLOW_MS:
            raise BadRequest("a latency objective needs latency_ms above 0, at most a day",
                             field=_at(at, "latency_ms"))  # fmt: skip
        metrics = ["latency_count", "requests"]
    else:
        if rule.latency_ms is not None:
            raise BadRequest("latency_ms is for latency objectives", field=_at(at, "latency_ms"))
        metrics = ["errors", "requests"]
    _plan(rule, metrics, "5m", at)


def _plan(rule: schema.Rule, metrics: list[str], window: str, at: str) -> None:
    """Plan the rule's query as the evaluator will, mapping the query's field names
    onto the rule's."""
    if any(f.dimension == "status" for f in rule.filters) and any(
        m in LATENCY_METRICS for m in metrics
    ):
        raise BadRequest(
            "latency rules cannot filter by status: latency is kept per series",
            field=_at(at, "filters"),
        )
    query = Query(
        metrics=[m for m in metrics if m not in LATENCY_METRICS or "status" not in rule.group_by],
        dimensions=list(rule.group_by),
        filters=[Filter(f.dimension, f.values, f.op) for f in rule.filters],
        from_=f"now-{window}",
        grain="all",
    )
    try:
        plan(query)
    except BadRequest as e:
        field = e.field or ""
        field = field.replace("dimensions", "group_by").replace("metrics[0]", "metric")
        raise BadRequest(e.message, field=_at(at, field)) from None


def check_channel(channel: schema.Channel, settings: Settings, at: str = "") -> None:
    if not _CHANNEL_NAME.fullmatch(channel.name):
        raise BadRequest(
            "a channel name is lowercase letters, digits, '.', '_' or '-' (at most 63)",
            field=_at(at, "name"),
        )
    secret = None
    if isinstance(channel, schema.Webhook | schema.Alertmanager) and (
        not _URL.fullmatch(channel.url) or len(channel.url) > 2_000
    ):
        raise BadRequest("url must be an http:// or https:// URL", field=_at(at, "url"))
    if isinstance(channel, schema.Webhook) and channel.secret is not None:
        secret = ("secret", channel.secret)
    if isinstance(channel, schema.Slack):
        secret = ("url_secret", channel.url_secret)
    if secret is not None and settings.alert_secret(secret[1]) is None:
        raise BadRequest(
            f"no alert secret named {secret[1]!r} on this server; the operator sets it in "
            'GRAVIX_ALERT_SECRETS (JSON: {"name": "value"}) in the environment or .env',
            field=_at(at, secret[0]),
        )
    if isinstance(channel, schema.Email):
        if not channel.to:
            raise BadRequest("name at least one address", field=_at(at, "to"))
        for i, address in enumerate(channel.to):
            if not _EMAIL.fullmatch(address):
                raise BadRequest(f"{address!r} is not an e-mail address",
                                 field=_at(at, f"to[{i}]"))  # fmt: skip


def check_silence(silence: schema.Silence, now_ms: int) -> None:
    if not silence.matchers:
        raise BadRequest("a silence needs at least one matcher", field="matchers")
    for i, m in enumerate(silence.matchers):
        if m.dimension not in (*DIMENSIONS, "rule"):
            raise BadRequest(
                f"unknown dimension {m.dimension!r}; known: {', '.join(DIMENSIONS)}, rule",
                field=f"matchers[{i}].dimension",
            )
        if not m.values:
            raise BadRequest("give at least one value", field=f"matchers[{i}].values")
    if not 0 <= silence.starts < MAX_TIME_MS or not 0 < silence.ends <= MAX_TIME_MS:
        raise BadRequest("starts and ends are epoch ms between 1970 and 2199", field="ends")
    if silence.ends <= max(silence.starts, now_ms):
        raise BadRequest("ends must be after starts and in the future", field="ends")
    if len(silence.comment) > schema.MAX_DESCRIPTION:
        raise BadRequest("a comment is at most 2000 characters", field="comment")


def check_maintenance(window: schema.Maintenance, at: str) -> None:
    if not _NAME.fullmatch(window.name):
        raise BadRequest("a name is 1 to 200 characters", field=_at(at, "name"))
    if not window.weekdays or any(not 0 <= d <= 6 for d in window.weekdays):
        raise BadRequest("weekdays are 0 (Monday) to 6 (Sunday)", field=_at(at, "weekdays"))
    if not _HHMM.fullmatch(window.start):
        raise BadRequest("start is HH:MM (UTC)", field=_at(at, "start"))
    length = schema.duration_ms(window.duration, _at(at, "duration") or "duration")
    if length > 7 * 86_400_000:
        raise BadRequest("duration is at most 7d", field=_at(at, "duration"))
    check_silence(schema.Silence(matchers=window.matchers, ends=MAX_TIME_MS), 0)


# --- the store ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StoredRule:
    id: int
    tenant: str
    rule: schema.Rule
    source: str
    updated_ms: int
    updated_by: str

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = msgspec.to_builtins(self.rule)
        return {"id": self.id, **body, "source": self.source, "updated": self.updated_ms,
                "updated_by": self.updated_by}  # fmt: skip


class AlertStore:
    """A tenant's rules, channels and silences in ``alerts.db``."""

    def __init__(self, settings: Settings, db: MetadataDB | None = None) -> None:
        self.settings = settings
        self.db = db or alerts_db(settings.alerts_db)

    # rules
    def rules(self, tenant: str | None = None) -> list[StoredRule]:
        """A tenant's rules (every tenant's with None), in id order."""
        sql = "SELECT id, tenant, body, source, updated_ms, updated_by FROM rules"
        args: tuple[Any, ...] = ()
        if tenant is not None:
            sql, args = sql + " WHERE tenant = ?", (tenant,)
        with self.db.reading() as conn:
            rows = conn.execute(sql + " ORDER BY id", args).fetchall()
        return [
            StoredRule(r[0], r[1], msgspec.json.decode(r[2], type=schema.Rule), r[3], r[4], r[5])
            for r in rows
        ]

    def rule(self, tenant: str, rule_id: int) -> StoredRule:
        for stored in self.rules(tenant):
            if stored.id == rule_id:
                return stored
        raise NotFound(f"no alert rule {rule_id}")

    def save_rule(
        self, tenant: str, rule: schema.Rule, by: str, rule_id: int | None = None
    ) -> StoredRule:
        """Create (``rule_id`` None) or replace a rule; 409 for a taken name."""
        check_rule(rule, set(self.channels(tenant)))
        now = int(time.time() * 1000)
        body = msgspec.json.encode(rule)
        with self.db.writing() as conn:
            if rule_id is None:
                count = conn.execute("SELECT count(*) FROM rules WHERE tenant = ?", (tenant,))
                if count.fetchone()[0] >= schema.MAX_RULES_PER_TENANT:
                    raise BadRequest(f"a tenant has at most {schema.MAX_RULES_PER_TENANT} rules")
                try:
                    cur = conn.execute(
                        "INSERT INTO rules (tenant, name, body, created_ms, updated_ms, "
                        "updated_by) VALUES (?, ?, ?, ?, ?, ?)",
                        (tenant, rule.name, body, now, now, by),
                    )
                except sqlite3.IntegrityError:
                    raise Conflict(f"a rule named {rule.name!r} exists", field="name") from None
                rule_id = int(cur.lastrowid or 0)
            else:
                self._editable(conn, "rules", "id = ?", tenant, rule_id, f"alert rule {rule_id}")
                try:
                    conn.execute(
                        "UPDATE rules SET name = ?, body = ?, updated_ms = ?, updated_by = ? "
                        "WHERE tenant = ? AND id = ?",
                        (rule.name, body, now, by, tenant, rule_id),
                    )
                except sqlite3.IntegrityError:
                    raise Conflict(f"a rule named {rule.name!r} exists", field="name") from None
                # A changed rule starts over: its series' states belong to the old one.
                conn.execute(
                    "DELETE FROM states WHERE tenant = ? AND rule_id = ?", (tenant, rule_id)
                )
        return StoredRule(rule_id, tenant, rule, "api", now, by)

    def delete_rule(self, tenant: str, rule_id: int) -> None:
        with self.db.writing() as conn:
            self._editable(conn, "rules", "id = ?", tenant, rule_id, f"alert rule {rule_id}")
            conn.execute("DELETE FROM rules WHERE tenant = ? AND id = ?", (tenant, rule_id))
            conn.execute("DELETE FROM states WHERE tenant = ? AND rule_id = ?", (tenant, rule_id))

    @staticmethod
    def _editable(
        conn: sqlite3.Connection, table: str, where: str, tenant: str, key: Any, what: str
    ) -> None:
        row = conn.execute(
            f"SELECT source FROM {table} WHERE tenant = ? AND {where}", (tenant, key)
        ).fetchone()
        if row is None:
            raise NotFound(f"no {what}")
        if row[0] == "file":
            raise ReadOnly(f"{what} comes from a rule file (alert_rules_dir): change it there")

    # channels
    def channels(self, tenant: str) -> dict[str, schema.Channel]:
        with self.db.reading() as conn:
            rows = conn.execute(
                "SELECT name, body FROM channels WHERE tenant = ? ORDER BY name", (tenant,)
            ).fetchall()
        return {r[0]: msgspec.json.decode(r[1], type=schema.Channel) for r in rows}

    def channel_sources(self, tenant: str) -> dict[str, str]:
        with self.db.reading() as conn:
            rows = conn.execute(
                "SELECT name, source FROM channels WHERE tenant = ?", (tenant,)
            ).fetchall()
        return {r[0]: r[1] for r in rows}

    def save_channel(self, tenant: str, channel: schema.Channel) -> None:
        check_channel(channel, self.settings)
        now = int(time.time() * 1000)
        with self.db.writing() as conn:
            row = conn.execute(
                "SELECT source FROM channels WHERE tenant = ? AND name = ?", (tenant, channel.name)
            ).fetchone()
            if row is not None and row[0] == "file":
                raise ReadOnly(f"channel {channel.name!r} comes from a rule file: change it there")
            if row is None:
                count = conn.execute("SELECT count(*) FROM channels WHERE tenant = ?", (tenant,))
                if count.fetchone()[0] >= schema.MAX_CHANNELS_PER_TENANT:
                    raise BadRequest(
                        f"a tenant has at most {schema.MAX_CHANNELS_PER_TENANT} channels"
                    )
            conn.execute(
                "INSERT OR REPLACE INTO channels (tenant, name, body, source, updated_ms) "
                "VALUES (?, ?, ?, 'api', ?)",
                (tenant, channel.name, msgspec.json.encode(channel), now),
            )

    def delete_channel(self, tenant: str, name: str) -> None:
        used = [s.rule.name for s in self.rules(tenant) if name in s.rule.channels]
        if used:
            raise Conflict(f"channel {name!r} is used by rule {used[0]!r}", field="name")
        with self.db.writing() as conn:
            self._editable(conn, "channels", "name = ?", tenant, name, f"channel {name!r}")
            conn.execute("DELETE FROM channels WHERE tenant = ? AND name = ?", (tenant, name))

    # silences
    def silences(self, tenant: str, now_ms: int | None = None) -> list[dict[str, Any]]:
        """A tenant's silences; only those not over yet with ``now_ms``."""
        sql = "SELECT id, kind, body, created_by, created_ms FROM silences WHERE tenant = ?"
        args: tuple[Any, ...] = (tenant,)
        if now_ms is not None:
            sql, args = sql + " AND ends_ms > ?", (tenant, now_ms)
        with self.db.reading() as conn:
            rows = conn.execute(sql + " ORDER BY id", args).fetchall()
        return [
            {"id": r[0], "kind": r[1], **msgspec.json.decode(r[2]), "created_by": r[3],
             "created": r[4]}
            for r in rows
        ]  # fmt: skip

    def add_silence(self, tenant: str, silence: schema.Silence, by: str) -> int:
        now = int(time.time() * 1000)
        check_silence(silence, now)
        with self.db.writing() as conn:
            cur = conn.execute(
                "INSERT INTO silences (tenant, body, starts_ms, ends_ms, created_by, created_ms) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (tenant, msgspec.json.encode(silence), silence.starts, silence.ends, by, now),
            )
            return int(cur.lastrowid or 0)

    def expire_silence(self, tenant: str, silence_id: int) -> None:
        """End a silence now (it stays in the list, as history)."""
        now = int(time.time() * 1000)
        with self.db.writing() as conn:
            row = conn.execute(
                "SELECT body FROM silences WHERE tenant = ? AND id = ? AND kind = 'silence'",
                (tenant, silence_id),
            ).fetchone()
            if row is None:
                raise NotFound(f"no silence {silence_id}")
            body = msgspec.json.decode(row[0], type=schema.Silence)
            ended = msgspec.structs.replace(body, ends=min(body.ends, now))
            conn.execute(
                "UPDATE silences SET body = ?, ends_ms = ? WHERE tenant = ? AND id = ?",
                (msgspec.json.encode(ended), ended.ends, tenant, silence_id),
            )

    # rule files
    def apply_file(
        self, tenant: str, file: schema.RuleFile, path: str | None = None
    ) -> dict[str, int]:
        """Make the tenant's file-sourced rules and channels what ``file`` says (checked
        whole first: a file with one error changes nothing). ``path``: where the file
        is (or ``"removed"``), kept as the tenant's rule file in the same transaction,
        for ``GET /api/v1/alerts/status``."""
        for i, channel in enumerate(file.channels):
            check_channel(channel, self.settings, f"channels[{i}]")
        names = {c.name for c in file.channels} | {
            n for n, s in self.channel_sources(tenant).items() if s == "api"
        }
        for i, rule in enumerate(file.rules):
            check_rule(rule, names, f"rules[{i}]")
        for i, window in enumerate(file.maintenance):
            check_maintenance(window, f"maintenance[{i}]")
        seen: set[str] = set()
        for i, rule in enumerate(file.rules):
            if rule.name in seen:
                raise BadRequest(f"two rules are named {rule.name!r}", field=f"rules[{i}].name")
            seen.add(rule.name)
        now = int(time.time() * 1000)
        with self.db.writing() as conn:
            old = dict(
                conn.execute(
                    "SELECT name, body FROM rules WHERE tenant = ? AND source = 'file'", (tenant,)
                ).fetchall()
            )
            taken = {
                r[0]
                for r in conn.execute(
                    "SELECT name FROM rules WHERE tenant = ? AND source = 'api'", (tenant,)
                )
            }
            for i, rule in enumerate(file.rules):
                if rule.name in taken:
                    raise Conflict(
                        f"a rule named {rule.name!r} was made through the API; rename one",
                        field=f"rules[{i}].name",
                    )
            for name in set(old) - seen:
                conn.execute(
                    "DELETE FROM states WHERE tenant = ? AND rule_id = "
                    "(SELECT id FROM rules WHERE tenant = ? AND name = ?)",
                    (tenant, tenant, name),
                )
                conn.execute("DELETE FROM rules WHERE tenant = ? AND name = ?", (tenant, name))
            changed = 0
            for rule in file.rules:
                body = msgspec.json.encode(rule)
                if old.get(rule.name) == body:
                    continue
                changed += 1
                if rule.name in old:
                    conn.execute(
                        "DELETE FROM states WHERE tenant = ? AND rule_id = "
                        "(SELECT id FROM rules WHERE tenant = ? AND name = ?)",
                        (tenant, tenant, rule.name),
                    )
                    conn.execute(
                        "UPDATE rules SET body = ?, updated_ms = ?, updated_by = 'file' "
                        "WHERE tenant = ? AND name = ?",
                        (body, now, tenant, rule.name),
                    )
                else:
                    conn.execute(
                        "INSERT INTO rules (tenant, name, body, source, created_ms, updated_ms, "
                        "updated_by) VALUES (?, ?, ?, 'file', ?, ?, 'file')",
                        (tenant, rule.name, body, now, now),
                    )
            conn.execute("DELETE FROM channels WHERE tenant = ? AND source = 'file'", (tenant,))
            for channel in file.channels:
                conn.execute(
                    "INSERT OR REPLACE INTO channels (tenant, name, body, source, updated_ms) "
                    "VALUES (?, ?, ?, 'file', ?)",
                    (tenant, channel.name, msgspec.json.encode(channel), now),
                )
            conn.execute(
                "DELETE FROM silences WHERE tenant = ? AND kind = 'maintenance'", (tenant,)
            )
            for window in file.maintenance:
                conn.execute(
                    "INSERT INTO silences (tenant, kind, body, starts_ms, ends_ms, created_by, "
                    "created_ms) VALUES (?, 'maintenance', ?, 0, ?, 'file', ?)",
                    (tenant, msgspec.json.encode(window), 1 << 62, now),
                )
            if path is not None:
                _keep_file(conn, tenant, path, now, "")
        return {"rules": len(file.rules), "changed": changed, "channels": len(file.channels)}

    def file_refused(self, tenant: str, path: str, error: str) -> None:
        """Keep why the tenant's rule file at ``path`` was refused (its last good
        rules stay, and so does when they were applied)."""
        with self.db.writing() as conn:
            _keep_file(conn, tenant, path, int(time.time() * 1000), error)


def _keep_file(conn: sqlite3.Connection, tenant: str, path: str, now: int, error: str) -> None:
    """The tenant's rule file row: checked now, applied now unless ``error``."""
    conn.execute(
        "INSERT INTO rule_files (tenant, path, checked_ms, applied_ms, error) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant) DO UPDATE SET "
        "path = excluded.path, checked_ms = excluded.checked_ms, "
        "applied_ms = coalesce(excluded.applied_ms, rule_files.applied_ms), "
        "error = excluded.error",
        (tenant, path, now, None if error else now, error),
    )

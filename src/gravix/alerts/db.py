"""``<data_dir>/alerts.db``: rules, channels, silences, alert states, their
transitions and the notifications to deliver, in one SQLite database.

One database, so that an evaluation writes a series' new state, its
transition and the notifications it causes in one transaction: a kill -9
anywhere leaves either all of them or none, and the next evaluation starts
from what was committed (no transition lost, none notified twice with
different content). The dispatcher (:mod:`gravix.alerts.dispatch`) delivers
the ``outbox`` rows and logs each attempt in ``attempts``.

Tables (times are epoch ms):

- ``rules``: a tenant's rules, the JSON of :data:`gravix.schema.alerts.Rule`;
  ``source`` is ``api`` or ``file`` (a rule from ``alert_rules_dir`` cannot be
  changed through the API).
- ``channels``: a tenant's channels, the JSON of
  :data:`gravix.schema.alerts.Channel`, same ``source``.
- ``silences``: :class:`gravix.schema.alerts.Silence` with who made it, or
  (``kind`` ``maintenance``) a :class:`gravix.schema.alerts.Maintenance`
  window from a rule file.
- ``states``: the state of each series of each rule (``series`` is the JSON
  of its dimension values, sorted, so one series has one key).
- ``transitions``: every change of state, kept as history.
- ``outbox``: a notification for one channel; ``status`` is ``pending``,
  ``sent``, ``failed`` (given up) or ``silenced`` (kept, not sent).
- ``attempts``: each try at delivering an outbox row.
- ``evaluations``: each tenant's last evaluation (when, how long, its
  watermark, how many rules failed and why).
- ``rule_files``: each tenant's rule file, when it was last applied, and why
  its newest version was refused (empty when it was not).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from gravix.metadata import MetadataDB

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS rules (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    body BLOB NOT NULL,
    source TEXT NOT NULL DEFAULT 'api',
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    updated_by TEXT NOT NULL DEFAULT '',
    UNIQUE (tenant, name)
);
CREATE TABLE IF NOT EXISTS channels (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    body BLOB NOT NULL,
    source TEXT NOT NULL DEFAULT 'api',
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
);
CREATE TABLE IF NOT EXISTS silences (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'silence',
    body BLOB NOT NULL,
    starts_ms INTEGER NOT NULL,
    ends_ms INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS states (
    tenant TEXT NOT NULL,
    rule_id INTEGER NOT NULL,
    series TEXT NOT NULL,
    state TEXT NOT NULL,
    since_ms INTEGER NOT NULL,
    incident_ms INTEGER,
    value REAL,
    evaluated_ms INTEGER NOT NULL,
    notified_ms INTEGER,
    repeats INTEGER NOT NULL DEFAULT 0,
    last_transition INTEGER,
    PRIMARY KEY (tenant, rule_id, series)
);
CREATE TABLE IF NOT EXISTS transitions (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    rule_id INTEGER NOT NULL,
    rule_name TEXT NOT NULL,
    series TEXT NOT NULL,
    from_state TEXT NOT NULL,
    to_state TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    value REAL,
    threshold REAL,
    requests INTEGER,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS transitions_by_time ON transitions (tenant, at_ms);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    channel TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    payload BLOB NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    sent_ms INTEGER,
    last_error TEXT NOT NULL DEFAULT '',
    UNIQUE (tenant, channel, idempotency_key)
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (status, next_attempt_ms);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY,
    outbox_id INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    ok INTEGER NOT NULL,
    status_code INTEGER,
    error TEXT NOT NULL DEFAULT '',
    duration_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_of ON attempts (outbox_id);
CREATE TABLE IF NOT EXISTS evaluations (
    tenant TEXT PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    watermark_ms INTEGER NOT NULL,
    rules INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS rule_files (
    tenant TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    checked_ms INTEGER NOT NULL,
    applied_ms INTEGER,
    error TEXT NOT NULL DEFAULT ''
);
"""


def alerts_db(path: Path) -> MetadataDB:
    """The alerts database at ``path`` (``Settings.alerts_db``)."""
    return MetadataDB(path, SCHEMA, "the alerts store")

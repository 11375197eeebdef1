"""Retention deletes exactly what the policy says, per tenant, under clock jumps."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from typer.testing import CliRunner

from gravix.cli import app
from gravix.config import Settings, load_settings
from gravix.errors import ConfigError, GravixError
from gravix.rollup.retention import (
    STATE_KEY,
    RetentionPolicy,
    apply_retention,
    policy_for,
)
from gravix.schema import layout
from gravix.storage.base import ObjectStore
from gravix.storage.local import LocalObjectStore
from tests import s3server

s3_endpoint = s3server.s3_endpoint

DAY_MS = layout.DAY_MS
NOW = datetime(2026, 3, 15, 10, 30, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
TODAY = NOW.date()


def day_of(n: int) -> date:
    """The date ``n`` days from TODAY."""
    return TODAY + timedelta(days=n)


def midnight_ms(n: int) -> int:
    """Midnight (UTC) ``n`` days from TODAY, in ms: where partition_keys puts hour 00."""
    return layout.day_start(NOW_MS) + n * DAY_MS


# Around each default and override boundary, plus today and the future.
OFFSETS = (-2000, -1097, -1096, -1095, -401, -400, -397, -396, -395, -366, -31, -30, -29)
OFFSETS += (-8, -7, -6, -1, 0, 1, 40)
TENANTS = ("acme", "acme-eu", "globex")
OVERRIDES = {
    "acme": {"raw_retention_days": 7, "hour_retention_days": 0, "day_retention_days": 400},
    "acme-eu": {"minute_retention_days": 30},
}
# What the policy says, written out independently of RetentionPolicy.
SETTING_OF_AREA = {
    "archive": "raw_retention_days",
    "events": "minute_retention_days",
    "metrics_1m": "minute_retention_days",
    "metrics_1h": "hour_retention_days",
    "metrics_1d": "day_retention_days",
    "service_metrics_1m": "minute_retention_days",
    "service_metrics_1h": "hour_retention_days",
    "service_metrics_1d": "day_retention_days",
}
# Under retention areas, but not partitions of the layout: never deleted.
STRAY_KEYS = (
    "metrics_1m/tenant=acme/notes.txt",
    "archive/tenant=acme/date=2001-02-30/hour=00/facts.parquet",
    "archive/tenant=acme/date=2001-02-03/hour=24/facts.parquet",
    "events/tenant=acme/date=2001-02-03/extra/events.parquet",
    "metrics_1d/README",
)
# Outside every retention area: never even looked at.
OTHER_KEYS = (
    "_state/rollup/tenant=acme.json",
    "_locks/rollup/tenant=acme/000001.lock",
    "backups/tenant=acme/date=2001-01-01/all.tar",
)


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    overrides.setdefault("tenant_retention", OVERRIDES)
    return load_settings(data_dir=tmp_path / "data", node_id="test-node", **overrides)


def partition_keys(tenant: str, day: date) -> list[str]:
    """One object of every area for ``day``, two hours where the area has hours."""
    start = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
    hours = (start, start + 23 * layout.HOUR_MS)
    return [
        *(layout.archive_key(tenant, h) for h in hours),
        layout.events_key(tenant, start),
        *(layout.metrics_key("1m", tenant, h, level) for h in hours for level in layout.LEVELS),
        *(layout.metrics_key("1h", tenant, start, level) for level in layout.LEVELS),
        *(layout.metrics_key("1d", tenant, start, level) for level in layout.LEVELS),
        f"{layout.tenant_prefix(layout.RAW, tenant)}date={day}/hour=00/test-node-w0-000001.gvx",
    ]


def populate(store: ObjectStore, keys: Iterable[str]) -> set[str]:
    written = set()
    for key in keys:
        store.put(key, b"x")
        written.add(key)
    return written


def fleet(tenants: Iterable[str] = TENANTS, offsets: Iterable[int] = OFFSETS) -> list[str]:
    days = [day_of(n) for n in offsets]
    keys = [key for tenant in tenants for day in days for key in partition_keys(tenant, day)]
    return [*keys, *STRAY_KEYS, *OTHER_KEYS]


def lean_keys(tenant: str, day: date) -> list[str]:
    """One object per area for ``day`` (archive at 23:00, the date's last hour), and raw."""
    start = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
    return [
        layout.archive_key(tenant, start + 23 * layout.HOUR_MS),
        layout.events_key(tenant, start),
        *(
            layout.metrics_key(tier, tenant, start, level)
            for level in layout.LEVELS
            for tier in layout.TIERS
        ),
        f"{layout.tenant_prefix(layout.RAW, tenant)}date={day}/hour=23/test-node-w0-000001.gvx",
    ]


LEAN_OFFSETS = range(-70, 6)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store written once through put(): the fleet, and lean keys over LEAN_OFFSETS.

    Each put fsyncs; tests copy what they need from here instead of writing
    hundreds of objects each.
    """
    root = tmp_path_factory.mktemp("template")
    lean = [k for t in ("acme", "globex") for n in LEAN_OFFSETS for k in lean_keys(t, day_of(n))]
    populate(LocalObjectStore(root), {*fleet(), *lean})
    return root


def copy_store(
    template: Path, keys: Iterable[str], root: Path
) -> tuple[LocalObjectStore, set[str]]:
    """A local store at ``root`` holding ``keys`` copied from ``template``.

    The local store keeps key ``a/b/c`` as the file ``<root>/a/b/c``, so a copy
    of the files is a copy of the objects.
    """
    copied = set()
    for key in keys:
        target = root.joinpath(*key.split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template.joinpath(*key.split("/")), target)
        copied.add(key)
    return LocalObjectStore(root), copied


@pytest.fixture
def fleet_store(template: Path, tmp_path: Path) -> tuple[LocalObjectStore, set[str]]:
    return copy_store(template, fleet(), tmp_path / "store")


def expected_deleted(keys: Iterable[str], settings: Settings, now_ms: int) -> set[str]:
    """The keys the policy deletes at ``now_ms``: older than ``today - days``, by area."""
    today = datetime.fromtimestamp(now_ms / 1000, UTC).date()
    doomed = set()
    for key in keys:
        partition = layout.parse_key(key)
        if partition is None or partition.area not in SETTING_OF_AREA:
            continue
        setting = SETTING_OF_AREA[partition.area]
        override = settings.tenant_retention.get(partition.tenant, {})
        days = override.get(setting, getattr(settings, setting))
        if days and (today - partition.day).days > days:
            doomed.add(key)
    return doomed


def stored(store: ObjectStore) -> set[str]:
    return {info.key for info in store.list()} - {STATE_KEY}


def test_deletes_exactly_what_the_policy_says_per_tenant(
    tmp_path: Path, fleet_store: tuple[LocalObjectStore, set[str]]
) -> None:
    store, keys = fleet_store
    settings = make_settings(tmp_path)

    report = apply_retention(store, settings, now_ms=NOW_MS)

    doomed = expected_deleted(keys, settings, NOW_MS)
    assert set(report.deleted) == doomed
    assert len(report.deleted) == len(doomed)  # each once
    assert stored(store) == keys - doomed
    assert sorted(report.skipped) == sorted(STRAY_KEYS)
    assert report.kept == len(keys) - len(doomed) - len(STRAY_KEYS) - len(OTHER_KEYS) - len(
        [k for k in keys if k.startswith(layout.RAW)]
    )
    assert not report.skipped_clock and not report.dry_run
    # Spot checks of the policy, so that the oracle above is not the only word.
    left = stored(store)
    for tenant in TENANTS:
        assert all(
            layout.tenant_prefix(layout.RAW, tenant) + f"date={day_of(n)}/hour=00/"
            "test-node-w0-000001.gvx" in left
            for n in OFFSETS
        ), "raw/ is never deleted"
        for n in (0, 1, 40):  # today and the future stay, whatever the policy
            assert set(partition_keys(tenant, day_of(n))) <= left
    spot_checks = {
        layout.archive_key("globex", midnight_ms(-30)): True,
        layout.archive_key("globex", midnight_ms(-31)): False,
        layout.archive_key("acme", midnight_ms(-7)): True,
        layout.archive_key("acme", midnight_ms(-8)): False,
        layout.metrics_key("1h", "acme", midnight_ms(-2000)): True,  # override 0: forever
        layout.metrics_key("1h", "globex", midnight_ms(-1096)): True,
        layout.metrics_key("1h", "globex", midnight_ms(-1097)): False,
        layout.metrics_key("1d", "globex", midnight_ms(-2000)): True,  # default 0: forever
        layout.metrics_key("1d", "acme", midnight_ms(-400)): True,
        layout.metrics_key("1d", "acme", midnight_ms(-401)): False,
        layout.events_key("acme-eu", midnight_ms(-30)): True,
        layout.events_key("acme-eu", midnight_ms(-31)): False,
        layout.events_key("globex", midnight_ms(-396)): True,
        layout.events_key("globex", midnight_ms(-397)): False,
        layout.metrics_key("1m", "globex", midnight_ms(-396)): True,
        layout.metrics_key("1m", "globex", midnight_ms(-397)): False,
    }
    assert set(spot_checks) <= keys
    assert {key: key in left for key in spot_checks} == spot_checks
    assert set(STRAY_KEYS) | set(OTHER_KEYS) <= left


def test_state_records_the_reference_time(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "store")
    apply_retention(store, make_settings(tmp_path), now_ms=NOW_MS)
    assert json.loads(store.get(STATE_KEY))["last_run_ms"] == NOW_MS


def test_dry_run_lists_exactly_what_a_real_run_then_deletes(
    tmp_path: Path, fleet_store: tuple[LocalObjectStore, set[str]]
) -> None:
    store, keys = fleet_store
    settings = make_settings(tmp_path)
    listed: list[str] = []

    dry = apply_retention(store, settings, now_ms=NOW_MS, dry_run=True, progress=listed.append)

    assert dry.dry_run and listed == dry.deleted and dry.deleted
    assert stored(store) == keys
    assert not store.exists(STATE_KEY)  # a dry run records nothing
    real = apply_retention(store, settings, now_ms=NOW_MS)
    assert real.deleted == dry.deleted and real.kept == dry.kept
    assert stored(store) == keys - set(dry.deleted)


def test_clock_jumps_backwards_then_forwards(
    tmp_path: Path, fleet_store: tuple[LocalObjectStore, set[str]]
) -> None:
    store, keys = fleet_store
    settings = make_settings(tmp_path)

    first = apply_retention(store, settings, now_ms=NOW_MS)
    assert set(first.deleted) == expected_deleted(keys, settings, NOW_MS)
    after_first = stored(store)

    back = apply_retention(store, settings, now_ms=NOW_MS - DAY_MS)
    assert back.skipped_clock and back.last_run_ms == NOW_MS
    assert back.deleted == [] and back.kept == 0
    assert stored(store) == after_first
    assert json.loads(store.get(STATE_KEY))["last_run_ms"] == NOW_MS  # not lowered
    dry_back = apply_retention(store, settings, now_ms=NOW_MS - 1, dry_run=True)
    assert dry_back.skipped_clock and dry_back.deleted == []

    later = NOW_MS + 5 * DAY_MS
    forward = apply_retention(store, settings, now_ms=later)
    assert not forward.skipped_clock and forward.last_run_ms == NOW_MS
    assert set(forward.deleted) == expected_deleted(keys, settings, later) - set(first.deleted)
    assert forward.deleted  # five more days of each window went
    assert stored(store) == keys - expected_deleted(keys, settings, later)

    between = apply_retention(store, settings, now_ms=NOW_MS + DAY_MS)
    assert between.skipped_clock and between.last_run_ms == later
    assert stored(store) == keys - expected_deleted(keys, settings, later)


def test_same_reference_time_again_is_not_a_backwards_clock(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "store")
    settings = make_settings(tmp_path)
    apply_retention(store, settings, now_ms=NOW_MS)
    again = apply_retention(store, settings, now_ms=NOW_MS)
    assert not again.skipped_clock and again.deleted == []


def test_one_tenant_only(tmp_path: Path, fleet_store: tuple[LocalObjectStore, set[str]]) -> None:
    store, keys = fleet_store
    settings = make_settings(tmp_path)

    report = apply_retention(store, settings, now_ms=NOW_MS, tenant="acme")

    doomed = expected_deleted(keys, settings, NOW_MS)
    acme = {k for k in doomed if "/tenant=acme/" in k}
    assert acme and set(report.deleted) == acme  # not acme-eu, though its name starts alike
    assert stored(store) == keys - acme


def test_policy_for_applies_overrides(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    assert policy_for(settings, "globex") == RetentionPolicy(30, 396, 1096, 0)
    assert policy_for(settings, "acme") == RetentionPolicy(7, 396, 0, 400)
    assert policy_for(settings, "acme-eu") == RetentionPolicy(30, 30, 1096, 0)


def test_policy_keeps_today_and_the_future_even_for_one_day() -> None:
    policy = RetentionPolicy(1, 1, 1, 1)
    for area in SETTING_OF_AREA:
        assert policy.keeps(area, TODAY, TODAY)
        assert policy.keeps(area, TODAY - timedelta(days=1), TODAY)
        assert not policy.keeps(area, TODAY - timedelta(days=2), TODAY)
        assert policy.keeps(area, date.max, TODAY)
    assert RetentionPolicy(30, 396, 1096, 10**9).keeps("metrics_1d", date.min, TODAY)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"acme": {"raw_days": 7}}, "unknown setting 'raw_days'"),
        ({"acme": {"raw_retention_days": 0}}, "must be at least 1"),
        ({"acme": {"minute_retention_days": 0}}, "must be at least 1"),
        ({"acme": {"hour_retention_days": -1}}, "must be at least 0"),
        ({"Acme Corp": {"raw_retention_days": 7}}, "not a tenant name"),
    ],
)
def test_bad_overrides_are_config_errors(
    tmp_path: Path, override: dict[str, dict[str, int]], message: str
) -> None:
    store = LocalObjectStore(tmp_path / "store")
    keys = populate(store, partition_keys("globex", day_of(-5000)))
    settings = make_settings(tmp_path, tenant_retention=override)
    with pytest.raises(ConfigError, match=message) as caught:
        apply_retention(store, settings, now_ms=NOW_MS)
    assert "tenant_retention" in caught.value.message
    assert stored(store) == keys  # refused before anything went
    with pytest.raises(ConfigError, match=message):
        policy_for(settings, "globex")


def test_unreadable_state_refuses_to_guess(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "store")
    keys = populate(store, partition_keys("globex", day_of(-5000)))
    store.put(STATE_KEY, b"{not json")
    with pytest.raises(GravixError, match=r"retention\.json"):
        apply_retention(store, make_settings(tmp_path), now_ms=NOW_MS)
    assert stored(store) == keys


def test_against_s3(s3_endpoint: s3server.LoopbackS3, tmp_path: Path) -> None:
    store = s3_endpoint.store(prefix="gravix/prod")
    settings = make_settings(tmp_path)
    keys = populate(store, fleet(tenants=("acme", "globex"), offsets=(-1097, -397, -31, -8, 0)))

    dry = apply_retention(store, settings, now_ms=NOW_MS, dry_run=True)
    real = apply_retention(store, settings, now_ms=NOW_MS)
    back = apply_retention(store, settings, now_ms=NOW_MS - DAY_MS)

    doomed = expected_deleted(keys, settings, NOW_MS)
    assert doomed and set(dry.deleted) == set(real.deleted) == doomed
    assert back.skipped_clock and back.deleted == []
    assert stored(store) == keys - doomed
    assert json.loads(store.get(STATE_KEY))["last_run_ms"] == NOW_MS


DAYS_STRATEGY = {
    "raw_retention_days": st.integers(1, 60),
    "minute_retention_days": st.integers(1, 60),
    "hour_retention_days": st.integers(0, 60),
    "day_retention_days": st.integers(0, 60),
}


@hsettings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    offsets=st.sets(st.sampled_from(LEAN_OFFSETS), min_size=1, max_size=12),
    defaults=st.fixed_dictionaries(DAYS_STRATEGY),
    override=st.fixed_dictionaries({}, optional=DAYS_STRATEGY),
    now_in_day_ms=st.integers(0, DAY_MS - 1),
)
def test_deleted_set_matches_the_policy(
    template: Path,
    tmp_path: Path,
    offsets: set[int],
    defaults: dict[str, int],
    override: dict[str, int],
    now_in_day_ms: int,
) -> None:
    now_ms = layout.day_start(NOW_MS) + now_in_day_ms
    dates = {day_of(n) for n in offsets}
    with tempfile.TemporaryDirectory(dir=tmp_path) as root:
        lean = [k for t in ("acme", "globex") for d in dates for k in lean_keys(t, d)]
        store, keys = copy_store(template, lean, Path(root))
        settings = make_settings(tmp_path, tenant_retention={"acme": override}, **defaults)

        report = apply_retention(store, settings, now_ms=now_ms)

        expected: set[str] = set()
        for tenant, policy in (("acme", defaults | override), ("globex", defaults)):
            for area, setting in SETTING_OF_AREA.items():
                days = policy[setting]
                for when in dates:
                    if days and when < TODAY - timedelta(days=days):
                        prefix = f"{area}/tenant={tenant}/date={when}/"
                        expected |= {k for k in keys if k.startswith(prefix)}
        assert set(report.deleted) == expected
        assert len(report.deleted) == len(expected)
        assert stored(store) == keys - expected


runner = CliRunner()


def test_cli_dry_run_then_real_run(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "store")
    now = datetime.now(UTC)
    old = layout.archive_key("acme", int((now - timedelta(days=100)).timestamp() * 1000))
    fresh = layout.archive_key("acme", int(now.timestamp() * 1000))
    populate(store, [old, fresh, "metrics_1m/tenant=acme/notes.txt"])
    args = ["retention", "--data-dir", str(tmp_path)]

    dry = runner.invoke(app, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert dry.stdout.splitlines() == [old]
    assert "would delete 1 objects (1 kept)" in dry.stderr
    assert "left alone (not a partition key): metrics_1m/tenant=acme/notes.txt" in dry.stderr
    assert store.exists(old) and not store.exists(STATE_KEY)

    real = runner.invoke(app, [*args, "--tenant", "acme"])
    assert real.exit_code == 0, real.output
    assert real.stdout.splitlines() == [old]
    assert "deleted 1 objects (1 kept)" in real.stderr
    assert not store.exists(old) and store.exists(fresh)


def test_cli_clock_behind_exits_0_and_says_why(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "store")
    old = layout.archive_key("acme", midnight_ms(-1000))
    populate(store, [old])
    store.put(STATE_KEY, json.dumps({"last_run_ms": 4102444800000}).encode())  # 2100-01-01
    result = runner.invoke(app, ["retention", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "nothing deleted" in result.stderr and "2100-01-01 00:00:00 UTC" in result.stderr
    assert result.stdout == "" and store.exists(old)


def test_cli_store_failure_is_one_line_exit_1(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    result = runner.invoke(
        app,
        ["retention", "--data-dir", str(tmp_path)],
        env={"GRAVIX_OBJECT_STORE_URL": f"file://{not_a_folder}"},
    )
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.stderr.startswith("error:") and len(result.stderr.splitlines()) == 1


def test_cli_bad_override_is_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["retention", "--data-dir", str(tmp_path)],
        env={"GRAVIX_TENANT_RETENTION": '{"acme": {"raw_days": 7}}'},
    )
    assert result.exit_code == 2
    assert "unknown setting 'raw_days'" in result.stderr and "Traceback" not in result.output

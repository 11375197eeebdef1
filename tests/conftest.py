"""Shared fixtures: settings on a temp data dir, an in-process app, real servers."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gravix.config import Settings, load_settings
from gravix.ingest.app import IngestApp
from gravix.ingest.keys import KeyStore


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No GRAVIX_* from the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith("GRAVIX_"):
            monkeypatch.delenv(name)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(
        data_dir=tmp_path / "data",
        node_id="test-node",
        spool_min_free_bytes=0,
        rate_limit_per_second=10_000,
        rate_limit_burst=10_000,
        key_refresh_seconds=0.2,
    )


@pytest.fixture
def tenant_key(settings: Settings) -> str:
    return KeyStore(settings.keys_db).create("acme")[1]


@pytest.fixture
def app(settings: Settings, tenant_key: str) -> Iterator[IngestApp]:
    application = IngestApp(settings)
    application.start()
    yield application
    application.stop()


@pytest.fixture
async def client(app: IngestApp, tenant_key: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://gravix.test",
        headers={"Authorization": f"Bearer {tenant_key}"},
    ) as c:
        yield c


@pytest.fixture
def tenant_key_factory() -> Any:
    """Make a key for tenant acme in any data dir (for real-process tests)."""

    def make(data_dir: Path, tenant: str = "acme") -> str:
        return KeyStore(data_dir / "keys.db").create(tenant)[1]

    return make

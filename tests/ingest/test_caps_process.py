"""Cardinality caps per tenant, through a real `gravix serve` and its settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.factories import fact
from tests.procs import ServerProcess


def test_a_tenant_cannot_make_ten_thousand_services(
    tmp_path: Path, tenant_key_factory: Any
) -> None:
    data_dir = tmp_path / "data"
    acme, globex = tenant_key_factory(data_dir), tenant_key_factory(data_dir, "globex")
    env = {"GRAVIX_MAX_SERVICES_PER_TENANT": "100", "GRAVIX_MAX_SERIES_PER_TENANT": "150"}
    with ServerProcess(data_dir, env=env, log_dir=tmp_path) as server:
        url = f"{server.url}/api/v1/facts"
        with httpx.Client(headers={"Authorization": f"Bearer {acme}"}, timeout=30) as client:
            # What the issue saw accepted: 10,000 new services in one go.
            flood = client.post(url, json=[fact(service=f"svc-{i}") for i in range(10_000)])
            assert flood.status_code == 400
            error = flood.json()["error"]
            assert error["code"] == "series_limit" and error["field"] == "service"
            assert (
                "100 services" in error["message"] and "max_services_per_tenant" in error["message"]
            )
            # Up to the cap is fine, one more is not, and known services go on.
            fill = [fact(service=f"svc-{i}") for i in range(100)]
            assert client.post(url, json=fill).status_code == 202
            assert client.post(url, json=fact(service="svc-100")).status_code == 400
            more_paths = [
                fact(service="svc-1", path=f"/p{chr(97 + i % 26)}{i // 26}x") for i in range(50)
            ]
            assert client.post(url, json=more_paths).status_code == 202
            over = client.post(url, json=fact(service="svc-2", path="/one-more"))
            assert (
                over.status_code == 400 and "150 distinct series" in over.json()["error"]["message"]
            )
        # Another tenant's caps are its own.
        with httpx.Client(headers={"Authorization": f"Bearer {globex}"}, timeout=30) as client:
            assert client.post(url, json=fact(service="svc-100")).status_code == 202

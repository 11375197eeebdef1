"""Structured JSON logs carry the request id."""

from __future__ import annotations

import json
import logging

import pytest

from gravix.logs import JsonFormatter, request_id_var


def test_json_line_has_request_id_and_fields() -> None:
    record = logging.LogRecord("gravix.ingest", logging.INFO, __file__, 1, "hello", None, None)
    record.fields = {"status": 400}
    token = request_id_var.set("rid-7")
    try:
        line = json.loads(JsonFormatter().format(record))
    finally:
        request_id_var.reset(token)
    assert line["message"] == "hello"
    assert line["request_id"] == "rid-7"
    assert line["status"] == 400
    assert line["level"] == "info" and line["logger"] == "gravix.ingest"
    assert line["ts"].endswith("Z")


async def test_rejections_are_logged_with_request_id(
    client: object, caplog: pytest.LogCaptureFixture
) -> None:
    import httpx

    assert isinstance(client, httpx.AsyncClient)
    caplog.set_level(logging.INFO, logger="gravix.ingest")
    await client.post("/api/v1/facts", json={"status": 1}, headers={"X-Request-ID": "log-me"})
    lines = [JsonFormatter().format(r) for r in caplog.records if r.name == "gravix.ingest"]
    rejected = [json.loads(line) for line in lines if "rejected" in line]
    assert rejected
    assert rejected[0]["status"] == 400

"""Pins the one JSON error shape every HTTP surface uses."""

from __future__ import annotations

import httpx

from gravix.errors import InvalidFacts, ItemError, error_body


def test_error_body_shape() -> None:
    err = InvalidFacts(
        "1 of 2 facts are invalid; the batch was rejected",
        field="status",
        items=[ItemError(1, "status", "status must be between 100 and 599")],
    )
    assert error_body(err, "rid-1") == {
        "error": {
            "code": "invalid_fact",
            "message": "1 of 2 facts are invalid; the batch was rejected",
            "field": "status",
            "request_id": "rid-1",
            "items": [
                {"index": 1, "field": "status", "message": "status must be between 100 and 599"}
            ],
        }
    }


def test_item_errors_are_capped_at_100() -> None:
    err = InvalidFacts("many", items=[ItemError(i, "status", "bad") for i in range(250)])
    assert len(error_body(err, None)["error"]["items"]) == 100


async def test_http_errors_share_the_shape(client: httpx.AsyncClient) -> None:
    responses = [
        await client.post("/api/v1/facts", content=b"{", headers={"X-Request-ID": "abc"}),
        await client.post("/api/v1/facts", headers={"Authorization": "Bearer nope"}, json={}),
        await client.get("/no/such/route"),
        await client.get("/api/v1/facts"),
        await client.post("/api/v1/facts", content=b"x", headers={"Content-Type": "text/csv"}),
    ]
    assert [r.status_code for r in responses] == [400, 401, 404, 405, 415]
    for r in responses:
        body = r.json()
        assert set(body) == {"error"}
        assert {"code", "message", "field", "request_id"} <= set(body["error"])
        assert body["error"]["request_id"] == r.headers["x-request-id"]
        assert r.headers["content-type"].startswith("application/json")
    assert responses[0].json()["error"]["request_id"] == "abc"


def test_senders_read_the_shape_back_in_one_line() -> None:
    from gravix.errors import describe_error_body

    body = b'{"error": {"code": "invalid_fact", "message": "1 of 2 facts is invalid", '
    body += b'"field": "status", "request_id": "r", "items": [{"index": 1, "field": "status", '
    body += b'"message": "status must be an integer between 100 and 599"}]}}'
    assert describe_error_body(body) == (
        "invalid_fact (field status): 1 of 2 facts is invalid; "
        "first: item 1 status: status must be an integer between 100 and 599"
    )
    assert describe_error_body(b"<html>bad gateway</html>") == "<html>bad gateway</html>"
    assert describe_error_body(b'["error"]') == '["error"]'
    assert describe_error_body(b"") == ""

"""Low-cardinality rules for ``path``: raw ids are refused with a suggested template."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gravix.errors import InvalidFacts
from gravix.schema import MEDIA_TYPES, decode_facts
from gravix.schema.paths import path_problem, template_path

JSON, NDJSON, PROTOBUF = MEDIA_TYPES


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/users/123", "/users/{id}"),
        ("/users/0", "/users/{id}"),
        ("/users/0b7e4a52-5c1e-4e8f-9f5a-3c2d1e0f9a8b", "/users/{id}"),
        ("/users/0B7E4A52-5C1E-4E8F-9F5A-3C2D1E0F9A8B/cart", "/users/{id}/cart"),
        ("/blobs/0b7e4a525c1e4e8f9f5a3c2d1e0f9a8b", "/blobs/{id}"),
        ("/commits/5f2b9c0e8a7d6b4c", "/commits/{id}"),
        ("/commits/a3f9c2e1", "/commits/{id}"),
        ("/commits/1234abcd/files", "/commits/{id}/files"),
        ("/users/ada@example.com", "/users/{email}"),
        ("/users/ada%40example.com/avatar", "/users/{email}/avatar"),
        ("/files/123.json", "/files/{id}.json"),
        ("/orgs/42/repos/7", "/orgs/{id}/repos/{id}"),
        ("/search?q=shoes", "/search"),
        ("/users/{id}?expand=orders", "/users/{id}"),
        ("/docs#install", "/docs"),
        ("/users/123?tab=1#top", "/users/{id}"),
    ],
)
def test_raw_ids_are_rejected_with_a_template(path, template):
    problem = path_problem(path)
    assert problem is not None
    assert problem.startswith("path contains ")
    assert problem.endswith(f"; use a route template such as {template}")


def test_the_message_names_every_problem():
    assert path_problem("/users/123") == (
        "path contains a raw id; use a route template such as /users/{id}"
    )
    assert path_problem("/a/1/b/2?x=1#y") == (
        "path contains raw ids and a query string and a fragment; "
        "use a route template such as /a/{id}/b/{id}"
    )


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/health",
        "/users/{id}",
        "/users/{user_id}/orders/{order_id}",
        "/users/:id",
        "/v1/users",
        "/v1.2/users",
        "/api/v2/items/{sku}.json",
        "/deadbeef",  # letters only: a word, not an id
        "/cafe/facade/decade",
        "/abc123",  # too short to be a hash
        "/users/@me",
        "/.well-known/openid-configuration",
        "/static/app-3.js",
        "/a/b/c/",
        "//double",
        "/caf\u00e9",
    ],
)
def test_route_templates_are_accepted(path):
    assert path_problem(path) is None


@pytest.mark.parametrize("path", ["/a b", "/tab\there", "/new\nline"])
def test_whitespace_is_rejected(path):
    assert path_problem(path) == "path must not contain spaces or control characters"


@pytest.mark.parametrize("media_type", MEDIA_TYPES)
def test_the_fact_error_carries_the_suggestion(media_type, limits, make_fact, encode):
    body = encode([make_fact(path="/users/123/orders")], media_type)
    with pytest.raises(InvalidFacts) as err:
        decode_facts(body, media_type, limits)
    assert err.value.field == "path"
    assert err.value.items[0].message == (
        "path contains a raw id; use a route template such as /users/{id}/orders"
    )


words = st.text(alphabet="ghijklmnopqrstuvwxyz_-", min_size=1, max_size=12)
placeholders = words.map(lambda w: "{" + w.replace("-", "_") + "}") | words.map(lambda w: ":" + w)
segments = st.lists(words | placeholders, min_size=0, max_size=6)


@given(segments)
def test_templates_of_words_and_placeholders_pass(parts):
    assert path_problem("/" + "/".join(parts)) is None


@given(segments, st.integers(min_value=0, max_value=10**30), st.data())
def test_any_numeric_segment_is_replaced_by_id(parts, number, data):
    position = data.draw(st.integers(min_value=0, max_value=len(parts)))
    raw = [*parts[:position], str(number), *parts[position:]]
    templated = [*parts[:position], "{id}", *parts[position:]]
    problem = path_problem("/" + "/".join(raw))
    assert problem is not None
    assert problem.endswith("such as /" + "/".join(templated))


@given(st.uuids())
def test_any_uuid_is_an_id(value):
    assert path_problem(f"/things/{value}") is not None
    assert path_problem(f"/things/{str(value).upper()}/x") is not None


@pytest.mark.parametrize(
    ("url", "template"),
    [
        ("/users/123", "/users/{id}"),
        ("/users/123?tab=1#top", "/users/{id}"),
        ("/orgs/42/repos/7", "/orgs/{id}/repos/{id}"),
        ("/files/123.json", "/files/{id}.json"),
        ("/users/ada@example.com/avatar", "/users/{email}/avatar"),
        ("/health", "/health"),
        ("", "/"),
        ("users/5", "/users/{id}"),
        ("/a b/é", "/a%20b/%C3%A9"),
        ("/" + "x" * 300, "/" + "x" * 255),
    ],
)
def test_template_path_turns_a_url_into_a_route_template(url, template):
    assert template_path(url) == template
    assert path_problem(template_path(url)) is None


@given(st.text(max_size=400))
def test_template_path_always_gives_an_acceptable_template(url):
    assert path_problem(template_path(url)) is None

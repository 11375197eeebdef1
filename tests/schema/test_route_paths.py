"""Low-cardinality rules for ``path``: raw ids are refused with a suggested template,
and every placeholder is stored as ``{id}`` (issue #18: one route, one name)."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gravix.errors import InvalidFacts
from gravix.schema import MEDIA_TYPES, decode_facts, partition_facts
from gravix.schema.model import MAX_PATH_LENGTH
from gravix.schema.paths import normalise_path, path_problem, template_path
from gravix.schema.rules import route_of
from gravix.schema.validate import FACTS, check_fields

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
        ("/users/ada@example.com", "/users/{id}"),
        ("/users/ada%40example.com/avatar", "/users/{id}/avatar"),
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
        ("/users/ada@example.com/avatar", "/users/{id}/avatar"),
        ("/users/<int:user_id>/orders/{order_id}?x=1", "/users/{id}/orders/{id}"),
        ("users/:id", "/users/{id}"),
        ("/users/{id?}", "/users/{id}"),
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


DOC = Path(__file__).resolve().parents[2] / "docs" / "facts.md"


def stored_forms() -> list[tuple[str, str]]:
    """The "sent | stored as" table of docs/facts.md."""
    text = DOC.read_text()
    section = text[text.index("### Placeholders are stored as") :]
    return re.findall(r"^\| `(/[^`]*)` \| `(/[^`]*)` \|$", section, re.M)


def test_the_doc_table_is_found():
    assert len(stored_forms()) >= 10


@pytest.mark.parametrize(("sent", "stored"), stored_forms())
def test_every_placeholder_is_stored_as_id(sent, stored):
    assert normalise_path(sent) == stored
    assert path_problem(stored) is None
    assert route_of(sent) == stored
    assert template_path(sent) == stored  # what the client and the log importer send


@pytest.mark.parametrize("media_type", MEDIA_TYPES)
@pytest.mark.parametrize(("sent", "stored"), stored_forms())
def test_each_encoding_stores_the_normal_form(sent, stored, media_type, limits, make_fact, encode):
    body = encode([make_fact(path=sent)], media_type)
    assert [f.path for f in decode_facts(body, media_type, limits)] == [stored]


def test_the_fast_and_slow_paths_store_the_same_route(limits, make_fact):
    sent = [make_fact(event_id=f"e{i}", path=p) for i, (p, _) in enumerate(stored_forms())]
    fast = msgspec.convert(sent, list[FACTS.struct])
    assert FACTS.finish(fast, limits)
    slow = [check_fields(FACTS, raw, limits)[0] for raw in sent]
    assert fast == slow
    # OTLP's partial acceptance: the same rules, a bad item among them.
    facts, rejected = partition_facts([*sent, make_fact(path="/users/42")], limits)
    assert facts == fast and [i for i, _ in rejected] == [len(sent)]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/users/{user_id}/orders/42", "use a route template such as /users/{id}/orders/{id}"),
        ("/a/{x y}", "path must not contain spaces or control characters"),
        ("/search/:q?x=1", "use a route template such as /search/{id}"),
    ],
)
def test_a_bad_path_is_still_refused_with_the_normal_form(path, message, limits, make_fact, encode):
    with pytest.raises(InvalidFacts) as err:
        decode_facts(encode([make_fact(path=path)], MEDIA_TYPES[0]), MEDIA_TYPES[0], limits)
    assert err.value.items[0].message.endswith(message)


def test_a_rewrite_past_the_length_limit_keeps_the_path_as_sent():
    sent = "/:a" * (MAX_PATH_LENGTH // 3)  # 255 characters; with {id} it would be 425
    assert path_problem(sent) is None
    assert normalise_path(sent) == sent and route_of(sent) == sent
    assert len(template_path(sent)) <= MAX_PATH_LENGTH


names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True)
spelled = st.one_of(
    names.map(lambda n: "{" + n + "}"),
    names.map(lambda n: "{" + n + ":int}"),
    names.map(lambda n: ":" + n),
    names.map(lambda n: "<" + n + ">"),
    names.map(lambda n: "<int:" + n + ">"),
)
literal = st.from_regex(r"[a-z][a-z-]{0,8}", fullmatch=True)


@given(st.lists(st.tuples(literal, st.booleans()), min_size=1, max_size=6), st.data())
def test_any_spelling_of_a_route_is_one_route(segments, data):
    """Two spellings of the same route (each placeholder named its own way) store alike."""

    def spell() -> str:
        return "".join(
            f"/{word}/{data.draw(spelled)}" if held else f"/{word}" for word, held in segments
        )

    first, second = spell(), spell()
    assert route_of(first) == route_of(second) == normalise_path(first)
    assert route_of(first) == "".join(f"/{w}/{{id}}" if held else f"/{w}" for w, held in segments)


@given(st.text(max_size=300))
def test_template_path_is_already_in_its_stored_form(url):
    template = template_path(url)
    assert normalise_path(template) == template
    assert route_of(template) == template

"""Bad JSON and JSON of the wrong shape, described in Gravix's words with the field's path."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gravix.errors import BadRequest
from gravix.query.spec import Query, decode_query
from gravix.schema.problems import describe_type, json_problem, struct_problem


def _problem(body: bytes) -> str:
    try:
        msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError) as e:
        return json_problem(e, body)
    raise AssertionError("the body decoded")


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b'{"a": "b\xff"}', "it is not valid UTF-8 (byte 8)"),
        (b"\xff", "it is not valid UTF-8 (byte 0)"),
        (b'{"a": 1,, }', "it has an unexpected character at byte 8"),
        (b'{"\xc3\xa9": 1,, }', "it has an unexpected character at byte 9"),  # bytes, not chars
        (b'[{"a": 1}', "it ends before the JSON value is complete"),
        (b"[" * 100_000, "it nests arrays or objects too deeply"),
    ],
)
def test_json_problems_are_ours(body: bytes, said: str) -> None:
    assert _problem(body) == said


@pytest.mark.parametrize(
    ("raw", "said", "field"),
    [
        ([], "the body must be a JSON object", ""),
        ({"from": 1, "metrics": ["p95"], "tenant": "x"}, "unknown field 'tenant'", "tenant"),
        ({"from": 1}, "'metrics' is required", "metrics"),
        ({"from": 1, "metrics": "p95"}, "metrics must be an array of strings", "metrics"),
        ({"from": 1, "metrics": ["a", 2]}, "metrics[1] must be a string", "metrics[1]"),
        ({"from": [], "metrics": []}, "from must be a string or an integer", "from"),
        (
            {"from": 1, "metrics": [], "filters": [{"dimension": "env", "values": [], "op": "x"}]},
            'filters[0].op must be one of "eq", "neq", "in", "not_in"',
            "filters[0].op",
        ),
        (
            {"from": 1, "metrics": [], "order": [{"by": "x", "up": True}]},
            "unknown field 'up'",
            "order[0].up",
        ),
    ],
)
def test_struct_problems_name_the_field(raw: object, said: str, field: str) -> None:
    assert struct_problem(raw, Query) == (said, field)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


@given(st.dictionaries(st.sampled_from(["from", "metrics", "limit", "order", "x"]), JSON_VALUES))
def test_every_refused_query_gets_a_reason_naming_a_field_it_sent(raw: dict[str, object]) -> None:
    try:
        msgspec.convert(raw, Query)
    except msgspec.ValidationError:
        message, field = struct_problem(raw, Query)
        assert message and "`" not in message  # no library wording (msgspec quotes with `)
        top = field.split(".")[0].split("[")[0]
        assert top in raw or message.endswith("is required")


def test_types_read_as_the_docs_say_them() -> None:
    assert (
        describe_type(list[str | int]) == "an array of values that are each a string or an integer"
    )
    assert describe_type(bool | None) == "true or false or null"


@given(st.binary(max_size=64) | st.sampled_from([b"1 x", b"[1] x", b'{"from": 1} 2']))
def test_any_query_body_is_a_query_or_a_bad_request(body: bytes) -> None:
    try:
        decode_query(body)
    except BadRequest as e:
        assert e.message and "`" not in e.message

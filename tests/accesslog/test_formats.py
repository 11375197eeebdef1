"""Parsing lines of every format into facts, and bad lines never raising."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gravix.accesslog.formats import compile_format, latency_hint
from gravix.accesslog.parser import LineParser, make_parser
from gravix.accesslog.timestamps import clf_ms, iso_ms
from gravix.errors import ConfigError
from tests.accesslog.logs import apache, combined, common, stock_combined

NOW = 1_790_000_000.0  # 2026-09-21T14:13:20Z
PREFIX = "al-0000000000000000-"


def parse(parser: LineParser, text: str | bytes) -> list[dict[str, Any]]:
    buf = text.encode() if isinstance(text, str) else text
    out: list[Any] = []
    pos = 0
    while pos < len(buf):
        pos = parser.parse(buf, pos, len(buf), 0, PREFIX, out, len(out) + 3)
    return [msgspec.to_builtins(f) for f in out]


def test_combined_line_becomes_a_fact() -> None:
    parser = make_parser("combined", service="web", env="prod", version="v42")
    line = combined(NOW, "POST", "/users/123/orders?page=2", 502, "1.830")
    [fact] = parse(parser, line)
    assert fact == {
        "event_id": PREFIX + "0",
        "timestamp": int(NOW * 1000),
        "service": "web",
        "method": "POST",
        "path": "/users/{id}/orders",
        "status": 502,
        "latency_ms": pytest.approx(1830.0),
        "env": "prod",
        "version": "v42",
    }


def test_event_ids_are_byte_offsets() -> None:
    parser = make_parser("combined", service="web")
    first, second = combined(NOW), combined(NOW + 1, url="/health")
    facts = parse(parser, first + second)
    assert [f["event_id"] for f in facts] == [PREFIX + "0", PREFIX + str(len(first))]
    assert [f["timestamp"] for f in facts] == [int(NOW * 1000), int(NOW * 1000) + 1000]


def test_apache_preset_reads_microseconds() -> None:
    parser = make_parser("apache", service="web")
    [fact] = parse(parser, apache(NOW, "DELETE", "/carts/5f2b9c0e8a7d6b4c", 204, 1500))
    assert (fact["method"], fact["path"], fact["status"]) == ("DELETE", "/carts/{id}", 204)
    assert fact["latency_ms"] == pytest.approx(1.5)


def test_configurable_nginx_format_with_iso_time_and_host() -> None:
    fmt = '$host $remote_addr [$time_iso8601] "$request" $status $request_time "$http_user_agent"'
    parser = make_parser(fmt, service="fallback", service_from_host=True)
    line = (
        'api.example.com 10.0.0.1 [2026-09-21T16:13:20+02:00] "GET /a HTTP/2.0" 200 0.005 "x y"\n'
    )
    [fact] = parse(parser, line)
    assert fact["timestamp"] == int(NOW * 1000)  # the offset is applied
    assert fact["service"] == "fallback"  # no rule maps api.example.com
    assert fact["latency_ms"] == pytest.approx(5.0)


def test_configurable_format_with_separate_method_uri_and_msec() -> None:
    parser = make_parser("$msec|$request_method|$request_uri|$status|$request_time", service="w")
    [fact] = parse(parser, "1790000000.123|PUT|/items/42|201|0.100\n")
    assert (fact["timestamp"], fact["method"], fact["path"]) == (
        1790000000123,
        "PUT",
        "/items/{id}",
    )


def test_configurable_apache_format() -> None:
    parser = make_parser('%v %h %t "%r" %>s %{ms}T', service="w")
    line = f'shop 1.2.3.4 [{combined(NOW).split("[")[1].split("]")[0]}] "HEAD / HTTP/1.0" 304 17\n'
    [fact] = parse(parser, line)
    assert (fact["method"], fact["status"], fact["latency_ms"]) == ("HEAD", 304, 17.0)


def test_json_lines_default_and_mapped_fields() -> None:
    default = make_parser("json", service="web")
    line = {"timestamp": "2026-09-21T14:13:20Z", "method": "get", "path": "/u/7",
            "status": 200, "latency_ms": 12.5}  # fmt: skip
    [fact] = parse(default, json.dumps(line) + "\n")
    assert (fact["method"], fact["path"], fact["latency_ms"]) == ("GET", "/u/{id}", 12.5)
    mapped = make_parser(
        "json",
        service="web",
        fields=["timestamp=time", "request=req", "latency_s=request_time", "service=app"],
    )
    line2 = {"time": NOW, "req": "POST /login HTTP/1.1", "status": "401", "request_time": "0.2",
             "app": "auth"}  # fmt: skip
    [fact2] = parse(mapped, json.dumps(line2) + "\n")
    assert fact2["service"] == "auth" and fact2["status"] == 401
    assert fact2["latency_ms"] == pytest.approx(200.0)
    assert fact2["timestamp"] == int(NOW * 1000)


BAD_LINES = [
    ("garbage", "does not match"),
    (combined(NOW).replace("0.042", "-"), "request time '-'"),
    (combined(NOW, status=999), "status '999'"),
    (combined(NOW, status=42), "status '42'"),
    (combined(NOW, method="FETCH"), "method 'FETCH'"),
    (combined(NOW).replace("/Sep/", "/Foo/"), "time"),
    (combined(NOW).replace('HTTP/1.1"', "HTTP/1.1"), "does not match"),  # unclosed quote
    (combined(NOW, seconds="4000"), "outside"),  # over an hour
    ('1.2.3.4 - - [x] "\\x16\\x03\\x01" 400 0 "-" "-" 0.000\n', "does not match"),  # TLS probe
]


def test_bad_lines_are_counted_with_reasons_and_good_ones_around_them_kept() -> None:
    parser = make_parser("combined", service="web", keep_bad=len(BAD_LINES))
    good = combined(NOW)
    text = "".join(good + (bad if bad.endswith("\n") else bad + "\n") for bad, _ in BAD_LINES)
    facts = parse(parser, text + good)
    assert len(facts) == len(BAD_LINES) + 1
    assert parser.bad == len(BAD_LINES)
    assert parser.lines == 2 * len(BAD_LINES) + 1
    for sample, (_, reason) in zip(parser.bad_samples, BAD_LINES, strict=True):
        assert reason in sample.reason, (sample, reason)
    assert [s.line for s in parser.bad_samples] == list(range(2, 2 * len(BAD_LINES) + 1, 2))


def test_json_bad_lines_have_reasons() -> None:
    parser = make_parser("json", service="web")
    lines = ["{", "[1]", '{"method": "GET"}', "", '{"timestamp": 1, "method": "GET", "path": "/",'
             ' "status": 200, "latency_ms": -1}']  # fmt: skip
    assert parse(parser, "\n".join(lines) + "\n") == []
    assert parser.bad == 4 and parser.lines == 4  # the blank line is neither
    reasons = [s.reason for s in parser.bad_samples]
    assert reasons[0].startswith("not JSON") and reasons[1] == "not a JSON object"
    assert "method" not in reasons[2] and "path" in reasons[2]
    assert "latency_ms" in reasons[3]


@pytest.mark.parametrize(
    ("fmt", "message"),
    [
        ("$remote_addr $status", "lacks time"),
        ('[$time_local] "$request" $remote_addr', "lacks status"),
        ("$time_local\n$request", "one line"),
    ],
)
def test_unusable_formats_are_config_errors(fmt: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        compile_format(fmt)


def test_option_mistakes_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="service"):
        make_parser("combined", service="Web App")
    with pytest.raises(ConfigError, match="no service"):
        make_parser("combined")
    with pytest.raises(ConfigError, match=r"\$host"):
        make_parser("combined", service_from_host=True)
    with pytest.raises(ConfigError, match="ROLE=KEY"):
        make_parser("json", service="w", fields=["speed=x"])


def test_timestamp_parsers() -> None:
    assert clf_ms(b"21/Sep/2026:16:13:20 +0200") == int(NOW * 1000)
    assert clf_ms(b"21/Sep/2026:12:13:20 -0200") == int(NOW * 1000)
    assert iso_ms("2026-09-21T14:13:20Z") == int(NOW * 1000)
    with pytest.raises(ValueError):
        iso_ms("2026-09-21T14:13:20")  # no offset
    with pytest.raises(ValueError):
        clf_ms(b"21/Sep/2026:25:33:20 +0000")


line_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=300)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(line_text, st.sampled_from([combined(NOW), combined(NOW)[:-1] + " x"])),
                max_size=8))  # fmt: skip
def test_parser_never_raises_on_arbitrary_text(lines: list[str]) -> None:
    for name in ("combined", "apache", "json", '$msec "$request" $status $request_time'):
        parser = make_parser(name, service="web", keep_bad=100)
        buf = "".join(line.replace("\n", "") + "\n" for line in lines).encode()
        facts = parse(parser, buf)
        assert parser.lines == len(facts) + parser.bad  # blank JSON lines are neither
        for fact in facts:
            assert 100 <= fact["status"] <= 599


def test_a_large_buffer_parses(benchmark_lines: int = 20_000) -> None:
    # Its speed is bench/logs.py's to measure, never asserted here.
    parser = make_parser("combined", service="web")
    buf = "".join(combined(NOW + i / 100, url=f"/users/{i}") for i in range(benchmark_lines))
    assert len(parse_all(parser, buf.encode())) == benchmark_lines


def parse_all(parser: LineParser, buf: bytes) -> list[Any]:
    out: list[Any] = []
    pos = 0
    while pos < len(buf):
        pos = parser.parse(buf, pos, len(buf), 0, PREFIX, out, 10**9)
    return out


def test_unbracketed_time_local_and_a_query_string_in_request_uri() -> None:
    parser = make_parser(
        "$time_local|$request_method $request_uri|$status|$request_time", service="w"
    )
    [fact] = parse(parser, "21/Sep/2026:14:13:20 +0000|GET /search?q=a b|200|0.010\n")
    assert (fact["timestamp"], fact["path"]) == (int(NOW * 1000), "/search")


# --- formats without a request time: stock nginx and Apache ------------------


def test_stock_nginx_combined_lines_are_facts_without_a_latency() -> None:
    parser = make_parser("combined", service="web")
    lines = [
        stock_combined(NOW, "POST", "/users/7", 503),
        combined(NOW, seconds="0.250"),  # the same format with $request_time
        stock_combined(NOW).replace('"\n', '"  \r\n'),  # trailing blanks, CRLF
        apache(NOW, micros=1500).rsplit(" ", 1)[0] + "\n",  # Apache's stock combined too
    ]
    facts = parse(parser, "".join(lines))
    assert [f.get("latency_ms") for f in facts] == [None, 250.0, None, None]
    assert (facts[0]["method"], facts[0]["path"], facts[0]["status"]) == (
        "POST",
        "/users/{id}",
        503,
    )
    assert "latency_ms" not in facts[0]  # left out of the body: unknown
    assert (parser.untimed, parser.bad) == (3, 0)


def test_apache_common_with_and_without_percent_d() -> None:
    parser = make_parser("common", service="web")
    lines = [common(NOW, "DELETE", "/carts/5", 204, "-"), common(NOW, micros=1500)]
    facts = parse(parser, "".join(lines) + common(NOW, micros=1500).replace("1500", "x"))
    assert [(f["method"], f["status"], f.get("latency_ms")) for f in facts] == [
        ("DELETE", 204, None),
        ("GET", 200, 1.5),
    ]
    assert (parser.untimed, parser.bad) == (1, 1)
    assert "request time 'x' is not a number" in parser.bad_samples[0].reason


def test_a_line_of_another_preset_is_named_in_its_reason() -> None:
    parser = make_parser("combined", service="web")
    assert parse(parser, common(NOW)) == []
    assert parser.bad_samples[0].reason == (
        "does not match the log format; it matches --format common"
    )
    parser = make_parser("common", service="web")
    assert parse(parser, stock_combined(NOW)) == []
    assert parser.bad_samples[0].reason.endswith("it matches --format combined")


def test_a_custom_format_without_a_request_time_imports_without_latency() -> None:
    fmt = '$remote_addr [$time_local] "$request" $status'
    parser = make_parser(fmt, service="web")
    line = f'1.2.3.4 [{combined(NOW).split("[")[1].split("]")[0]}] "GET /a HTTP/1.1" 404\n'
    [fact] = parse(parser, line)
    assert (fact["status"], fact.get("latency_ms"), parser.untimed) == (404, None, 1)
    assert compile_format(fmt).latency == "no"
    hint = parser.latency_hint()
    assert f"log_format gravix '{fmt} $request_time';" in hint
    assert f"--format '{fmt} $request_time'" in hint


def test_the_hint_gives_the_server_line_to_add_the_request_time() -> None:
    nginx = latency_hint(compile_format("combined"))
    assert "not in latency percentiles" in nginx and "latency_count" in nginx
    # The line to paste, and the preset reads the new lines as well as the old.
    assert (
        'log_format gravix \'$remote_addr - $remote_user [$time_local] "$request" $status '
        '$body_bytes_sent "$http_referer" "$http_user_agent" $request_time\';' in nginx
    )
    assert "--format combined reads lines with and without it" in nginx
    apache_common = latency_hint(compile_format("common"))
    assert 'LogFormat "%h %l %u %t \\"%r\\" %>s %b %D" gravix' in apache_common
    assert "--format common reads lines with and without it" in apache_common
    custom = latency_hint(compile_format('%h %t "%r" %>s'))
    assert 'LogFormat "%h %t \\"%r\\" %>s %D" gravix' in custom
    # The lines the hint tells the server to write parse, with their latency.
    added = nginx.split("log_format gravix '")[1].split("'")[0]
    [fact] = parse(make_parser(added, service="web"), combined(NOW, seconds="0.007"))
    assert fact["latency_ms"] == pytest.approx(7.0)


def test_json_lines_without_a_latency_key_are_facts_without_a_latency() -> None:
    parser = make_parser("json", service="web")
    base = {"timestamp": "2026-09-21T14:13:20Z", "method": "GET", "path": "/u/1", "status": 500}
    text = "".join(json.dumps(o) + "\n" for o in (base, base | {"latency_ms": None},
                                                 base | {"latency_ms": "slow"}))  # fmt: skip
    facts = parse(parser, text)
    assert [f.get("latency_ms") for f in facts] == [None, None]
    assert (parser.untimed, parser.bad) == (2, 1)
    assert "'latency_ms'" in parser.latency_hint() and "--field latency_s=" in parser.latency_hint()

"""Route rules per service: patterns, the host map, the rules file."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gravix.accesslog.routes import RouteRules, compile_patterns
from gravix.errors import ConfigError
from gravix.schema.paths import path_problem, template_path

RULES = """
[services.shop]
hosts = ["shop.example.com"]
routes = ["/users/{id}", "/orders/{order_id}/items/{item}", "/static/{file...}", "/users/me"]

[services.api]
hosts = ["api.example.com", "api.internal:8080"]
routes = ["/v1/{tenant}/search"]
"""


@pytest.fixture
def rules(tmp_path: Path) -> RouteRules:
    path = tmp_path / "routes.toml"
    path.write_text(RULES)
    return RouteRules.load(path)


@pytest.mark.parametrize(
    ("url", "template"),
    [
        ("/users/ada", "/users/{id}"),  # a pattern: even a word is the id
        ("/users/me", "/users/{id}"),  # the first pattern in file order wins
        ("/orders/77/items/x-1?full=1", "/orders/{order_id}/items/{item}"),
        ("/static/css/site.v2.css", "/static/{file...}"),
        ("/orders/77", "/orders/{id}"),  # no pattern: the raw-id rules
        ("/users/", "/users/"),  # {id} needs a non-empty segment
        ("/products/0b7e4a52-5c1e-4e8f-9f5a-3c2d1e0f9a8b/reviews", "/products/{id}/reviews"),
        ("http://shop.example.com/users/1", "/users/{id}"),  # a proxy's absolute URL
    ],
)
def test_urls_become_templates(rules: RouteRules, url: str, template: str) -> None:
    shop = rules.for_service("shop")
    assert shop.template(url.encode()) == template
    assert path_problem(shop.template(url.encode())) is None
    assert shop.template(url.encode()) == template  # again, from a cache


def test_a_service_without_rules_gets_the_raw_id_rules(rules: RouteRules) -> None:
    assert rules.for_service("other").template(b"/users/ada") == "/users/ada"
    assert rules.for_service("other").template(b"/users/42/") == "/users/{id}/"
    assert rules.for_service("api").template(b"/v1/acme/search?q=1") == "/v1/{tenant}/search"


def test_hosts_map_to_services_ignoring_case_and_port(rules: RouteRules) -> None:
    assert rules.service_of_host("Shop.Example.com") == "shop"
    assert rules.service_of_host("shop.example.com:443") == "shop"
    assert rules.service_of_host("api.internal:8080") == "api"
    assert rules.service_of_host("unknown.example.com") is None


def test_the_caches_are_bounded(rules: RouteRules, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gravix.accesslog.routes.CACHE_MAX", 10)
    shop = rules.for_service("shop")
    for i in range(25):
        assert shop.template(f"/p{i}/{i}".encode()) == f"/p{i}/{{id}}"
        assert shop.template(f"/q/x{i}".encode()) == f"/q/x{i}"
    assert 0 < len(shop.cache) <= 10 and 0 < len(shop.shapes) <= 10


def test_urls_of_one_shape_share_one_template(rules: RouteRules) -> None:
    other = rules.for_service("other")
    for i in range(100):
        assert other.template(f"/carts/{i}/items/{i:032x}".encode()) == "/carts/{id}/items/{id}"
    assert list(other.shapes) == [b"/carts/{id}/items/{id}"]
    assert other.cache == {}  # URLs with ids rarely repeat: not kept


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[services.Shop]\nroutes = []", "service name"),
        ("[services.shop]\nroutes = ['users/{id}']", "starting with '/'"),
        ("[services.shop]\nroutes = ['/users/123']", "raw id"),
        ("[services.shop]\npaths = []", "unknown key 'paths'"),
        ("[shop]\nroutes = []", "unknown table"),
        ("[services.shop\n", "not valid TOML"),
    ],
)
def test_bad_rules_files_are_config_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "routes.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        RouteRules.load(path)


def test_missing_rules_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="routes"):
        RouteRules.load(tmp_path / "nope.toml")


def test_compiled_patterns_are_one_regex() -> None:
    regex = compile_patterns(["/a/{x}", "/b/{y}/c"])
    assert regex is not None
    match = regex.match("/b/1/c")
    assert match is not None and match.lastindex == 2
    assert regex.match("/b/1/c/d") is None


segment = st.one_of(
    st.integers(0, 10**25).map(str),
    st.integers(0, 2**128).map(lambda n: f"{n:x}"),
    st.uuids().map(str),
    st.sampled_from(["users", "a3f9c2e1", "deadbeef", "123.json", "ada@example.com", ""]),
    st.text(st.characters(codec="utf-8", exclude_characters="/?#"), max_size=12),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(segment, min_size=1, max_size=8), st.sampled_from(["", "?q=1", "#top"]))
def test_without_patterns_urls_get_exactly_the_schema_templates(
    segments: list[str], tail: str
) -> None:
    # The caches (whole URLs, shapes, segments) never change what template_path says.
    url = "/" + "/".join(segments) + tail
    rules = RouteRules().for_service("web")
    for _ in range(2):
        assert rules.template(url.encode()) == template_path(url)

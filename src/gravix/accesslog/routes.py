"""Per-service route rules: which URL becomes which route template, which host which service.

The rules file (``--routes FILE``, TOML)::

    [services.checkout]
    hosts = ["shop.example.com", "checkout.internal"]   # $host -> this service
    routes = [
      "/users/{id}",
      "/orders/{order_id}/items/{item}",
      "/static/{file...}",                              # {name...}: the rest of the path
    ]

A URL matching one of the service's patterns (the query string cut first)
becomes that pattern; the first match in file order wins. ``{name}`` matches
one non-empty segment, ``{name...}`` one or more segments at the end. Any
other URL goes through :func:`gravix.schema.paths.template_path`, which
replaces raw ids (digits, UUIDs, hashes, emails) with ``{id}``. The intake
stores every placeholder as ``{id}`` whatever its name
(:func:`gravix.schema.paths.normalise_path`), so a pattern's names are the
reader's: ``/orders/{order_id}`` is the endpoint ``/orders/{id}``, as from
any other source.
Every template is cached per service in a bounded dict, so the regexes run
once per distinct URL.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from gravix.errors import ConfigError
from gravix.schema.model import MAX_PATH_LENGTH
from gravix.schema.paths import path_problem, template_path

_PLACEHOLDER: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(\.\.\.)?\}")
_SERVICE: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
CACHE_MAX: Final = 65_536


def compile_patterns(patterns: list[str]) -> re.Pattern[str] | None:
    """One anchored regex for all patterns; ``match.lastindex`` names the one that matched."""
    if not patterns:
        return None
    alternatives = []
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern.startswith("/"):
            raise ConfigError(f"route {pattern!r} must be a string starting with '/'")
        problem = path_problem(_PLACEHOLDER.sub("{x}", pattern))
        if len(pattern) > MAX_PATH_LENGTH:
            problem = f"longer than {MAX_PATH_LENGTH} characters"
        if problem is not None:
            raise ConfigError(f"route {pattern!r}: {problem}")
        body, pos = [], 0
        for m in _PLACEHOLDER.finditer(pattern):
            body.append(re.escape(pattern[pos : m.start()]))
            body.append(".+" if m[2] else "[^/]+")
            pos = m.end()
        body.append(re.escape(pattern[pos:]))
        alternatives.append("(" + "".join(body) + ")")
    return re.compile("(?:" + "|".join(alternatives) + r")\Z")


@dataclass(slots=True)
class ServiceRules:
    """The route patterns of one service and its cache of URL -> template."""

    patterns: list[str] = field(default_factory=list)
    regex: re.Pattern[str] | None = None
    cache: dict[bytes, str] = field(default_factory=dict)
    shapes: dict[bytes, str] = field(default_factory=dict)

    def template(self, url: bytes) -> str:
        """The route template of a logged URL (bytes as read from the log)."""
        cached = self.cache.get(url)
        if cached is not None:
            return cached
        path = url.split(b"?", 1)[0].split(b"#", 1)[0]
        if path.startswith((b"http://", b"https://")):  # a proxy's absolute URL: its path
            path = b"/" + path.split(b"://", 1)[1].partition(b"/")[2]
        if self.regex is not None:
            match = self.regex.match(path.decode("utf-8", "replace"))
            if match is not None and match.lastindex:
                return self._remember(url, self.patterns[match.lastindex - 1])
        # URLs with raw ids rarely repeat, their shapes do: "/users/{id}/orders"
        # stands for every "/users/<digits>/orders", so its template is computed once.
        shape = ID_SEGMENTS.sub(b"/{id}", path)
        template = self.shapes.get(shape)
        if template is None:
            template = fast_template(path) or template_path(path.decode("utf-8", "replace"))
            if len(self.shapes) >= CACHE_MAX:
                self.shapes.clear()
            self.shapes[shape] = template
        return template if shape != path else self._remember(url, template)

    def _remember(self, url: bytes, template: str) -> str:
        if len(self.cache) >= CACHE_MAX:
            self.cache.clear()
        self.cache[url] = template
        return template


# Whole segments that are raw ids by the rules of gravix.schema.paths (digits,
# 16+ hex digits, UUIDs): paths that differ only there have one template, as
# template_path turns those segments into "{id}" before anything else.
ID_SEGMENTS: Final = re.compile(
    rb"/(?:[0-9]+|[0-9a-fA-F]{16,}"
    rb"|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})(?=/|\Z)"
)
_VISIBLE: Final = re.compile(rb"/[!-~]*")
# Raw ids by the rules of gravix.schema.paths that need no lookup: long hex, UUIDs.
_LONG_HEX_OR_UUID: Final = re.compile(
    rb"[0-9a-fA-F]{16,}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_SEGMENTS: dict[bytes, str] = {}


def fast_template(path: bytes) -> str | None:
    """:func:`template_path` of a plain path, a segment at a time; None: ask it.

    Logs are full of distinct URLs (``/users/1``, ``/users/2``...) made of few
    distinct segments, so segments are cached, and all-digit ones (raw ids by
    the rules) need no lookup at all. Only visible-ASCII paths within the
    length limit take this way, and the result is checked by
    :func:`path_problem` (cached: templates are few).
    """
    if len(path) > MAX_PATH_LENGTH or _VISIBLE.fullmatch(path) is None:
        return None
    segments = _SEGMENTS
    out = []
    for segment in path.split(b"/"):
        if segment.isdigit():
            out.append("{id}")
            continue
        done = segments.get(segment)
        if done is None and len(segment) >= 16 and _LONG_HEX_OR_UUID.fullmatch(segment):
            out.append("{id}")
            continue
        if done is None:
            done = template_path("/" + segment.decode())[1:]
            if len(segments) >= CACHE_MAX:
                segments.clear()
            segments[segment] = done
        out.append(done)
    template = "/".join(out)
    return template if path_problem(template) is None else None


class RouteRules:
    """Route patterns per service and the host -> service map (see the module docstring)."""

    def __init__(
        self,
        services: dict[str, list[str]] | None = None,
        hosts: dict[str, str] | None = None,
    ) -> None:
        self.hosts = {h.lower(): s for h, s in (hosts or {}).items()}
        self._services: dict[str, ServiceRules] = {}
        for name, patterns in (services or {}).items():
            self._services[name] = ServiceRules(patterns, compile_patterns(patterns))

    @classmethod
    def load(cls, path: Path) -> RouteRules:
        """Read a rules file; ConfigError naming the file when it is unusable."""
        try:
            data = tomllib.loads(path.read_text())
        except OSError as e:
            raise ConfigError(f"--routes {path}: {e.strerror or e}") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"--routes {path}: not valid TOML: {e}") from e
        return cls.from_dict(data, str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "routes") -> RouteRules:
        services: dict[str, list[str]] = {}
        hosts: dict[str, str] = {}
        unknown = set(data) - {"services"}
        if unknown:
            raise ConfigError(f"{where}: unknown table {sorted(unknown)[0]!r}; use [services.NAME]")
        for name, table in (data.get("services") or {}).items():
            if not _SERVICE.fullmatch(name) or not isinstance(table, dict):
                raise ConfigError(
                    f"{where}: [services.{name}] must be a table named by a service name "
                    "(a-z, 0-9, '.', '_', '-')"
                )
            extra = set(table) - {"routes", "hosts"}
            if extra:
                raise ConfigError(
                    f"{where}: [services.{name}] has unknown key {sorted(extra)[0]!r}"
                )
            routes, host_list = table.get("routes", []), table.get("hosts", [])
            if not isinstance(routes, list) or not isinstance(host_list, list):
                raise ConfigError(f"{where}: [services.{name}] routes and hosts must be lists")
            try:
                compile_patterns(routes)
            except ConfigError as e:
                raise ConfigError(f"{where}: [services.{name}] {e.message}") from e
            services[name] = routes
            for host in host_list:
                hosts[str(host)] = name
        return cls(services, hosts)

    def for_service(self, service: str) -> ServiceRules:
        """The rules of ``service`` (no patterns: template_path only)."""
        rules = self._services.get(service)
        if rules is None:
            rules = self._services[service] = ServiceRules()
        return rules

    def service_of_host(self, host: str) -> str | None:
        """The service a ``Host`` maps to (port and case ignored), or None."""
        host = host.lower()
        found = self.hosts.get(host)
        if found is None and ":" in host:
            found = self.hosts.get(host.rsplit(":", 1)[0])
        return found

"""The access log recipes of docs/sending-data.md work as shown.

The nginx and Apache formats there parse the lines those servers would write
with them, the routes file loads and does what the text says, and every
`gravix ...` command shown (the systemd unit's too) runs against a real server.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shlex
import subprocess
import sys
import time
import tomllib
import zlib
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gravix.accesslog.formats import APACHE, COMBINED
from gravix.accesslog.parser import make_parser
from gravix.accesslog.routes import RouteRules
from tests.procs import ServerProcess, durable_event_ids

DOC = Path(__file__).parents[2] / "docs" / "sending-data.md"
NOW = time.time()
NGINX_VALUES = {
    "remote_addr": "203.0.113.9",
    "remote_user": "-",
    "time_local": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(NOW)),
    "time_iso8601": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(NOW)),
    "msec": f"{NOW:.3f}",
    "request": "GET /users/42?tab=1 HTTP/1.1",
    "status": "200",
    "body_bytes_sent": "512",
    "http_referer": "-",
    "http_user_agent": "curl/8.5.0 (x86_64-pc-linux-gnu)",
    "request_time": "0.042",
    "host": "shop.example.com",
}
APACHE_VALUES = {
    "h": "203.0.113.9",
    "l": "-",
    "u": "-",
    "t": "[" + NGINX_VALUES["time_local"] + "]",
    "r": NGINX_VALUES["request"],
    ">s": "200",
    "b": "512",
    "{Referer}i": "-",
    "{User-Agent}i": "curl/8.5.0",
    "D": "42000",
}


def section() -> str:
    text = DOC.read_text()
    return text.split("<!-- section: logs -->", 1)[1].split("<!-- end: logs -->", 1)[0]


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section(), re.S)


def nginx_format(block: str) -> str:
    """The format string of a `log_format NAME [escape=...] '...' '...';` directive."""
    return "".join(re.findall(r"'([^']*)'", block.split("access_log")[0]))


def nginx_line(fmt: str, values: dict[str, str] = NGINX_VALUES) -> str:
    """The line nginx writes for ``fmt``, with escape=json when the format is JSON."""
    json_escape = fmt.lstrip().startswith("{")
    return re.sub(
        r"\$(\w+)",
        lambda m: json.dumps(values[m[1]])[1:-1] if json_escape else values[m[1]],
        fmt,
    ) + "\n"  # fmt: skip


def apache_format() -> str:
    block = blocks("apache")[0]
    match = re.search(r'LogFormat "((?:[^"\\]|\\.)*)" gravix', block)
    assert match, block
    return match[1].replace('\\"', '"')


def apache_line(fmt: str) -> str:
    return re.sub(r"%(>?(?:\{[^}]*\})?[A-Za-z])", lambda m: APACHE_VALUES[m[1]], fmt) + "\n"


def parsed(fmt: str, line: str, **options: Any) -> dict[str, Any]:
    parser = make_parser(fmt, service="shop", **options)
    out: list[Any] = []
    parser.parse(line.encode(), 0, len(line.encode()), 0, "al-x-", out, 10)
    assert len(out) == 1, parser.bad_samples
    return dict(msgspec.to_builtins(out[0]))


def test_the_nginx_log_format_is_the_default_and_parses_its_lines() -> None:
    fmt = nginx_format(blocks("nginx")[0])
    assert fmt == COMBINED
    assert "access_log /var/log/nginx/access.log gravix;" in blocks("nginx")[0]
    fact = parsed("combined", nginx_line(fmt))
    assert (fact["method"], fact["path"], fact["status"]) == ("GET", "/users/{id}", 200)
    assert fact["latency_ms"] == pytest.approx(42.0)


def test_the_apache_log_format_is_the_apache_preset_and_parses_its_lines() -> None:
    fmt = apache_format()
    assert fmt == APACHE
    fact = parsed("apache", apache_line(fmt))
    assert fact["latency_ms"] == pytest.approx(42.0)
    assert fact["timestamp"] == int(NOW) * 1000


def test_the_json_log_format_parses_with_the_fields_shown() -> None:
    fmt = nginx_format(blocks("nginx")[1])
    line = nginx_line(fmt)
    json.loads(line)  # what escape=json writes is JSON
    command = next(c for c in commands() if "--format json" in c)
    fields = re.findall(r"--field (\S+)", command)
    fact = parsed("json", line, fields=fields)
    assert (fact["path"], fact["latency_ms"]) == ("/users/{id}", pytest.approx(42.0))


def test_the_routes_example_loads_and_does_what_the_text_says() -> None:
    rules = RouteRules.from_dict(tomllib.loads(blocks("toml")[0]))
    assert rules.for_service("shop").template(b"/products/red-shoes") == "/products/{slug}"
    assert "/products/red-shoes" in section() and "/products/{slug}" in section()
    assert rules.service_of_host("www.shop.example.com") == "shop"
    assert rules.for_service("api").template(b"/v1/acme/search?q=x") == "/v1/{tenant}/search"


def commands() -> list[str]:
    """Every `gravix ...` command of the section's sh blocks and the systemd unit."""
    found = [
        line.strip()
        for block in blocks("sh")
        for line in block.splitlines()
        if line.startswith("gravix ")
    ]
    unit = blocks("ini")[0]
    exec_start = re.search(r"ExecStart=(\S+) (.*)", unit)
    assert exec_start and exec_start[1].endswith("/gravix")
    return [*found, "gravix " + exec_start[2]]


def write_log(path: Path, fmt: str, lines: int) -> None:
    """``lines`` lines as the web server would write them in ``fmt`` (gzip for .gz)."""
    if fmt == "json":
        fmt = nginx_format(blocks("nginx")[1])
    text = "".join(
        nginx_line(
            COMBINED if fmt == "combined" else fmt,
            # Distinct content per file: the same first line is the same file to Gravix.
            {
                **NGINX_VALUES,
                "request": f"GET /products/{zlib.crc32(str(path).encode())}-{i} HTTP/1.1",
            },
        )
        for i in range(lines)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(text.encode()) if path.suffix == ".gz" else text.encode())


def test_every_command_shown_runs_against_a_real_server(
    tmp_path: Path, tenant_key_factory: Any
) -> None:
    data = tmp_path / "data"
    key = tenant_key_factory(data)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRAVIX_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    assert "export GRAVIX_KEY=" in blocks("sh")[0]
    shown = commands()
    assert any(c.startswith("gravix import-logs") for c in shown)
    assert any(c.startswith("gravix tail-logs") for c in shown)
    total = 0
    with ServerProcess(data, env={"GRAVIX_UPLOADER_ENABLED": "false"}) as server:
        env.update(GRAVIX_KEY=key, GRAVIX_URL=server.url)
        for n, command in enumerate(shown):
            root = tmp_path / f"cmd{n}"
            argv = shlex.split(command.replace("/var/log/nginx/", f"{root}/var/log/nginx/"))
            argv = [a.replace("/etc/gravix/", f"{root}/etc/gravix/") for a in argv]
            argv = [a.replace("/var/lib/gravix-tail/", f"{root}/state/") for a in argv]
            fmt = argv[argv.index("--format") + 1] if "--format" in argv else "combined"
            files = [Path(a) for a in argv if a.startswith(f"{root}/var/log/")]
            for i, path in enumerate(files):
                write_log(path, fmt, 20 + i)
                total += 20 + i
            if "--routes" in argv:
                routes = Path(argv[argv.index("--routes") + 1])
                routes.parent.mkdir(parents=True, exist_ok=True)
                routes.write_text(blocks("toml")[0])
            if argv[1] == "tail-logs":
                argv += ["--once"] + ([] if "--state" in argv else ["--state", f"{root}/s.json"])
            result = subprocess.run(
                argv, capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path
            )
            assert result.returncode == 0, (command, result.stderr)
            count = sum(20 + i for i in range(len(files)))
            assert f"{count} facts accepted, 0 bad lines" in result.stderr, result.stderr
        assert server.terminate() == 0
    ids = durable_event_ids(data)
    assert len(set(ids)) == len(ids) == total

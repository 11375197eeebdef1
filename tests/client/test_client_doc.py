"""The recipes of docs/sending-data.md's "Python middleware" section work as shown.

Each recipe runs the way a user would run it (uvicorn from the shown command
line, a Flask app as a module, ``send()`` in a script) against a real
`gravix serve`, and the process exits normally so the client's exit flush is
what delivers the facts. Django is not installed here: its recipe runs
against a stand-in ``django.core.wsgi`` that calls the shown middleware.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gravix.client import GravixWSGIMiddleware
from tests.client.conftest import Gravix, require
from tests.procs import ServerProcess

DOC = Path(__file__).parents[2] / "docs" / "sending-data.md"


def section() -> str:
    text = DOC.read_text()
    return text[text.index("<!-- section: client -->") : text.index("<!-- end: client -->")]


def block(language: str, containing: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", section(), re.S)
    return next(b for b in blocks if containing in b)


@pytest.fixture
def gravix_server(tmp_path: Path, tenant_key_factory: Any) -> Iterator[Gravix]:
    data_dir = tmp_path / "data"
    key = tenant_key_factory(data_dir)
    env = {"GRAVIX_UPLOADER_ENABLED": "false", "GRAVIX_ROLLUP_ENABLED": "false"}
    with ServerProcess(data_dir, env=env) as server:
        yield Gravix(server.url, key, data_dir)


def user_env(gravix: Gravix) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRAVIX_")}
    env.update(GRAVIX_URL=gravix.url, GRAVIX_KEY=gravix.key)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    return env


@pytest.mark.timeout(60)
def test_starlette_recipe_under_uvicorn(gravix_server: Gravix, tmp_path: Path) -> None:
    require("uvicorn")
    (tmp_path / "app.py").write_text(block("python", "Starlette("))
    command = shlex.split(block("sh", "uvicorn"))
    env = user_env(gravix_server)
    while "=" in command[0]:  # the variables the recipe sets, with this server's values
        name = command.pop(0).split("=", 1)[0]
        assert name in ("GRAVIX_URL", "GRAVIX_KEY")
    uvicorn = subprocess.Popen(
        [*command, "--port", "0", "--host", "127.0.0.1"],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert uvicorn.stderr is not None
        url = ""
        for line in uvicorn.stderr:
            match = re.search(r"running on (http://\S+)", line)
            if match:
                url = match.group(1)
                break
        assert url, "uvicorn did not start"
        with httpx.Client(base_url=url) as http:
            assert http.get("/users/42").json() == {"id": "42"}
            assert http.get("/health").status_code == 404  # excluded, even as a 404
        uvicorn.send_signal(signal.SIGTERM)
        # uvicorn ends by re-raising the signal, so atexit never runs: the facts
        # arrive because the middleware flushes at lifespan shutdown.
        assert uvicorn.wait(30) in (0, -signal.SIGTERM)
    finally:
        if uvicorn.poll() is None:
            uvicorn.kill()
            uvicorn.wait(10)
        if uvicorn.stderr is not None:
            uvicorn.stderr.close()
    facts = gravix_server.facts("shop")
    assert [(f.method, f.path, f.status) for f in facts] == [("GET", "/users/{id}", 200)]


@pytest.mark.timeout(60)
def test_flask_recipe(gravix_server: Gravix, tmp_path: Path) -> None:
    require("flask")
    (tmp_path / "app.py").write_text(block("python", "Flask("))
    script = (
        "from app import app\n"
        "http = app.test_client()\n"
        "assert http.get('/users/42').json == {'id': 42}\n"
        "missing = http.get('/users/nope')\n"
        "assert missing.status_code == 404\n"
        "missing.close()  # what a WSGI server does with every response\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=user_env(gravix_server),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    facts = sorted((f.method, f.path, f.status) for f in gravix_server.facts("shop"))
    assert facts == [("GET", "/users/nope", 404), ("GET", "/users/{id}", 200)]


@pytest.mark.timeout(60)
def test_send_recipe(gravix_server: Gravix, tmp_path: Path) -> None:
    script = block("python", "gravix.client.send(") + block("python", "stats = ")
    script += "assert stats.dropped == 0 and stats.rejected == 0, stats\n"
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=user_env(gravix_server),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert "ClientStats(" in out.stdout
    facts = sorted((f.method, f.path, f.status) for f in gravix_server.facts("billing-worker"))
    assert facts == [("GET", "/invoices/{id}", 404), ("POST", "/invoices/{id}/pay", 200)]


def test_django_recipe_with_a_stand_in_django(
    gravix_server: Gravix, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = block("python", "django")

    def get_wsgi_application() -> Any:
        """Django's request handling, reduced to: resolve, run the middleware."""

        def view(request: Any) -> str:
            return "user"

        def application(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            request = types.SimpleNamespace(
                META=environ,  # what Django's WSGIRequest.META is
                resolver_match=types.SimpleNamespace(route="users/<int:user_id>"),
            )
            body = namespace["gravix_route"](view)(request)
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [body.encode()]

        return application

    wsgi = types.ModuleType("django.core.wsgi")
    wsgi.get_wsgi_application = get_wsgi_application  # type: ignore[attr-defined]
    for name in ("django", "django.core"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "django.core.wsgi", wsgi)
    monkeypatch.setenv("GRAVIX_URL", gravix_server.url)
    monkeypatch.setenv("GRAVIX_KEY", gravix_server.key)
    namespace: dict[str, Any] = {}
    exec(compile(recipe, "wsgi.py", "exec"), namespace)
    application = namespace["application"]
    assert isinstance(application, GravixWSGIMiddleware)
    body = application({"REQUEST_METHOD": "GET", "PATH_INFO": "/users/7"}, lambda *a: None)
    assert list(body) == [b"user"]
    body.close()
    stats = application.client.close(10)
    assert stats.sent == 1
    facts = gravix_server.facts("shop")
    assert [(f.method, f.path, f.status) for f in facts] == [("GET", "/users/{id}", 200)]

"""The alerts API: who may read and change, tenant isolation, the field every refusal
names, secrets never shown, rule-file rules read-only, and the real `gravix serve`.

In-process through ``httpx.ASGITransport`` on a real data dir (real SQLite,
a real store read by the real query layer and evaluator, a real receiver on
loopback for deliveries), and one test against a real `gravix serve` process.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gravix.alerts.dispatch import Dispatcher
from gravix.alerts.evaluate import Evaluator
from gravix.alerts.rules import AlertStore
from gravix.api.auth import token_store
from gravix.api.users import UserStore
from gravix.query.service import QueryService
from gravix.storage.local import LocalObjectStore
from tests.alerts.receivers import Receiver
from tests.api.test_sessions import PASSWORD, Api, Session, assert_error, build_api, login
from tests.procs import ServerProcess
from tests.rollup.conftest import T0, fact, put_raw

MINUTE = 60_000
HMAC_KEY = "hmac-key-never-shown-4f7a"
SLACK_PATH = "/services/T0/B0/slack-url-never-shown-9c2e"
SOON = int(time.time() * 1000) + 3_600_000
HOOK = {"kind": "webhook", "name": "oncall", "url": "http://127.0.0.1:9/hook", "secret": "hmac"}
RULE = {"kind": "threshold", "name": "checkout errors", "metric": "error_rate", "op": ">",
        "threshold": 0.1, "window": "5m", "min_requests": 1, "channels": ["oncall"],
        "filters": [{"dimension": "service", "values": ["checkout"]}]}  # fmt: skip
SILENCE = {"matchers": [{"dimension": "rule", "values": ["checkout errors"]}], "ends": SOON,
           "comment": "deploy"}  # fmt: skip
WRITES = [
    ("POST", "/api/v1/alerts/rules", RULE),
    ("PUT", "/api/v1/alerts/rules/1", RULE),
    ("DELETE", "/api/v1/alerts/rules/1", None),
    ("POST", "/api/v1/alerts/backtest", {"rule": RULE, "days": 1}),
    ("PUT", "/api/v1/alerts/channels/oncall", HOOK),
    ("DELETE", "/api/v1/alerts/channels/oncall", None),
    ("POST", "/api/v1/alerts/silences", SILENCE),
    ("DELETE", "/api/v1/alerts/silences/1", None),
]
READS = ["/api/v1/alerts", "/api/v1/alerts/rules", "/api/v1/alerts/rules/1",
         "/api/v1/alerts/history", "/api/v1/alerts/channels", "/api/v1/alerts/silences",
         "/api/v1/alerts/deliveries"]  # fmt: skip


def secrets(slack_url: str = "http://127.0.0.1:9" + SLACK_PATH) -> dict[str, str]:
    return {"hmac": HMAC_KEY, "slack": slack_url}


@pytest.fixture
def api(tmp_path: Path) -> Api:
    built = build_api(tmp_path, alert_secrets=secrets())
    users = built.sessions.users
    users.create("ana", "acme", "admin", PASSWORD)
    users.create("eve", "acme", "editor", PASSWORD)
    users.create("vic", "acme", "viewer", PASSWORD)
    users.create("gus", "globex", "editor", PASSWORD)
    return built


@pytest.fixture
async def client(api: Api) -> AsyncIterator[httpx.AsyncClient]:
    async with api.client() as c:
        yield c


@pytest.fixture
async def eve(client: httpx.AsyncClient) -> Session:
    return await login(client, "eve")


def store_of(api: Api) -> AlertStore:
    store: AlertStore = api.app.app.state.alerts
    return store


async def seed(client: httpx.AsyncClient, who: Session) -> dict[str, Any]:
    """A channel, a rule and a silence made through the API: the rule's JSON."""
    reply = await client.put("/api/v1/alerts/channels/oncall", json=HOOK, headers=who.headers)
    assert reply.status_code == 200, reply.text
    reply = await client.post("/api/v1/alerts/rules", json=RULE, headers=who.headers)
    assert reply.status_code == 201, reply.text
    silence = await client.post("/api/v1/alerts/silences", json=SILENCE, headers=who.headers)
    assert silence.status_code == 201, silence.text
    rule: dict[str, Any] = reply.json()
    return rule


def evaluate(api: Api, minutes: int = 8) -> None:
    """Checkout fails half its requests from minute 2; the real evaluator runs each minute."""
    store = LocalObjectStore(api.data_dir / "store")
    facts = [fact(i, service="checkout", timestamp=T0 + i * 1000,
                  status=500 if i >= 120 and i % 2 else 200)
             for i in range(minutes * 60)]  # fmt: skip
    put_raw(store, "acme", facts, created_ms=T0)
    now = [T0]
    evaluator = Evaluator(store_of(api).settings, store_of(api), QueryService(store, None),
                          clock=lambda: now[0] / 1000)  # fmt: skip
    for minute in range(1, minutes + 1):
        now[0] = T0 + minute * MINUTE
        evaluator.run_once()


async def test_viewers_and_tokens_read_but_cannot_change(
    api: Api, client: httpx.AsyncClient, eve: Session
) -> None:
    rule = await seed(client, eve)
    vic = await login(client, "vic")
    _, token = token_store(api.data_dir / "tokens.db").create("acme")
    for headers in (vic.headers, {"Authorization": f"Bearer {token}"}):
        for path in READS:
            reply = await client.get(path.replace("/1", f"/{rule['id']}"), headers=headers)
            assert reply.status_code == 200, (path, reply.text)
        for method, path, body in WRITES:
            reply = await client.request(method, path, json=body, headers=headers)
            assert_error(reply, 403, "forbidden")
    listed = (await client.get("/api/v1/alerts/rules", headers=vic.headers)).json()["rules"]
    assert [r["name"] for r in listed] == ["checkout errors"]
    assert listed[0]["updated_by"] == "eve" and listed[0]["source"] == "api"
    assert len(store_of(api).silences("acme")) == 1


async def test_writes_need_the_csrf_token(client: httpx.AsyncClient, eve: Session) -> None:
    for method, path, body in WRITES:
        reply = await client.request(method, path, json=body, headers=eve.cookie_only)
        assert_error(reply, 403, "csrf_failed")


async def test_an_editor_changes_rules_channels_and_silences(
    api: Api, client: httpx.AsyncClient, eve: Session
) -> None:
    rule = await seed(client, eve)
    assert {k: rule[k] for k in ("kind", "name", "metric", "threshold", "window", "source")} == {
        "kind": "threshold", "name": "checkout errors", "metric": "error_rate",
        "threshold": 0.1, "window": "5m", "source": "api"}  # fmt: skip
    url = f"/api/v1/alerts/rules/{rule['id']}"
    taken = await client.post("/api/v1/alerts/rules", json=RULE, headers=eve.headers)
    assert assert_error(taken, 409, "conflict")["field"] == "name"
    changed = await client.put(url, json={**RULE, "threshold": 0.2}, headers=eve.headers)
    assert changed.status_code == 200 and changed.json()["threshold"] == 0.2
    got = (await client.get(url, headers=eve.headers)).json()
    assert got["threshold"] == 0.2 and got["states"] == [] and got["id"] == rule["id"]
    in_use = await client.delete("/api/v1/alerts/channels/oncall", headers=eve.headers)
    assert_error(in_use, 409, "conflict")
    assert (await client.delete(url, headers=eve.headers)).status_code == 204
    assert_error(await client.get(url, headers=eve.headers), 404, "not_found")
    gone = await client.delete("/api/v1/alerts/channels/oncall", headers=eve.headers)
    assert gone.status_code == 204
    [silence] = (await client.get("/api/v1/alerts/silences", headers=eve.headers)).json()[
        "silences"
    ]
    assert silence["kind"] == "silence" and silence["created_by"] == "eve"
    assert silence["ends"] == SOON and silence["comment"] == "deploy"
    ended = await client.delete(f"/api/v1/alerts/silences/{silence['id']}", headers=eve.headers)
    assert ended.status_code == 204
    [after] = (await client.get("/api/v1/alerts/silences", headers=eve.headers)).json()["silences"]
    assert after["id"] == silence["id"] and after["ends"] <= int(time.time() * 1000)
    # An admin may change alerting too.
    ana = await login(client, "ana")
    mail = {"kind": "email", "name": "mail", "to": ["a@example.com"]}
    reply = await client.put("/api/v1/alerts/channels/mail", json=mail, headers=ana.headers)
    assert reply.status_code == 200 and reply.json()["source"] == "api"


async def test_states_history_and_the_overview(
    api: Api, client: httpx.AsyncClient, eve: Session
) -> None:
    rule = await seed(client, eve)
    evaluate(api)
    overview = (await client.get("/api/v1/alerts", headers=eve.headers)).json()
    [alert] = overview["alerts"]
    assert {k: alert[k] for k in ("rule_id", "rule", "kind", "severity", "series", "state")} == {
        "rule_id": rule["id"], "rule": "checkout errors", "kind": "threshold",
        "severity": "page", "series": {}, "state": "firing"}  # fmt: skip
    assert alert["value"] > 0.1 and T0 < alert["since"] <= alert["evaluated"]
    assert overview["evaluation"]["rules"] == 1 and overview["evaluation"]["errors"] == 0
    assert overview["file"] is None
    states = (await client.get(f"/api/v1/alerts/rules/{rule['id']}", headers=eve.headers)).json()
    assert [s["state"] for s in states["states"]] == ["firing"]
    week = f"from={T0}&to={T0 + 3_600_000}"
    history = (await client.get(f"/api/v1/alerts/history?{week}", headers=eve.headers)).json()
    [firing] = history["transitions"]
    assert (firing["from"], firing["to"], firing["rule"]) == ("normal", "firing", rule["name"])
    assert (
        firing["threshold"] == 0.1 and firing["requests"] > 0 and "error_rate" in firing["detail"]
    )
    one_rule = f"/api/v1/alerts/history?{week}&rule_id={rule['id'] + 1}"
    assert (await client.get(one_rule, headers=eve.headers)).json() == {"transitions": []}
    # The silence made by seed() covers the rule: its notification is kept, not sent.
    deliveries = (await client.get("/api/v1/alerts/deliveries", headers=eve.headers)).json()
    [delivery] = deliveries["deliveries"]
    assert delivery["status"] == "silenced" and delivery["channel"] == "oncall"
    assert delivery["notification"]["alerts"][0]["state"] == "firing"


BAD_PARAMETERS = [
    ("history?tenant=globex", "tenant"), ("history?service=x", "service"),
    ("history?from=soon", "from"), ("history?from=now&to=now-1h", "from"),
    ("history?rule_id=x", "rule_id"), ("history?rule_id=99999999999999999999", "rule_id"),
    ("deliveries?limit=0", "limit"), ("deliveries?limit=1001", "limit"),
    ("deliveries?since=%C2%B9", "since"), ("rules?x=1", "x"), ("?tenant=globex", "tenant"),
]  # fmt: skip


async def test_bad_parameters_are_named(client: httpx.AsyncClient, eve: Session) -> None:
    for path, field in BAD_PARAMETERS:
        reply = await client.get(f"/api/v1/alerts/{path}".replace("/?", "?"), headers=eve.headers)
        assert assert_error(reply, 400)["field"] == field, path


async def test_another_tenants_alerting_is_not_there(
    api: Api, client: httpx.AsyncClient, eve: Session
) -> None:
    rule = await seed(client, eve)
    evaluate(api)
    gus = await login(client, "gus")  # globex's editor
    url = f"/api/v1/alerts/rules/{rule['id']}"
    assert_error(await client.get(url, headers=gus.headers), 404, "not_found")
    assert_error(await client.put(url, json=RULE | {"channels": []}, headers=gus.headers), 404)
    assert_error(await client.delete(url, headers=gus.headers), 404)
    assert_error(await client.delete("/api/v1/alerts/channels/oncall", headers=gus.headers), 404)
    [silence] = store_of(api).silences("acme")
    assert_error(
        await client.delete(f"/api/v1/alerts/silences/{silence['id']}", headers=gus.headers), 404
    )
    everything = f"from={T0 - 3_600_000}&to=now"
    for path, key in (("/api/v1/alerts/rules", "rules"), ("/api/v1/alerts/channels", "channels"),
                      ("/api/v1/alerts/silences", "silences"), ("/api/v1/alerts", "alerts"),
                      (f"/api/v1/alerts/history?{everything}", "transitions"),
                      ("/api/v1/alerts/deliveries", "deliveries")):  # fmt: skip
        reply = await client.get(path, headers=gus.headers)
        assert reply.status_code == 200 and reply.json()[key] == [], path
    # globex's rule needs globex's channel: acme's is not there.
    refused = await client.post("/api/v1/alerts/rules", json=RULE, headers=gus.headers)
    assert assert_error(refused, 400)["field"] == "channels[0]"
    # The same name in globex is another rule.
    mine = await client.post("/api/v1/alerts/rules", json=RULE | {"channels": []},
                             headers=gus.headers)  # fmt: skip
    assert mine.status_code == 201
    assert [r.rule.channels for r in store_of(api).rules("acme")] == [["oncall"]]
    assert store_of(api).channels("acme") and store_of(api).silences("acme")[0]["ends"] == SOON


BAD_RULES = [
    ({**RULE, "metric": "error_ratio"}, "metric"),
    ({**RULE, "window": "-5m"}, "window"),
    ({**RULE, "window": "soon"}, "window"),
    ({**RULE, "window": "0m"}, "window"),
    ({**RULE, "window": "2d"}, "window"),  # over a day
    ({**RULE, "channels": ["pager"]}, "channels[0]"),
    ({**RULE, "kind": "anomaly"}, "kind"),
    ({k: v for k, v in RULE.items() if k != "kind"}, "kind"),
    ({**RULE, "group_by": ["host"]}, "group_by[0]"),
    ({**RULE, "threshold": "high"}, "threshold"),
    ({**RULE, "for": "1y"}, "for"),
    ({**RULE, "tenant": "globex"}, "tenant"),
    ({**RULE, "colour": "red"}, "colour"),
    ({**RULE, "min_requests": 2**64}, "min_requests"),  # SQLite and msgspec stop at 64 bits
    ({**RULE, "name": ""}, "name"),
    ({"kind": "slo", "name": "s", "objective": "availability", "target": 2}, "target"),
    ([RULE], None),
]


async def test_bad_rules_are_refused_naming_the_field(
    api: Api, client: httpx.AsyncClient, eve: Session
) -> None:
    await seed(client, eve)
    [rule] = store_of(api).rules("acme")
    for body, field in BAD_RULES:
        for method, url in (("POST", "/api/v1/alerts/rules"),
                            ("PUT", f"/api/v1/alerts/rules/{rule.id}")):  # fmt: skip
            reply = await client.request(method, url, json=body, headers=eve.headers)
            assert assert_error(reply, 400, "bad_request")["field"] == field, reply.text
    assert store_of(api).rules("acme") == [rule]


async def test_bodies_that_are_not_json_are_refused(
    client: httpx.AsyncClient, eve: Session
) -> None:
    for content in (b"{", b'{"kind": "threshold", "threshold": 1e999}', b"", b"\xff"):
        for path in ("/api/v1/alerts/rules", "/api/v1/alerts/silences",
                     "/api/v1/alerts/backtest"):  # fmt: skip
            reply = await client.post(path, content=content, headers=eve.headers)
            assert_error(reply, 400, "bad_request")
    too_big = b'{"name": "' + b"x" * 70_000 + b'"}'
    reply = await client.post("/api/v1/alerts/rules", content=too_big, headers=eve.headers)
    assert_error(reply, 413, "payload_too_large")


BAD_CHANNELS = [
    ({"kind": "webhook", "name": "oncall", "url": "ftp://x"}, "url"),
    ({"kind": "webhook", "name": "other", "url": "http://x"}, "name"),  # not the path's
    ({"kind": "slack", "name": "oncall", "url_secret": "nope"}, "url_secret"),
    ({"kind": "email", "name": "oncall", "to": ["not-an-address"]}, "to[0]"),
    ({"kind": "pager", "name": "oncall"}, "kind"),
]
BAD_SILENCES = [
    ({**SILENCE, "ends": 1}, "ends"),
    ({**SILENCE, "ends": 2**62}, "ends"),
    ({**SILENCE, "matchers": []}, "matchers"),
    ({**SILENCE, "matchers": [{"dimension": "host", "values": ["a"]}]}, "matchers[0].dimension"),
]


async def test_bad_channels_and_silences_are_refused_naming_the_field(
    api: Api, client: httpx.AsyncClient, eve: Session
) -> None:
    for body, field in BAD_CHANNELS:
        reply = await client.put("/api/v1/alerts/channels/oncall", json=body, headers=eve.headers)
        assert assert_error(reply, 400)["field"] == field, body
    for body, field in BAD_SILENCES:
        reply = await client.post("/api/v1/alerts/silences", json=body, headers=eve.headers)
        assert assert_error(reply, 400)["field"] == field, body
    assert store_of(api).channels("acme") == {} and store_of(api).silences("acme") == []


async def test_a_channels_secret_is_never_shown(tmp_path: Path) -> None:
    with Receiver() as slack:
        api = build_api(tmp_path, alert_secrets=secrets(slack.url + SLACK_PATH))
        api.sessions.users.create("eve", "acme", "editor", PASSWORD)
        answers: list[str] = []
        async with api.client() as client:
            eve = await login(client, "eve")
            for body in (HOOK, {"kind": "slack", "name": "chat", "url_secret": "slack"}):
                reply = await client.put(f"/api/v1/alerts/channels/{body['name']}", json=body,
                                         headers=eve.headers)  # fmt: skip
                assert reply.status_code == 200, reply.text
                answers.append(reply.text)
            reply = await client.post("/api/v1/alerts/rules", headers=eve.headers,
                                      json=RULE | {"channels": ["oncall", "chat"]})  # fmt: skip
            assert reply.status_code == 201
            evaluate(api)
            store = store_of(api)
            with Dispatcher(store.db, store.settings, store.channels) as dispatcher:
                dispatcher.run_once()
            assert [r.path for r in slack.wait_for(1)] == [SLACK_PATH]
            for path in READS:
                reply = await client.get(path, headers=eve.headers)
                assert reply.status_code in (200, 404)
                answers.append(reply.text)
            channels = (await client.get("/api/v1/alerts/channels", headers=eve.headers)).json()
            assert [(c["name"], c.get("secret"), c.get("url_secret"), c["source"])
                    for c in channels["channels"]] == [("chat", None, "slack", "api"),
                                                       ("oncall", "hmac", None, "api")]  # fmt: skip
            deliveries = (await client.get("/api/v1/alerts/deliveries", headers=eve.headers)).json()
            assert {d["channel"]: d["status"] for d in deliveries["deliveries"]}["chat"] == "sent"
    for text in answers:
        assert HMAC_KEY not in text and SLACK_PATH not in text and "never-shown" not in text


RULE_FILE = """
channels:
  - {kind: webhook, name: filed, url: "http://127.0.0.1:9/hook"}
rules:
  - kind: threshold
    name: p95 from git
    metric: p95
    threshold: 800
    group_by: [service]
    channels: [filed]
"""


async def test_rules_and_channels_from_a_file_are_changed_only_there(
    api: Api, client: httpx.AsyncClient, eve: Session, tmp_path: Path
) -> None:
    (tmp_path / "acme.yaml").write_text(RULE_FILE)
    cli = ["--data-dir", str(api.data_dir)]
    applied = gravix("alerts", "apply", str(tmp_path / "acme.yaml"), "--tenant", "acme", *cli)
    assert applied.exit_code == 0, applied.output
    [rule] = (await client.get("/api/v1/alerts/rules", headers=eve.headers)).json()["rules"]
    assert rule["source"] == "file" and rule["updated_by"] == "file"
    url = f"/api/v1/alerts/rules/{rule['id']}"
    body = {k: v for k, v in rule.items() if k not in ("id", "source", "updated", "updated_by")}
    assert_error(await client.put(url, json=body, headers=eve.headers), 409, "managed_by_file")
    assert_error(await client.delete(url, headers=eve.headers), 409, "managed_by_file")
    hook = {"kind": "webhook", "name": "filed", "url": "http://127.0.0.1:9/other"}
    reply = await client.put("/api/v1/alerts/channels/filed", json=hook, headers=eve.headers)
    assert_error(reply, 409, "managed_by_file")
    channels = (await client.get("/api/v1/alerts/channels", headers=eve.headers)).json()
    assert [(c["name"], c["source"]) for c in channels["channels"]] == [("filed", "file")]


async def test_backtest(api: Api, client: httpx.AsyncClient, eve: Session) -> None:
    await seed(client, eve)
    reply = await client.post("/api/v1/alerts/backtest", json={"rule": RULE, "days": 2},
                              headers=eve.headers)  # fmt: skip
    assert reply.status_code == 200, reply.text
    result = reply.json()
    assert result["to"] - result["from"] == 2 * 86_400_000 and result["firing"] == []
    assert result["rule"]["name"] == RULE["name"] and result["threshold"] == 0.1
    for body, field in (({"rule": RULE, "days": 31}, "days"), ({"rule": RULE, "days": True},
                        "days"), ({"rule": {**RULE, "metric": "x"}}, "rule.metric"),
                        ({"rule": {**RULE, "channels": ["pager"]}}, "rule.channels[0]"),
                        ({"days": 1}, "rule"), ({"rule": RULE, "tenant": "globex"}, "tenant"),
                        ({"rule": RULE, "save": True}, "save")):  # fmt: skip
        reply = await client.post("/api/v1/alerts/backtest", json=body, headers=eve.headers)
        assert assert_error(reply, 400)["field"] == field


def gravix(*args: str) -> Any:
    from typer.testing import CliRunner

    from gravix.cli import app

    return CliRunner().invoke(app, list(args))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServerProcess]:
    data_dir = tmp_path / "served"
    users = UserStore(data_dir / "users.db")
    users.create("eve", "acme", "editor", PASSWORD)
    users.create("vic", "acme", "viewer", PASSWORD)
    env = {"GRAVIX_ALERT_SECRETS": json.dumps(secrets()), "GRAVIX_UPLOADER_ENABLED": "false",
           "GRAVIX_ROLLUP_ENABLED": "false"}  # fmt: skip
    with ServerProcess(data_dir, env=env) as server:
        yield server
        assert server.terminate() == 0


def test_a_real_server_serves_the_alerts_api(served: ServerProcess) -> None:
    with httpx.Client(base_url=served.url, timeout=10) as client:
        sessions = {}
        for name in ("eve", "vic"):
            reply = client.post("/api/v1/login", json={"name": name, "password": PASSWORD})
            sessions[name] = {"Cookie": f"gravix_session={reply.cookies['gravix_session']}",
                              "X-CSRF-Token": reply.json()["csrf_token"]}  # fmt: skip
            client.cookies.clear()
        eve, vic = sessions["eve"], sessions["vic"]
        assert (
            client.put("/api/v1/alerts/channels/oncall", json=HOOK, headers=eve).status_code == 200
        )
        created = client.post("/api/v1/alerts/rules", json=RULE, headers=eve)
        assert created.status_code == 201, created.text
        forbidden = client.post("/api/v1/alerts/rules", json=RULE | {"name": "v"}, headers=vic)
        assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "forbidden"
        no_csrf = {"Cookie": eve["Cookie"]}
        reply = client.delete(f"/api/v1/alerts/rules/{created.json()['id']}", headers=no_csrf)
        assert reply.status_code == 403 and reply.json()["error"]["code"] == "csrf_failed"
        listed = client.get("/api/v1/alerts/rules", headers=vic).json()["rules"]
        assert [r["name"] for r in listed] == ["checkout errors"]
        overview = client.get("/api/v1/alerts", headers=vic)
        assert overview.status_code == 200 and overview.json()["alerts"] == []
        for answer in (created.text, client.get("/api/v1/alerts/channels", headers=vic).text):
            assert HMAC_KEY not in answer

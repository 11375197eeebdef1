"""Each channel against a real receiver: an HTTP server on loopback, aiosmtpd,
and Debian's Prometheus Alertmanager."""

from __future__ import annotations

import email
import email.policy
import hashlib
import hmac
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from gravix.alerts.channels import alertmanager_alerts, label_name, rfc3339, send, slack_message
from gravix.config import Settings, load_settings
from gravix.schema.alerts import Alertmanager, Email, Notification, Sample, Slack, Webhook
from tests.alerts.notifications import T0_MS, alert, notification
from tests.alerts.receivers import Receiver
from tests.deploy.helpers import require_tool
from tests.deploy.test_tls import self_signed

HMAC_KEY = "k3y-for-signing"


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    return load_settings(data_dir=tmp_path / "data", **overrides)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client() as c:
        yield c


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- webhook -----------------------------------------------------------------------
def test_webhook_posts_the_notification_signed(
    tmp_path: Path, receiver: Receiver, client: httpx.Client
) -> None:
    settings = _settings(tmp_path, alert_secrets={"hook-key": HMAC_KEY})
    sent = notification("acme/7/t0", alerts=2)
    channel = Webhook(name="oncall", url=f"{receiver.url}/hooks/gravix", secret="hook-key")
    result = send(channel, sent, settings, client)
    assert result.ok and result.status_code == 200, result
    (got,) = receiver.wait_for(1)
    assert (got.method, got.path) == ("POST", "/hooks/gravix")
    assert got.headers["content-type"] == "application/json"
    assert got.headers["idempotency-key"] == "acme/7/t0"
    assert got.headers["user-agent"].startswith("gravix/")
    # A receiver checks the signature over the exact bytes it got.
    expected = hmac.new(HMAC_KEY.encode(), got.body, hashlib.sha256).hexdigest()
    assert got.headers["x-gravix-signature"] == f"sha256={expected}"
    assert msgspec.json.decode(got.body, type=Notification) == sent
    body = json.loads(got.body)
    assert body["version"] == 1 and body["alerts"][1]["series"]["path"] == "/pay/1"


def test_webhook_without_a_secret_is_not_signed(
    tmp_path: Path, receiver: Receiver, client: httpx.Client
) -> None:
    channel = Webhook(name="plain", url=receiver.url)
    assert send(channel, notification(), _settings(tmp_path), client).ok
    (got,) = receiver.wait_for(1)
    assert "x-gravix-signature" not in got.headers
    assert got.headers["idempotency-key"] == "k1"


def test_a_missing_secret_fails_for_good_naming_it(
    tmp_path: Path, receiver: Receiver, client: httpx.Client
) -> None:
    settings = _settings(tmp_path, alert_secrets={"other": "do-not-show-me"})
    for channel, name in [
        (Webhook(name="oncall", url=receiver.url, secret="hook-key"), "hook-key"),
        (Slack(name="team", url_secret="slack-url"), "slack-url"),
    ]:
        result = send(channel, notification(), settings, client)
        assert not result.ok and not result.retryable
        assert repr(name) in result.error and "GRAVIX_ALERT_SECRETS" in result.error
        assert "do-not-show-me" not in result.error
    assert receiver.requests == []


@pytest.mark.parametrize(
    ("status", "retryable"), [(400, False), (404, False), (408, True), (429, True), (503, True)]
)
def test_http_status_decides_the_retry(
    tmp_path: Path, receiver: Receiver, client: httpx.Client, status: int, retryable: bool
) -> None:
    receiver.status = status
    receiver.reply = "no such hook\n\x1b[31m" + "x" * 500
    result = send(Webhook(name="oncall", url=receiver.url), notification(), _settings(tmp_path),
                  client)  # fmt: skip
    assert not result.ok and result.retryable is retryable and result.status_code == status
    assert f"HTTP {status}" in result.error and "no such hook" in result.error
    assert "\n" not in result.error and "\x1b" not in result.error
    assert len(result.error) < 300  # an excerpt, not the whole reply


def test_refused_and_hanging_receivers_are_retryable(
    tmp_path: Path, receiver: Receiver, client: httpx.Client
) -> None:
    settings = _settings(tmp_path, alert_delivery_timeout_seconds=0.5)
    channel = Webhook(name="oncall", url=receiver.url)
    receiver.mode = "hang"
    result = send(channel, notification(), settings, client)
    assert not result.ok and result.retryable and "no answer within 0.5 s" in result.error
    receiver.release()
    receiver.down()
    result = send(channel, notification(), settings, client)
    assert not result.ok and result.retryable and "cannot connect" in result.error


# --- slack -------------------------------------------------------------------------
def test_slack_block_kit_message_escapes_user_strings(
    tmp_path: Path, receiver: Receiver, client: httpx.Client
) -> None:
    url = f"{receiver.url}/services/T000/B000/s3cr3tpath"
    settings = _settings(tmp_path, alert_secrets={"slack-url": url})
    hostile = alert(
        0,
        series={"service": "checkout", "path": "/<script>alert(1)</script>"},
        summary="a & b <@U123> <!channel>",
        samples=[Sample(status=500, method="POST", path="/<script>", count=12)],
    )
    sent = notification(rule="errors <b>&</b>", alerts=0)
    sent.alerts = [hostile, alert(1, deploy=None, samples=[], url=None)]
    assert send(Slack(name="team", url_secret="slack-url"), sent, settings, client).ok
    (got,) = receiver.wait_for(1)
    assert got.path == "/services/T000/B000/s3cr3tpath"
    message = json.loads(got.body)
    assert message == slack_message(sent)
    assert message["text"] == "[FIRING] errors &lt;b&gt;&amp;&lt;/b&gt; (checkout): 2 alerts"
    header, first, context, second = message["blocks"]
    assert header["type"] == "header" and header["text"]["type"] == "plain_text"
    assert header["text"]["text"] == "FIRING: errors <b>&</b> (checkout)"  # plain text: as is
    text = first["text"]["text"]
    assert first["text"]["type"] == "mrkdwn"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "<script>" not in text
    assert "a &amp; b &lt;@U123&gt; &lt;!channel&gt;" in text
    assert "error_rate 0.125 > 0.05 over 5m (120 requests)".replace(">", "&gt;") in text
    assert f"<!date^{T0_MS // 1000}^" in text  # the one markup Gravix writes itself
    assert first["accessory"]["type"] == "button" and first["accessory"]["url"] == hostile.url
    (line,) = context["elements"]
    assert "Latest deploy: checkout v42" in line["text"]
    assert "Failing requests: 12 x 500 POST /&lt;script&gt;" in line["text"]
    assert second["type"] == "section" and "accessory" not in second


def test_slack_errors_never_show_the_webhook_url(
    tmp_path: Path, receiver: Receiver, client: httpx.Client
) -> None:
    url = f"{receiver.url}/services/T000/B000/s3cr3tpath"
    settings = _settings(tmp_path, alert_secrets={"slack-url": url})
    receiver.status = 403
    receiver.reply = f"invalid_token for {url}"
    result = send(Slack(name="team", url_secret="slack-url"), notification(), settings, client)
    assert not result.ok and not result.retryable and "HTTP 403" in result.error
    assert "s3cr3tpath" not in result.error and "invalid_token" in result.error
    receiver.down()
    result = send(Slack(name="team", url_secret="slack-url"), notification(), settings, client)
    assert result.retryable and "s3cr3tpath" not in result.error
    settings = _settings(tmp_path, alert_secrets={"slack-url": "hooks.slack.com/s3cr3tpath"})
    result = send(Slack(name="team", url_secret="slack-url"), notification(), settings, client)
    assert not result.retryable and "s3cr3tpath" not in result.error


def test_slack_shows_at_most_twenty_alerts() -> None:
    message = slack_message(notification(alerts=30))
    assert len(message["blocks"]) <= 50
    assert message["blocks"][-1]["elements"][0]["text"] == "and 10 more alerts"


# --- e-mail ------------------------------------------------------------------------
class _Inbox:
    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 OK"


def _parse(envelope: Envelope) -> EmailMessage:
    raw = envelope.original_content or b""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_email_through_a_real_smtp_server(tmp_path: Path, client: httpx.Client) -> None:
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        settings = _settings(tmp_path, smtp_host="127.0.0.1", smtp_port=controller.port,
                             smtp_from="alerts@gravix.example")  # fmt: skip
        channel = Email(name="ops", to=["ops@example.com", "lead@example.com"])
        result = send(channel, notification("acme/7/t0", alerts=2), settings, client)
        assert result.ok, result
    finally:
        controller.stop()
    (envelope,) = inbox.envelopes
    assert envelope.mail_from == "alerts@gravix.example"
    assert envelope.rcpt_tos == ["ops@example.com", "lead@example.com"]
    message = _parse(envelope)
    assert message["Subject"] == "[FIRING] checkout errors (checkout)"
    assert message["From"] == "alerts@gravix.example"
    assert message["To"] == "ops@example.com, lead@example.com"
    assert message["Message-ID"] == "<acme/7/t0@gravix.example>"
    assert message["X-Gravix-Idempotency-Key"] == "acme/7/t0"
    body = message.get_content()
    for n in (0, 1):
        assert f"- path=/pay/{n}, service=checkout: error_rate 0.125 > 0.05 over 5m" in body
        assert f"Open: {alert(n).url}" in body
    assert "Latest deploy: checkout v42" in body and "12 x 500 POST /pay/1" in body


# aiosmtpd 1.4 sets its own deprecated Session.login_data on every login.
@pytest.mark.filterwarnings("ignore:Session.login_data is deprecated:DeprecationWarning")
def test_email_over_starttls_with_login(
    tmp_path: Path, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ssl

    cert, key = self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    logins: list[tuple[bytes, bytes]] = []

    def authenticate(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        logins.append((data.login, data.password))
        ok = data.password == b"pw-123"
        return AuthResult(success=ok, handled=False)  # not handled: aiosmtpd answers 535

    inbox = _Inbox()
    controller = Controller(
        inbox, hostname="127.0.0.1", port=_free_port(), tls_context=server_tls,
        require_starttls=True, authenticator=authenticate, auth_required=True,
    )  # fmt: skip
    # The client trusts the test's CA through OpenSSL's usual variable.
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    controller.start()
    try:
        base: dict[str, Any] = {"smtp_host": "127.0.0.1", "smtp_port": controller.port,
                                "smtp_starttls": True, "smtp_username": "gravix"}  # fmt: skip
        channel = Email(name="ops", to=["ops@example.com"])
        wrong = send(channel, notification(), _settings(tmp_path, **base, smtp_password="nope"),
                     client)  # fmt: skip
        assert not wrong.ok and not wrong.retryable and wrong.status_code == 535, wrong
        right = send(channel, notification(), _settings(tmp_path, **base, smtp_password="pw-123"),
                     client)  # fmt: skip
        assert right.ok, right
        no_tls = _settings(tmp_path, **{**base, "smtp_starttls": False}, smtp_password="pw-123")
        plain = send(channel, notification(), no_tls, client)
        assert not plain.ok and not plain.retryable, plain  # the server insists on STARTTLS
    finally:
        controller.stop()
    # smtplib tries each mechanism the server offers (PLAIN, then LOGIN) before giving up.
    assert logins[-1] == (b"gravix", b"pw-123")
    assert {p for _, p in logins[:-1]} == {b"nope"}
    assert len(inbox.envelopes) == 1


def test_email_needs_an_smtp_host(tmp_path: Path, client: httpx.Client) -> None:
    result = send(Email(name="ops", to=["ops@example.com"]), notification(),
                  _settings(tmp_path), client)  # fmt: skip
    assert not result.ok and not result.retryable
    assert "smtp_host" in result.error and "GRAVIX_SMTP_HOST" in result.error


def test_email_to_a_down_server_is_retryable(tmp_path: Path, client: httpx.Client) -> None:
    settings = _settings(tmp_path, smtp_host="127.0.0.1", smtp_port=_free_port())
    result = send(Email(name="ops", to=["ops@example.com"]), notification(), settings, client)
    assert not result.ok and result.retryable, result


# --- alertmanager ------------------------------------------------------------------
def test_alertmanager_payload_shape() -> None:
    resolved = notification(status="resolved", alerts=1)
    resolved.alerts[0].series["http.route"] = "/pay"
    resolved.alerts[0].series["alertname"] = "clash"
    (entry,) = alertmanager_alerts(resolved)
    assert entry["labels"]["http_route"] == "/pay"
    assert entry["labels"]["alertname"] == "checkout errors"
    assert entry["labels"]["series_alertname"] == "clash"
    assert entry["startsAt"] == rfc3339(T0_MS) == "2026-09-21T14:13:20.000Z"
    assert entry["endsAt"] == rfc3339(T0_MS + 60_000)
    assert "endsAt" not in alertmanager_alerts(notification())[0]
    assert [label_name(n) for n in ("ok_1", "1st", "a-b.c", "")] == ["ok_1", "_1st", "a_b_c", "_"]


def _wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except httpx.HTTPError as e:
            last = e
        time.sleep(0.2)
    raise AssertionError(f"{what} not seen in {timeout} s (last: {last!r})")


@pytest.mark.timeout(120)
def test_real_alertmanager_receives_and_groups(tmp_path: Path, client: httpx.Client) -> None:
    binary = require_tool("prometheus-alertmanager", "prometheus-alertmanager")
    (tmp_path / "alertmanager.yml").write_text(
        "route:\n"
        "  receiver: blackhole\n"
        "  group_by: [alertname, service]\n"
        "receivers:\n"
        "  - name: blackhole\n"
    )
    port = _free_port()
    log = (tmp_path / "alertmanager.log").open("w")
    proc = subprocess.Popen(
        [binary, f"--config.file={tmp_path / 'alertmanager.yml'}",
         f"--storage.path={tmp_path / 'am-data'}", "--cluster.listen-address=",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for(lambda: client.get(f"{base}/-/ready", timeout=2).status_code == 200, 60,
                  "Alertmanager ready")  # fmt: skip
        now_ms = int(time.time() * 1000)
        firing = notification("acme/7/t1", alerts=2)
        for a in firing.alerts:
            a.since, a.at = now_ms - 600_000, now_ms - 60_000
        result = send(Alertmanager(name="am", url=base + "/"), firing, _settings(tmp_path), client)
        assert result.ok and result.status_code == 200, result

        def active() -> list[dict[str, Any]]:
            alerts: list[dict[str, Any]] = client.get(f"{base}/api/v2/alerts", timeout=2).json()
            return alerts

        alerts = sorted(_wait_for(lambda: len(active()) == 2 and active(), 30, "2 alerts"),
                        key=lambda a: a["labels"]["path"])  # fmt: skip
        for n, got in enumerate(alerts):
            assert got["labels"] == {
                "alertname": "checkout errors", "severity": "page", "gravix_tenant": "acme",
                "gravix_rule_id": "7", "service": "checkout", "path": f"/pay/{n}",
            }  # fmt: skip
            notes = got["annotations"]
            assert notes["summary"] == f"error rate of /pay/{n} above 5%"
            assert (notes["value"], notes["threshold"], notes["state"]) == (
                "0.125",
                "0.05",
                "firing",
            )
            assert notes["url"] == got["generatorURL"] == firing.alerts[n].url
            assert notes["failing_requests"] == f"12 x 500 POST /pay/{n}"
            assert got["startsAt"] == rfc3339(now_ms - 600_000)
            assert got["status"]["state"] == "active"
        groups = client.get(f"{base}/api/v2/alerts/groups", timeout=2).json()
        (group,) = groups
        assert group["labels"] == {"alertname": "checkout errors", "service": "checkout"}
        assert len(group["alerts"]) == 2
        # The resolved send of one series resolves that alert, the other stays.
        resolved = notification("acme/7/t2", status="resolved", alerts=1)
        resolved.alerts[0].since, resolved.alerts[0].at = now_ms - 600_000, now_ms - 1_000
        resolved.alerts[0].state = "resolved"
        assert send(Alertmanager(name="am", url=base), resolved, _settings(tmp_path), client).ok
        left = _wait_for(lambda: len(active()) == 1 and active(), 30, "one alert left")
        assert left[0]["labels"]["path"] == "/pay/1"
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()

"""Sending one notification to one channel: webhook, Slack, Alertmanager or e-mail.

:func:`send` never raises for a failed delivery; it returns a :class:`Result`
saying whether a retry may succeed:

- retryable: a timeout, a refused or dropped connection, HTTP 408, 429 and
  5xx, SMTP 4xx replies;
- not retryable: other HTTP 4xx (and 3xx: redirects are not followed), SMTP
  5xx replies, a secret the channel names that the ``alert_secrets`` setting
  lacks, no ``smtp_host``, a URL that cannot be used.

Error messages name the channel, the status and a short, sanitised excerpt of
the reply, and never a secret: neither a value of ``alert_secrets`` nor a
Slack webhook URL (which is one).

What each channel sends (docs/alerts.md):

- ``webhook``: ``POST <url>`` with the :class:`~gravix.schema.alerts.Notification`
  as JSON; headers ``Idempotency-Key: <notification.idempotency_key>``,
  ``User-Agent: gravix/<version>`` and, when the channel names a ``secret``,
  ``X-Gravix-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes>``.
- ``slack``: ``POST`` of a Block Kit message to the incoming-webhook URL held
  in the secret ``url_secret`` (:func:`slack_message`).
- ``alertmanager``: ``POST <url>/api/v2/alerts``, one alert per entry
  (:func:`alertmanager_alerts`).
- ``email``: one plain-text message over the ``smtp_*`` settings
  (:func:`email_message`).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import importlib.metadata
import re
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Final

import httpx
import msgspec

from gravix.config import Settings
from gravix.schema.alerts import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    AlertEntry,
    Alertmanager,
    Channel,
    Email,
    Notification,
    Slack,
    Webhook,
)

EXCERPT_CHARS: Final = 200
# Block Kit limits: 50 blocks a message, 150 characters a header, 3,000 a text.
SLACK_MAX_ALERTS: Final = 20
_SLACK_HEADER_CHARS: Final = 150
_SLACK_TEXT_CHARS: Final = 3_000
_LABEL_NAME: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_NOT_LABEL_CHAR: Final = re.compile(r"[^a-zA-Z0-9_]")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]+")
_MESSAGE_ID_SAFE: Final = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,200}")


@dataclass(frozen=True, slots=True)
class Result:
    """How one try went; ``error`` is safe to show (no secret in it)."""

    ok: bool
    status_code: int | None = None
    error: str = ""
    retryable: bool = False


class DeliveryError(Exception):
    """A failed try; ``retryable`` says whether trying again may succeed."""

    def __init__(self, message: str, *, retryable: bool, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.status_code = status_code


def kind_of(channel: Channel) -> str:
    """``webhook``, ``slack``, ``alertmanager`` or ``email``."""
    return str(channel.__struct_config__.tag)


@functools.cache
def user_agent() -> str:
    try:
        return f"gravix/{importlib.metadata.version('gravix')}"
    except importlib.metadata.PackageNotFoundError:
        return "gravix"


def send(
    channel: Channel, notification: Notification, settings: Settings, client: httpx.Client
) -> Result:
    """Deliver ``notification`` to ``channel`` once; never raises for a failed delivery."""
    try:
        if isinstance(channel, Webhook):
            code = _send_webhook(channel, notification, settings, client)
        elif isinstance(channel, Slack):
            code = _send_slack(channel, notification, settings, client)
        elif isinstance(channel, Alertmanager):
            code = _send_alertmanager(channel, notification, settings, client)
        else:
            _send_email(channel, notification, settings)
            code = None
    except DeliveryError as e:
        return Result(ok=False, status_code=e.status_code, error=e.message, retryable=e.retryable)
    return Result(ok=True, status_code=code)


# --- HTTP --------------------------------------------------------------------------
def excerpt(text: str) -> str:
    """A reply's first characters, on one line, for an error message."""
    flat = _CONTROL.sub(" ", text).strip()
    return flat if len(flat) <= EXCERPT_CHARS else flat[:EXCERPT_CHARS] + "..."


def secret(settings: Settings, name: str, channel: Channel) -> str:
    """The value of ``alert_secrets[name]``; a non-retryable failure naming it if unset."""
    value = settings.alert_secret(name)
    if value is None:
        raise DeliveryError(
            f"{kind_of(channel)} channel {channel.name!r} names the secret {name!r}, which the "
            "alert_secrets setting (GRAVIX_ALERT_SECRETS) does not hold",
            retryable=False,
        )
    return value


def _post(
    what: str,
    url: str,
    body: bytes,
    headers: dict[str, str],
    settings: Settings,
    client: httpx.Client,
    *,
    url_is_secret: bool = False,
) -> int:
    """POST ``body``; the status if 2xx, else :class:`DeliveryError`.

    ``what`` names the channel in messages (``webhook channel 'oncall'``).
    """

    def clean(text: str) -> str:
        # httpx's messages rarely hold the URL, but a Slack URL must never show.
        return text.replace(url, "<the URL>") if url_is_secret else text

    try:
        response = client.post(
            url,
            content=body,
            headers={"User-Agent": user_agent(), **headers},
            timeout=settings.alert_delivery_timeout_seconds,
        )
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as e:
        detail = "" if url_is_secret else f": {e}"
        raise DeliveryError(f"{what}: the URL cannot be used{detail}", retryable=False) from e
    except httpx.TimeoutException as e:
        raise DeliveryError(
            f"{what}: no answer within {settings.alert_delivery_timeout_seconds:g} s "
            f"({type(e).__name__})",
            retryable=True,
        ) from e
    except httpx.ConnectError as e:
        raise DeliveryError(f"{what}: cannot connect ({clean(str(e))})", retryable=True) from e
    except httpx.TransportError as e:
        raise DeliveryError(f"{what}: {type(e).__name__} ({clean(str(e))})", retryable=True) from e
    status = response.status_code
    if 200 <= status < 300:
        return status
    retryable = status in (408, 429) or status >= 500
    reply = clean(excerpt(response.text))
    raise DeliveryError(
        f"{what}: HTTP {status} {response.reason_phrase}" + (f": {reply}" if reply else ""),
        retryable=retryable,
        status_code=status,
    )


def _send_webhook(
    channel: Webhook, notification: Notification, settings: Settings, client: httpx.Client
) -> int:
    body = msgspec.json.encode(notification)
    headers = {
        "Content-Type": "application/json",
        IDEMPOTENCY_HEADER: notification.idempotency_key,
    }
    if channel.secret is not None:
        key = secret(settings, channel.secret, channel).encode()
        headers[SIGNATURE_HEADER] = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
    what = f"webhook channel {channel.name!r}"
    return _post(what, channel.url, body, headers, settings, client)


def _send_slack(
    channel: Slack, notification: Notification, settings: Settings, client: httpx.Client
) -> int:
    url = secret(settings, channel.url_secret, channel)
    body = msgspec.json.encode(slack_message(notification))
    what = f"slack channel {channel.name!r}"
    headers = {"Content-Type": "application/json"}
    return _post(what, url, body, headers, settings, client, url_is_secret=True)


def _send_alertmanager(
    channel: Alertmanager, notification: Notification, settings: Settings, client: httpx.Client
) -> int:
    url = channel.url.rstrip("/") + "/api/v2/alerts"
    # A firing alert stays firing in Alertmanager until two repeat intervals
    # pass without a word from Gravix (it repeats every interval), rather than
    # Alertmanager's resolve_timeout (5 m by default) after the single send.
    hold_ms = int(2 * settings.alert_repeat_interval_seconds * 1000)
    body = msgspec.json.encode(alertmanager_alerts(notification, hold_ms))
    what = f"alertmanager channel {channel.name!r}"
    headers = {"Content-Type": "application/json"}
    return _post(what, url, body, headers, settings, client)


# --- formats -----------------------------------------------------------------------
def rfc3339(ms: int) -> str:
    """``2026-12-06T10:04:00.000Z`` for epoch milliseconds."""
    at = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _utc(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _series(alert: AlertEntry) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(alert.series.items())) or "(all)"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def measurement(alert: AlertEntry) -> str:
    """``error_rate 0.12 > 0.05 over 5m (120 requests)``: the value against the threshold."""
    if alert.value is None and alert.threshold is None:
        return alert.metric or alert.kind
    text = f"{alert.metric or alert.kind} {_number(alert.value)}"
    if alert.threshold is not None:
        text += f" {alert.op or '>'} {_number(alert.threshold)}"
    if alert.window:
        text += f" over {alert.window}"
    if alert.requests is not None:
        text += f" ({alert.requests} requests)"
    return text


def _title(notification: Notification) -> str:
    service = f" ({notification.service})" if notification.service else ""
    return f"[{notification.status.upper()}] {notification.rule}{service}"


def _samples(alert: AlertEntry) -> str:
    return ", ".join(f"{s.count} x {s.status} {s.method} {s.path}" for s in alert.samples)


def _causes(alert: AlertEntry) -> list[str]:
    """What changed, best first: ``1. POST /pay on version v2 accounts for 83% ...``."""
    return [f"{i}. {c.text}" for i, c in enumerate(alert.causes, 1)]


def _deploy(alert: AlertEntry) -> str:
    d = alert.deploy
    if d is None:
        return ""
    text = f"{d.service} {d.version or '(no version)'} at {_utc(d.timestamp)}"
    return f"{text}: {d.message}" if d.message else text


def slack_escape(text: str) -> str:
    """Slack's mrkdwn escaping: ``&``, ``<`` and ``>`` as entities, so no user string
    becomes a link, a mention or markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def slack_message(notification: Notification) -> dict[str, Any]:
    """The Block Kit message: a header, a section per alert (at most
    :data:`SLACK_MAX_ALERTS`) with a button to its view, a context line with the
    deploy, failing requests and what changed when known, and ``text`` as the
    plain fallback."""
    header = f"{notification.status.upper()}: {notification.rule}"
    if notification.service:
        header += f" ({notification.service})"
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _clip(header, _SLACK_HEADER_CHARS)},
        }
    ]
    for alert in notification.alerts[:SLACK_MAX_ALERTS]:
        since = alert.since // 1000
        lines = [
            f"*{slack_escape(_series(alert))}*",
            slack_escape(measurement(alert)),
            f"{slack_escape(alert.state)} since "
            f"<!date^{since}^{{date_short_pretty}} {{time}}|{_utc(alert.since)}>",
        ]
        if alert.summary:
            lines.append(slack_escape(alert.summary))
        section: dict[str, Any] = {
            "type": "section",
            "text": {"type": "mrkdwn", "text": _clip("\n".join(lines), _SLACK_TEXT_CHARS)},
        }
        if alert.url and len(alert.url) <= _SLACK_TEXT_CHARS:  # Slack refuses longer ones
            section["accessory"] = {
                "type": "button",
                "text": {"type": "plain_text", "text": "Open in Gravix"},
                "url": alert.url,
            }
        blocks.append(section)
        context = []
        if alert.deploy is not None:
            context.append(f"Latest deploy: {slack_escape(_deploy(alert))}")
        if alert.samples:
            context.append(f"Failing requests: {slack_escape(_samples(alert))}")
        if alert.causes:
            context.append("What changed:\n" + slack_escape("\n".join(_causes(alert))))
        if context:
            text = _clip("\n".join(context), _SLACK_TEXT_CHARS)
            blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": text}]})
    hidden = len(notification.alerts) - SLACK_MAX_ALERTS
    if hidden > 0:
        more = f"and {hidden} more alerts"
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": more}]})
    count = len(notification.alerts)
    fallback = f"{_title(notification)}: {count} alert{'s' if count != 1 else ''}"
    return {"text": slack_escape(_clip(fallback, _SLACK_TEXT_CHARS)), "blocks": blocks}


def label_name(name: str) -> str:
    """``name`` as a Prometheus label name (``[a-zA-Z_][a-zA-Z0-9_]*``)."""
    if _LABEL_NAME.fullmatch(name):
        return name
    cleaned = _NOT_LABEL_CHAR.sub("_", name)
    return cleaned if cleaned[:1].isalpha() or cleaned[:1] == "_" else "_" + cleaned


def alertmanager_alerts(
    notification: Notification, hold_ms: int | None = None
) -> list[dict[str, Any]]:
    """Alertmanager's ``postableAlerts``: one per entry.

    A firing alert ends ``hold_ms`` after its send when that is given (Gravix
    repeats it before then while it fires), a resolved one when it resolved.

    The labels identify the alert (its rule and series), so the firing and the
    resolved send of one series are one alert to Alertmanager; the state, the
    values and the links are annotations. A dimension whose label name is taken
    (``alertname``...) becomes ``series_<name>``.
    """
    out = []
    for alert in notification.alerts:
        labels = {
            "alertname": alert.rule,
            "severity": alert.severity,
            "gravix_tenant": notification.tenant,
            "gravix_rule_id": str(alert.rule_id),
        }
        for key, value in sorted(alert.series.items()):
            name = label_name(key)
            if name in labels:
                name = f"series_{name}"
            if value:
                labels[name] = value
        if notification.service and "service" not in labels:
            labels["service"] = notification.service
        annotations = {
            "summary": alert.summary,
            "state": alert.state,
            "previous_state": alert.previous_state,
            "measurement": measurement(alert),
            "gravix_transition": alert.id,
        }
        optional = {
            "metric": alert.metric,
            "value": None if alert.value is None else _number(alert.value),
            "threshold": None if alert.threshold is None else _number(alert.threshold),
            "op": alert.op,
            "window": alert.window,
            "requests": None if alert.requests is None else str(alert.requests),
            "url": alert.url,
            "deploy": _deploy(alert) or None,
            "failing_requests": _samples(alert) or None,
            "what_changed": "\n".join(_causes(alert)) or None,
        }
        annotations.update({k: v for k, v in optional.items() if v is not None})
        entry: dict[str, Any] = {
            "labels": labels,
            "annotations": {k: v for k, v in annotations.items() if v},
            "startsAt": rfc3339(alert.since),
        }
        if notification.status == "resolved":
            entry["endsAt"] = rfc3339(alert.at)
        elif hold_ms is not None:
            entry["endsAt"] = rfc3339(alert.at + hold_ms)
        if alert.url:
            entry["generatorURL"] = alert.url
        out.append(entry)
    return out


def email_text(notification: Notification) -> str:
    """The e-mail's plain-text body: one paragraph per alert, with its link."""
    count = len(notification.alerts)
    lines = [
        f"{_title(notification)}: {count} alert{'s' if count != 1 else ''} "
        f"(tenant {notification.tenant})",
        "",
    ]
    for alert in notification.alerts:
        lines.append(f"- {_series(alert)}: {measurement(alert)}")
        lines.append(f"  {alert.state} since {_utc(alert.since)} (changed {_utc(alert.at)})")
        if alert.summary:
            lines.append(f"  {alert.summary}")
        if alert.deploy is not None:
            lines.append(f"  Latest deploy: {_deploy(alert)}")
        if alert.samples:
            lines.append(f"  Failing requests: {_samples(alert)}")
        if alert.causes:
            lines.append("  What changed:")
            lines += [f"    {cause}" for cause in _causes(alert)]
        if alert.url:
            lines.append(f"  Open: {alert.url}")
        lines.append("")
    lines.append(f"Idempotency key: {notification.idempotency_key}")
    return "\n".join(lines) + "\n"


def _header(text: str) -> str:
    # A line break in a header value would start a header of its own.
    return _CONTROL.sub(" ", text).strip()


def email_message(channel: Email, notification: Notification, settings: Settings) -> EmailMessage:
    """Subject ``[FIRING] <rule> (<service>)``; ``Message-ID`` and
    ``X-Gravix-Idempotency-Key`` carry the idempotency key, so a retry is the same
    message to mail clients that drop duplicates."""
    key = notification.idempotency_key
    local = key if _MESSAGE_ID_SAFE.fullmatch(key) else hashlib.sha256(key.encode()).hexdigest()
    domain = settings.smtp_from.rpartition("@")[2] or "gravix.invalid"
    message = EmailMessage()
    message["Subject"] = _header(_title(notification))
    message["From"] = settings.smtp_from
    message["To"] = ", ".join(channel.to)
    message["Message-ID"] = f"<{local}@{_header(domain)}>"
    message["X-Gravix-Idempotency-Key"] = _header(key)
    message.set_content(email_text(notification))
    return message


def _send_email(channel: Email, notification: Notification, settings: Settings) -> None:
    what = f"email channel {channel.name!r}"
    if not settings.smtp_host:
        raise DeliveryError(
            f"{what}: no SMTP server is configured; set smtp_host (GRAVIX_SMTP_HOST)",
            retryable=False,
        )
    try:
        message = email_message(channel, notification, settings)
    except ValueError as e:  # an address or header the e-mail package refuses
        raise DeliveryError(f"{what}: cannot write the message: {e}", retryable=False) from e
    timeout = settings.alert_delivery_timeout_seconds
    try:
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=timeout) as smtp:
            if settings.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if settings.smtp_username:
                password = settings.smtp_password
                smtp.login(settings.smtp_username, password.get_secret_value() if password else "")
            smtp.send_message(message, from_addr=settings.smtp_from, to_addrs=channel.to)
    except smtplib.SMTPRecipientsRefused as e:
        codes = [code for code, _ in e.recipients.values()]
        refused = ", ".join(f"{to} ({code})" for to, (code, _) in e.recipients.items())
        raise DeliveryError(
            f"{what}: the SMTP server refused every recipient: {refused}",
            retryable=all(400 <= c < 500 for c in codes),
            status_code=codes[0] if codes else None,
        ) from e
    except smtplib.SMTPResponseException as e:
        raw = e.smtp_error
        reply = excerpt(raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw))
        raise DeliveryError(
            f"{what}: SMTP {e.smtp_code}: {reply}",
            retryable=400 <= e.smtp_code < 500,
            status_code=e.smtp_code,
        ) from e
    except smtplib.SMTPNotSupportedError as e:
        raise DeliveryError(f"{what}: {e}", retryable=False) from e
    except ssl.SSLCertVerificationError as e:
        raise DeliveryError(f"{what}: STARTTLS: {e.verify_message}", retryable=False) from e
    except TimeoutError as e:
        raise DeliveryError(f"{what}: no answer within {timeout:g} s", retryable=True) from e
    except (smtplib.SMTPException, OSError) as e:
        raise DeliveryError(f"{what}: {type(e).__name__}: {e}", retryable=True) from e

"""The one Settings object.

Precedence, highest first: command-line flag > environment (``GRAVIX_*``, and a
``.env`` file in the working directory) > config file (``gravix.toml``, or the
file named by ``--config`` / ``GRAVIX_CONFIG``) > default.

Secrets (``SecretStr`` fields) are read only from the environment or ``.env``;
a config file that sets one is refused, so that secrets never land in a file
that gets committed. Every field is documented in ``docs/configuration.md``
(a test fails when one is not).
"""

from __future__ import annotations

import json
import os
import re
import socket
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from gravix.errors import ConfigError

DEFAULT_CONFIG_FILE = "gravix.toml"
# An origin and/or a path, nothing that could end a CSP directive or a JS string.
_API_BASE = re.compile(r"(https?://[A-Za-z0-9.:\[\]-]+)?(/[A-Za-z0-9._~/-]*)?")
# The placeholders of .env.example ("change-me-...", "<...>"): a copied .env that was
# never filled in must not start a server with a secret everyone knows (issue #9).
_PLACEHOLDER_SECRET = re.compile(r"change[-_ ]?me|<[^>]*>", re.IGNORECASE)


def _default_node_id() -> str:
    name = socket.gethostname().lower()
    # ASCII only: the node id goes into object keys (a "münchen" host would not start).
    cleaned = "".join(c if (c.isascii() and c.isalnum()) or c == "-" else "-" for c in name)
    cleaned = cleaned.strip("-")
    return cleaned[:48] or "node"


# Variables read by Gravix's clients, not by the server: gravix.client, `gravix
# import-logs` / `tail-logs`, `gravix loadgen` and the docs' curl lines. A .env
# shared with them must not stop the server, which refuses unknown GRAVIX_*
# names there (to catch typos).
CLIENT_VARIABLES = frozenset(
    {
        "gravix_url",
        "gravix_key",
        "gravix_service",
        "gravix_env",
        "gravix_version",
        "gravix_token",
        "gravix_loadgen_key",
    }
)


class _ClientVariablesSkipped(PydanticBaseSettingsSource):
    """The ``.env`` source without :data:`CLIENT_VARIABLES`."""

    def __init__(self, settings_cls: type[BaseSettings], inner: PydanticBaseSettingsSource):
        super().__init__(settings_cls)
        self.inner = inner

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self.inner.get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self.inner().items() if k.lower() not in CLIENT_VARIABLES}


class Settings(BaseSettings):
    """Every tunable of Gravix, with its default."""

    model_config = SettingsConfigDict(
        env_prefix="GRAVIX_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="forbid",
        validate_default=True,
    )

    # --- server -----------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address `gravix serve` listens on.")
    port: int = Field(8080, ge=0, le=65535, description="TCP port (0 picks a free one).")
    workers: int = Field(
        1, ge=1, le=64, description="Ingest worker processes; each owns its own spool."
    )
    data_dir: Path = Field(
        Path("gravix-data"), description="Root of all local state: spool, keys, catalog."
    )
    node_id: str = Field(
        default_factory=_default_node_id,
        pattern=r"^[a-z0-9][a-z0-9-]{0,47}$",
        description="Name of this node in object keys; defaults to the host name.",
    )
    shutdown_grace_seconds: float = Field(
        10.0, ge=0, le=600, description="On SIGTERM, how long in-flight requests may finish."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Least severe log level written."
    )
    log_format: Literal["json", "text"] = Field(
        "json", description="`json`: one JSON object a line; `text` for humans."
    )
    tls_cert_file: Path | None = Field(
        None,
        description="PEM certificate (chain) for HTTPS; set with `tls_key_file`, else plain HTTP.",
    )
    tls_key_file: Path | None = Field(
        None, description="PEM private key of `tls_cert_file` (a file, never the key itself)."
    )

    # --- intake limits ------------------------------------------------------
    header_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="A request's headers must arrive within this long (else 408 and close).",
    )
    body_timeout_seconds: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="A request's body must arrive within this long of its headers (else 408).",
    )
    max_connections: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Open connections per worker; one more is answered 503 and closed.",
    )
    max_body_bytes: int = Field(
        10 * 1024 * 1024,
        ge=1024,
        description="Largest request body, measured after decompression (413 above).",
    )
    max_batch_items: int = Field(
        10_000, ge=1, description="Most facts or events in one request (413 above)."
    )
    raw_retention_days: int = Field(
        30, ge=1, le=3650, description="Raw facts are kept this long; older facts are rejected."
    )
    max_future_seconds: int = Field(
        300, ge=0, le=86400, description="How far in the future a fact's timestamp may be."
    )
    max_series_per_service: int = Field(
        2000,
        ge=1,
        description="Distinct (method, path, env, version) series per tenant and service.",
    )
    max_services_per_tenant: int = Field(
        500,
        ge=1,
        description="Distinct services per tenant; facts naming a new one above it are refused.",
    )
    max_series_per_tenant: int = Field(
        50_000, ge=1, description="Distinct series per tenant, all services together."
    )
    rate_limit_per_second: float = Field(
        200.0, gt=0, description="Sustained requests per second allowed per API key (429 above)."
    )
    rate_limit_burst: int = Field(
        400, ge=1, description="Requests an API key may send at once before the rate applies."
    )
    key_refresh_seconds: float = Field(
        1.0,
        gt=0,
        le=5,
        description="How often a server re-reads the key store (a revoked key dies by then).",
    )
    session_hours: float = Field(
        12.0, gt=0, le=720, description="A login session ends this long after sign-in."
    )
    login_failures_per_minute: int = Field(
        5,
        ge=1,
        description="Failed logins allowed a minute per user name and per client address.",
    )

    # --- single sign-on (OpenID Connect; docs/access.md) ---------------------
    oidc_issuer: str = Field(
        "",
        description=(
            "Issuer URL of the OpenID Connect provider (its discovery document is "
            "`<issuer>/.well-known/openid-configuration`); empty: no single sign-on."
        ),
    )
    oidc_client_id: str = Field("", description="Gravix's client id at the provider.")
    oidc_scopes: str = Field(
        "openid email profile",
        description="Scopes asked for at sign-in, space-separated (`openid` is always sent).",
    )
    oidc_username_claim: str = Field(
        "email",
        pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
        description="ID token claim that names the Gravix user (lower-cased): `email` or `sub`.",
    )
    oidc_role_claim: str = Field(
        "groups",
        pattern=r"^[A-Za-z0-9_.:/-]{0,128}$",
        description="ID token claim (a string or a list) whose values `oidc_role_map` maps.",
    )
    oidc_role_map: dict[str, Literal["viewer", "editor", "admin"]] = Field(
        default_factory=dict,
        description='Claim value -> role, e.g. `{"gravix-admins": "admin"}`; the highest wins.',
    )
    oidc_default_role: Literal["none", "viewer", "editor", "admin"] = Field(
        "viewer",
        description="Role of a user whose claim maps to none; `none` refuses the sign-in.",
    )
    oidc_tenant_claim: str = Field(
        "",
        pattern=r"^[A-Za-z0-9_.:/-]{0,128}$",
        description="ID token claim naming the user's tenant; empty: `oidc_default_tenant`.",
    )
    oidc_tenant_map: dict[str, str] = Field(
        default_factory=dict,
        description=(
            'Claim value -> tenant, e.g. `{"team-shop": "acme"}`; empty: the value is the tenant.'
        ),
    )
    oidc_default_tenant: str = Field(
        "",
        pattern=r"^([a-z0-9][a-z0-9-]{0,62})?$",
        description="Tenant of a user whose claim names none; empty: such a sign-in is refused.",
    )
    oidc_required_tenants: list[str] = Field(
        default_factory=list,
        description="Tenants whose users must sign in with SSO (password logins refused).",
    )
    oidc_break_glass_users: list[str] = Field(
        default_factory=list,
        description="Local users who may still sign in with a password in those tenants.",
    )

    # --- spool --------------------------------------------------------------
    segment_max_age_seconds: float = Field(
        5.0,
        gt=0,
        description=(
            "A spool segment is sealed once it is this old (then uploaded and rolled up: "
            "the stored minute tier trails the facts by about twice this)."
        ),
    )
    segment_max_bytes: int = Field(
        64 * 1024 * 1024, ge=4096, description="A spool segment is sealed once this big."
    )
    spool_high_water_bytes: int = Field(
        1024 * 1024 * 1024,
        ge=4096,
        description="Above this many bytes on disk per worker spool, intake answers 503.",
    )
    spool_min_free_bytes: int = Field(
        64 * 1024 * 1024,
        ge=0,
        description="Intake answers 503 when the spool's file system has less free space.",
    )

    # --- object store and uploader -----------------------------------------
    object_store_url: str = Field(
        "",
        description=(
            "Where raw facts go: empty for `<data_dir>/store`, `file:///path`, "
            "or `s3://bucket/prefix`."
        ),
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3 API endpoint for MinIO or other S3-compatible stores."
    )
    s3_region: str | None = Field(None, description="S3 region (AWS default chain if unset).")
    s3_path_style: bool = Field(
        False, description="Path-style S3 addressing (MinIO and most self-hosted stores)."
    )
    s3_timeout_seconds: float = Field(
        30.0, gt=0, le=600, description="S3 connect and read timeout of one request."
    )
    uploader_enabled: bool = Field(
        True,
        description="Run the uploader inside `gravix serve` (off: `gravix upload --once` ships).",
    )
    upload_interval_seconds: float = Field(
        1.0, gt=0, le=3600, description="How often the uploader looks for sealed segments."
    )
    upload_backoff_max_seconds: float = Field(
        60.0, gt=0, description="Longest wait between upload retries while the store fails."
    )

    # --- rollup -------------------------------------------------------------
    rollup_enabled: bool = Field(
        True, description="Run the rollup inside `gravix serve` (off: `gravix rollup` from cron)."
    )
    rollup_interval_seconds: float = Field(
        5.0,
        gt=0,
        le=3600,
        description=(
            "How often `gravix serve` rolls up new raw facts (and at once after its own "
            "uploader stored a segment)."
        ),
    )
    rollup_lease_seconds: float = Field(
        600.0,
        ge=5,
        description="A rollup lock not renewed for this long belongs to a dead run and is taken.",
    )
    rollup_memory_limit: str = Field(
        "1GB",
        pattern=r"^\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$",
        description="DuckDB memory limit of one rollup; beyond it DuckDB spills to disk.",
    )
    query_memory_limit: str = Field(
        "1GB",
        pattern=r"^\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$",
        description="DuckDB memory limit of the query engine (all queries of a worker).",
    )
    rollup_threads: int = Field(
        0, ge=0, le=256, description="DuckDB threads of one rollup (0: one per core)."
    )
    rollup_settle_seconds: int = Field(
        7200,
        ge=0,
        le=7 * 86400,
        description=(
            "How long after its end an hour's archive parts are compacted into one file "
            "(most late facts are in by then; a later fact adds a part and compacts again)."
        ),
    )
    rollup_chunk_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="Raw objects folded per step; bounds the rollup's memory for a big backlog.",
    )

    # --- engines (docs/scale.md) --------------------------------------------------
    role: Literal["all", "ingest", "api"] = Field(
        "all",
        description=(
            "What `gravix serve` runs: `all` (intake, uploader, rollup, retention, API, "
            "dashboard), `ingest` (the same without rollup and retention, for extra "
            "ingest nodes that share one object store) or `api` (all but intake: the API, "
            "dashboard, alerts, and the rollup and retention, beside ingest nodes)."
        ),
    )
    rollup_engine: Literal["duckdb", "spark"] = Field(
        "duckdb", description="What computes the rollup: embedded DuckDB or Spark (PySpark)."
    )
    query_engine: Literal["duckdb", "spark", "trino"] = Field(
        "duckdb", description="What answers queries: embedded DuckDB, Spark SQL or Trino."
    )
    spark_master: str = Field(
        "local[2]",
        description="Spark master URL of the Spark engines (`local[2]`, `spark://host:7077`).",
    )
    spark_conf: dict[str, str] = Field(
        default_factory=dict,
        description=(
            'Extra Spark settings, e.g. `{"spark.executor.memory": "4g"}`; '
            "applied when Gravix starts the Spark session (not under `spark-submit`)."
        ),
    )
    trino_url: str = Field(
        "http://127.0.0.1:8080",
        pattern=r"^https?://[^\s/]+(/.*)?$",
        description="The Trino coordinator the Trino query engine sends SQL to.",
    )
    trino_catalog: str = Field(
        "gravix",
        pattern=r"^[a-z_][a-z0-9_]*$",
        description="Trino catalog holding the Gravix tables (deploy/trino/).",
    )
    trino_schema: str = Field(
        "gravix",
        pattern=r"^[a-z_][a-z0-9_]*$",
        description="Trino schema holding the Gravix tables.",
    )
    trino_user: str = Field("gravix", min_length=1, description="User name sent to Trino.")

    # --- retention ------------------------------------------------------------
    retention_enabled: bool = Field(
        True, description="Apply retention once a day inside `gravix serve`."
    )
    minute_retention_days: int = Field(
        396, ge=1, description="Days of minute metrics kept (13 months)."
    )
    hour_retention_days: int = Field(
        1096, ge=0, description="Days of hourly metrics kept (3 years); 0 keeps them forever."
    )
    day_retention_days: int = Field(
        0, ge=0, description="Days of daily metrics kept; 0 keeps them forever."
    )
    tenant_retention: dict[str, dict[str, int]] = Field(
        default_factory=dict,
        description=(
            'Per-tenant overrides, e.g. `{"acme": {"raw_retention_days": 7}}`; '
            "keys are the four `*_retention_days` settings."
        ),
    )

    # --- alerts (docs/alerts.md) -------------------------------------------------
    alerts_enabled: bool = Field(
        True, description="Evaluate alert rules and send notifications inside `gravix serve`."
    )
    alert_interval_seconds: float = Field(
        10.0, ge=1, le=3600, description="How often the alert rules are evaluated."
    )
    alert_min_requests: int = Field(
        20,
        ge=0,
        description=(
            "Requests a series needs in a rule's window before a ratio or latency rule may "
            "fire (a rule's `min_requests` overrides it)."
        ),
    )
    alert_repeat_interval_seconds: float = Field(
        14400.0, ge=60, description="A firing alert is notified again this often (4 h)."
    )
    alert_delivery_timeout_seconds: float = Field(
        10.0, gt=0, le=300, description="Time one notification may take to be delivered."
    )
    alert_delivery_backoff_max_seconds: float = Field(
        300.0, ge=1, description="Longest wait between retries of a notification."
    )
    alert_delivery_give_up_seconds: float = Field(
        86400.0, ge=60, description="A notification not delivered within this is given up."
    )
    alert_rules_dir: Path | None = Field(
        None,
        description=(
            "A folder of `<tenant>.yaml` rule files kept in git, read again when they "
            "change; unset: rules come only from the API, the dashboard and `gravix alerts`."
        ),
    )
    public_url: str = Field(
        "",
        description=(
            "The dashboard's address as people open it (`https://gravix.example.com`), "
            "for the links in notifications; empty: `http://<host>:<port>`."
        ),
    )
    smtp_host: str = Field("", description="SMTP server for e-mail channels; empty: none.")
    smtp_port: int = Field(25, ge=1, le=65535, description="Its port.")
    smtp_starttls: bool = Field(False, description="Upgrade the SMTP connection with STARTTLS.")
    smtp_from: str = Field("gravix@localhost", description="The From address of alert e-mail.")
    smtp_username: str = Field("", description="SMTP user name; empty: no login.")

    # --- dashboard ---------------------------------------------------------------
    dashboard_api_base: str = Field(
        "",
        description=(
            "Where the dashboard sends API requests (its `config.js`): empty for the same "
            "origin, a path prefix (`/gravix`) or an origin (`https://gravix.example.com`)."
        ),
    )
    dashboard_refresh_seconds: float = Field(
        10.0, ge=1, le=3600, description="How often the dashboard reloads its data."
    )
    dashboard_stale_seconds: float = Field(
        300.0, ge=10, description="The dashboard warns when the newest data is older than this."
    )
    dashboard_vendor_dir: Path | None = Field(
        None,
        description=(
            "The `node_modules` folder holding the dashboard's chart library (uPlot); "
            "unset: `web/node_modules` of the source tree, filled by `npm ci`."
        ),
    )

    # --- secrets (environment or .env only) ---------------------------------
    bootstrap_key: SecretStr | None = Field(
        None,
        description=(
            "Secret. An ingest key (`gvx_...`) registered at start for tenant "
            "`bootstrap_tenant`; for containers where `gravix keys create` cannot run first."
        ),
    )
    database_url: SecretStr | None = Field(
        None,
        description=(
            "Secret. `postgresql://user:password@host:5432/db`: keys, API tokens, users, "
            "login sessions and the series catalog live in that PostgreSQL database, shared "
            "by every node. Unset: SQLite files in `data_dir` (keys.db, tokens.db, users.db, "
            "catalog.db)."
        ),
    )
    trino_password: SecretStr | None = Field(
        None, description="Secret. Trino password (basic auth over HTTPS); unset sends none."
    )
    s3_access_key_id: SecretStr | None = Field(
        None, description="Secret. S3 access key; unset uses AWS_ACCESS_KEY_ID and the AWS chain."
    )
    s3_secret_access_key: SecretStr | None = Field(
        None, description="Secret. S3 secret key; unset uses AWS_SECRET_ACCESS_KEY and the chain."
    )
    smtp_password: SecretStr | None = Field(None, description="Secret. SMTP password.")
    oidc_client_secret: SecretStr | None = Field(
        None, description="Secret. Gravix's client secret at the OpenID Connect provider."
    )
    alert_secrets: SecretStr | None = Field(
        None,
        description=(
            "Secret. Named secrets alert channels refer to (a webhook's HMAC key, a Slack "
            'webhook URL), as a JSON object: `{"oncall": "..."}`; a channel names one, never '
            "holds it."
        ),
    )
    bootstrap_tenant: str = Field(
        "default",
        pattern=r"^[a-z0-9][a-z0-9-]{0,62}$",
        description="Tenant of `bootstrap_key`.",
    )
    operator_tenant: str | None = Field(
        None,
        pattern=r"^[a-z0-9][a-z0-9-]{0,62}$",
        description=(
            "The tenant whose admins run this node: they alone see its intake, spool and "
            "quarantine in `GET /api/v1/status` (all tenants together). Unset: nobody does."
        ),
    )

    @field_validator("dashboard_api_base")
    @classmethod
    def _api_base(cls, value: str) -> str:
        # It lands in a CSP header and in JavaScript: only a plain path or origin[/path].
        value = value.rstrip("/")
        if value and not _API_BASE.fullmatch(value):
            raise ValueError(
                "use an empty value, a path such as /gravix, or a URL such as "
                "https://gravix.example.com"
            )
        return value

    @field_validator(
        "bootstrap_key",
        "s3_access_key_id",
        "s3_secret_access_key",
        "trino_password",
        "smtp_password",
        "alert_secrets",
        "database_url",
        "oidc_client_secret",
    )
    @classmethod
    def _not_a_placeholder(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and _PLACEHOLDER_SECRET.search(value.get_secret_value()):
            raise ValueError(
                "holds a placeholder from .env.example; set a real secret or leave it unset"
            )
        return value

    @field_validator("oidc_issuer")
    @classmethod
    def _oidc_issuer(cls, value: str) -> str:
        # Compared byte for byte with the ID token's `iss`: kept exactly as given.
        if value and not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value):
            raise ValueError("must be the provider's issuer URL, e.g. https://accounts.google.com")
        return value

    @field_validator("oidc_client_id")
    @classmethod
    def _oidc_client_id(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("oidc_issuer") and not value:
            raise ValueError(
                "set oidc_client_id with oidc_issuer (Gravix's client at the provider)"
            )
        return value

    @field_validator("oidc_tenant_map", "oidc_required_tenants")
    @classmethod
    def _oidc_tenants(cls, value: dict[str, str] | list[str]) -> dict[str, str] | list[str]:
        tenants = value.values() if isinstance(value, dict) else value
        for tenant in tenants:
            if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", tenant):
                raise ValueError(f"{tenant!r} is not a tenant name")
        return value

    @field_validator("database_url")
    @classmethod
    def _postgresql_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        scheme = value.get_secret_value().split("://", 1)[0].lower()
        if scheme not in ("postgresql", "postgres", "postgresql+psycopg"):
            # The value itself is not repeated: it may hold a password.
            raise ValueError("must be a postgresql://user:password@host:port/database URL")
        return value

    @field_validator("alert_secrets", mode="before")
    @classmethod
    def _alert_secrets_text(cls, value: Any) -> Any:
        # Given as a mapping (Settings(alert_secrets={...})): kept as its JSON text.
        return json.dumps(value) if isinstance(value, dict) else value

    @field_validator("alert_secrets")
    @classmethod
    def _alert_secrets_json(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return value
        try:
            names = json.loads(value.get_secret_value())
        except ValueError:
            names = None
        if not isinstance(names, dict) or not all(
            isinstance(k, str) and k and isinstance(v, str) and v for k, v in names.items()
        ):
            raise ValueError('must be a JSON object of names and secrets: {"oncall": "..."}')
        return value

    @field_validator("tls_cert_file", "tls_key_file")
    @classmethod
    def _tls_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None and not value.expanduser().is_file():
            raise ValueError(f"{value} is not a file")
        # tls_key_file comes after tls_cert_file, so both are known here.
        if (
            info.field_name == "tls_key_file"
            and "tls_cert_file" in info.data
            and (value is None) != (info.data["tls_cert_file"] is None)
        ):
            raise ValueError("set tls_cert_file and tls_key_file together, or neither")
        return value.expanduser() if value is not None else None

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("dashboard_vendor_dir")
    @classmethod
    def _expand_vendor(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            _ClientVariablesSkipped(settings_cls, dotenv_settings),
            _FileSource(settings_cls),
        )

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def metadata_url(self) -> str | None:
        """``database_url`` as text (PostgreSQL), None for the SQLite files of the data dir."""
        return self.database_url.get_secret_value() if self.database_url else None

    @property
    def keys_db(self) -> Path:
        return self.data_dir / "keys.db"

    @property
    def users_db(self) -> Path:
        return self.data_dir / "users.db"

    @property
    def tokens_db(self) -> Path:
        return self.data_dir / "tokens.db"

    @property
    def catalog_db(self) -> Path:
        return self.data_dir / "catalog.db"

    @property
    def alerts_db(self) -> Path:
        return self.data_dir / "alerts.db"

    def alert_secret(self, name: str) -> str | None:
        """The value of the alert secret ``name`` (``alert_secrets``), if there is one."""
        if self.alert_secrets is None:
            return None
        value = json.loads(self.alert_secrets.get_secret_value()).get(name)
        return value if isinstance(value, str) else None


SECRET_FIELDS = frozenset(
    name for name, f in Settings.model_fields.items() if "SecretStr" in str(f.annotation)
)


class _FileSource(PydanticBaseSettingsSource):
    """Values from the TOML config file chosen by :func:`load_settings`."""

    path: Path | None = None
    required: bool = False

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ does the work

    def __call__(self) -> dict[str, Any]:
        path = _FileSource.path
        if path is None or not path.exists():
            if _FileSource.required and path is not None:
                raise ConfigError(f"config file {path} does not exist")
            return {}
        try:
            values = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"cannot read config file {path}: {e}") from e
        values = values.get("gravix", values)
        secrets = sorted(SECRET_FIELDS & values.keys())
        if secrets:
            raise ConfigError(
                f"{path} sets the secret(s) {', '.join(secrets)}: secrets are read only "
                "from the environment or .env (GRAVIX_<NAME>)"
            )
        return dict(values)


def load_settings(config_file: Path | None = None, **flags: Any) -> Settings:
    """Build Settings from flags (None means "not given"), env, file, defaults."""
    explicit = config_file or os.environ.get("GRAVIX_CONFIG")
    _FileSource.path = Path(explicit) if explicit else Path(DEFAULT_CONFIG_FILE)
    _FileSource.required = bool(explicit)
    given = {k: v for k, v in flags.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        raise ConfigError(f"invalid setting {where}: {first['msg']}") from e

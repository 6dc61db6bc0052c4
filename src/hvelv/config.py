"""Typed settings: environment variables (``HVELV_*``) and an optional TOML file.

Invalid configuration stops start-up with a message that names the setting
(:class:`ConfigError`). Settings are immutable once loaded and are passed explicitly;
there is no global mutable configuration.
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from hvelv.storage.factory import StorageSettings

CONFIG_FILE_ENV = "HVELV_CONFIG_FILE"
MAX_JOB_INTERVAL = 30 * 24 * 3600
MIN_JOB_INTERVAL = 0.1


class ConfigError(Exception):
    """The configuration is invalid; the message names every offending setting."""


def _config_file() -> Path | None:
    explicit = os.environ.get(CONFIG_FILE_ENV)
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"{CONFIG_FILE_ENV}: no such file: {path}")
        return path
    home = os.environ.get("HVELV_HOME")
    if home:
        candidate = Path(home) / "hvelv.toml"
        if candidate.is_file():
            return candidate
    return None


class Settings(BaseSettings):
    """Every setting of a Hvelv instance. Environment variables are ``HVELV_<NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix="HVELV_", extra="forbid", frozen=True, validate_default=True
    )

    home: Path = Field(
        default=Path(".hvelv"),
        description="Instance directory: keyring, embedded database, local blob store.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default is SQLite in HOME. "
        "PostgreSQL: postgresql+psycopg://user@host/db",
    )
    sqlite_synchronous: Literal["FULL", "NORMAL"] = Field(
        default="FULL", description="SQLite synchronous pragma (FULL survives power loss)."
    )
    host: str = Field(default="127.0.0.1", description="Address `hvelv serve` binds to.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port `hvelv serve` binds to.")
    public_url: str | None = Field(
        default=None,
        description="Base URL users reach the API on (for links); default http://HOST:PORT.",
    )
    access_token_ttl_seconds: int = Field(
        default=900, ge=30, le=3600, description="Lifetime of access tokens (at most 1 hour)."
    )
    refresh_token_ttl_seconds: int = Field(
        default=8 * 3600, ge=60, le=30 * 24 * 3600, description="Lifetime of a login session."
    )
    auth_cache_seconds: float = Field(
        default=2.0,
        ge=0,
        le=60,
        description=(
            "How long a verified login, project and roles may be reused without a query; "
            "a change by another process (replica, CLI) takes effect within this time, one by "
            "the same process at once. 0 turns the cache off."
        ),
    )
    login_max_failures: int = Field(
        default=5, ge=1, le=100, description="Consecutive failed logins before the account locks."
    )
    lockout_base_seconds: int = Field(
        default=30, ge=1, description="First lock-out; it doubles with every further failure."
    )
    lockout_max_seconds: int = Field(
        default=3600, ge=1, description="Upper bound for the growing lock-out."
    )
    max_json_body_bytes: int = Field(
        default=1_048_576, ge=1024, description="Largest JSON request body accepted."
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="Browser origins allowed to call the API (CORS)."
    )
    totp_issuer: str = Field(default="Hvelv", min_length=1, description="Issuer in otpauth URIs.")
    audit_checkpoint_interval: int = Field(
        default=1000, ge=1, description="Sign a Merkle checkpoint every this many audit events."
    )
    api_key_max_days: int = Field(
        default=365, ge=1, le=3650, description="Longest lifetime of an API key."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Log level of the JSON logs."
    )
    trust_proxy_headers: bool = Field(
        default=False, description="Take the client address from X-Forwarded-For."
    )
    secure_cookies: bool = Field(default=False, description="Mark cookies Secure (behind TLS).")
    db_pool_size: int = Field(default=10, ge=1, le=200, description="Database connection pool.")
    node_name: str = Field(
        default_factory=socket.gethostname,
        min_length=1,
        max_length=100,
        description="Name of this API replica, unique among running replicas (upload leases).",
    )
    storage_backend: Literal["local", "s3"] = Field(
        default="local", description="Where new objects are written: local disk or S3."
    )
    storage_root: Path | None = Field(
        default=None, description="Directory of the local blob store; default HOME/blobs."
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="S3 endpoint, e.g. http://127.0.0.1:8333 (path-style)."
    )
    s3_region: str = Field(default="us-east-1", description="S3 region.")
    s3_bucket: str | None = Field(default=None, description="S3 bucket for objects.")
    s3_access_key: str | None = Field(default=None, description="S3 access key id.")
    s3_secret_key: SecretStr | None = Field(default=None, description="S3 secret access key.")
    s3_key_prefix: str = Field(default="", description="Prefix for every S3 object key.")
    s3_create_bucket: bool = Field(
        default=False, description="Create the S3 bucket at start-up if it is missing."
    )
    segment_size: int = Field(
        default=4 * 1024 * 1024,
        ge=64 * 1024,
        le=64 * 1024 * 1024,
        description="Plaintext bytes per encrypted segment of stored files.",
    )
    upload_part_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=64 * 1024,
        le=512 * 1024 * 1024,
        description="Bytes stored (and made durable) per write while an upload streams.",
    )
    max_file_bytes: int = Field(
        default=1024**4,
        ge=0,
        le=2**62,
        description="Largest file one upload may create (Tus-Max-Size).",
    )
    upload_expiry_hours: int = Field(
        default=72, ge=1, le=24 * 90, description="Unfinished uploads expire after this long."
    )
    upload_lease_seconds: int = Field(
        default=60,
        ge=5,
        le=3600,
        description="A PATCH holds its upload this long between writes; then another may take it.",
    )
    trash_retention_days: int = Field(
        default=30, ge=0, le=3650, description="Deleted files can be restored for this long."
    )
    maintenance_interval_seconds: float = Field(
        default=600,
        ge=0,
        le=MAX_JOB_INTERVAL,
        description="How often the server purges expired uploads and trash (0: never).",
    )
    outbox_interval_seconds: float = Field(
        default=30,
        ge=0,
        le=MAX_JOB_INTERVAL,
        description="How often the server sends queued notifications by SMTP (0: never).",
    )
    consent_review_interval_seconds: float = Field(
        default=3600,
        ge=0,
        le=MAX_JOB_INTERVAL,
        description="How often the server ends representations at the age of majority and "
        "asks those participants to re-consent (0: never).",
    )
    jobs_start_delay_seconds: float = Field(
        default=60,
        ge=0,
        le=3600,
        description="The first run of each background job comes this long after start "
        "(or one interval, when shorter).",
    )
    consent_age_of_majority: int = Field(
        default=16,
        ge=12,
        le=21,
        description="Age from which participants consent for themselves (Health Research Act §17).",
    )
    consent_allow_synthetic_ids: bool = Field(
        default=False,
        description="Accept synthetic test national ids (month + 80). Never in production.",
    )
    participant_invitation_ttl_hours: int = Field(
        default=336, ge=1, le=24 * 90, description="How long a participant invitation link works."
    )
    participant_code_ttl_seconds: int = Field(
        default=600, ge=60, le=3600, description="How long a participant's one-time code works."
    )
    participant_session_ttl_seconds: int = Field(
        default=1800, ge=60, le=24 * 3600, description="Lifetime of a participant session."
    )
    portal_idle_seconds: int = Field(
        default=900,
        ge=60,
        le=24 * 3600,
        description="The participant portal signs out after this long without a request.",
    )
    query_max_rows: int = Field(
        default=100_000,
        ge=1,
        le=1_000_000_000,
        description="Most rows a dataset query may return (more: 422 query_limit_exceeded).",
    )
    query_max_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        le=64 * 1024**3,
        description="Largest result of a dataset query, in bytes (Arrow, in memory).",
    )
    query_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=24 * 3600,
        description="Time limit of a dataset query, including decrypting a version and building "
        "its consent-filtered working copy.",
    )
    query_page_max_rows: int = Field(
        default=10_000,
        ge=1,
        le=1_000_000,
        description="Largest JSON page of a query result (the request's `limit`).",
    )
    query_memory_mb: int = Field(
        default=1024,
        ge=64,
        le=16 * 1024 * 1024,
        description="DuckDB memory limit of each use's query database (working copies + query).",
    )
    query_threads: int = Field(
        default=2, ge=1, le=256, description="DuckDB threads of each use's query database."
    )
    query_max_uses: int = Field(
        default=8,
        ge=1,
        le=1000,
        description="Query databases (one per purpose, action and requester) kept per project "
        "and process; the least recently used is closed first.",
    )
    dataset_cache_mb: int = Field(
        default=4096,
        ge=0,
        le=16 * 1024 * 1024,
        description="Decrypted dataset versions kept in memory per project and process (LRU).",
    )
    smtp_host: str | None = Field(
        default=None, description="SMTP server for the notification outbox; unset: not sent."
    )
    smtp_port: int = Field(default=25, ge=1, le=65535, description="SMTP server port.")
    smtp_starttls: bool = Field(default=False, description="Use STARTTLS with the SMTP server.")
    smtp_username: str | None = Field(default=None, description="SMTP login user, if any.")
    smtp_password: SecretStr | None = Field(default=None, description="SMTP login password.")
    smtp_from: str = Field(
        default="hvelv@localhost", min_length=3, description="Sender address of notifications."
    )

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("sqlite", "postgresql")):
            raise ValueError("must be a sqlite:// or postgresql+psycopg:// URL")
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f"origin {origin!r} must start with http:// or https://")
        return value

    @field_validator(
        "maintenance_interval_seconds",
        "outbox_interval_seconds",
        "consent_review_interval_seconds",
    )
    @classmethod
    def _job_interval(cls, value: float) -> float:
        if 0 < value < MIN_JOB_INTERVAL:
            raise ValueError(f"must be 0 (never) or at least {MIN_JOB_INTERVAL} seconds")
        return value

    @field_validator("lockout_max_seconds")
    @classmethod
    def _lockout_order(cls, value: int, info: ValidationInfo) -> int:
        base = info.data.get("lockout_base_seconds")
        if base is not None and value < base:
            raise ValueError(f"lockout_max_seconds must be >= lockout_base_seconds ({base})")
        return value

    @field_validator("query_page_max_rows")
    @classmethod
    def _page_within_result(cls, value: int, info: ValidationInfo) -> int:
        rows = info.data.get("query_max_rows")
        if rows is not None and value > rows:
            raise ValueError(
                f"query_page_max_rows ({value}) must be <= query_max_rows ({rows}): a page is "
                "part of one result"
            )
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_file()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'hvelv.db').resolve()}"

    def storage(self, backend: str | None = None) -> StorageSettings:
        """Settings of one blob store (``backend`` default: the one new objects go to)."""
        name = backend or self.storage_backend
        if name == "local":
            return StorageSettings(backend="local", root=self.storage_root or self.home / "blobs")
        if name == "s3":
            if not self.s3_bucket:
                raise ConfigError("invalid configuration: HVELV_S3_BUCKET is needed for S3 storage")
            if (self.s3_access_key is None) != (self.s3_secret_key is None):
                raise ConfigError(
                    "invalid configuration: give both HVELV_S3_ACCESS_KEY and "
                    "HVELV_S3_SECRET_KEY, or neither"
                )
            return StorageSettings(
                backend="s3",
                s3_endpoint_url=self.s3_endpoint_url,
                s3_region=self.s3_region,
                s3_access_key=self.s3_access_key,
                s3_secret_key=self.s3_secret_key.get_secret_value() if self.s3_secret_key else None,
                s3_bucket=self.s3_bucket,
                s3_key_prefix=self.s3_key_prefix,
                s3_create_bucket=self.s3_create_bucket,
            )
        raise ConfigError(f"invalid configuration: unknown storage backend {name!r}")

    @property
    def base_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"

    def redacted(self) -> dict[str, Any]:
        """All settings as JSON-able values with secrets and passwords in URLs hidden."""
        data = self.model_dump(mode="json")
        for name, value in data.items():
            if isinstance(getattr(self, name), SecretStr) and value is not None:
                data[name] = "**********"
        data["database_url"] = redact_url(self.resolved_database_url)
        return data


SECRET_PARAMS = {"password", "sslpassword", "passfile"}


def redact_url(url: str) -> str:
    """Hide passwords in a database URL: in ``user:password@`` and in query parameters."""
    if "?" in url:
        base, query = url.split("?", 1)
        pairs = parse_qsl(query, keep_blank_values=True)
        hidden = [(k, "***" if k.lower() in SECRET_PARAMS else v) for k, v in pairs]
        return redact_url(base) + "?" + urlencode(hidden, safe="*/:")
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    if ":" in creds:
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


def load_settings(**overrides: Any) -> Settings:
    """Load settings or raise :class:`ConfigError` naming each invalid setting."""
    try:
        return Settings(**overrides)
    except SettingsError as exc:
        match = re.search(r'field "(\w+)"', str(exc))
        name = f"HVELV_{match.group(1).upper()}" if match else "settings"
        raise ConfigError(f"invalid configuration: {name}: {exc} (lists are JSON)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"invalid configuration file {_config_file()} ({CONFIG_FILE_ENV}): {exc}"
        ) from None
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"]) or "settings"
            problems.append(f"HVELV_{name.upper()} ({name}): {err['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None

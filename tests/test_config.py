"""Settings: defaults, HVELV_* variables, a TOML file, and errors that name the setting."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from hvelv.config import ConfigError, Settings, load_settings, redact_url


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No HVELV_* variable from the developer's shell; a fresh working directory."""
    for name in list(os.environ):
        if name.upper().startswith("HVELV_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def toml_file(tmp_path: Path, text: str, name: str = "hvelv.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults(tmp_path: Path) -> None:
    settings = load_settings()
    assert settings.home == Path(".hvelv")
    assert settings.database_url is None
    assert settings.resolved_database_url == f"sqlite:///{tmp_path / '.hvelv' / 'hvelv.db'}"
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.base_url == "http://127.0.0.1:8000"
    assert settings.access_token_ttl_seconds == 900
    assert settings.refresh_token_ttl_seconds == 8 * 3600
    assert settings.login_max_failures == 5
    assert (settings.lockout_base_seconds, settings.lockout_max_seconds) == (30, 3600)
    assert settings.cors_origins == []
    assert settings.sqlite_synchronous == "FULL"
    assert settings.totp_issuer == "Hvelv"
    assert settings.log_level == "INFO"
    assert settings.trust_proxy_headers is False
    assert settings.secure_cookies is False


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.port = 9000  # type: ignore[misc]


def test_every_setting_is_documented() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description, name


@pytest.mark.parametrize(
    ("env", "value", "attribute", "expected"),
    [
        ("HVELV_PORT", "9001", "port", 9001),
        ("HVELV_HOST", "10.1.2.3", "host", "10.1.2.3"),
        ("HVELV_HOME", "/srv/hvelv", "home", Path("/srv/hvelv")),
        ("HVELV_ACCESS_TOKEN_TTL_SECONDS", "3600", "access_token_ttl_seconds", 3600),
        ("HVELV_TRUST_PROXY_HEADERS", "true", "trust_proxy_headers", True),
        ("HVELV_LOG_LEVEL", "DEBUG", "log_level", "DEBUG"),
        ("HVELV_SQLITE_SYNCHRONOUS", "NORMAL", "sqlite_synchronous", "NORMAL"),
        (
            "HVELV_CORS_ORIGINS",
            '["https://a.example", "*"]',
            "cors_origins",
            ["https://a.example", "*"],
        ),
        (
            "HVELV_DATABASE_URL",
            "postgresql+psycopg://u@db/hvelv",
            "database_url",
            "postgresql+psycopg://u@db/hvelv",
        ),
        ("hvelv_port", "9002", "port", 9002),
    ],
)
def test_environment_overrides(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, attribute: str, expected: Any
) -> None:
    monkeypatch.setenv(env, value)
    assert getattr(load_settings(), attribute) == expected


def test_database_url_from_env_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HVELV_DATABASE_URL", "sqlite:////tmp/x.db")
    assert load_settings().resolved_database_url == "sqlite:////tmp/x.db"


def test_public_url_overrides_base_url() -> None:
    assert load_settings(public_url="https://hvelv.example").base_url == "https://hvelv.example"


def test_toml_file_named_by_hvelv_config_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = toml_file(
        tmp_path,
        'port = 9100\ncors_origins = ["https://portal.example"]\nlog_level = "WARNING"\n',
        "custom.toml",
    )
    monkeypatch.setenv("HVELV_CONFIG_FILE", str(path))
    settings = load_settings()
    assert settings.port == 9100
    assert settings.cors_origins == ["https://portal.example"]
    assert settings.log_level == "WARNING"


def test_toml_file_in_hvelv_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    toml_file(home, "port = 9200\naudit_checkpoint_interval = 50\n")
    monkeypatch.setenv("HVELV_HOME", str(home))
    settings = load_settings()
    assert settings.port == 9200
    assert settings.audit_checkpoint_interval == 50
    assert settings.home == home


def test_hvelv_config_file_wins_over_the_home_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    toml_file(home, "port = 9200\n")
    monkeypatch.setenv("HVELV_HOME", str(home))
    monkeypatch.setenv("HVELV_CONFIG_FILE", str(toml_file(tmp_path, "port = 9300\n", "x.toml")))
    assert load_settings().port == 9300


def test_precedence_arguments_then_environment_then_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = toml_file(tmp_path, "port = 9100\nhost = '10.0.0.1'\ntotp_issuer = 'File'\n")
    monkeypatch.setenv("HVELV_CONFIG_FILE", str(path))
    monkeypatch.setenv("HVELV_PORT", "9101")
    monkeypatch.setenv("HVELV_HOST", "10.0.0.2")
    settings = load_settings(port=9102)
    assert settings.port == 9102
    assert settings.host == "10.0.0.2"
    assert settings.totp_issuer == "File"


def test_missing_config_file_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HVELV_CONFIG_FILE", str(tmp_path / "nowhere.toml"))
    with pytest.raises(ConfigError, match=r"HVELV_CONFIG_FILE: no such file: .*nowhere\.toml"):
        load_settings()


def test_a_directory_is_not_a_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HVELV_CONFIG_FILE", str(tmp_path))
    with pytest.raises(ConfigError, match="HVELV_CONFIG_FILE"):
        load_settings()


def test_home_without_a_toml_file_is_fine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HVELV_HOME", str(tmp_path))
    assert load_settings().port == 8000


@pytest.mark.parametrize(
    ("env", "value", "name"),
    [
        ("HVELV_PORT", "0", "HVELV_PORT"),
        ("HVELV_PORT", "65536", "HVELV_PORT"),
        ("HVELV_PORT", "eighty", "HVELV_PORT"),
        ("HVELV_ACCESS_TOKEN_TTL_SECONDS", "7200", "HVELV_ACCESS_TOKEN_TTL_SECONDS"),
        ("HVELV_ACCESS_TOKEN_TTL_SECONDS", "10", "HVELV_ACCESS_TOKEN_TTL_SECONDS"),
        ("HVELV_DATABASE_URL", "mysql://u:p@h/db", "HVELV_DATABASE_URL"),
        ("HVELV_DATABASE_URL", "/var/lib/hvelv.db", "HVELV_DATABASE_URL"),
        ("HVELV_CORS_ORIGINS", '["ftp://files.example"]', "HVELV_CORS_ORIGINS"),
        ("HVELV_CORS_ORIGINS", '["portal.example"]', "HVELV_CORS_ORIGINS"),
        ("HVELV_LOG_LEVEL", "LOUD", "HVELV_LOG_LEVEL"),
        ("HVELV_SQLITE_SYNCHRONOUS", "OFF", "HVELV_SQLITE_SYNCHRONOUS"),
        ("HVELV_TOTP_ISSUER", "", "HVELV_TOTP_ISSUER"),
        ("HVELV_MAX_JSON_BODY_BYTES", "10", "HVELV_MAX_JSON_BODY_BYTES"),
        ("HVELV_API_KEY_MAX_DAYS", "0", "HVELV_API_KEY_MAX_DAYS"),
        ("HVELV_DB_POOL_SIZE", "1000", "HVELV_DB_POOL_SIZE"),
    ],
)
def test_invalid_environment_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, name: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith("invalid configuration: ")
    assert name in message


def test_invalid_argument_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="HVELV_PORT"):
        load_settings(port=0)


def test_every_invalid_setting_is_named_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HVELV_PORT", "0")
    monkeypatch.setenv("HVELV_ACCESS_TOKEN_TTL_SECONDS", "7200")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "HVELV_PORT" in str(caught.value)
    assert "HVELV_ACCESS_TOKEN_TTL_SECONDS" in str(caught.value)


def test_lockout_max_below_base_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HVELV_LOCKOUT_BASE_SECONDS", "600")
    monkeypatch.setenv("HVELV_LOCKOUT_MAX_SECONDS", "60")
    with pytest.raises(ConfigError, match="lockout_max_seconds must be >= lockout_base_seconds"):
        load_settings()


def test_lockout_max_equal_to_base_is_fine() -> None:
    assert load_settings(lockout_base_seconds=60, lockout_max_seconds=60).lockout_max_seconds == 60


def test_lockout_error_names_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(lockout_base_seconds=600, lockout_max_seconds=60)
    assert "HVELV_LOCKOUT_MAX_SECONDS" in str(caught.value)
    assert "HVELV_SETTINGS" not in str(caught.value)


def test_unknown_key_in_toml_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = toml_file(tmp_path, "port = 9000\nprot = 9001\n")
    monkeypatch.setenv("HVELV_CONFIG_FILE", str(path))
    with pytest.raises(ConfigError, match=r"HVELV_PROT \(prot\): Extra inputs are not permitted"):
        load_settings()


def test_invalid_value_in_toml_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = toml_file(tmp_path, 'access_token_ttl_seconds = 7200\ncors_origins = ["x.example"]\n')
    monkeypatch.setenv("HVELV_CONFIG_FILE", str(path))
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "HVELV_ACCESS_TOKEN_TTL_SECONDS" in str(caught.value)
    assert "HVELV_CORS_ORIGINS" in str(caught.value)


def test_unknown_environment_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HVELV_NO_SUCH_SETTING", "1")
    assert load_settings().port == 8000


def test_non_json_list_in_environment_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HVELV_CORS_ORIGINS", "https://a.example")
    with pytest.raises(ConfigError, match="HVELV_CORS_ORIGINS"):
        load_settings()


def test_toml_syntax_error_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HVELV_CONFIG_FILE", str(toml_file(tmp_path, "port = \n")))
    with pytest.raises(ConfigError, match="HVELV_CONFIG_FILE"):
        load_settings()


# ---------------------------------------------------------------------------------------
# redaction


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        (
            "postgresql+psycopg://hvelv:s3cret@db.example/hvelv",
            "postgresql+psycopg://hvelv:***@db.example/hvelv",
        ),
        ("postgresql://u:p@ss:w@rd@db:5432/x", "postgresql://u:***@db:5432/x"),
        ("postgresql://:only-password@db/x", "postgresql://:***@db/x"),
        (
            "postgresql+psycopg://hvelv@db.example/hvelv",
            "postgresql+psycopg://hvelv@db.example/hvelv",
        ),
        ("sqlite:////srv/hvelv/hvelv.db", "sqlite:////srv/hvelv/hvelv.db"),
        ("not a url", "not a url"),
    ],
)
def test_redact_url(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


def test_redact_url_hides_a_password_query_parameter() -> None:
    assert "hunter2" not in redact_url("postgresql+psycopg://u@db/hvelv?password=hunter2")


def test_redacted_hides_the_database_password() -> None:
    settings = load_settings(database_url="postgresql+psycopg://hvelv:s3cret@db.example/hvelv")
    data = settings.redacted()
    assert data["database_url"] == "postgresql+psycopg://hvelv:***@db.example/hvelv"
    assert "s3cret" not in repr(data)
    # the settings themselves keep the real URL
    assert settings.resolved_database_url.endswith("hvelv:s3cret@db.example/hvelv")


def test_redacted_lists_every_setting_as_json_values(tmp_path: Path) -> None:
    data = load_settings(home=tmp_path).redacted()
    assert set(data) == set(Settings.model_fields)
    assert data["home"] == str(tmp_path)
    assert data["database_url"] == f"sqlite:///{tmp_path / 'hvelv.db'}"
    assert data["port"] == 8000


def test_query_limits_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HVELV_QUERY_TIMEOUT_SECONDS", "2.5")
    monkeypatch.setenv("HVELV_QUERY_MAX_ROWS", "5000")
    monkeypatch.setenv("HVELV_QUERY_PAGE_MAX_ROWS", "500")
    monkeypatch.setenv("HVELV_QUERY_MEMORY_MB", "2048")
    settings = load_settings()
    assert settings.query_timeout_seconds == 2.5
    assert (settings.query_max_rows, settings.query_page_max_rows) == (5000, 500)
    assert settings.query_memory_mb == 2048
    defaults = load_settings(query_timeout_seconds=30)
    assert (defaults.query_max_bytes, defaults.query_threads, defaults.dataset_cache_mb) == (
        64 * 1024 * 1024,
        2,
        4096,
    )


@pytest.mark.parametrize(
    ("env", "value", "named"),
    [
        ("HVELV_QUERY_TIMEOUT_SECONDS", "0", "HVELV_QUERY_TIMEOUT_SECONDS"),
        ("HVELV_QUERY_TIMEOUT_SECONDS", "-1", "HVELV_QUERY_TIMEOUT_SECONDS"),
        ("HVELV_QUERY_TIMEOUT_SECONDS", "nan", "HVELV_QUERY_TIMEOUT_SECONDS"),
        ("HVELV_QUERY_TIMEOUT_SECONDS", "soon", "HVELV_QUERY_TIMEOUT_SECONDS"),
        ("HVELV_QUERY_MAX_ROWS", "0", "HVELV_QUERY_MAX_ROWS"),
        ("HVELV_QUERY_MAX_BYTES", "10", "HVELV_QUERY_MAX_BYTES"),
        ("HVELV_QUERY_MEMORY_MB", "1", "HVELV_QUERY_MEMORY_MB"),
        ("HVELV_QUERY_THREADS", "0", "HVELV_QUERY_THREADS"),
        ("HVELV_QUERY_MAX_USES", "0", "HVELV_QUERY_MAX_USES"),
        ("HVELV_DATASET_CACHE_MB", "-5", "HVELV_DATASET_CACHE_MB"),
        ("HVELV_QUERY_PAGE_MAX_ROWS", "200000", "HVELV_QUERY_PAGE_MAX_ROWS"),  # > max rows
    ],
)
def test_nonsense_query_limits_stop_start_up(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, named: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError, match=named):
        load_settings()

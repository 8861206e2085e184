import os
import stat
from pathlib import Path
from typing import Any

import pytest
from aixiate_core.settings import (
    DEFAULT_DATABASE_URL,
    DEV_SECRET_FILE,
    MIN_SECRET_KEY_LENGTH,
    Settings,
    UnsafeSettingsError,
)
from pydantic import SecretStr, ValidationError

GOOD_KEY = "k" * MIN_SECRET_KEY_LENGTH
POSTGRES_URL = "postgresql+asyncpg://aixiate@db.internal/aixiate"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The developer's own AIXIATE_* variables and .env must not leak into these tests;
    # the test-backend variables (AIXIATE_TEST_*) are no settings, so they may stay.
    for name in list(os.environ):
        if name.startswith("AIXIATE_") and not name.startswith("AIXIATE_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def production(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "env": "production",
        "secret_key": GOOD_KEY,
        "database_url": POSTGRES_URL,
        **overrides,
    }
    return Settings(_env_file=None, **values)


class TestDefaults:
    def test_embedded_development_defaults(self) -> None:
        settings = Settings(_env_file=None)

        assert settings.env == "development"
        assert settings.debug is False
        assert settings.database_url == DEFAULT_DATABASE_URL
        assert settings.is_sqlite
        assert settings.redis_url is None
        assert settings.secret_key is None
        assert settings.trusted_proxies == []
        assert settings.max_body_bytes == 1024 * 1024
        assert settings.json_logs is False

    def test_production_logs_json_by_default(self) -> None:
        assert production().json_logs is True

    def test_explicit_log_format_wins(self) -> None:
        assert production(log_format="console").json_logs is False
        assert Settings(_env_file=None, log_format="json").json_logs is True


class TestEnvironment:
    def test_reads_prefixed_variables(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AIXIATE_ENV", "production")
        monkeypatch.setenv("AIXIATE_DEBUG", "true")
        monkeypatch.setenv("AIXIATE_DATABASE_URL", POSTGRES_URL)
        monkeypatch.setenv("AIXIATE_REDIS_URL", "redis://cache.internal:6379/1")
        monkeypatch.setenv("AIXIATE_SECRET_KEY", GOOD_KEY)
        monkeypatch.setenv("AIXIATE_MAX_BODY_BYTES", "4096")

        settings = Settings(_env_file=None)

        assert settings.env == "production"
        assert settings.debug is True
        assert settings.database_url == POSTGRES_URL
        assert settings.redis_url == "redis://cache.internal:6379/1"
        assert settings.secret_key == SecretStr(GOOD_KEY)
        assert settings.max_body_bytes == 4096

    def test_blank_urls_mean_unset(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AIXIATE_DATABASE_URL", " ")
        monkeypatch.setenv("AIXIATE_REDIS_URL", "")

        settings = Settings(_env_file=None)

        assert settings.database_url == DEFAULT_DATABASE_URL
        assert settings.redis_url is None

    def test_reads_dotenv_file(self, tmp_path: Path) -> None:
        env_file = tmp_path / "custom.env"
        env_file.write_text("AIXIATE_PUBLIC_URL=https://id.example.com/\n", encoding="utf-8")

        settings = Settings(_env_file=env_file)

        assert settings.public_url == "https://id.example.com"

    def test_rejects_non_http_public_url(self) -> None:
        with pytest.raises(ValidationError, match="public_url"):
            Settings(_env_file=None, public_url="ftp://id.example.com")


class TestProductionSafety:
    def test_safe_production_passes(self) -> None:
        production().check_safe()

    @pytest.mark.parametrize(
        ("overrides", "variable"),
        [
            pytest.param({"secret_key": None}, "AIXIATE_SECRET_KEY", id="no-secret-key"),
            pytest.param({"secret_key": "short"}, "AIXIATE_SECRET_KEY", id="short-secret-key"),
            pytest.param({"debug": True}, "AIXIATE_DEBUG", id="debug-on"),
            pytest.param(
                {"database_url": "sqlite+aiosqlite:///./prod.db"},
                "AIXIATE_DATABASE_URL",
                id="sqlite",
            ),
        ],
    )
    def test_refuses_unsafe_setting(self, overrides: dict[str, Any], variable: str) -> None:
        settings = production(**overrides)

        with pytest.raises(UnsafeSettingsError) as caught:
            settings.check_safe()

        message = str(caught.value)
        assert variable in message
        assert "\n" not in message

    def test_secret_key_one_short_of_minimum_is_refused(self) -> None:
        settings = production(secret_key="k" * (MIN_SECRET_KEY_LENGTH - 1))

        with pytest.raises(UnsafeSettingsError, match="AIXIATE_SECRET_KEY"):
            settings.check_safe()

    def test_unsafe_settings_are_allowed_outside_production(self) -> None:
        Settings(_env_file=None, env="development", debug=True).check_safe()

    def test_production_never_makes_up_a_secret(self) -> None:
        settings = production(secret_key=None)

        with pytest.raises(UnsafeSettingsError, match="AIXIATE_SECRET_KEY"):
            settings.secret()


class TestTrustedProxies:
    def test_parses_comma_separated_env_value(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AIXIATE_TRUSTED_PROXIES", "10.0.0.1, 10.0.1.0/24 ,,")

        settings = Settings(_env_file=None)

        assert settings.trusted_proxies == ["10.0.0.1", "10.0.1.0/24"]

    def test_accepts_a_list(self) -> None:
        settings = Settings(_env_file=None, trusted_proxies=["192.0.2.0/24", "2001:db8::/32"])

        assert settings.trusted_proxies == ["192.0.2.0/24", "2001:db8::/32"]

    @pytest.mark.parametrize("value", ["garbage", "10.0.0.1, not-an-ip", "10.0.0.0/33"])
    def test_rejects_garbage(self, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
        monkeypatch.setenv("AIXIATE_TRUSTED_PROXIES", value)

        with pytest.raises(ValidationError, match="trusted_proxies"):
            Settings(_env_file=None)


class TestSecret:
    def test_configured_key_is_used(self) -> None:
        assert Settings(_env_file=None, secret_key=GOOD_KEY).secret() == GOOD_KEY

    def test_test_env_generates_ephemeral_secret(self) -> None:
        first = Settings(_env_file=None, env="test")
        second = Settings(_env_file=None, env="test")

        secret = first.secret()

        assert len(secret) >= MIN_SECRET_KEY_LENGTH
        assert first.secret() == secret  # stable for the life of the settings
        assert second.secret() != secret  # but never shared between runs
        assert not DEV_SECRET_FILE.exists()  # and never written down

    def test_development_secret_survives_restarts(self) -> None:
        secret = Settings(_env_file=None, env="development").secret()

        assert len(secret) >= MIN_SECRET_KEY_LENGTH
        assert Settings(_env_file=None, env="development").secret() == secret
        assert stat.S_IMODE(DEV_SECRET_FILE.stat().st_mode) == 0o600

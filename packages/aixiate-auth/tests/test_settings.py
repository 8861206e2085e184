import pytest
from aixiate_auth.settings import AuthSettings, get_auth_settings


class TestAuthSettings:
    def test_defaults(self) -> None:
        settings = AuthSettings(_env_file=None)

        assert settings.require_email_verification is True
        assert settings.password_reset_ttl_seconds == 3600

    def test_read_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AIXIATE_REQUIRE_EMAIL_VERIFICATION", "false")

        settings = AuthSettings(_env_file=None)

        assert settings.require_email_verification is False

    def test_getter_is_cached(self) -> None:
        assert get_auth_settings() is get_auth_settings()

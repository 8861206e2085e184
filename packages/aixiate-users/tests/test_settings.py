import pytest
from aixiate_users.settings import UsersSettings, get_users_settings
from pydantic import ValidationError


class TestUsersSettings:
    def test_defaults(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("AIXIATE_PASSWORD_MIN_LENGTH", raising=False)
        settings = UsersSettings(_env_file=None)

        assert settings.password_min_length == 12
        assert settings.password_max_length == 128
        # OWASP's argon2id minimum: m=19 MiB, t=2, p=1.
        assert settings.argon2_memory_kib == 19456
        assert settings.argon2_time_cost == 2
        assert settings.argon2_parallelism == 1
        assert settings.password_hash_workers >= 1
        assert settings.email_verification_ttl_seconds == 86400

    def test_read_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AIXIATE_PASSWORD_MIN_LENGTH", "16")
        monkeypatch.setenv("AIXIATE_ARGON2_MEMORY_KIB", "65536")

        settings = UsersSettings(_env_file=None)

        assert settings.password_min_length == 16
        assert settings.argon2_memory_kib == 65536

    @pytest.mark.parametrize("value", [0, 7])
    def test_minimum_length_never_below_eight(self, value: int) -> None:
        with pytest.raises(ValidationError, match="password_min_length"):
            UsersSettings(_env_file=None, password_min_length=value)

    def test_minimum_above_maximum_is_refused(self) -> None:
        with pytest.raises(ValidationError, match="must not exceed"):
            UsersSettings(_env_file=None, password_min_length=40, password_max_length=32)

    def test_one_bound_for_the_verification_ttl(self) -> None:
        # Parsed by this class alone: auth reads it from here, so both agree on the cap.
        with pytest.raises(ValidationError, match="email_verification_ttl_seconds"):
            UsersSettings(_env_file=None, email_verification_ttl_seconds=31 * 86400)

    def test_getter_is_cached(self) -> None:
        assert get_users_settings() is get_users_settings()

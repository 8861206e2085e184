import logging

import pytest
import structlog
from aixiate_core.logging import configure_logging
from aixiate_core.scrub import REDACTED, scrub, scrub_log_event, scrub_text
from aixiate_core.settings import Settings

JWT = "eyJhbGciOiJFUzI1NiIsImtpZCI6IjEifQ.eyJzdWIiOiIxMjMifQ.MEUCIQDx"
ARGON2 = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"
BCRYPT = "$2b$12$" + "a" * 53


class TestScrub:
    def test_secret_keys_are_redacted_at_any_depth(self) -> None:
        value = {
            "password": "p",
            "new_password": "p",
            "refresh_token": "t",
            "client_secret": "s",
            "password_hash": "h",
            "Authorization": "Bearer x",
            "totp": "123456",
            "recovery_code": "abcd",
            "cookie": "c",
            "api_key": "k",
            "nested": [{"token": "t"}],
            "email": "a@example.com",
        }
        scrubbed = scrub(value)
        assert scrubbed.pop("email") == "a@example.com"
        assert scrubbed.pop("nested") == [{"token": REDACTED}]
        assert set(scrubbed.values()) == {REDACTED}

    def test_secret_shaped_values_are_redacted_under_any_key(self) -> None:
        for secret in (JWT, ARGON2, BCRYPT, f"Bearer {JWT}"):
            assert secret not in scrub_text(f"before {secret} after")
            assert scrub({"note": secret}) == {"note": REDACTED}

    def test_numbers_and_flags_stay(self) -> None:
        assert scrub({"rehashed": True, "status_code": 401, "token_count": 2}) == {
            "rehashed": True,
            "status_code": 401,
            "token_count": 2,
        }

    def test_processor_leaves_the_event_name(self) -> None:
        line = scrub_log_event(None, "info", {"event": "auth.login", "password": "x"})
        assert line == {"event": "auth.login", "password": REDACTED}


class TestLogs:
    def test_configured_logging_scrubs_every_line(
        self, settings: Settings, capsys: pytest.CaptureFixture[str]
    ) -> None:
        configure_logging(settings.model_copy(update={"log_format": "json"}))
        structlog.get_logger().info("test.scrub", password="hunter2", header=f"Bearer {JWT}")
        logging.getLogger("library").warning("token %s leaked", JWT)
        output = capsys.readouterr().err
        assert "hunter2" not in output
        assert JWT not in output
        assert output.count(REDACTED) == 3

import json

import pytest
import structlog
from aixiate_core.logging import configure_logging
from aixiate_core.settings import Settings


def _fail_with_a_secret_local(password: str) -> None:
    raise ValueError("the handler blew up")


class TestJsonLogs:
    def test_tracebacks_carry_no_local_variables(self, capsys: pytest.CaptureFixture[str]) -> None:
        configure_logging(Settings(env="test", log_format="json", _env_file=None))
        try:
            _fail_with_a_secret_local("hunter2-correct-horse")
        except ValueError:
            structlog.get_logger().exception("request.failed")

        line = capsys.readouterr().err.strip().splitlines()[-1]
        entry = json.loads(line)
        assert entry["event"] == "request.failed"
        assert entry["exception"][0]["exc_type"] == "ValueError"
        assert "hunter2" not in line
        assert "locals" not in line

    def test_one_json_object_per_line(self, capsys: pytest.CaptureFixture[str]) -> None:
        configure_logging(Settings(env="test", log_format="json", _env_file=None))
        structlog.get_logger().info("thing.happened", count=3)

        entry = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
        assert (entry["event"], entry["count"], entry["level"]) == ("thing.happened", 3, "info")

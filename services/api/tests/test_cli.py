"""The ``aixiate`` command, run as an operator would: a separate process."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

AIXIATE = [sys.executable, "-m", "aixiate_api"]


def _env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIXIATE_")}
    env.update({"AIXIATE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"})
    env.update(overrides)
    return env


def _run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own command line
        [*AIXIATE, *args],
        cwd=tmp_path,
        env=_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


class TestSettingsErrors:
    def test_production_without_secret_key_fails_in_one_line(self, tmp_path: Path) -> None:
        result = _run(tmp_path, "db", "upgrade", AIXIATE_ENV="production")
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            "aixiate: AIXIATE_SECRET_KEY must be set in production"
        ]

    def test_production_on_sqlite_names_the_database_variable(self, tmp_path: Path) -> None:
        result = _run(
            tmp_path, "db", "upgrade", AIXIATE_ENV="production", AIXIATE_SECRET_KEY="k" * 40
        )
        assert result.returncode == 2
        assert "AIXIATE_DATABASE_URL" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1

    def test_invalid_value_names_the_variable(self, tmp_path: Path) -> None:
        result = _run(tmp_path, "db", "upgrade", AIXIATE_ENV="staging")
        assert result.returncode == 2
        assert result.stderr.startswith("aixiate: invalid settings: AIXIATE_ENV:")


class TestDatabaseCommands:
    def test_check_on_a_database_behind_head_says_what_to_do(self, tmp_path: Path) -> None:
        result = _run(tmp_path, "db", "check")

        assert result.returncode == 2
        assert result.stderr.strip().splitlines()[-1] == (
            "aixiate: cannot check the schema: Target database is not up to date. "
            "Run 'aixiate db upgrade' first."
        )
        assert "Traceback" not in result.stderr

    def test_upgrade_then_check_on_an_empty_database(self, tmp_path: Path) -> None:
        upgraded = _run(tmp_path, "db", "upgrade")
        checked = _run(tmp_path, "db", "check")
        assert upgraded.returncode == 0, upgraded.stderr
        assert (tmp_path / "cli.db").exists()
        assert checked.returncode == 0, checked.stderr
        assert "schema matches the models" in checked.stdout


class TestServe:
    def test_serves_ready_from_an_empty_directory(
        self, tmp_path: Path, free_port: Callable[[], int]
    ) -> None:
        port = free_port()
        env = _env(tmp_path)
        del env["AIXIATE_DATABASE_URL"]  # the embedded default: ./aixiate.db in the cwd
        process = subprocess.Popen(  # noqa: S603 - our own command line
            [*AIXIATE, "serve", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            status = _poll_ready(f"http://127.0.0.1:{port}/health/ready", process)
        finally:
            process.terminate()
            _, stderr = process.communicate(timeout=30)
        assert status == 200, stderr
        assert (tmp_path / "aixiate.db").exists()
        # uvicorn shuts down cleanly, then re-raises the signal as its exit status.
        assert process.returncode in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in stderr


def _poll_ready(url: str, process: subprocess.Popen[str]) -> int | None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            return httpx.get(url, timeout=2).status_code
        except httpx.TransportError:
            time.sleep(0.2)
    return None

from __future__ import annotations

from pathlib import Path

import pytest

from model.errors import ConfigError
from model.settings import load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "jobservice.toml"
    path.write_text(text)
    return path


def test_a_toml_file_sets_settings_below_the_environment_and_the_callers_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(
        tmp_path,
        'database_url = "sqlite:///from-file.db"\n'
        "max_job_workers = 5\nlisten_port = 9000\nlog_retention_days = 3.5\n"
        'ui_secret = "file-secret"\n',
    )
    settings = load_settings(config_file=path)
    assert settings.database_url == "sqlite:///from-file.db"
    assert settings.max_job_workers == 5 and settings.listen_port == 9000
    assert settings.log_retention_days == 3.5
    assert settings.ui_secret is not None and settings.ui_secret.get_secret_value() == "file-secret"
    monkeypatch.setenv("MAX_JOB_WORKERS", "7")
    assert load_settings(config_file=path).max_job_workers == 7
    assert load_settings(config_file=path, max_job_workers=9).max_job_workers == 9


@pytest.mark.parametrize(
    ("text", "setting"),
    [
        ("max_job_workers = 0\n", "max_job_workers"),
        ("no_such_knob = 1\n", "no_such_knob"),
        ("listen_port = 70000\n", "listen_port"),
        ('log_level = "LOUD"\n', "log_level"),
        ("max_body_bytes = 10\n", "max_body_bytes"),
        ("log_retention_days = -1\n", "log_retention_days"),
        ("max_job_workers = = 3\n", "config"),
    ],
)
def test_a_bad_file_fails_naming_the_setting(tmp_path: Path, text: str, setting: str) -> None:
    with pytest.raises(ConfigError, match=f"'{setting}'"):
        load_settings(config_file=write(tmp_path, text))


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(config_file=tmp_path / "absent.toml")


def test_the_service_settings_have_an_operators_defaults() -> None:
    settings = load_settings()
    assert (settings.listen_host, settings.listen_port) == ("127.0.0.1", 8080)
    assert settings.log_retention_days == 14 and settings.max_body_bytes == 1_048_576

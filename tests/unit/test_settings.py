from __future__ import annotations

import pytest

from model.errors import ConfigError
from model.settings import load_settings


def test_defaults_are_the_originals() -> None:
    settings = load_settings()
    assert settings.max_job_workers == 3
    assert settings.scan_workers == 3
    assert settings.retry_delay == 300
    assert settings.database_url.startswith("sqlite:///")


@pytest.mark.parametrize(
    ("values", "setting"),
    [
        ({"max_job_workers": 0}, "max_job_workers"),
        ({"scan_workers": "many"}, "scan_workers"),
        ({"database_url": "mysql://x"}, "database_url"),
        ({"registry_url": "ftp://x"}, "registry_url"),
        ({"retry_delay": -1}, "retry_delay"),
        ({"unknown_knob": 1}, "unknown_knob"),
    ],
)
def test_invalid_settings_fail_naming_the_setting(values: dict[str, object], setting: str) -> None:
    with pytest.raises(ConfigError, match=setting):
        load_settings(**values)


def test_the_originals_environment_names_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_JOB_WORKERS", "7")
    monkeypatch.setenv("LOG_DIR", "/var/log/jobs")
    monkeypatch.setenv("UI_SECRET", "s3cret")
    monkeypatch.setenv("JOBSERVICE_SCAN_WORKERS", "2")
    settings = load_settings()
    assert settings.max_job_workers == 7
    assert str(settings.log_dir) == "/var/log/jobs"
    assert settings.scan_workers == 2
    assert settings.ui_secret is not None and settings.ui_secret.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)

"""Settings for CLI commands: environment first, flags on top."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchyard.cli.configuration import ConfigurationError, load_settings, parse_bucket


def test_bucket_flag_is_split_at_the_first_equals_sign() -> None:
    assert parse_bucket("demo=s3://real/x=y") == ("demo", "s3://real/x=y")


@pytest.mark.parametrize("text", ["demo", "=/srv", "demo=", "a/b=/srv"])
def test_malformed_bucket_flags_are_refused(text: str) -> None:
    with pytest.raises(ConfigurationError, match="bucket"):
        parse_bucket(text)


def test_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BATCHYARD_DATA_DIR", "/from/env")
    monkeypatch.setenv("BATCHYARD_SLOTS", "7")
    settings = load_settings(tmp_path, 3, None)
    assert settings.data_dir == tmp_path
    assert settings.slots == 3


def test_environment_applies_without_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHYARD_DATA_DIR", "/from/env")
    monkeypatch.setenv("BATCHYARD_SLOTS", "7")
    settings = load_settings()
    assert settings.data_dir == Path("/from/env")
    assert settings.slots == 7


def test_bucket_flags_add_to_environment_buckets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHYARD_BUCKETS", '{"logs": "/srv/logs", "demo": "/srv/old"}')
    settings = load_settings(buckets=["demo=/srv/demo"])
    assert settings.buckets == {"logs": "/srv/logs", "demo": "/srv/demo"}


def test_invalid_environment_value_is_a_configuration_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHYARD_SLOTS", "many")
    with pytest.raises(ConfigurationError, match="slots"):
        load_settings()

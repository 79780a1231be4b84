"""Settings for CLI commands: environment first, flags on top."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from batchyard.cli.configuration import (
    ConfigurationError,
    config_file,
    load_settings,
    parse_bucket,
)
from batchyard.settings import Settings


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
    with pytest.raises(ConfigurationError, match=r"BATCHYARD_SLOTS='many': .*valid integer"):
        load_settings()


@pytest.mark.parametrize(("variable", "value", "expected"), [
    ("BATCHYARD_BUCKETS", "demo=/srv/demo", "not valid JSON .*expected for example {\"demo\""),
    ("BATCHYARD_SLOTS", "abc", "valid integer.*How many instances"),
    ("BATCHYARD_SANDBOX__MEMORY_BYTES", "x", "valid integer.*Memory per attempt"),
    ("BATCHYARD_BUCKET_GRANTS", "{bad", "not valid JSON .*\"owner\": \"alice\""),
    ("BATCHYARD_SANDBOX__NETWORK", "y", "'host' or 'none'"),
])
def test_a_bad_variable_is_named_with_its_value_and_what_is_allowed(
        monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    message = caught.value.message
    assert message.startswith(f"{variable}={value!r}: "), message
    assert re.search(expected, message), message
    assert "\n" not in message


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_a_secret_value_is_never_shown(tmp_path: Path) -> None:
    config = write(tmp_path / "b.toml", "s3_secret_access_key = 123456789\n")
    with pytest.raises(ConfigurationError) as caught:
        load_settings(config=config)
    assert "123456789" not in caught.value.message
    assert f"{config}:1: s3_secret_access_key:" in caught.value.message


def test_the_file_gives_settings_below_environment_and_flags(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = write(tmp_path / "b.toml", 'slots = 3\nregion = "file"\n[sandbox]\n'
                   'memory_bytes = 1024\n[buckets]\ndemo = "/file/demo"\nlogs = "/file/logs"\n')
    monkeypatch.setenv("BATCHYARD_REGION", "env")
    monkeypatch.setenv("BATCHYARD_BUCKETS", '{"logs": "/env/logs"}')
    settings = load_settings(slots=5, buckets=["extra=/flag"], config=config)
    assert type(settings) is Settings
    assert (settings.slots, settings.region, settings.sandbox.memory_bytes) == (5, "env", 1024)
    assert settings.buckets == {"demo": "/file/demo", "logs": "/env/logs", "extra": "/flag"}
    assert load_settings(config=config).slots == 3


def test_the_file_is_found_by_variable_then_in_the_current_folder(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("BATCHYARD_CONFIG", raising=False)
    assert config_file() is None
    user = tmp_path / "home" / ".config" / "batchyard" / "batchyard.toml"
    user.parent.mkdir(parents=True)
    write(user, "slots = 2\n")
    assert load_settings().slots == 2
    write(tmp_path / "batchyard.toml", "slots = 6\n")
    assert load_settings().slots == 6
    monkeypatch.setenv("BATCHYARD_CONFIG", str(user))
    assert load_settings().slots == 2
    monkeypatch.setenv("BATCHYARD_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigurationError, match=r"BATCHYARD_CONFIG: .*missing.toml: no such"):
        load_settings()


def test_an_unknown_key_names_the_file_line_and_a_suggestion(tmp_path: Path) -> None:
    config = write(tmp_path / "b.toml", 'slots = 2\n\n[sandbox]\nmemory_byte = 5\n')
    with pytest.raises(ConfigurationError) as caught:
        load_settings(config=config)
    assert caught.value.message == (f"{config}:4: sandbox.memory_byte: unknown setting "
                                    "'memory_byte'; did you mean 'memory_bytes'?")


def test_a_wrong_value_in_the_file_names_file_line_and_key(tmp_path: Path) -> None:
    config = write(tmp_path / "b.toml", '# settings\nslots = "many"\n')
    with pytest.raises(ConfigurationError, match=re.escape(f"{config}:2: slots: input should be")):
        load_settings(config=config)


def test_a_malformed_file_names_the_line(tmp_path: Path) -> None:
    config = write(tmp_path / "b.toml", 'slots = 2\n[buckets\n')
    with pytest.raises(ConfigurationError, match=re.escape(f"{config}: not valid TOML") +
                       ".*line 2"):
        load_settings(config=config)

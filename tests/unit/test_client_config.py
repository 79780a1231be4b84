"""Where the client commands find the server and the key: flag, then environment, then file."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from batchyard.cli.client_config import (
    DEFAULT_ENDPOINT,
    ClientConfigurationError,
    Connection,
    endpoint_configured,
    resolve,
)
from batchyard.cli.main import app
from batchyard.cli.remote import query_string


@pytest.fixture()
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "client.toml"
    path.write_text('endpoint = "http://file:1"\nkey_id = "file-id"\nkey_secret = "file-secret"\n')
    monkeypatch.setenv("BATCHYARD_CLIENT_CONFIG", str(path))
    return path


def test_the_file_fills_what_flags_leave_out(config: Path) -> None:
    assert resolve(None, "flag-id", None) == Connection("http://file:1", "flag-id", "file-secret")
    assert resolve("http://flag:2/", "i", "s") == Connection("http://flag:2", "i", "s")


def test_without_a_file_the_endpoint_defaults_and_a_key_is_required(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHYARD_CLIENT_CONFIG", str(tmp_path / "absent.toml"))
    assert resolve(None, "i", "s").endpoint == DEFAULT_ENDPOINT
    with pytest.raises(ClientConfigurationError, match="batchyard keys create"):
        resolve(None, None, None)


@pytest.mark.parametrize(("text", "message"), [
    ("key_id = [", "not valid TOML"), ("key_id = 3", "key_id must be a string")])
def test_a_broken_file_is_named(config: Path, text: str, message: str) -> None:
    config.write_text(text)
    with pytest.raises(ClientConfigurationError, match=message):
        resolve(None, None, None)


def test_the_environment_beats_the_file_and_a_flag_beats_the_environment(
        config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHYARD_ENDPOINT", "http://127.0.0.1:1")
    result = CliRunner().invoke(app, ["jobs"])
    assert result.exit_code == 1 and "cannot reach http://127.0.0.1:1" in result.output
    result = CliRunner().invoke(app, ["jobs", "--endpoint", "ftp://x"])
    assert result.exit_code == 2 and "'ftp://x' is not an http://" in result.output


def test_a_server_is_configured_by_a_flag_or_the_file_else_the_data_dir_is_used(
        config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert endpoint_configured("http://flag:2") and endpoint_configured(None)  # the file's
    monkeypatch.setenv("BATCHYARD_CLIENT_CONFIG", str(tmp_path / "absent.toml"))
    assert not endpoint_configured(None) and not endpoint_configured("")
    monkeypatch.delenv("BATCHYARD_ENDPOINT", raising=False)
    result = CliRunner().invoke(app, ["jobs", "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 0 and "No jobs in data dir" in result.output


def test_query_strings_are_encoded_like_the_sdk() -> None:
    assert query_string({"MaxItemCount": "50", "Marker": "", "State": "Running"}) == \
        "Marker&MaxItemCount=50&State=Running"
    assert query_string({"a b": "c/d"}) == "a%20b=c%2Fd"

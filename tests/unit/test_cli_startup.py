"""What keeps `batchyard run` quick to start and to end (`batchyard.cli.startup`), guarded: the
modules a run never needs stay unimported, garbage collection comes back on after the
start-up, and Typer builds only the invoked command (with the same help)."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

from batchyard.cli import startup
from batchyard.cli.main import app

SRC = str(Path(__file__).resolve().parents[2] / "src")
NEVER_FOR_RUN = ("httpx", "alembic", "fastapi", "uvicorn", "starlette", "anyio", "botocore",
                 "s3fs", "batchyard.api.application", "batchyard.agent.process",
                 "batchyard.cli.local", "cryptography", "sqlalchemy.dialects.postgresql")
"""Modules `batchyard run` of a plain job on a fresh data dir must not import: the remote
client, migrations (a new database is created at the newest revision), the API server, S3,
the agent process of `serve`, the local client commands, the access keys' cipher,
PostgreSQL's dialect."""
NOT_FOR_THE_COMMAND_LINE = ("sqlalchemy", "fsspec", "cryptography", "batchyard.service",
                            "batchyard.orchestrator", "batchyard.adapters.store")
"""Modules importing the command line must not import: `--version`, `--help`, `oss`, `keys`
and the remote client commands never open the state store."""


def python(code: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=environment, cwd=cwd, timeout=60, check=False)


def job_file(folder: Path, command: str = "true") -> Path:
    path = folder / "job.json"
    path.write_text(json.dumps({"Name": "startup", "DAG": {"Tasks": {"t": {
        "InstanceCount": 1, "AutoCluster": {"InstanceType": "ecs.sn1.medium"},
        "Parameters": {"Command": {"CommandLine": command},
                       "StdoutRedirectPath": "oss://test/logs/",
                       "StderrRedirectPath": "oss://test/logs/"}}}}}), encoding="utf-8")
    return path


def test_importing_the_command_line_leaves_the_store_and_the_remote_client_out() -> None:
    unwanted = NOT_FOR_THE_COMMAND_LINE + NEVER_FOR_RUN
    finished = python("import sys, gc\nimport batchyard.cli.main\n"
                      f"print([name for name in {unwanted!r} if name in sys.modules])\n"
                      "print(gc.isenabled())")
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.split("\n")[:2] == ["[]", "True"]


def test_a_run_imports_neither_migrations_nor_the_remote_client_nor_the_server(
        tmp_path: Path) -> None:
    code = ("import sys, gc\nfrom batchyard.cli.main import app\n"
            "try:\n    app(['run', sys.argv[1], '--quiet', '--data-dir', sys.argv[2]])\n"
            "except SystemExit as done:\n    print(done.code)\n"
            f"print([name for name in {NEVER_FOR_RUN!r} if name in sys.modules])\n"
            "print(gc.isenabled())")
    finished = python(code, str(job_file(tmp_path)), str(tmp_path / "data"))
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.split("\n")[1:4] == ["0", "[]", "True"], finished.stdout


def test_collection_is_paused_inside_and_on_again_after_even_on_an_error() -> None:
    assert gc.isenabled()
    with pytest.raises(RuntimeError), startup.collection_paused():
        assert not gc.isenabled()
        raise RuntimeError
    assert gc.isenabled()
    with startup.collection_paused() as pause:
        pause.resume()
        assert gc.isenabled()
        pause.resume()
    assert gc.isenabled()


def test_collection_turned_off_by_the_caller_stays_off() -> None:
    gc.disable()
    try:
        with startup.collection_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_run_turns_collection_on_again_once_the_engine_started(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", str(job_file(tmp_path)), "--quiet",
                                      "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    assert gc.isenabled()


def names(command: typer.Typer) -> set[str]:
    group = get_command(command)
    assert isinstance(group, typer.core.TyperGroup)
    return set(group.commands)


@pytest.mark.parametrize(("words", "kept"), [
    (["run", "job.json", "--quiet"], {"run"}),
    (["oss", "ls", "oss://b/"], {"oss"}),
    (["keys", "create", "alice"], {"keys"}),
    (["jobs"], {"jobs"}),
])
def test_only_the_invoked_command_is_built(words: list[str], kept: set[str]) -> None:
    assert names(startup.only_invoked(app, words)) == kept
    assert kept < names(app)  # the app itself is left whole


@pytest.mark.parametrize("words", [[], ["--version"], ["--help"], ["nosuch"], ["--", "run"]])
def test_anything_else_builds_the_whole_app(words: list[str]) -> None:
    assert startup.only_invoked(app, words) is app


def test_shell_completion_builds_the_whole_app(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_BATCHYARD_COMPLETE", "complete_bash")
    assert startup.only_invoked(app, ["run"]) is app


@pytest.mark.parametrize("words", [["run", "--help"], ["oss", "--help"], ["oss", "cp", "--help"],
                                   ["run"], ["run", "--bogus"], ["start", "--help"]])
def test_an_invoked_command_behaves_as_in_the_whole_app(words: list[str]) -> None:
    whole = CliRunner().invoke(app, words, prog_name="batchyard", env={"COLUMNS": "100"})
    alone = CliRunner().invoke(startup.only_invoked(app, words), words, prog_name="batchyard",
                               env={"COLUMNS": "100"})
    assert (alone.exit_code, alone.output) == (whole.exit_code, whole.output)

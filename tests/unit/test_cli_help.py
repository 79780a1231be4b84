"""`--help` of every command: examples, real metavars, no Python type names; completion."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator

import click
import pytest
import typer
from typer.testing import CliRunner

from batchyard.cli.main import app

TYPE_NAMES = re.compile(
    r"<(?:bool|str|int|float|path|uuid|datetime|file|dict\[[^>]*\]|list\[[^>]*\]"
    r"|tuple\[[^>]*\]|[a-z]+ range)>|\b(?:BOOLEAN|INTEGER|FLOAT|TEXT)\b")


def command_paths(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], click.Command]]:
    """Every command of the tree, as (("oss", "cp"), command), groups included."""
    yield path, command
    for name, child in sorted(getattr(command, "commands", {}).items()):
        yield from command_paths(child, (*path, name))


COMMANDS = [(path, command) for path, command in command_paths(typer.main.get_command(app))
            if path]
LEAVES = [(path, command) for path, command in COMMANDS
          if not getattr(command, "commands", None)]


def help_of(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def usage_line(path: tuple[str, ...]) -> str:
    return next(line.strip() for line in help_of(path).splitlines() if "Usage:" in line)


def test_the_tree_is_walked() -> None:
    names = {" ".join(path) for path, _ in LEAVES}
    assert {"run", "serve", "keys create", "keys list", "keys revoke", "oss cp"} <= names


@pytest.mark.parametrize(("path", "command"), LEAVES, ids=lambda item: " ".join(item)
                         if isinstance(item, tuple) else "")
def test_every_command_has_examples(path: tuple[str, ...], command: click.Command) -> None:
    epilog = command.epilog or ""
    assert "Examples" in epilog, f"`batchyard {' '.join(path)}` has no Examples in its epilog"
    assert "batchyard " + " ".join(path) in epilog, (
        f"the examples of `batchyard {' '.join(path)}` do not run that command")
    assert "job-…" not in epilog and "job-..." not in epilog, "use a real-looking job id"


@pytest.mark.parametrize("path", [(), *(path for path, _ in COMMANDS)],
                         ids=lambda path: " ".join(path) or "batchyard")
def test_help_shows_no_python_type_names(path: tuple[str, ...]) -> None:
    text = help_of(path)
    found = TYPE_NAMES.findall(text)
    assert not found, f"`batchyard {' '.join(path)} --help` shows type names {found}"


def test_valued_options_show_a_metavar_and_flags_none() -> None:
    lines = help_of(("serve",)).splitlines()
    port = next(line for line in lines if "--port" in line)
    assert re.search(r"--port\s+PORT\b", port), port
    flag = next(line for line in lines if "--insecure-no-sandbox" in line)
    assert re.search(r"--insecure-no-sandbox\s+UNSAFE", flag), flag


def test_completion_script_is_printed() -> None:
    environment = {**os.environ, "SHELL": "/bin/bash",
                   "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    result = subprocess.run([sys.executable, "-m", "batchyard.cli", "--show-completion", "bash"],
                            env=environment, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "complete -o default -F _batchyard_completion batchyard" in result.stdout


def test_usage_lines_follow_the_unix_convention() -> None:
    """`JOB_ID` required, `[TASK]` optional, `JOB_ID...` repeated: never typer's `{JOB_ID}`
    or a doubled `[[TASK]]`."""
    usages = {" ".join(path): usage_line(path) for path in (
        ("job",), ("start",), ("oss", "cp"), ("keys", "revoke"))}
    assert usages["job"].endswith("job [OPTIONS] JOB_ID [TASK] [INSTANCE]")
    assert usages["start"].endswith("start [OPTIONS] JOB_ID...")
    assert usages["oss cp"].endswith("cp [OPTIONS] SOURCE TARGET")
    assert usages["keys revoke"].endswith("revoke [OPTIONS] ACCESS_KEY_ID")
    assert not any("{" in usage or "[[" in usage for usage in usages.values())

"""docs/cli.md documents exactly the commands and options of the CLI.

The convention (also at the top of docs/cli.md): every command has one heading that
contains `batchyard COMMAND` in backticks (`## \\`batchyard run\\``, `### \\`batchyard oss
cp\\``); its section runs to the next heading of the same or a higher level. In that
section a table whose first column names options (`| \\`--slots N\\` | …`, `| \\`-q\\`,
\\`--quiet\\` | …`) lists every option of the command, long and short names, except `--help`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
import typer

from batchyard.cli.main import app

CLI_DOC = Path(__file__).parents[2] / "docs" / "cli.md"
HEADING = re.compile(r"^(#+)\s.*?`(batchyard(?: [a-z][a-z-]*)*)`")
OPTION_ROW = re.compile(r"^\|\s*(`-[^|]*)\|")
OPTION_NAME = re.compile(r"`(--?[A-Za-z][\w-]*)")
RULE = "see the convention at the top of docs/cli.md"


@dataclass(frozen=True)
class Section:
    command: str
    line: int
    options: frozenset[str]


def command_tree(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[
        tuple[str, click.Command]]:
    yield " ".join(("batchyard", *path)), command
    for name, child in sorted(getattr(command, "commands", {}).items()):
        yield from command_tree(child, (*path, name))


def is_group(command: click.Command) -> bool:
    return bool(getattr(command, "commands", None))


COMMANDS = dict(command_tree(typer.main.get_command(app)))
DOCUMENTED = [name for name, command in COMMANDS.items()
              if not is_group(command) or name == "batchyard"]


def cli_options(command: click.Command) -> set[str]:
    names = {name for param in command.params if param.param_type_name == "option"
             for name in (*param.opts, *param.secondary_opts)}
    return names - {"--help"}


def sections(text: str) -> list[Section]:
    """Each command heading of the document, with the options its tables list."""
    lines = _outside_code(text.splitlines())
    headings = [(number, len(found.group(1)), found.group(2))
                for number, line in enumerate(lines) if (found := HEADING.match(line))]
    levels = [(number, len(line) - len(line.lstrip("#"))) for number, line in enumerate(lines)
              if line.startswith("#")]
    result = []
    for number, level, command in headings:
        end = next((other for other, depth in levels if other > number and depth <= level),
                   len(lines))
        rows = (OPTION_ROW.match(line) for line in lines[number + 1:end])
        options = {name for row in rows if row for name in OPTION_NAME.findall(row.group(1))}
        result.append(Section(command, number + 1, frozenset(options)))
    return result


def _outside_code(lines: list[str]) -> list[str]:
    """The lines, with those of fenced code blocks blanked (a `# comment` is no heading)."""
    kept, fenced = [], False
    for line in lines:
        if line.lstrip().startswith("```"):
            fenced = not fenced
        kept.append("" if fenced or line.lstrip().startswith("```") else line)
    return kept


SECTIONS = sections(CLI_DOC.read_text(encoding="utf-8"))


def section_of(command: str) -> Section:
    found = [section for section in SECTIONS if section.command == command]
    assert found, (f"docs/cli.md has no section for `{command}`: add a heading containing "
                   f"`{command}` in backticks, with a table of its options ({RULE})")
    assert len(found) == 1, (f"docs/cli.md has {len(found)} headings for `{command}` (lines "
                             f"{', '.join(str(item.line) for item in found)}); keep one")
    return found[0]


def test_the_convention_is_stated_at_the_top_of_the_document() -> None:
    head = CLI_DOC.read_text(encoding="utf-8")[:1500]
    assert head.startswith("<!--") and "batchyard COMMAND" in head


def test_every_heading_names_a_real_command() -> None:
    unknown = [f"{section.command} (line {section.line})" for section in SECTIONS
               if section.command not in COMMANDS]
    assert not unknown, f"docs/cli.md has sections for commands the CLI lacks: {unknown}"


@pytest.mark.parametrize("command", DOCUMENTED)
def test_every_option_of_the_command_is_documented(command: str) -> None:
    section = section_of(command)
    missing = sorted(cli_options(COMMANDS[command]) - section.options)
    assert not missing, (
        f"docs/cli.md, section `{command}` (line {section.line}) does not document "
        f"{', '.join(missing)}: add a row such as | `{missing[0]}` | what it does | to its "
        f"options table ({RULE})")


@pytest.mark.parametrize("command", DOCUMENTED)
def test_every_documented_option_exists(command: str) -> None:
    section = section_of(command)
    extra = sorted(section.options - cli_options(COMMANDS[command]))
    assert not extra, (
        f"docs/cli.md, section `{command}` (line {section.line}) documents {', '.join(extra)}, "
        f"which `{command} --help` does not have: remove the row or fix the name")


def test_the_checks_see_a_missing_option() -> None:
    text = ("<!-- x -->\n## `batchyard oss cp`\n\n| Option | Meaning |\n|---|---|\n"
            "| `-r`, `--recursive` | all |\n| `--data-dir DIR` | where |\n## Next\n"
            "| `--quiet` | not in the section above |\n```\n# `batchyard oss cp`\n```\n")
    (section,) = sections(text)
    assert section.options == {"-r", "--recursive", "--data-dir"}
    assert cli_options(COMMANDS["batchyard oss cp"]) - section.options == {
        "-q", "--quiet", "--bucket"}

"""Reading a job description file, with messages that point at the exact spot of a mistake."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from batchyard.domain.fields import UnknownField, unknown_fields
from batchyard.domain.spec import JobDescription
from batchyard.errors import BatchyardError

_CONTEXT = 60
"""Characters shown on either side of a syntax error."""


class JobFileError(BatchyardError):
    """The job file cannot be read or is not JSON."""

    code = "InvalidJobFile"
    status = 400


def read_job_file(path: Path) -> dict[str, Any]:
    """The JSON object in `path`; JobFileError names the line and column of a syntax error."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise JobFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise JobFileError(f"{path}: is a directory, expected a JSON file") from None
    except UnicodeDecodeError as error:
        raise JobFileError(f"{path}: not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise JobFileError(f"{path}: cannot be read ({error.strerror})") from None
    return parse_job_text(text, str(path))


def parse_job_text(text: str, source: str) -> dict[str, Any]:
    """The JSON object in `text`: JSON as the standard has it (no NaN or Infinity, which
    Python's reader accepts), and never a traceback for a structure nested too deeply."""
    try:
        raw = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as error:
        raise JobFileError(_syntax_message(error, text, source)) from None
    except ValueError as error:  # from _refuse_constant
        raise JobFileError(f"{source}: not valid JSON: {error}") from None
    except RecursionError:
        raise JobFileError(f"{source}: not usable: objects and arrays are nested too deeply "
                           "(a job description needs about 8 levels)") from None
    if not isinstance(raw, dict):
        raise JobFileError(
            f"{source}: a job description is a JSON object ({{\"Name\": …, \"DAG\": …}}), "
            f"got a JSON {type(raw).__name__}")
    return raw


def _syntax_message(error: json.JSONDecodeError, text: str, source: str) -> str:
    lines = text.splitlines() or [""]
    line = lines[min(error.lineno, len(lines)) - 1].replace("\t", " ")
    start = max(0, error.colno - 1 - _CONTEXT)
    excerpt = line[start:error.colno - 1 + _CONTEXT]
    pointer = " " * (error.colno - 1 - start) + "^"
    return (f"{source}:{error.lineno}:{error.colno}: not valid JSON: {error.msg}\n"
            f"    {excerpt}\n    {pointer}")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number; write a number or a string")


def check_fields(raw: dict[str, Any], source: str, strict: bool, console: Console
                 ) -> list[UnknownField]:
    """Warn on `console` (stderr) about each unknown field of the job, likely a typo that
    would be silently ignored; with `strict`, raise JobFileError listing them instead.
    Returns the fields warned about (so that the server's warnings are not repeated)."""
    found = unknown_fields(raw, JobDescription)
    if strict and found:
        noun = "field" if len(found) == 1 else "fields"
        lines = [f"{source}: {len(found)} unknown {noun} (refused by --strict):"]
        lines += [f"  {field.path}: {field.describe(ignored=False)}"
                  for field in found]
        raise JobFileError("\n".join(lines))
    for field in found:
        console.print(Text.assemble(("warning: ", "yellow"), f"{source}: {field}"),
                      soft_wrap=True)
    return found

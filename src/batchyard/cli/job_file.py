"""Reading a job description file, with messages that point at the exact spot of a mistake."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise JobFileError(_syntax_message(error, text, source)) from None
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

"""The error hierarchy. Every error batchyard raises on purpose derives from BatchyardError.

Errors that reach an API client carry a BatchCompute error `code` (reference §9.8) and the
HTTP status that goes with it; the mapping to HTTP happens in one place (the API layer).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


class BatchyardError(Exception):
    """Root of every batchyard error."""

    code = "InternalError"
    status = 500

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a submitted description: where, what was there, what is allowed."""

    code: str
    path: str
    value: Any
    rule: str

    def __str__(self) -> str:
        """`Priority: must be … (got -1)`; a missing field has nothing to show."""
        if self.value is _ABSENT:
            return f"{self.path}: {self.rule}"
        return f"{self.path}: {self.rule} (got {self.value!r})"


class _Absent:
    def __repr__(self) -> str:
        return "(absent)"


_ABSENT: Any = _Absent()
ABSENT: Any = _ABSENT


class SpecError(BatchyardError):
    """A job description is invalid; carries every problem found, each with its JSON path."""

    status = 400

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        lines = "; ".join(str(problem) for problem in problems)
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"{len(problems)} {noun} in the job description: {lines}",
                         code=problems[0].code)


class NotFound(BatchyardError):
    code = "InvalidResource.NotFound"
    status = 404


class StateConflict(BatchyardError):
    code = "StateConflict"
    status = 409


class QuotaExhausted(BatchyardError):
    """A request would take the tenant past a quota (reference §9.8)."""

    code = "QuotaExhausted"
    status = 403


class IdempotentTokenMismatch(BatchyardError):
    """An IdempotentToken used again with another body (reference §9.7)."""

    code = "IdempotentTokenMismatch"
    status = 400


class TokenTaken(BatchyardError):
    """The idempotency token already made a resource (the caller looks up which)."""

    code = "IdempotentTokenTaken"
    status = 409


class ObjectStoreError(BatchyardError):
    """An object could not be read or written; the message names the object and the reason."""

    code = "ObjectStoreError"
    status = 400


class ObjectNotFound(ObjectStoreError):
    """No object at a URL. Its message does not name the local path (it reaches tenants, in
    the results of their instances); `line` does, for the command line, so that a wrong
    --data-dir or --bucket shows."""

    code = "NotFound"
    status = 404

    def __init__(self, url: str, looked_in: str, message: str = "") -> None:
        super().__init__(message or f"cannot read {url}: No such file or directory")
        self.url = url
        self.looked_in = looked_in

    def line(self, data_dir: Path) -> str:
        """`NotFound: oss://b/k does not exist (looked in /abs/…/b/k; data dir /abs/…)`."""
        return (f"{self.code}: {self.url} does not exist (looked in {self.looked_in}; "
                f"data dir {data_dir})")

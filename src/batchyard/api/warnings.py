"""Warnings in an answer that still succeeds (unknown fields in a created job), as clients that
know nothing of them can ignore: `Warning` headers (RFC 7234 §5.5, code 299, the way the
Kubernetes API sends them) and a `Warnings` list in the body, which the official SDK ignores.

Both ends use this module: the server writes the headers, `batchyard submit` reads them.
"""

from __future__ import annotations

import re
from typing import Any

from batchyard.domain.fields import UnknownField

MAX_HEADERS = 20
"""Most `Warning` headers in one answer (then one more counting the rest): Python's
http.client, under the official SDK, refuses an answer with more than 100 headers."""
MAX_LISTED = 100
"""Most warnings in the body's `Warnings` list (then one more counting the rest); only these
get a suggestion ("did you mean …"), and the headers show fewer (MAX_HEADERS)."""
MAX_TEXT = 300
"""Longest warning text in a header (paths quote user keys of any length)."""
_PREFIX = '299 - "'
_ESCAPED = re.compile(r"\\(.)")


def warning_headers(fields: list[UnknownField]) -> list[str]:
    """The values of the `Warning` headers: `299 - "DAG.Tasks.t.InstanceCont: unknown field,
    ignored; did you mean InstanceCount?"`, printable ASCII only."""
    texts = [str(field) for field in fields[:MAX_HEADERS]]
    if len(fields) > MAX_HEADERS:
        texts.append(f"{len(fields) - MAX_HEADERS} more unknown fields; see Warnings in the "
                     "body")
    return [_PREFIX + _quoted(_clipped(text)) + '"' for text in texts]


def warning_texts(values: list[str]) -> list[str]:
    """The texts of `Warning` header values (those with code 299); others are skipped."""
    return [_ESCAPED.sub(r"\1", value[len(_PREFIX):-1]) for value in values
            if value.startswith(_PREFIX) and value.endswith('"') and len(value) > len(_PREFIX)]


def unseen(texts: list[str], shown: list[UnknownField]) -> list[str]:
    """The warning texts (from headers) that are not those of the fields already `shown`: a
    client that checked the job itself prints only what the server found besides."""
    known = set(warning_texts(warning_headers(shown)))
    return [text for text in texts if text not in known]


def warnings_body(fields: list[UnknownField]) -> list[dict[str, Any]]:
    """The `Warnings` of the create answer: `{"Path", "Message", "Suggestion"}` each."""
    listed: list[dict[str, Any]] = [
        {"Path": field.path, "Message": field.message, "Suggestion": field.suggestion}
        for field in fields[:MAX_LISTED]]
    if len(fields) > MAX_LISTED:
        listed.append({"Path": "$", "Message": f"{len(fields) - MAX_LISTED} more unknown "
                       "fields not listed", "Suggestion": ""})
    return listed


def _clipped(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "..."


def _quoted(text: str) -> str:
    """`text` as the inside of an HTTP quoted-string: characters outside printable ASCII
    written as Python escapes (a header carries neither line breaks nor UTF-8), then `\\`
    and `"` escaped."""
    printable = "".join(character if " " <= character <= "~"
                        else character.encode("unicode_escape", "backslashreplace")
                        .decode("ascii") for character in text)
    return printable.replace("\\", "\\\\").replace('"', '\\"')

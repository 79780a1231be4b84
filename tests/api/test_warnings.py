"""Unknown fields in a created job come back as warnings: one `Warning: 299 - "…"` header each
(at most MAX_HEADERS, then one counting the rest) and a `Warnings` list in the body."""

from __future__ import annotations

from typing import Any

import httpx

from batchyard.api.warnings import (
    MAX_HEADERS,
    MAX_LISTED,
    unseen,
    warning_headers,
    warning_texts,
)
from batchyard.domain.fields import UnknownField
from tests.api.conftest import job_body


def typo_job(**extra: Any) -> dict[str, Any]:
    body = job_body(name="typos")
    body["DAG"]["Tasks"]["work"].update({"InstanceCont": 3, **extra})
    body["DAG"]["Tasks"]["work"]["Parameters"]["Command"]["EnvVar"] = {"A": "1"}
    return body


def test_unknown_fields_are_warning_headers_and_a_body_list(alice: httpx.Client) -> None:
    answer = alice.post("/jobs", json=typo_job())
    assert answer.status_code == 201 and answer.json()["Id"].startswith("job-")
    assert answer.headers.get_list("Warning") == [
        '299 - "DAG.Tasks.work.InstanceCont: unknown field, ignored; '
        'did you mean InstanceCount?"',
        '299 - "DAG.Tasks.work.Parameters.Command.EnvVar: unknown field, ignored; '
        'did you mean EnvVars?"']
    assert answer.json()["Warnings"] == [
        {"Path": "DAG.Tasks.work.InstanceCont",
         "Message": "unknown field, ignored; did you mean InstanceCount?",
         "Suggestion": "InstanceCount"},
        {"Path": "DAG.Tasks.work.Parameters.Command.EnvVar",
         "Message": "unknown field, ignored; did you mean EnvVars?", "Suggestion": "EnvVars"}]


def test_a_job_without_unknown_fields_gets_no_warnings(alice: httpx.Client) -> None:
    answer = alice.post("/jobs", json=job_body(name="no-typos"))
    assert answer.status_code == 201 and list(answer.json()) == ["Id"]
    assert "warning" not in answer.headers


def test_many_unknown_fields_are_counted_not_all_sent(alice: httpx.Client) -> None:
    answer = alice.post("/jobs", json=typo_job(**{f"Extra{n}": n for n in range(150)}))
    headers = answer.headers.get_list("Warning")
    assert len(headers) == MAX_HEADERS + 1
    assert headers[-1] == f'299 - "{152 - MAX_HEADERS} more unknown fields; see Warnings in ' \
        'the body"'
    listed = answer.json()["Warnings"]
    assert len(listed) == MAX_LISTED + 1
    assert listed[-1]["Message"] == f"{152 - MAX_LISTED} more unknown fields not listed"


def test_header_text_is_printable_ascii_and_reads_back() -> None:
    field = UnknownField('DAG.Tasks.work.Insta"nce\\Cöunt\n', "InstanceCount")
    (value,) = warning_headers([field])
    assert value.isascii() and value.isprintable()
    assert warning_texts([value]) == [
        'DAG.Tasks.work.Insta"nce\\C\\xf6unt\\n: unknown field, ignored; '
        "did you mean InstanceCount?"]


def test_only_warnings_of_code_299_are_read() -> None:
    assert warning_texts(['299 - "a: b"', '199 - "old"', "299 - no quotes", '299 - "']) == [
        "a: b"]


def test_warnings_already_shown_are_not_repeated() -> None:
    shown = [UnknownField("DAG.InstanceCont", "InstanceCount")]
    texts = warning_texts(warning_headers([*shown, UnknownField("Colour")]))
    assert unseen(texts, shown) == ["Colour: unknown field, ignored"]

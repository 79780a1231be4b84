"""Reading job files: JSON syntax errors point at line and column; unknown fields are warned
about, or refused with --strict."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from batchyard.cli.job_file import JobFileError, check_fields, parse_job_text, read_job_file


def test_reads_a_json_object(tmp_path: Path) -> None:
    path = tmp_path / "job.json"
    path.write_text('{"Name": "x"}', encoding="utf-8")
    assert read_job_file(path) == {"Name": "x"}


def test_syntax_error_names_line_and_column() -> None:
    text = '{\n  "Name": "x",\n  "Priority": 0,\n}\n'
    with pytest.raises(JobFileError) as caught:
        parse_job_text(text, "job.json")
    first = caught.value.message.splitlines()[0]
    assert first.startswith("job.json:4:1: not valid JSON")


def test_pointer_sits_under_the_mistake() -> None:
    with pytest.raises(JobFileError) as caught:
        parse_job_text('{"Name": "x" "Priority": 0}', "job.json")
    _, line, pointer = caught.value.message.splitlines()
    assert line[pointer.index("^")] == '"'


def test_a_json_array_is_not_a_job() -> None:
    with pytest.raises(JobFileError, match="JSON object"):
        parse_job_text("[1, 2]", "job.json")


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(JobFileError, match="no such file"):
        read_job_file(tmp_path / "absent.json")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(literal: str) -> None:
    with pytest.raises(JobFileError) as caught:
        parse_job_text(f'{{"Name": "x", "Priority": {literal}}}', "job.json")
    assert caught.value.message == (f"job.json: not valid JSON: {literal} is not a JSON number; "
                                    "write a number or a string")


def test_nesting_too_deep_for_the_reader_is_one_line() -> None:
    depth = 100_000
    with pytest.raises(JobFileError) as caught:
        parse_job_text('{"Name": ' + "[" * depth + "]" * depth + "}", "job.json")
    assert caught.value.message.startswith("job.json: ")
    assert "nested too deeply" in caught.value.message and "\n" not in caught.value.message


def typo_job() -> dict[str, Any]:
    return {"Name": "x", "DAG": {"Tasks": {"count": {"InstanceCont": 3, "Colour": "blue"}}}}


def test_unknown_fields_are_warnings_on_the_console() -> None:
    console = Console(file=io.StringIO(), width=40, color_system=None)
    warned = check_fields(typo_job(), "job.json", False, console)
    assert [field.path for field in warned] == ["DAG.Tasks.count.InstanceCont",
                                                "DAG.Tasks.count.Colour"]
    assert console.file.getvalue().splitlines() == [  # type: ignore[attr-defined]
        "warning: job.json: DAG.Tasks.count.InstanceCont: unknown field, ignored; "
        "did you mean InstanceCount?",
        "warning: job.json: DAG.Tasks.count.Colour: unknown field, ignored"]


def test_strict_makes_unknown_fields_an_error_listing_each() -> None:
    console = Console(file=io.StringIO())
    with pytest.raises(JobFileError) as caught:
        check_fields(typo_job(), "job.json", True, console)
    assert caught.value.message.splitlines() == [
        "job.json: 2 unknown fields (refused by --strict):",
        "  DAG.Tasks.count.InstanceCont: unknown field; did you mean InstanceCount?",
        "  DAG.Tasks.count.Colour: unknown field"]
    assert console.file.getvalue() == ""  # type: ignore[attr-defined]


def test_strict_accepts_a_job_without_unknown_fields() -> None:
    console = Console(file=io.StringIO())
    assert check_fields({"Name": "x", "DAG": {"Tasks": {}}}, "job.json", True, console) == []

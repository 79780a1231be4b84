"""Reading job files: JSON syntax errors point at line and column."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchyard.cli.job_file import JobFileError, parse_job_text, read_job_file


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

"""Unknown fields of a job description (likely typos): paths, suggestions, the parts of a job
whose keys are the user's own, and a missing field that names its misspelling."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import BaseModel

from batchyard.domain.fields import UnknownField, closest, known_fields, unknown_fields
from batchyard.domain.spec import JobDescription, TaskDescription, parse_job
from batchyard.errors import SpecError
from tests.unit.test_spec import job, task


def found(raw: Any) -> list[str]:
    return [str(field) for field in unknown_fields(raw, JobDescription)]


def with_task(**overrides: Any) -> dict[str, Any]:
    raw = job()
    raw["DAG"]["Tasks"]["count"] = task(**overrides)
    return raw


def test_a_valid_job_has_no_unknown_fields() -> None:
    assert found(job()) == []


@pytest.mark.parametrize(("typo", "meant"), [
    ("InstanceCont", "InstanceCount"),
    ("MaxRetryCont", "MaxRetryCount"),
    ("instancecount", "InstanceCount"),
    ("Timeot", "Timeout"),
    ("ClusterID", "ClusterId"),
    ("OutputMaping", "OutputMapping"),
])
def test_a_task_field_typo_names_its_path_and_the_field_meant(typo: str, meant: str) -> None:
    assert found(with_task(**{typo: 3})) == [
        f"DAG.Tasks.count.{typo}: unknown field, ignored; did you mean {meant}?"]


def test_nested_objects_are_checked_at_every_level() -> None:
    raw = job(Priorty=1)
    count = raw["DAG"]["Tasks"]["count"]
    count["Parameters"]["Command"]["EnvVar"] = {"A": "1"}
    count["Parameters"]["Command"]["commandline"] = "x"
    count["Parameters"]["Command"]["Docker"] = {"Imag": ""}
    count["Parameters"]["InputMappingConfig"] = {"Lokc": True}
    raw["DAG"]["Dependancies"] = {}
    assert [(field.path, field.suggestion) for field in unknown_fields(raw, JobDescription)] == [
        ("Priorty", "Priority"),
        ("DAG.Dependancies", "Dependencies"),
        ("DAG.Tasks.count.Parameters.Command.EnvVar", "EnvVars"),
        ("DAG.Tasks.count.Parameters.Command.commandline", "CommandLine"),
        ("DAG.Tasks.count.Parameters.InputMappingConfig.Lokc", "Lock"),
        ("DAG.Tasks.count.Parameters.Command.Docker.Imag", "Image"),
    ]


def test_nothing_is_suggested_when_no_field_is_close() -> None:
    assert found(with_task(Colour="blue")) == ["DAG.Tasks.count.Colour: unknown field, ignored"]
    assert closest("Colour", known_fields(TaskDescription)) == ""


def test_keys_chosen_by_the_user_are_never_unknown() -> None:
    raw = with_task(
        InputMapping={"oss://demo/in/": "/home/input/"},
        OutputMapping={"/home/output/": "oss://demo/out/"},
        LogMapping={"/home/app.log": "oss://demo/logs/"},
        Mounts={"Entries": [{"Source": "oss://demo/m/", "Destination": "/m", "Extra": 1}],
                "CacheSupport": True},
        AutoCluster={"ImageId": "img-ubuntu", "ReserveOnFail": True, "Configs": {"Disks": {}}})
    raw["DAG"]["Tasks"]["count"]["Parameters"]["Command"]["EnvVars"] = {"InstanceCont": "3"}
    raw["DAG"]["Tasks"]["InstanceCont"] = task()  # a task may bear any allowed name
    raw["DAG"]["Dependencies"]["InstanceCont"] = []
    raw["Notification"] = {"Topic": {"Name": "t", "Events": ["OnJobFinished"]}}
    assert found(raw) == []


def test_fields_batchcompute_has_but_batchyard_does_not_model_are_not_typos() -> None:
    assert found(job(App={"AppName": "x", "Inputs": {}})) == []


def test_values_of_the_wrong_type_are_not_walked_into() -> None:
    raw = job()
    raw["DAG"]["Tasks"]["count"]["Parameters"] = ["not", {"an": "object"}]
    raw["DAG"]["Tasks"]["split"] = "not a task"
    assert found(raw) == []
    assert found([1, 2]) == [] and found("text") == []


class Entry(BaseModel):
    Source: str
    Destination: str


class Listing(BaseModel):
    Entries: list[Entry] = []
    Named: dict[str, list[Entry]] | None = None


def test_arrays_of_objects_are_checked_with_their_index() -> None:
    raw = {"Entries": [{"Source": "a", "Destination": "b"}, {"Source": "a", "Destnation": "b"}],
           "Named": {"Sourse": [{"Sourse": "a", "Destination": "b"}]}}
    assert [(field.path, field.suggestion) for field in unknown_fields(raw, Listing)] == [
        ("Entries.1.Destnation", "Destination"), ("Named.Sourse.0.Sourse", "Source")]


def test_a_large_job_is_checked_in_one_pass() -> None:
    """5000 tasks with 3 typos each (the size of a 1 MiB body); no timing assertion: a walk
    that recursed or compared every pair would fail or never end here."""
    raw = job()
    typo = task(InstanceCont=3, Timeot=5)
    typo["Parameters"]["Command"]["EnvVar"] = {}
    raw["DAG"]["Tasks"] = {f"t{n}": copy.deepcopy(typo) for n in range(5000)}
    fields = unknown_fields(raw, JobDescription)
    assert len(fields) == 15_000
    assert {field.suggestion for field in fields} == {"InstanceCount", "Timeout", "EnvVars"}


def test_suggestions_can_be_limited_to_the_first_fields() -> None:
    raw = {f"Nme{n}": n for n in range(5)}
    raw["Nmae"] = "x"
    fields = unknown_fields(raw, JobDescription, suggested=5)
    assert len(fields) == 6 and fields[-1] == UnknownField("Nmae")
    assert unknown_fields(raw, JobDescription)[-1] == UnknownField("Nmae", "Name")


def test_the_job_is_not_changed() -> None:
    raw = with_task(InstanceCont=3)
    before = copy.deepcopy(raw)
    unknown_fields(raw, JobDescription)
    assert raw == before


def test_refused_fields_read_without_ignored() -> None:
    field = UnknownField("DAG.Tasks.t.EnvVar", "EnvVars")
    assert field.describe(ignored=False) == "unknown field; did you mean EnvVars?"
    assert field.message == "unknown field, ignored; did you mean EnvVars?"


def problems_of(raw: Any) -> list[str]:
    with pytest.raises(SpecError) as caught:
        parse_job(raw)
    return [str(problem) for problem in caught.value.problems]


def test_a_missing_field_names_its_misspelling() -> None:
    raw = job()
    command = raw["DAG"]["Tasks"]["count"]["Parameters"]["Command"]
    command["ComandLine"] = command.pop("CommandLine")
    assert problems_of(raw) == [
        "DAG.Tasks.count.Parameters.Command.CommandLine: is required; found ComandLine"]


def test_a_missing_field_without_misspelling_is_only_required() -> None:
    raw = job(Nmae="x")
    raw.pop("Name")
    raw["DAG"]["Tasks"]["count"]["Parameters"].pop("StdoutRedirectPath")
    raw["DAG"]["Tasks"]["count"]["Parameters"]["Colour"] = "oss://demo/logs/"
    assert problems_of(raw) == [
        "Name: is required; found Nmae",
        "DAG.Tasks.count.Parameters.StdoutRedirectPath: is required"]


def test_a_known_field_is_never_taken_for_a_misspelling() -> None:
    """`Parameters` lacks `StdoutRedirectPath`; its `StderrRedirectPath` is close to it but
    is a field of its own."""
    raw = job()
    raw["DAG"]["Tasks"]["count"]["Parameters"].pop("StdoutRedirectPath")
    assert problems_of(raw) == ["DAG.Tasks.count.Parameters.StdoutRedirectPath: is required"]

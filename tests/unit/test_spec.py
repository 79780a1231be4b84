"""Job description parsing: defaults, echo of unknown fields, every validation code."""

import copy
from typing import Any

import pytest

from batchyard.domain.spec import DEFAULT_TIMEOUT, parse_job
from batchyard.errors import SpecError


def task(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "InstanceCount": 1,
        "AutoCluster": {"ImageId": "img-ubuntu", "InstanceType": "ecs.sn1.medium"},
        "Parameters": {
            "Command": {"CommandLine": "python count.py",
                        "PackagePath": "oss://demo/log-count/worker.tar.gz"},
            "StdoutRedirectPath": "oss://demo/log-count/logs/",
            "StderrRedirectPath": "oss://demo/log-count/logs/",
        },
    }
    base.update(overrides)
    return base


def job(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "Name": "log-count", "Priority": 0,
        "DAG": {"Tasks": {"split": task(), "count": task(InstanceCount=3), "merge": task()},
                "Dependencies": {"split": ["count"], "count": ["merge"]}},
    }
    base.update(overrides)
    return base


def codes(raw: Any) -> list[str]:
    with pytest.raises(SpecError) as caught:
        parse_job(raw)
    return [problem.code for problem in caught.value.problems]


def test_defaults_are_filled() -> None:
    spec = parse_job({"Name": "j", "DAG": {"Tasks": {"t": task()}}})
    assert spec.Priority == 0 and spec.Type == "DAG" and spec.JobFailOnInstanceFail is True
    assert spec.AutoRelease is False and spec.Description == ""
    t = spec.DAG.Tasks["t"]
    assert t.Timeout == DEFAULT_TIMEOUT and t.MaxRetryCount == 0 and t.InstanceCount == 1
    assert t.Parameters.InputMappingConfig.Locale == "GBK"
    assert t.Parameters.Command.Docker.Image == ""
    assert spec.DAG.Dependencies == {}


def test_what_the_official_sdk_sends_is_accepted_verbatim() -> None:
    sdk_task = {
        "Parameters": {
            "Command": {"EnvVars": {}, "Docker": {"Image": ""}, "CommandLine": "echo hi",
                        "PackagePath": ""},
            "InputMappingConfig": {"Locale": "GBK", "Lock": False},
            "StdoutRedirectPath": "oss://b/logs/", "StderrRedirectPath": "oss://b/logs/"},
        "InstanceCount": 1, "InputMapping": {}, "OutputMapping": {}, "LogMapping": {},
        "Timeout": 3600, "MaxRetryCount": 0, "ClusterId": "cls-6kir9pdp3lg6220g418002",
    }
    raw = {"Name": "sdk", "Description": "Batchcompute Python SDK", "Priority": 1,
           "Type": "DAG", "JobFailOnInstanceFail": True, "AutoRelease": False,
           "DAG": {"Tasks": {"t": sdk_task}, "Dependencies": {}}}
    assert parse_job(raw).DAG.Tasks["t"].ClusterId == "cls-6kir9pdp3lg6220g418002"


def test_unknown_fields_are_kept_and_echoed() -> None:
    raw = job(ProjectId="p-1")
    raw["DAG"]["Tasks"]["split"]["Foo"] = {"bar": 1}
    echoed = parse_job(raw).echo()
    assert echoed["ProjectId"] == "p-1"
    assert echoed["DAG"]["Tasks"]["split"]["Foo"] == {"bar": 1}


def test_env_var_values_are_coerced_to_strings() -> None:
    raw = job()
    raw["DAG"]["Tasks"]["split"]["Parameters"]["Command"]["EnvVars"] = {"N": 3, "B": True}
    env = parse_job(raw).DAG.Tasks["split"].Parameters.Command.EnvVars
    assert env == {"N": "3", "B": "true"}


def test_empty_values_mean_absent() -> None:
    raw = job()
    raw["DAG"]["Tasks"]["split"]["ClusterId"] = ""
    raw["DAG"]["Tasks"]["split"]["Parameters"]["Command"]["PackagePath"] = ""
    assert parse_job(raw).DAG.Tasks["split"].ClusterId == ""


@pytest.mark.parametrize(("mutate", "code", "path"), [
    (lambda j: j.update(Name="has space"), "InvalidName", "Name"),
    (lambda j: j.update(Priority=1001), "InvalidPriority", "Priority"),
    (lambda j: j.update(Priority=-1), "InvalidPriority", "Priority"),
    (lambda j: j.update(Priority="high"), "InvalidPriority", "Priority"),
    (lambda j: j.update(Type="App"), "InvalidType", "Type"),
    (lambda j: j.update(JobFailOnInstanceFail="yes"), "InvalidJobFailOnInstanceFail",
     "JobFailOnInstanceFail"),
    (lambda j: j.pop("Name"), "MissingName", "Name"),
    (lambda j: j.pop("DAG"), "MissingDAG", "DAG"),
    (lambda j: j["DAG"].update(Tasks={}), "MissingTasks", "DAG.Tasks"),
    (lambda j: j["DAG"]["Tasks"]["count"].update(InstanceCount=0), "InvalidInstanceCount",
     "DAG.Tasks.count.InstanceCount"),
    (lambda j: j["DAG"]["Tasks"]["count"].update(Timeout=0), "InvalidTimeout",
     "DAG.Tasks.count.Timeout"),
    (lambda j: j["DAG"]["Tasks"]["count"].update(MaxRetryCount=-1), "InvalidMaxRetryCount",
     "DAG.Tasks.count.MaxRetryCount"),
    (lambda j: j["DAG"]["Tasks"].update({"9lives": task()}), "InvalidTaskName",
     "DAG.Tasks.9lives"),
    (lambda j: j["DAG"]["Tasks"].update({"x" * 33: task()}), "InvalidTaskName",
     "DAG.Tasks." + "x" * 33),
    (lambda j: j["DAG"]["Dependencies"].update(count=["nope"]), "InvalidDependencies",
     "DAG.Dependencies.count"),
    (lambda j: j["DAG"]["Dependencies"].update(merge=["split"]), "BadDAG", "DAG.Dependencies"),
    (lambda j: j["DAG"]["Tasks"]["count"]["Parameters"]["Command"].update(
        PackagePath="oss://demo/worker.zip"), "InvalidPackagePath",
     "DAG.Tasks.count.Parameters.Command.PackagePath"),
    (lambda j: j["DAG"]["Tasks"]["count"]["Parameters"]["Command"].pop("CommandLine"),
     "MissingCommandLine", "DAG.Tasks.count.Parameters.Command.CommandLine"),
    (lambda j: j["DAG"]["Tasks"]["count"]["Parameters"].update(StdoutRedirectPath="/tmp/x"),
     "InvalidStdoutRedirectPath", "DAG.Tasks.count.Parameters.StdoutRedirectPath"),
    (lambda j: j["DAG"]["Tasks"]["count"]["Parameters"].pop("StderrRedirectPath"),
     "MissingStderrRedirectPath", "DAG.Tasks.count.Parameters.StderrRedirectPath"),
    (lambda j: j["DAG"]["Tasks"]["count"].update(AutoCluster={}), "MissingClusterId",
     "DAG.Tasks.count.ClusterId"),
    (lambda j: j["DAG"]["Tasks"]["count"]["Parameters"]["Command"].update(
        Docker={"Image": "ubuntu:22.04"}), "InvalidDocker",
     "DAG.Tasks.count.Parameters.Command.Docker.Image"),
    (lambda j: j["DAG"]["Tasks"]["count"].update(InputMapping={"oss://demo/in/": "rel/path"}),
     "InvalidInputMapping", "DAG.Tasks.count.InputMapping"),
    (lambda j: j["DAG"]["Tasks"]["count"].update(OutputMapping={"/out/": "http://x/"}),
     "InvalidOutputMapping", "DAG.Tasks.count.OutputMapping"),
])
def test_each_rule_has_its_code_and_path(mutate: Any, code: str, path: str) -> None:
    raw = copy.deepcopy(job())
    mutate(raw)
    with pytest.raises(SpecError) as caught:
        parse_job(raw)
    found = {(p.code, p.path) for p in caught.value.problems}
    assert (code, path) in found, caught.value.problems
    assert caught.value.code == caught.value.problems[0].code


def test_every_problem_is_reported_at_once_with_value_and_rule() -> None:
    raw = job(Name="bad name", Priority=5000)
    raw["DAG"]["Tasks"]["count"]["InstanceCount"] = 0
    raw["DAG"]["Dependencies"]["merge"] = ["split"]
    with pytest.raises(SpecError) as caught:
        parse_job(raw)
    problems = caught.value.problems
    assert {p.code for p in problems} >= {"InvalidName", "InvalidPriority",
                                          "InvalidInstanceCount", "BadDAG"}
    message = str(caught.value)
    assert "Priority: must be less than or equal to 1000 (got 5000)" in message
    assert "split -> count -> merge -> split" in message or "BadDAG" in [p.code for p in problems]


def test_task_rules_are_checked_even_when_fields_fail_their_types() -> None:
    raw = job()
    count = raw["DAG"]["Tasks"]["count"]
    count.update(InstanceCount=0, Timeout="long", AutoCluster={})
    count["Parameters"]["Command"]["PackagePath"] = "oss://demo/worker.zip"
    del raw["DAG"]["Tasks"]["merge"]["Parameters"]["Command"]  # cannot be salvaged
    raw["DAG"]["Tasks"]["merge"]["Parameters"]["StdoutRedirectPath"] = "logs/"
    assert sorted(codes(raw)) == ["InvalidInstanceCount", "InvalidPackagePath", "InvalidTimeout",
                                  "MissingClusterId", "MissingCommand"]


def test_not_an_object_is_rejected() -> None:
    assert codes([1, 2]) == ["InvalidHttpBody"]

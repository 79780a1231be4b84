"""Job description parsing: defaults, echo of unknown fields, every validation code."""

import copy
import json
import time
from typing import Any

import pytest

from batchyard.domain.spec import (
    DEFAULT_TIMEOUT,
    MAX_ARG_STRLEN,
    MAX_DEPTH,
    MAX_EXEC_BYTES,
    MAX_PATH_CHARACTERS,
    MAX_PROBLEMS,
    MAX_TIMEOUT,
    ObjectUse,
    bucket_of,
    object_urls,
    parse_job,
)
from batchyard.errors import Problem, SpecError


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


def test_a_task_needs_neither_cluster_id_nor_auto_cluster() -> None:
    """Issue 11 item 7: such a task runs on VMs of the default instance type."""
    raw = job()
    del raw["DAG"]["Tasks"]["split"]["AutoCluster"]
    raw["DAG"]["Tasks"]["count"]["AutoCluster"] = {}
    tasks = parse_job(raw).DAG.Tasks
    assert (tasks["split"].ClusterId, tasks["split"].AutoCluster) == ("", {})
    assert tasks["split"].instance_type == tasks["count"].instance_type == ""


def test_the_instance_type_is_the_auto_clusters_unless_a_cluster_id_wins() -> None:
    raw = job()
    raw["DAG"]["Tasks"]["count"]["ClusterId"] = "cls-1"
    raw["DAG"]["Tasks"]["merge"]["AutoCluster"]["InstanceType"] = 7
    tasks = parse_job(raw).DAG.Tasks
    assert [tasks[name].instance_type for name in ("split", "count", "merge")] == [
        "ecs.sn1.medium", "", ""]


def test_empty_values_mean_absent() -> None:
    raw = job()
    raw["DAG"]["Tasks"]["split"]["ClusterId"] = ""
    raw["DAG"]["Tasks"]["split"]["Parameters"]["Command"]["PackagePath"] = ""
    assert parse_job(raw).DAG.Tasks["split"].ClusterId == ""


@pytest.mark.parametrize(("mutate", "code", "path"), [
    (lambda j: j.update(Name="has space"), "InvalidName", "Name"),
    (lambda j: j.update(Name="trailing-newline\n"), "InvalidName", "Name"),
    (lambda j: j["DAG"]["Tasks"].update({"t\n": task()}), "InvalidTaskName", "DAG.Tasks.t\n"),
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
                                  "MissingCommand"]


def test_not_an_object_is_rejected() -> None:
    assert codes([1, 2]) == ["InvalidHttpBody"]


# ---- bounds on every number, nesting and text ---------------------------------------------


def problems_of(raw: Any) -> list[Problem]:
    with pytest.raises(SpecError) as caught:
        parse_job(raw)
    return caught.value.problems


def found(raw: Any) -> set[tuple[str, str]]:
    return {(problem.code, problem.path) for problem in problems_of(raw)}


def command_of(raw: dict[str, Any], name: str = "split") -> dict[str, Any]:
    command: dict[str, Any] = raw["DAG"]["Tasks"][name]["Parameters"]["Command"]
    return command


def test_timeout_is_bounded_by_one_week() -> None:
    assert MAX_TIMEOUT == 604_800
    raw = job()
    raw["DAG"]["Tasks"]["split"]["Timeout"] = MAX_TIMEOUT
    assert parse_job(raw).DAG.Tasks["split"].Timeout == MAX_TIMEOUT
    for timeout in (MAX_TIMEOUT + 1, 10**10, 10**400):
        raw["DAG"]["Tasks"]["split"]["Timeout"] = timeout
        problems = problems_of(raw)
        assert [(p.code, p.path) for p in problems] == [
            ("InvalidTimeout", "DAG.Tasks.split.Timeout")]
        assert str(MAX_TIMEOUT) in problems[0].rule


def test_existing_bounds_hold_for_huge_numbers() -> None:
    raw = job(Priority=10**30)
    raw["DAG"]["Tasks"]["split"].update(InstanceCount=10**30, MaxRetryCount=-(10**30))
    assert found(raw) >= {("InvalidPriority", "Priority"),
                          ("InvalidInstanceCount", "DAG.Tasks.split.InstanceCount"),
                          ("InvalidMaxRetryCount", "DAG.Tasks.split.MaxRetryCount")}


def place(raw: dict[str, Any], where: str, value: Any) -> dict[str, Any]:
    """`raw` with `value` at the dotted path `where` (creating objects on the way)."""
    *parents, last = where.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return raw


@pytest.mark.parametrize(("where", "code"), [
    ("Foo", "InvalidParameter"),
    ("Foo.Timeout", "InvalidParameter"),
    ("Notification.Topic.Name", "InvalidNotification"),
    ("DAG.Tasks.split.AutoCluster.Configs.Disks.SystemDisk.Size", "InvalidAutoCluster"),
    ("DAG.Tasks.split.Mounts.CacheBlockSize", "InvalidMounts"),
    ("DAG.Tasks.split.Foo", "InvalidParameter"),
    ("DAG.Tasks.split.Parameters.Command.Docker.Bar", "InvalidParameter"),
    ("DAG.Foo", "InvalidParameter"),
])
@pytest.mark.parametrize("number", [2**63, -(2**63) - 1, 10**400, 10**5000,
                                    float("nan"), float("inf"), float("-inf")],
                         ids=["2**63", "-2**63-1", "10**400", "10**5000", "nan", "inf", "-inf"])
def test_every_number_anywhere_is_bounded(where: str, code: str, number: Any) -> None:
    assert found(place(job(), where, number)) == {(code, where)}


def test_numbers_within_the_bounds_are_kept() -> None:
    raw = job(Foo=[2**63 - 1, -(2**63), 1e308, -1e-308, 0.5])
    raw["DAG"]["Tasks"]["split"]["AutoCluster"]["SpotPriceLimit"] = 0.125
    assert parse_job(raw).echo()["Foo"] == [2**63 - 1, -(2**63), 1e308, -1e-308, 0.5]


def test_env_var_numbers_out_of_range_are_refused_not_stringified() -> None:
    raw = job()
    command_of(raw)["EnvVars"] = {"BIG": 10**5000, "NAN": float("nan"), "OK": 2**63 - 1}
    assert found(raw) == {
        ("InvalidEnvVars", "DAG.Tasks.split.Parameters.Command.EnvVars.BIG"),
        ("InvalidEnvVars", "DAG.Tasks.split.Parameters.Command.EnvVars.NAN")}


def nested(levels: int) -> Any:
    """`levels` levels of objects and arrays (alternating), innermost holding 1."""
    value: Any = 1
    for level in range(levels):
        value = [value] if level % 2 else {"x": value}
    return value


def test_nesting_is_bounded_to_max_depth_levels() -> None:
    raw = job(Foo=nested(MAX_DEPTH - 1))  # the job object is the first level
    echoed = parse_job(raw).echo()
    assert json.loads(json.dumps(echoed))["Foo"] == raw["Foo"]
    raw = job(Foo=nested(MAX_DEPTH))
    assert [(p.code, p.path) for p in problems_of(raw)] == [("InvalidJsonFormat", "$")]


@pytest.mark.parametrize("levels", [300, 1_000, 100_000])
def test_deep_nesting_is_refused_without_recursion(levels: int) -> None:
    in_a_task = job()
    in_a_task["DAG"]["Tasks"]["split"].update(Foo=nested(levels), Timeout="long")
    for raw in (job(Foo=nested(levels)), in_a_task, nested(levels)):
        problems = problems_of(raw)
        assert [(p.code, p.path) for p in problems] == [("InvalidJsonFormat", "$")]
        assert str(MAX_DEPTH) in problems[0].rule


def test_a_refused_task_is_salvaged_without_changing_the_input() -> None:
    raw = job()
    raw["DAG"]["Tasks"]["split"].update(Timeout="long", InstanceCount=0)
    command_of(raw)["EnvVars"] = {"GOOD": "1", "BAD": [1]}
    command_of(raw)["PackagePath"] = "oss://demo/worker.zip"
    before = copy.deepcopy(raw)
    assert found(raw) == {
        ("InvalidTimeout", "DAG.Tasks.split.Timeout"),
        ("InvalidInstanceCount", "DAG.Tasks.split.InstanceCount"),
        ("InvalidEnvVars", "DAG.Tasks.split.Parameters.Command.EnvVars.BAD"),
        ("InvalidPackagePath", "DAG.Tasks.split.Parameters.Command.PackagePath")}
    assert raw == before


@pytest.mark.parametrize(("where", "code"), [
    ("DAG.Tasks.split.Parameters.Command.CommandLine", "InvalidCommandLine"),
    ("DAG.Tasks.split.Parameters.Command.EnvVars.NAME", "InvalidEnvVars"),
    ("Description", "InvalidDescription"),
    ("DAG.Tasks.split.ClusterId", "InvalidClusterId"),
    ("DAG.Tasks.split.Parameters.InputMappingConfig.Locale", "InvalidLocale"),
    ("DAG.Tasks.split.AutoCluster.InstanceType", "InvalidAutoCluster"),
    ("Notification.Topic.Events", "InvalidNotification"),
    ("Foo", "InvalidParameter"),
])
@pytest.mark.parametrize("text", ["a\0b", "\0", "\ud800", "x\udfffy"])
def test_nul_and_lone_surrogates_are_refused_in_every_string(where: str, code: str,
                                                             text: str) -> None:
    assert (code, where) in found(place(job(), where, text))


def test_nul_in_keys_is_refused_and_paths_stay_printable() -> None:
    raw = job(Foo={"a\0b": 1})
    command_of(raw)["EnvVars"] = {"A\0": "x"}
    raw["DAG"]["Tasks"]["sp\ud800lit"] = raw["DAG"]["Tasks"].pop("merge")
    raw["DAG"]["Dependencies"] = {}
    problems = problems_of(raw)
    paths = {(p.code, p.path) for p in problems}
    assert ("InvalidParameter", "Foo.a\\x00b") in paths
    assert ("InvalidEnvVars", "DAG.Tasks.split.Parameters.Command.EnvVars.A\\x00") in paths
    assert ("InvalidTaskName", "DAG.Tasks.sp\\ud800lit") in paths
    for problem in problems:  # an answer is UTF-8 JSON
        (problem.path + problem.rule + str(problem)).encode("utf-8")


@pytest.mark.parametrize("name", ["A", "_x", "my.var-1", "-", "PATH", "a1"])
def test_environment_variable_names_that_exec_accepts(name: str) -> None:
    raw = job()
    command_of(raw)["EnvVars"] = {name: "v"}
    assert parse_job(raw).DAG.Tasks["split"].Parameters.Command.EnvVars == {name: "v"}


@pytest.mark.parametrize("name", ["A=B", "=", "", "1A", "A B", "é", "A\n", "$A"])
def test_environment_variable_names_that_can_never_be_set(name: str) -> None:
    raw = job()
    command_of(raw)["EnvVars"] = {name: "v"}
    assert ("InvalidEnvVars", f"DAG.Tasks.split.Parameters.Command.EnvVars.{name}") \
        in found(raw)


def test_command_line_must_be_shorter_than_one_exec_argument() -> None:
    raw = job()
    command_of(raw)["CommandLine"] = "x" * (MAX_ARG_STRLEN - 1)
    parse_job(raw)
    command_of(raw)["CommandLine"] = "é" * (MAX_ARG_STRLEN // 2)  # counted in UTF-8 bytes
    [problem] = problems_of(raw)
    assert (problem.code, problem.path) == (
        "InvalidCommandLine", "DAG.Tasks.split.Parameters.Command.CommandLine")
    assert str(MAX_ARG_STRLEN) in problem.rule and "it is 131072 bytes" in problem.rule


def test_each_environment_string_must_be_shorter_than_one_exec_argument() -> None:
    raw = job()
    command_of(raw)["EnvVars"] = {"V": "x" * (MAX_ARG_STRLEN - 3)}  # "V=" + value + NUL
    parse_job(raw)
    command_of(raw)["EnvVars"] = {"V": "x" * (MAX_ARG_STRLEN - 2)}
    [problem] = problems_of(raw)
    assert (problem.code, problem.path) == (
        "InvalidEnvVars", "DAG.Tasks.split.Parameters.Command.EnvVars.V")
    assert f"it is {MAX_ARG_STRLEN} bytes" in problem.rule


def test_command_line_and_environment_together_are_bounded() -> None:
    raw = job()
    value = "x" * (MAX_ARG_STRLEN - 100)
    command_of(raw)["EnvVars"] = {f"V{index}": value for index in range(9)}
    problems = problems_of(raw)
    assert [(p.code, p.path) for p in problems] == [
        ("InvalidEnvVars", "DAG.Tasks.split.Parameters.Command.EnvVars")]
    assert str(MAX_EXEC_BYTES) in problems[0].rule and "they take 1" in problems[0].rule
    command_of(raw)["EnvVars"] = {f"V{index}": value for index in range(8)}
    parse_job(raw)


def task_with(**fields: Any) -> dict[str, Any]:
    raw = job()
    raw["DAG"]["Tasks"]["split"].update(fields)
    return raw


@pytest.mark.parametrize("bad", ["oss://demo/../other-bucket/x/", "oss://demo/a/./b/",
                                 "oss://demo/a/..", "oss://demo/a\\b/", "oss://demo/a\0/",
                                 "s3://demo/x/../../y/"])
@pytest.mark.parametrize(("build", "code", "path"), [
    (lambda url: task_with(Parameters={**task()["Parameters"], "StdoutRedirectPath": url}),
     "InvalidStdoutRedirectPath", "DAG.Tasks.split.Parameters.StdoutRedirectPath"),
    (lambda url: task_with(Parameters={**task()["Parameters"], "StderrRedirectPath": url}),
     "InvalidStderrRedirectPath", "DAG.Tasks.split.Parameters.StderrRedirectPath"),
    (lambda url: task_with(Parameters={**task()["Parameters"], "Command": {
        "CommandLine": "true", "PackagePath": url.rstrip("/") + "/w.tar.gz"}}),
     "InvalidPackagePath", "DAG.Tasks.split.Parameters.Command.PackagePath"),
    (lambda url: task_with(InputMapping={url: "/home/in"}),
     "InvalidInputMapping", "DAG.Tasks.split.InputMapping"),
    (lambda url: task_with(OutputMapping={"/home/out": url}),
     "InvalidOutputMapping", "DAG.Tasks.split.OutputMapping"),
    (lambda url: task_with(LogMapping={"/home/app.log": url}),
     "InvalidLogMapping", "DAG.Tasks.split.LogMapping"),
    (lambda url: task_with(Mounts={"Entries": [{"Source": url, "Destination": "/mnt/x"}]}),
     "InvalidMounts", "DAG.Tasks.split.Mounts.Entries.0"),
])
def test_object_urls_that_leave_their_folder_are_refused(build: Any, code: str, path: str,
                                                         bad: str) -> None:
    problems = [p for p in problems_of(build(bad)) if p.path == path]
    assert problems and problems[0].code == code
    assert "'..'" in problems[0].rule


@pytest.mark.parametrize("url", ["oss://demo/..a/", "oss://demo/.hidden/", "oss://demo/a..b/",
                                 "oss://demo/...", "s3://demo/a//b/", "oss://demo"])
def test_object_urls_with_dots_inside_segments_are_fine(url: str) -> None:
    parse_job(task_with(InputMapping={url: "/home/in"}))


def test_object_urls_lists_every_url_with_its_path_and_direction() -> None:
    raw = task_with(
        InputMapping={"oss://in-bucket/data/": "/home/in"},
        OutputMapping={"/home/out/": "s3://out-bucket/results/"},
        LogMapping={"/home/app.log": "oss://log-bucket/app/"},
        Mounts={"Entries": [{"Source": "oss://ref-bucket/ref/", "Destination": "/mnt/ref",
                             "WriteSupport": True}]})
    raw["DAG"]["Tasks"] = {"split": raw["DAG"]["Tasks"]["split"]}
    raw["DAG"]["Dependencies"] = {}
    task_path = "DAG.Tasks.split"
    assert object_urls(parse_job(raw)) == [
        ObjectUse(f"{task_path}.Parameters.Command.PackagePath",
                  "oss://demo/log-count/worker.tar.gz", writes=False),
        ObjectUse(f"{task_path}.InputMapping.oss://in-bucket/data/", "oss://in-bucket/data/",
                  writes=False),
        ObjectUse(f"{task_path}.Mounts.Entries.0.Source", "oss://ref-bucket/ref/",
                  writes=False),
        ObjectUse(f"{task_path}.Parameters.StdoutRedirectPath", "oss://demo/log-count/logs/",
                  writes=True),
        ObjectUse(f"{task_path}.Parameters.StderrRedirectPath", "oss://demo/log-count/logs/",
                  writes=True),
        ObjectUse(f"{task_path}.OutputMapping./home/out/", "s3://out-bucket/results/",
                  writes=True),
        ObjectUse(f"{task_path}.LogMapping./home/app.log", "oss://log-bucket/app/",
                  writes=True),
    ]


def test_object_urls_of_a_job_without_package_or_mappings() -> None:
    raw = job()
    for name in ("split", "count", "merge"):
        command_of(raw, name)["PackagePath"] = ""
    uses = object_urls(parse_job(raw))
    assert len(uses) == 6 and all(use.writes for use in uses)
    assert {bucket_of(use.url) for use in uses} == {"demo"}


@pytest.mark.parametrize(("url", "bucket"), [("oss://b/x/y", "b"), ("s3://my-bucket", "my-bucket"),
                                             ("oss://a.b-c/", "a.b-c")])
def test_bucket_of(url: str, bucket: str) -> None:
    assert bucket_of(url) == bucket


@pytest.mark.parametrize("url", ["http://b/x", "oss://", "oss://b/../c/", "/local/path", ""])
def test_bucket_of_refuses_what_is_not_an_object_url(url: str) -> None:
    with pytest.raises(ValueError, match="not an object-store URL"):
        bucket_of(url)


# ---- bounded work and answers -----------------------------------------------------------


def test_problems_are_listed_up_to_a_bound() -> None:
    problems = problems_of(job(Foo=["\0"] * (MAX_PROBLEMS + 50)))
    assert len(problems) == MAX_PROBLEMS + 1
    assert (problems[-1].code, problems[-1].path, problems[-1].value) == (
        "InvalidParameter", "$", "50 more problems")


def test_long_keys_are_clipped_in_paths() -> None:
    key = "k" * 10_000
    [problem] = problems_of(job(Foo={key: "\0"}))
    assert problem.path.startswith("Foo.kkk") and len(problem.path) <= MAX_PATH_CHARACTERS + 1


def test_a_rule_quotes_a_few_task_names_not_all() -> None:
    raw = job()
    raw["DAG"]["Tasks"] = {f"t{index}": task() for index in range(500)}
    raw["DAG"]["Dependencies"] = {"t0": [f"missing{index}" for index in range(300)]}
    with pytest.raises(SpecError) as caught:
        parse_job(raw)
    assert len(caught.value.message) < 50_000
    assert "(500 tasks)" in caught.value.problems[0].rule


def test_thousands_of_mappings_are_checked_in_linear_time() -> None:
    folders = {f"oss://demo/in/{index}/": f"/home/in/{index}" for index in range(20_000)}
    raw = task_with(InputMapping={**folders, "oss://demo/all/": "/home/in"})
    started = time.monotonic()
    problems = problems_of(raw)  # the pair-by-pair check took about a minute
    assert time.monotonic() - started < 5
    assert (problems[0].code, problems[0].value) == ("InvalidMapping", "/home/in/0 and /home/in")
    assert problems[-1].value == f"{20_000 - MAX_PROBLEMS} more problems"

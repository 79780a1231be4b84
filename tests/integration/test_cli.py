"""The `batchyard` command as a user runs it: a real subprocess on a temporary data dir."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from batchyard.runner.confinement import Confinement
from tests.integration.conftest import make_job, make_task

TIMEOUT = 90


def command() -> list[str]:
    found = shutil.which("batchyard")
    return [found] if found else [sys.executable, "-m", "batchyard.cli"]


def environment(data_dir: Path) -> dict[str, str]:
    return {**os.environ, "BATCHYARD_DATA_DIR": str(data_dir), "BATCHYARD_SLOTS": "4",
            "COLUMNS": "80"}


def batchyard(data_dir: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*command(), *arguments], env=environment(data_dir),
                          capture_output=True, text=True, timeout=TIMEOUT, check=False)


def write_job(folder: Path, job: dict[str, Any]) -> Path:
    path = folder / "job.json"
    path.write_text(json.dumps(job), encoding="utf-8")
    return path


def job_id_in(output: str) -> str:
    found = re.search(r"job-[0-9A-F]{32}", output)
    assert found, output
    return found.group(0)


def test_a_small_job_finishes_and_exits_0(tmp_path: Path) -> None:
    job = make_job({"hello": make_task("echo hello from $BATCH_COMPUTE_DAG_INSTANCE_ID", 2),
                    "bye": make_task("echo bye")}, {"hello": ["bye"]}, Name="greeting")
    result = batchyard(tmp_path / "data", "run", str(write_job(tmp_path, job)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "greeting" in result.stdout and "Finished" in result.stdout
    assert "hello: ✔ Finished" in result.stdout  # plain progress lines: stdout is not a terminal
    first, *others = result.stdout.splitlines()
    assert first.endswith(f" in data dir {(tmp_path / 'data').resolve()}")
    assert max(len(line) for line in others) <= 80  # the first: a path is never split
    log = f"oss://test/logs/stdout.{job_id_in(result.stdout)}.hello.1"
    assert "oss://test/logs/" in result.stdout
    assert batchyard(tmp_path / "data", "oss", "cat", log).stdout == "hello from 1\n"


def test_summary_lists_tasks_in_dependency_order(tmp_path: Path) -> None:
    job = make_job({"zz-first": make_task("true"), "aa-last": make_task("true")},
                   {"zz-first": ["aa-last"]})
    result = batchyard(tmp_path / "data", "run", "--quiet", str(write_job(tmp_path, job)))
    assert result.returncode == 0, result.stdout + result.stderr
    plain = batchyard(tmp_path / "data", "run", str(write_job(tmp_path, job))).stdout
    table = plain[plain.index("Task"):]
    assert table.index("zz-first") < table.index("aa-last")


def test_a_failing_job_exits_1_and_names_the_failed_instance(tmp_path: Path) -> None:
    script = ('if [ "$BATCH_COMPUTE_DAG_INSTANCE_ID" = 1 ]; then echo disk on fire >&2; exit 3; '
              'fi; echo fine')
    job = make_job({"work": make_task(script, 3)})
    result = batchyard(tmp_path / "data", "run", str(write_job(tmp_path, job)))
    output = result.stdout
    assert result.returncode == 1, output + result.stderr
    assert "work instance 1" in output and "exit code 3" in output
    assert "NonZeroExitCode" in output
    assert f"oss://test/logs/stderr.{job_id_in(output)}.work.1" in output
    assert "disk on fire" in output  # the tail of its stderr
    assert "work instance 0" not in output


def test_an_invalid_job_exits_2_listing_every_problem_with_its_path(tmp_path: Path) -> None:
    job = make_job({"t": make_task("true", 0)}, {"t": ["ghost"]})
    del job["Name"]
    job["Priority"] = 5000
    result = batchyard(tmp_path / "data", "run", str(write_job(tmp_path, job)))
    assert result.returncode == 2
    problems = [line.strip() for line in result.stderr.splitlines()[1:]]
    assert any(line.startswith("Name:") for line in problems), result.stderr
    assert any(line.startswith("Priority:") for line in problems), result.stderr
    assert any(line.startswith("DAG.Tasks.t.InstanceCount:") for line in problems)
    assert any(line.startswith("DAG.Dependencies.t:") and "ghost" in line for line in problems)
    assert "4 problems" in result.stderr
    assert not (tmp_path / "data").exists()  # nothing was submitted


def test_a_file_that_is_not_json_exits_2_with_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "job.json"
    path.write_text('{\n  "Name": "x",\n  "Priority": 0,,\n}\n', encoding="utf-8")
    result = batchyard(tmp_path / "data", "run", str(path))
    assert result.returncode == 2
    assert f"{path}:3:17: not valid JSON" in result.stderr


def typo_job() -> dict[str, Any]:
    task = make_task("echo $BATCH_COMPUTE_DAG_INSTANCE_ID", InstanceCont=3, MaxRetryCont=2)
    task["Parameters"]["Command"]["EnvVar"] = {"GREETING": "hi"}
    return make_job({"count": task}, Name="typos")


def test_unknown_fields_are_warnings_and_the_job_runs(tmp_path: Path) -> None:
    path = write_job(tmp_path, typo_job())
    result = batchyard(tmp_path / "data", "run", "--quiet", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Finished" in result.stdout
    assert result.stderr.splitlines() == [  # one line each, even past 80 columns
        f"warning: {path}: DAG.Tasks.count.InstanceCont: unknown field, ignored; "
        "did you mean InstanceCount?",
        f"warning: {path}: DAG.Tasks.count.MaxRetryCont: unknown field, ignored; "
        "did you mean MaxRetryCount?",
        f"warning: {path}: DAG.Tasks.count.Parameters.Command.EnvVar: unknown field, "
        "ignored; did you mean EnvVars?"]


def test_strict_refuses_unknown_fields_and_submits_nothing(tmp_path: Path) -> None:
    path = write_job(tmp_path, typo_job())
    result = batchyard(tmp_path / "data", "run", "--strict", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        f"error: {path}: 3 unknown fields (refused by --strict):",
        "  DAG.Tasks.count.InstanceCont: unknown field; did you mean InstanceCount?",
        "  DAG.Tasks.count.MaxRetryCont: unknown field; did you mean MaxRetryCount?",
        "  DAG.Tasks.count.Parameters.Command.EnvVar: unknown field; did you mean EnvVars?"]
    assert not (tmp_path / "data").exists()
    clean = write_job(tmp_path, make_job({"t": make_task("true")}))
    assert batchyard(tmp_path / "data", "run", "--strict", "-q", str(clean)).returncode == 0


def test_a_misspelt_required_field_is_named(tmp_path: Path) -> None:
    job = make_job({"count": make_task("true")})
    command = job["DAG"]["Tasks"]["count"]["Parameters"]["Command"]
    command["ComandLine"] = command.pop("CommandLine")
    result = batchyard(tmp_path / "data", "run", str(write_job(tmp_path, job)))
    assert result.returncode == 2
    assert ("  DAG.Tasks.count.Parameters.Command.CommandLine: is required; found ComandLine "
            "[MissingCommandLine]") in result.stderr.splitlines()
    assert "ComandLine: unknown field, ignored; did you mean CommandLine?" in result.stderr


@pytest.mark.parametrize(("text", "says"), [
    ('{"Name": "x", "Priority": NaN}', "NaN is not a JSON number"),
    ('{"Name": ' + "[" * 50_000 + "]" * 50_000 + "}", "nested too deeply"),
])
def test_json_python_accepts_but_a_job_cannot_hold_is_one_line(tmp_path: Path, text: str,
                                                               says: str) -> None:
    path = tmp_path / "job.json"
    path.write_text(text, encoding="utf-8")
    result = batchyard(tmp_path / "data", "run", str(path))
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: {path}: ") and says in line


def test_ctrl_c_stops_the_job_and_exits_130(tmp_path: Path) -> None:
    marker = f"batchyard-test-{os.getpid()}-{time.monotonic_ns()}"
    job = make_job({"slow": make_task(f"sleep 60; echo {marker}", 2)})
    process = subprocess.Popen([*command(), "run", str(write_job(tmp_path, job))],
                               env={**environment(tmp_path / "data"),
                                    "BATCHYARD_PROGRESS_INTERVAL": "0"},  # a count line a poll
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        if "instances: 0 waiting, 2 running" in line:
            break
    process.send_signal(signal.SIGINT)
    output, errors = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 130, output + errors
    assert "Stopped" in output
    assert not processes_mentioning(marker)


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_oss_cp_ls_cat_round_trip(tmp_path: Path) -> None:
    data = tmp_path / "data"
    source = tmp_path / "hello.txt"
    source.write_text("hello, object store\n", encoding="utf-8")
    assert batchyard(data, "oss", "cp", str(source), "oss://demo/in/").returncode == 0
    listing = batchyard(data, "oss", "ls", "oss://demo/in/")
    assert listing.stdout.split() == ["20", "oss://demo/in/hello.txt"]
    as_json = batchyard(data, "oss", "ls", "oss://demo/in/", "--json")
    assert [json.loads(line) for line in as_json.stdout.splitlines()] == [
        {"Url": "oss://demo/in/hello.txt", "Size": 20, "IsDir": False}]
    assert batchyard(data, "oss", "cat", "oss://demo/in/hello.txt").stdout == source.read_text()
    back = tmp_path / "back.txt"
    assert batchyard(data, "oss", "cp", "oss://demo/in/hello.txt", str(back)).returncode == 0
    assert back.read_text() == source.read_text()


@pytest.mark.skipif(os.geteuid() != 0, reason="programs run as users of their own only for root")
def test_oss_cp_as_root_makes_folders_confined_programs_may_write(tmp_path: Path) -> None:
    """`serve` runs programs as unprivileged users of the group `user_base`: a folder an
    operator's upload makes must let them write results beside the input."""
    data, source = tmp_path / "data", tmp_path / "input.txt"
    source.write_text("x")
    assert batchyard(data, "oss", "cp", str(source), "oss://demo/deep/in/").returncode == 0
    for folder in (data / "objects" / "demo" / "deep", data / "objects" / "demo" / "deep" / "in"):
        status = folder.stat()
        assert stat.S_IMODE(status.st_mode) == 0o2775, oct(status.st_mode)
        assert status.st_gid == Confinement().user_base


def test_oss_cp_recursive_both_ways(tmp_path: Path) -> None:
    data, folder = tmp_path / "data", tmp_path / "results"
    (folder / "deep").mkdir(parents=True)
    (folder / "a.txt").write_text("a")
    (folder / "deep" / "b.txt").write_text("bb")
    assert batchyard(data, "oss", "cp", str(folder), "oss://demo/run/").returncode == 1
    assert batchyard(data, "oss", "cp", "-r", str(folder), "oss://demo/run/").returncode == 0
    listing = batchyard(data, "oss", "ls", "-r", "oss://demo/run/").stdout
    assert "oss://demo/run/deep/b.txt" in listing and "oss://demo/run/a.txt" in listing
    assert batchyard(data, "oss", "cp", "-r", "oss://demo/run/", str(tmp_path / "copy")
                     ).returncode == 0
    assert (tmp_path / "copy" / "deep" / "b.txt").read_text() == "bb"


def test_bucket_flag_points_a_bucket_at_another_folder(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    source = tmp_path / "x.txt"
    source.write_text("x")
    result = batchyard(tmp_path / "data", "oss", "cp", "--bucket", f"demo={elsewhere}",
                       str(source), "oss://demo/k/x.txt")
    assert result.returncode == 0, result.stderr
    assert (elsewhere / "k" / "x.txt").read_text() == "x"


def test_oss_errors_are_one_clear_line(tmp_path: Path) -> None:
    result = batchyard(tmp_path / "data", "oss", "cat", "oss://demo/absent.txt")
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "oss://demo/absent.txt" in result.stderr
    assert "Traceback" not in result.stderr
    data = (tmp_path / "data").resolve()
    assert result.stderr == (f"error: NotFound: oss://demo/absent.txt does not exist (looked "
                             f"in {data}/objects/demo/absent.txt; data dir {data})\n")
    listing = batchyard(tmp_path / "data", "oss", "ls", "oss://demo/absent/")
    assert listing.returncode == 1
    assert f"oss://demo/absent/ does not exist (looked in {data}/objects/demo/absent/;" \
        in listing.stderr
    copied = batchyard(tmp_path / "data", "oss", "cp", "-r", "oss://demo/absent/", "here/")
    assert copied.returncode == 1 and f"{data}/objects/demo/absent/" in copied.stderr


@pytest.mark.parametrize("arguments", [[], ["run"], ["oss"], ["oss", "cp"], ["oss", "ls"],
                                       ["oss", "cat"]])
def test_every_command_has_help_with_examples(tmp_path: Path, arguments: list[str]) -> None:
    result = batchyard(tmp_path / "data", *arguments, "--help")
    assert result.returncode == 0
    assert "Example" in result.stdout


def test_an_unusable_data_dir_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    job = write_job(tmp_path, make_job({"t": make_task("true")}))
    result = batchyard(blocker, "run", str(job))
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot start batchyard") and "Traceback" not in (
        result.stderr)


def partly_failing_job(**fields: Any) -> dict[str, Any]:
    """`work` (3 instances, instance 1 exits 3), then `after`; failures do not fail the job."""
    script = 'if [ "$BATCH_COMPUTE_DAG_INSTANCE_ID" = 1 ]; then exit 3; fi; echo fine'
    return make_job({"work": make_task(script, 3), "after": make_task("true")},
                    {"work": ["after"]}, JobFailOnInstanceFail=False, **fields)


def test_a_job_finished_with_failed_instances_exits_3_and_shows_a_warning(
        tmp_path: Path) -> None:
    job_file = str(write_job(tmp_path, partly_failing_job()))
    result = batchyard(tmp_path / "data", "run", job_file)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "Finished with 1 failed instance in" in result.stdout
    assert re.search(r"work\s+⚠ Finished\s+2/3\s+1", result.stdout), result.stdout
    assert re.search(r"after\s+✔ Finished", result.stdout)
    assert "work: ⚠ Finished" in result.stdout  # the plain progress line
    allowed = batchyard(tmp_path / "data", "run", "--allow-failed-instances", "-q", job_file)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "work instance 1" in allowed.stdout  # still reported, just not an error


def test_the_tasks_of_a_failed_job_that_never_ran_say_not_run(tmp_path: Path) -> None:
    job = make_job({"first": make_task("exit 4"), "second": make_task("true")},
                   {"first": ["second"]})
    result = batchyard(tmp_path / "data", "run", str(write_job(tmp_path, job)))
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(r"second\s+– not run", result.stdout), result.stdout
    assert "second: – not run" in result.stdout


def test_json_prints_one_document_with_the_api_field_names(tmp_path: Path) -> None:
    result = batchyard(tmp_path / "data", "run", "--json",
                       str(write_job(tmp_path, partly_failing_job(Name="json-job"))))
    assert result.returncode == 3, result.stdout + result.stderr
    document = json.loads(result.stdout)  # the whole of stdout: no progress, no summary
    assert document["ExitStatus"] == 3
    assert document["Job"]["Name"] == "json-job" and document["Job"]["State"] == "Finished"
    assert document["Job"]["InstanceMetrics"]["FailedCount"] == 1
    assert [task["TaskName"] for task in document["Tasks"]] == ["work", "after"]
    [failed] = document["FailedInstances"]
    assert failed["TaskName"] == "work" and failed["InstanceId"] == 1
    assert failed["Result"]["ExitCode"] == 3 and document["Logs"] == ["oss://test/logs/"]
    assert result.stderr == ""


def test_piped_output_never_wraps_a_long_path_or_name(tmp_path: Path) -> None:
    logs = "oss://test/" + "/".join(["a-rather-long-folder-name"] * 6) + "/"
    task = make_task("echo oops >&2; exit 5")
    task["Parameters"].update(StdoutRedirectPath=logs, StderrRedirectPath=logs)
    name = "n" * 100
    result = subprocess.run(
        [*command(), "run", str(write_job(tmp_path, make_job({"t": task}, Name=name)))],
        env={**environment(tmp_path / "data"), "COLUMNS": "60"}, capture_output=True,
        text=True, timeout=TIMEOUT, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    job_id = job_id_in(result.stdout)
    assert any(f"stderr: {logs}stderr.{job_id}.t.0" in line for line in lines), result.stdout
    assert any(line.startswith(f"Logs: {logs}") for line in lines)
    assert any(f"{name} {job_id} Failed in" in line for line in lines)


def test_run_parses_the_job_file_once_and_orders_tasks_from_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`run` hands the JobDescription it parsed (for the unknown-field warnings) to the engine,
    whose own parser is never called; the summary's order and log folders come from it."""
    from typer.testing import CliRunner

    from batchyard.cli.main import app

    def second_parse(raw: Any) -> Any:
        raise AssertionError("the engine parsed a description `run` had parsed")

    monkeypatch.setattr("batchyard.orchestrator.engine.parse_job", second_parse)
    job = make_job({"b-last": make_task("true"), "a-first": make_task("true")},
                   {"a-first": ["b-last"]}, Name="once")
    job["DAG"]["Tasks"]["b-last"]["Parameters"]["StdoutRedirectPath"] = "oss://test/out/"
    result = CliRunner().invoke(app, ["run", str(write_job(tmp_path, job)), "--data-dir",
                                      str(tmp_path / "data"), "--slots", "2"])
    assert result.exit_code == 0, result.output
    assert result.output.index("a-first") < result.output.index("b-last")
    assert "Logs: oss://test/out/, oss://test/logs/" in result.output

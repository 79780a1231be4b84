"""Mapped paths: what a job may map (spec validation), credential masking, the bwrap plan."""

from __future__ import annotations

from typing import Any

import pytest

from batchyard.domain.spec import MASK, parse_job
from batchyard.runner.sandbox import Bind, SandboxPlan, bwrap_path, sandbox_argv

from .test_spec import codes, job, task


def with_task(**fields: Any) -> dict[str, Any]:
    return job(DAG={"Tasks": {"t": task(**fields)}})


@pytest.mark.parametrize("fields", [
    {"InputMapping": {"oss://demo/in/": "/home/x"}, "OutputMapping": {"/home/x/out": "oss://d/o/"}},
    {"InputMapping": {"oss://demo/a/": "/data", "oss://demo/b/": "/data/"}},
    {"OutputMapping": {"/": "oss://demo/out/"}},
    {"OutputMapping": {"/proc/self": "oss://demo/out/"}},
    {"InputMapping": {"oss://demo/in/": "relative/path"}},
    {"Mounts": {"Entries": [{"Source": "nas://fs/share", "Destination": "/mnt/nas"}]}},
    {"Mounts": {"Entries": [{"Source": "oss://demo/in/"}]}},
    {"Mounts": {"Entries": "not a list"}},
])
def test_unusable_mappings_are_refused_at_submission(fields: dict[str, Any]) -> None:
    problems = codes(with_task(**fields))
    assert problems and all(code.startswith("Invalid") for code in problems)


def test_mount_entries_and_mappings_that_fit_are_accepted() -> None:
    spec = parse_job(with_task(
        InputMapping={"oss://demo/in/": "/home/input"},
        OutputMapping={"/home/output/": "oss://demo/out/"},
        LogMapping={"/var/log/app.log": "oss://demo/logs/"},
        Mounts={"Entries": [{"Source": "oss://demo/ref/", "Destination": "/mnt/ref",
                             "WriteSupport": True}], "Locale": "UTF-8", "Lock": True}))
    described = spec.DAG.Tasks["t"]
    assert described.uses_mappings and len(described.mount_entries) == 1


def test_credentials_in_a_description_are_masked_in_its_echo() -> None:
    mounts = {"Entries": [], "OSS": {"AccessKeyId": "id", "AccessKeySecret": "secret",
                                     "SecurityToken": ""}}
    echoed = parse_job(with_task(Mounts=mounts)).echo()
    oss = echoed["DAG"]["Tasks"]["t"]["Mounts"]["OSS"]
    assert oss == {"AccessKeyId": MASK, "AccessKeySecret": MASK, "SecurityToken": ""}


@pytest.mark.skipif(bwrap_path() is None, reason="bubblewrap (bwrap) is not installed")
def test_the_plan_hides_binds_and_mirrors_in_a_safe_order(tmp_path: Any) -> None:
    data = tmp_path / "data"
    (data / "work" / "w").mkdir(parents=True)
    plan = SandboxPlan(workdir=str(data / "work" / "w"), tmp=str(tmp_path / "t"),
                       binds=(Bind("/srv-view", "/usr/batchyard-test-input"),),
                       hidden=(str(data), str(data / "work")))
    argv = sandbox_argv(plan)
    assert argv[-1] == "--" and "--die-with-parent" in argv and "--unshare-pid" in argv
    assert argv.index("/tmp") < argv.index("--tmpfs"), "/tmp is replaced before anything else"
    assert argv[argv.index("/usr") - 1:argv.index("/usr") + 1] == ["--tmpfs", "/usr"]
    assert argv.index("/usr/batchyard-test-input") > argv.index("/usr")
    assert str(data) not in argv, "a data dir below /tmp disappears with the host's /tmp"
    assert plan.host_path("/tmp/x/y") == str(tmp_path / "t" / "x" / "y")
    assert plan.host_path("/usr/batchyard-test-input/f") is None, "read-only binds"

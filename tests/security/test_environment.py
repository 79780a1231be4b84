"""Finding 3: a program's environment is built from nothing, never from the server's."""

from __future__ import annotations

import httpx
import pytest

from tests.security.conftest import (
    CANARY_SECRET,
    CANARY_VALUE,
    CANARY_VARIABLE,
    ServeProcess,
    job,
    run_job,
    stdout_of,
)


@pytest.mark.parametrize("mapped", [False, True], ids=["plain", "mapped"])
def test_programs_never_see_the_server_environment(serve: ServeProcess, mallory: httpx.Client,
                                                   mapped: bool) -> None:
    extra = {"OutputMapping": {"/home/out/": "oss://mallory-logs/out/"}} if mapped else {}
    body = job("env; echo; cat /proc/1/environ | tr '\\0' '\\n'", **extra)
    body["DAG"]["Tasks"]["attack"]["Parameters"]["Command"]["EnvVars"] = {"MINE": "kept"}
    job_id, state = run_job(mallory, body)
    printed = stdout_of(serve, job_id)
    assert state == "Finished", printed
    assert CANARY_SECRET not in printed and CANARY_VALUE not in printed
    assert CANARY_VARIABLE not in printed and "BATCHYARD_S3_" not in printed
    assert "MINE=kept" in printed and f"BATCH_COMPUTE_DAG_JOB_ID={job_id}" in printed
    names = {line.split("=", 1)[0] for line in printed.splitlines() if "=" in line}
    allowed_prefixes = ("BATCH_COMPUTE_", "BATCHYARD_OSS_", "PYTHON")
    unexpected = {name for name in names if not name.startswith(allowed_prefixes)} - {
        "PATH", "HOME", "LANG", "TMPDIR", "SHELL", "MINE", "PWD", "SHLVL", "_", "OLDPWD",
        "UMASK"}
    assert not unexpected, f"variables the program should not inherit: {sorted(unexpected)}"

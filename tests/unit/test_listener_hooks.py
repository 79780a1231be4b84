"""The listeners' hooks for jobs that come and go (`created`, `removed`): neither is a
transition, so the console's jobs list would not learn of them otherwise (the harness:
MemoryStore, fake clock, inline agent)."""

from __future__ import annotations

import pytest

from batchyard.domain.states import State
from batchyard.errors import NotFound
from batchyard.ports import TransitionListener
from batchyard.testing import Harness
from tests.unit.test_cluster_scheduling import job


class Hooks(TransitionListener):
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    def created(self, job_id: str, tenant: str) -> None:
        self.calls.append(("created", job_id, tenant))

    def removed(self, job_id: str, tenant: str) -> None:
        self.calls.append(("removed", job_id, tenant))


class Broken(TransitionListener):
    def created(self, job_id: str, tenant: str) -> None:
        raise RuntimeError("a broken listener")

    def removed(self, job_id: str, tenant: str) -> None:
        raise RuntimeError("a broken listener")


def test_submissions_deletions_and_auto_releases_are_told_with_the_jobs_tenant() -> None:
    harness = Harness.build(slots=2)
    hooks = Hooks()
    harness.engine.listen(Broken())  # told first: the others are told all the same
    harness.engine.listen(hooks)
    kept = harness.submit(job(), "alice")
    bobs = job(name="r")
    for parameters in [task["Parameters"] for task in bobs["DAG"]["Tasks"].values()]:
        parameters.update(StdoutRedirectPath="oss://bobs/", StderrRedirectPath="oss://bobs/")
    released = harness.submit({**bobs, "AutoRelease": True}, "bob")
    assert hooks.calls == [("created", kept, "alice"), ("created", released, "bob")]
    harness.run_all()
    assert harness.engine.job(kept).state is State.FINISHED
    assert hooks.calls[2:] == [("removed", released, "bob")]
    with pytest.raises(NotFound):
        harness.engine.delete(kept, "bob")  # not bob's: nothing removed, nothing told
    assert len(hooks.calls) == 3
    harness.engine.delete(kept)  # the local command line: no tenant given
    assert hooks.calls[3:] == [("removed", kept, "alice")]
    with pytest.raises(NotFound):
        harness.engine.delete(kept)
    assert len(hooks.calls) == 4

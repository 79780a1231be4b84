"""An attempt knows the VM it runs on: the worker a lease names, else the agent itself
(BATCH_COMPUTE_WORKER_ID), and its cluster (BATCH_COMPUTE_CLUSTER_ID) — on the fast path."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from batchyard.adapters.objectstore import FsspecObjectStore
from batchyard.ports.agents import batch_of
from tests.integration.test_agent import Recorder, log, open_agent, request, settings_in

PRINT = "echo $BATCH_COMPUTE_WORKER_ID $BATCH_COMPUTE_CLUSTER_ID"


def test_the_worker_a_lease_names_reaches_the_program(tmp_path: Path) -> None:
    objects, recorder = FsspecObjectStore(tmp_path / "objects"), Recorder()
    agent = open_agent(objects, settings_in(tmp_path / "work"), recorder)
    try:
        on_vm = replace(request(PRINT, 0, "a"), cluster_id="cls-7")
        agent.lease(batch_of([(1, on_vm)], worker="cls-7.group-1.vm-2"))
        agent.lease(batch_of([(2, request(PRINT, 0, "b"))]))  # none named: the agent's id
        outcomes = recorder.wait(2)
    finally:
        agent.shutdown()
    assert all(outcome.succeeded for outcome in outcomes.values()), outcomes
    assert log(objects, "stdout", task="a").split() == ["cls-7.group-1.vm-2", "cls-7"]
    assert log(objects, "stdout", task="b").split() == ["agent-1"]

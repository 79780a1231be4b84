"""Nothing the engine keeps grows with the number of jobs it has run (issue 10, item 3).

The RSS over 10,000 jobs is measured by bench/memory.py; these tests hold the bounds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from batchyard.adapters import store as store_module
from batchyard.adapters.store import NewJob, SqlStore
from batchyard.domain.spec import parse_job
from batchyard.domain.states import State
from batchyard.errors import NotFound
from batchyard.orchestrator import caches
from batchyard.orchestrator.caches import SpecCache
from batchyard.orchestrator.engine import Engine
from batchyard.service import open_engine
from tests.integration.conftest import make_job, make_task, settings_for


def test_an_evicted_description_is_read_again_from_the_store(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        specs = SpecCache(store, bound=2)
        raws = {f"job-{n}": make_job({"t": make_task(f"echo {n}")}) for n in range(3)}
        for number, (job_id, raw) in enumerate(raws.items()):
            store.create_job(NewJob(job_id, f"tenant-{number}", parse_job(raw), 1000.0))
            specs.remember(job_id, parse_job(raw), f"tenant-{number}")
        assert len(specs) == 2  # job-0 fell out
        known = specs.job("job-0")
        assert known.spec == parse_job(raws["job-0"]) and known.tenant == "tenant-0"
        assert len(specs) == 2
        with store.transaction() as tx:
            tx.delete_job("job-1")
        specs.forget("job-1")
        with pytest.raises(NotFound):
            specs.job("job-1")
    finally:
        store.close()


def final_state(engine: Engine, job_id: str) -> State:
    """The job's final state; Finished for a released job whose final record was dropped
    already (only Finished jobs are released, and its row is gone)."""
    try:
        return engine.wait(job_id, timeout=60).state
    except NotFound:
        assert engine.store.job(job_id) is None
        return State.FINISHED


def test_the_engine_tables_stay_bounded_while_jobs_need_evicted_descriptions(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Six two-step jobs at once with room for two descriptions: every launch and outcome
    of the others re-reads its job's description, and each second step still runs the
    right command after the first (it checks the file the first made)."""
    monkeypatch.setattr(caches, "SPEC_CACHE_SIZE", 2)
    monkeypatch.setattr(caches, "RELEASED_KEPT", 2)
    marks = tmp_path / "marks"
    marks.mkdir()
    with open_engine(settings_for(tmp_path / "data")) as engine:
        ids = [engine.submit(make_job(
            {"make": make_task(f"touch {marks}/{n}"), "check": make_task(f"test -f {marks}/{n}")},
            {"make": ["check"]}, AutoRelease=n % 2 == 1)) for n in range(6)]
        assert [final_state(engine, job_id) for job_id in ids] == [State.FINISHED] * 6
        sizes = engine.table_sizes()
    assert sizes["specs"] <= 2 and sizes["released"] <= 2
    assert sizes["in_flight"] == sizes["running_tasks"] == sizes["tries"] == 0


@pytest.mark.parametrize("most_names", [500, 1])
def test_the_store_reads_and_counts_only_the_named_tasks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, most_names: int) -> None:
    """What a settle of a few tasks reads (with the names in an IN list, or, past
    MOST_NAMES, filtered from the job's rows)."""
    monkeypatch.setattr(store_module, "MOST_NAMES", most_names)
    store = SqlStore(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        raw = make_job({"a": make_task("true", 2), "b": make_task("true"), "c": make_task("true")})
        store.create_job(NewJob("job-1", "alice", parse_job(raw), 1000.0))
        with store.transaction() as tx:
            assert {row.name for row in tx.task_rows("job-1", {"a", "c"})} == {"a", "c"}
            assert len(tx.task_rows("job-1")) == 3
            counts = tx.instance_counts("job-1", {"a"})
            assert list(counts) == ["a"] and counts["a"].waiting == 2
            assert tx.task_metrics("job-1").waiting == 3
    finally:
        store.close()

from datetime import UTC, datetime, timedelta

from batchyard.domain.outcome import ErrorCode, Outcome
from batchyard.domain.retry import Verdict, decide
from batchyard.domain.scheduling import Candidate, fair_share
from batchyard.domain.states import State

OK = Outcome(exit_code=0)
BAD = Outcome(exit_code=3, error_code=ErrorCode.EXIT_CODE)


def test_success_finishes() -> None:
    assert decide(OK, 0, 0) is Verdict.FINISH
    assert Verdict.FINISH.target is State.FINISHED


def test_failure_retries_while_budget_left() -> None:
    assert decide(BAD, 0, 2) is Verdict.RETRY
    assert decide(BAD, 1, 2) is Verdict.RETRY
    assert decide(BAD, 2, 2) is Verdict.FAIL
    assert decide(BAD, 0, 0) is Verdict.FAIL


def test_timeout_is_a_failure_like_any_other() -> None:
    timed_out = Outcome(exit_code=137, error_code=ErrorCode.TIMEOUT)
    assert decide(timed_out, 0, 1) is Verdict.RETRY
    assert decide(timed_out, 1, 1) is Verdict.FAIL


def test_exit_zero_with_upload_error_is_a_failure() -> None:
    assert not Outcome(exit_code=0, error_code=ErrorCode.UPLOAD).succeeded
    assert decide(Outcome(exit_code=0, error_code=ErrorCode.UPLOAD), 0, 0) is Verdict.FAIL


def test_lost_attempt_requeues_without_budget_and_stop_discards() -> None:
    assert decide(Outcome(exit_code=None, error_code=ErrorCode.LOST), 5, 0) is Verdict.REQUEUE
    assert decide(Outcome(exit_code=None, error_code=ErrorCode.STOPPED), 0, 3) is Verdict.DISCARD


T0 = datetime(2026, 1, 1, tzinfo=UTC)


def c(job: str, priority: int, age: int, task: str = "t", index: int = 0) -> Candidate:
    return Candidate(job, priority, T0 + timedelta(seconds=age), task, index)


def test_priority_first_then_creation_time() -> None:
    low_old, high_new, mid = c("job-a", 1, 0), c("job-b", 9, 10), c("job-c", 5, 5)
    assert sorted([low_old, high_new, mid], key=Candidate.order_key)[:2] == [high_new, mid]


def test_same_priority_earlier_job_first_then_task_then_instance() -> None:
    items = [c("job-b", 0, 1, "x", 0), c("job-a", 0, 0, "z", 1), c("job-a", 0, 0, "z", 0),
             c("job-a", 0, 0, "a", 2)]
    assert sorted(items, key=Candidate.order_key) == [items[3], items[2], items[1], items[0]]


def tenant_queue(tenant: str, job: str, count: int, age: int = 0) -> list[Candidate]:
    return [Candidate(job, 0, T0 + timedelta(seconds=age), "t", index, tenant)
            for index in range(count)]


def test_fair_share_gives_each_slot_to_the_tenant_running_least() -> None:
    big = tenant_queue("alice", "job-big", 50)
    small = tenant_queue("bob", "job-small", 3, age=60)
    picked = fair_share({"alice": big, "bob": small}, {"alice": 4}, 6)
    assert [c.tenant for c in picked] == ["bob", "bob", "bob", "alice", "alice", "alice"]
    assert [c.instance_id for c in picked if c.tenant == "alice"] == [0, 1, 2]  # in order


def test_fair_share_between_equals_follows_the_launch_order() -> None:
    older = tenant_queue("alice", "job-a", 2)
    newer = tenant_queue("bob", "job-b", 2, age=5)
    picked = fair_share({"alice": older, "bob": newer, "carol": []}, {}, 10)
    assert [(c.tenant, c.instance_id) for c in picked] == [
        ("alice", 0), ("bob", 0), ("alice", 1), ("bob", 1)]
    assert fair_share({"alice": older}, {}, 0) == []


def test_fair_share_with_one_tenant_is_batchcompute_order() -> None:
    queue = sorted(tenant_queue("alice", "job-b", 3, age=1) + tenant_queue("alice", "job-a", 2),
                   key=Candidate.order_key)
    assert fair_share({"alice": queue}, {"alice": 7}, 4) == queue[:4]


def test_fair_share_gives_a_tenant_of_weight_two_twice_the_slots() -> None:
    alice = tenant_queue("alice", "job-a", 50)
    bob = tenant_queue("bob", "job-b", 50, age=60)
    picked = fair_share({"alice": alice, "bob": bob}, {}, 9, {"bob": 2.0})
    assert [c.tenant for c in picked].count("bob") == 6
    assert [c.tenant for c in picked].count("alice") == 3
    # what runs counts against the weight too: bob runs 6 already, alice 0
    picked = fair_share({"alice": alice, "bob": bob}, {"bob": 6}, 3, {"bob": 2.0})
    assert [c.tenant for c in picked] == ["alice", "alice", "alice"]


def test_a_tenant_holding_every_slot_gives_back_what_is_beyond_its_share() -> None:
    from batchyard.domain.scheduling import over_share, slot_shares

    def excess(slots: int, usage: dict[str, int], wanting: set[str],
               weights: dict[str, float] | None = None) -> dict[str, int]:
        return over_share(usage, wanting, slot_shares(slots, usage, wanting, weights))

    assert excess(4, {"alice": 4}, set()) == {}  # nobody else wants: keep them all
    assert excess(4, {"alice": 4}, {"bob"}) == {"alice": 2}
    assert slot_shares(4, {"alice": 4}, {"bob"}) == {"alice": 2, "bob": 2}
    assert excess(6, {"alice": 6}, {"bob"}, {"bob": 2.0}) == {"alice": 4}
    assert excess(4, {"alice": 2, "bob": 2}, {"bob"}) == {}  # bob has his share
    assert excess(2, {"alice": 2}, {"bob", "carol"}) == {"alice": 1}  # at least 1 each

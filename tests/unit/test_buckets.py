"""Who may use which bucket: the pure rules of `domain.buckets`."""

from __future__ import annotations

from batchyard.domain.buckets import FORBIDDEN, Grant, problems
from batchyard.domain.spec import ObjectUse

SHARED = Grant("alice", readers=frozenset({"bob"}), writers=frozenset({"carol"}))
PUBLIC = Grant("ops", readers=frozenset({"*"}))


def use(url: str, writes: bool, path: str = "DAG.Tasks.t.X") -> ObjectUse:
    return ObjectUse(path, url, writes)


def test_owners_and_writers_may_read_and_write() -> None:
    for tenant in ("alice", "carol"):
        assert SHARED.allows(tenant, writes=True) and SHARED.allows(tenant, writes=False)


def test_readers_may_only_read_and_others_nothing() -> None:
    assert SHARED.allows("bob", writes=False) and not SHARED.allows("bob", writes=True)
    assert not SHARED.allows("mallory", writes=False)
    assert PUBLIC.allows("anyone", writes=False) and not PUBLIC.allows("anyone", writes=True)


def test_each_forbidden_use_is_one_problem_naming_its_path_and_why() -> None:
    uses = [use("oss://shared/in/", False, "DAG.Tasks.t.InputMapping.oss://shared/in/"),
            use("oss://shared/out/", True, "DAG.Tasks.t.OutputMapping./out/"),
            use("oss://mine/logs/", True)]
    found = problems("bob", uses, {"shared": SHARED})
    assert [(p.code, p.path) for p in found] == [(FORBIDDEN, "DAG.Tasks.t.OutputMapping./out/")]
    assert "may only read bucket 'shared'" in found[0].rule
    found = problems("mallory", uses, {"shared": SHARED})
    assert len(found) == 2 and "belongs to another tenant" in found[0].rule


def test_buckets_nobody_configured_are_not_judged_here() -> None:
    assert problems("anyone", [use("oss://unclaimed/x", True)], {"shared": SHARED}) == []

from batchyard.domain.dag import find_cycle, ready_tasks, topological_order, upstreams
from batchyard.domain.states import State

LOG_COUNT = {"split": ["count"], "count": ["merge"]}


def test_upstreams_reverse_the_batchcompute_direction() -> None:
    graph = upstreams(["split", "count", "merge"], LOG_COUNT)
    assert graph == {"split": set(), "count": {"split"}, "merge": {"count"}}


def test_fan_out_and_fan_in() -> None:
    deps = {"split": ["c1", "c2"], "c1": ["merge"], "c2": ["merge"]}
    graph = upstreams(["split", "c1", "c2", "merge"], deps)
    assert graph["merge"] == {"c1", "c2"}
    assert topological_order(graph) == ["split", "c1", "c2", "merge"]


def test_cycle_found() -> None:
    graph = upstreams(["a", "b", "c"], {"a": ["b"], "b": ["c"], "c": ["a"]})
    cycle = find_cycle(graph)
    assert cycle is not None and set(cycle) == {"a", "b", "c"}
    assert find_cycle(upstreams(["a", "b"], {"a": ["b"]})) is None


def test_self_dependency_is_a_cycle() -> None:
    assert find_cycle(upstreams(["a"], {"a": ["a"]})) is not None


def test_ready_needs_every_upstream_finished() -> None:
    graph = upstreams(["split", "c1", "c2", "merge"],
                      {"split": ["c1", "c2"], "c1": ["merge"], "c2": ["merge"]})
    states = {"split": State.FINISHED, "c1": State.FINISHED, "c2": State.RUNNING,
              "merge": State.WAITING}
    assert ready_tasks(graph, states) == {"c2"}
    states["c2"] = State.FINISHED
    assert ready_tasks(graph, states) == {"merge"}


def test_failed_upstream_blocks_downstream() -> None:
    graph = upstreams(["a", "b"], {"a": ["b"]})
    assert ready_tasks(graph, {"a": State.FAILED, "b": State.WAITING}) == set()

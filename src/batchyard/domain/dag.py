"""The task graph of a job: edges upstream -> downstream, cycles, order, readiness."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from graphlib import CycleError, TopologicalSorter

from batchyard.domain.states import State


def upstreams(tasks: Iterable[str],
              dependencies: Mapping[str, Iterable[str]]) -> dict[str, set[str]]:
    """Map every task to the set of tasks it waits for.

    `dependencies` uses the BatchCompute direction: key = upstream task, value = downstream tasks.
    Names that are not tasks are ignored here (validation reports them).
    """
    result: dict[str, set[str]] = {name: set() for name in tasks}
    for upstream, downstreams in dependencies.items():
        for downstream in downstreams:
            if downstream in result and upstream in result:
                result[downstream].add(upstream)
    return result


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """A cycle in the graph (as a list of task names), or None when it is acyclic."""
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as error:
        cycle: list[str] = list(error.args[1])
        return cycle
    return None


def topological_order(graph: Mapping[str, set[str]]) -> list[str]:
    """Tasks ordered so that every task comes after its upstreams (ties by name)."""
    sorter = TopologicalSorter(graph)
    sorter.prepare()
    order: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready())
        order.extend(ready)
        sorter.done(*ready)
    return order


def ready_tasks(graph: Mapping[str, set[str]], task_states: Mapping[str, State]) -> set[str]:
    """Tasks that are not terminal and whose every upstream task is Finished."""
    return {
        name
        for name, ups in graph.items()
        if task_states[name] in (State.WAITING, State.RUNNING)
        and all(task_states[up] is State.FINISHED for up in ups)
    }

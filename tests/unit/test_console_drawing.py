"""The console's drawings (batchyard.console.drawing): layout of the DAG, the SVG it makes,
the bars, the heat-map, and the escaping of everything a tenant wrote."""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest
from markupsafe import Markup

from batchyard.console.drawing import (
    MIN_SHARE,
    TaskNode,
    dag_svg,
    heat_map,
    layers,
    progress_bar,
    segments,
    shorten,
    state_legend,
    task_nodes,
)
from batchyard.domain.derivation import Metrics
from batchyard.domain.records import TaskRecord
from batchyard.domain.states import State

SVG = "{http://www.w3.org/2000/svg}"


def node(name: str, *depends_on: str, state: State = State.WAITING,
         counts: Metrics | None = None) -> TaskNode:
    counts = counts if counts is not None else Metrics(waiting=1)
    return TaskNode(name, state, counts, counts.total, tuple(depends_on))


def parsed(markup: Markup) -> ET.Element:
    return ET.fromstring(str(markup))


def crossings(order: list[list[str]], nodes: list[TaskNode]) -> int:
    """Crossing edges between adjacent columns, counted pair by pair."""
    column = {name: at for at, layer in enumerate(order) for name in layer}
    row = {name: at for layer in order for at, name in enumerate(layer)}
    edges = [(up, n.name) for n in nodes for up in n.depends_on
             if column[n.name] == column[up] + 1]
    return sum(1 for (a, b) in edges for (c, d) in edges
               if column[a] == column[c] and row[a] < row[c] and row[b] > row[d])


# ---- layout ---------------------------------------------------------------------------------


def test_a_chain_is_one_task_per_column() -> None:
    nodes = [node("merge", "count"), node("count", "split"), node("split")]
    assert layers(nodes) == [["split"], ["count"], ["merge"]]


def test_a_diamond_has_its_two_branches_in_the_middle_column() -> None:
    nodes = [node("split"), node("right", "split"), node("left", "split"),
             node("merge", "left", "right")]
    assert layers(nodes) == [["split"], ["left", "right"], ["merge"]]


def test_a_wide_fan_out_keeps_the_children_in_one_column_by_name() -> None:
    children = [f"part-{number:03d}" for number in range(200)]
    nodes = [node("root"), *(node(name, "root") for name in reversed(children))]
    assert layers(nodes) == [["root"], children]


def test_a_task_goes_after_its_longest_chain_of_upstreams() -> None:
    # c waits for a directly and through b: it sits after b, not beside it.
    nodes = [node("a"), node("b", "a"), node("c", "a", "b"), node("d")]
    assert layers(nodes) == [["a", "d"], ["b"], ["c"]]


def test_sweeps_untangle_crossed_edges() -> None:
    # By name the columns are [a, b] and [x, y] with a→y and b→x: one crossing.
    nodes = [node("a"), node("b"), node("x", "b"), node("y", "a")]
    order = layers(nodes)
    assert order == [["a", "b"], ["y", "x"]]
    assert crossings(order, nodes) == 0
    assert crossings([["a", "b"], ["x", "y"]], nodes) == 1


def test_sweeps_reduce_crossings_of_a_crafted_three_column_graph() -> None:
    # A column of three whose children are listed in the reverse order of their parents.
    nodes = [node("p1"), node("p2"), node("p3"),
             node("c3", "p1"), node("c2", "p2"), node("c1", "p3"),
             node("g1", "c3"), node("g2", "c2"), node("g3", "c1")]
    by_name = [["p1", "p2", "p3"], ["c1", "c2", "c3"], ["g1", "g2", "g3"]]
    assert crossings(by_name, nodes) == 6
    order = layers(nodes)
    assert crossings(order, nodes) == 0
    assert order[0] == ["p1", "p2", "p3"]
    assert order[1] == ["c3", "c2", "c1"]


def test_layout_never_has_more_crossings_than_the_order_by_name() -> None:
    chooser = random.Random(7)
    names = [f"t{number:02d}" for number in range(40)]
    nodes = [node(name, *chooser.sample(names[:at], min(at, chooser.randint(0, 3))))
             for at, name in enumerate(names)]
    order = layers(nodes)
    by_name = [sorted(layer) for layer in order]
    assert sorted(map(sorted, order)) == sorted(by_name)
    assert crossings(order, nodes) <= crossings(by_name, nodes)
    assert layers(list(reversed(nodes))) == order  # deterministic, whatever the input order


def test_a_cycle_does_not_loop_forever() -> None:
    nodes = [node("a", "c"), node("b", "a"), node("c", "b"), node("d", "d"), node("e", "a")]
    order = layers(nodes)
    assert sorted(name for layer in order for name in layer) == ["a", "b", "c", "d", "e"]
    assert order[0] == ["a", "d"]


def test_unknown_upstreams_are_ignored() -> None:
    assert layers([node("a", "ghost"), node("b", "a")]) == [["a"], ["b"]]


def test_no_tasks_no_layers() -> None:
    assert layers([]) == []
    assert "no tasks" in dag_svg([], lambda name: name)


def test_500_tasks_lay_out_with_every_task_after_its_upstreams() -> None:
    chooser = random.Random(13)
    names = [f"task-{number:03d}" for number in range(500)]
    nodes = [node(name, *chooser.sample(names[:at], min(at, chooser.randint(0, 4))))
             for at, name in enumerate(names)]
    order = layers(nodes)
    column = {name: at for at, layer in enumerate(order) for name in layer}
    assert len(column) == 500
    assert all(column[up] < column[n.name] for n in nodes for up in n.depends_on)
    svg = parsed(dag_svg(nodes, lambda name: f"#{name}"))
    assert len(svg.findall(f"{SVG}a")) == 500


# ---- nodes from a job -----------------------------------------------------------------------


def record(name: str, state: State, counts: Metrics) -> TaskRecord:
    return TaskRecord(job_id="job-1", name=name, state=state, started=datetime.now(UTC),
                      ended=None, instance_metrics=counts)


def test_task_nodes_turn_the_batchcompute_dependencies_round() -> None:
    description = {"DAG": {
        "Tasks": {"split": {"InstanceCount": 1}, "count": {"InstanceCount": 20},
                  "merge": {"InstanceCount": 1}},
        "Dependencies": {"split": ["count"], "count": ["merge"]}}}
    tasks = [record("split", State.FINISHED, Metrics(finished=1)),
             record("count", State.RUNNING, Metrics(finished=12, running=8))]
    nodes = {n.name: n for n in task_nodes(description, tasks)}
    assert nodes["count"].depends_on == ("split",)
    assert nodes["merge"].depends_on == ("count",)
    assert nodes["split"].depends_on == ()
    assert nodes["count"].state is State.RUNNING
    assert nodes["count"].counts == Metrics(finished=12, running=8)
    assert nodes["count"].instance_count == 20
    # merge has no record: Waiting, nothing counted, its InstanceCount from the description
    assert nodes["merge"] == TaskNode("merge", State.WAITING, Metrics(), 1, ("count",))


@pytest.mark.parametrize("description", [
    {}, {"DAG": "x"}, {"DAG": {"Tasks": ["a"]}},
    {"DAG": {"Tasks": {"a": {"InstanceCount": "many"}}, "Dependencies": {"a": "b"}}},
    {"DAG": {"Tasks": {"a": 1}, "Dependencies": {"a": [1, None, "a"]}}},
])
def test_task_nodes_survive_a_strange_description(description: dict[str, object]) -> None:
    nodes = task_nodes(description, [record("a", State.RUNNING, Metrics(running=2))])
    assert [(n.name, n.state, n.instance_count) for n in nodes] == [("a", State.RUNNING, 2)]
    assert layers(nodes) == [["a"]]


# ---- the DAG as SVG -------------------------------------------------------------------------


def test_the_dag_is_well_formed_svg_with_a_node_per_task_and_an_edge_per_dependency() -> None:
    nodes = [node("split", state=State.FINISHED, counts=Metrics(finished=1)),
             node("count", "split", state=State.RUNNING,
                  counts=Metrics(finished=12, running=3, waiting=4, failed=1)),
             node("merge", "count")]
    svg = parsed(dag_svg(nodes, lambda name: f"/console/jobs/job-1?task={name}#instances"))
    assert svg.tag == f"{SVG}svg"
    assert svg.get("viewBox", "").startswith("0 0 ")
    assert svg.get("aria-label")
    links = svg.findall(f"{SVG}a")
    assert [a.get("href") for a in links] == [
        f"/console/jobs/job-1?task={name}#instances" for name in ("split", "count", "merge")]
    assert [a.get("class") for a in links] == [
        "node state-finished", "node state-running", "node state-waiting"]
    assert len(svg.findall(f"{SVG}path[@class='edge']")) == 2
    count = links[1]
    assert count.findtext(f"{SVG}title", "").startswith("count: Running; 12 of 20 finished")
    texts = ["".join(t.itertext()) for t in count.iter(f"{SVG}text")]
    assert texts == ["count", "Running", "12/20 finished", "1 failed · 3 running · 4 waiting"]
    failed = next(count.iter(f"{SVG}tspan"), None)
    assert failed is not None and failed.get("class") == "state-text-failed"
    segment_classes = [r.get("class") for r in count.findall(f"{SVG}rect")][2:]
    assert segment_classes == ["seg state-finished", "seg state-running", "seg state-waiting",
                               "seg state-failed"]


def test_columns_go_left_to_right() -> None:
    svg = parsed(dag_svg([node("a"), node("b", "a")], lambda name: name))
    a, b = (float(box.get("x", "nan")) for box in svg.iter(f"{SVG}rect")
            if box.get("class") == "box")
    assert a < b


def test_a_task_of_100000_instances_is_one_node() -> None:
    counts = Metrics(finished=60_000, running=1_000, waiting=38_999, failed=1)
    svg = dag_svg([TaskNode("count", State.RUNNING, counts, 100_000, ())], lambda name: "#")
    tree = parsed(svg)
    assert len(tree.findall(f"{SVG}a")) == 1
    assert len(list(tree.iter(f"{SVG}rect"))) == 1 + 1 + 4  # box, track, four segments
    assert "60000/100000 finished" in svg
    others = [t for t in tree.iter(f"{SVG}text") if t.get("class") == "others"]
    assert ["".join(t.itertext()) for t in others] == ["1 failed · 1000 running"]
    assert len(svg) < 4_000


def test_the_line_of_unfinished_counts_stops_before_it_overflows() -> None:
    counts = Metrics(failed=12_345, running=67_890, waiting=38_999, stopped=11_111)
    tree = parsed(dag_svg([TaskNode("t", State.RUNNING, counts, 130_345, ())], lambda n: "#"))
    others = [t for t in tree.iter(f"{SVG}text") if t.get("class") == "others"]
    assert ["".join(t.itertext()) for t in others] == ["12345 failed · 67890 running"]


def test_a_script_in_a_task_name_or_link_is_text() -> None:
    name = "<script>alert(1)</script>"
    svg = dag_svg([node(name), node("next", name)],
                  lambda task: f'/x?task={task}&"quoted"')
    assert "<script" not in svg
    tree = parsed(svg)
    titles = [a.findtext(f"{SVG}title", "") for a in tree.findall(f"{SVG}a")]
    assert any(title.startswith(name + ": Waiting") for title in titles)
    assert f'/x?task={name}&"quoted"' in [a.get("href") for a in tree.findall(f"{SVG}a")]


def test_a_long_name_is_cut_in_the_box_and_whole_in_the_tooltip() -> None:
    name = "a-very-long-task-name-that-does-not-fit-in-a-box"
    tree = parsed(dag_svg([node(name)], lambda task: "#"))
    link = tree.find(f"{SVG}a")
    assert link is not None
    shown = "".join(next(link.iter(f"{SVG}text")).itertext())
    assert shown.endswith("…") and len(shown) <= 25 and name.startswith(shown[:-1])
    assert link.findtext(f"{SVG}title", "").startswith(name)


def test_shorten_counts_wide_characters_twice() -> None:
    assert shorten("abc", 3) == "abc"
    assert shorten("abcd", 3) == "ab…"
    assert shorten("日本語の処理", 6) == "日本…"
    assert shorten("日本語", 6) == "日本語"


def test_a_wide_dag_is_marked_to_scroll_on_a_phone() -> None:
    small = parsed(dag_svg([node("a")], lambda name: "#"))
    chain = parsed(dag_svg([node("a"), node("b", "a"), node("c", "b")], lambda name: "#"))
    assert small.get("class") == "dag"
    assert chain.get("class") == "dag wide"


# ---- bars -----------------------------------------------------------------------------------


def bar_widths(markup: Markup) -> dict[str, tuple[float, float]]:
    """The x and width of each segment of a progress bar (the svg before its hidden text)."""
    svg = ET.fromstring(str(markup).split("<span")[0])
    return {rect.get("class", ""): (float(rect.get("x", "nan")), float(rect.get("width", "nan")))
            for rect in svg.iter("rect") if "seg" in rect.get("class", "")}


def test_bar_widths_are_proportional_to_the_counts() -> None:
    bar = progress_bar(Metrics(finished=12, running=3, waiting=4, failed=1), 20)
    assert bar_widths(bar) == {"seg state-finished": (0, 60), "seg state-running": (60, 15),
                               "seg state-waiting": (75, 20), "seg state-failed": (95, 5)}
    assert "12 of 20 finished, 3 running, 4 waiting, 1 failed" in bar
    assert 'class="sr-only"' in bar
    assert "style=" not in bar


def test_a_bar_leaves_room_for_instances_it_was_not_told_about() -> None:
    assert bar_widths(progress_bar(Metrics(finished=5), 20)) == {
        "seg state-finished": (0, 25)}
    assert bar_widths(progress_bar(Metrics(), 0)) == {}


def test_one_failure_among_100000_still_shows() -> None:
    parts = segments(Metrics(finished=99_999, failed=1), 100_000)
    assert [(state, count) for state, count, _ in parts] == [
        (State.FINISHED, 99_999), (State.FAILED, 1)]
    assert parts[1][2] == MIN_SHARE
    assert sum(share for _, _, share in parts) == pytest.approx(1)
    widths = bar_widths(progress_bar(Metrics(finished=1, failed=1), 100_000))
    assert widths["seg state-failed"][1] == 100 * MIN_SHARE


# ---- the heat-map and the key ---------------------------------------------------------------


def test_the_heat_map_is_a_cell_per_instance_in_id_order() -> None:
    states = [State.FINISHED, State.FAILED, State.RUNNING, State.WAITING, State.STOPPED]
    cells = [(number, states[number % 5]) for number in range(1000, 1120)]
    random.Random(3).shuffle(cells)
    svg = heat_map(cells, lambda number: f"/console/jobs/job-1/tasks/count/instances/{number}")
    tree = parsed(svg)
    links = tree.findall(f"{SVG}a")
    assert len(links) == 120
    assert [a.get("href") for a in links] == [
        f"/console/jobs/job-1/tasks/count/instances/{number}" for number in range(1000, 1120)]
    rects = [a.find(f"{SVG}rect") for a in links]
    assert all(rect is not None for rect in rects)
    assert [r.get("class") for r in rects if r is not None][:5] == [
        "cell state-finished", "cell state-failed", "cell state-running", "cell state-waiting",
        "cell state-stopped"]
    cell_57 = rects[57]
    assert cell_57 is not None
    assert (cell_57.get("x"), cell_57.get("y")) == (str(7 * 14), "14")  # row 2, column 8
    assert cell_57.findtext(f"{SVG}title") == "instance 1057: Running"
    assert tree.get("viewBox") == f"0 0 {50 * 14 - 2} {3 * 14 - 2}"


def test_the_heat_map_of_a_few_instances_is_narrow_and_escapes_its_links() -> None:
    tree = parsed(heat_map([(0, State.RUNNING)], lambda number: f'/i/{number}?a=<b>&"c"'))
    assert tree.get("viewBox") == "0 0 12 12"
    link = tree.find(f"{SVG}a")
    assert link is not None and link.get("href") == '/i/0?a=<b>&"c"'
    assert "empty" in heat_map([], lambda number: "#")
    with pytest.raises(ValueError, match="columns"):
        heat_map([(0, State.RUNNING)], lambda number: "#", columns=0)


def test_the_legend_names_every_state_with_its_colour_class() -> None:
    legend = ET.fromstring(str(state_legend()))
    items = legend.findall("li")
    assert ["".join(item.itertext()) for item in items] == [
        "Finished", "Running", "Waiting", "Failed", "Stopped"]
    assert [item[0].get("class") for item in items] == [
        f"swatch state-{name}" for name in ("finished", "running", "waiting", "failed",
                                            "stopped")]
    assert all(item.get("title") for item in items)

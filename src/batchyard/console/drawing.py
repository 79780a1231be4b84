"""The pictures of the console, drawn on the server as SVG: the task DAG, the per-state
instance bars, the instance heat-map and the colour key.

Pure functions of plain values (no I/O, no web framework) returning `markupsafe.Markup`.
Every string a tenant wrote (task names) and every link is escaped here, so a template may
insert the result as it is. Colours come only from the CSS classes `state-waiting`,
`state-running`, `state-finished`, `state-failed` and `state-stopped` (console.css), the
same classes the badges use; the drawings carry no inline style (the console's
Content-Security-Policy forbids it) — sizes are SVG attributes.

The DAG has one node per task, never one per instance (a DOM node per instance is what
makes other consoles hang on big jobs): each node shows the task's state and a bar of its
instances by state. Its layout is a small layered one, read left to right: a task's column
is the length of the longest chain of tasks it waits for, and a few barycentre sweeps order
each column to reduce crossing edges.
"""

from __future__ import annotations

import unicodedata
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup

from batchyard.domain.dag import upstreams
from batchyard.domain.derivation import Metrics
from batchyard.domain.records import TaskRecord
from batchyard.domain.states import MEANINGS, State

BAR_ORDER = (State.FINISHED, State.RUNNING, State.WAITING, State.FAILED, State.STOPPED)
"""The order of the segments of every bar, left to right."""
MIN_SHARE = 0.01
"""The narrowest segment of a bar (a share of its width), so that one failed instance among
100,000 still shows; the widest segment gives up what the narrow ones gain."""
SWEEPS = 4
"""Barycentre sweeps (each one down and one up) of the layout."""

NODE_WIDTH, NODE_HEIGHT = 240, 86
COLUMN_GAP, ROW_GAP, MARGIN = 64, 20, 8
NAME_WIDTH = 25
"""Characters of a task name in its node (a wide character counts as two); longer names
end with … and are whole in the node's tooltip."""
OTHERS_WIDTH = 34
"""Characters of a node's third line (`1 failed · 3 running · 4 waiting`)."""
WIDE_DAG = 720
"""A DAG wider than this (in pixels at natural size) is marked `wide`: on a narrow screen
it scrolls sideways rather than shrinking past reading."""
CELL, CELL_GAP = 12, 2


@dataclass(frozen=True)
class TaskNode:
    """One task of a job as the DAG draws it.

    `depends_on` names the tasks this one waits for. BatchCompute's `DAG.Dependencies` goes
    the other way: it maps a task to the tasks that run AFTER it, so `{"split": ["count"]}`
    gives count `depends_on=("split",)`. `task_nodes` does the turning round.
    """

    name: str
    state: State
    counts: Metrics
    instance_count: int
    depends_on: tuple[str, ...]


def task_nodes(description: Mapping[str, Any], tasks: Sequence[TaskRecord]) -> list[TaskNode]:
    """The DAG nodes of a job from its description (`description["DAG"]["Tasks"]` and
    `["DAG"]["Dependencies"]`) and its task records. A task of the description that has no
    record (it should not happen) shows as Waiting with no instances counted."""
    dag = _mapping(description.get("DAG"))
    specs = _mapping(dag.get("Tasks"))
    records = {record.name: record for record in tasks}
    names = sorted({*specs, *records})
    dependencies = {upstream: [name for name in downstreams if isinstance(name, str)]
                    for upstream, downstreams in _mapping(dag.get("Dependencies")).items()
                    if isinstance(downstreams, list | tuple)}
    waits_for = upstreams(names, dependencies)
    return [_node(name, records.get(name), _mapping(specs.get(name)), waits_for[name])
            for name in names]


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _node(name: str, record: TaskRecord | None, spec: Mapping[str, Any],
          depends_on: Iterable[str]) -> TaskNode:
    counts = record.instance_metrics if record is not None else Metrics()
    declared = spec.get("InstanceCount")
    fallback = declared if isinstance(declared, int) and not isinstance(declared, bool) else 0
    return TaskNode(name=name, state=record.state if record is not None else State.WAITING,
                    counts=counts, instance_count=counts.total or fallback,
                    depends_on=tuple(sorted(depends_on)))


# ---- layout ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Graph:
    ups: dict[str, list[str]]
    downs: dict[str, list[str]]


def _graph(nodes: Iterable[TaskNode]) -> _Graph:
    """Both directions of the edges between known tasks (unknown names are dropped)."""
    listed = list(nodes)
    ups: dict[str, list[str]] = {node.name: [] for node in listed}
    downs: dict[str, list[str]] = {node.name: [] for node in listed}
    for node in listed:
        for upstream in dict.fromkeys(node.depends_on):
            if upstream in ups and upstream != node.name:
                ups[node.name].append(upstream)
                downs[upstream].append(node.name)
    return _Graph(ups, downs)


def _ranks(graph: _Graph) -> dict[str, int]:
    """Longest-path layering from the roots: a task's column is one more than the highest
    column of the tasks it waits for. O(V+E). A cycle (the spec refuses them) is broken at
    its first name instead of looping."""
    missing = {name: len(ups) for name, ups in graph.ups.items()}
    rank: dict[str, int] = {}
    ready = deque(sorted(name for name, count in missing.items() if count == 0))
    spare = iter(sorted(missing))
    while len(rank) < len(missing):
        if not ready:
            ready.append(next(name for name in spare if name not in rank))
        name = ready.popleft()
        rank[name] = 1 + max((rank[up] for up in graph.ups[name] if up in rank), default=-1)
        for down in graph.downs[name]:
            missing[down] -= 1
            if missing[down] == 0 and down not in rank:
                ready.append(down)
    return rank


def layers(nodes: Iterable[TaskNode]) -> list[list[str]]:
    """The columns of the DAG, left to right, each ordered top to bottom: longest-path
    layering, then barycentre sweeps (a task moves towards the mean position of its
    neighbours in the columns already placed; ties by name), keeping the order with the
    fewest crossings between adjacent columns. Deterministic; O(V+E) (plus a sort of each
    column) per sweep."""
    graph = _graph(nodes)
    rank = _ranks(graph)
    order: list[list[str]] = [[] for _ in range(1 + max(rank.values(), default=-1))]
    for name in sorted(rank):
        order[rank[name]].append(name)
    best, fewest = [list(layer) for layer in order], _crossings(order, graph, rank)
    for _ in range(SWEEPS):
        if fewest == 0:
            break
        _sweep(order, graph.ups, range(1, len(order)))
        _sweep(order, graph.downs, range(len(order) - 2, -1, -1))
        crossings = _crossings(order, graph, rank)
        if crossings < fewest:
            best, fewest = [list(layer) for layer in order], crossings
    return best


def _positions(order: Sequence[Sequence[str]]) -> dict[str, float]:
    """Each task's place in its column as a share of the column (comparable across columns
    of different lengths)."""
    return {name: (index + 0.5) / len(layer)
            for layer in order for index, name in enumerate(layer)}


def _sweep(order: list[list[str]], neighbours: Mapping[str, list[str]],
           columns: Iterable[int]) -> None:
    position = _positions(order)
    for column in columns:
        layer = order[column]

        def key(name: str, position: dict[str, float] = position) -> tuple[float, str]:
            near = neighbours[name]
            if not near:
                return position[name], name
            return sum(position[other] for other in near) / len(near), name

        layer.sort(key=key)
        for index, name in enumerate(layer):
            position[name] = (index + 0.5) / len(layer)


def _crossings(order: Sequence[Sequence[str]], graph: _Graph, rank: Mapping[str, int]) -> int:
    """Pairs of crossing edges between adjacent columns (edges that skip columns are not
    counted). O(E log V) with a Fenwick tree."""
    index = {name: place for layer in order for place, name in enumerate(layer)}
    total = 0
    for column in range(len(order) - 1):
        edges = sorted((index[up], index[down]) for up in order[column]
                       for down in graph.downs[up] if rank[down] == column + 1)
        total += _inversions([down for _, down in edges], len(order[column + 1]))
    return total


def _inversions(values: Sequence[int], size: int) -> int:
    """How many pairs i < j have values[i] > values[j] (values in range(size))."""
    tree = [0] * (size + 1)
    count = 0
    for seen, value in enumerate(values):
        slot, not_above = value + 1, 0
        while slot > 0:
            not_above += tree[slot]
            slot -= slot & -slot
        count += seen - not_above
        slot = value + 1
        while slot <= size:
            tree[slot] += 1
            slot += slot & -slot
    return count


# ---- bars -----------------------------------------------------------------------------------


def _number(value: float) -> str:
    """A coordinate with at most three decimals and no trailing zeros."""
    return f"{value:.3f}".rstrip("0").rstrip(".")


def segments(counts: Metrics, total: int) -> list[tuple[State, int, float]]:
    """The segments of a bar: (state, count, share of the width), in BAR_ORDER, only states
    with instances. Shares are proportional to the counts (of `total`, or of the counts' sum
    if that is larger); a non-zero share below MIN_SHARE is widened to it, taken from the
    empty rest of the bar or else from the widest segment."""
    whole = max(total, counts.total)
    if whole <= 0:
        return []
    parts = [(state, counts.count(state), counts.count(state) / whole) for state in BAR_ORDER
             if counts.count(state)]
    lift = sum(MIN_SHARE - share for _, _, share in parts if share < MIN_SHARE)
    if lift <= 0:
        return parts
    widened = [(state, count, max(share, MIN_SHARE)) for state, count, share in parts]
    if 1 - sum(share for _, _, share in parts) >= lift:  # the empty rest of the bar gives
        return widened
    widest = max(range(len(parts)), key=lambda at: parts[at][2])
    if parts[widest][2] - lift < MIN_SHARE:
        return parts
    return [(state, count, share - lift if at == widest else share)
            for at, (state, count, share) in enumerate(widened)]


def _bar_rects(counts: Metrics, total: int, left: float, top: float, width: float,
               height: float) -> Markup:
    rects = [Markup('<rect class="track" x="{0}" y="{1}" width="{2}" height="{3}"/>').format(
        _number(left), _number(top), _number(width), _number(height))]
    x = left
    for state, count, share in segments(counts, total):
        rects.append(Markup(
            '<rect class="seg state-{0}" x="{1}" y="{2}" width="{3}" height="{4}">'
            "<title>{5} {0}</title></rect>").format(
            state.value.lower(), _number(x), _number(top), _number(share * width),
            _number(height), count))
        x += share * width
    return Markup("").join(rects)


def count_text(counts: Metrics, total: int) -> str:
    """`12 of 20 finished, 3 running, 5 waiting` (the states with instances)."""
    whole = max(total, counts.total)
    others = [f"{counts.count(state)} {state.value.lower()}" for state in BAR_ORDER[1:]
              if counts.count(state)]
    return ", ".join([f"{counts.finished} of {whole} finished", *others])


def progress_bar(counts: Metrics, total: int) -> Markup:
    """A small bar of instances by state (an inline SVG: CSP allows no inline style), with
    the counts as visually hidden text for screen readers."""
    return Markup(
        '<svg class="bar" viewBox="0 0 100 8" preserveAspectRatio="none" width="100" '
        'height="8" aria-hidden="true" focusable="false">{0}</svg>'
        '<span class="sr-only">{1}</span>').format(
        _bar_rects(counts, total, 0, 0, 100, 8), count_text(counts, total))


# ---- the DAG --------------------------------------------------------------------------------


def shorten(text: str, width: int = NAME_WIDTH) -> str:
    """`text` cut to `width` columns (East Asian wide characters count two) ending with …"""
    used = 0
    for at, character in enumerate(text):
        used += 2 if unicodedata.east_asian_width(character) in "WF" else 1
        if used > width:
            return text[:max(at - 1, 0)] + "…"
    return text


def _places(order: Sequence[Sequence[str]]) -> tuple[dict[str, tuple[int, int]], int, int]:
    """Top-left corner of each node (columns centred vertically) and the drawing's size."""
    tallest = max((len(layer) for layer in order), default=0)
    pitch = NODE_HEIGHT + ROW_GAP
    places: dict[str, tuple[int, int]] = {}
    for column, layer in enumerate(order):
        top = MARGIN + (tallest - len(layer)) * pitch // 2
        for row, name in enumerate(layer):
            places[name] = (MARGIN + column * (NODE_WIDTH + COLUMN_GAP), top + row * pitch)
    width = 2 * MARGIN + len(order) * NODE_WIDTH + max(len(order) - 1, 0) * COLUMN_GAP
    return places, width, 2 * MARGIN + tallest * pitch - ROW_GAP


def _edge(start: tuple[int, int], end: tuple[int, int]) -> Markup:
    x1, y1 = start[0] + NODE_WIDTH, start[1] + NODE_HEIGHT // 2
    x2, y2 = end[0] - 2, end[1] + NODE_HEIGHT // 2
    bend = max((x2 - x1) // 2, COLUMN_GAP // 2)
    return Markup('<path class="edge" d="M{0} {1} C{2} {1}, {3} {4}, {5} {4}" '
                  'marker-end="url(#dag-arrow)"/>').format(x1, y1, x1 + bend, x2 - bend, y2, x2)


def _others(counts: Metrics) -> Markup:
    """The third line of a node: the instances not finished, failed first (in its colour)."""
    parts = [(state, counts.count(state)) for state in
             (State.FAILED, State.RUNNING, State.WAITING, State.STOPPED) if counts.count(state)]
    texts: list[Markup] = []
    used = 0
    for state, count in parts:
        text = f"{' · ' if texts else ''}{count} {state.value.lower()}"
        used += len(text)
        if used > OTHERS_WIDTH:
            break
        texts.append(Markup('<tspan class="state-text-{0}">{1}</tspan>').format(
            state.value.lower(), text))
    return Markup("").join(texts)


def _task_box(node: TaskNode, corner: tuple[int, int], href: str) -> Markup:
    x, y = corner
    counts = node.counts
    return Markup(
        '<a href="{href}" class="node state-{key}"><title>{name}: {state}; {summary}</title>'
        '<rect class="box" x="{x}" y="{y}" width="{width}" height="{height}" rx="8"/>'
        '<svg x="{left}" y="{y}" width="{inner}" height="{height}">'  # clips a too wide name
        '<text class="name" x="0" y="24">{short}</text></svg>'
        '<text class="state" x="{left}" y="{line2}">{state}</text>'
        '<text class="count" x="{right}" y="{line2}" text-anchor="end">'
        "{finished}/{total} finished</text>{bar}"
        '<text class="others" x="{left}" y="{line3}">{others}</text></a>').format(
        href=href, key=node.state.value.lower(), name=node.name, state=node.state.value,
        summary=count_text(counts, node.instance_count), x=x, y=y, width=NODE_WIDTH,
        height=NODE_HEIGHT, left=x + 12, inner=NODE_WIDTH - 24, short=shorten(node.name),
        line2=y + 44, right=x + NODE_WIDTH - 12, finished=counts.finished,
        total=node.instance_count, line3=y + 76, others=_others(counts),
        bar=_bar_rects(counts, node.instance_count, x + 12, y + 52, NODE_WIDTH - 24, 8))


def dag_svg(nodes: Sequence[TaskNode], link: Callable[[str], str]) -> Markup:
    """The job's DAG as one `<svg>`: a box per task (name, state, `12/20 finished`, a bar of
    its instances by state, all counts in its tooltip) linking to `link(name)`, and a curve
    with an arrow head from each task to each task that waits for it. It is drawn at its
    natural size and shrinks to the width of its container (console.css)."""
    if not nodes:
        return Markup('<p class="empty">This job has no tasks.</p>')
    order = layers(nodes)
    places, width, height = _places(order)
    edges = [_edge(places[up], places[node.name]) for node in sorted(nodes, key=_name)
             for up in dict.fromkeys(node.depends_on) if up in places and up != node.name]
    by_name = {node.name: node for node in nodes}
    boxes = [_task_box(by_name[name], places[name], link(name))  # keyboard order = columns
             for layer in order for name in layer]
    wide = " wide" if width > WIDE_DAG else ""
    return Markup(
        '<svg xmlns="http://www.w3.org/2000/svg" class="dag{0}" viewBox="0 0 {1} {2}" '
        'width="{1}" height="{2}" role="group" aria-label="{3}">'
        '<defs><marker id="dag-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto"><path class="arrow-head" d="M0 0 L10 5 L0 10 z"/>'
        "</marker></defs>{4}{5}</svg>").format(
        wide, width, height,
        f"Task graph: {len(nodes)} task{'s' if len(nodes) != 1 else ''}, "
        f"{len(edges)} dependenc{'ies' if len(edges) != 1 else 'y'}, left to right",
        Markup("").join(edges), Markup("").join(boxes))


def _name(node: TaskNode) -> str:
    return node.name


# ---- the heat-map and the key ---------------------------------------------------------------


def heat_map(cells: Sequence[tuple[int, State]], link: Callable[[int], str],
             columns: int = 50) -> Markup:
    """One page of a task's instances (≤ 1,000 cells) as one `<svg>`: a square per instance,
    `columns` a row, in instance-id order, coloured by state, each a link to `link(id)`
    with the id and state as its tooltip."""
    if columns < 1:
        raise ValueError(f"columns must be at least 1, not {columns}")
    ordered = sorted(cells, key=lambda cell: cell[0])
    if not ordered:
        return Markup('<p class="empty">No instances here.</p>')
    pitch = CELL + CELL_GAP
    wide = min(columns, len(ordered))
    width, height = wide * pitch - CELL_GAP, -(-len(ordered) // columns) * pitch - CELL_GAP
    squares = [Markup(
        '<a href="{0}"><rect class="cell state-{1}" x="{2}" y="{3}" width="{4}" height="{4}" '
        'rx="2"><title>instance {5}: {6}</title></rect></a>').format(
        link(number), state.value.lower(), (at % columns) * pitch, (at // columns) * pitch,
        CELL, number, state.value) for at, (number, state) in enumerate(ordered)]
    label = (f"Instances {ordered[0][0]} to {ordered[-1][0]} by state, {columns} a row; "
             "each square links to its instance")
    return Markup('<svg xmlns="http://www.w3.org/2000/svg" class="heatmap" '
                  'viewBox="0 0 {0} {1}" width="{0}" height="{1}" role="group" '
                  'aria-label="{2}">{3}</svg>').format(width, height, label,
                                                      Markup("").join(squares))


def state_legend() -> Markup:
    """The colour key: a swatch and the name of each state, its meaning as a tooltip."""
    items = [Markup('<li title="{0}"><span class="swatch state-{1}" aria-hidden="true"></span>'
                    "{2}</li>").format(MEANINGS[state], state.value.lower(), state.value)
             for state in BAR_ORDER]
    return Markup('<ul class="legend" aria-label="Colours of the states">{0}</ul>').format(
        Markup("").join(items))


__all__ = ["TaskNode", "count_text", "dag_svg", "heat_map", "layers", "progress_bar",
           "segments", "shorten", "state_legend", "task_nodes"]

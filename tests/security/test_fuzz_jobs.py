"""Fuzzing POST /jobs with mutations of a valid job: the server never answers 5xx.

Each body is a valid one-task job (running `true`) with one to three mutations at random
places: a value replaced or added (deep nesting, huge and negative numbers, floats, NaN and
Infinity and 1e400 as raw JSON text, NUL bytes, any unicode including lone surrogates,
objects, arrays, null, booleans — every kind where another is expected), or a field deleted.
The JSON is sent with non-ASCII escaped or as raw UTF-8 (lone surrogates as their
surrogatepass bytes). Every answer must be below 500 and JSON with a `Code` unless the job
was created; created jobs are stopped and deleted. Derandomized, so every run is the same.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.security.conftest import job, wait_for_state

BASE = job("true")
FIELDS = ["Name", "Description", "Priority", "Type", "JobFailOnInstanceFail", "AutoRelease",
          "Notification", "DAG", "Tasks", "Dependencies", "InstanceCount", "MaxRetryCount",
          "Timeout", "ClusterId", "AutoCluster", "Parameters", "Command", "CommandLine",
          "PackagePath", "EnvVars", "Docker", "Image", "InputMappingConfig", "Locale",
          "StdoutRedirectPath", "StderrRedirectPath", "InputMapping", "OutputMapping",
          "LogMapping", "Mounts", "Entries", "Source", "Destination", "WriteSupport"]
"""Known field names, so that mutations also add fields where they mean something."""


@dataclass(frozen=True)
class RawJson:
    """JSON text put into the body as is (numbers Python's json would not write)."""

    text: str


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in the (small, shallow) base job."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))


PATHS = list(_paths(BASE))
any_text = st.text(st.characters(blacklist_categories=()), max_size=20)
keys = st.one_of(st.sampled_from(FIELDS), any_text, st.sampled_from(["", "\0", "A=B", "\ud800"]))
scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 10**400, -(10**400), 0, -1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["1e400", "-1e400", "NaN", "Infinity", "-Infinity", "-0", "1E+2",
                     "1" + "0" * 5000]).map(RawJson),
    any_text,
    st.sampled_from(["", "\0", "true\0", "oss://mallory-logs/../alice/", "oss://b/a\\b/",
                     "oss://mallory-logs/logs/", "/home/in", "\ud800\udc00", "\udfff",
                     "x" * 140_000]),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=3),
                               st.dictionaries(keys, children, max_size=3)),
    max_leaves=8)


def nested(levels: int, leaf: Any, as_list: bool) -> Any:
    for _ in range(levels):
        leaf = [leaf] if as_list else {"x": leaf}
    return leaf


deep = st.builds(nested, st.integers(1, 1_200), scalars, st.booleans())
mutations = st.tuples(st.sampled_from(["set", "add", "delete"]), st.sampled_from(PATHS), keys,
                      st.one_of(values, deep))


def mutate(body: Any, mutation: tuple[str, tuple[Any, ...], str, Any]) -> Any:
    """`body` with one mutation applied where its path still leads (else unchanged)."""
    kind, path, key, value = mutation
    if not path:
        return value if kind == "set" else body
    parent: Any = body
    for part in path[:-1]:
        if not isinstance(parent, dict) or part not in parent:
            return body
        parent = parent[part]
    if not isinstance(parent, dict):
        return body
    if kind == "set":
        parent[path[-1]] = value
    elif kind == "delete":
        parent.pop(path[-1], None)
    elif isinstance(parent.get(path[-1]), dict):
        parent[path[-1]][key] = value
    return body


def encoded(body: Any, ascii_only: bool) -> bytes:
    """The body as JSON; RawJson text is spliced in where the encoder left a marker."""
    raws: list[str] = []

    def marker(value: Any) -> str:
        assert isinstance(value, RawJson)
        raws.append(value.text)
        return f"@@raw{len(raws) - 1}@@"

    text = json.dumps(body, ensure_ascii=ascii_only, default=marker)
    for index, raw in enumerate(raws):
        text = text.replace(f'"@@raw{index}@@"', raw)
    return text.encode("utf-8", "surrogatepass")


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    body: Any = copy.deepcopy(BASE)
    for mutation in draw(st.lists(mutations, min_size=1, max_size=3)):
        body = mutate(body, mutation)
    return encoded(body, draw(st.booleans()))


def discard(client: httpx.Client, job_id: str) -> None:
    client.post(f"/jobs/{job_id}/stop")
    wait_for_state(client, job_id, {"Stopped", "Finished", "Failed"})
    assert client.delete(f"/jobs/{job_id}").status_code == 204


def test_mutated_jobs_never_get_a_server_error(mallory: httpx.Client) -> None:
    statuses: Counter[int] = Counter()

    @settings(max_examples=300, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(bodies())
    def check(content: bytes) -> None:
        response = mallory.post("/jobs", content=content)
        statuses[response.status_code] += 1
        assert response.status_code < 500, (content[:300], response.text[:500])
        answer = response.json()
        if response.status_code == 201:
            discard(mallory, answer["Id"])
        else:
            assert isinstance(answer.get("Code"), str), answer

    check()
    assert statuses[400] > 100 and statuses[201] > 0, statuses

"""Cluster bodies (reference §7.1, §7.3): parsing with every error code and JSON path, the
partial PUT of each SDK helper, the state tables, and which VMs a shrinking group sheds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from batchyard.domain.clusters import (
    CLUSTER_TRANSITIONS,
    MAX_DESIRED_VM_COUNT,
    VM_TRANSITIONS,
    ClusterSpecError,
    ClusterState,
    VMState,
    check_instance_types,
    merge,
    parse_cluster,
    parse_cluster_change,
    surplus,
    vm_sources,
)
from batchyard.domain.instance_types import (
    DEFAULT_CATALOGUE,
    Catalogue,
    InstanceType,
    Machine,
    infeasible,
)


def body(**fields: Any) -> dict[str, Any]:
    return {"Name": "cluster-1", "ImageId": "img-ubuntu", "InstanceType": "ecs.sn1.medium",
            "Groups": {"group1": {"DesiredVMCount": 2}}, **fields}


def problems(raw: Any, change: bool = False) -> list[tuple[str, str]]:
    with pytest.raises(ClusterSpecError) as caught:
        (parse_cluster_change if change else parse_cluster)(raw)
    return [(problem.code, problem.path) for problem in caught.value.problems]


def test_the_sdk_body_parses_with_defaults_and_unknown_fields_kept() -> None:
    sdk = {"Groups": {"g1": {"ResourceType": "OnDemand", "DesiredVMCount": 2,
                             "InstanceType": "ecs.sn1.large"}},
           "UserData": {}, "DependencyIsvService": "", "Name": "c1", "ImageId": "img-ubuntu",
           "Futuristic": {"x": 1}}
    cluster = parse_cluster(sdk)
    assert cluster.Groups["g1"].DesiredVMCount == 2
    assert cluster.echo()["Futuristic"] == {"x": 1}
    assert cluster.instance_type_of("g1") == "ecs.sn1.large"


def test_a_group_takes_the_cluster_instance_type() -> None:
    cluster = parse_cluster(body(Groups={"a": {"DesiredVMCount": 1},
                                         "b": {"DesiredVMCount": 1, "InstanceType": "x"}}))
    assert cluster.Groups["a"].InstanceType == "ecs.sn1.medium"
    assert cluster.Groups["b"].InstanceType == "x"
    assert problems({**body(), "InstanceType": ""}) == [
        ("MissingInstanceType", "Groups.group1.InstanceType")]


@pytest.mark.parametrize(("groups", "expected"), [
    (None, [("MissingGroups", "Groups")]),
    ({}, [("InvalidGroups", "Groups")]),
    ([], [("InvalidGroups", "Groups")]),
    ({"g": 5}, [("InvalidGroups.g", "Groups.g")]),
    ({"": {"DesiredVMCount": 1}}, [("InvalidGroups.", "Groups.")]),
    ({"x" * 65: {"DesiredVMCount": 1}}, [(f"InvalidGroups.{'x' * 64}", f"Groups.{'x' * 65}")]),
    ({"g": {}}, [("MissingDesiredVMCount", "Groups.g.DesiredVMCount")]),
    ({"g": {"DesiredVMCount": "3"}}, [("InvalidDesiredVMCount", "Groups.g.DesiredVMCount")]),
    ({"g": {"DesiredVMCount": -1}}, [("InvalidDesiredVMCount", "Groups.g.DesiredVMCount")]),
    ({"g": {"DesiredVMCount": MAX_DESIRED_VM_COUNT + 1}},
     [("InvalidDesiredVMCount", "Groups.g.DesiredVMCount")]),
    ({"g": {"DesiredVMCount": 1.5}}, [("InvalidDesiredVMCount", "Groups.g.DesiredVMCount")]),
    ({"g": {"DesiredVMCount": 1, "ResourceType": "PrePaid"}},
     [("InvalidResourceType", "Groups.g.ResourceType")]),
])
def test_group_errors_carry_the_codes_of_section_7_3(groups: Any,
                                                     expected: list[tuple[str, str]]) -> None:
    raw = body()
    if groups is None:
        del raw["Groups"]
    else:
        raw["Groups"] = groups
    assert problems(raw) == expected


def test_zero_and_the_maximum_desired_counts_are_allowed() -> None:
    for count in (0, MAX_DESIRED_VM_COUNT):
        assert parse_cluster(body(Groups={"g": {"DesiredVMCount": count}})).Groups[
            "g"].DesiredVMCount == count


def test_every_problem_is_reported_at_once() -> None:
    found = problems({"Name": "9lives", "EnvVars": {"BAD=NAME": "1"}, "ScheduleType": "Soon",
                      "Groups": {"g": {"DesiredVMCount": True}}})
    assert set(found) == {("InvalidName", "Name"), ("MissingImageId", "ImageId"),
                          ("InvalidDesiredVMCount", "Groups.g.DesiredVMCount"),
                          ("InvalidScheduleType", "ScheduleType")}
    assert ("InvalidEnvVars", "EnvVars.BAD=NAME") in problems(body(EnvVars={"BAD=NAME": "1"}))


@pytest.mark.parametrize(("raw", "expected"), [
    ([1, 2], [("InvalidHttpBody", "$")]),
    (body(Description="a\x00b"), [("InvalidDescription", "Description")]),
    (body(Configs={"x": 2**64}), [("InvalidConfigs", "Configs.x")]),
    (body(Configs={"x": float("nan")}), [("InvalidConfigs", "Configs.x")]),
])
def test_hostile_values_are_refused_before_validation(raw: Any,
                                                      expected: list[tuple[str, str]]) -> None:
    assert problems(raw) == expected


def test_deep_nesting_is_refused_without_recursion() -> None:
    deep: dict[str, Any] = {}
    for _ in range(10_000):
        deep = {"x": deep}
    assert problems(body(Configs=deep)) == [("InvalidJsonFormat", "$")]


def test_the_message_names_the_cluster_description() -> None:
    with pytest.raises(ClusterSpecError) as caught:
        parse_cluster(body(Groups={}))
    assert "in the cluster description: Groups: must be an object" in caught.value.message
    assert caught.value.status == 400


def test_instance_types_are_checked_against_the_catalogue_and_machine_given() -> None:
    cluster = parse_cluster(body(Groups={"a": {"DesiredVMCount": 1},
                                         "b": {"DesiredVMCount": 1, "InstanceType": "huge"}}))
    found = check_instance_types(cluster, DEFAULT_CATALOGUE)
    assert [(p.code, p.path, p.value) for p in found] == [
        ("InvalidParameter.InstanceType", "Groups.b.InstanceType", "huge")]
    only_other = Catalogue((InstanceType("other", 1, 1024),), "other")
    everything_unknown = check_instance_types(cluster, only_other)
    assert [p.path for p in everything_unknown] == ["InstanceType", "Groups.b.InstanceType"]
    tiny = Machine(cpus=1, memory_bytes=1 << 30)
    too_big = check_instance_types(parse_cluster(body()), DEFAULT_CATALOGUE,
                                   lambda shape: infeasible(shape, tiny, "slots"))
    assert [(p.code, p.path) for p in too_big] == [("InfeasibleInstanceType", "InstanceType")]


# ---- the partial PUT ---------------------------------------------------------------------


SDK_CHANGES = {
    "change_cluster_desired_vm_count": {"Groups": {"group1": {"DesiredVMCount": 3}}},
    "change_cluster_spot_config": {"Groups": {"group1": {"SpotStrategy": "SpotAsPriceGo",
                                                         "SpotPriceLimit": 0.5}}},
    "change_cluster_user_data": {"UserData": {"k": "v"}},
    "change_cluster_env_vars": {"EnvVars": {"A": "2"}},
    "change_cluster_input_mapping": {"InputMapping": {"oss://b/in/": "/home/in/"}},
    "modify_cluster (nothing set)": {"Groups": {}},
    "modify_cluster (read properties)": {"Groups": {}, "Configs": {}, "UserData": {},
                                         "EnvVars": {}, "ImageId": ""},
    "modify_cluster": {"Groups": {"group1": {"DesiredVMCount": 0}}, "ImageId": "img-new",
                       "Configs": {"Mounts": {"Locale": "utf-8"}}},
}


@pytest.mark.parametrize("helper", sorted(SDK_CHANGES))
def test_the_body_of_every_sdk_helper_merges(helper: str) -> None:
    before = parse_cluster(body(EnvVars={"A": "1"}, Configs={"Disks": {"x": 1}}))
    after = merge(before, parse_cluster_change(SDK_CHANGES[helper]))
    sent = SDK_CHANGES[helper]
    expected = before.echo()
    for name in ("UserData", "EnvVars", "InputMapping"):
        if name in sent:
            expected[name] = sent[name]
    if sent.get("ImageId"):
        expected["ImageId"] = sent["ImageId"]
    if sent.get("Configs"):
        expected["Configs"] = {"Disks": {"x": 1}, **sent["Configs"]}
    for group, fields in sent.get("Groups", {}).items():
        expected["Groups"][group].update(fields)
    assert after.echo() == expected


def test_a_change_numbers_env_vars_as_the_sdk_does() -> None:
    after = merge(parse_cluster(body()), parse_cluster_change({"EnvVars": {"N": 5}}))
    assert after.EnvVars == {"N": "5"}


@pytest.mark.parametrize(("raw", "expected"), [
    ({"Name": "new"}, [("InvalidParameter", "Name")]),
    ({"Configs": {"Networks": {}}}, [("InvalidParameter", "Configs.Networks")]),
    ({"Groups": {"group1": {"ResourceType": "Spot"}}},
     [("InvalidGroups.group1", "Groups.group1.ResourceType")]),
    ({"Groups": {"group1": {"DesiredVMCount": -2}}},
     [("InvalidDesiredVMCount", "Groups.group1.DesiredVMCount")]),
    ({"Groups": {"group1": {"DesiredVMCount": "2"}}},
     [("InvalidDesiredVMCount", "Groups.group1.DesiredVMCount")]),
    ({"Groups": {"group1": 3}}, [("InvalidGroups.group1", "Groups.group1")]),
    ({"Groups": "group1"}, [("InvalidGroups", "Groups")]),
    ({"EnvVars": {"A": None}}, [("InvalidEnvVars", "EnvVars.A")]),
    ("text", [("InvalidHttpBody", "$")]),
])
def test_a_change_of_anything_else_is_refused_naming_it(raw: Any,
                                                        expected: list[tuple[str, str]]) -> None:
    assert problems(raw, change=True) == expected


def test_the_refusal_says_what_may_change() -> None:
    with pytest.raises(ClusterSpecError) as caught:
        parse_cluster_change({"Name": "new"})
    assert "Name: cannot be changed; PUT /clusters/{id} changes only ImageId" in str(
        caught.value)


def test_a_change_naming_a_group_the_cluster_lacks_is_refused() -> None:
    with pytest.raises(ClusterSpecError) as caught:
        merge(parse_cluster(body()), parse_cluster_change(
            {"Groups": {"nope": {"DesiredVMCount": 1}}}))
    assert [(p.code, p.path) for p in caught.value.problems] == [
        ("InvalidGroups.nope", "Groups.nope")]
    assert "it has group1" in caught.value.message


# ---- states and shedding -------------------------------------------------------------------


def test_the_tables_cover_every_state() -> None:
    assert set(CLUSTER_TRANSITIONS) == set(ClusterState)
    assert set(VM_TRANSITIONS) == set(VMState)
    assert vm_sources(VMState.DELETED) == {VMState.DELETING}
    assert vm_sources(VMState.DELETING) == {VMState.PENDING, VMState.STARTING,
                                            VMState.RUNNING}
    assert VM_TRANSITIONS[VMState.DELETED] == frozenset()


@dataclass(frozen=True)
class FakeVM:
    id: str
    state: VMState
    created: float


def test_a_shrinking_group_sheds_pending_then_starting_then_idle_then_busy() -> None:
    live = [FakeVM("i-1", VMState.RUNNING, 1), FakeVM("i-2", VMState.RUNNING, 2),
            FakeVM("i-3", VMState.STARTING, 3), FakeVM("i-4", VMState.PENDING, 4),
            FakeVM("i-5", VMState.PENDING, 5), FakeVM("i-6", VMState.RUNNING, 6)]
    busy = {"i-2", "i-6"}
    assert surplus(live, 6, busy) == []
    assert surplus(live, 9, busy) == []
    assert surplus(live, 4, busy) == ["i-5", "i-4"]
    assert surplus(live, 3, busy) == ["i-5", "i-4", "i-3"]
    assert surplus(live, 2, busy) == ["i-5", "i-4", "i-3", "i-1"]
    assert surplus(live, 1, busy) == ["i-5", "i-4", "i-3", "i-1", "i-6"]
    assert surplus(live, 0, busy) == ["i-5", "i-4", "i-3", "i-1", "i-6", "i-2"]
    assert surplus(live, -1, busy) == surplus(live, 0, busy)


def test_equal_creation_times_shed_the_newest_id_first() -> None:
    live = [FakeVM("i-a", VMState.PENDING, 1), FakeVM("i-b", VMState.PENDING, 1)]
    assert surplus(live, 1) == ["i-b"]

"""Instance types (issue 11 items 4 and 7): the built-in catalogue against Alibaba's table,
its extension and replacement in configuration, the default type, feasibility in both
capacity modes, and the refusal at submission (`check_job_types`, through the engine)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchyard.cli.configuration import ConfigurationError, load_settings
from batchyard.domain.instance_types import (
    DEFAULT_CATALOGUE,
    DEFAULT_INSTANCE_TYPE,
    GIB,
    INFEASIBLE_CODE,
    MIB,
    UNKNOWN_CODE,
    Catalogue,
    InstanceType,
    Machine,
    always_feasible,
    check_job_types,
    family_of,
    infeasible,
)
from batchyard.domain.spec import MAX_PROBLEMS, parse_job
from batchyard.domain.states import State
from batchyard.errors import SpecError
from batchyard.settings import Settings
from batchyard.testing.harness import Harness
from tests.integration.conftest import make_job, make_task

LAPTOP = Machine(cpus=2, memory_bytes=7 * GIB + 600 * MIB)
"""A 2-core laptop sold with 8 GiB (the kernel reports about 7.6)."""
TYPE_PATH = "DAG.Tasks.t.AutoCluster.InstanceType"


def shape(name: str) -> tuple[int, int, int, str]:
    found = DEFAULT_CATALOGUE.get(name)
    assert found is not None, name
    return found.vcpu, found.memory_mb // 1024, found.gpu, found.family


# ---- the built-in catalogue -----------------------------------------------------------------

@pytest.mark.parametrize(("name", "expected"), [
    ("ecs.sn1.medium", (2, 4, 0, "sn1")), ("ecs.sn1.7xlarge", (32, 64, 0, "sn1")),
    ("ecs.sn2.medium", (2, 8, 0, "sn2")), ("ecs.sn2.13xlarge", (56, 224, 0, "sn2")),
    ("ecs.n1.tiny", (1, 1, 0, "n1")), ("ecs.n1.3xlarge", (16, 32, 0, "n1")),
    ("ecs.n2.small", (1, 4, 0, "n2")), ("ecs.n2.7xlarge", (32, 128, 0, "n2")),
    ("ecs.e3.small", (1, 8, 0, "e3")), ("ecs.e3.3xlarge", (16, 128, 0, "e3")),
    ("ecs.gn4-c4g1.xlarge", (4, 30, 1, "gn4")), ("ecs.gn4.14xlarge", (56, 96, 2, "gn4")),
    ("ecs.gn4-c8g1.4xlarge", (16, 60, 2, "gn4")),
])
def test_the_built_in_types_are_alibabas(name: str, expected: tuple[int, int, int, str]) -> None:
    assert shape(name) == expected


def test_each_family_has_alibabas_sizes_and_no_others() -> None:
    sizes: dict[str, list[str]] = {}
    for known in DEFAULT_CATALOGUE:
        sizes.setdefault(known.family, []).append(known.name.split(".", 1)[1])
    assert sizes == {
        "sn1": ["sn1.medium", "sn1.large", "sn1.xlarge", "sn1.3xlarge", "sn1.7xlarge"],
        "sn2": ["sn2.medium", "sn2.large", "sn2.xlarge", "sn2.3xlarge", "sn2.7xlarge",
                "sn2.13xlarge"],
        "n1": ["n1.tiny", "n1.small", "n1.medium", "n1.large", "n1.xlarge", "n1.3xlarge",
               "n1.7xlarge"],
        "n2": ["n2.small", "n2.medium", "n2.large", "n2.xlarge", "n2.3xlarge", "n2.7xlarge"],
        "e3": ["e3.small", "e3.medium", "e3.large", "e3.xlarge", "e3.3xlarge"],
        "gn4": ["gn4-c4g1.xlarge", "gn4-c8g1.2xlarge", "gn4-c4g1.2xlarge", "gn4-c8g1.4xlarge",
                "gn4.8xlarge", "gn4.14xlarge"],
    }
    assert DEFAULT_CATALOGUE.get("ecs.sn1.small") is None  # Alibaba has none


def test_the_ratios_of_the_families_hold() -> None:
    ratios = {"sn1": 2, "n1": 2, "sn2": 4, "n2": 4, "e3": 8}
    for known in DEFAULT_CATALOGUE:
        if known.family in ratios and known.name != "ecs.n1.tiny":
            assert known.memory_mb == known.vcpu * ratios[known.family] * 1024, known


def test_the_default_type_is_small_enough_for_any_laptop() -> None:
    default = DEFAULT_CATALOGUE.default
    assert default.name == DEFAULT_INSTANCE_TYPE == "ecs.n1.small"
    assert (default.vcpu, default.memory_gib) == (1, 2)
    assert infeasible(default, Machine(1, 3 * GIB), "strict") is None


def test_lookups() -> None:
    assert DEFAULT_CATALOGUE.of("") == DEFAULT_CATALOGUE.default
    assert DEFAULT_CATALOGUE.of("ecs.nope") == DEFAULT_CATALOGUE.default
    assert DEFAULT_CATALOGUE.of("ecs.e3.large").memory_bytes == 32 * GIB
    assert "ecs.sn1.medium" in DEFAULT_CATALOGUE and 3 not in DEFAULT_CATALOGUE
    medium = DEFAULT_CATALOGUE.get("ecs.sn1.medium")
    assert medium is not None and (medium.vcpu, medium.memory_gib) == (2, 4)
    assert DEFAULT_CATALOGUE.get("ecs.sn1.small") is None


def test_memory_in_gib_is_a_whole_number_when_it_is_one() -> None:
    assert isinstance(DEFAULT_CATALOGUE.of("ecs.sn1.medium").memory_gib, int)
    assert InstanceType("half", 1, 1536).memory_gib == 1.5


@pytest.mark.parametrize(("name", "family"), [
    ("ecs.sn1.medium", "sn1"), ("ecs.gn4-c4g1.xlarge", "gn4"), ("my-box", "my-box"),
    ("ecs.x", "ecs.x")])
def test_the_family_comes_from_the_name(name: str, family: str) -> None:
    assert family_of(name) == family


# ---- the problem of an unknown name ---------------------------------------------------------

def test_a_known_name_has_no_problem() -> None:
    assert DEFAULT_CATALOGUE.problem("p", "ecs.n2.large") is None


def test_an_unknown_size_lists_its_familys_sizes_and_how_to_list_all() -> None:
    problem = DEFAULT_CATALOGUE.problem(TYPE_PATH, "ecs.sn1.small")
    assert problem is not None
    assert (problem.code, problem.path, problem.value) == (UNKNOWN_CODE, TYPE_PATH,
                                                           "ecs.sn1.small")
    assert "the sn1 family has ecs.sn1.medium, ecs.sn1.large, ecs.sn1.xlarge" in problem.rule
    assert "batchyard instance-types" in problem.rule and "GET /available" in problem.rule
    assert "ecs.e3" not in problem.rule


def test_an_unknown_family_lists_the_families_and_a_close_name() -> None:
    problem = DEFAULT_CATALOGUE.problem("p", "ecs.sm1.medium")
    assert problem is not None
    assert "did you mean ecs.sn1.medium?" in problem.rule
    assert "families: sn1, sn2, n1, n2, e3, gn4" in problem.rule


@pytest.mark.parametrize("value", [3, None, ["ecs.sn1.medium"], {"a": 1}])
def test_a_name_that_is_not_text_is_refused(value: Any) -> None:
    problem = DEFAULT_CATALOGUE.problem("p", value)
    assert problem is not None and problem.code == UNKNOWN_CODE
    assert "must be the name of an instance type" in problem.rule


def test_a_huge_name_is_clipped_in_the_problem() -> None:
    problem = DEFAULT_CATALOGUE.problem("p", "x" * 100_000)
    assert problem is not None and len(str(problem)) < 1000


# ---- extending and replacing ----------------------------------------------------------------

def test_a_catalogue_is_extended_redefined_or_replaced() -> None:
    big = InstanceType("big", 64, 512 * 1024, family="mine")
    redefined = InstanceType("ecs.sn1.medium", 2, 3 * 1024, family="sn1")
    extended = DEFAULT_CATALOGUE.extended([big, redefined])
    assert len(extended) == len(DEFAULT_CATALOGUE) + 1
    assert extended.names[-1] == "big"  # other families after Alibaba's
    assert extended.of("ecs.sn1.medium").memory_mb == 3 * 1024
    replaced = DEFAULT_CATALOGUE.extended([big], replace=True, default="big")
    assert (replaced.names, replaced.default) == (("big",), big)
    with pytest.raises(ValueError, match=r"default instance type 'ecs\.n1\.small'"):
        DEFAULT_CATALOGUE.extended([big], replace=True)


def test_names_are_unique() -> None:
    with pytest.raises(ValueError, match="unique"):
        Catalogue([InstanceType("a", 1, 1), InstanceType("a", 2, 2)], default="a")


def test_settings_extend_the_catalogue() -> None:
    settings = Settings(instance_types={"gpu.box": {"vcpu": 16, "memory_mb": 65536, "gpu": 2},
                                        "ecs.n1.small": {"vcpu": 1, "memory_mb": 1024}},
                        default_instance_type="gpu.box", capacity="strict")
    catalogue = settings.catalogue()
    assert catalogue.of("gpu.box") == InstanceType("gpu.box", 16, 65536, 2, "gpu.box")
    assert catalogue.of("ecs.n1.small").memory_mb == 1024
    assert catalogue.default.name == "gpu.box" and "ecs.e3.large" in catalogue
    assert settings.capacity == "strict"


def test_settings_replace_the_catalogue() -> None:
    settings = Settings(instance_types={"small": {"vcpu": 1, "memory_mb": 512, "family": "f"},
                                        "large": {"vcpu": 4, "memory_mb": 4096}},
                        instance_types_replace=True, default_instance_type="small")
    catalogue = settings.catalogue()
    assert catalogue.names == ("small", "large")
    assert catalogue.of("small").family == "f"


def test_the_defaults_of_settings() -> None:
    settings = Settings()
    assert (settings.capacity, settings.default_instance_type) == ("slots", "ecs.n1.small")
    assert settings.catalogue().names == DEFAULT_CATALOGUE.names


@pytest.mark.parametrize(("fields", "expected"), [
    ({"default_instance_type": "ecs.sn1.smal"},
     "default_instance_type.*is not an instance type.*sn1 family has ecs.sn1.medium"),
    ({"instance_types_replace": True}, "instance_types_replace needs instance_types"),
    ({"instance_types": {"a": {"vcpu": 1, "memory_mb": 1}}, "instance_types_replace": True},
     "default_instance_type.*'ecs.n1.small'"),
    ({"instance_types": {"a": {"vcpu": -1, "memory_mb": 1}}}, "vcpu.*greater than or equal"),
    ({"instance_types": {"a": {"vcpu": 1, "memory_mb": 0}}}, "memory_mb.*greater than"),
    ({"instance_types": {"a": {"vcpu": 1, "memory_mb": 1, "gpu": -1}}}, "gpu"),
    ({"instance_types": {"a": {"vcpu": 1, "memory_mb": 1, "cpus": 1}}}, "cpus.*extra"),
    ({"instance_types": {"a b": {"vcpu": 1, "memory_mb": 1}}}, "should match pattern"),
    ({"capacity": "loose"}, "capacity.*'slots' or 'strict'"),
])
def test_bad_settings_are_refused(fields: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValueError, match=f"(?s){expected}"):
        Settings(**fields)


def test_a_configuration_file_sets_types_and_its_errors_name_the_line(tmp_path: Path) -> None:
    config = tmp_path / "batchyard.toml"
    config.write_text('default_instance_type = "lab.big"\ncapacity = "strict"\n\n'
                      '[instance_types."lab.big"]\nvcpu = 8\nmemory_mb = 32768\n',
                      encoding="utf-8")
    settings = load_settings(config=config)
    assert settings.catalogue().default == InstanceType("lab.big", 8, 32768, 0, "lab.big")
    config.write_text('default_instance_type = "lab.bigg"\n', encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"batchyard.toml:1: default_instance_type: "
                                                 r".*not an instance type"):
        load_settings(config=config)


def test_the_environment_sets_types(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHYARD_INSTANCE_TYPES", '{"x": {"vcpu": 0, "memory_mb": 3}}')
    with pytest.raises(ConfigurationError, match=r"BATCHYARD_INSTANCE_TYPES=.*greater than"):
        load_settings()
    monkeypatch.setenv("BATCHYARD_INSTANCE_TYPES", '{"x": {"vcpu": 3, "memory_mb": 3}}')
    monkeypatch.setenv("BATCHYARD_CAPACITY", "strict")
    settings = load_settings()
    assert settings.catalogue().of("x").vcpu == 3 and settings.capacity == "strict"


# ---- feasibility ----------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "slots", "strict"), [
    ("ecs.n1.small", None, None),
    ("ecs.sn1.medium", None, None),
    ("ecs.sn2.medium", None, None),       # 8 GiB on a machine sold as 8 GiB (7.6 reported)
    ("ecs.sn1.large", None, "vCPUs"),     # 4 vCPU: slots do not count them, strict does
    ("ecs.sn1.7xlarge", "memory", "memory"),
    ("ecs.sn2.large", "memory", "memory"),
])
def test_what_a_laptop_can_ever_run(name: str, slots: str | None, strict: str | None) -> None:
    known = DEFAULT_CATALOGUE.of(name)
    for capacity, expected in (("slots", slots), ("strict", strict)):
        reason = infeasible(known, LAPTOP, capacity)  # type: ignore[arg-type]
        if expected is None:
            assert reason is None, (capacity, reason)
        else:
            assert reason is not None and f"needs more {expected}" in reason
            assert "2 CPUs and 7.6 GiB of memory" in reason and name in reason


def test_memory_is_rounded_up_to_a_whole_gib_only() -> None:
    eight = InstanceType("eight", 1, 8 * 1024)
    assert infeasible(eight, Machine(1, 8 * GIB), "slots") is None
    assert infeasible(eight, Machine(1, 7 * GIB), "slots") is not None
    assert infeasible(InstanceType("more", 1, 8 * 1024 + 1), Machine(1, 8 * GIB),
                      "slots") is not None


# ---- check_job_types ------------------------------------------------------------------------

def spec_with(**task_fields: Any) -> Any:
    task = make_task("true")
    task.pop("AutoCluster")
    task.update(task_fields)
    return parse_job(make_job({"t": task}))


def strict_laptop(known: InstanceType) -> str | None:
    return infeasible(known, LAPTOP, "strict")


def found(spec: Any, feasible: Any = strict_laptop,
          catalogue: Catalogue = DEFAULT_CATALOGUE) -> list[tuple[str, str, Any]]:
    return [(p.code, p.path, p.value) for p in check_job_types(spec, catalogue, feasible)]


def test_known_feasible_and_default_types_pass() -> None:
    assert found(spec_with(AutoCluster={"InstanceType": "ecs.sn1.medium"})) == []
    assert found(spec_with()) == []
    assert found(spec_with(AutoCluster={})) == []
    assert found(spec_with(AutoCluster={"InstanceType": "", "ImageId": "img-1"})) == []


def test_an_unknown_type_is_refused_with_its_path() -> None:
    assert found(spec_with(AutoCluster={"InstanceType": "t"})) == [(UNKNOWN_CODE, TYPE_PATH, "t")]
    assert found(spec_with(AutoCluster={"InstanceType": 2})) == [(UNKNOWN_CODE, TYPE_PATH, 2)]


def test_an_infeasible_type_is_refused_naming_the_machine() -> None:
    problems = check_job_types(spec_with(AutoCluster={"InstanceType": "ecs.sn1.large"}),
                               DEFAULT_CATALOGUE, strict_laptop)
    assert [(p.code, p.path) for p in problems] == [(INFEASIBLE_CODE, TYPE_PATH)]
    assert "2 CPUs and 7.6 GiB" in problems[0].rule and "smaller type" in problems[0].rule
    assert found(spec_with(AutoCluster={"InstanceType": "ecs.sn1.large"}),
                 always_feasible) == []


def test_an_infeasible_default_type_is_refused_too() -> None:
    catalogue = DEFAULT_CATALOGUE.extended([], default="ecs.e3.3xlarge")
    problems = check_job_types(spec_with(), catalogue, strict_laptop)
    assert [(p.code, p.path) for p in problems] == [(INFEASIBLE_CODE, TYPE_PATH)]
    assert "default_instance_type" in problems[0].rule


def test_a_task_on_a_cluster_takes_its_clusters_types() -> None:
    assert found(spec_with(ClusterId="cls-1", AutoCluster={"InstanceType": "t"})) == []


def test_every_task_is_checked() -> None:
    tasks = {name: make_task("true", AutoCluster={"InstanceType": kind})
             for name, kind in (("a", "ecs.sn1.medium"), ("b", "nope"), ("c", "ecs.e3.3xlarge"))}
    assert [(code, path) for code, path, _ in found(parse_job(make_job(tasks)))] == [
        (UNKNOWN_CODE, "DAG.Tasks.b.AutoCluster.InstanceType"),
        (INFEASIBLE_CODE, "DAG.Tasks.c.AutoCluster.InstanceType")]


# ---- through the engine ---------------------------------------------------------------------

@pytest.fixture
def harness() -> Iterator[Harness]:
    built = Harness.build(slots=2, machine=LAPTOP, capacity="strict")
    yield built
    built.close()


def test_the_engine_refuses_an_unknown_or_infeasible_type_and_stores_nothing(
        harness: Harness) -> None:
    for kind, code in (("ecs.sn1.smal", UNKNOWN_CODE), ("ecs.sn2.large", INFEASIBLE_CODE)):
        with pytest.raises(SpecError) as refused:
            harness.submit(make_job({"t": make_task("true", AutoCluster={"InstanceType": kind})}))
        assert (refused.value.code, refused.value.problems[0].path) == (code, TYPE_PATH)
    assert harness.store.jobs() == []


def test_a_task_naming_no_cluster_runs_on_the_default_type(harness: Harness) -> None:
    task = make_task("true", 2)
    del task["AutoCluster"]
    job_id = harness.submit(make_job({"t": task}))
    harness.run_all()
    assert harness.engine.job(job_id).state == State.FINISHED
    spec = parse_job(make_job({"t": task, "u": make_task("true")}))
    assert harness.engine.instance_type_of(spec, "t") == DEFAULT_CATALOGUE.default
    assert harness.engine.instance_type_of(spec, "u").name == "ecs.sn1.medium"


def test_an_engine_without_a_machine_finds_every_known_type_feasible() -> None:
    built = Harness.build(catalogue=DEFAULT_CATALOGUE.extended(
        [InstanceType("huge", 4096, 1 << 30)]))
    try:
        built.submit(make_job({"t": make_task("true", AutoCluster={"InstanceType": "huge"})}))
        assert built.engine.infeasible(built.engine.catalogue.of("huge")) is None
        with pytest.raises(SpecError):
            built.submit(make_job({"t": make_task("true", AutoCluster={"InstanceType": "x"})}))
    finally:
        built.close()


def test_problems_stop_at_the_most_listed_and_the_rest_are_counted() -> None:
    tasks = {f"t{number}": make_task("true", AutoCluster={"InstanceType": "x" * 5000})
             for number in range(MAX_PROBLEMS + 30)}
    problems = check_job_types(parse_job(make_job(tasks)), DEFAULT_CATALOGUE, strict_laptop)
    assert len(problems) == MAX_PROBLEMS + 1
    assert (problems[-1].path, problems[-1].value) == ("DAG.Tasks", "30 more tasks")
    assert all(len(str(problem)) < 1000 for problem in problems)

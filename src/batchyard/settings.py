"""All configuration in one object: env vars `BATCHYARD_…`, CLI flags, passed explicitly."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    SecretStr,
    StringConstraints,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from batchyard.domain.instance_types import (
    DEFAULT_CATALOGUE,
    DEFAULT_INSTANCE_TYPE,
    Capacity,
    Catalogue,
    InstanceType,
    Machine,
    family_of,
)
from batchyard.domain.webhooks import RETRY_DELAYS, networks

GIB = 1 << 30


def _default_slots() -> int:
    return os.cpu_count() or 1


def machine_memory() -> int:
    """Bytes of physical memory of this machine."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def machine() -> Machine:
    """This machine's CPUs and memory: what the local provider's VMs share."""
    return Machine(os.cpu_count() or 1, machine_memory())


class SandboxSettings(BaseModel):
    """How attempts are confined (docs/security.md). `serve` always confines every attempt;
    `batchyard run` only with `--sandbox` (and jobs with mapped paths)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=False, description="Run every attempt in the sandbox")
    user_base: int = Field(
        default=720_000, ge=1000, le=2**31 - 100_000,
        description="Confined programs run as uid user_base+1+slot, gid user_base (root only)")
    network: Literal["host", "none"] = Field(
        default="host", description="'none': a private network namespace, loopback only")
    memory_bytes: int | None = Field(
        default=None, ge=0, description="Memory per attempt, at most (an attempt gets its "
        "InstanceType's memory, or this if less); default: its InstanceType's (the machine's "
        "memory divided by the slots when it names none); 0: no limit")
    max_processes: int = Field(default=1024, ge=0,
                               description="Processes (and threads) per attempt; 0: no limit")
    disk_bytes: int = Field(
        default=16 * GIB, ge=0, description="Bytes an attempt may write to its working "
        "directory, /tmp and mapped folders; 0: no limit")


class BucketGrant(BaseModel):
    """A bucket given to a tenant by configuration, shared with others by name."""

    model_config = ConfigDict(extra="forbid")

    owner: str
    read: list[str] = Field(default_factory=list,
                            description="Tenants that may read it ('*': every tenant)")
    write: list[str] = Field(default_factory=list,
                             description="Tenants that may read and write it ('*': every tenant)")


class InstanceTypeSettings(BaseModel):
    """One instance type of configuration (docs/instance-types.md)."""

    model_config = ConfigDict(extra="forbid")

    vcpu: int = Field(ge=1, le=4096, description="Virtual CPUs")
    memory_mb: int = Field(ge=1, le=1 << 32, description="Memory in MiB (4096 for 4 GiB)")
    gpu: int = Field(default=0, ge=0, le=1024, description="GPUs (shown, not assigned)")
    family: str = Field(default="", max_length=64,
                        description="Family shown and used in hints; default: from the name")


INSTANCE_TYPE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
"""An instance type name of configuration (pydantic's regex: `$` is the very end)."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BATCHYARD_", env_nested_delimiter="__")

    data_dir: Path = Field(default=Path(".batchyard"),
                           description="Where state, the default object store and work dirs live")
    database_url: str = Field(default="", description="SQLAlchemy URL; default SQLite in data_dir")
    slots: int = Field(default_factory=_default_slots, ge=1,
                       description="How many instances this machine's agent runs at once")
    buckets: dict[str, str] = Field(
        default_factory=dict,
        description="bucket name -> fsspec URL (e.g. demo=/srv/demo or demo=s3://real-bucket)")
    region: str = Field(default="local", description="BATCH_COMPUTE_REGION given to programs")
    oss_host: str = Field(default="localhost", description="BATCH_COMPUTE_OSS_HOST for programs")
    keep_workdirs: bool = Field(default=False,
                                description="Keep working directories of successful attempts")
    log_interval: float = Field(default=5.0, gt=0,
                                description="Seconds between LogMapping uploads while running")
    s3_endpoint_url: str = Field(
        default="", description="S3-compatible endpoint for s3:// buckets (default: "
        "AWS_ENDPOINT_URL, else AWS); Alibaba OSS: https://oss-<region>.aliyuncs.com")
    s3_region: str = Field(default="", description="S3 region (default: AWS_DEFAULT_REGION)")
    s3_access_key_id: SecretStr = Field(
        default=SecretStr(""), description="S3 access key id (default: AWS_ACCESS_KEY_ID)")
    s3_secret_access_key: SecretStr = Field(
        default=SecretStr(""), description="S3 secret key (default: AWS_SECRET_ACCESS_KEY)")
    s3_addressing_style: str = Field(
        default="", description="'virtual' for Alibaba OSS, 'path' for most self-hosted "
        "S3 servers; default: botocore's choice")
    package_max_bytes: int = Field(
        default=4 * GIB, ge=1, description="Bytes a PackagePath tarball may extract to")
    package_max_members: int = Field(
        default=200_000, ge=1, description="Members (files, folders, links) a package may hold")
    package_max_path: int = Field(
        default=1024, ge=1, description="Bytes of a package member's name or link target")
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)
    insecure_no_sandbox: bool = Field(
        default=False, description="serve: run attempts unconfined, as the server's user "
        "(any tenant can then take over the installation)")
    process_tracking: Literal["auto", "cgroup", "subreaper"] = Field(
        default="auto", description="How an attempt's processes are found and killed: a "
        "cgroup per slot where possible, else as adopted orphans")
    bucket_grants: dict[str, BucketGrant] = Field(
        default_factory=dict, description="bucket -> {owner, read: [tenants], write: "
        "[tenants]}; other buckets belong to the tenant that uses them first")
    reserve_on_fail_seconds: float = Field(
        default=3600.0, ge=0, description="How long a task that failed with "
        "AutoCluster.ReserveOnFail keeps its VMs (their slots) at most; restarting or "
        "deleting its job releases them sooner")
    cluster_quota: int = Field(
        default=100, ge=0, description="The most clusters one tenant may have; another is "
        "refused (QuotaExhausted)")
    vm_quota: int = Field(
        default=1000, ge=0, description="The most VMs one tenant's clusters may want in "
        "all (the sum of their groups' DesiredVMCount); more is refused (QuotaExhausted)")
    tenant_weights: dict[str, PositiveFloat] = Field(
        default_factory=dict, description="tenant -> its share of the slots when tenants "
        "compete (default 1 each): a tenant of weight 2 gets twice the slots of one of "
        "weight 1 while both have work waiting")

    instance_types: dict[Annotated[str, StringConstraints(pattern=INSTANCE_TYPE_NAME)],
                         InstanceTypeSettings] = Field(
        default_factory=dict, description="name -> {vcpu, memory_mb, gpu}: instance types "
        "added to (or redefining) the built-in catalogue")
    instance_types_replace: bool = Field(
        default=False, description="Offer only the instance_types configured, not the "
        "built-in catalogue")
    default_instance_type: str = Field(
        default=DEFAULT_INSTANCE_TYPE, validate_default=True, description="The instance "
        "type of a task that names none (no ClusterId, no AutoCluster.InstanceType)")
    provider: Literal["local", "ray"] = Field(
        default="local", description="Where VMs run: 'local' (the agents of this machine) or "
        "'ray' (serve: one agent per node of a Ray cluster, each VM a reservation of its "
        "InstanceType there; docs/deploy-ray.md)")
    ray_address: str = Field(
        default="", description="provider 'ray': the cluster's GCS address HOST:PORT "
        "(default: RAY_ADDRESS, else a cluster started on this machine)")
    ray_namespace: str = Field(
        default="batchyard", description="provider 'ray': the Ray namespace of the node "
        "agents (one per batchyard server sharing a Ray cluster)")
    ray_autoscaler: bool = Field(
        default=False, description="provider 'ray': an autoscaler adds nodes on demand, so an "
        "InstanceType no node offers yet is waited for rather than reported infeasible")
    ray_node_root: str = Field(
        default="/var/tmp/batchyard", description="provider 'ray': the folder under which "
        "each node agent keeps its work folders (one sub-folder per node)")
    ray_autocluster_vms: int = Field(
        default=64, ge=1, description="provider 'ray': the VMs an AutoCluster reserves at "
        "most (min(InstanceCount, this))")
    shared_object_root: bool = Field(
        default=False, description="provider 'ray': the buckets that are folders (and the "
        "data dir's objects/) are mounted at the same path on every node (e.g. NFS)")
    capacity: Capacity = Field(
        default="slots", description="'slots': up to --slots VMs at once, vCPUs not "
        "counted; 'strict': VMs' vCPUs and memory count against the machine's")

    allow_missing_nonce: bool = Field(
        default=False, description="Accept signed requests without x-acs-signature-nonce "
        "(they can be replayed within 15 minutes); only for old clients that send none")
    console: bool = Field(
        default=True, description="Serve the web console at /console (docs/console.md); "
        "false: the REST API only")
    require_body_digest: bool = Field(
        default=False, description="Refuse a request body without a signed Content-MD5 "
        "header (the official SDK signs none; batchyard's own clients do)")
    metrics_token: SecretStr = Field(
        default=SecretStr(""), description="serve: GET /metrics asks for `Authorization: "
        "Bearer <this>`; empty: /metrics is open (counts and tenant names only; "
        "docs/operations.md)")
    webhook_allow_networks: list[str] = Field(
        default_factory=list, description="serve: networks (CIDRs, e.g. 10.0.0.0/8) whose "
        "private, loopback or otherwise non-public addresses webhooks may be sent to; "
        "default none: only public addresses are called (docs/operations.md)")
    webhook_retry_delays: list[Annotated[float, Field(ge=0)]] = Field(
        default_factory=lambda: list(RETRY_DELAYS), min_length=1, description="Seconds "
        "before each attempt of a webhook delivery (the first after the event, each next "
        "after a failure); a test knob: keep the default (0, 5 s, 5 min, 30 min, 2 h, 5 h, "
        "10 h, 10 h) in production")

    @field_validator("webhook_allow_networks")
    @classmethod
    def _networks(cls, cidrs: list[str]) -> list[str]:
        for cidr in cidrs:
            try:
                networks([cidr])
            except ValueError as error:
                raise ValueError(f"{cidr!r} is not a network: write it as a CIDR, e.g. "
                                 "127.0.0.1/32 or 10.0.0.0/8") from error
        return cidrs

    @field_validator("instance_types_replace")
    @classmethod
    def _something_to_offer(cls, replace: bool, info: ValidationInfo) -> bool:
        if replace and not info.data.get("instance_types"):
            raise ValueError("instance_types_replace needs instance_types to offer instead "
                             "of the built-in ones")
        return replace

    @field_validator("default_instance_type")
    @classmethod
    def _default_is_offered(cls, name: str, info: ValidationInfo) -> str:
        offered = _configured(info.data.get("instance_types", {}),
                              bool(info.data.get("instance_types_replace")))
        unknown = offered.problem("default_instance_type", name)
        if unknown is not None:
            raise ValueError(unknown.rule)
        return name

    def catalogue(self) -> Catalogue:
        """The instance types offered: the built-in ones extended (or replaced) by
        `instance_types`, with `default_instance_type` as the default."""
        return _configured(self.instance_types, self.instance_types_replace,
                           self.default_instance_type)

    @property
    def memory_per_attempt(self) -> int:
        """The memory limit of one confined attempt (0: none)."""
        chosen = self.sandbox.memory_bytes
        return machine_memory() // self.slots if chosen is None else chosen

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir.resolve() / 'batchyard.db'}"

    @property
    def object_root(self) -> Path:
        """Folder holding one sub-folder per bucket for the embedded object store."""
        return self.data_dir.resolve() / "objects"

    @property
    def work_root(self) -> Path:
        return self.data_dir.resolve() / "work"

    @property
    def cache_root(self) -> Path:
        """Input views shared by the attempts of this machine (safe to delete when idle)."""
        return self.data_dir.resolve() / "cache"


def _configured(types: dict[str, InstanceTypeSettings], replace: bool,
                default: str | None = None) -> Catalogue:
    added = [InstanceType(name, shape.vcpu, shape.memory_mb, shape.gpu,
                          shape.family or family_of(name)) for name, shape in types.items()]
    if replace and default is None:
        default = added[0].name if added else None
    return DEFAULT_CATALOGUE.extended(added, replace=replace, default=default)

"""All configuration in one object: env vars `BATCHYARD_…`, CLI flags, passed explicitly."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

GIB = 1 << 30


def _default_slots() -> int:
    return os.cpu_count() or 1


def machine_memory() -> int:
    """Bytes of physical memory of this machine."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


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
        default=None, ge=0, description="Memory per attempt; default: the machine's memory "
        "divided by the slots; 0: no limit")
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
    tenant_weights: dict[str, PositiveFloat] = Field(
        default_factory=dict, description="tenant -> its share of the slots when tenants "
        "compete (default 1 each): a tenant of weight 2 gets twice the slots of one of "
        "weight 1 while both have work waiting")

    allow_missing_nonce: bool = Field(
        default=False, description="Accept signed requests without x-acs-signature-nonce "
        "(they can be replayed within 15 minutes); only for old clients that send none")
    require_body_digest: bool = Field(
        default=False, description="Refuse a request body without a signed Content-MD5 "
        "header (the official SDK signs none; batchyard's own clients do)")

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

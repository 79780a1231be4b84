"""All configuration in one object: env vars `BATCHYARD_…`, CLI flags, passed explicitly."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_slots() -> int:
    return os.cpu_count() or 1


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BATCHYARD_", env_nested_delimiter="__")

    data_dir: Path = Field(default=Path(".batchyard"),
                           description="Where state, the default object store and work dirs live")
    database_url: str = Field(default="", description="SQLAlchemy URL; default SQLite in data_dir")
    slots: int = Field(default_factory=_default_slots, ge=1,
                       description="How many instances the local executor runs at once")
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
    allow_missing_nonce: bool = Field(
        default=False, description="Accept signed requests without x-acs-signature-nonce "
        "(they can be replayed within 15 minutes); only for old clients that send none")
    require_body_digest: bool = Field(
        default=False, description="Refuse a request body without a signed Content-MD5 "
        "header (the official SDK signs none; batchyard's own clients do)")

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

"""S3-compatible object storage (AWS, SeaweedFS, MinIO, Alibaba OSS's S3 API) through s3fs.

Settings win over the standard variables (`AWS_ENDPOINT_URL`, `AWS_DEFAULT_REGION`,
`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), which botocore reads
itself when a setting is empty. The credentials are returned as `secrets` so that the object
store can blank them out of every error message.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


@dataclass(frozen=True)
class S3Configuration:
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    """fsspec storage options per protocol, for `FsspecObjectStore`."""
    program_environment: dict[str, str] = field(default_factory=dict)
    """Standard variables that give an unsandboxed program's `batchyard.oss` the same access."""
    secrets: tuple[str, ...] = ()


def s3_configuration(endpoint_url: str = "", region: str = "", access_key_id: str = "",
                     secret_access_key: str = "", addressing_style: str = "",
                     environ: Mapping[str, str] | None = None) -> S3Configuration:
    """The s3fs options for these settings (empty ones fall back to the AWS_* variables)."""
    environ = os.environ if environ is None else environ
    options: dict[str, Any] = {}
    client: dict[str, Any] = {}
    variables: dict[str, str] = {}
    if endpoint_url:
        options["endpoint_url"] = endpoint_url
        variables["AWS_ENDPOINT_URL"] = endpoint_url
    if region:
        client["region_name"] = region
        variables["AWS_DEFAULT_REGION"] = region
    if access_key_id and secret_access_key:
        options.update(key=access_key_id, secret=secret_access_key)
        variables.update(AWS_ACCESS_KEY_ID=access_key_id,
                         AWS_SECRET_ACCESS_KEY=secret_access_key)
    if addressing_style:
        options["config_kwargs"] = {"s3": {"addressing_style": addressing_style}}
    if client:
        options["client_kwargs"] = client
    secrets = [access_key_id, secret_access_key]
    secrets += [environ.get(name, "") for name in CREDENTIAL_VARIABLES]
    return S3Configuration({"s3": options} if options else {}, variables,
                           tuple(secret for secret in secrets if len(secret) >= 4))

"""Settings for one command: `BATCHYARD_*` environment variables, overridden by flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from batchyard.errors import BatchyardError
from batchyard.settings import Settings


class ConfigurationError(BatchyardError):
    """A flag or environment variable has a value batchyard cannot use."""

    code = "InvalidConfiguration"


def parse_bucket(text: str) -> tuple[str, str]:
    """`NAME=URL` -> (name, url); the URL is an fsspec URL or a local folder."""
    name, separator, url = text.partition("=")
    name, url = name.strip(), url.strip()
    if not separator or not name or not url:
        raise ConfigurationError(
            "--bucket expects NAME=URL (for example demo=/srv/demo or demo=s3://real), "
            f"got {text!r}")
    if "/" in name or ":" in name:
        raise ConfigurationError(f"--bucket: {name!r} is not a bucket name (no '/' or ':')")
    return name, url


def load_settings(data_dir: Path | None = None, slots: int | None = None,
                  buckets: list[str] | None = None) -> Settings:
    """Settings from the environment, with every flag that was given taking precedence.

    Buckets given as flags are added to those from `BATCHYARD_BUCKETS…`; a flag wins
    when both name the same bucket.
    """
    try:
        base = Settings()
        overrides: dict[str, Any] = {}
        if data_dir is not None:
            overrides["data_dir"] = data_dir
        if slots is not None:
            overrides["slots"] = slots
        if buckets:
            overrides["buckets"] = {**base.buckets, **dict(map(parse_bucket, buckets))}
        return Settings(**overrides) if overrides else base
    except ValidationError as error:
        raise ConfigurationError(_describe(error)) from error


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "settings"
        lines.append(f"{field}: {item['msg']} (got {item.get('input')!r})")
    return "invalid settings: " + "; ".join(lines)

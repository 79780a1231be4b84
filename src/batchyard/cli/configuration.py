"""Settings for one command: flags, then `BATCHYARD_*` variables, then a TOML file, then defaults.

The file is `--config FILE` (run, serve), else the file `BATCHYARD_CONFIG` names, else
`./batchyard.toml`, else `~/.config/batchyard/batchyard.toml`; its keys are the settings'
names (`slots = 8`, `[sandbox] memory_bytes = …`, `[buckets] demo = "/srv/demo"`).
Whatever is wrong becomes one `ConfigurationError` line naming where the value came from
(the variable, the file and line, or the flag), the value, and what is allowed.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, TomlConfigSettingsSource
from pydantic_settings.exceptions import SettingsError

from batchyard.domain.fields import closest
from batchyard.errors import BatchyardError
from batchyard.settings import Settings

CONFIG_ENV = "BATCHYARD_CONFIG"
LOCAL_CONFIG = Path("batchyard.toml")
USER_CONFIG = Path("~/.config/batchyard/batchyard.toml")
ENV_PREFIX = "BATCHYARD_"
FLAGS = {"data_dir": "--data-dir", "slots": "--slots", "buckets": "--bucket"}
# What a value that is not a plain word looks like, for the messages.
EXAMPLES = {
    "buckets": '{"demo": "/srv/demo", "results": "s3://real-bucket/prefix"}',
    "bucket_grants": '{"shared": {"owner": "alice", "read": ["*"], "write": ["bob"]}}',
    "sandbox": '{"memory_bytes": 2147483648} (or BATCHYARD_SANDBOX__MEMORY_BYTES=2147483648)',
}


class ConfigurationError(BatchyardError):
    """A flag, environment variable or configuration file has a value batchyard cannot use."""

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


def config_file(given: Path | None = None) -> Path | None:
    """The configuration file to read: `--config`, `BATCHYARD_CONFIG`, ./, ~/.config; or none.

    A file named explicitly must exist; the two default places are used only when present.
    """
    named = given or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None)
    if named is not None:
        path = named.expanduser()
        if not path.is_file():
            origin = "--config" if given else CONFIG_ENV
            raise ConfigurationError(f"{origin}: {path}: no such configuration file")
        return path
    for candidate in (LOCAL_CONFIG, USER_CONFIG.expanduser()):
        if candidate.is_file():
            return candidate
    return None


def load_settings(data_dir: Path | None = None, slots: int | None = None,
                  buckets: list[str] | None = None, config: Path | None = None) -> Settings:
    """Settings from flags, environment, configuration file and defaults, in that order.

    Buckets add up across the file, `BATCHYARD_BUCKETS` and `--bucket`; for the same bucket
    name the flag wins over the variable, and the variable over the file.
    """
    path = config_file(config)
    flags: dict[str, Any] = {}
    try:
        settings_class = _settings_class(path)
        if data_dir is not None:
            flags["data_dir"] = data_dir
        if slots is not None:
            flags["slots"] = slots
        if buckets:  # added to the buckets of the file and the environment
            flags["buckets"] = {**settings_class().buckets, **dict(map(parse_bucket, buckets))}
        chosen = settings_class(**flags)
        return Settings.model_construct(chosen.model_fields_set, **dict(chosen))
    except ValidationError as error:
        raise ConfigurationError(_describe(error, path, flags)) from None
    except SettingsError as error:
        raise ConfigurationError(_unparsable(error, path)) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigurationError(f"{path}: not valid TOML: {error}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigurationError(f"{path}: cannot be read ({error})") from None


def _settings_class(path: Path | None) -> type[Settings]:
    """`Settings`, or a subclass that also reads `path`, below the environment."""
    if path is None:
        return Settings

    class FileSettings(Settings):
        @classmethod
        def settings_customise_sources(
                cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                env_settings: PydanticBaseSettingsSource,
                dotenv_settings: PydanticBaseSettingsSource,
                file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings,
                    TomlConfigSettingsSource(settings_cls, toml_file=path))

    return FileSettings


def _describe(error: ValidationError, path: Path | None, flags: dict[str, Any]) -> str:
    return "; ".join(_problem(item, path, flags) for item in error.errors())


def _problem(item: ErrorDetails, path: Path | None, flags: dict[str, Any]) -> str:
    loc = tuple(str(part) for part in item["loc"])
    if item["type"] == "extra_forbidden":
        return f"{_origin(loc, path, flags)}: unknown setting{_suggestion(loc)}"
    value = "(hidden)" if _secret(loc[-1] if loc else "") else repr(item.get("input"))
    return f"{_origin(loc, path, flags)}: {_lower_first(item['msg'])} (got {value}){_hint(loc)}"


def _origin(loc: tuple[str, ...], path: Path | None, flags: dict[str, Any]) -> str:
    """Where the wrong value came from: a flag, `BATCHYARD_…=value`, or `file:line: key`."""
    if loc and loc[0] in flags:
        return FLAGS[loc[0]]
    variable = _variable(loc)
    if variable is not None:
        return f"{variable}={_shown(variable)}"
    if path is not None:
        line = _line_of(path, loc)
        return f"{path}:{line}: {'.'.join(loc)}" if line else f"{path}: {'.'.join(loc)}"
    return ".".join(loc) or "settings"


def _variable(loc: tuple[str, ...]) -> str | None:
    """The environment variable that set `loc` (the most specific one), if any."""
    present = {name.upper(): name for name in os.environ}
    for length in range(len(loc), 0, -1):
        name = ENV_PREFIX + "__".join(loc[:length]).upper()
        if name in present:
            return present[name]
    return None


def _shown(variable: str) -> str:
    return "(hidden)" if _secret(variable) else repr(os.environ[variable])


def _secret(name: str) -> bool:
    """Values never printed: keys and secrets."""
    return any(word in name.lower() for word in ("secret", "key_id", "password"))


def _line_of(path: Path, loc: tuple[str, ...]) -> int | None:
    """The line of `path` that sets `loc` (`key =` under its `[table]`), or None."""
    table: tuple[str, ...] = ()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = line.strip()
        header = re.fullmatch(r"\[\s*([\w.\s\"-]+?)\s*\]", text)
        if header:
            table = tuple(part.strip().strip('"') for part in header.group(1).split("."))
            continue
        key = re.match(r'"?([\w-]+)"?\s*=', text)
        if key and (*table, key.group(1)) == loc[:len(table) + 1]:
            return number
    return None


def _suggestion(loc: tuple[str, ...]) -> str:
    known = _known_names(loc[:-1])
    close = closest(loc[-1], known)
    if close:
        return f" {loc[-1]!r}; did you mean {close!r}?"
    return f" {loc[-1]!r} (known: {', '.join(sorted(known))})"


def _known_names(parent: tuple[str, ...]) -> list[str]:
    model: type[BaseModel] = Settings
    for part in parent:
        annotation = model.model_fields[part].annotation if part in model.model_fields else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _hint(loc: tuple[str, ...]) -> str:
    description = _description(loc)
    if description:
        return f"; {loc[-1]}: {description}"
    return f"; expected for example {EXAMPLES[loc[0]]}" if loc and loc[0] in EXAMPLES else ""


def _description(loc: tuple[str, ...]) -> str:
    model: type[BaseModel] = Settings
    for part in loc:
        field = model.model_fields.get(part)
        if field is None:
            return ""
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            model = field.annotation
            continue
        return field.description or ""
    return ""


def _unparsable(error: SettingsError, path: Path | None) -> str:
    """pydantic-settings refuses a variable that is not JSON before validating anything."""
    match = re.search(r'field "(\w+)"', str(error))
    field = match.group(1) if match else ""
    variable = _variable((field,))
    cause = error.__cause__
    reason = f"not valid JSON ({cause})" if isinstance(cause, json.JSONDecodeError) else str(
        cause or error)
    where = f"{variable}={_shown(variable)}" if variable else f"{path}: {field}"
    example = f"; expected for example {EXAMPLES[field]}" if field in EXAMPLES else ""
    return f"{where}: {reason}{example}"


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]

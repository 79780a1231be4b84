"""Where the client commands find the server and the access key that signs their requests.

Each value comes from the first place that has it: a command-line flag, an environment
variable (`BATCHYARD_ENDPOINT`, `BATCHYARD_KEY_ID`, `BATCHYARD_KEY_SECRET`), then the client
configuration file — `~/.config/batchyard/client.toml`, or the file `BATCHYARD_CLIENT_CONFIG`
names — which holds `endpoint`, `key_id` and `key_secret`.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchyard.errors import BatchyardError

DEFAULT_ENDPOINT = "http://127.0.0.1:9900"
CONFIG_ENV = "BATCHYARD_CLIENT_CONFIG"
DEFAULT_CONFIG = Path("~/.config/batchyard/client.toml")
_KEYS = ("endpoint", "key_id", "key_secret")


class ClientConfigurationError(BatchyardError):
    """The endpoint or the access key is missing or unusable."""

    code = "InvalidClientConfiguration"


@dataclass(frozen=True)
class Connection:
    """The server to talk to and the key to sign with."""

    endpoint: str
    key_id: str
    key_secret: str


def config_path() -> Path:
    """The client configuration file (it need not exist)."""
    return Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG).expanduser()


def read_config(path: Path) -> dict[str, str]:
    """`endpoint`, `key_id`, `key_secret` from the TOML file; {} when there is no file."""
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as error:
        raise ClientConfigurationError(f"{path}: cannot be read ({error})") from None
    except tomllib.TOMLDecodeError as error:
        raise ClientConfigurationError(f"{path}: not valid TOML ({error})") from None
    values = {key: data[key] for key in _KEYS if key in data}
    wrong = [key for key, value in values.items() if not isinstance(value, str)]
    if wrong:
        raise ClientConfigurationError(f"{path}: {', '.join(wrong)} must be a string")
    return values


def endpoint_configured(endpoint: str | None) -> bool:
    """Whether a server is configured (flag, BATCHYARD_ENDPOINT or the file's `endpoint`):
    client commands then talk to it, otherwise they work on the local data directory."""
    return bool(endpoint) or bool(read_config(config_path()).get("endpoint"))


def resolve(endpoint: str | None, key_id: str | None, key_secret: str | None) -> Connection:
    """Flags (or, through Typer, their environment variables) first, then the file.

    Typer has already applied the environment variables to the flags, so a value that is
    still None is looked up in the configuration file.
    """
    path = config_path()
    from_file = read_config(path) if None in (endpoint, key_id, key_secret) else {}
    connection = Connection(
        endpoint=(endpoint or from_file.get("endpoint") or DEFAULT_ENDPOINT).rstrip("/"),
        key_id=key_id or from_file.get("key_id", ""),
        key_secret=key_secret or from_file.get("key_secret", ""))
    _check(connection, path)
    return connection


def _check(connection: Connection, path: Path) -> None:
    if not connection.endpoint.startswith(("http://", "https://")):
        raise ClientConfigurationError(
            f"endpoint {connection.endpoint!r} is not an http:// or https:// URL "
            f"(for example {DEFAULT_ENDPOINT})")
    missing = [name for name, value in (("key id", connection.key_id),
                                        ("key secret", connection.key_secret)) if not value]
    if missing:
        raise ClientConfigurationError(
            f"no access {' and '.join(missing)}: pass --key-id and --key-secret, set "
            f"BATCHYARD_KEY_ID and BATCHYARD_KEY_SECRET, or write key_id and key_secret in "
            f"{path}. To get a key, run `batchyard keys create` where the server runs.")

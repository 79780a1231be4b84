"""`batchyard keys create|list|revoke`: the access keys that sign requests to `batchyard serve`.

Mounted by the main app with `app.add_typer(keys_app, name="keys")`.
"""

from __future__ import annotations

import json
import shlex
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

from batchyard.cli.configuration import load_settings
from batchyard.cli.options import DataDirOption
from batchyard.errors import BatchyardError, NotFound
from batchyard.settings import Settings

if TYPE_CHECKING:  # the key store loads SQLAlchemy: imported when a keys command runs
    from batchyard.adapters.credentials import AccessKey, KeyStore

EXIT_NOT_FOUND = 1
EXIT_INVALID = 2

DatabaseUrlOption = Annotated[str | None, typer.Option(
    "--database-url", metavar="URL", show_default=False,
    help="SQLAlchemy URL of the state database "
         "[env BATCHYARD_DATABASE_URL; default: SQLite in the data dir]")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text")]

CREATE_EPILOG = """\
**Examples**

```
batchyard keys create --tenant alice --description "alice's laptop"
eval "$(batchyard keys create --tenant default)"   # sets BATCHYARD_KEY_ID/KEY_SECRET
batchyard keys create --tenant alice --json
```

Prints `export BATCHYARD_KEY_ID=… BATCHYARD_KEY_SECRET=…`, ready to paste into a shell
(a note goes to stderr). Jobs run with `batchyard run` belong to tenant `default`: a key
made with `--tenant default` sees them on a server started on the same data directory.
"""

LIST_EPILOG = """\
**Examples**

```
batchyard keys list
batchyard keys list --tenant alice --json
```
"""

REVOKE_EPILOG = """\
**Examples**

```
batchyard keys revoke BY7Q2M4XJ8KD3P6R9TWA
```
"""

keys_app = typer.Typer(
    name="keys", no_args_is_help=True, add_completion=False, rich_markup_mode="markdown",
    help="Manage access keys: each key (AccessKeyId + AccessKeySecret) signs API requests "
         "for one tenant, and a tenant sees only its own jobs.")

_out = Console(highlight=False)
_err = Console(stderr=True, highlight=False, soft_wrap=True)


def settings_for(data_dir: Path | None, database_url: str | None,
                 slots: int | None = None, config: Path | None = None) -> Settings:
    """Settings from the environment and configuration file, the given flags first."""
    settings = load_settings(data_dir, slots, config=config)
    if database_url:
        settings = settings.model_copy(update={"database_url": database_url})
    return settings


def open_key_store(settings: Settings) -> KeyStore:
    from batchyard.adapters.credentials import KeyStore, master_key, open_database

    database = open_database(settings.resolved_database_url)
    return KeyStore(database, master_key(settings.data_dir.resolve()))


def _store_or_exit(data_dir: Path | None, database_url: str | None) -> KeyStore:
    try:
        return open_key_store(settings_for(data_dir, database_url))
    except BatchyardError as error:
        _fail(error.message, EXIT_INVALID)


def _fail(message: str, status: int) -> NoReturn:
    _err.print(Text.assemble(("error: ", "red"), message))
    raise typer.Exit(status)


@keys_app.command(epilog=CREATE_EPILOG)
def create(
    tenant: Annotated[str, typer.Option(
        "--tenant", metavar="TENANT", help="Tenant the key acts for (`batchyard run` jobs "
        "belong to tenant default)")] = "default",
    description: Annotated[str, typer.Option(
        "--description", metavar="NOTE", help="A note: who uses it")] = "",
    data_dir: DataDirOption = None, database_url: DatabaseUrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a key for TENANT and print its id and secret (the secret is shown only now)."""
    store = _store_or_exit(data_dir, database_url)
    try:
        key = store.create(tenant, description)
    except BatchyardError as error:
        _fail(error.message, EXIT_INVALID)
    if as_json:
        typer.echo(json.dumps({"AccessKeyId": key.id, "AccessKeySecret": key.secret,
                               "Tenant": key.tenant}))
        return
    typer.echo(export_line(key))
    _err.print(Text(f"Access key {key.id} for tenant {key.tenant}. Keep the secret now: it "
                    "is stored encrypted and never shown again.", style="yellow"))


def export_line(key: AccessKey) -> str:
    """Shell lines a user pastes (or `eval`s) so client commands sign with this key."""
    return (f"export BATCHYARD_KEY_ID={shlex.quote(key.id)} "
            f"BATCHYARD_KEY_SECRET={shlex.quote(key.secret)}")


@keys_app.command("list", epilog=LIST_EPILOG)
def list_keys(
    tenant: Annotated[str | None, typer.Option(
        "--tenant", metavar="TENANT", help="Only this tenant's keys")] = None,
    data_dir: DataDirOption = None, database_url: DatabaseUrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """List keys (never their secrets), oldest first."""
    keys = _store_or_exit(data_dir, database_url).list(tenant)
    if as_json:
        typer.echo(json.dumps([_key_json(key) for key in keys]))
        return
    table = Table(Column("AccessKeyId", no_wrap=True), "Tenant", "Created (UTC)", "State",
                  "Description")
    for key in keys:
        state = "active" if key.active else f"revoked {_when(key.revoked)}"
        table.add_row(key.id, key.tenant, _when(key.created), state, key.description)
    _out.print(table)


@keys_app.command(epilog=REVOKE_EPILOG)
def revoke(
    key_id: Annotated[str, typer.Argument(metavar="ACCESS_KEY_ID", help="The key to revoke")],
    data_dir: DataDirOption = None, database_url: DatabaseUrlOption = None,
) -> None:
    """Revoke a key: requests signed with it are refused from now on."""
    try:
        key = _store_or_exit(data_dir, database_url).revoke(key_id)
    except NotFound as error:
        _fail(error.message, EXIT_NOT_FOUND)
    _out.print(f"revoked {key.id} (tenant {key.tenant})")


def _key_json(key: AccessKey) -> dict[str, object]:
    return {"AccessKeyId": key.id, "Tenant": key.tenant, "Description": key.description,
            "CreationTime": _iso(key.created), "Revoked": not key.active,
            "RevocationTime": _iso(key.revoked)}


def _when(moment: float | None) -> str:
    if moment is None:
        return ""
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _iso(moment: float | None) -> str:
    if moment is None:
        return ""
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

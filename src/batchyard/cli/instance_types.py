"""`batchyard instance-types`: the instance types offered, by a server (`GET /available`) or
by this machine's configuration (with whether each can run here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from batchyard.cli.client import (
    EndpointOption,
    KeyIdOption,
    KeySecretOption,
    error_line,
)
from batchyard.cli.client_config import (
    ClientConfigurationError,
    endpoint_configured,
    resolve,
)
from batchyard.cli.configuration import ConfigurationError, load_settings
from batchyard.cli.documents import print_json
from batchyard.cli.execution import EXIT_FAILED, EXIT_INVALID
from batchyard.cli.options import ConfigOption
from batchyard.cli.reporting import JsonOption, console, emit
from batchyard.domain.instance_types import infeasible, shortfall
from batchyard.errors import BatchyardError
from batchyard.settings import Settings, machine

INSTANCE_TYPES_EPILOG = """\
**Examples**

```
batchyard instance-types                       # this machine's configuration
batchyard instance-types --json | jq -r '.AvailableClusterInstanceType[].InstanceType'
batchyard instance-types --endpoint http://batch.example:9090   # what a server offers
```

Memory is in GiB. Without a server, the last column says whether the type can ever run on
this machine under the configured capacity mode ("slots" counts memory only, "strict"
vCPUs too); a job naming a type that cannot is refused at submission. The types come
from the built-in catalogue and the `instance_types` setting; see docs/instance-types.md.
--json prints GET /available's `AvailableClusterInstanceType` list (locally with
`RunsHere` and `Lacking`: "memory", "vCPUs" or "").
"""

_out = console()
_err = console(stderr=True)


def instance_types(
    as_json: JsonOption = False, config: ConfigOption = None,
    endpoint: EndpointOption = None, key_id: KeyIdOption = None,
    key_secret: KeySecretOption = None,
) -> None:
    """List the instance types (InstanceType names with vCPU, memory and GPUs) a job may use.

    With a server: those it offers. Without: those of this machine's configuration, and
    whether each can run here; the default one (for a task that names none) is marked.
    """
    items = _remote(endpoint, key_id, key_secret) if endpoint_configured(endpoint) \
        else _local(config)
    if as_json:
        print_json({"AvailableClusterInstanceType": items})
        return
    emit(_out, _table(items))


def _local(config: Path | None) -> list[dict[str, Any]]:
    settings = _settings(config)
    catalogue, here = settings.catalogue(), machine()
    items = []
    for shape in catalogue:
        items.append({**shape.available(shape == catalogue.default),
                      "RunsHere": infeasible(shape, here, settings.capacity) is None,
                      "Lacking": shortfall(shape, here, settings.capacity)})
    return items


def _settings(config: Path | None) -> Settings:
    try:
        return load_settings(config=config)
    except ConfigurationError as error:
        _err.print(Text.assemble(("error: ", "red"), error.message))
        raise typer.Exit(EXIT_INVALID) from None


def _remote(endpoint: str | None, key_id: str | None,
            key_secret: str | None) -> list[dict[str, Any]]:
    from batchyard.cli.remote import RemoteClient

    try:
        with RemoteClient(resolve(endpoint, key_id, key_secret)) as client:
            answer = client.call("GET", "/available")
    except ClientConfigurationError as error:
        _err.print(Text.assemble(("error: ", "red"), error.message))
        raise typer.Exit(EXIT_INVALID) from None
    except BatchyardError as error:
        _err.print(Text.assemble(("error: ", "red"), error_line(error)))
        raise typer.Exit(EXIT_FAILED) from None
    items: list[dict[str, Any]] = answer.get("AvailableClusterInstanceType") or []
    return items


def _table(items: list[dict[str, Any]]) -> Table:
    local = any("RunsHere" in item for item in items)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for title, justify in (("InstanceType", "left"), ("vCPU", "right"), ("Memory", "right"),
                           ("GPU", "right"), ("Family", "left")):
        table.add_column(title, justify=justify)  # type: ignore[arg-type]
    if local:
        table.add_column("Here")
    for item in items:
        name = item.get("InstanceType", "")
        row = [f"{name} (default)" if item.get("Default") else name,
               str(item.get("CpuCore", "")), f"{item.get('MemorySize', '')} GiB",
               str(item.get("GpuCount", 0) or ""), str(item.get("Family", ""))]
        if local:
            row.append("yes" if item["RunsHere"] else f"no: needs more {item['Lacking']}")
        table.add_row(*row)
    return table


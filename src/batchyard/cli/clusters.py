"""`batchyard clusters create|list|show|resize|vms|delete`: BatchCompute clusters, on a server
or (no endpoint configured) on the local data directory, so that `batchyard run` can use
a ClusterId. Mounted by the main app with `app.add_typer(clusters_app, name="clusters")`.

Both backends answer with the API's JSON (`api.cluster_documents`), which `--json` prints
as is. Light to import: the store, the engine's modules and the HTTP client are loaded when
a command runs (`batchyard run` never loads this module's backends).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn, Protocol

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from batchyard.cli.client import (
    CONNECTION_HELP,
    EndpointOption,
    KeyIdOption,
    KeySecretOption,
    error_line,
)
from batchyard.cli.client_config import ClientConfigurationError, endpoint_configured, resolve
from batchyard.cli.configuration import ConfigurationError, load_settings
from batchyard.cli.documents import print_json
from batchyard.cli.execution import EXIT_FAILED, EXIT_INVALID
from batchyard.cli.options import DataDirOption
from batchyard.cli.reporting import JsonOption, console
from batchyard.errors import BatchyardError, SpecError

_out = console()
_err = console(stderr=True)

clusters_app = typer.Typer(
    name="clusters", no_args_is_help=True, rich_markup_mode="markdown",
    help="BatchCompute clusters: named groups of VMs that jobs run on (a task's ClusterId).")

ClusterIdArgument = Annotated[str, typer.Argument(metavar="CLUSTER_ID",
                                                  help="The cls-… id of the cluster")]


class ClusterClient(Protocol):
    """What the commands ask of a server (`RemoteClusters`) or a data dir (`LocalClusters`)."""

    @property
    def where(self) -> str: ...
    def create(self, body: dict[str, Any]) -> str: ...
    def list_clusters(self) -> list[dict[str, Any]]: ...
    def get(self, cluster_id: str) -> dict[str, Any]: ...
    def change(self, cluster_id: str, body: dict[str, Any]) -> None: ...
    def delete(self, cluster_id: str) -> None: ...
    def vms(self, cluster_id: str, group: str) -> list[dict[str, Any]]: ...
    def close(self) -> None: ...


class RemoteClusters:
    """The calls on `batchyard serve` (signed as the SDK signs them)."""

    def __init__(self, endpoint: str | None, key_id: str | None, key_secret: str | None
                 ) -> None:
        from batchyard.cli.remote import RemoteClient

        self.client = RemoteClient(resolve(endpoint, key_id, key_secret))

    @property
    def where(self) -> str:
        return self.client.where

    def close(self) -> None:
        self.client.close()

    def create(self, body: dict[str, Any]) -> str:
        return str(self.client.call("POST", "/clusters", body=body)["Id"])

    def list_clusters(self) -> list[dict[str, Any]]:
        return self.client.pages("/clusters", dict)

    def get(self, cluster_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = self.client.call("GET", f"/clusters/{cluster_id}")
        return answer

    def change(self, cluster_id: str, body: dict[str, Any]) -> None:
        self.client.call("PUT", f"/clusters/{cluster_id}", body=body)

    def delete(self, cluster_id: str) -> None:
        self.client.call("DELETE", f"/clusters/{cluster_id}")

    def vms(self, cluster_id: str, group: str) -> list[dict[str, Any]]:
        return self.client.pages(f"/clusters/{cluster_id}/groups/{group}/instances", dict)


def _fail(message: str, status: int) -> NoReturn:
    _err.print(Text.assemble(("error: ", "red"), message))
    raise typer.Exit(status)


@contextmanager
def _backend(endpoint: str | None, key_id: str | None, key_secret: str | None,
             data_dir: Path | None) -> Iterator[ClusterClient]:
    """The server's clusters, or the data dir's when no endpoint is configured; failures
    become one `error:` line (every problem of an invalid body, with its JSON path)."""
    try:
        backend = _open(endpoint, key_id, key_secret, data_dir)
        try:
            yield backend
        finally:
            backend.close()
    except SpecError as error:
        _problems(error.message, [str(problem) for problem in error.problems])
    except BatchyardError as error:
        problems = getattr(error, "problems", None)
        if problems:
            _problems(error_line(error), [str(p.get("Message") or p) for p in problems])
        _fail(error_line(error), EXIT_INVALID if getattr(error, "status", 0) == 400
              else EXIT_FAILED)


def _open(endpoint: str | None, key_id: str | None, key_secret: str | None,
          data_dir: Path | None) -> ClusterClient:
    if endpoint_configured(endpoint):
        try:
            return RemoteClusters(endpoint, key_id, key_secret)
        except ClientConfigurationError as error:
            _fail(error.message, EXIT_INVALID)
    from batchyard.cli.local_clusters import LocalClusters  # the store: local only

    try:
        return LocalClusters(load_settings(data_dir, None, None))
    except ConfigurationError as error:
        _fail(error.message, EXIT_INVALID)


def _problems(headline: str, lines: list[str]) -> NoReturn:
    _err.print(Text.assemble(("error: ", "red"), headline.split(": ")[0] + ":"))
    for line in lines:
        _err.print(f"  {line}", soft_wrap=True, markup=False)
    raise typer.Exit(EXIT_INVALID)


# ---- create ------------------------------------------------------------------------------

CREATE_EPILOG = """\
**Examples**

```
batchyard clusters create examples/cluster.json
CLUSTER=$(batchyard clusters create cluster.json --endpoint http://127.0.0.1:9900)
batchyard clusters create cluster.json --json | jq -r .Id
```

FILE is the body of BatchCompute's CreateCluster (`POST /clusters`): Name, ImageId,
InstanceType, Groups (name -> {DesiredVMCount, InstanceType…}), EnvVars, … Every group
gets its DesiredVMCount VMs. Exit status: 0 created (the id is printed); 1 the server
refused or could not be reached; 2 FILE is not valid (every problem with its JSON path).
""" + CONNECTION_HELP


@clusters_app.command(epilog=CREATE_EPILOG)
def create(file: Annotated[Path, typer.Argument(metavar="FILE",
                                                help="Cluster description (JSON)")],
           data_dir: DataDirOption = None, endpoint: EndpointOption = None,
           key_id: KeyIdOption = None, key_secret: KeySecretOption = None,
           json_output: JsonOption = False) -> None:
    """Create a cluster from FILE and print its id."""
    body = _read_body(file)
    with _backend(endpoint, key_id, key_secret, data_dir) as backend:
        cluster_id = backend.create(body)
    if json_output:
        print_json({"Id": cluster_id})
    else:
        typer.echo(cluster_id)


def _read_body(file: Path) -> dict[str, Any]:
    try:
        body = json.loads(file.read_text(encoding="utf-8"))
    except OSError as error:
        _fail(f"cannot read {file}: {error.strerror}", EXIT_INVALID)
    except ValueError as error:
        _fail(f"{file} is not JSON: {error}", EXIT_INVALID)
    if not isinstance(body, dict):
        _fail(f"{file} must hold one JSON object (a cluster description)", EXIT_INVALID)
    return body


# ---- list and show -----------------------------------------------------------------------

LIST_EPILOG = """\
**Examples**

```
batchyard clusters list
batchyard clusters list --json | jq -r '.Items[].Id'
```

VMs: each group's running/desired VMs (ActualVMCount follows DesiredVMCount). --json prints
the API's ListClusters answer: {"Items": [cluster…], "NextMarker": ""}.
""" + CONNECTION_HELP


@clusters_app.command(name="list", epilog=LIST_EPILOG)
def list_clusters(data_dir: DataDirOption = None, endpoint: EndpointOption = None,
                  key_id: KeyIdOption = None, key_secret: KeySecretOption = None,
                  json_output: JsonOption = False) -> None:
    """List the clusters, oldest first."""
    with _backend(endpoint, key_id, key_secret, data_dir) as backend:
        found = backend.list_clusters()
    if json_output:
        print_json({"Items": found, "NextMarker": ""})
    elif not found:
        _err.print("No clusters.")
    else:
        _out.print(clusters_table(found))


def clusters_table(found: list[dict[str, Any]]) -> Table:
    """Id, Name, State, VMs, Age: only the name is shortened to fit the console."""
    rows = [(cluster["Id"], cluster["Name"], cluster["State"], _groups_text(cluster),
             _age(cluster["CreationTime"])) for cluster in found]
    return _fitted(("Id", "Name", "State", "VMs", "Age"), rows, flexible={"Name"})


def _groups_text(cluster: dict[str, Any]) -> str:
    return ", ".join(f"{name} {group['ActualVMCount']}/{group['DesiredVMCount']}"
                     for name, group in cluster["Groups"].items())


SHOW_EPILOG = """\
**Examples**

```
batchyard clusters show cls-18ED51D78DEC5A59EB3DB3E0AE38BEC5
batchyard clusters show cls-18ED51D78DEC5A59EB3DB3E0AE38BEC5 --json | jq .Groups
```
""" + CONNECTION_HELP


@clusters_app.command(epilog=SHOW_EPILOG)
def show(cluster_id: ClusterIdArgument, data_dir: DataDirOption = None,
         endpoint: EndpointOption = None, key_id: KeyIdOption = None,
         key_secret: KeySecretOption = None, json_output: JsonOption = False) -> None:
    """Show a cluster: its groups, VM counts and latest operation logs."""
    with _backend(endpoint, key_id, key_secret, data_dir) as backend:
        cluster = backend.get(cluster_id)
    if json_output:
        print_json(cluster)
        return
    metrics = cluster["Metrics"]
    _out.print(Text.assemble((cluster["Id"], "bold"), f"  {cluster['Name']}  ",
                             cluster["State"]))
    _out.print(f"ImageId {cluster['ImageId']}  InstanceType {cluster['InstanceType'] or '—'}  "
               f"created {_age(cluster['CreationTime'])} ago", markup=False)
    _out.print(f"VMs: {metrics['RunningCount']} running, {metrics['StartingCount']} "
               f"starting, {metrics['StoppingCount']} stopping", markup=False)
    table = _table()
    for header in ("Group", "InstanceType", "Desired", "Running"):
        table.add_column(header, justify="right" if header in ("Desired", "Running")
                         else "left")
    for name, group in cluster["Groups"].items():
        table.add_row(name, group["InstanceType"], str(group["DesiredVMCount"]),
                      str(group["ActualVMCount"]))
    _out.print(table)
    for line in cluster["OperationLogs"][-5:]:
        _out.print(Text(line, style="dim"))


# ---- resize, vms, delete -----------------------------------------------------------------

RESIZE_EPILOG = """\
**Examples**

```
batchyard clusters resize cls-18ED51D78DEC5A59EB3DB3E0AE38BEC5 group1=3
batchyard clusters resize cls-18ED51D78DEC5A59EB3DB3E0AE38BEC5 group1=0 group2=5
```

Sets each group's DesiredVMCount (0 to 65536). Scaling down drains: a VM running an
instance finishes it before it goes. ActualVMCount follows.
""" + CONNECTION_HELP


@clusters_app.command(epilog=RESIZE_EPILOG)
def resize(cluster_id: ClusterIdArgument,
           sizes: Annotated[list[str], typer.Argument(metavar="GROUP=N",
                                                      help="A group and its new VM count")],
           data_dir: DataDirOption = None, endpoint: EndpointOption = None,
           key_id: KeyIdOption = None, key_secret: KeySecretOption = None) -> None:
    """Change the DesiredVMCount of one or more groups."""
    groups = {name: {"DesiredVMCount": count} for name, count in map(_size, sizes)}
    with _backend(endpoint, key_id, key_secret, data_dir) as backend:
        backend.change(cluster_id, {"Groups": groups})
    _err.print(f"Resized {cluster_id}: " + ", ".join(sizes), markup=False)


def _size(text: str) -> tuple[str, int]:
    name, _, count = text.partition("=")
    if not name or not count.strip().isdigit():
        _fail(f"{text!r}: write GROUP=N, e.g. group1=3", EXIT_INVALID)
    return name, int(count)


VMS_EPILOG = """\
**Examples**

```
batchyard clusters vms cls-18ED51D78DEC5A59EB3DB3E0AE38BEC5
batchyard clusters vms cls-18ED51D78DEC5A59EB3DB3E0AE38BEC5 group1 --json
```

Without GROUP, the VMs of every group. Reason says why a VM is Pending. --json prints
{"Items": [vm…], "NextMarker": ""} as ListClusterInstances does.
""" + CONNECTION_HELP


@clusters_app.command(epilog=VMS_EPILOG)
def vms(cluster_id: ClusterIdArgument,
        group: Annotated[str | None, typer.Argument(metavar="GROUP", show_default=False,
                                                    help="Only this group's VMs")] = None,
        data_dir: DataDirOption = None, endpoint: EndpointOption = None,
        key_id: KeyIdOption = None, key_secret: KeySecretOption = None,
        json_output: JsonOption = False) -> None:
    """List the VMs of a cluster (of one group)."""
    with _backend(endpoint, key_id, key_secret, data_dir) as backend:
        groups = [group] if group else list(backend.get(cluster_id)["Groups"])
        found = [vm | {"GroupName": vm.get("GroupName", name)}
                 for name in groups for vm in backend.vms(cluster_id, name)]
    if json_output:
        print_json({"Items": found, "NextMarker": ""})
        return
    rows = [(vm["Id"], vm["GroupName"], vm["State"], vm.get("InstanceType", ""),
             vm.get("Host", "") or "—", _age(vm["CreationTime"]), vm.get("Reason", ""))
            for vm in found]
    headers = ("Id", "Group", "State", "InstanceType", "Host", "Age", "Reason")
    _out.print(_fitted(headers, rows, flexible={"Host", "Reason"})) if found else _err.print(
        "No VMs.")


DELETE_EPILOG = """\
**Examples**

```
batchyard clusters delete cls-18ED51D78DEC5A59EB3DB3E0AE38BEC5
```

Refused while Waiting or Running jobs use the cluster (they are named: stop them first).
Otherwise the cluster goes Deleting, its VMs drain and go, then it is gone.
""" + CONNECTION_HELP


@clusters_app.command(epilog=DELETE_EPILOG)
def delete(cluster_id: ClusterIdArgument, data_dir: DataDirOption = None,
           endpoint: EndpointOption = None, key_id: KeyIdOption = None,
           key_secret: KeySecretOption = None) -> None:
    """Delete a cluster (its VMs are drained first)."""
    with _backend(endpoint, key_id, key_secret, data_dir) as backend:
        backend.delete(cluster_id)
    _err.print(f"Deleting {cluster_id}", markup=False)


FLEXIBLE_WIDTH = 30
"""At most this many characters of a flexible column (a VM's reason): the others, fixed,
must keep their room on an 80- or 100-column console."""


def _table() -> Table:
    return Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1))


def _fitted(headers: tuple[str, ...], rows: Sequence[Sequence[str]],
            flexible: set[str]) -> Table:
    """A table whose columns are never wrapped nor shortened (ids stay whole to copy),
    except the `flexible` ones, which end in … when the console is too narrow."""
    table = _table()
    for index, header in enumerate(headers):
        widest = max([len(header), *(len(row[index]) for row in rows)])
        table.add_column(header, no_wrap=True, overflow="ellipsis",
                         min_width=None if header in flexible else widest,
                         max_width=FLEXIBLE_WIDTH if header in flexible else None)
    for row in rows:
        table.add_row(*row)
    return table


def _age(text: str) -> str:
    """12s, 5m, 3h, 2d since an API time (`2026-12-02T09:50:00.000000Z`)."""
    try:
        moment = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError:
        return "—"
    seconds = max(int((datetime.now(UTC) - moment).total_seconds()), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"

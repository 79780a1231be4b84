"""`batchyard events`: the event stream (every committed change of your jobs, tasks and
instances, and each priority change) from a server or the local data directory, oldest
first, optionally following new ones as they commit."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.text import Text

from batchyard.cli.backends import Client
from batchyard.cli.client import (
    CONNECTION_HELP,
    EndpointOption,
    KeyIdOption,
    KeySecretOption,
    _session,
)
from batchyard.cli.documents import json_line
from batchyard.cli.options import DataDirOption
from batchyard.cli.reporting import console
from batchyard.cli.selection import resolve_job_id

FOLLOW_SECONDS = 0.5
"""How often `events --follow` asks for new events once it has read all there were."""
PAGE = 100
STATE_STYLES = {"Finished": "green", "Failed": "red", "Stopped": "yellow", "Running": "cyan"}

EVENTS_EPILOG = """\
**Examples**

```
batchyard events                      # every event so far
batchyard events -f                   # then new ones, as they commit
batchyard events --job job-18ED51D7 -f
batchyard events --since 1234 --json | jq -r .Type
```

Each line: the time (UTC), the event name (BatchCompute's: OnJobFinished, OnTaskRunning,
OnInstanceFailed, OnPriorityChange, …), the job, the task/instance, the state, and Seq (the
event's number within its job). --json prints each event as `GET /events` gives it, one
object per line; its `Id` is the cursor: pass the last one to --since to read on from there
(it stays valid across server restarts). With -f the command runs until Ctrl-C, asking for
new events every 0.5 s; without it, it ends after the last event, and prints the cursor to
read on from on stderr (`--since CURSOR`). A server shows the events of your key's tenant;
the data directory shows every job's.
""" + CONNECTION_HELP


def events(
    follow: Annotated[bool, typer.Option(
        "--follow", "-f", help="Keep printing new events as they commit, until Ctrl-C")] = False,
    job: Annotated[str | None, typer.Option(
        "--job", metavar="JOB_ID", show_default=False,
        help="Only this job's events (a job-… id or a unique start of one)")] = None,
    since: Annotated[str, typer.Option(
        "--since", metavar="CURSOR", show_default=False,
        help="Only events after this cursor (the Id of an event printed before)")] = "",
    json: Annotated[bool, typer.Option(
        "--json", help="One JSON object per event and line (the items of GET /events)")
    ] = False,
    data_dir: DataDirOption = None, endpoint: EndpointOption = None,
    key_id: KeyIdOption = None, key_secret: KeySecretOption = None,
) -> None:
    """Print the events of your jobs, oldest first: every state change of a job, a task or
    an instance, and every priority change, named as BatchCompute named them."""
    with _session(endpoint, key_id, key_secret, data_dir) as client:
        job_id = resolve_job_id(client, job) if job else ""
        show = _json_printer() if json else _line_printer()
        try:
            cursor = stream(client, since, job_id, show, follow)
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
    if not json:
        note = f"read on with: --since {cursor}" if cursor else "no events yet"
        console(stderr=True).print(Text(note, style="dim"))


def stream(client: Client, cursor: str, job_id: str, show: Callable[[dict[str, Any]], None],
           follow: bool, pause: float = FOLLOW_SECONDS) -> str:
    """Show every event after `cursor`, page by page; with `follow`, wait for new ones for
    ever. Returns the cursor after the last event shown."""
    while True:
        items, cursor, more = client.events(cursor, PAGE, job_id)
        for item in items:
            show(item)
        if not more:
            if not follow:
                return cursor
            time.sleep(pause)


def _json_printer() -> Callable[[dict[str, Any]], None]:
    def show(item: dict[str, Any]) -> None:
        sys.stdout.write(json_line(item))
        sys.stdout.flush()
    return show


def _line_printer() -> Callable[[dict[str, Any]], None]:
    out = console()

    def show(item: dict[str, Any]) -> None:
        out.print(event_line(item))
    return show


def event_line(item: dict[str, Any]) -> Text:
    """`2026-12-01 08:30:00.123  OnInstanceFinished  job-…  count/3  Finished  #7`."""
    moment = str(item.get("Time", "")).replace("T", " ").removesuffix("Z")[:23]
    where = item.get("TaskName", "")
    if item.get("InstanceId") is not None:
        where = f"{where}/{item['InstanceId']}"
    state = str(item.get("State", ""))
    if item.get("Type") == "OnPriorityChange":
        state = f"{state}, priority {item.get('Priority')}"
    return Text.assemble(
        (moment, "dim"), "  ", (f"{item.get('Type', ''):<19}", "bold"), "  ",
        str(item.get("JobId", "")), "  ", (f"{where or '-':<12}", ""), "  ",
        (state, STATE_STYLES.get(str(item.get("State")), "")), "  ",
        (f"#{item.get('Seq', '')}", "dim"))

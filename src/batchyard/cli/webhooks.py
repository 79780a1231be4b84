"""`batchyard webhooks secret|deliveries|replay`: your signing secret and your webhook
deliveries on a server (webhooks are sent by `batchyard serve` only). Mounted by the main
app with `app.add_typer(webhooks_app, name="webhooks")`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

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
from batchyard.cli.documents import print_json
from batchyard.cli.execution import EXIT_FAILED, EXIT_INVALID
from batchyard.cli.reporting import JsonOption, console
from batchyard.errors import BatchyardError

if TYPE_CHECKING:  # the HTTP client is imported when a command runs
    from batchyard.cli.remote import RemoteClient

_out = console()
_err = console(stderr=True)
RANGE = re.compile(r"^(?P<first>[0-9]{1,18})(?:-(?P<last>[0-9]{1,18}))?\Z")

webhooks_app = typer.Typer(
    name="webhooks", no_args_is_help=True, rich_markup_mode="markdown",
    help="Webhooks: the secret that signs them, and their deliveries (a job's "
         "Notification.Topic.Endpoint with an http(s):// address gets its events).")

WEBHOOKS_EPILOG = """\
**Examples**

```
batchyard webhooks secret              # make your signing secret (shown once)
batchyard webhooks secret --rotate     # a new one; the old one signs 24 h more
batchyard webhooks deliveries --failed
batchyard webhooks replay 42           # one failed delivery, again
batchyard webhooks replay 40-49        # every failed delivery with an id in 40..49
```
""" + CONNECTION_HELP


def _fail(message: str, status: int) -> NoReturn:
    _err.print(Text.assemble(("error: ", "red"), message))
    raise typer.Exit(status)


@contextmanager
def _server(endpoint: str | None, key_id: str | None,
            key_secret: str | None) -> Iterator[RemoteClient]:
    if not endpoint_configured(endpoint):
        _fail("webhooks are sent by a server, and none is configured: pass --endpoint (or "
              "set BATCHYARD_ENDPOINT, or `batchyard configure`)", EXIT_INVALID)
    from batchyard.cli.remote import RemoteClient

    try:
        with RemoteClient(resolve(endpoint, key_id, key_secret)) as client:
            yield client
    except ClientConfigurationError as error:
        _fail(error.message, EXIT_INVALID)
    except BatchyardError as error:
        _fail(error_line(error), EXIT_FAILED)


@webhooks_app.command(epilog=WEBHOOKS_EPILOG)
def secret(
    rotate: Annotated[bool, typer.Option(
        "--rotate", help="Replace the secret you have (the old one keeps signing, beside "
        "the new, for 24 h)")] = False,
    json: JsonOption = False, endpoint: EndpointOption = None, key_id: KeyIdOption = None,
    key_secret: KeySecretOption = None,
) -> None:
    """Make your tenant's signing secret and print it, once: verify each request's
    webhook-signature with it (Standard Webhooks). With a secret already made, says since
    when, unless --rotate."""
    with _server(endpoint, key_id, key_secret) as client:
        shown = client.call("GET", "/webhooks/secret")
        if shown["Exists"] and not rotate:
            if json:
                print_json(shown)
                return
            _out.print(f"you have a signing secret since {shown['CreationTime']}; it is "
                       "shown only when made: `batchyard webhooks secret --rotate` for a "
                       "new one")
            return
        made = client.call("POST", "/webhooks/secret")
    if json:
        print_json(made)
        return
    _out.print(made["Secret"], highlight=False, soft_wrap=True)
    note = ("the previous secret keeps signing for 24 h" if made["Rotated"]
            else "keep it: it is not shown again")
    _err.print(Text(f"{note} (verify with standardwebhooks.Webhook(secret).verify)",
                    style="dim"))


@webhooks_app.command(epilog=WEBHOOKS_EPILOG)
def deliveries(
    failed: Annotated[bool, typer.Option("--failed", help="Only failed deliveries")] = False,
    json: JsonOption = False, endpoint: EndpointOption = None, key_id: KeyIdOption = None,
    key_secret: KeySecretOption = None,
) -> None:
    """List your webhook deliveries, oldest first: each event sent (or to be sent) to an
    endpoint, its state (Pending, Delivered, Failed), attempts and last answer."""
    with _server(endpoint, key_id, key_secret) as client:
        items = client.pages("/webhooks/deliveries", dict,
                             {"State": "Failed"} if failed else {})
    if json:
        print_json({"Items": items})
        return
    if not items:
        _out.print("no deliveries" + (" failed" if failed else ""))
        return
    table = Table(box=box.SIMPLE, show_edge=False)
    for title in ("ID", "STATE", "TYPE", "JOB", "SEQ", "TRIES", "LAST ANSWER", "ENDPOINT"):
        table.add_column(title, overflow="fold")
    for item in items:
        answer = str(item["LastStatus"] or "") or item["LastError"][:60]
        style = {"Failed": "red", "Delivered": "green"}.get(item["State"], "")
        table.add_row(item["Id"], Text(item["State"], style=style), item["Type"],
                      item["JobId"], str(item["Seq"]), str(item["Attempts"]), answer,
                      item["Endpoint"])
    _out.print(table)


@webhooks_app.command(epilog=WEBHOOKS_EPILOG)
def replay(
    ids: Annotated[str, typer.Argument(
        metavar="ID|FROM-TO", help="A delivery id, or a range of ids (both included)")],
    json: JsonOption = False, endpoint: EndpointOption = None, key_id: KeyIdOption = None,
    key_secret: KeySecretOption = None,
) -> None:
    """Send failed deliveries again (their endpoints made active again, e.g. after a 410),
    in order."""
    found = RANGE.match(ids.strip())
    if found is None:
        _fail(f"{ids!r} is not a delivery id or a range: write 42 or 40-49 (the IDs "
              "`batchyard webhooks deliveries --failed` lists)", EXIT_INVALID)
    first, last = found.group("first"), found.group("last")
    with _server(endpoint, key_id, key_secret) as client:
        answer: dict[str, Any]
        if last is None:
            answer = client.call("POST", f"/webhooks/deliveries/{first}/replay")
        else:
            answer = client.call("POST", "/webhooks/deliveries/replay",
                                 body={"From": int(first), "To": int(last)})
    if json:
        print_json(answer)
        return
    replayed = answer["Replayed"]
    _out.print(f"replaying {len(replayed)} deliver{'y' if len(replayed) == 1 else 'ies'}"
               + (f": {', '.join(replayed)}" if replayed else " (none failed in that range)"))

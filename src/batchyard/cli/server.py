"""`batchyard serve`: the BatchCompute REST API on uvicorn.

Registered by the main app with `app.command(epilog=SERVE_EPILOG)(serve)`.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from batchyard.cli.keys import DatabaseUrlOption, open_key_store, settings_for
from batchyard.cli.options import DataDirOption, SlotsOption
from batchyard.errors import BatchyardError

EXIT_INVALID = 2
SERVE_EPILOG = """\
**Examples**

```
batchyard keys create --tenant alice
batchyard serve --port 9900 --data-dir /srv/batchyard
```

Then, with the official SDK: `Client.register_region('local', '127.0.0.1', 9900)` and
`Client('127.0.0.1', ACCESS_KEY_ID, ACCESS_KEY_SECRET)`.
"""

_err = Console(stderr=True, highlight=False)


def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port")] = 9900,
    data_dir: DataDirOption = None, database_url: DatabaseUrlOption = None,
    slots: SlotsOption = None,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level")] = "info",
) -> None:
    """Serve the BatchCompute REST API (version 2015-11-11) and run its jobs, until Ctrl-C.

    Requests are signed with access keys made by `batchyard keys create`.
    """
    import uvicorn

    from batchyard.api import create_app
    from batchyard.api.protocols import http_protocol

    try:
        settings = settings_for(data_dir, database_url, slots)
        key_count = len([key for key in open_key_store(settings).list() if key.active])
    except BatchyardError as error:
        _err.print(Text.assemble(("error: ", "red"), error.message))
        raise typer.Exit(EXIT_INVALID) from None
    _err.print(f"batchyard API on http://{host}:{port} — data in {settings.data_dir.resolve()}, "
               f"{settings.slots} slots, {key_count} active access keys")
    if not key_count:
        _err.print(Text("No access key yet: create one with `batchyard keys create "
                        "--tenant NAME`.", style="yellow"))
    # Requests uvicorn cannot parse are answered with JSON too, like every other error.
    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level,
                http=http_protocol())


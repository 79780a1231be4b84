"""`batchyard serve`: the BatchCompute REST API on uvicorn.

Registered by the main app with `app.command(epilog=SERVE_EPILOG)(serve)`.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from batchyard.cli.keys import DatabaseUrlOption, open_key_store, settings_for
from batchyard.cli.options import ConfigOption, DataDirOption, SlotsOption
from batchyard.errors import BatchyardError

if TYPE_CHECKING:
    from batchyard.runner.confinement import Confinement
    from batchyard.settings import Settings

EXIT_INVALID = 2
SWITCH_INTERVAL = 0.0005
"""Seconds a thread holds the GIL before another waiting one gets it, under `serve`."""
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
SERVE_EPILOG = """\
**Examples**

```
batchyard keys create --tenant alice
batchyard serve --port 9900 --data-dir /srv/batchyard
batchyard serve --host 0.0.0.0 --config /etc/batchyard/batchyard.toml --log-level warning
```

Logs go to stderr, one line per request and one when a job starts or ends, e.g.
`2026-12-02T03:04:05.678Z INFO batchyard.requests: GET /jobs 200 3.1ms tenant=alice
key=BY7Q2M4XJ8KD3P6R9TWA request=…`.

Then, with the official SDK: `Client.register_region('local', '127.0.0.1', 9900)` and
`Client('127.0.0.1', ACCESS_KEY_ID, ACCESS_KEY_SECRET)`.
"""

_err = Console(stderr=True, highlight=False, soft_wrap=True)


def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port")] = 9900,
    data_dir: DataDirOption = None, database_url: DatabaseUrlOption = None,
    slots: SlotsOption = None, config: ConfigOption = None,
    log_level: Annotated[str, typer.Option(
        "--log-level", metavar="LEVEL", help="Least important server log lines shown: "
        "critical, error, warning, info (a line per request and per job), debug, trace")] = "info",
    insecure_no_sandbox: Annotated[bool, typer.Option(
        "--insecure-no-sandbox", help="UNSAFE: run attempts unconfined, as the server's user, "
        "with no sandbox (any tenant can then read the database and keys and take over the "
        "installation); for trusted single-user set-ups without bubblewrap only "
        "[env BATCHYARD_INSECURE_NO_SANDBOX]")] = False,
    provider: Annotated[str | None, typer.Option(
        "--provider", metavar="local|ray", help="Where VMs run: 'local' (this machine, the "
        "default) or 'ray' (the nodes of a Ray cluster: docs/deploy-ray.md) "
        "[env BATCHYARD_PROVIDER]")] = None,
    ray_address: Annotated[str | None, typer.Option(
        "--ray-address", metavar="HOST:PORT", help="With --provider ray: the Ray cluster's "
        "GCS address [env BATCHYARD_RAY_ADDRESS]")] = None,
) -> None:
    """Serve the BatchCompute REST API (version 2015-11-11) and run its jobs, until Ctrl-C.

    The web console is at http://HOST:PORT/console (sign in with an access key; turn it
    off with `console = false` in the config file or BATCHYARD_CONSOLE=false). Prometheus
    metrics are at /metrics (docs/operations.md; set metrics_token to require a token).

    Requests are signed with access keys made by `batchyard keys create`. Every attempt
    runs confined (docs/security.md): in a bubblewrap sandbox, as an unprivileged user when
    the server is root, with limits on memory, processes and disk; the server refuses to
    start when it cannot confine them.
    """
    import uvicorn

    from batchyard.api import create_app
    from batchyard.api.protocols import http_protocol
    from batchyard.hosting import confinement
    from batchyard.runner.sandbox import check_sandbox

    level = _log_level(log_level)
    try:
        settings = settings_for(data_dir, database_url, slots, config)
        if insecure_no_sandbox:
            settings = settings.model_copy(update={"insecure_no_sandbox": True})
        settings = _with_provider(settings, provider, ray_address)
        policy = confinement(settings, serving=True)
        if policy.sandbox:
            check_sandbox(root=os.geteuid() == 0, user_base=policy.user_base)
        key_count = len([key for key in open_key_store(settings).list() if key.active])
    except BatchyardError as error:
        _err.print(Text.assemble(("error: ", "red"), error.message))
        raise typer.Exit(EXIT_INVALID) from None
    _err.print(f"batchyard API on http://{host}:{port} — data in {settings.data_dir.resolve()}, "
               f"{_where(settings)}, {key_count} active access keys, attempts "
               f"{_confinement_text(policy)}")
    if not policy.sandbox:
        _err.print(Text("WARNING: --insecure-no-sandbox: attempts run unconfined as this "
                        "server's user; any tenant can read its data and keys.", style="red"))
    if not key_count:
        _err.print(Text("No access key yet: create one with `batchyard keys create "
                        "--tenant NAME`.", style="yellow"))
    # The engine's loop shares this interpreter with the API: a request waiting for the GIL
    # behind a step waits up to the switch interval (5 ms by default) at each call into
    # SQLite or the kernel. 0.5 ms keeps requests quick while the engine is busy
    # (bench/README.md, api.py).
    sys.setswitchinterval(SWITCH_INTERVAL)
    # Requests uvicorn cannot parse are answered with JSON too, like every other error.
    app = create_app(settings, address=f"http://{host}:{port}")
    if settings.console:
        from batchyard.console.app import install

        install(app)
    uvicorn.run(app, host=host, port=port,
                log_level=level,
                log_config=log_config(level), access_log=False, http=http_protocol())


def _where(settings: Settings) -> str:
    """Where VMs run, for the start-up line."""
    if settings.provider == "ray":
        return f"VMs on the Ray cluster at {settings.ray_address or 'RAY_ADDRESS'}"
    return f"{settings.slots} slots"


def _with_provider(settings: Settings, provider: str | None, ray_address: str | None
                   ) -> Settings:
    """The settings with `--provider` and `--ray-address` applied, checked: the Ray provider
    needs object storage every node reaches."""
    if provider is not None and provider not in ("local", "ray"):
        raise BatchyardError(f"--provider {provider!r}: use 'local' or 'ray'")
    changes: dict[str, object] = {}
    if provider is not None:
        changes["provider"] = provider
    if ray_address is not None:
        changes["ray_address"] = ray_address
    settings = settings.model_copy(update=changes)
    if settings.provider == "ray":
        from batchyard.onray.provider import check_object_store

        check_object_store(settings, settings.shared_object_root)
    return settings


def _log_level(text: str) -> str:
    """`--log-level` in any case; anything else is refused with the levels there are."""
    level = text.lower()
    if level not in LOG_LEVELS:
        _err.print(Text.assemble(("error: ", "red"), f"--log-level {text!r}: use one of "
                                 f"{', '.join(LOG_LEVELS)}"))
        raise typer.Exit(EXIT_INVALID)
    return level


class UtcFormatter(logging.Formatter):
    """Timestamps in UTC, ISO 8601 with milliseconds: `2026-12-02T03:04:05.678Z`."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        moment = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{moment}.{int(record.msecs):03d}Z"


def log_config(level: str) -> dict[str, Any]:
    """uvicorn's and batchyard's log lines on stderr, each with a UTC timestamp and level.

    batchyard's own line per request (`batchyard.requests`) replaces uvicorn's access log;
    the engine logs a line when a job starts and when it ends.
    """
    handler = {"class": "logging.StreamHandler", "formatter": "stamped",
               "stream": "ext://sys.stderr"}
    logger = {"handlers": ["stderr"], "level": level.upper(), "propagate": False}
    return {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"stamped": {"()": UtcFormatter,
                                   "format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
        "handlers": {"stderr": handler},
        "loggers": {"uvicorn": logger, "batchyard": logger},
    }



def _confinement_text(policy: Confinement) -> str:
    if not policy.sandbox:
        return "UNCONFINED"
    network = "shared network" if policy.network else "no network"
    return f"confined (sandbox, {network})"

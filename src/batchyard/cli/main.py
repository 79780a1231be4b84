"""`batchyard`: run BatchCompute job descriptions locally and move data in and out of the store."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from batchyard import __version__
from batchyard.cli import help_format, objects, startup
from batchyard.cli.client import register as register_client_commands
from batchyard.cli.clusters import clusters_app
from batchyard.cli.configuration import ConfigurationError, load_settings
from batchyard.cli.events import EVENTS_EPILOG, events
from batchyard.cli.execution import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_INVALID,
    Engine,
    exit_status,
    observe,
    stop,
    watch,
)
from batchyard.cli.instance_types import INSTANCE_TYPES_EPILOG, instance_types
from batchyard.cli.job_file import JobFileError, check_fields, read_job_file
from batchyard.cli.keys import keys_app
from batchyard.cli.options import (
    BucketOption,
    ConfigOption,
    DataDirOption,
    SlotsOption,
    StrictOption,
)
from batchyard.cli.progress import PROGRESS_INTERVAL, Description, task_order
from batchyard.cli.reporting import (
    AllowFailedOption,
    JsonOption,
    Output,
    ProgressIntervalOption,
    console,
    report,
)
from batchyard.cli.server import SERVE_EPILOG, serve
from batchyard.cli.webhooks import webhooks_app
from batchyard.domain.spec import JobDescription, parse_job
from batchyard.errors import BatchyardError, SpecError
from batchyard.lock import note_work
from batchyard.settings import Settings

help_format.install()

if TYPE_CHECKING:
    from batchyard.orchestrator.engine import Engine as OrchestratorEngine

APP_HELP = """\
Run Alibaba Cloud BatchCompute job descriptions (DAG jobs) on this machine.

A job is a JSON file: a DAG of tasks, each task running its CommandLine as InstanceCount
instances that learn their index from BATCH_COMPUTE_DAG_INSTANCE_ID. Programs and data live
in an object store addressed as oss://bucket/key — by default a folder per bucket under
the data directory.
"""

APP_EPILOG = """\
**Examples**

```
batchyard oss cp log-count-data.txt oss://log-count-demo/log-count/
batchyard run examples/log-count/job.json
batchyard oss cat oss://log-count-demo/log-count/merge_result.json
```

Settings come from flags, then BATCHYARD_* environment variables, then batchyard.toml
(--config FILE); tab completion: batchyard --install-completion.
See docs/cli.md and docs/configuration.md.
"""

RUN_EPILOG = """\
**Examples**

```
batchyard run job.json
batchyard run job.json --slots 8 --data-dir /srv/batchyard
batchyard run job.json --bucket log-count-demo=/data/demo --quiet
batchyard run job.json --sandbox          # confined as under `serve`
batchyard run job.json --config batchyard.toml
batchyard run job.json --json | jq .Job.State
batchyard run --resume job-18ED51D78DEC5A59EB3DB3E0AE38BEC5   # finish what a kill -9 left
```

Exit status: 0 the job Finished; 1 it Failed or was Stopped; 2 the job file or
the options are invalid (every problem is listed with its JSON path); 3 the job
Finished but some instances failed (JobFailOnInstanceFail false; 0 with
--allow-failed-instances); 130 interrupted with Ctrl-C (the job is stopped first).

Jobs a previous `batchyard run` left Waiting or Running in the data directory (it was
killed) are not run in the background: they are marked Stopped, with a warning, and
`batchyard start JOB --wait` (or `run --resume JOB`) finishes them.
"""

app = startup.Typer(name="batchyard", help=APP_HELP, epilog=APP_EPILOG, no_args_is_help=True,
                    add_completion=True, rich_markup_mode="markdown",
                    pretty_exceptions_show_locals=False)  # locals may hold secrets (URLs, keys)
app.add_typer(objects.app, name="oss")
app.add_typer(keys_app, name="keys")
app.add_typer(clusters_app, name="clusters")
app.add_typer(webhooks_app, name="webhooks")
app.command(epilog=SERVE_EPILOG)(serve)
app.command("instance-types", epilog=INSTANCE_TYPES_EPILOG)(instance_types)

_out = console()
_err = console(stderr=True)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"batchyard {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: Annotated[bool, typer.Option(
        "--version", callback=_show_version, is_eager=True,
        help="Print the version and exit")] = False) -> None:
    """Run Alibaba Cloud BatchCompute job descriptions (DAG jobs) on this machine."""


@app.command(epilog=RUN_EPILOG)
def run(
    job_file: Annotated[Path | None, typer.Argument(
        metavar="JOB.json", help="Job description (BatchCompute JSON)", show_default=False)
    ] = None,
    data_dir: DataDirOption = None, slots: SlotsOption = None, bucket: BucketOption = None,
    config: ConfigOption = None,
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="No live progress or table: one result line, plus any failures")
    ] = False,
    sandbox: Annotated[bool, typer.Option(
        "--sandbox", help="Confine every attempt as `serve` does: bubblewrap, an "
        "unprivileged user (when root), limits, a minimal environment "
        "[env BATCHYARD_SANDBOX__ENABLED]")] = False,
    strict: StrictOption = False,
    json: JsonOption = False, allow_failed_instances: AllowFailedOption = False,
    progress_interval: ProgressIntervalOption = PROGRESS_INTERVAL,
    resume: Annotated[str | None, typer.Option(
        "--resume", metavar="JOB_ID", show_default=False,
        help="Instead of JOB.json, finish this Stopped or Failed job of the data directory: "
        "finished instances are kept, the others run")] = None,
) -> None:
    """Submit JOB.json, show live progress until it ends, then summarise.

    One line per task (in dependency order) shows its instances waiting, running,
    finished and failed. At the end: a table of the tasks, where the logs are, and for each
    failed instance its exit code, error and log objects.

    Plain tasks run directly, as you, with your environment; tasks with mapped paths
    (InputMapping, OutputMapping, LogMapping, Mounts) run in a bubblewrap sandbox.
    """
    if (job_file is None) == (resume is None):
        _err.print(Text.assemble(("error: ", "red"), "give JOB.json, or --resume JOB_ID "
                                 "(not both): batchyard run job.json"))
        raise typer.Exit(EXIT_INVALID)
    spec = _load_job(job_file, strict) if job_file is not None else None
    settings = _load_settings(data_dir, slots, bucket, config)
    if sandbox:
        settings = settings.model_copy(
            update={"sandbox": settings.sandbox.model_copy(update={"enabled": True})})
    output = Output(_out, quiet, json, allow_failed_instances, progress_interval)
    if resume is not None:
        raise typer.Exit(resume_job(settings, resume, output))
    assert spec is not None  # JOB.json was given: checked above
    raise typer.Exit(_run_job(settings, spec, output))


def _load_job(job_file: Path, strict: bool) -> JobDescription:
    """The job file parsed, once: the engine and the display take it as it is."""
    try:
        raw = read_job_file(job_file)
        check_fields(raw, str(job_file), strict, _err)
        return parse_job(raw)
    except JobFileError as error:
        _err.print(Text.assemble(("error: ", "red"), error.message))
        raise typer.Exit(EXIT_INVALID) from None
    except SpecError as error:
        _print_problems(job_file, error)
        raise typer.Exit(EXIT_INVALID) from None


def _print_problems(source: Path | str, error: SpecError) -> None:
    count = len(error.problems)
    _err.print(Text(f"{source}: {count} problem{'s' if count != 1 else ''} in the job "
                    "description:", style="red"))
    for problem in error.problems:
        _err.print(Text.assemble(f"  {problem} ", (f"[{problem.code}]", "dim")), soft_wrap=True)


def _load_settings(data_dir: Path | None, slots: int | None, bucket: list[str] | None,
                   config: Path | None) -> Settings:
    try:
        return load_settings(data_dir, slots, bucket, config)
    except ConfigurationError as error:
        _err.print(Text.assemble(("error: ", "red"), error.message))
        raise typer.Exit(EXIT_INVALID) from None


def _run_job(settings: Settings, spec: JobDescription, output: Output) -> int:
    return _run_in_engine(settings, spec, output, "Submitted",
                          lambda engine: engine.submit(spec))


def resume_job(settings: Settings, job_id: str, output: Output) -> int:
    """`run --resume` and local `start`: restart a Stopped or Failed job of the data dir
    (its finished instances are kept) and follow it as `run` follows a new one."""
    from batchyard.cli.local import LocalClient

    try:
        with LocalClient(settings) as client:
            stored = client.description(job_id)
            held = client.holder()
            if held is not None:
                raise client.busy(held)
    except BatchyardError as error:
        _err.print(Text.assemble(("error: ", "red"), f"{error.code}: {error.message}"))
        return EXIT_FAILED

    def restart(engine: OrchestratorEngine) -> str:
        engine.restart(job_id)
        return job_id
    return _run_in_engine(settings, stored, output, "Resumed", restart, resumed=job_id)


def _run_in_engine(settings: Settings, description: Description, output: Output, verb: str,
                   begin: Callable[[OrchestratorEngine], str], resumed: str = "") -> int:
    """Open the data dir's engine, `begin` the job (submit it, or restart it), follow it to
    its end and summarise; the exit status."""
    opened = _open_engine(settings)
    if opened is None:
        return EXIT_FAILED
    try:
        with opened as engine:
            _warn_abandoned(engine, resumed)
            try:
                job_id = begin(engine)
            except SpecError as error:
                _print_problems("job", error)
                return EXIT_INVALID
            except BatchyardError as error:
                _err.print(Text.assemble(("error: ", "red"), f"{error.code}: {error.message}"))
                return EXIT_FAILED
            note_work(settings.data_dir.resolve(), job_id)
            output.submitted(job_id, description, "Ctrl-C stops the job", verb,
                             settings.data_dir.resolve())
            return _follow(engine, job_id, description, output)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _open_engine(settings: Settings) -> OrchestratorEngine | None:
    """The engine of `run` on the data dir, or None after printing why it cannot start.

    Most of `run`'s start-up is here (the engine's, the store's and the agent's modules are
    imported on the way): without garbage collection (`startup.collection_paused`).
    """
    with startup.collection_paused():
        from batchyard.service import open_engine

        try:
            return open_engine(settings)
        except Exception as error:  # any failure to set up state, store or agent
            _err.print(Text.assemble(("error: ", "red"), f"cannot start batchyard with data "
                                     f"dir {settings.data_dir.resolve()}: {_reason(error)}"))
            return None


def _warn_abandoned(engine: OrchestratorEngine, resumed: str) -> None:
    """Say which jobs an ended `run` left active: they were Stopped, not run silently."""
    for found in engine.abandoned:
        if found.job_id == resumed:
            continue
        _err.print(Text(f"{found.job_id} ({found.name}) was left {found.state.value} by a "
                        "batchyard run that ended (Ctrl-C or kill -9?); it is marked Stopped: "
                        f"batchyard start {found.job_id} --wait finishes it", style="yellow"))


def _reason(error: Exception) -> str:
    if isinstance(error, BatchyardError):
        return error.message
    if isinstance(error, OSError) and error.strerror:
        return f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    return f"{type(error).__name__}: {error}"


def _follow(engine: Engine, job_id: str, description: Description, output: Output) -> int:
    """Progress until the job ends, then the summary; the exit status."""
    display = output.display()
    order = task_order(description)
    try:
        with display or nullcontext():
            view = watch(engine, job_id, order, display)
    except KeyboardInterrupt:
        return _interrupted(engine, job_id, order, description, output)
    status = exit_status(view.job, output.allow_failed_instances)
    report(output, engine, view, description, status)
    return status


def _interrupted(engine: Engine, job_id: str, order: list[str], description: Description,
                 output: Output) -> int:
    _err.print(Text(f"Interrupted: stopping {job_id} …", style="yellow"))
    try:
        stop(engine, job_id)
        view = observe(engine, job_id, order)
        report(output, engine, view, description, EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        pass
    return EXIT_INTERRUPTED


register_client_commands(app)  # submit, jobs, job, log, stop, start, delete, priority
app.command(epilog=EVENTS_EPILOG)(events)

"""Client commands: submit, jobs, job, log, watch, stop, start, delete, priority. Mounted
on the main app with `register(app)`.

Every command finds the server and its access key in flags, `BATCHYARD_*` environment
variables or the client configuration file (see `client_config`). When no server is
configured, every command but `submit` works on the local data directory instead
(`LocalClient`), with the same output.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.text import Text

from batchyard.api.warnings import unseen
from batchyard.cli.backends import Client
from batchyard.cli.client_config import (
    DEFAULT_ENDPOINT,
    ClientConfigurationError,
    endpoint_configured,
    resolve,
)
from batchyard.cli.client_views import (
    instance_details,
    instances_table,
    job_details,
    jobs_table,
    task_details,
    waiting_tasks,
)
from batchyard.cli.configuration import ConfigurationError, load_settings
from batchyard.cli.documents import (
    job_document,
    jobs_document,
    json_line,
    print_json,
    task_document,
)
from batchyard.cli.execution import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_INVALID,
    exit_status,
    failed_instances,
    observe,
    summarize,
)
from batchyard.cli.execution import watch as follow_job
from batchyard.cli.job_file import JobFileError, check_fields, read_job_file
from batchyard.cli.options import BucketOption, DataDirOption, StrictOption
from batchyard.cli.progress import (
    PROGRESS_INTERVAL,
    log_directories,
    logs_text,
    summary_table,
    task_order,
)
from batchyard.cli.remote import ApiError, RemoteClient, Unreachable
from batchyard.cli.remote_engine import POLL_SECONDS, RemoteEngine
from batchyard.cli.remote_logs import (
    LogPrinter,
    Selection,
    Source,
    follow,
    kept_attempts,
    missing_note,
    print_logs,
    sources,
)
from batchyard.cli.reporting import (
    AllowFailedOption,
    JsonOption,
    Output,
    ProgressIntervalOption,
    console,
    emit,
    report,
)
from batchyard.cli.selection import (
    JobFilter,
    SelectionError,
    confirm_many,
    instances_in,
    jobs_page,
    parse_states,
    resolve_job_id,
    resolve_job_ids,
    select_jobs,
)
from batchyard.cli.transfer import looked_in
from batchyard.documents import instance_view
from batchyard.domain.fields import UnknownField
from batchyard.domain.logs import STREAMS
from batchyard.domain.records import InstanceRecord, JobRecord, TaskRecord
from batchyard.domain.states import ACTIVE, TERMINAL, State
from batchyard.errors import BatchyardError
from batchyard.ports import ObjectStore
from batchyard.settings import Settings

_PANEL = "Server"
JOBS_WATCH_SECONDS = 1.0
"""How often `jobs --watch` lists the jobs again."""
EndpointOption = Annotated[str | None, typer.Option(
    "--endpoint", metavar="URL", envvar="BATCHYARD_ENDPOINT", show_default=False,
    rich_help_panel=_PANEL,
    help=f"The server, e.g. {DEFAULT_ENDPOINT} [config file: endpoint; none: work on the "
    "local --data-dir]")]
KeyIdOption = Annotated[str | None, typer.Option(
    "--key-id", metavar="ID", envvar="BATCHYARD_KEY_ID", show_default=False,
    rich_help_panel=_PANEL, help="AccessKeyId from `batchyard keys create` [config file: key_id]")]
KeySecretOption = Annotated[str | None, typer.Option(
    "--key-secret", metavar="SECRET", envvar="BATCHYARD_KEY_SECRET", show_default=False,
    rich_help_panel=_PANEL, help="AccessKeySecret of that key [config file: key_secret]")]
JobIdArgument = Annotated[str, typer.Argument(
    metavar="JOB_ID", help="job-… id, or a unique start of one (with or without job-)")]
JobIdsArgument = Annotated[list[str], typer.Argument(
    metavar="JOB_ID", help="one or more ids, or unique starts of ids")]
SelectedIdsArgument = Annotated[list[str] | None, typer.Argument(
    metavar="JOB_ID", show_default=False,
    help="ids or unique starts of ids; with --state/--name, only those of them that match")]
StatesOption = Annotated[list[str] | None, typer.Option(
    "--state", "-s", metavar="STATE[,STATE…]", show_default=False,
    help="Only those in one of these states: Waiting, Running, Finished, Failed, Stopped "
         "(comma-separated or repeated)")]
NameOption = Annotated[str | None, typer.Option(
    "--name", metavar="PATTERN", show_default=False,
    help="Only jobs whose name matches this glob (*, ?, [abc]; quote it)")]
YesOption = Annotated[bool, typer.Option(
    "--yes", "-y", help="Act on several jobs without asking (needed when stdin is not a "
                        "terminal)")]
TaskArgument = Annotated[str | None, typer.Argument(metavar="TASK", help="A task of the job",
                                                   show_default=False)]
InstanceArgument = Annotated[int | None, typer.Argument(
    metavar="INSTANCE", min=0, help="An instance id of the task (0, 1, …)", show_default=False)]

CONNECTION_HELP = """
The server and the key come from --endpoint/--key-id/--key-secret, else
BATCHYARD_ENDPOINT/BATCHYARD_KEY_ID/BATCHYARD_KEY_SECRET, else `endpoint`, `key_id`,
`key_secret` in ~/.config/batchyard/client.toml (or the file BATCHYARD_CLIENT_CONFIG names).
With no endpoint at all, the command works on the jobs of the local data directory
(--data-dir, BATCHYARD_DATA_DIR, default ./.batchyard), those `batchyard run` made.
"""

_out = console()
_err = console(stderr=True)


def _fail(message: str, status: int) -> NoReturn:
    _err.print(Text.assemble(("error: ", "red"), message))
    raise typer.Exit(status)


def error_line(error: BatchyardError) -> str:
    """`Code: message` — with the HTTP status when a server answered; just the message
    when no server answered (it says which and what to check)."""
    if isinstance(error, ApiError):
        return error.line
    return error.message if isinstance(error, Unreachable) else f"{error.code}: {error.message}"


@contextmanager
def _session(endpoint: str | None, key_id: str | None, key_secret: str | None,
             data_dir: Path | None = None, following: bool = False) -> Iterator[Client]:
    """The configured server's client or, with no endpoint configured, the local data
    directory's; their failures become one `error:` line. `following`: the command waits
    for a job to end (`watch`, `log -f`), so a local job nothing runs is an error
    (JobAbandoned) rather than a wait forever."""
    try:
        if endpoint_configured(endpoint):
            with _remote(endpoint, key_id, key_secret) as remote:
                yield remote
        else:
            from batchyard.cli.local import LocalClient  # the store and engine: local only

            with LocalClient(_settings(data_dir, None), following) as local:
                yield local
    except SelectionError as error:
        _fail(error.message, error.exit_status)
    except BatchyardError as error:
        _fail(error_line(error), EXIT_FAILED)


def _remote(endpoint: str | None, key_id: str | None, key_secret: str | None) -> RemoteClient:
    try:
        return RemoteClient(resolve(endpoint, key_id, key_secret))
    except ClientConfigurationError as error:
        _fail(error.message, EXIT_INVALID)


def _objects_opener(data_dir: Path | None, bucket: list[str] | None
                    ) -> Callable[[], ObjectStore]:
    def open_store() -> ObjectStore:
        from batchyard.hosting import open_objects

        return open_objects(_settings(data_dir, bucket))
    return open_store


def _settings(data_dir: Path | None, bucket: list[str] | None) -> Settings:
    try:
        return load_settings(data_dir, None, bucket)
    except ConfigurationError as error:
        _fail(error.message, EXIT_INVALID)


# --- submit -----------------------------------------------------------------------------

SUBMIT_EPILOG = """\
**Examples**

```
JOB=$(batchyard submit job.json)
batchyard submit job.json --wait
batchyard submit job.json --wait --endpoint http://10.0.0.5:9900
batchyard submit job.json --wait --json | jq .ExitStatus
```

Exit status: 0 submitted (with --wait: the job Finished); 1 the job Failed or was Stopped,
or the server refused the request or could not be reached; 2 the job file is not JSON or
the server found the job invalid (every problem with its JSON path), or no access key is
configured; 3 (with --wait) the job Finished but some instances failed
(JobFailOnInstanceFail false; 0 with --allow-failed-instances); 130 Ctrl-C while waiting
(the job keeps running).
""" + CONNECTION_HELP


def submit(
    job_file: Annotated[Path, typer.Argument(metavar="JOB.json",
                                             help="Job description (BatchCompute JSON)")],
    wait: Annotated[bool, typer.Option(
        "--wait", "-w", help="Show live progress until the job ends, then a summary")] = False,
    data_dir: DataDirOption = None, bucket: BucketOption = None,
    endpoint: EndpointOption = None, key_id: KeyIdOption = None,
    key_secret: KeySecretOption = None, strict: StrictOption = False,
    json: JsonOption = False, allow_failed_instances: AllowFailedOption = False,
    progress_interval: ProgressIntervalOption = PROGRESS_INTERVAL,
) -> None:
    """Submit JOB.json to the server and print its job id.

    With --wait, follow it like `batchyard run` does (polling the server): one line per
    task, then a table of the tasks and, for failed instances, their exit code, error and
    the tail of stderr (read from the object store: --data-dir/--bucket as the server's).
    """
    try:
        raw = read_job_file(job_file)
        warned = check_fields(raw, str(job_file), strict, _err)
    except JobFileError as error:
        _fail(error.message, EXIT_INVALID)
    if not endpoint_configured(endpoint):
        _fail(f"submit needs a server and none is configured (--endpoint, BATCHYARD_ENDPOINT "
              f"or endpoint in client.toml); to run it here, without one: batchyard run "
              f"{job_file}", EXIT_INVALID)
    output = Output(_out, False, json, allow_failed_instances, progress_interval)
    with _session(endpoint, key_id, key_secret) as client:
        assert isinstance(client, RemoteClient)
        job_id = _create(client, raw, job_file, warned)
        if not wait:
            output.job_id(job_id)
            return
        engine = RemoteEngine(client, _objects_opener(data_dir, bucket),
                              auto_release=bool(raw.get("AutoRelease")))
        status = _wait(engine, job_id, raw, output)
    raise typer.Exit(status)


def _create(client: RemoteClient, raw: dict[str, Any], job_file: Path,
            warned: list[UnknownField]) -> str:
    """Create the job; print the server's warnings not already printed (`warned`)."""
    try:
        created = client.create_job(raw)
    except ApiError as error:
        if error.status != 400:
            raise
        if not error.problems:
            _fail(error.line, EXIT_INVALID)
        count = len(error.problems)
        _err.print(Text(f"{job_file}: {count} problem{'s' if count != 1 else ''} in the job "
                        "description (found by the server):", style="red"))
        for problem in error.problems:
            code = f"[{problem['Code']}]" if problem.get("Code") else ""
            _err.print(Text.assemble(f"  {problem.get('Message') or problem} ", (code, "dim")))
        raise typer.Exit(EXIT_INVALID) from None
    for text in unseen(created.warnings, warned):
        _err.print(Text.assemble(("warning: ", "yellow"), f"server: {text}"), soft_wrap=True)
    return created.job_id


def _wait(engine: RemoteEngine, job_id: str, raw: dict[str, Any], output: Output,
          verb: str = "Submitted") -> int:
    """Follow the job by polling, with the display of `run`, until it ends; a summary."""
    output.submitted(job_id, raw, "Ctrl-C stops watching, the job keeps running", verb)
    display = output.display()
    order = task_order(raw)
    try:
        with display or nullcontext():
            view = follow_job(engine, job_id, order, display, POLL_SECONDS)
    except KeyboardInterrupt:
        _err.print(Text(f"Stopped watching; {job_id} keeps running (batchyard stop {job_id} "
                        "stops it)", style="yellow"))
        return EXIT_INTERRUPTED
    status = exit_status(view.job, output.allow_failed_instances)
    report(output, engine, view, raw, status)
    return status


# --- jobs -------------------------------------------------------------------------------

JOBS_EPILOG = """\
**Examples**

```
batchyard jobs
batchyard jobs --state Running
batchyard jobs --state Finished,Failed --all
batchyard jobs --limit 50 --marker job-18ED51D78DEC5A59EB3DB3E0AE38BEC5   # the next page
batchyard jobs -q --state Failed | xargs batchyard delete --yes   # ids, one per line
batchyard jobs --json | jq -r '.Items[].Name'
```

Newest first. Tasks and Inst are finished/total; Age is the time since creation. --json
prints the API's ListJobs answer: {"Items": [job…], "NextMarker": ""}.
""" + CONNECTION_HELP


def jobs(
    state: StatesOption = None,
    limit: Annotated[int, typer.Option(
        "--limit", "-n", min=1, max=100, help="Jobs per page (the server gives at most 100)")
    ] = 20,
    every: Annotated[bool, typer.Option("--all", "-a", help="Every page, not just one")
                     ] = False,
    marker: Annotated[str, typer.Option(
        "--marker", metavar="JOB_ID", help="Start the page at this job (a NextMarker)")] = "",
    ids_only: Annotated[bool, typer.Option(
        "--ids", "-q", help="Only the job ids, one per line")] = False,
    as_json: JsonOption = False,
    watching: Annotated[bool, typer.Option(
        "--watch", "-w", help="Redraw the table every second until no listed job is Waiting "
        "or Running (or Ctrl-C); with --json, one ListJobs document per line at each "
        "change")] = False,
    data_dir: DataDirOption = None,
    endpoint: EndpointOption = None, key_id: KeyIdOption = None,
    key_secret: KeySecretOption = None,
) -> None:
    """List your jobs, newest first: a page of --limit jobs, or --all of them.

    Without a server: every job of the data directory, whatever its tenant.
    """
    with _session(endpoint, key_id, key_secret, data_dir) as client:
        wanted = parse_states(state)
        if watching:
            raise typer.Exit(_watch_jobs(lambda: _list(client, marker, limit, wanted, every),
                                         as_json))
        found, marker = _list(client, marker, limit, wanted, every)
        where = "" if endpoint_configured(endpoint) else f" in {client.where}"
    if as_json:
        print_json(jobs_document(found, marker))
    elif found or ids_only:
        _show_jobs(found, ids_only)
        if marker:
            named = ",".join(one.value for one in wanted)
            _err.print(Text(f"More: batchyard jobs --limit {limit} --marker {marker}"
                            f"{' --state ' + named if named else ''} (or --all)", style="dim"))
    else:
        named = ",".join(one.value for one in wanted)
        _err.print(f"No {named + ' ' if named else ''}jobs{where}.")


def _list(client: Client, marker: str, limit: int, wanted: list[State],
          every: bool) -> tuple[list[JobRecord], str]:
    """A page of jobs in the wanted states (or every page)."""
    found, marker = jobs_page(client, marker, limit, wanted)
    while every and marker:
        more, marker = jobs_page(client, marker, limit, wanted)
        found += more
    return found, marker


def _show_jobs(found: list[JobRecord], ids_only: bool) -> None:
    """The ids alone, one per line, for scripts; else the table."""
    if ids_only:
        sys.stdout.write("".join(f"{one.id}\n" for one in found))
    else:
        _out.print(jobs_table(found, _out.width))


def _watch_jobs(listing: Callable[[], tuple[list[JobRecord], str]], as_json: bool) -> int:
    """Redraw the jobs table (in place on a terminal; when it changes, in a pipe) — or, with
    --json, print one ListJobs document per line each time the list changes (JSON lines) —
    until none of the listed jobs is active; Ctrl-C ends it sooner (exit status 130)."""
    from rich.live import Live

    shown: list[JobRecord] | None = None
    live_table = _out.is_terminal and not as_json
    try:
        with Live(console=_out, auto_refresh=False, transient=False) if live_table \
                else nullcontext() as live:
            while True:
                found, marker = listing()
                if found != shown:
                    _show_change(live, found, marker, as_json)
                    shown = found
                if not any(job.state in ACTIVE for job in found):
                    return 0
                time.sleep(JOBS_WATCH_SECONDS)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _show_change(live: Any, found: list[JobRecord], marker: str, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json_line(jobs_document(found, marker)))
        sys.stdout.flush()
        return
    table = jobs_table(found, _out.width)
    if live is not None:
        live.update(table, refresh=True)
    else:
        _out.print(table)


# --- job --------------------------------------------------------------------------------

JOB_EPILOG = """\
**Examples**

```
batchyard job job-18ED51D78DEC5A59EB3DB3E0AE38BEC5       # the job and a table of its tasks
batchyard job 18ED51D7                   # the same: a unique start of the id is enough
batchyard job 18ED51D7 count             # the task and a table of its instances
batchyard job 18ED51D7 count --state Failed,Stopped   # only those instances
batchyard job 18ED51D7 count 2           # one instance: result, retries, log objects
batchyard job 18ED51D7 count --json | jq '.Instances[].Result'
```

--json prints the API's representation: the job with "Tasks", the task with "Instances",
or the instance.
""" + CONNECTION_HELP


def job(
    job_id: JobIdArgument, task: TaskArgument = None, instance: InstanceArgument = None,
    state: StatesOption = None, as_json: JsonOption = False,
    data_dir: DataDirOption = None, endpoint: EndpointOption = None,
    key_id: KeyIdOption = None, key_secret: KeySecretOption = None,
) -> None:
    """Show a job with its tasks, a task with its instances (--state: only those in these
    states), or one instance."""
    with _session(endpoint, key_id, key_secret, data_dir) as client:
        job_id = resolve_job_id(client, job_id)
        states = parse_states(state)
        if states and (task is None or instance is not None):
            raise SelectionError("--state selects the instances of a task: give JOB_ID and "
                                 "TASK only, e.g. batchyard job JOB_ID TASK --state Failed")
        if task is not None and instance is not None:
            _show_instance(client.instance(job_id, task, instance), as_json, data_dir)
        elif task is not None:
            selected = instances_in(client.instances(job_id, task), states)
            _show_task(client.task(job_id, task), selected, as_json)
        elif as_json:
            print_json(job_document(client.job(job_id), client.tasks(job_id)))
        else:
            _show_job(client, job_id)


def _show_instance(instance: InstanceRecord, as_json: bool, data_dir: Path | None) -> None:
    if as_json:
        print_json(instance_view(instance))
        return
    kept = _kept_attempts(instance, data_dir)
    _out.print(instance_details(instance, kept))
    _err.print(Text(f"Logs: batchyard log {instance.job_id} {instance.task} "
                    f"{instance.instance_id}{' [--attempt N]' if kept else ''}", style="dim"))


def _kept_attempts(instance: InstanceRecord, data_dir: Path | None) -> list[int]:
    """The attempts whose logs were kept, as far as this machine's object store settings
    (--data-dir, the environment) reach them; none when the store cannot be opened: the
    instance is shown regardless."""
    if not instance.stdout_path:
        return []
    try:
        from batchyard.hosting import open_objects

        return kept_attempts(open_objects(load_settings(data_dir, None, None)),
                             instance.stdout_path)
    except (ConfigurationError, BatchyardError):
        return []


def _show_task(task: TaskRecord, instances: list[InstanceRecord], as_json: bool) -> None:
    if as_json:
        print_json(task_document(task, instances))
    else:
        _out.print(task_details(task, instances))


def _show_job(client: Client, job_id: str) -> None:
    description = client.description(job_id)
    engine = RemoteEngine(client, _objects_opener(None, None))
    view = observe(engine, job_id, task_order(description))
    summaries = summarize(engine, view)
    _out.print(job_details(view.job))
    _out.print()
    emit(_out, summary_table(view, summaries))
    waiting = waiting_tasks(view.tasks)
    if waiting is not None:
        _out.print(Text("\nWhy waiting", style="bold"))
        _out.print(waiting)
    failed = failed_instances(summaries)
    if failed:
        _out.print(Text("\nFailed instances", style="bold red"))
        _out.print(instances_table(failed))
    emit(_out, logs_text(log_directories(description)))


# --- log --------------------------------------------------------------------------------

LOG_EPILOG = """\
**Examples**

```
batchyard log job-18ED51D78DEC5A59EB3DB3E0AE38BEC5  # every log of the job
batchyard log 18ED51D7 count 2 --stdout     # exactly what instance 2 printed
batchyard log 18ED51D7 count 2 -f           # wait for it, then print it
batchyard log 18ED51D7 count --failed       # the logs of every failed instance
batchyard log 18ED51D7 count 2 --attempt 1  # the logs of its first attempt
```

The logs are objects in the server's store, read directly: run this where the server's
--data-dir (and --bucket settings) can be reached. A running instance's logs are uploaded
every few seconds (the server's log_interval, 5 s by default) and once more when its attempt
ends, so -f follows it with that delay (a retry replaces it: it is printed again from the
start). With more than one log, each starts with a `==> task/instance stream: url <==` line;
an empty one is `==> task/instance stream: (empty) <==`.

Every attempt that did not succeed (failed, timed out, stopped) also leaves copies of its
logs, named `<log>.attempt-<n>`; --attempt n prints them. n counts the runs of the instance
from 1: attempt n is the run with RetryCount n-1, unless the job was started again or the
server lost a run (those count too). `batchyard job JOB TASK INSTANCE` lists the attempts kept.
""" + CONNECTION_HELP


def log(
    job_id: JobIdArgument, task: TaskArgument = None, instance: InstanceArgument = None,
    follow_logs: Annotated[bool, typer.Option(
        "--follow", "-f", help="Keep printing new output until the instances end")] = False,
    stdout_only: Annotated[bool, typer.Option("--stdout", "-o", help="Only stdout")] = False,
    stderr_only: Annotated[bool, typer.Option("--stderr", "-e", help="Only stderr")] = False,
    failed: Annotated[bool, typer.Option(
        "--failed", help="Only the instances that Failed (of the job, or of TASK)")] = False,
    attempt: Annotated[int | None, typer.Option(
        "--attempt", metavar="N", min=1, show_default=False,
        help="The logs kept of attempt N (1 = the first run) instead of the latest ones")
    ] = None,
    data_dir: DataDirOption = None, bucket: BucketOption = None,
    endpoint: EndpointOption = None, key_id: KeyIdOption = None,
    key_secret: KeySecretOption = None,
) -> None:
    """Print the stdout and stderr of a job's instances (all, one task's, one's, or the failed
    ones), as they are or as an earlier attempt left them."""
    streams = [name for name, only in zip(STREAMS, (stdout_only, stderr_only), strict=True)
               if only] or list(STREAMS)
    objects = _objects_opener(data_dir, bucket)()
    with _session(endpoint, key_id, key_secret, data_dir, following=follow_logs) as client:
        job_id = resolve_job_id(client, job_id)
        description = client.description(job_id)
        selection = Selection(job_id, task, instance, task_order(description))
        instances = instances_in(selection.instances(client), [State.FAILED] if failed else [])
        logs = sources(description, instances, streams, attempt)
        printer = LogPrinter(objects, sys.stdout.buffer, _note, titled=len(logs) > 1,
                             mark_empty=not follow_logs)
        if follow_logs:
            _follow(client, selection, printer, logs)
            return
        missing = print_logs(printer, logs)
    if failed and not instances:
        _note(f"No failed instances in {job_id}{' task ' + task if task else ''}.")
    by_key = {(one.task, one.instance_id): one for one in instances}
    for source in missing:
        _note(_missing_log(source, by_key[(source.task, source.instance_id)], objects,
                           _settings(data_dir, bucket).data_dir.resolve()))
    if logs and len(missing) == len(logs):
        raise typer.Exit(EXIT_FAILED)


def _missing_log(source: Source, instance: InstanceRecord, objects: ObjectStore,
                 data_dir: Path) -> str:
    """Why a log is not there: not uploaded yet, or (its instance has ended) not in this
    data dir's object store — naming the path looked in."""
    if source.attempt is not None:
        return missing_note(objects, source, instance)
    where = f"{source.task}/{source.instance_id} {source.stream}"
    if instance.state in TERMINAL and instance.started is not None:
        return (f"{where}: NotFound: {source.url} does not exist (looked in "
                f"{looked_in(objects, source.url)}; data dir {data_dir}); are --data-dir and "
                "--bucket those of the engine that ran the job?")
    return (f"{where}: no log yet — the instance is {instance.state.value}; logs are uploaded "
            "once it runs, every few seconds (-f waits for them)")


def _follow(client: Client, selection: Selection, printer: LogPrinter,
            logs: list[Source]) -> None:
    try:
        follow(client, selection, printer, logs)
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _note(message: str) -> None:
    sys.stdout.flush()
    _err.print(Text(message, style="dim"))


# --- watch ------------------------------------------------------------------------------

WATCH_EPILOG = """\
**Examples**

```
batchyard watch job-18ED51D78DEC5A59EB3DB3E0AE38BEC5  # a job `batchyard run` runs here
batchyard watch 18ED51D7 --endpoint http://10.0.0.5:9900
```

Shows the live display of `batchyard run` (polling the data directory or the server), then
the summary. Ctrl-C stops watching; the job keeps running. A job Waiting or Running in a
data directory that no `batchyard run` holds is abandoned: `batchyard start JOB --wait`
finishes it. Exit status as `run`'s; 130 for Ctrl-C.
""" + CONNECTION_HELP


def watch(job_id: JobIdArgument, allow_failed_instances: AllowFailedOption = False,
          progress_interval: ProgressIntervalOption = PROGRESS_INTERVAL,
          data_dir: DataDirOption = None, endpoint: EndpointOption = None,
          key_id: KeyIdOption = None, key_secret: KeySecretOption = None) -> None:
    """Re-attach the live display to a job until it ends, then summarise it."""
    output = Output(_out, False, False, allow_failed_instances, progress_interval)
    with _session(endpoint, key_id, key_secret, data_dir, following=True) as client:
        job_id = resolve_job_id(client, job_id)
        description = client.description(job_id)
        engine = RemoteEngine(client, _objects_opener(data_dir, None))
        status = _wait(engine, job_id, description, output, "Watching")
    raise typer.Exit(status)


# --- stop, start, delete, priority ------------------------------------------------------

CONTROL_EPILOG = """\
**Examples**

```
batchyard stop job-18ED51D78DEC5A59EB3DB3E0AE38BEC5
batchyard stop --state Running --name 'nightly-*' --yes
batchyard start job-18ED51D78DEC5A59EB3DB3E0AE38BEC5 job-18ED51D9A3F2C1D8E4B79A0C5D6E7F81
batchyard start 18ED51D7 --wait             # and follow it to its end
batchyard delete --force 18ED51D7 18ED51D9        # unique starts of ids
batchyard delete --state Failed,Finished --yes
batchyard priority job-18ED51D78DEC5A59EB3DB3E0AE38BEC5 500
```

stop: Waiting or Running jobs. start: Stopped or Failed jobs (finished instances are
kept). delete: Stopped, Finished or Failed jobs (--force stops the job first).
priority: Stopped or Failed jobs, 0…1000. Otherwise the server answers StateConflict
(exit status 1; an invalid priority: exit status 2).

stop and delete select jobs by id, --state and --name (given together, a job must match
all of them). More than one job needs a yes on the terminal, or --yes; with no terminal and
no --yes they refuse (exit status 2). One line per job on stdout, a count on stderr.

Without a server, `start` runs the job here, in the foreground, and `stop` of the job a
live `batchyard run` runs interrupts that run (as Ctrl-C).
""" + CONNECTION_HELP


def stop(job_ids: SelectedIdsArgument = None, state: StatesOption = None,
         name: NameOption = None, yes: YesOption = False, data_dir: DataDirOption = None,
         endpoint: EndpointOption = None, key_id: KeyIdOption = None,
         key_secret: KeySecretOption = None) -> None:
    """Stop jobs: their running instances are killed, the jobs become Stopped.

    Without a server, the job a live `batchyard run` runs is stopped by interrupting that
    run, as Ctrl-C there does.
    """
    with _session(endpoint, key_id, key_secret, data_dir) as client:
        chosen = _chosen(client, job_ids, state, name, yes, "Stop")
        raise typer.Exit(_each(chosen, client.stop, "stopped"))


def start(job_ids: JobIdsArgument, wait: Annotated[bool, typer.Option(
              "--wait", "-w", help="Follow the job with live progress until it ends, then "
              "summarise (without a server: always, as the job runs in this command)")
          ] = False,
          allow_failed_instances: AllowFailedOption = False,
          data_dir: DataDirOption = None, endpoint: EndpointOption = None,
          key_id: KeyIdOption = None, key_secret: KeySecretOption = None) -> None:
    """Start Stopped or Failed jobs again: instances that did not finish run again.

    Without a server, the job runs here, in the foreground, as `batchyard run --resume`
    runs it: finished instances are kept, the others run; Ctrl-C stops it again.
    """
    output = Output(_out, False, False, allow_failed_instances)
    if not endpoint_configured(endpoint):
        raise typer.Exit(_resume_each(job_ids, data_dir, output))
    with _session(endpoint, key_id, key_secret, data_dir) as client:
        job_ids = resolve_job_ids(client, job_ids)
        status = _each(job_ids, client.start, "started")
        if not wait or status:
            raise typer.Exit(status)
        for job_id in job_ids:
            engine = RemoteEngine(client, _objects_opener(data_dir, None))
            status = max(status, _wait(engine, job_id, client.description(job_id), output,
                                       "Started"))
    raise typer.Exit(status)


def _resume_each(job_ids: list[str], data_dir: Path | None, output: Output) -> int:
    """Run each job to its end on the local data directory, one after the other."""
    from batchyard.cli.main import resume_job  # the command line of `run`, which mounts us

    settings = _settings(data_dir, None)
    with _session(None, None, None, data_dir) as client:
        job_ids = resolve_job_ids(client, job_ids)
    status = 0
    for job_id in job_ids:
        status = max(status, resume_job(settings, job_id, output))
    return status


def delete(job_ids: SelectedIdsArgument = None, state: StatesOption = None,
           name: NameOption = None, force: Annotated[bool, typer.Option(
               "--force", help="Stop the job first when it is Waiting or Running")] = False,
           yes: YesOption = False, data_dir: DataDirOption = None,
           endpoint: EndpointOption = None, key_id: KeyIdOption = None,
           key_secret: KeySecretOption = None) -> None:
    """Delete ended jobs (their logs and outputs stay in the object store)."""
    with _session(endpoint, key_id, key_secret, data_dir) as client:
        chosen = _chosen(client, job_ids, state, name, yes, "Delete")
        action = client.delete if not force else _stopping(client)
        raise typer.Exit(_each(chosen, action, "deleted"))


def _chosen(client: Client, job_ids: list[str] | None, state: list[str] | None,
            name: str | None, yes: bool, verb: str) -> list[str]:
    """The jobs selected; nothing selected (only filters can select nothing) ends the command
    with a note, as a success: there was nothing to do. Jobs named by their ids are what the
    user asked for; only a selection by --state/--name alone of more than one job is
    confirmed (or needs --yes), as it may reach further than meant."""
    wanted = JobFilter(parse_states(state), name)
    chosen = select_jobs(client, job_ids or [], wanted)
    if not chosen:
        _err.print(f"No job matches {wanted.describe()}.")
        raise typer.Exit(0)
    if len(chosen) > 1 and not yes and not job_ids:
        confirm_many(chosen, verb)
    return chosen


def _stopping(client: Client) -> Callable[[str], None]:
    def stop_then_delete(job_id: str) -> None:
        if client.job(job_id).state not in TERMINAL:
            try:
                client.stop(job_id)
            except BatchyardError as error:
                if error.code != "StateConflict":
                    raise  # it ended meanwhile: delete it as it is
        client.delete(job_id)
    return stop_then_delete


def priority(job_id: JobIdArgument,
             value: Annotated[int, typer.Argument(
                 metavar="PRIORITY", help="0…1000 (higher runs first)")],
             data_dir: DataDirOption = None, endpoint: EndpointOption = None,
             key_id: KeyIdOption = None, key_secret: KeySecretOption = None) -> None:
    """Change the priority of a Stopped or Failed job (higher runs first once started)."""
    with _session(endpoint, key_id, key_secret, data_dir) as client:
        job_id = resolve_job_id(client, job_id)
        raise typer.Exit(_each([job_id], lambda one: client.change_priority(one, value),
                               f"priority {value} for"))


def _each(job_ids: list[str], action: Callable[[str], None], done: str) -> int:
    """Apply `action` to every id; a refusal is one error line and exit status 1 (2 for a
    request the server found invalid), and with several ids a count at the end."""
    status = 0
    refused = 0
    for job_id in job_ids:
        try:
            action(job_id)
        except BatchyardError as error:
            _err.print(Text.assemble(("error: ", "red"), error_line(error)))
            invalid = isinstance(error, ApiError) and error.status == 400
            status = max(status, EXIT_INVALID if invalid else EXIT_FAILED)
            refused += 1
            continue
        _out.print(f"{done} {job_id}")
    if len(job_ids) > 1:
        _err.print(f"{done.capitalize()} {len(job_ids) - refused} of {len(job_ids)} jobs"
                   f"{f'; {refused} refused' if refused else ''}.")
    return status


COMMANDS: list[tuple[Callable[..., None], str]] = [
    (submit, SUBMIT_EPILOG), (jobs, JOBS_EPILOG), (job, JOB_EPILOG), (log, LOG_EPILOG),
    (watch, WATCH_EPILOG),
    (stop, CONTROL_EPILOG), (start, CONTROL_EPILOG), (delete, CONTROL_EPILOG),
    (priority, CONTROL_EPILOG),
]
NUMBERS_ARE_ARGUMENTS = {"ignore_unknown_options": True}
"""`priority J -1`: -1 is a (negative) priority, not an option."""


def register(app: typer.Typer) -> None:
    """Add the client commands to the `batchyard` app."""
    for command, epilog in COMMANDS:
        settings = NUMBERS_ARE_ARGUMENTS if command is priority else None
        app.command(epilog=epilog, context_settings=settings)(command)

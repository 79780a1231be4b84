"""What `run` and `submit --wait` print while and after following a job, and how the
options that shape it (`--json`, `--allow-failed-instances`, `--progress-interval`) are read.

One home for both commands, so a job looks and exits the same locally and on a server.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console, RenderableType
from rich.text import Text

from batchyard.cli.documents import json_text, run_document, submitted_document
from batchyard.cli.execution import Engine, failed_instances, stderr_tails, summarize
from batchyard.cli.progress import (
    PROGRESS_INTERVAL,
    Description,
    JobView,
    LiveProgress,
    PlainProgress,
    failure_report,
    job_name,
    log_directories,
    logs_text,
    result_text,
    summary_table,
)
from batchyard.domain.states import State

_PANEL = "Output"
JsonOption = Annotated[bool, typer.Option(
    "--json", rich_help_panel=_PANEL,
    help="Print one JSON document on stdout (BatchCompute field names), no progress")]
AllowFailedOption = Annotated[bool, typer.Option(
    "--allow-failed-instances", rich_help_panel=_PANEL,
    help="Exit 0, not 3, when the job Finished with failed instances")]
ProgressIntervalOption = Annotated[float, typer.Option(
    "--progress-interval", metavar="SECONDS", min=0, envvar="BATCHYARD_PROGRESS_INTERVAL",
    show_envvar=False, show_default=False, rich_help_panel=_PANEL,
    help="When stdout is not a terminal: seconds between count lines (state changes are "
    f"printed as they happen) [env BATCHYARD_PROGRESS_INTERVAL; default {PROGRESS_INTERVAL:g}]")]


def console(stderr: bool = False) -> Console:
    """A console that never wraps what it prints: lines hold URLs, ids and paths whole."""
    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def emit(out: Console, renderable: RenderableType | str = "") -> None:
    """Print without wrapping or cropping: a long URL stays on its line, a wide table whole."""
    out.print(renderable, soft_wrap=True, crop=False)


@dataclass(frozen=True)
class Output:
    """How a followed job is shown: live or plain progress, or nothing (quiet, JSON)."""

    out: Console
    quiet: bool = False
    json: bool = False
    allow_failed_instances: bool = False
    progress_interval: float = PROGRESS_INTERVAL

    def display(self) -> LiveProgress | PlainProgress | None:
        """Live lines on a terminal; throttled plain lines for pipes and logs."""
        if self.quiet or self.json:
            return None
        if self.out.is_terminal:
            return LiveProgress(self.out)
        return PlainProgress(self.out, self.progress_interval)

    def submitted(self, job_id: str, description: Description, hint: str,
                  verb: str = "Submitted",
                  data_dir: Path | None = None) -> None:
        """`Submitted job-… (name) in data dir /abs` and the hint on a line of its own (lines
        are never wrapped) — unless quiet or JSON (stdout is the document)."""
        if not (self.quiet or self.json):
            where = f" in data dir {data_dir}" if data_dir is not None else ""
            emit(self.out, Text.assemble(f"{verb} ", (job_id, "bold"),
                                         f" ({job_name(description)}){where}"))
            emit(self.out, Text(hint, style="dim"))

    def job_id(self, job_id: str) -> None:
        """`submit` without --wait: the id alone, or `{"Id": …}`."""
        sys.stdout.write(json_text(submitted_document(job_id)) if self.json else f"{job_id}\n")


def report(output: Output, engine: Engine, view: JobView, description: Description,
           status: int) -> None:
    """The result line, the task table, the failed instances and where the logs are — or
    the same as one JSON document with `status` as its ExitStatus.

    Quiet, a job none of whose instances failed is summed up by its result line alone: its
    instances are not read (a thousand of them take ~15 ms).
    """
    quiet_success = output.quiet and not output.json and not view.instance_metrics.failed
    summaries = [] if quiet_success else summarize(engine, view)
    failed = failed_instances(summaries)
    logs = log_directories(description)
    if output.json:
        sys.stdout.write(json_text(run_document(view, summaries, failed, logs, status)))
        return
    out, quiet = output.out, output.quiet
    parts: list[RenderableType | str] = [] if quiet else [""]
    parts.append(result_text(view))
    if view.job.message and view.job.state is not State.FINISHED:
        parts.append(Text(view.job.message, style="yellow"))
    if not quiet:
        parts += [summary_table(view, summaries), ""]
    if failed:
        parts += [failure_report(failed, stderr_tails(engine.objects, failed)), ""]
    if failed or not quiet:
        parts.append(logs_text(logs))
    for part in parts:
        emit(out, part)

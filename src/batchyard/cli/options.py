"""Command-line options shared by every command that touches the engine or the object store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DataDirOption = Annotated[Path | None, typer.Option(
    "--data-dir", metavar="DIR", show_default=False,
    help="Where state, objects and work folders live "
         "[env BATCHYARD_DATA_DIR; default ./.batchyard]")]

SlotsOption = Annotated[int | None, typer.Option(
    "--slots", metavar="N", min=1, show_default=False,
    help="Instances run at the same time [env BATCHYARD_SLOTS; default: CPU count]")]

BucketOption = Annotated[list[str] | None, typer.Option(
    "--bucket", metavar="NAME=URL", show_default=False,
    help="Back bucket NAME with a folder or fsspec URL (repeatable), e.g. "
         "--bucket demo=/srv/demo [env BATCHYARD_BUCKETS='{\"demo\": \"/srv/demo\"}'; "
         "default: DIR/objects/NAME]")]

StrictOption = Annotated[bool, typer.Option(
    "--strict", help="Refuse a job file with unknown fields (likely typos, such as "
    "InstanceCont) instead of warning about them and ignoring them")]
ConfigOption = Annotated[Path | None, typer.Option(
    "--config", metavar="FILE", show_default=False,
    help="TOML file of settings (the names of the BATCHYARD_* variables: slots = 8, "
         "[sandbox] memory_bytes = …, [buckets] demo = \"/srv/demo\"); flags and "
         "variables win over it [env BATCHYARD_CONFIG; default ./batchyard.toml, else "
         "~/.config/batchyard/batchyard.toml]")]

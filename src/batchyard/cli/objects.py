"""`batchyard oss ls|cp|cat`: look at and move objects in the store jobs read and write."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.text import Text

from batchyard.cli.configuration import ConfigurationError, load_settings
from batchyard.cli.options import BucketOption, DataDirOption
from batchyard.cli.transfer import Copy, copy, looked_in
from batchyard.errors import BatchyardError, ObjectNotFound
from batchyard.ports import ObjectInfo, ObjectStore

EPILOG = """\
**Examples**

```
batchyard oss cp log-count-data.txt oss://log-count-demo/log-count/
batchyard oss cp -r results/ oss://demo/run1/results/
batchyard oss ls -r oss://log-count-demo/log-count/
batchyard oss cat oss://log-count-demo/log-count/merge_result.json
batchyard oss cp oss://log-count-demo/log-count/logs/ ./logs/ -r
```

By default bucket NAME is the folder DIR/objects/NAME (DIR = --data-dir);
--bucket NAME=URL points a bucket at any folder or fsspec URL.
"""

EXIT_INVALID = 2

app = typer.Typer(
    name="oss",
    help="List, copy and print objects in batchyard's object store (oss:// URLs).",
    epilog=EPILOG, no_args_is_help=True, rich_markup_mode="markdown")

_err = Console(stderr=True, highlight=False, soft_wrap=True)


@contextmanager
def object_store(data_dir: Path | None, buckets: list[str] | None) -> Iterator[ObjectStore]:
    """The object store the flags and environment describe; errors become `error: …`, exit 1.

    Opened as attempts on this machine use it: run as root, the folders it makes in a
    bucket are shared with the group of confined programs (mode 2775), so a program can
    write beside the data an operator uploaded (`batchyard serve` runs programs as users of
    their own)."""
    from batchyard.hosting import machine_objects

    try:
        settings = load_settings(data_dir, None, buckets)
    except ConfigurationError as error:
        _fail(error.message, EXIT_INVALID)
    try:
        yield machine_objects(settings, serving=True)
    except ObjectNotFound as error:
        _fail(error.line(settings.data_dir.resolve()))
    except BatchyardError as error:
        _fail(error.message)
    except OSError as error:
        _fail(f"{error.filename or ''}: {error.strerror or error}".lstrip(": "))


def _fail(message: str, status: int = 1) -> NoReturn:
    _err.print(Text.assemble(("error: ", "red"), message), highlight=False)
    raise typer.Exit(status)


LS_EPILOG = """\
**Examples**

```
batchyard oss ls oss://log-count-demo/
batchyard oss ls -r oss://log-count-demo/log-count/
batchyard oss ls -r oss://demo/ --bucket demo=/srv/demo
```
"""

CP_EPILOG = """\
**Examples**

```
batchyard oss cp data.txt oss://demo/log-count/          # keeps the name: .../data.txt
batchyard oss cp -r results/ oss://demo/run1/results/
batchyard oss cp -r oss://demo/log-count/logs/ ./logs/
```
"""

CAT_EPILOG = """\
**Examples**

```
batchyard oss cat oss://log-count-demo/log-count/merge_result.json
batchyard oss cat oss://demo/logs/stdout.job-18ED51D78DEC5A59EB3DB3E0AE38BEC5.count.2
```
"""


@app.command("ls", epilog=LS_EPILOG)
def list_objects(
    url: Annotated[str, typer.Argument(help="oss://bucket/prefix/ to list")],
    recursive: Annotated[bool, typer.Option("--recursive", "-r",
                                            help="List everything below the prefix")] = False,
    as_json: Annotated[bool, typer.Option(
        "--json", help="One JSON object per line: {\"Url\", \"Size\", \"IsDir\"}")] = False,
    data_dir: DataDirOption = None, bucket: BucketOption = None,
) -> None:
    """List the objects and folders at URL: size in bytes, then the object's URL."""
    with object_store(data_dir, bucket) as store:
        entries = store.list(url, recursive=recursive)
        if not entries and not store.exists(url):
            raise ObjectNotFound(url, looked_in(store, url), f"{url}: no such object or prefix")
    if not entries:
        _err.print(f"{url}: nothing here (an empty folder)")
    for entry in entries:
        typer.echo(_json_line(entry) if as_json else _listing_line(entry), nl=not as_json)


def _json_line(entry: ObjectInfo) -> str:
    """JSON lines, so a listing of any length streams: `jq -r .Url`."""
    from batchyard.cli.documents import json_line

    return json_line({"Url": entry.url, "Size": entry.size, "IsDir": entry.is_dir})


def _listing_line(entry: ObjectInfo) -> str:
    size = "DIR" if entry.is_dir else str(entry.size)
    return f"{size:>12}  {entry.url}"


@app.command("cp", epilog=CP_EPILOG)
def copy_objects(
    source: Annotated[str, typer.Argument(help="Local path or oss:// URL to copy from")],
    target: Annotated[str, typer.Argument(
        help="Local path or oss:// URL to copy to; ending in / means 'into this folder'")],
    recursive: Annotated[bool, typer.Option(
        "--recursive", "-r", help="Copy everything in a folder or below a prefix")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing on success")] = False,
    data_dir: DataDirOption = None, bucket: BucketOption = None,
) -> None:
    """Copy a file or folder between the local disk and the object store (either way)."""
    def report(done: Copy) -> None:
        if not quiet:
            typer.echo(f"{done.source} -> {done.target} ({done.size} bytes)")

    with object_store(data_dir, bucket) as store:
        copied = copy(store, source, target, recursive, report)
    if not quiet and len(copied) != 1:
        typer.echo(f"{len(copied)} files, {sum(item.size for item in copied)} bytes")


@app.command("cat", epilog=CAT_EPILOG)
def print_object(
    url: Annotated[str, typer.Argument(help="oss://bucket/key of the object to print")],
    data_dir: DataDirOption = None, bucket: BucketOption = None,
) -> None:
    """Write the bytes of one object to standard output."""
    with object_store(data_dir, bucket) as store:
        data = store.read_bytes(url)
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()

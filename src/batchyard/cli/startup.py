"""What makes a command start fast: garbage collection paused while it starts, and only the
invoked command built.

Starting `batchyard run` makes some 70,000 long-lived objects (modules, classes, SQL
constructs, schemas) and almost no garbage, yet the collector walks them again and again as
they pile up: ~30 ms of CPU, a tenth of the start-up, most of it once the heap is big.
`collection_paused()` turns it off while `run` opens its engine (SQLAlchemy, the store, the
engine and the agent are imported there); the engine then exempts the start-up heap from
later collections (`gc.freeze()` in `service.open_engine`) and collection resumes. (Pausing
it while the command line itself is imported too gains nothing measurable: the heap is
still small then.)
"""

from __future__ import annotations

import copy
import gc
import os
import sys
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import typer
from typer.main import get_command_name


class CollectionPaused:
    """Garbage collection off from construction until `resume()` or the end of a `with`.

    Does nothing when collection was already off (an embedding program's choice is kept);
    `resume()` may be called early and more than once.
    """

    def __init__(self) -> None:
        self._paused = gc.isenabled()
        if self._paused:
            gc.disable()

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            gc.enable()

    def __enter__(self) -> CollectionPaused:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.resume()


def collection_paused() -> CollectionPaused:
    """`with collection_paused() as pause: …`: garbage collection off inside (or until
    `pause.resume()`), on again after, whatever happens."""
    return CollectionPaused()


class Typer(typer.Typer):
    """A Typer app that, run as `batchyard NAME …`, builds the click command of NAME alone.

    Typer turns every registered command into a click command (parameters read from the
    function's signature, annotations evaluated) each time the app is called: 13–15 ms for
    the nineteen commands of `batchyard`, of which one runs (3 ms for `run` alone). When the
    first argument names a command or a group of commands, the app is called with that one
    registered; the group options (`--version`, `--help`, completion) come before any
    command name, so they, no arguments, an unknown name and shell completion still build
    the whole app, as do `CliRunner` tests (they build the command with
    `typer.main.get_command`).
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        words = kwargs.get("args", args[0] if args else None)
        words = sys.argv[1:] if words is None else words
        return typer.Typer.__call__(only_invoked(self, words), *args, **kwargs)


def only_invoked(app: typer.Typer, words: Sequence[str]) -> typer.Typer:
    """A copy of `app` with only the command or group `words[0]` names registered, or `app`
    itself when the words name none (or ask for shell completion)."""
    if not words or not isinstance(words[0], str) or _completing():
        return app
    name = words[0]
    commands = [info for info in app.registered_commands if _command_name(info) == name]
    groups = [info for info in app.registered_groups if info.name == name]
    if len(commands) + len(groups) != 1:
        return app
    narrowed = copy.copy(app)
    narrowed.registered_commands = commands
    narrowed.registered_groups = groups
    return narrowed


def _command_name(info: Any) -> str | None:
    if isinstance(info.name, str):
        return info.name
    callback = info.callback
    return get_command_name(callback.__name__) if callback is not None else None


def _completing() -> bool:
    """Whether a shell asks for completions (click's `_<PROG>_COMPLETE` variable is set)."""
    return any(name.startswith("_") and name.endswith("_COMPLETE") for name in os.environ)

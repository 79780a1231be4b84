"""How `--help` names the value of an option: a metavar (`PORT`), never a Python type.

Typer ≥ 0.29 fills the type column of its rich help panels from the annotation
(`<bool>`, `<str>`, `<int range>`, `<list[str]>`), even for flags that take no value.
Users do not read Python: `install()` makes a flag show nothing, an option with a value
its metavar (given, or its name in capitals: `--log-level` -> `LOG_LEVEL`), and an
argument nothing in that column (its name is already in the first one).

Typer 0.29 also writes a required argument as `{JOB_ID}` on the usage line; `install()`
restores the convention every Unix manual uses: `JOB_ID` required, `[TASK]` optional,
`JOB_ID...` repeated.
"""

from __future__ import annotations

from typing import Any

from typer import core


def option_metavar(param: Any) -> str | None:
    """What the help shows after an option: None for a flag, else its metavar."""
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return None
    if param.metavar is not None:
        return str(param.metavar)
    return str(param.name or "VALUE").upper()


def _option_display(self: Any, ctx: Any) -> str | None:
    metavar = option_metavar(self)
    if metavar is not None and self.nargs != 1:
        return f"{metavar}..."
    return metavar


def _argument_display(self: Any, ctx: Any) -> str | None:
    return None


def _argument_usage(self: Any) -> str:
    name = str(self.metavar or (self.name or "ARG").upper())
    if not self.required:
        name = f"[{name}]"
    return f"{name}..." if self.nargs != 1 else name


def install() -> None:
    """Patch typer's help rendering once, for every command of the process."""
    if hasattr(core.TyperOption, "display_type_rich"):
        core.TyperOption.display_type_rich = _option_display  # type: ignore[method-assign]
    if hasattr(core.TyperArgument, "display_type_rich"):
        core.TyperArgument.display_type_rich = _argument_display  # type: ignore[method-assign]
    if hasattr(core.TyperArgument, "_usage_display_name"):
        core.TyperArgument._usage_display_name = _argument_usage  # type: ignore[method-assign]

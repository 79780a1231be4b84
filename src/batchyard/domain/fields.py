"""Unknown fields in a job description: typos such as `InstanceCont` that would otherwise be
ignored (unknown fields are accepted and echoed back, for BatchCompute compatibility).

The known fields come from the pydantic models of `spec` (names and aliases, and each model's
`batchcompute_only`: fields BatchCompute defines that batchyard does not model, which are not
typos), so this module keeps no list of its own. Inside free-form fields (`AutoCluster`,
`Notification`, `Mounts`) and maps keyed by the user (task names, `Dependencies`, `EnvVars`,
the mappings) no key is unknown. Pure: no I/O.
"""

from __future__ import annotations

import difflib
import types
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel

CUTOFF = 0.75
"""How alike (difflib's ratio, ignoring case) a known field must be to be suggested:
`InstanceCont`/`InstanceCount` is 0.96, `EnvVar`/`EnvVars` 0.92, `Timeot`/`Timeout` 0.92."""


@dataclass(frozen=True)
class UnknownField:
    """A field no model knows: its JSON path, and the known field it is closest to (or "")."""

    path: str
    suggestion: str = ""

    @property
    def message(self) -> str:
        """`unknown field, ignored; did you mean InstanceCount?` (the path not included)."""
        return self.describe(ignored=True)

    def describe(self, ignored: bool) -> str:
        """The message, saying "ignored" or not (where the field is refused instead)."""
        hint = f"; did you mean {self.suggestion}?" if self.suggestion else ""
        return f"unknown field{', ignored' if ignored else ''}{hint}"

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True)
class _Shape:
    """What a value should be: a model, a list of shapes, a map keyed by the user whose
    values have a shape, or free (anything, not checked)."""

    model: type[BaseModel] | None = None
    items: _Shape | None = None
    keyed: bool = False


_FREE = _Shape()


def unknown_fields(raw: Any, model: type[BaseModel], suggested: int | None = None
                   ) -> list[UnknownField]:
    """Every field of `raw` that `model` (and the models it holds) does not know, in the order
    met (breadth first, without recursion: any depth and size is safe). Only the first
    `suggested` get a suggestion, when given: finding one costs some 30 µs, twenty times
    the walk, and a 1 MiB request can hold 50 000 unknown fields."""
    found = []
    for index, (parts, owner) in enumerate(_unknown(raw, _Shape(model))):
        wanted = suggested is None or index < suggested
        hint = closest(str(parts[-1]), known_fields(owner)) if wanted else ""
        found.append(UnknownField(_joined(parts), hint))
    return found


def known_fields(model: type[BaseModel]) -> list[str]:
    """The names a model accepts: its fields, their aliases and its `batchcompute_only`."""
    return [*_field_shapes(model), *sorted(_batchcompute_only(model))]


def closest(name: str, known: list[str]) -> str:
    """The known name most like `name` ignoring case, or "" when none is close (CUTOFF)."""
    by_lower = {candidate.lower(): candidate for candidate in known}
    matches = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=CUTOFF)
    return by_lower[matches[0]] if matches else ""


def misspelt(raw: dict[str, Any], missing: str, known: list[str]) -> str:
    """The key of `raw` that is most likely a misspelling of the `missing` field (not a
    field of its own), or ""."""
    return closest(missing, [key for key in raw if isinstance(key, str) and key not in known])


Parts = tuple[str | int, ...]


def _unknown(raw: Any, shape: _Shape) -> Iterator[tuple[Parts, type[BaseModel]]]:
    """(path, the model it is not a field of) for every unknown key."""
    queue: deque[tuple[Parts, Any, _Shape]] = deque([((), raw, shape)])
    while queue:
        parts, value, expected = queue.popleft()
        if expected.items is not None:
            children = _children(value, expected.keyed)
            queue.extend(((*parts, key), item, expected.items) for key, item in children)
        elif expected.model is not None and isinstance(value, dict):
            fields = _field_shapes(expected.model)
            for key, item in value.items():
                if key in fields:
                    queue.append(((*parts, key), item, fields[key]))
                elif key not in _batchcompute_only(expected.model):
                    yield (*parts, key), expected.model


def _children(value: Any, keyed: bool) -> Iterator[tuple[str | int, Any]]:
    if keyed and isinstance(value, dict):
        yield from value.items()
    elif not keyed and isinstance(value, list):
        yield from enumerate(value)


def _batchcompute_only(model: type[BaseModel]) -> frozenset[str]:
    names: frozenset[str] = getattr(model, "batchcompute_only", frozenset())
    return names


_SHAPES: dict[type[BaseModel], dict[str, _Shape]] = {}


def _field_shapes(model: type[BaseModel]) -> dict[str, _Shape]:
    """Each name `model` accepts (fields and aliases), with the shape of its value (cached:
    a job with thousands of tasks asks once)."""
    if model not in _SHAPES:
        shapes = {}
        for name, field in model.model_fields.items():
            shape = _shape_of(field.annotation)
            for alias in (name, field.alias, field.validation_alias):
                if isinstance(alias, str):
                    shapes[alias] = shape
        _SHAPES[model] = shapes
    return _SHAPES[model]


def _shape_of(annotation: Any) -> _Shape:
    """The shape of a field's type: optional parts dropped, `Annotated` unwrapped."""
    origin, arguments = get_origin(annotation), get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _Shape(model=annotation)
    if origin in (Union, types.UnionType):
        shapes = [_shape_of(argument) for argument in arguments if argument is not type(None)]
        return shapes[0] if len(shapes) == 1 else _FREE
    if origin is dict and arguments:
        return _nested(_shape_of(arguments[-1]), keyed=True)
    if origin is list and arguments:
        return _nested(_shape_of(arguments[0]), keyed=False)
    if hasattr(annotation, "__metadata__"):  # Annotated[X, …]
        return _shape_of(arguments[0])
    return _FREE


def _nested(inner: _Shape, keyed: bool) -> _Shape:
    """A map or list of `inner`; free when `inner` is free (nothing inside to check)."""
    return _FREE if inner == _FREE else _Shape(items=inner, keyed=keyed)


def _joined(parts: Parts) -> str:
    return ".".join(str(part) for part in parts)

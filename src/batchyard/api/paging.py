"""Query strings of the list and create calls (reference §9.4, §9.6), as Pydantic models.

Blank values are kept (`Marker&MaxItemCount=50` means Marker=""); unknown parameters are
ignored. A bad value fails as `Invalid<Parameter>` (see `errors.on_validation_error`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from batchyard.domain.states import State as LifecycleState
from batchyard.ports.reads import Window

DEFAULT_ITEM_COUNT = 50
MAX_ITEM_COUNT = 100


def _item_count(value: Any) -> int:
    """Blank or 0 -> the default; otherwise an integer in [1, 100]."""
    text = str(value).strip()
    if not text:
        return DEFAULT_ITEM_COUNT
    try:
        count = int(text)
    except ValueError:
        raise ValueError("must be an integer") from None
    if not 0 <= count <= MAX_ITEM_COUNT:
        raise ValueError(f"must be in [0, {MAX_ITEM_COUNT}]")
    return count or DEFAULT_ITEM_COUNT


ItemCount = Annotated[int, BeforeValidator(_item_count)]
"""`MaxItemCount`: blank or 0 is the default (50), else an integer in [1, 100]."""


def _blank_as_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


def _blank_as_false(value: Any) -> Any:
    return False if isinstance(value, str) and not value.strip() else value


class ListQuery(BaseModel):
    """`Marker`, `MaxItemCount`, `State` and `ClusterId` of every list call."""

    model_config = ConfigDict(extra="ignore")

    Marker: str = ""
    MaxItemCount: ItemCount = DEFAULT_ITEM_COUNT
    State: Annotated[LifecycleState | None, BeforeValidator(_blank_as_none)] = None
    ClusterId: str = ""

    def window(self, reverse: bool = False) -> Window:
        return Window(self.Marker, self.MaxItemCount, self.State, reverse)


class JobListQuery(ListQuery):
    """Jobs also take `OrderBy` (CreationTime only), `IsReverse` and `ProjectId` (ignored)."""

    OrderBy: Annotated[Literal["CreationTime"] | None, BeforeValidator(_blank_as_none)] = None
    IsReverse: Annotated[bool, BeforeValidator(_blank_as_false)] = False
    ProjectId: str = ""


class CreateQuery(BaseModel):
    """`POST /jobs?IdempotentToken=…` (reference §9.7); `sync` is accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    IdempotentToken: str = Field(default="", max_length=64, pattern=r"^[A-Za-z0-9_-]*$")

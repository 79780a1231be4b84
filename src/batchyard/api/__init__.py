"""The BatchCompute-compatible REST API (FastAPI); see `application.create_app`.

`create_app` is imported on first use, so clients that only need `api.signature` do not
pay for importing FastAPI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batchyard.api.application import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from batchyard.api.application import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

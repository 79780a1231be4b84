"""The BatchCompute-compatible REST API (FastAPI); see `application.create_app`."""

from batchyard.api.application import create_app

__all__ = ["create_app"]

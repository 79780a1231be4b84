"""`batchyard`'s entry point (`batchyard = "batchyard.cli.main:app"`): the command line of
`batchyard.cli.commands`, imported with garbage collection paused (`startup`)."""

from batchyard.cli.startup import collection_paused

with collection_paused():
    from batchyard.cli.commands import app

__all__ = ["app"]

"""`python -m batchyard.cli …` — the same as the `batchyard` command."""

from batchyard.cli.main import app

app(prog_name="batchyard")

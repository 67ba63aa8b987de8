"""`python -m trove` is the `trove` command."""

from trove.cli import app

app()

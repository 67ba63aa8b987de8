"""Command groups beyond the core ones in `trove.cli`; each module defines `register(app)`.

Add a module here to give `trove` a new command without touching `trove/cli.py`.
Modules are imported when the CLI starts, so keep their top-level imports light
(import heavy libraries inside the command functions).
"""

from __future__ import annotations

import importlib

import typer

COMMAND_MODULES: tuple[str, ...] = (
    "trove.commands.bench",
    "trove.commands.groups",
    "trove.commands.index",
    "trove.commands.serve",
)


def register_all(app: typer.Typer) -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)

"""`trove groups sync|status|expand`: the group directory behind query-time permissions.

``expand`` answers the operator's first question when someone cannot see a
page: which source groups does Trove think this person is in?
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from trove.commands.index import ConfigOption, JsonOption, _settings

groups_app = typer.Typer(
    help="Group memberships synced from sources (Confluence, SharePoint).", no_args_is_help=True
)


@groups_app.command("sync")
def sync(
    sources: Annotated[
        list[str] | None, typer.Argument(help="Sources to sync (default: all with groups).")
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Sync group memberships now (`trove ingest` also does this first)."""
    from connectors.errors import ConnectorError
    from pipelines.groups import sync_groups
    from trove.wiring import open_directory

    settings = _settings(config)
    names = sources or [s.name for s in settings.sources if s.has_groups]
    directory = open_directory(settings)
    out: dict[str, dict[str, int]] = {}
    try:
        for name in names:
            source = settings.source(name)
            try:
                out[name] = sync_groups(source, directory).counts
            except (ConnectorError, ValueError) as exc:
                typer.echo(f"error: source {name!r}: {exc}", err=True)
                raise typer.Exit(1) from exc
    finally:
        directory.close()
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    for name, counts in out.items():
        typer.echo(
            f"{name}: {counts['groups']} groups, {counts['users']} users, "
            f"{counts['memberships']} memberships "
            f"(+{counts['memberships_added']} / -{counts['memberships_removed']})"
        )


@groups_app.command("status")
def status(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """When each source's groups were last synced, and how many."""
    from trove.wiring import open_directory

    settings = _settings(config)
    info = open_directory(settings).status()
    rows = {s.name: info.get(s.name) for s in settings.sources if s.has_groups}
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for name, row in rows.items():
        typer.echo(f"{name}: never synced" if row is None else f"{name}: {row}")


@groups_app.command("expand")
def expand(
    user: Annotated[str, typer.Option("--user", "-u", help="The caller's identity (e-mail).")],
    groups: Annotated[
        str | None, typer.Option("--groups", "-g", help="Comma-separated groups the caller has.")
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show the principal a search would run as after group expansion."""
    from core.acl import Principal
    from trove.wiring import open_directory

    settings = _settings(config)
    given = Principal.of(user, [g for g in (groups or "").split(",") if g.strip()])
    expanded = open_directory(settings).expand(given)
    added = sorted(expanded.groups - given.groups)
    if as_json:
        typer.echo(
            json.dumps({"user": expanded.user, "groups": sorted(expanded.groups), "added": added})
        )
        return
    typer.echo(f"{expanded.user}: {len(added)} groups from the directory")
    for token in added:
        typer.echo(f"  {token}")


def register(app: typer.Typer) -> None:
    app.add_typer(groups_app, name="groups")

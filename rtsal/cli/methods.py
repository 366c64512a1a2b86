"""``rtsal methods``: the explanation methods available, and from which plugin."""

from __future__ import annotations

import json
from typing import Annotated

import typer


def methods(
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List explanation methods (use with --method in explain and metric)."""
    from rich.table import Table

    from rtsal.cli._console import out
    from rtsal.registry.methods import list_methods

    rows = list_methods()
    if json_out:
        typer.echo(
            json.dumps([{"name": m.name, "plugin": m.plugin, "summary": m.summary} for m in rows])
        )
        return
    table = Table("method", "plugin", "summary")
    for m in rows:
        table.add_row(m.name, m.plugin, m.summary)
    out.print(table)


def register(app: typer.Typer) -> None:
    app.command("methods")(methods)

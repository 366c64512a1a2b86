"""``rtsal blackboxes``: what black boxes are available, and from which plugin."""

from __future__ import annotations

import json
from typing import Annotated

import typer


def blackboxes(
    pattern: Annotated[
        str | None,
        typer.Argument(
            help="Glob or substring to filter by; with a pattern, timm's models are listed too."
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List registered black boxes (and, given a pattern, matching timm models)."""
    from rich.table import Table

    from rtsal.cli._console import out
    from rtsal.registry.blackbox import list_black_boxes

    rows = list_black_boxes(pattern or "*", include_providers=pattern is not None)
    if json_out:
        typer.echo(
            json.dumps(
                [
                    {
                        "name": r.name,
                        "plugin": r.plugin,
                        "input_size": r.input_size,
                        "num_classes": r.num_classes,
                        "summary": r.summary,
                    }
                    for r in rows
                ]
            )
        )
        return
    table = Table("name", "plugin", "input", "classes", "summary")
    for r in rows:
        size = f"{r.input_size[0]}x{r.input_size[1]}" if r.input_size else "-"
        table.add_row(r.name, r.plugin, size, str(r.num_classes or "-"), r.summary)
    out.print(table)
    if pattern is None:
        out.print(
            "also: any timm model by name (rtsal blackboxes resnet), file.py:factory, "
            "pkg.module:factory, and classifier checkpoints (rtsal classifier train)"
        )


def register(app: typer.Typer) -> None:
    app.command("blackboxes")(blackboxes)

"""``rtsal merge``: the outputs of shards joined into what one run writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from rtsal.cli._console import err

Sources = Annotated[
    list[Path],
    typer.Argument(
        help="Output folders of the shards (--out of each rtsal explain/metric/localize)."
    ),
]
Out = Annotated[
    Path | None,
    typer.Option("--out", "-o", help="Folder to merge into (default: the one source, in place)."),
]
JsonOut = Annotated[bool, typer.Option("--json", help="Print what was merged as JSON.")]


def merge(sources: Sources, out: Out = None, json_out: JsonOut = False) -> None:
    """Join the outputs of shards (--shard I/N) into the folder one run would have written."""
    from rtsal.runs.merge import merge_outputs

    result = merge_outputs(sources, out)
    e = result.explanations
    if json_out:
        typer.echo(json.dumps(result.to_dict()))
        return
    if e is not None:
        err.print(
            f"explanations: {e.explained} of {e.images} images from {e.manifests} manifest(s)"
            + (f", {e.failed} could not be read" if e.failed else "")
            + f"; wrote {e.index}",
            highlight=False,
            markup=False,
        )
    for s in result.scores:
        err.print(
            f"{s.method} {s.command}: {s.samples} samples from {s.parts} file(s); wrote "
            + ", ".join(map(str, s.written)),
            highlight=False,
            markup=False,
        )


def register(app: typer.Typer) -> None:
    app.command("merge")(merge)

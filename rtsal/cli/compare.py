"""``rtsal compare``: two scored runs compared image by image, with how sure the difference is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

Run = Annotated[
    Path,
    typer.Argument(
        help="The --out folder of rtsal metric or rtsal localize (or its .jsonl records file)."
    ),
]
Seed = Annotated[int, typer.Option(help="Seed of the paired bootstrap.")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print the comparison as JSON.")]


def compare(a: Run, b: Run, seed: Seed = 0, json_out: JsonOut = False) -> None:
    """Compare two methods (or checkpoints) scored on the same images: each metric of both, the
    difference, and whether it is more than chance (exact McNemar test for rates, a
    paired-bootstrap 95 % interval for per-image scores)."""
    from rtsal.runs.compare import compare_scores, describe

    c = compare_scores(a, b, seed=seed)
    typer.echo(json.dumps(c.to_dict()) if json_out else describe(c))


def register(app: typer.Typer) -> None:
    app.command("compare")(compare)

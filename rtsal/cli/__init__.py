"""The ``rtsal`` command line. Each sub-command lives in its own module, parses its options and
calls one library function; plugins may add commands through the ``register_commands`` hook."""

from __future__ import annotations

import sys
import warnings

import typer

from rtsal import __version__

app = typer.Typer(
    name="rtsal",
    help="Real-time saliency for black-box image classifiers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"rtsal {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Real-time saliency for black-box image classifiers (Dabkowski & Gal, 2017)."""


_registered = False


def _register_commands() -> None:
    """Built-in commands, then plugins' commands; once per process."""
    global _registered
    if _registered:
        return
    _registered = True
    _register_builtin_commands()
    _register_plugin_commands()


def _register_builtin_commands() -> None:
    from rtsal.cli import (
        blackboxes,
        canvas,
        classifier,
        evaluate,
        explain,
        export,
        methods,
        metric,
        train,
    )

    train.register(app)
    explain.register(app)
    classifier.register(app)
    evaluate.register(app)
    metric.register(app)
    blackboxes.register(app)
    methods.register(app)
    canvas.register(app)
    export.register(app)


def _register_plugin_commands() -> None:
    from rtsal.plugins import call_each

    call_each("register_commands", lambda plugin: {"app": app})


def _format_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    """Entry point: domain errors become one line on stderr and exit code 1."""
    from rtsal.allocator import keep_freed_memory
    from rtsal.errors import RtsalError

    keep_freed_memory()  # large tensors reuse freed pages (RTSAL_MALLOC=system to opt out)
    warnings.showwarning = _format_warning
    warnings.filterwarnings("ignore", category=FutureWarning, module="timm")
    try:
        _register_commands()
        app(args=argv, prog_name="rtsal")
    except RtsalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)

"""The ``rtsal`` command line. Each sub-command lives in its own module, parses its options and
calls one library function; plugins may add commands through the ``register_commands`` hook.

It may import every package; only ``python -m rtsal`` (:mod:`rtsal.__main__`) imports it."""

from __future__ import annotations

import sys
import warnings

import typer
from typer.core import TyperGroup
from typer.main import get_command as click_group_of

from rtsal import __version__

_state = {"builtin_commands": False, "plugin_commands": False}  # registered on ``app`` yet?


class _RootGroup(TyperGroup):
    """The ``rtsal`` group. Plugins' commands are added the first time they may be wanted: for
    the full list (help) or a name that is not built in; never for ``--version`` or a built-in
    command, which therefore do not load the plugins (nor the torch most of them import)."""

    def list_commands(self, ctx) -> list[str]:
        self._add_plugin_commands()
        return super().list_commands(ctx)

    def get_command(self, ctx, cmd_name: str):
        command = super().get_command(ctx, cmd_name)
        if command is None and self._add_plugin_commands():
            command = super().get_command(ctx, cmd_name)
        return command

    def _add_plugin_commands(self) -> bool:
        """Whether commands may have been added (False once they are all in this group)."""
        if _state["plugin_commands"]:
            return False
        _state["plugin_commands"] = True
        _register_plugin_commands()
        for name, command in click_group_of(app).commands.items():
            self.commands.setdefault(name, command)  # a built-in command keeps its name
        return True


app = typer.Typer(
    name="rtsal",
    cls=_RootGroup,
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


def _register_builtin_commands() -> None:
    if _state["builtin_commands"]:
        return
    _state["builtin_commands"] = True
    from rtsal.cli import (
        blackboxes,
        canvas,
        classifier,
        compare,
        evaluate,
        explain,
        export,
        merge,
        methods,
        metric,
        serve,
        train,
    )

    train.register(app)
    explain.register(app)
    merge.register(app)
    compare.register(app)
    classifier.register(app)
    evaluate.register(app)
    metric.register(app)
    blackboxes.register(app)
    methods.register(app)
    canvas.register(app)
    export.register(app)
    serve.register(app)


def _register_plugin_commands() -> None:
    from rtsal.registry.plugins import call_each

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
        _register_builtin_commands()  # plugins' commands: when _RootGroup needs them
        app(args=argv, prog_name="rtsal")
    except RtsalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)

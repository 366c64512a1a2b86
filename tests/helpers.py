"""Helpers shared by the tests: run rtsal in a subprocess (or in this process) and read what it
printed; give BatchNorms statistics that make folding them a real test."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from torch import nn

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
# the EfficientNet-Lite plugin only (the shipped model's black box), by the allow-list: tests
# never load whatever else happens to be installed
LITE_PLUGIN = {"RTSAL_DISABLE_PLUGIN_AUTOLOAD": "", "RTSAL_PLUGINS": "efficientnet-lite"}


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [ln for ln in self.stderr.splitlines() if ln.strip()]


def run_rtsal(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> Run:
    full_env = {**os.environ, "RTSAL_DISABLE_PLUGIN_AUTOLOAD": "1", **(env or {})}
    p = subprocess.run(
        [sys.executable, "-m", "rtsal", *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=REPO,
    )
    return Run(p.returncode, p.stdout, p.stderr)


def run_main(*args: str, env: dict[str, str] | None = None) -> Run:
    """``rtsal ARGS`` in this process, through ``rtsal.cli.main``: for answers that need no
    process of their own (option checks, one-line errors). Like :func:`run_rtsal`, third-party
    plugins are off unless ``env`` says otherwise; the environment, the plugin manager and the
    warning hooks ``main`` replaces are put back afterwards. An exception ``main`` lets through
    is printed as a traceback on stderr with exit code 1, as the interpreter would."""
    from rtsal.cli import main
    from rtsal.registry.plugins import reset_plugin_manager

    # RTSAL_MALLOC=system: main() would otherwise tune malloc for the whole test process
    variables = {"RTSAL_DISABLE_PLUGIN_AUTOLOAD": "1", "RTSAL_MALLOC": "system", **(env or {})}
    stdout, stderr = io.StringIO(), io.StringIO()
    with _environment(variables), warnings.catch_warnings():
        reset_plugin_manager(None)
        try:
            with redirect_stdout(stdout), redirect_stderr(stderr):
                code = _exit_code(main, [str(a) for a in args])
        finally:
            reset_plugin_manager(None)
    return Run(code, stdout.getvalue(), stderr.getvalue())


def _exit_code(main, argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        return 1
    return 0


@contextmanager
def _environment(variables: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def assert_one_line_error(run: Run, *fragments: str) -> None:
    """Non-zero exit, no traceback, exactly one 'error:' line naming every fragment."""
    assert run.code != 0, run.stdout
    assert "Traceback" not in run.stderr, run.stderr
    errors = [ln for ln in run.error_lines if ln.startswith("error:")]
    assert len(errors) == 1, run.stderr
    for f in fragments:
        assert f.lower() in errors[0].lower(), errors[0]


def fashion_mnist_installed() -> bool:
    from rtsal.data.arrays import DEBIAN_FASHION_MNIST

    return (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").exists()


FASHION_MNIST_REASON = "Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)"


def randomise_batch_norms(module: nn.Module, seed: int = 0) -> None:
    """Non-trivial running statistics and affine parameters in every BatchNorm2d of ``module``
    (a freshly built one is the identity in evaluation mode, and folding it proves nothing)."""
    import torch
    from torch import nn

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(0.2 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                if m.affine:
                    m.weight.copy_(0.5 + torch.rand(n, generator=g))
                    m.bias.copy_(0.2 * torch.randn(n, generator=g))


def drop_batch_norms(module: nn.Module) -> None:
    """Replace every BatchNorm2d of ``module`` by the identity, in place: what the network
    computes if the BatchNorms were neither kept nor folded."""
    from torch import nn

    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                setattr(parent, name, nn.Identity())


def ctrl_c_stops() -> None:
    """``preexec_fn`` for a child that a test stops with SIGINT: Ctrl-C interrupts it even when
    the tests run where SIGINT is ignored (a shell's background job passes SIG_IGN on, and Python
    then installs no KeyboardInterrupt handler)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextmanager
def lite_plugin_only() -> Iterator[pytest.MonkeyPatch]:
    """In this process, for the block: the plugins ``rtsal`` loads with LITE_PLUGIN (the
    EfficientNet-Lite plugin, the shipped model's black box, and nothing else installed here);
    yields the MonkeyPatch for further changes (also undone), and puts the plugin manager back
    to what the environment then says."""
    from rtsal.registry.plugins import reset_plugin_manager

    with pytest.MonkeyPatch.context() as mp:
        for name, value in LITE_PLUGIN.items():
            mp.setenv(name, value)
        reset_plugin_manager(None)
        yield mp
    reset_plugin_manager(None)

"""Which masking model and which black box: the one place a checkpoint's black box is built.

A checkpoint is data that someone else may have written (a Hub repository, a download, an
upload), so the black box it names is built **by name, from registered providers only**: a
black box a plugin registered (``efficientnet_lite0``), a timm model, or another installed
provider's ``prefix:NAME``. A name that is code (``file.py:factory``, ``pkg.module:factory``) or
a file outside the checkpoint (a classifier checkpoint's folder, a weights file) is refused in
one line before anything is imported, called or opened; the user trusts it by naming the black
box themselves (``--blackbox``) or by ``--trust-code`` / ``trust_code=True``, as
``trust_remote_code`` works for Hugging Face.

:func:`resolve_models` is what every command and :class:`rtsal.Explainer` call: the checkpoint
(``--checkpoint``, ``hf:ORG/NAME``, or the model rtsal ships for the black box) read once, and
the black box (named by the user, or the checkpoint's), checked against each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtsal.engine.checkpoint import Checkpoint, check_black_box
from rtsal.engine.locate import DEFAULT_BLACK_BOX, open_checkpoint
from rtsal.errors import CheckpointError

if TYPE_CHECKING:
    from rtsal.registry.blackbox import BlackBox

# Providers whose names are code or files: never built from what a checkpoint says.
UNTRUSTED_PROVIDERS = ("user", "ckpt", "checkpoint")
BUILTIN_PROVIDERS = ("", "timm", "user", "checkpoint")


def _require_provider(provider: str, name: str, where: str) -> None:
    """A black box from a third-party plugin needs that plugin; say so rather than guess."""
    from rtsal.registry.plugins import get_plugin_manager

    if provider in BUILTIN_PROVIDERS or get_plugin_manager().get_plugin(provider) is not None:
        return
    raise CheckpointError(
        f"{where} explains black box {name!r} from plugin {provider!r}, which is not installed "
        "(or not loaded: see RTSAL_PLUGINS / RTSAL_DISABLE_PLUGIN_AUTOLOAD)"
    )


def _looks_like_a_path(text: str) -> bool:
    return (
        text.startswith(("/", "~", ".", "\\"))
        or ".." in text
        or "\\" in text
        or text.endswith((".py", ".json", ".safetensors", ".pt", ".pth", ".bin"))
        or ":" in text
    )


def _untrusted(where: str, name: str, why: str) -> CheckpointError:
    return CheckpointError(
        f"{where} names black box {name[:120]!r}, {why}; rtsal builds a checkpoint's black box "
        "from registered providers only. If you trust it, name the black box yourself "
        f"(--blackbox {name[:120]}) or pass --trust-code (trust_code=True)"
    )


def _data_only_builder(name: str, provider: str, where: str):
    """The registered factory that builds ``name`` without running code or reading files
    the checkpoint names; refuses anything else."""
    from rtsal.registry.blackbox import registry

    reg = registry()
    entry = reg.entries.get(name.lower())
    if entry is not None:
        return entry.factory
    prefix, sep, rest = name.partition(":")
    if sep:
        if prefix.lower() in UNTRUSTED_PROVIDERS:
            raise _untrusted(where, name, "which is code or files outside the checkpoint")
        if _looks_like_a_path(rest):
            raise _untrusted(where, name, "which names a path")
        for p in reg.providers:
            if p.prefix == prefix.lower():
                return lambda **kw: p.create(rest, **kw)
        if provider in ("", "user"):
            raise _untrusted(where, name, "which looks like code (module:callable)")
        raise CheckpointError(
            f"{where} names black box {name[:120]!r}, but no installed plugin provides "
            f"{prefix!r}: names (provider {provider!r})"
        )
    if _looks_like_a_path(name):
        raise _untrusted(where, name, "which is a path")
    if provider == "timm":
        for p in reg.providers:
            if p.prefix == "timm":
                return lambda **kw: p.create(name, **kw)
    raise _untrusted(where, name, f"which no installed plugin registers (provider {provider!r})")


def checkpoint_black_box(
    ckpt: Checkpoint,
    *,
    weights: str | Path | None = None,
    pretrained: bool = True,
    trust_code: bool = False,
) -> BlackBox:
    """The black box checkpoint ``ckpt`` names, built from registered providers only (see the
    module's docstring); ``weights`` / ``pretrained=False`` as the user asks."""
    from rtsal.registry.blackbox import create_black_box

    ref = ckpt.black_box_ref
    name, provider = ref.get("name"), str(ref.get("provider", ""))
    where = str(ckpt.location)
    if not name:
        raise CheckpointError(f"{where}: does not name its black box")
    stored = dict(ckpt.meta.get("black_box_options", {}))
    given: dict[str, Any] = {}
    if weights is not None:
        given["weights"] = str(Path(weights).expanduser())
    if not pretrained:
        given["pretrained"] = False
    if trust_code:
        _require_provider(provider, name, where)
        return create_black_box(name, **{**stored, **given})
    if stored.get("weights") and "weights" not in given:
        raise CheckpointError(
            f"{where} was trained with black-box weights from {str(stored['weights'])[:200]}, a "
            "file outside the checkpoint: pass --weights FILE (weights=...) to use them, or "
            "--trust-code (trust_code=True)"
        )
    pretrained_stored = stored.get("pretrained", True)
    if not isinstance(pretrained_stored, bool):
        raise CheckpointError(f"{where}: black_box_options.pretrained must be true or false")
    options: dict[str, Any] = {"pretrained": pretrained_stored, **given}
    _require_provider(provider, name, where)
    build = _data_only_builder(name, provider, where)
    if options["pretrained"] or options.get("weights"):
        return build(**options)
    return _seeded(build, ckpt, options)


def _seeded(build, ckpt: Checkpoint, options: dict[str, Any]) -> BlackBox:
    """A black box of random weights as training made it: ``rtsal train`` seeds torch with the
    run's seed just before building its black box, so the same seed gives the same network
    (and the checkpoint's fingerprint then matches)."""
    import torch

    seed = ckpt.meta.get("training", {}).get("seed", 0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed) if isinstance(seed, int) else 0)
        return build(**options)


def resolve_models(
    checkpoint: str | Path | Checkpoint | None = None,
    *,
    black_box: BlackBox | str | None = None,
    method: str = "masker",
    weights: str | Path | None = None,
    pretrained: bool = True,
    trust_code: bool = False,
    allow_other_black_box: bool = False,
) -> tuple[Checkpoint | None, BlackBox]:
    """The checkpoint (masking model only) and the black box a command explains with.

    ``black_box``: a black box, or a name the user gave (built as named, user code included:
    the user trusts what they name), or None: the checkpoint's own black box. ``checkpoint``:
    a folder, ``hf:ORG/NAME``, a read :class:`Checkpoint`, or None: the masking model rtsal ships
    for the black box (Lite0's by default). Other methods need no checkpoint; without a black
    box they explain the default checkpoint's. The masking model's checkpoint is checked
    against the black box (classes, preprocessing, fingerprint) before anything else is built.
    """
    from rtsal.registry.blackbox import create_black_box

    box: BlackBox | None = None
    if isinstance(black_box, str):
        given: dict[str, Any] = {"pretrained": pretrained}
        if weights is not None:
            given["weights"] = str(Path(weights).expanduser())
        box = create_black_box(black_box, **given)
    elif black_box is not None:
        box = black_box
    if method != "masker":
        if box is None:
            box = checkpoint_black_box(
                open_checkpoint(checkpoint),
                weights=weights,
                pretrained=pretrained,
                trust_code=trust_code,
            )
        return None, box
    ckpt = open_checkpoint(checkpoint, black_box=box.name if box is not None else None)
    if box is None:
        box = checkpoint_black_box(
            ckpt, weights=weights, pretrained=pretrained, trust_code=trust_code
        )
    check_black_box(ckpt.meta, box, Path(ckpt.location), allow_other=allow_other_black_box)
    return ckpt, box


def load_masking_model(
    checkpoint: str | Path | Checkpoint | None = None,
    *,
    black_box: BlackBox | str | None = None,
    device: str | Any = "cpu",
    **models: Any,
) -> tuple[Any, BlackBox, dict[str, Any]]:
    """``(model, black_box, meta)`` for a masking-model checkpoint (default: the shipped one):
    :func:`resolve_models`, then :func:`rtsal.engine.checkpoint.load_masker`. ``models``:
    ``weights``, ``pretrained``, ``trust_code``, ``allow_other_black_box``."""
    from rtsal.engine.checkpoint import load_masker

    ckpt, box = resolve_models(checkpoint, black_box=black_box, **models)
    allow = bool(models.get("allow_other_black_box"))
    return load_masker(ckpt, box, device=device, allow_other_black_box=allow)


__all__ = ["DEFAULT_BLACK_BOX", "checkpoint_black_box", "load_masking_model", "resolve_models"]

"""Loading weight files safely: safetensors, or torch files with ``weights_only=True``."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from rtsal.errors import CheckpointError


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict without ever unpickling code.

    ``.safetensors`` files are read directly; anything else goes through
    ``torch.load(weights_only=True)``, which refuses pickled objects other than tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"cannot read weights {path}: {exc}") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for payloads, RuntimeError for corrupt zips
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"refusing to load {path}: not a plain tensor file ({first[:200]})"
        ) from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return obj


def strip_prefixes(sd: dict[str, torch.Tensor], prefixes=("module.", "model.")) -> dict:
    out = {}
    for k, v in sd.items():
        for p in prefixes:
            if k.startswith(p):
                k = k[len(p) :]
        out[k] = v
    return out


def load_into(module: nn.Module, sd: dict[str, torch.Tensor], source: str, *, by_order=False):
    """Load ``sd`` into ``module`` strictly; with ``by_order`` map keys one-to-one in order."""
    target = module.state_dict()
    if by_order:
        if len(sd) != len(target) or any(
            a.shape != b.shape for a, b in zip(sd.values(), target.values(), strict=True)
        ):
            raise CheckpointError(f"{source}: tensors do not match the architecture in order")
        sd = dict(zip(target, sd.values(), strict=True))
    sd = strip_prefixes(sd)
    missing = [k for k in target if k not in sd]
    unexpected = [k for k in sd if k not in target]
    wrong = [k for k in target if k in sd and sd[k].shape != target[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            parts.append(f"{len(wrong)} with other shapes (e.g. {wrong[0]})")
        raise CheckpointError(f"{source} does not fit the model: " + "; ".join(parts))
    module.load_state_dict(sd)

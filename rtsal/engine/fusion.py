"""Folding BatchNorm into the convolution before it, for inference.

In evaluation mode a BatchNorm2d after a convolution is a per-channel affine map,

    bn(conv(x)) = gamma * (W * x + b - mean) / sqrt(var + eps) + beta,

so it can be folded into the convolution's weight and bias (one layer fewer per block).
:func:`fold_batch_norms` does this on a copy; a frozen :class:`rtsal.engine.model.TimmEncoder` is
shared with the copy untouched, because the black box runs the same network object.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

from rtsal.engine.model import TimmEncoder
from rtsal.errors import RtsalError

_CONVS = (nn.Conv2d, nn.ConvTranspose2d)


def fold_batch_norms(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with every conv -> BatchNorm2d pair of an ``nn.Sequential`` folded.

    The BN becomes ``nn.Identity`` at the same index, so other layers keep their names; the
    folded conv has a bias and frozen parameters. Only exact ``nn.Conv2d`` /
    ``nn.ConvTranspose2d`` / ``nn.BatchNorm2d`` layers are folded (subclasses may change the
    forward, e.g. weight standardisation or a fused activation). ``TimmEncoder`` submodules are
    shared by reference, neither copied nor folded. Raises :class:`RtsalError` if a BN to fold
    is in training mode or has no running statistics.
    """
    memo: dict[int, object] = {id(enc): enc for enc in _timm_encoders(module)}
    folded = copy.deepcopy(module, memo)
    pairs = list(_foldable_pairs(folded))
    for name, _, _, bn in pairs:  # check everything before changing anything
        if bn.training:
            raise RtsalError(
                f"cannot fold BatchNorm {name!r}: the module is in training mode "
                "(batch statistics); call .eval() first"
            )
        if not bn.track_running_stats or bn.running_mean is None or bn.running_var is None:
            raise RtsalError(
                f"cannot fold BatchNorm {name!r}: it has no running statistics "
                "(track_running_stats=False)"
            )
    for name, seq, i, bn in pairs:
        _fold_into(seq[i - 1], bn, name)
        seq[i] = nn.Identity()
    return folded


def count_batch_norms(module: nn.Module) -> int:
    """Number of BatchNorm2d modules in ``module``, not counting ``TimmEncoder`` subtrees."""
    return sum(isinstance(m, nn.BatchNorm2d) for _, m in _walk(module))


# --------------------------------------------------------------------------- helpers


def _walk(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    """``named_modules`` (each module once) without descending into ``TimmEncoder``s."""
    seen: set[int] = set()
    stack = [(prefix, module)]
    while stack:
        name, m = stack.pop()
        if id(m) in seen or isinstance(m, TimmEncoder):
            continue
        seen.add(id(m))
        yield name, m
        children = [(f"{name}.{n}" if name else n, c) for n, c in m.named_children()]
        stack.extend(reversed(children))


def _timm_encoders(module: nn.Module) -> list[TimmEncoder]:
    return [m for m in module.modules() if isinstance(m, TimmEncoder)]


def _foldable_pairs(module: nn.Module) -> Iterator[tuple[str, nn.Sequential, int, nn.BatchNorm2d]]:
    """``(bn name, sequential, bn index, bn)`` for each conv -> BN pair that can be folded.

    A conv or BN that sits in more than one place (one object in two containers) is skipped:
    folding it would change the other place too.
    """
    slots: dict[int, set[tuple[int, str]]] = {}
    for _, parent in _walk(module):
        for n, child in parent.named_children():
            slots.setdefault(id(child), set()).add((id(parent), n))
    for name, seq in _walk(module):
        if not isinstance(seq, nn.Sequential) or type(seq).forward is not nn.Sequential.forward:
            continue
        layers = list(seq)
        for i in range(1, len(layers)):
            conv, bn = layers[i - 1], layers[i]
            if (
                type(bn) is nn.BatchNorm2d
                and type(conv) in _CONVS
                and not parametrize.is_parametrized(conv)
                and len(slots[id(conv)]) == 1
                and len(slots[id(bn)]) == 1
            ):
                yield (f"{name}.{i}" if name else str(i)), seq, i, bn


@torch.no_grad()
def _fold_into(conv: nn.Conv2d | nn.ConvTranspose2d, bn: nn.BatchNorm2d, name: str) -> None:
    """Replace ``conv``'s weight and bias by those of ``bn(conv(.))`` (eval mode)."""
    if bn.num_features != conv.out_channels:
        raise RtsalError(
            f"cannot fold BatchNorm {name!r}: {bn.num_features} features after a conv with "
            f"{conv.out_channels} output channels"
        )
    w = conv.weight
    f64 = dict(dtype=torch.float64, device=w.device)
    mean = bn.running_mean.to(**f64)  # (out,)
    var = bn.running_var.to(**f64)  # (out,)
    gamma = bn.weight.to(**f64) if bn.affine else torch.ones_like(mean)
    beta = bn.bias.to(**f64) if bn.affine else torch.zeros_like(mean)
    bias = conv.bias.to(**f64) if conv.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + bn.eps)  # (out,)

    if isinstance(conv, nn.ConvTranspose2d):  # (in, out/g, kh, kw), in = g * in/g
        g = conv.groups
        w_g = w.to(**f64).reshape(g, w.shape[0] // g, *w.shape[1:])  # (g, in/g, out/g, kh, kw)
        new_w = (w_g * scale.view(g, 1, -1, 1, 1)).reshape(w.shape)
    else:  # (out, in/g, kh, kw): the groups split dim 1 only
        new_w = w.to(**f64) * scale.view(-1, 1, 1, 1)
    new_b = beta + (bias - mean) * scale  # (out,)

    weight = torch.empty_like(w)  # keeps the strides (channels_last stays channels_last)
    weight.copy_(new_w)
    conv.weight = nn.Parameter(weight, requires_grad=False)
    conv.bias = nn.Parameter(new_b.to(dtype=w.dtype), requires_grad=False)


__all__ = ["fold_batch_norms", "count_batch_norms"]

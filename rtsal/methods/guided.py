"""Guided backpropagation (Springenberg, Dosovitskiy, Brox & Riedmiller, "Striving for
Simplicity: The All Convolutional Net", ICLR workshop 2015).

Backpropagation through a ReLU passes ``grad * [x > 0]``; guided backpropagation also drops the
negative gradients, ``max(grad, 0) * [x > 0]``. It is the "Guided" baseline of Dabkowski & Gal
(2017), Table 1.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import torch
from torch import nn

from rtsal.methods._gradients import (
    check_inputs,
    class_scores,
    gradients_enabled,
    input_with_grad,
    removing_hooks,
    scale_by_max,
)


@cache
def rectifier_types() -> tuple[type[nn.Module], ...]:
    """Activation modules treated as rectifiers: torch's, and timm's own where timm is present."""
    types: list[type[nn.Module]] = [
        nn.ReLU,
        nn.ReLU6,
        nn.LeakyReLU,
        nn.PReLU,
        nn.RReLU,
        nn.ELU,
        nn.CELU,
        nn.SELU,
        nn.GELU,
        nn.SiLU,
        nn.Mish,
        nn.Hardswish,
        nn.Softplus,
    ]
    try:
        from timm.layers import activations, activations_me
    except ImportError:  # timm is optional for user-code black boxes
        return tuple(types)
    names = ("Swish", "Mish", "HardMish", "HardSwish", "GELU", "GELUTanh", "QuickGELU", "PReLU")
    for module in (activations, activations_me):
        for name in (*names, *(n + "Me" for n in names)):
            cls = getattr(module, name, None)
            if isinstance(cls, type) and issubclass(cls, nn.Module):
                types.append(cls)
    return tuple(types)


class _PositiveGradient(torch.autograd.Function):
    """Identity forward; backward lets only the positive part of the gradient through."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.clone()  # a new tensor: later in-place operations cannot reach the original

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad.clamp(min=0)


def _guide(module: nn.Module, inputs: Any, output: Any) -> Any:
    """Forward hook: route the activation's output through :class:`_PositiveGradient`."""
    if isinstance(output, torch.Tensor) and output.requires_grad:
        return _PositiveGradient.apply(output)
    return None


class GuidedBackpropMethod:
    """Guided backpropagation (Springenberg et al., 2015).

    ``mask = max_channel |guided d logit_c / d x|``, each map divided by its own maximum, so it
    lies in [0, 1] (an all-zero gradient gives an all-zero mask).

    How: a forward hook on every rectifier module makes the gradient arriving at its *output*
    pass through ``max(., 0)``; the module's own derivative then applies as usual. For
    ``nn.ReLU`` this is exactly guided backpropagation, ``max(g, 0) * [x > 0]`` (the same rule
    as Captum's ``GuidedBackprop``), and for ``nn.ReLU6`` it is ``max(g, 0) * [0 < x < 6]``.
    Smooth rectifiers (SiLU/Swish, GELU, Hardswish, Mish, ELU, Softplus, LeakyReLU, and timm's
    versions of them) get the same treatment: negative gradients are dropped at their output and
    their own derivative is kept, which may itself be slightly negative for negative inputs.
    Gating activations (Sigmoid, Hardsigmoid, Tanh, as in squeeze-excitation) are not rectifiers
    and keep their ordinary gradient, as do activations called as functions rather than modules.

    Takes no options. Every hook is removed before ``explain`` returns.
    """

    def __init__(self, black_box: Any) -> None:
        self.black_box = black_box

    def explain(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        classes = check_inputs(images, classes)  # (B,)
        rectifiers = rectifier_types()
        with gradients_enabled(), removing_hooks() as handles:
            for module in self.black_box.modules():
                if isinstance(module, rectifiers):
                    handles.append(module.register_forward_hook(_guide))
            x = input_with_grad(images)  # (B, C, H, W)
            logits = self.black_box(x)  # (B, K)
            (grad,) = torch.autograd.grad(class_scores(logits, classes).sum(), x)  # (B, C, H, W)
        saliency = grad.abs().amax(dim=1, keepdim=True)  # (B, 1, H, W)
        return scale_by_max(saliency)

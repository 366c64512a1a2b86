"""Grad-CAM (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization", ICCV 2017).

For class c and a target layer's feature maps ``A^k`` (B, K, h, w):
``alpha_k = mean_ij d logit_c / d A^k_ij`` and ``L = ReLU(sum_k alpha_k A^k)``, upsampled
bilinearly to the image and scaled to [0, 1]. It generalises CAM, a baseline of Dabkowski & Gal
(2017), Table 1.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rtsal.errors import RtsalError, UnknownNameError
from rtsal.methods._gradients import (
    check_inputs,
    class_scores,
    gradients_enabled,
    removing_hooks,
    scale_by_max,
)


def _network(black_box: Any) -> nn.Module:
    """The classifier inside a black box (its ``.network``), or the module itself."""
    return getattr(black_box, "network", black_box)


def _before_saturation(
    network: nn.Module, name: str, outputs: list[tuple[str, Any]], inputs_of: dict[str, Any]
) -> str:
    """``name``, or the module whose output feeds it when ``name``'s output comes out of a
    saturating activation (a Hardtanh, such as ReLU6, inside it or the module itself)."""
    module = network.get_submodule(name)
    produced = dict(outputs)
    saturating = [
        f"{name}.{child}" if child else name
        for child, m in module.named_modules()
        if isinstance(m, nn.Hardtanh)
    ]
    if not any(produced.get(s) is produced[name] for s in saturating):
        return name
    feeding = inputs_of.get(name)
    for other, output in reversed(outputs):
        if output is feeding and isinstance(output, torch.Tensor) and output.dim() == 4:
            return other
    return name


def _module_name(network: nn.Module, module: nn.Module) -> str:
    for name, m in network.named_modules():
        if m is module and name:
            return name
    raise RtsalError(
        f"Grad-CAM target layer {type(module).__name__} is not a module of the black box's network"
    )


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, (nn.LayerNorm, nn.GroupNorm)) or "Norm" in type(module).__name__


def token_grid(tokens: int, size: tuple[int, int]) -> tuple[int, int] | None:
    """(h, w) of the patch grid behind ``tokens`` patch tokens of an image of ``size`` (H, W):
    the factorisation h * w = tokens closest to the image's aspect ratio; None if none is close."""
    height, width = size
    h = max(1, round((tokens * height / width) ** 0.5))
    for cand in (h, h - 1, h + 1):
        if cand >= 1 and tokens % cand == 0 and abs(tokens // cand * height / width - cand) < 1:
            return cand, tokens // cand
    return None


def as_map(output: torch.Tensor, size: tuple[int, int], network: nn.Module) -> torch.Tensor:
    """A layer's output as a (B, K, h, w) map: a transformer's tokens (B, N, D) drop their
    prefix (class, distillation, register) tokens and are laid out on the patch grid, as
    pytorch-grad-cam's ``reshape_transform`` does; a channels-last map (Swin) is permuted."""
    if output.dim() == 3:
        prefix = int(getattr(network, "num_prefix_tokens", 0) or 0)
        grid = token_grid(output.shape[1] - prefix, size)
        if grid is None:  # e.g. a prefix count the network does not declare: try one class token
            prefix = 1
            grid = token_grid(output.shape[1] - 1, size)
        if grid is not None:
            patches = output[:, output.shape[1] - grid[0] * grid[1] :]
            return patches.transpose(1, 2).reshape(output.shape[0], -1, *grid)
    if output.dim() == 4 and getattr(network, "output_fmt", "NCHW") == "NHWC":
        return output.permute(0, 3, 1, 2)
    return output


def _token_target_layer(network: nn.Module, probe: torch.Tensor) -> str | None:
    """For a transformer (tokens out of ``forward_features``): the last normalisation layer
    whose patch tokens the top class's score depends on. With a class-token head that is the
    last block's pre-attention norm (timm's ``blocks[-1].norm1``, the layer pytorch-grad-cam's
    ViT tutorial picks); with average pooling, the final norm. Found with one backward pass."""
    taken: list[tuple[str, torch.Tensor]] = []

    def keep(name: str):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor) and output.dim() == 3 and output.requires_grad:
                taken.append((name, output))

        return hook

    with gradients_enabled(), removing_hooks() as handles:
        for name, module in network.named_modules():
            if name and _is_norm(module):
                handles.append(module.register_forward_hook(keep(name)))
        logits = network(probe.detach().clone().requires_grad_(True))  # a graph to the input
        if not taken or not isinstance(logits, torch.Tensor) or logits.dim() != 2:
            return None
        grads = torch.autograd.grad(
            logits.max(dim=1).values.sum(), [t for _, t in taken], allow_unused=True
        )
    size = tuple(probe.shape[-2:])
    for (name, output), grad in reversed(list(zip(taken, grads, strict=True))):
        grid = as_map(output, size, network)
        tokens_on_grid = grid.dim() == 4 and grid is not output
        if grad is not None and tokens_on_grid and as_map(grad, size, network).abs().sum() > 0:
            return name
    return None


def default_target_layer(network: nn.Module, probe: torch.Tensor) -> str:
    """Name of the module producing the network's last spatial feature map.

    With ``forward_features`` (timm models): the last module, in order of completion, whose
    output is the very tensor ``forward_features`` returns; an enclosing module completes after
    its children, so this is the outermost one (ResNet ``layer4``, MobileNetV3 ``blocks``).
    Otherwise, or when ``forward_features`` ends in an operation outside any module: the last
    module whose output is a (B, C, h, w) map with more than one position, i.e. the layer before
    global pooling. ``probe`` is one input image (1, C, H, W), already in the network's own input
    space; its values do not matter.

    When that module ends in a saturating activation (ReLU6, Hardtanh), the map going into it is
    taken instead (EfficientNet's ``conv_head`` rather than its ``bn2`` = BatchNorm + ReLU6):
    above 6 the activation's gradient is zero, so Grad-CAM's channel weights would ignore the
    most strongly activated units. Through a per-channel affine layer (BatchNorm) the weighted
    sum changes only by a constant per image; this is the "last convolution" pytorch-grad-cam's
    users pick for these networks.

    For a transformer whose ``forward_features`` returns tokens (B, N, D) (ViT, DeiT), see
    :func:`_token_target_layer`; its tokens are laid out on the patch grid (:func:`as_map`).
    """
    outputs: list[tuple[str, Any]] = []  # (module name, its output), in order of completion
    inputs_of: dict[str, Any] = {}

    def recorder(name: str):
        def record(module: nn.Module, inputs: Any, output: Any) -> None:
            outputs.append((name, output))
            inputs_of[name] = inputs[0] if inputs else None

        return record

    with removing_hooks() as handles, torch.no_grad():
        for name, module in network.named_modules():
            if name:
                handles.append(module.register_forward_hook(recorder(name)))
        forward_features = getattr(network, "forward_features", None)
        result = forward_features(probe) if callable(forward_features) else network(probe)
    if callable(forward_features) and isinstance(result, torch.Tensor) and result.dim() == 3:
        name = _token_target_layer(network, probe)
        if name is not None:
            return name
    if callable(forward_features) and isinstance(result, torch.Tensor):
        for name, output in reversed(outputs):
            if output is result:
                return _before_saturation(network, name, outputs, inputs_of)
    for name, output in reversed(outputs):
        if isinstance(output, torch.Tensor) and output.dim() == 4 and output[0, 0].numel() > 1:
            return _before_saturation(network, name, outputs, inputs_of)
    raise RtsalError(
        "Grad-CAM found no module producing a spatial feature map (B, C, h, w); "
        "pass target_layer='<module name>'"
    )


class GradCAMMethod:
    """Grad-CAM (Selvaraju et al., 2017) on one target layer.

    Options:
        target_layer: a module of the black box's network (``black_box.network``), or its name as
            in ``network.named_modules()``, e.g. ``"layer4"``. Its output must be a feature map
            (B, K, h, w). Default: the module producing the last spatial feature map (see
            :func:`default_target_layer`), found with one probe pass on the first call.
        normalize: ``"max"`` (default) divides each map by its maximum; ``"minmax"`` first
            subtracts its minimum, as pytorch-grad-cam does (same ranking of pixels, but a map
            whose floor is above zero marks fewer pixels above a threshold such as 0.5).

    ``mask = scale(upsample(ReLU(sum_k alpha_k A^k)))`` with ``alpha_k`` the spatial mean of
    ``d logit_c / d A^k``, bilinear upsampling to the image size, and each map divided by its own
    maximum (so it lies in [0, 1]; a map with no positive evidence is all zero).

    A forward hook on the target layer replaces its output by a detached copy that requires grad,
    so the gradient stops there (nothing before the layer is differentiated) and later in-place
    operations cannot alter the saved activations; the hook is removed before ``explain`` returns.
    """

    def __init__(
        self, black_box: Any, target_layer: str | nn.Module | None = None, normalize: str = "max"
    ) -> None:
        if normalize not in ("max", "minmax"):
            raise RtsalError(f"Grad-CAM normalize must be max or minmax, not {normalize!r}")
        self.normalize = normalize
        self.black_box = black_box
        self.network = _network(black_box)
        modules = dict(self.network.named_modules())
        if isinstance(target_layer, nn.Module):  # a module, as pytorch-grad-cam takes it
            target_layer = _module_name(self.network, target_layer)
        if target_layer is not None and target_layer not in modules:
            raise UnknownNameError("target layer", target_layer, [n for n in modules if n])
        self.target_layer = target_layer

    def resolve_target_layer(self, images: torch.Tensor) -> str:
        """The target layer's name, found (once) with ``images[:1]`` when none was given."""
        if self.target_layer is None:
            normalize = getattr(self.black_box, "normalize", lambda x: x)
            probe = normalize(images[:1].detach())  # (1, C, H, W)
            self.target_layer = default_target_layer(self.network, probe)
        return self.target_layer

    def explain(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        classes = check_inputs(images, classes)  # (B,)
        layer = self.network.get_submodule(self.resolve_target_layer(images))
        size, net = tuple(images.shape[-2:]), self.network
        captured: list[torch.Tensor] = []

        def capture(module: nn.Module, inputs: Any, output: Any) -> torch.Tensor:
            is_map = isinstance(output, torch.Tensor) and as_map(output, size, net).dim() == 4
            if not is_map:
                raise RtsalError(
                    f"Grad-CAM target layer {self.target_layer!r} must output a feature map "
                    f"(B, K, h, w) or patch tokens (B, N, D), got {type(output).__name__} "
                    f"{tuple(getattr(output, 'shape', ()))}"
                )
            activations = output.detach().requires_grad_(True)  # A: (B, K, h, w) or tokens
            captured.append(activations)
            return activations

        with gradients_enabled(), removing_hooks() as handles:
            handles.append(layer.register_forward_hook(capture))
            logits = self.black_box(images.detach().clone())  # (B, K)
            if not captured:
                raise RtsalError(f"Grad-CAM target layer {self.target_layer!r} was never called")
            activations = captured[-1]  # (B, K, h, w) or tokens (B, N, D)
            (grads,) = torch.autograd.grad(class_scores(logits, classes).sum(), activations)
        activations = as_map(activations, size, self.network)  # (B, K, h, w)
        grads = as_map(grads, size, self.network)
        alpha = grads.mean(dim=(2, 3), keepdim=True)  # (B, K, 1, 1)
        cam = F.relu((alpha * activations.detach()).sum(dim=1, keepdim=True))  # (B, 1, h, w)
        cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)
        if self.normalize == "minmax":
            cam = cam - cam.flatten(1).amin(1).view(-1, 1, 1, 1)
        return scale_by_max(cam)  # (B, 1, H, W)

"""Graphs for one *size class*: the image sizes that halve alike at every stride-2 layer.

EfficientNet-Lite's weights come from TensorFlow, whose "same" padding of a strided convolution
depends on whether the map's size is even or odd; a graph for any size computes it at run time,
and ONNX Runtime then leaves its blocked layout around every strided convolution. Traced inside
:func:`static_shapes`, a masking model pads by the constants its size class implies, and its
decoder resizes only where the traced sizes differ; :func:`fold_pads` then folds the constant
padding into the convolutions. :class:`rtsal.inference.backends.OnnxMasker` keeps one such graph
per class (all multiples of 32 are one: 224 x 224, 224 x 288, ...).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rtsal.engine.model import UpsamplerBlock
from rtsal.errors import RtsalError

SIZE_CLASS_LEVELS = 6  # stride-2 layers told apart: encoders of stride up to 64


def halving_pattern(n: int, levels: int = SIZE_CLASS_LEVELS) -> str:
    """The parity of ``n``, ``ceil(n/2)``, ``ceil(n/4)``, ...: a map of any size with the same
    pattern is padded ("same" padding) and resized (decoder) alike at every stride-2 layer."""
    if n <= 0:
        raise RtsalError(f"image sizes must be positive, got {n}")
    bits = []
    for _ in range(levels):
        bits.append(str(n % 2))
        n = -(-n // 2)
    return "".join(bits)


def size_class(height: int, width: int, levels: int = SIZE_CLASS_LEVELS) -> str:
    """The size class of (height, width): ``<pattern>x<pattern>`` (224 x 224 at 5 levels:
    00000x00000)."""
    return f"{halving_pattern(int(height), levels)}x{halving_pattern(int(width), levels)}"


def size_class_levels(wrapper: Any) -> int:
    """How many halvings tell the encoder's size classes apart: 5 for stride 32."""
    return max(1, int(wrapper.size_multiple).bit_length() - 1)


def _same_padding() -> tuple[type, Any] | None:
    """timm's dynamically "same"-padded convolution and the padding it computes, or None."""
    try:
        from timm.layers.conv2d_same import Conv2dSame
        from timm.layers.padding import pad_same_arg
    except ImportError:  # no timm: no dynamically padded convolutions to fix
        return None
    return Conv2dSame, pad_same_arg


def _static_same_conv(conv: nn.Conv2d, pads: tuple[int, int, int, int], x: torch.Tensor):
    x = torch.nn.functional.pad(x, pads)
    return torch.nn.functional.conv2d(
        x, conv.weight, conv.bias, conv.stride, 0, conv.dilation, conv.groups
    )


@contextmanager
def static_shapes(wrapper: Any, size: tuple[int, int]) -> Iterator[None]:
    """While inside, ``wrapper`` traces to a graph for the size class of ``size``: each "same"
    padded convolution pads by the constants this class implies, and the decoder resizes only
    where the traced sizes differ. Outside, the modules are as they were."""
    same = _same_padding()
    convs = [m for m in wrapper.modules() if same is not None and isinstance(m, same[0])]
    seen: dict[nn.Module, tuple[int, int]] = {}
    hooks = [
        m.register_forward_pre_hook(lambda mod, args: seen.__setitem__(mod, args[0].shape[-2:]))
        for m in convs
    ]
    try:
        with torch.no_grad():
            classes = torch.zeros(1, dtype=torch.long)
            wrapper(torch.rand(1, wrapper.channels, *size), classes)
    finally:
        for h in hooks:
            h.remove()
    blocks = [m for m in wrapper.modules() if isinstance(m, UpsamplerBlock)]
    try:
        for m, hw in seen.items():  # the pads timm's Conv2dSame computes for this size
            pads = same[1](list(hw), m.kernel_size, m.stride, m.dilation)  # type: ignore[index]
            m.forward = partial(_static_same_conv, m, tuple(int(p) for p in pads))
        for b in blocks:
            b.static_shapes = True
        yield
    finally:
        for m in seen:
            m.__dict__.pop("forward", None)
        for b in blocks:
            b.__dict__.pop("static_shapes", None)


def fold_pads(path: Path) -> int:
    """Fold constant zero padding into the convolution that reads it (ONNX Runtime keeps a Pad
    node otherwise); constants computed first by ONNX Runtime's portable (basic) optimisations.
    Rewrites ``path``; returns how many Pad nodes went."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    basic = path.with_name(path.name + ".basic")
    try:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(basic)
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        model = onnx.load(str(basic))
    finally:
        basic.unlink(missing_ok=True)
    graph = model.graph
    constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    readers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    folded = []
    for node in graph.node:
        if node.op_type != "Pad" or len(node.input) < 2 or node.input[1] not in constants:
            continue
        mode = next((a.s for a in node.attribute if a.name == "mode"), b"constant")
        fill = constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else 0
        pads = np.asarray(constants[node.input[1]]).astype(np.int64)
        users = readers.get(node.output[0], [])
        if (
            mode != b"constant"
            or fill is None
            or np.any(np.asarray(fill) != 0)
            or pads.shape != (8,)
            or np.any(pads < 0)
            or np.any(pads[[0, 1, 4, 5]])  # batch or channel padding
            or len(users) != 1
            or users[0].op_type != "Conv"
        ):
            continue
        conv = users[0]
        attrs = {a.name: a for a in conv.attribute}
        if "auto_pad" in attrs and attrs["auto_pad"].s not in (b"", b"NOTSET"):
            continue
        old = list(attrs["pads"].ints) if "pads" in attrs else [0, 0, 0, 0]
        new = [old[0] + pads[2], old[1] + pads[3], old[2] + pads[6], old[3] + pads[7]]
        if "pads" in attrs:
            conv.attribute.remove(attrs["pads"])
        conv.attribute.append(helper.make_attribute("pads", [int(v) for v in new]))
        conv.input[0] = node.input[0]
        folded.append(node)
    for node in folded:
        graph.node.remove(node)
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    for init in [i for i in graph.initializer if i.name not in used]:  # the pads folded
        graph.initializer.remove(init)
    onnx.save(model, str(path))
    return len(folded)


__all__ = [
    "SIZE_CLASS_LEVELS",
    "fold_pads",
    "halving_pattern",
    "size_class",
    "size_class_levels",
    "static_shapes",
]

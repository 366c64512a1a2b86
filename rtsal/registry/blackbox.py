"""Black boxes: frozen classifiers with their preprocessing and class names, and their registry.

Every tensor rtsal hands a black box is an image in [0, 1], shape (B, C, H, W); the black box
normalises it itself. ``create_black_box(name)`` is the one factory; names resolve through the
plugin hooks (see ``hookspecs``).
"""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from rtsal.errors import RtsalError, UnknownBlackBoxError
from rtsal.registry.plugins import PluginWarning, cached_registry, collect


class BlackBox(nn.Module):
    """A frozen classifier: ``forward(x01) -> logits``.

    Args:
        network: the classifier; takes normalised input, returns logits (B, K).
        name: the id that recreates it with ``create_black_box(name)``.
        class_names: one name per output.
        mean, std: per-channel normalisation applied to the [0, 1] input.
        input_size: (H, W) the network was trained at.
        interpolation: resize filter its preprocessing used ("bilinear", "bicubic", ...).
        crop_pct: centre-crop fraction of its evaluation preprocessing.
        shares_features: the network is a timm model with ``forward_intermediates`` and
            ``forward_head``; a masking model can then reuse it as its encoder.
        fixed_input_size: the network takes ``input_size`` only (a ViT's position embeddings):
            images are then resized to it exactly (``resize="square"``) unless asked otherwise.
    """

    def __init__(
        self,
        network: nn.Module,
        *,
        name: str,
        class_names: Sequence[str],
        mean: Sequence[float],
        std: Sequence[float],
        input_size: tuple[int, int],
        interpolation: str = "bilinear",
        crop_pct: float = 1.0,
        provider: str = "",
        pretrained: bool = True,
        source: str = "",
        fixed_input_size: bool = False,
    ):
        super().__init__()
        if len(mean) != len(std):
            raise RtsalError(f"black box {name!r}: mean and std have different lengths")
        self.network = network.eval()
        for p in self.network.parameters():
            p.requires_grad_(False)
        self.name = name
        self.class_names = list(class_names)
        self.mean_values = tuple(float(m) for m in mean)
        self.std_values = tuple(float(s) for s in std)
        self.register_buffer("mean", torch.tensor(self.mean_values).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(self.std_values).view(1, -1, 1, 1))
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.interpolation = interpolation
        self.crop_pct = float(crop_pct)
        self.provider = provider
        self.pretrained = pretrained
        self.source = source
        self.fixed_input_size = bool(fixed_input_size)
        self.train(False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        return len(self.mean_values)

    @property
    def shares_features(self) -> bool:
        return hasattr(self.network, "forward_intermediates") and hasattr(
            self.network, "forward_head"
        )

    def train(self, mode: bool = True) -> BlackBox:  # a black box never leaves eval mode
        return super().train(False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) in [0, 1] -> (B, K)
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise RtsalError(
                f"black box {self.name!r} expects images of shape (B, {self.in_channels}, H, W), "
                f"got {tuple(x.shape)}"
            )
        return self.network(self.normalize(x))

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x).softmax(dim=1)

    def output_layer(self) -> list[torch.Tensor]:
        """The weights of the layer that gives the logits: timm's ``get_classifier()``, else
        the last layer with as many outputs as there are classes, else the last parameter."""
        net = self.network
        head = net.get_classifier() if hasattr(net, "get_classifier") else None
        if isinstance(head, nn.Module) and any(True for _ in head.parameters()):
            return [p.detach() for p in head.parameters()]
        for module in reversed(list(net.modules())):
            weight = getattr(module, "weight", None)
            if (
                isinstance(weight, torch.Tensor)
                and weight.dim() >= 2
                and weight.shape[0] == self.num_classes
            ):
                return [p.detach() for p in module.parameters(recurse=False)]
        params = [p.detach() for p in net.parameters()]
        return params[-1:]

    def fingerprint(self) -> dict[str, Any]:
        """What tells this classifier from another of the same classes and preprocessing: its
        architecture (class and number of parameters) and a hash of its output layer's weights
        (as float32, so the same on any device). Stored in every masking-model checkpoint and
        checked when the checkpoint is loaded."""
        import hashlib

        cached = getattr(self, "_fingerprint", None)
        if cached is not None:
            return dict(cached)
        net = self.network
        digest = hashlib.sha256()
        for t in self.output_layer():
            a = t.float().cpu().contiguous()
            digest.update(str(tuple(a.shape)).encode())
            digest.update(a.numpy().tobytes())
        count = sum(p.numel() for p in net.parameters())
        self._fingerprint = {
            "architecture": f"{type(net).__name__}/{count}",
            "head": digest.hexdigest()[:32],
        }
        return dict(self._fingerprint)

    def describe(self) -> dict[str, Any]:
        """What a checkpoint stores to check it is used with the right black box."""
        return {
            "name": self.name,
            "provider": self.provider,
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "mean": list(self.mean_values),
            "std": list(self.std_values),
            "input_size": list(self.input_size),
            "interpolation": self.interpolation,
            "crop_pct": self.crop_pct,
            "fingerprint": self.fingerprint(),
        }


# --------------------------------------------------------------------------- registry


@dataclass
class BlackBoxEntry:
    name: str
    factory: Callable[..., BlackBox]
    aliases: tuple[str, ...] = ()
    summary: str = ""
    input_size: tuple[int, int] | None = None
    num_classes: int | None = None
    plugin: str = ""


@dataclass
class Registry:
    entries: dict[str, BlackBoxEntry] = field(default_factory=dict)  # name and aliases -> entry
    providers: list[Any] = field(default_factory=list)
    provider_plugins: dict[int, str] = field(default_factory=dict)  # id(provider) -> plugin

    def canonical(self) -> list[BlackBoxEntry]:
        return list({id(e): e for e in self.entries.values()}.values())


def _collect_registry() -> Registry:
    reg = Registry()

    def add_black_box(
        plugin: str,
        name: str,
        factory: Callable[..., BlackBox],
        *,
        aliases: Sequence[str] = (),
        summary: str = "",
        input_size: tuple[int, int] | None = None,
        num_classes: int | None = None,
    ) -> None:
        entry = BlackBoxEntry(
            name, factory, tuple(aliases), summary, input_size, num_classes, plugin
        )
        for key in (name, *aliases):
            taken = reg.entries.get(key.lower())
            if taken is not None and taken.plugin != plugin:
                warnings.warn(
                    f"black box name {key!r} from plugin {plugin!r} is already registered "
                    f"by {taken.plugin!r}; keeping the first",
                    PluginWarning,
                    stacklevel=2,
                )
                continue
            reg.entries[key.lower()] = entry

    def add_provider(plugin: str, provider: Any) -> None:
        for attr in ("prefix", "claims", "create", "names"):
            if not hasattr(provider, attr):
                raise TypeError(f"black-box provider has no {attr!r}")
        reg.providers.append(provider)
        reg.provider_plugins[id(provider)] = plugin

    collect("register_black_boxes", add_black_box)
    collect("register_black_box_providers", add_provider)
    return reg


def registry() -> Registry:
    """Every black box and provider the plugins registered; built once per plugin manager."""
    return cached_registry("black boxes", _collect_registry)


def create_black_box(
    name: str, *, pretrained: bool = True, weights: str | None = None, **options: Any
) -> BlackBox:
    """Build the black box called ``name`` (see ``rtsal blackboxes`` for what exists).

    Name forms: a registered name or alias, ``prefix:rest`` for a provider (``timm:resnet50``),
    an unprefixed name a provider claims (``file.py:build``, a checkpoint directory, a timm name).
    """
    reg = registry()
    opts = dict(pretrained=pretrained, weights=weights, **options)
    entry = reg.entries.get(name.lower())
    if entry is not None:
        return entry.factory(**opts)
    prefix, sep, rest = name.partition(":")
    if sep:
        for provider in reg.providers:
            if provider.prefix == prefix.lower():
                return provider.create(rest, **opts)
    for provider in reg.providers:
        if provider.claims(name):
            return provider.create(name, **opts)
    candidates = [e.name for e in reg.canonical()]
    for provider in reg.providers:
        candidates += provider.names("*" + name[:3] + "*") if len(name) >= 3 else []
    raise UnknownBlackBoxError(name, candidates, hint="`rtsal blackboxes` lists what is available")


def is_black_box(name: str) -> bool:
    reg = registry()
    if name.lower() in reg.entries:
        return True
    prefix, sep, _ = name.partition(":")
    if sep and any(p.prefix == prefix.lower() for p in reg.providers):
        return True
    return any(p.claims(name) for p in reg.providers)


@dataclass
class BlackBoxListing:
    name: str
    plugin: str
    input_size: tuple[int, int] | None
    num_classes: int | None
    summary: str


def list_black_boxes(pattern: str = "*", include_providers: bool = True) -> list[BlackBoxListing]:
    """Registered black boxes (and, from providers, names matching ``pattern``)."""
    reg = registry()
    pat = pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"
    rows = [
        BlackBoxListing(e.name, e.plugin, e.input_size, e.num_classes, e.summary)
        for e in reg.canonical()
        if fnmatch.fnmatch(e.name.lower(), pat.lower())
        or any(fnmatch.fnmatch(a.lower(), pat.lower()) for a in e.aliases)
    ]
    if include_providers:
        for provider in reg.providers:
            plugin = reg.provider_plugins.get(id(provider), "")
            listings = getattr(provider, "listings", None)
            if listings is not None:
                rows += [replace(r, plugin=r.plugin or plugin) for r in listings(pat)]
            else:
                rows += [
                    BlackBoxListing(f"{provider.prefix}:{n}", plugin, None, None, "")
                    for n in provider.names(pat)
                ]
    return rows

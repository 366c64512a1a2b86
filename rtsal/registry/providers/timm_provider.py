"""timm classifiers as black boxes: ``resnet50`` or ``timm:resnet50``.

Importing this plugin module is cheap (no torch, no timm): both are imported when a black box is
built or listed, so ``rtsal --help`` can load the plugins quickly.
"""

from __future__ import annotations

import fnmatch
import os
import socket
from contextlib import contextmanager
from functools import lru_cache
from typing import TYPE_CHECKING

from rtsal.errors import UnknownBlackBoxError, WeightsUnavailableError
from rtsal.registry.hookspecs import hookimpl

if TYPE_CHECKING:
    from rtsal.registry.blackbox import BlackBox, BlackBoxListing


@lru_cache(maxsize=1)
def _all_names() -> tuple[str, ...]:
    import timm

    return tuple(timm.list_models())


@lru_cache(maxsize=1)
def _pretrained_names() -> frozenset[str]:
    import timm

    return frozenset(n.split(".")[0] for n in timm.list_models(pretrained=True))


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[list[str], list[tuple[str, ...]]]:
    """ImageNet-1k class names (first lemma) and all synonyms (lemmas and synset id)."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    names, synonyms = [], []
    for i in range(1000):
        lemmas = tuple(s.strip() for s in info.index_to_description(i).split(","))
        names.append(lemmas[0])
        synonyms.append((*lemmas, info.index_to_label_name(i)))
    return names, synonyms


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Whether the weights hub answers; decided in seconds rather than after minutes of retries."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


@contextmanager
def _hub_offline(offline: bool):
    """Let timm use only weights already in the local cache when the hub is unreachable."""
    if not offline:
        yield
        return
    import huggingface_hub.constants as hc

    old = hc.HF_HUB_OFFLINE
    hc.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hc.HF_HUB_OFFLINE = old


def timm_black_box(
    model_name: str,
    *,
    pretrained: bool = True,
    weights: str | None = None,
    name: str | None = None,
    weights_by_order: bool = False,
    provider: str = "timm",
    **_: object,
) -> BlackBox:
    """Wrap ``timm.create_model(model_name)`` with its preprocessing and class names."""
    import timm
    from timm.data import resolve_data_config

    from rtsal.registry.blackbox import BlackBox
    from rtsal.registry.weights import load_into, load_state_dict

    if not timm.is_model(model_name):
        raise UnknownBlackBoxError(f"timm:{model_name}", _all_names())
    if weights:
        net = timm.create_model(model_name, pretrained=False)
        load_into(net, load_state_dict(weights), weights, by_order=weights_by_order)
    elif pretrained:
        online = hub_reachable()
        try:
            with _hub_offline(not online):
                net = timm.create_model(model_name, pretrained=True)
        except Exception as exc:
            why = "no connection to the model hub" if not online else type(exc).__name__
            raise WeightsUnavailableError(
                f"cannot get pretrained weights for {model_name!r} ({why}): pass "
                "--weights FILE, or --no-pretrained for random weights"
            ) from None
    else:
        net = timm.create_model(model_name, pretrained=False)
    cfg = resolve_data_config({}, model=net)
    num_classes = net.num_classes
    if num_classes == 1000:
        class_names, synonyms = imagenet_classes()
    else:
        class_names, synonyms = [f"class_{i}" for i in range(num_classes)], None
    box = BlackBox(
        net,
        name=name or f"timm:{model_name}",
        class_names=class_names,
        mean=cfg["mean"],
        std=cfg["std"],
        input_size=tuple(cfg["input_size"][1:]),
        interpolation=cfg.get("interpolation", "bilinear"),
        crop_pct=cfg.get("crop_pct", 1.0),
        provider=provider,
        pretrained=bool(weights) or pretrained,
        source=weights or ("timm hub" if pretrained else "random init"),
        fixed_input_size=bool(net.pretrained_cfg.get("fixed_input_size", False)),
    )
    if synonyms is not None:
        box.class_synonyms = list(synonyms)
    return box


class TimmProvider:
    prefix = "timm"

    def claims(self, name: str) -> bool:
        import timm

        return ":" not in name and timm.is_model(name)

    def create(self, name: str, **options: object) -> BlackBox:
        return timm_black_box(name, **options)

    def names(self, pattern: str) -> list[str]:
        return [n for n in _all_names() if fnmatch.fnmatch(n, pattern)]

    def listings(self, pattern: str) -> list[BlackBoxListing]:
        from rtsal.registry.blackbox import BlackBoxListing

        pre = _pretrained_names()
        return [
            BlackBoxListing(
                f"timm:{n}",
                "",
                None,
                None,
                "timm model" + (" (ImageNet weights online)" if n in pre else ""),
            )
            for n in self.names(pattern)
        ]


@hookimpl
def register_black_box_providers(register):
    register(TimmProvider())

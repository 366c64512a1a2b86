"""Output file names: two classes with the same name (ImageNet's two cranes) never write the
same file."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from PIL import Image
from skimage import data as skdata

from rtsal.runs.outputs import output_files, shared_slugs
from tests.helpers import LITE_PLUGIN, run_main


def test_shared_slugs_and_names_by_hand():
    names = ["crane", "beagle", "Crane", "maillot", "maillot", "tabby"]
    assert shared_slugs(names) == {"crane", "maillot"}
    bird = SimpleNamespace(class_name="crane", class_index=0)
    dog = SimpleNamespace(class_name="beagle", class_index=1)
    shared = shared_slugs(names)
    assert Path(output_files(Path("o"), "cat", bird, False, shared)["mask"]).name == (
        "cat.crane_0.mask.png"
    )
    assert Path(output_files(Path("o"), "cat", dog, False, shared)["mask"]).name == (
        "cat.beagle.mask.png"
    )


def test_the_two_imagenet_cranes_get_two_files(tmp_path):
    Image.fromarray(skdata.chelsea()).resize((150, 100)).save(tmp_path / "cat.jpg")
    out = tmp_path / "out"
    r = run_main(
        "explain", str(tmp_path / "cat.jpg"), "--class", "134", "--class", "517", "--out", str(out),
        env=LITE_PLUGIN,
    )  # fmt: skip
    assert r.code == 0, r.stderr
    masks = sorted(p.name for p in out.glob("*.mask.png"))
    assert masks == ["cat.crane_134.mask.png", "cat.crane_517.mask.png"]

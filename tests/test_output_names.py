"""Output file names: two classes with the same name (ImageNet's two cranes) never write the
same file."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from PIL import Image
from skimage import data as skdata

from rtsal.runs.explain import expand_inputs
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


def test_rtsal_outputs_in_an_output_folder_are_not_inputs(tmp_path):
    """Folders and globs leave out the files rtsal writes, where rtsal wrote them: in --out and
    in folders holding an explain run's manifest. Elsewhere a file so named is a photo."""
    photos = tmp_path / "photos"
    files = [
        "a.jpg", "b.png",  # the photos
        "a.tabby.mask.png", "a.tabby.overlay.jpg", "a.tabby.pair.jpg",  # --out photos, as run 1
        "old/y.jpg", "old/x.tabby.mask.png", "old/x.tabby.overlay.jpg",  # an earlier run's --out
        "notes/z.tabby.mask.png",  # a folder without an explain manifest: a photo
    ]  # fmt: skip
    for name in files:
        (photos / name).parent.mkdir(parents=True, exist_ok=True)
        (photos / name).write_bytes(b"")  # only names are looked at
    (photos / "old" / "manifest.jsonl").write_text('{"rtsal": "explain", "version": 1}\n')
    (photos / "notes" / "manifest.jsonl").write_text('{"rtsal": "something else"}\n')

    def found(*inputs: str, out: Path | None = None) -> list[str]:
        items, missing = expand_inputs(list(inputs), out)
        assert not missing
        return sorted(it.path.relative_to(photos).as_posix() for it in items)

    kept = ["a.jpg", "b.png", "notes/z.tabby.mask.png", "old/y.jpg"]
    assert found(str(photos), out=photos) == kept
    assert found(str(photos), out=photos / "new") == sorted(
        kept + ["a.tabby.mask.png", "a.tabby.overlay.jpg", "a.tabby.pair.jpg"]
    )  # photos/ is no output folder then
    assert found(str(photos / "**" / "*.jpg"), out=photos) == ["a.jpg", "old/y.jpg"]
    named = photos / "old" / "x.tabby.mask.png"
    assert found(str(named)) == ["old/x.tabby.mask.png"]  # named on its own: taken as given

"""The evaluation engine behind ``rtsal localize`` / ``rtsal metric`` on hand-made cases, and the
two commands end to end on a real photo."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rtsal.boxes import mask_box
from rtsal.inference.explainer import Explanation
from rtsal.metrics.scoring import Sample, parse_metrics
from rtsal.registry.classes import ClassResolver
from rtsal.runs.scoring import (
    SampleSource,
    ScoringOptions,
    annotated_samples,
    load_samples,
    read_class_map,
    score_method,
    spread,
)
from tests.helpers import LITE_PLUGIN, assert_one_line_error
from tests.helpers import run_main as _run_main
from tests.helpers import run_rtsal as _run

PLUGINS_ON = LITE_PLUGIN  # the shipped model's black box is a plugin's


def run_rtsal(*args):
    return _run(*args, env=PLUGINS_ON)


def run_main(*args):
    return _run_main(*args, env=PLUGINS_ON)


W, H = 40, 10
BOX1 = (2, 1, 8, 6)  # 30 pixels
BOX2 = (30, 1, 36, 6)  # 30 pixels, far (> 15 px) from BOX1


class BoxMeanBlackBox:
    """Two classes; p(class 0) = mean brightness inside BOX1 of a 40x10 image (any other size:
    0.5). Probabilities of class 1 are the rest."""

    num_classes = 2
    class_names = ["thing", "other"]
    input_size = (H, W)
    mean = torch.zeros(3)

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) == (H, W):
            x0, y0, x1, y1 = BOX1
            p = x[:, :, y0:y1, x0:x1].mean(dim=(1, 2, 3))
        else:
            p = torch.full((x.shape[0],), 0.5)
        return torch.stack([p, 1 - p], dim=1)


def _box_mask(box, value: float = 1.0) -> torch.Tensor:
    m = torch.zeros(H, W)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = value
    return m


class StubExplainer:
    """Explains every image with a fixed mask (BOX1 set to 1)."""

    def __init__(self, mask: torch.Tensor):
        self.black_box = BoxMeanBlackBox()
        self.resolver = ClassResolver(self.black_box.class_names)
        self.mask = mask

    def prepare(self, im: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255).permute(
            2, 0, 1
        )

    def explain_batch(self, images, classes, topk=None, with_probabilities=True):
        return [
            [
                Explanation(
                    class_index=c,
                    class_name=self.black_box.class_names[c],
                    mask=self.mask,
                    p_image=0.5,
                    p_preserved=0.25,
                    p_destroyed=0.75,
                    area=float(self.mask.mean()),
                    box=mask_box(self.mask),
                )
            ]
            for c in classes
        ]


@pytest.fixture
def white_image(tmp_path) -> Path:
    p = tmp_path / "white.png"
    Image.new("RGB", (W, H), (255, 255, 255)).save(p)
    return p


@pytest.fixture
def gt_masks(tmp_path) -> tuple[Path, Path]:
    paths = []
    for i, box in enumerate((BOX1, BOX2)):
        p = tmp_path / f"gt{i}.png"
        Image.fromarray((_box_mask(box).numpy() * 255).astype(np.uint8)).save(p)
        paths.append(p)
    return paths[0], paths[1]


def test_localisation_pointing_and_maxboxacc_by_hand(white_image):
    explainer = StubExplainer(_box_mask(BOX1))
    samples = [Sample(white_image, 0, [BOX1]), Sample(white_image, 0, [BOX2])]
    rows: list[dict] = []
    s = score_method(explainer, samples, ["localization", "pointing"], on_row=rows.append)
    # the 0.5-threshold box is BOX1: IoU 1 with the first image's box, 0 with the second's
    assert [r["localized"] for r in rows] == [True, False]
    assert rows[0]["box"] == list(BOX1) and rows[0]["best_iou"] == 1.0
    assert s["localization_error"] == 0.5
    # a binary mask gives BOX1 at every threshold 0 .. 0.99: first image right, second wrong
    assert s["max_box_acc"] == 0.5 and s["max_box_acc_v2"] == 0.5
    # the maximum (first in raster order) is (2, 1): inside BOX1, 28 px from BOX2
    assert [r["pointing_hit"] for r in rows] == [True, False]
    assert s["pointing"] == 0.5


def test_a_graded_mask_finds_the_box_only_at_some_thresholds(white_image):
    # 1 inside BOX1, 0.3 on the rest of the image: thresholds below 0.3 give the whole image
    mask = _box_mask(BOX1) * 0.7 + 0.3
    explainer = StubExplainer(mask)
    s = score_method(explainer, [Sample(white_image, 0, [BOX1])], ["localization"])
    assert s["localization_error"] == 0.0  # 0.5 threshold: BOX1
    assert s["max_box_acc"] == 1.0
    # normalised mask: 0 outside, 1 inside; any threshold in [0, 0.99] keeps BOX1 alone
    assert s["max_box_acc_threshold"] == 0.0


def test_saliency_metric_and_probabilities(white_image):
    explainer = StubExplainer(_box_mask(BOX1))
    s = score_method(explainer, [Sample(white_image, 0, [BOX1])], ["saliency"])
    # crop = BOX1, area 30 / 400; the crop resized to 40x10 is all white: p(class 0) = 1
    assert s["crop_area"] == pytest.approx(30 / 400)
    assert s["crop_probability"] == pytest.approx(1.0)
    assert s["saliency"] == pytest.approx(math.log(30 / 400) - math.log(1.0))
    assert s["p_image_times_mask"] == 0.25 and s["keep_ratio"] == pytest.approx(0.5)


def test_deletion_and_insertion_areas(white_image):
    explainer = StubExplainer(_box_mask(BOX1))
    s = score_method(explainer, [Sample(white_image, 0)], ["deletion", "insertion"], steps=40)
    # deletion removes BOX1's 30 pixels first, 10 per step: p = 1, 2/3, 1/3, 0, 0, ...
    assert s["deletion"] == pytest.approx(0.025 * (1 + 2 / 3 + 2 / 3 + 1 / 3 + 1 / 3) / 2)
    # insertion from the blurred white image (still white, reflect padding): p = 1 throughout
    assert s["insertion"] == pytest.approx(1.0)


def test_pixel_metrics_against_known_masks(white_image, gt_masks):
    explainer = StubExplainer(_box_mask(BOX1))
    samples = [
        Sample(white_image, 0, pixel_mask=gt_masks[0]),
        Sample(white_image, 0, pixel_mask=gt_masks[1]),
    ]
    s = score_method(explainer, samples, ["pixel"])
    # image 1: the map is its mask (F = 1 at thresholds >= 1); image 2: no overlap (F = 0);
    # at threshold 0 both predict everything: P = 30/400, R = 1
    p0 = 30 / 400
    f0 = 1.3 * p0 / (0.3 * p0 + 1)
    f = np.asarray(s["pr_curve"]["f"])
    assert f[0] == pytest.approx(f0) and np.allclose(f[1:], 0.5)
    assert s["max_f"] == pytest.approx(0.5) and s["max_f_threshold"] == 1
    assert s["mae"] == pytest.approx((0 + 60 / 400) / 2)


def test_gt_box_oracle_uses_the_boxes(white_image):
    explainer = StubExplainer(torch.zeros(H, W))  # the method's own mask is ignored
    rows: list[dict] = []
    s = score_method(
        explainer,
        [Sample(white_image, 0, [BOX2])],
        ["localization"],
        method="gt-box",
        on_row=rows.append,
    )
    assert s["localization_error"] == 0.0 and rows[0]["box"] == list(BOX2)
    assert s["area"] == pytest.approx(30 / 400)
    # BOX1 is outside BOX2: the image x box keeps nothing of it, the inverse keeps it all
    assert rows[0]["p_image_times_mask"] == pytest.approx(0.0)
    assert rows[0]["p_image_times_inverse"] == pytest.approx(1.0)


def test_metrics_needing_boxes_or_masks_say_so(white_image):
    from rtsal.errors import RtsalError

    explainer = StubExplainer(_box_mask(BOX1))
    with pytest.raises(RtsalError, match="needs boxes"):
        score_method(explainer, [Sample(white_image, 0)], ["localization"])
    with pytest.raises(RtsalError, match="pixel-masks"):
        score_method(explainer, [Sample(white_image, 0)], ["pixel"])
    with pytest.raises(RtsalError, match="unknown metric"):
        parse_metrics("saliency,recall")
    assert parse_metrics("all")[0] == "localization"


def test_annotations_become_samples_with_class_map(tmp_path):
    imgs = [tmp_path / "a.jpg", tmp_path / "b.jpg", tmp_path / "c.jpg"]
    ann = {
        "a.jpg": [("cat", (0, 0, 5, 5)), ("dog", (1, 1, 4, 4)), ("cat", (6, 6, 9, 9))],
        "b": [("dog", (2, 2, 3, 3))],  # ImageNet XML names images without extension
    }
    cmap = tmp_path / "map.csv"
    cmap.write_text("# annotation,black box\ncat,1\ndog,0\n")
    mapping = read_class_map(cmap)
    samples, missing = annotated_samples(imgs, ann, lambda n: int(mapping[n]))
    assert [(s.path.name, s.label, s.boxes) for s in samples] == [
        ("a.jpg", 1, [(0, 0, 5, 5), (6, 6, 9, 9)]),
        ("a.jpg", 0, [(1, 1, 4, 4)]),
        ("b.jpg", 0, [(2, 2, 3, 3)]),
    ]
    assert missing == [imgs[2]]
    bad = tmp_path / "bad.csv"
    bad.write_text("cat\n")
    from rtsal.errors import DataError

    with pytest.raises(DataError, match="expected"):
        read_class_map(bad)


def test_spread_takes_evenly_spaced_items():
    assert spread(list(range(10)), 4) == [0, 2, 5, 7]  # i * 10 // 4
    assert spread([1, 2], 5) == [1, 2] and spread([1, 2], None) == [1, 2]


def test_options_parse_their_metrics():
    from rtsal.errors import RtsalError

    assert ScoringOptions().metrics == ("saliency",)
    assert ScoringOptions(metrics="Pointing, saliency").metrics == ("pointing", "saliency")
    with pytest.raises(RtsalError, match="unknown metric"):
        ScoringOptions(metrics="speed")


def test_samples_from_boxes_and_from_file_names(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a.png", "b.png", "thing.png"):
        Image.new("RGB", (W, H)).save(folder / name)
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("image,class,x0,y0,x1,y1\na.png,other,0,0,5,5\nthing.png,thing,1,1,4,4\n")
    resolver = ClassResolver(["thing", "other"])
    with pytest.warns(UserWarning, match="1 image"):  # b.png has no box
        samples = load_samples(SampleSource(data=folder, boxes=boxes), resolver)
    assert [(s.path.name, s.label, s.boxes) for s in samples] == [
        ("a.png", 1, [(0, 0, 5, 5)]),
        ("thing.png", 0, [(1, 1, 4, 4)]),
    ]
    listed = tmp_path / "list.txt"
    listed.write_text(f"{folder / 'thing.png'}\n")
    (sample,) = load_samples(SampleSource(files=listed), resolver)  # the class from the name
    assert (sample.path.name, sample.label, sample.boxes) == ("thing.png", 0, [])
    from rtsal.errors import RtsalError

    with pytest.raises(RtsalError, match="exactly one"):
        load_samples(SampleSource(data=folder, files=listed), resolver)


# --------------------------------------------------------------------------- CLI, real photo


@pytest.fixture(scope="module")
def photo_with_box(tmp_path_factory) -> tuple[Path, Path, tuple[int, int]]:
    from skimage import data

    d = tmp_path_factory.mktemp("photo")
    img = Image.fromarray(data.chelsea())  # 451 x 300, a cat
    (d / "images").mkdir()
    img.save(d / "images" / "chelsea.png")
    # the centre box of half the area, as the centre-box baseline draws it
    w, h = img.size
    bw, bh = round(w / math.sqrt(2)), round(h / math.sqrt(2))
    x0, y0 = (w - bw) // 2, (h - bh) // 2
    (d / "boxes.csv").write_text(
        f"image,class,x0,y0,x1,y1\nchelsea.png,tabby,{x0},{y0},{x0 + bw},{y0 + bh}\n"
    )
    return d, d / "boxes.csv", img.size


def test_localize_cli_on_a_real_photo(photo_with_box, tmp_path):
    d, boxes, _ = photo_with_box
    args = ("localize", "--data", d / "images", "--boxes", boxes)
    run = run_rtsal(*args, "--method", "centre-box", "--json", "--out", tmp_path / "o")
    assert run.code == 0, run.stderr
    s = json.loads(run.stdout)
    assert s["images"] == 1 and s["localization_error"] == 0.0  # the box is the centre box
    rows = (tmp_path / "o" / "centre-box-localize.csv").read_text().splitlines()
    assert len(rows) == 2 and "chelsea.png" in rows[1]
    run = run_rtsal(*args, "--method", "max-box", "--json")
    assert run.code == 0, run.stderr
    assert json.loads(run.stdout)["localization_error"] == 1.0  # whole image: IoU 0.5, not > 0.5


def test_compare_two_baselines_on_a_real_photo(photo_with_box, tmp_path):
    """rtsal compare on what rtsal localize wrote: the centre box is the ground truth, the whole
    image is not (IoU 0.5), and the summaries carry Wilson intervals of their one image."""
    from rtsal.metrics.uncertainty import Z95

    d, boxes, _ = photo_with_box
    args = ("localize", "--data", d / "images", "--boxes", boxes, "--json")
    for method in ("centre-box", "max-box"):
        run = run_main(*args, "--method", method, "--out", tmp_path / method)
        assert run.code == 0, run.stderr
        s = json.loads(run.stdout)
        z2 = Z95**2
        wrong = s["localization_error"]
        assert s["localization_error_ci95"] == pytest.approx(
            [0.0, z2 / (1 + z2)] if wrong == 0 else [1 / (1 + z2), 1.0]
        )
    run = run_main("compare", tmp_path / "centre-box", tmp_path / "max-box", "--json")
    assert run.code == 0, run.stderr
    c = json.loads(run.stdout)
    assert c["images"] == 1 and c["a"]["method"] == "centre-box"
    loc = c["rates"]["localization_error"]
    assert (loc["a"], loc["b"], loc["only_a"], loc["only_b"]) == (0.0, 1.0, 0, 1)
    assert loc["p_value"] == 1.0  # one image decides nothing


def test_metric_cli_all_metrics_on_a_real_photo(photo_with_box, tmp_path):
    d, boxes, (w, h) = photo_with_box
    gt = np.zeros((h, w), np.uint8)
    gt[60:260, 100:350] = 255
    (d / "masks").mkdir(exist_ok=True)
    Image.fromarray(gt).save(d / "masks" / "chelsea.png")
    out = tmp_path / "m"
    run = run_rtsal(
        "metric",
        "--data",
        d / "images",
        "--boxes",
        boxes,
        "--pixel-masks",
        d / "masks",
        "--metrics",
        "all",
        "--steps",
        "8",
        "--json",
        "--out",
        out,
    )
    assert run.code == 0, run.stderr
    s = json.loads(run.stdout)
    for k in (
        "localization_error",
        "max_box_acc",
        "saliency",
        "pointing",
        "deletion",
        "insertion",
        "max_f",
        "mae",
    ):
        assert s[k] is not None and 0 <= s[k] <= 1 or k == "saliency", k
    assert 0 < s["p_image"] <= 1  # the shipped model's black box sees the cat
    assert (out / "masker-pr.png").stat().st_size > 1000
    assert Image.open(out / "masker-pr.png").format == "PNG"


def test_metric_and_localize_bad_input(photo_with_box, tmp_path):
    d, boxes, _ = photo_with_box
    # in a process of its own, as a user runs it; the other answers in this one
    run = run_rtsal("localize", "--data", d / "images")
    assert_one_line_error(run, "--boxes")
    bad = tmp_path / "b.csv"
    bad.write_text("image,class,x0,y0,x1,y1\nchelsea.png,no-such-animal,0,0,5,5\n")
    run = run_main("localize", "--data", d / "images", "--boxes", bad)
    assert_one_line_error(run, "no-such-animal")
    run = run_main("metric", "--data", d / "images", "--metrics", "pixel")
    assert_one_line_error(run, "pixel-masks")
    run = run_main("metric", "--data", d / "images", "--metrics", "speed")
    assert_one_line_error(run, "unknown metric")
    run = run_main("localize", "--files", tmp_path / "no-list.txt", "--boxes", boxes)
    assert_one_line_error(run, "file list not found")


def test_wrong_way_round_and_halving_shares_by_hand():
    from rtsal.metrics.scoring import summarize

    # (f_c(X), f_c(X*M), f_c(X*(1-M))): wrong way round when the third >= the second (rows 2, 3);
    # removal halves f_c when the third <= half the first (rows 1, 2)
    probabilities = [(0.8, 0.7, 0.1), (0.6, 0.2, 0.3), (0.5, 0.4, 0.4), (0.9, 0.8, 0.5)]
    records = [
        {"p_image": a, "p_image_times_mask": b, "p_image_times_inverse": c, "area": 0.3,
         "state": {"seconds": 0.0}}
        for a, b, c in probabilities
    ]  # fmt: skip
    s = summarize(records, [], "masker")
    assert s["wrong_way"] == 0.5 and s["removal_halves"] == 0.5
    low, high = s["wrong_way_ci95"]
    assert low < 0.5 < high

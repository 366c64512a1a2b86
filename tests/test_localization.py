"""Localisation protocols and box readers, against values worked out by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rtsal.boxes import mask_box, mask_boxes
from rtsal.data.annotations import (
    boxes_for,
    read_box_csv,
    read_boxes,
    read_coco_json,
    read_voc_dir,
    read_voc_xml,
)
from rtsal.errors import DataError
from rtsal.metrics.localization import (
    LocalisationError,
    MaxBoxAccuracy,
    best_iou,
    localisation_correct,
    localisation_error,
    localisation_hit,
    max_box_accuracy,
    max_box_accuracy_v2,
    threshold_grid,
)


def rect_mask(size: int, *rects: tuple[int, int, int, int, float]) -> torch.Tensor:
    """(1, size, size) zeros with each (x0, y0, x1, y1, value) rectangle filled."""
    m = torch.zeros(1, size, size)
    for x0, y0, x1, y1, v in rects:
        m[0, y0:y1, x0:x1] = v
    return m


# --------------------------------------------------------------------------- the paper's protocol


def test_iou_just_above_and_just_below_one_half():
    gt = [[(0, 0, 10, 10)]]  # area 100
    # mask box (0, 0, 16, 12): intersection 100, union 16 * 12 = 192, IoU = 100/192 = 0.521 > 0.5
    above = mask_boxes([rect_mask(20, (0, 0, 16, 12, 0.9))])
    # mask box (0, 0, 17, 12): union 17 * 12 = 204, IoU = 100/204 = 0.490 < 0.5
    below = mask_boxes([rect_mask(20, (0, 0, 17, 12, 0.9))])
    assert above == [(0, 0, 16, 12)] and below == [(0, 0, 17, 12)]
    assert localisation_correct(above, gt) == [True]
    assert localisation_correct(below, gt) == [False]
    # IoU exactly 0.5 ((0, 0, 10, 5): 50/100) is not "above 0.5"
    assert localisation_correct([(0, 0, 10, 5)], gt) == [False]


def test_pixels_at_exactly_the_threshold_are_not_above_it():
    m = rect_mask(20, (2, 2, 6, 6, 0.9), (15, 15, 20, 20, 0.5))
    assert mask_boxes([m]) == [(2, 2, 6, 6)]


def test_all_pixels_rule_spans_both_blobs_and_any_gt_box_counts():
    # blob A (0, 0, 10, 10) and blob B (16, 16, 20, 20), both above 0.5: the box spans both,
    # (0, 0, 20, 20) of area 400; against GT A it has IoU 100/400 = 0.25 -> wrong
    m = rect_mask(20, (0, 0, 10, 10, 0.6), (16, 16, 20, 20, 1.0))
    boxes = mask_boxes([m])
    assert boxes == [(0, 0, 20, 20)]
    assert localisation_correct(boxes, [[(0, 0, 10, 10)]]) == [False]
    # a second GT box (0, 0, 20, 18) has IoU 360/400 = 0.9 -> correct, as IoU with ANY box counts
    assert localisation_correct(boxes, [[(0, 0, 10, 10), (0, 0, 20, 18)]]) == [True]


def test_localisation_error_counts_empty_masks_as_wrong():
    masks = torch.stack(
        [
            rect_mask(20, (0, 0, 10, 10, 0.9)),  # IoU 1 -> right
            rect_mask(20, (0, 0, 10, 10, 0.4)),  # nothing above 0.5 -> no box -> wrong
            torch.zeros(1, 20, 20),  # empty -> wrong
            rect_mask(20, (0, 0, 10, 6, 0.9)),  # IoU 60/100 = 0.6 -> right
        ]
    )  # (4, 1, 20, 20)
    boxes = mask_boxes(masks)
    assert boxes[1] is None and boxes[2] is None
    gt = [[(0, 0, 10, 10)]] * 4
    assert localisation_correct(boxes, gt) == [True, False, False, True]
    assert localisation_error(boxes, gt) == pytest.approx(2 / 4)  # 2 wrong of 4


def test_localisation_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="2 predictions but 1"):
        localisation_error([(0, 0, 1, 1), None], [[(0, 0, 1, 1)]])
    with pytest.raises(ValueError, match="no ground-truth box"):
        localisation_error([(0, 0, 1, 1)], [[]])


# --------------------------------------------------------------------------- MaxBoxAcc


def test_threshold_grid_matches_wsolevaluation():
    grid = threshold_grid()
    assert len(grid) == 100 and grid[0] == 0.0 and grid[-1] == pytest.approx(0.99)
    np.testing.assert_allclose(threshold_grid(0.25), [0.0, 0.25, 0.5, 0.75])


def test_max_box_acc_takes_the_largest_component_where_the_paper_spans_both():
    # image 1: blob A (0, 0, 10, 10) at 0.6, 100 px, matching GT; blob B (16, 16, 20, 20) at
    # 1.0, 16 px. Normalised (min 0, max 1) the values stay 0.6 and 1.0.
    #   tau = 0.00 .. 0.59 (60 thresholds): both blobs > tau, largest is A -> IoU 1 -> right
    #   tau = 0.60 .. 0.99 (40 thresholds): only B (0.6 is not above 0.6) -> IoU 0 -> wrong
    # image 2: one blob (0, 0, 10, 10) but GT (10, 10, 20, 20) -> IoU 0 at every threshold
    masks = [
        rect_mask(20, (0, 0, 10, 10, 0.6), (16, 16, 20, 20, 1.0)),
        rect_mask(20, (0, 0, 10, 10, 1.0)),
    ]
    gt = [[(0, 0, 10, 10)], [(10, 10, 20, 20)]]
    res = max_box_accuracy(masks, gt)
    expected = np.r_[np.full(60, 0.5), np.zeros(40)]  # 1 of 2 images right, then 0 of 2
    np.testing.assert_allclose(res.accuracy[0], expected)
    assert res.value == pytest.approx(0.5)
    assert res.best_thresholds[0] == 0.0
    # the paper's all-pixels rule at 0.5 boxes both blobs of image 1: IoU 100/400 -> wrong
    assert localisation_error(mask_boxes(masks), gt) == 1.0


def test_max_box_acc_counts_iou_of_exactly_the_threshold_and_averages_v2_levels():
    # box (0, 0, 10, 5) vs GT (0, 0, 10, 10): IoU 50/100 = 0.5 -> right for MaxBoxAcc (>= 0.5)
    half = rect_mask(20, (0, 0, 10, 5, 1.0))
    gt = [[(0, 0, 10, 10)]]
    assert max_box_accuracy([half], gt).value == 1.0
    assert localisation_correct(mask_boxes([half]), gt) == [False]  # the paper needs > 0.5
    # box (0, 0, 10, 6): IoU 0.6 -> right at 0.3 and 0.5, wrong at 0.7: mean (1 + 1 + 0)/3 = 2/3
    res = max_box_accuracy([rect_mask(20, (0, 0, 10, 6, 1.0))], gt, iou_thresholds=(0.3, 0.5, 0.7))
    np.testing.assert_allclose(res.best, [1.0, 1.0, 0.0])
    assert res.value == pytest.approx(2 / 3)


def test_max_box_acc_v2_matches_the_best_of_all_components():
    # component A (0, 10, 20, 20), 200 px, misses GT (0, 0, 6, 6); component B is exactly GT
    # V1 (largest = A): IoU 0 everywhere -> 0. V2 (best of A, B): IoU 1 at 0.3/0.5/0.7 -> 1
    m = rect_mask(20, (0, 10, 20, 20, 1.0), (0, 0, 6, 6, 1.0))
    gt = [[(0, 0, 6, 6)]]
    assert max_box_accuracy([m], gt).value == 0.0
    res = max_box_accuracy_v2([m], gt)
    assert res.iou_thresholds == (0.3, 0.5, 0.7)
    assert res.value == 1.0
    assert res.to_dict()["per_iou"]["0.7"]["accuracy"] == 1.0


def test_max_box_acc_options():
    # a constant map normalises to zeros (as wsolevaluation): nothing above any tau -> 0
    assert max_box_accuracy([torch.full((1, 8, 8), 0.7)], [[(0, 0, 8, 8)]]).value == 0.0
    # without normalisation the map is thresholded as it is: tau in {0.5, 0.75} -> 0.7 > 0.5
    # gives the whole image (right), 0.7 > 0.75 is false (no box, wrong)
    res = max_box_accuracy(
        [torch.full((1, 8, 8), 0.7)], [[(0, 0, 8, 8)]], thresholds=[0.5, 0.75], normalize=False
    )
    np.testing.assert_allclose(res.accuracy[0], [1.0, 0.0])


def test_one_image_at_a_time_as_the_scorer_streams():
    # mask box (0, 0, 16, 12) against GT A (0, 0, 10, 10): IoU 100/192 = 0.521; against GT B
    # (0, 0, 16, 6): IoU 96/192 = 0.5 exactly; the best of the two is 0.521 > 0.5 -> right
    m = rect_mask(20, (0, 0, 16, 12, 0.9))
    box = mask_box(m)
    assert box == (0, 0, 16, 12)
    assert best_iou(box, [(0, 0, 10, 10), (0, 0, 16, 6)]) == pytest.approx(100 / 192)
    assert best_iou(box, [(0, 0, 16, 6)]) == 0.5 and best_iou(None, [(0, 0, 16, 6)]) == 0.0
    assert localisation_hit(box, [(0, 0, 10, 10), (0, 0, 16, 6)])
    assert not localisation_hit(box, [(0, 0, 16, 6)])  # 0.5 is not above 0.5
    assert not localisation_hit(None, [(0, 0, 16, 6)])
    # three images, one wrong: error 1/3 (the count of wrong ones over the images, as a mean of
    # 0/1 would give: 1/3, not 1 - 2/3, which differ in the last bit)
    gts = [[(0, 0, 16, 12)], [(0, 0, 16, 6)], [(0, 0, 16, 13)]]  # IoU 1, 0.5, 192/208
    error = LocalisationError()
    assert [error.update(box, g) for g in gts] == [True, False, True]
    assert error.compute() == 1 / 3
    assert localisation_error([box] * 3, gts) == 1 / 3
    with pytest.raises(ValueError, match="no images"):
        LocalisationError().compute()


def test_max_box_accuracy_one_image_at_a_time():
    # normalised, the mask is 0.5 on blob A (0, 0, 10, 10) and 1 on blob B (16, 16, 20, 20):
    # tau 0 and 0.25 keep both blobs (largest A), tau 0.5 and 0.75 keep B alone
    m = rect_mask(20, (0, 0, 10, 10, 0.5), (16, 16, 20, 20, 1.0))
    acc = MaxBoxAccuracy(thresholds=[0.0, 0.25, 0.5, 0.75], iou_thresholds=(0.5,))
    hits = acc.update(m, [(0, 0, 10, 10)])  # right while A is the largest component
    np.testing.assert_array_equal(hits, [[True, True, False, False]])
    hits = acc.update(m, [(16, 16, 20, 20)])  # right once B is alone
    np.testing.assert_array_equal(hits, [[False, False, True, True]])
    res = acc.compute()
    np.testing.assert_allclose(res.accuracy, [[0.5, 0.5, 0.5, 0.5]])
    assert res.images == 2 and res.value == 0.5
    # V2 (best of all components): at tau 0 and 0.25, B's own box counts for the second image
    v2 = MaxBoxAccuracy.v2(thresholds=[0.0, 0.25, 0.5, 0.75])
    v2.update(m, [(0, 0, 10, 10)])
    v2.update(m, [(16, 16, 20, 20)])
    np.testing.assert_allclose(v2.compute().accuracy, [[1, 1, 0.5, 0.5]] * 3)
    batch = max_box_accuracy_v2(
        [m, m], [[(0, 0, 10, 10)], [(16, 16, 20, 20)]], thresholds=v2.thresholds
    )
    np.testing.assert_array_equal(batch.accuracy, v2.compute().accuracy)
    with pytest.raises(ValueError, match="no ground-truth box"):
        acc.update(m, [])


# --------------------------------------------------------------------------- readers

VOC = """<annotation>
  <filename>{filename}</filename>
  <size><width>500</width><height>375</height><depth>3</depth></size>
  <object><name>dog</name><difficult>0</difficult>
    <bndbox><xmin>1</xmin><ymin>1</ymin><xmax>{xmax}</xmax><ymax>5</ymax></bndbox></object>
  <object><name>person</name><difficult>1</difficult>
    <bndbox><xmin>48</xmin><ymin>240</ymin><xmax>195</xmax><ymax>371</ymax></bndbox></object>
</annotation>"""


def write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def bndbox(*values) -> str:
    tags = ("xmin", "ymin", "xmax", "ymax")
    inner = "".join(f"<{t}>{v}</{t}>" for t, v in zip(tags, values, strict=True) if v is not None)
    return f"<bndbox>{inner}</bndbox>"


def one_line_error(exc: pytest.ExceptionInfo, *fragments: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    for f in fragments:
        assert f in msg, msg


def test_voc_boxes_convert_from_one_based_inclusive(tmp_path):
    f = write(tmp_path / "a.xml", VOC.format(filename="2007_000027.jpg", xmax=10))
    # VOC xmin=1..xmax=10 are pixels 1..10 (1-based, inclusive) = 0..9 (0-based) = [0, 10)
    # xmin=48..xmax=195 -> [47, 195): width 195 - 48 + 1 = 148 = 195 - 47
    assert read_voc_xml(f) == {
        "2007_000027.jpg": [("dog", (0, 0, 10, 5)), ("person", (47, 239, 195, 371))]
    }
    assert read_voc_xml(f, skip_difficult=True) == {"2007_000027.jpg": [("dog", (0, 0, 10, 5))]}
    # xmin = xmax = 1 is one pixel wide: [0, 1)
    g = write(tmp_path / "b.xml", VOC.format(filename="b.jpg", xmax=1))
    assert read_voc_xml(g)["b.jpg"][0] == ("dog", (0, 0, 1, 5))


def test_imagenet_xml_names_match_by_stem(tmp_path):
    folder = tmp_path / "val"
    folder.mkdir()
    write(folder / "x1.xml", VOC.format(filename="ILSVRC2012_val_00000001", xmax=10))
    write(folder / "x2.xml", VOC.format(filename="ILSVRC2012_val_00000002", xmax=20))
    ann = read_voc_dir(folder)
    assert set(ann) == {"ILSVRC2012_val_00000001", "ILSVRC2012_val_00000002"}
    assert boxes_for(ann, "imgs/ILSVRC2012_val_00000002.JPEG", "dog") == [(0, 0, 20, 5)]
    assert boxes_for(ann, "ILSVRC2012_val_00000001.JPEG") == [(0, 0, 10, 5), (47, 239, 195, 371)]
    assert boxes_for(ann, "unknown.JPEG") == []
    assert read_boxes(folder) == ann


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        ("<bndbox><xmin>1</xmin><ymin>1</ymin><ymax>5</ymax></bndbox>", ["object 1 (cat)", "xmax"]),
        ("<bndbox><xmin>a1</xmin><ymin>1</ymin><xmax>4</xmax><ymax>5</ymax></bndbox>", ["'a1'"]),
        (
            "<bndbox><xmin>9</xmin><ymin>1</ymin><xmax>4</xmax><ymax>5</ymax></bndbox>",
            ["empty box"],
        ),
        ("", ["no <bndbox>"]),
    ],
)
def test_malformed_voc_raises_data_error(tmp_path, body, fragments):
    f = write(
        tmp_path / "bad.xml", f"<annotation><object><name>cat</name>{body}</object></annotation>"
    )
    with pytest.raises(DataError) as exc:
        read_voc_xml(f)
    one_line_error(exc, "bad.xml", *fragments)


def test_broken_xml_raises_data_error(tmp_path):
    f = write(tmp_path / "broken.xml", "<annotation><object>")
    with pytest.raises(DataError) as exc:
        read_voc_xml(f)
    one_line_error(exc, "broken.xml", "not valid XML")


COCO = {
    "images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}],
    "categories": [{"id": 18, "name": "dog"}],
    "annotations": [
        {"image_id": 1, "category_id": 18, "bbox": [10.0, 20.0, 30.0, 40.0]},
        {"image_id": 1, "category_id": 18, "bbox": [0.4, 0.6, 9.2, 3.3], "iscrowd": 1},
    ],
}


def test_coco_boxes_from_xywh(tmp_path):
    f = write(tmp_path / "instances.json", json.dumps(COCO))
    # [10, 20, 30, 40] -> (10, 20, 10 + 30, 20 + 40)
    # [0.4, 0.6, 9.2, 3.3] -> edges 0.4, 0.6, 9.6, 3.9 rounded half up -> (0, 1, 10, 4)
    assert read_coco_json(f) == {
        "a.jpg": [("dog", (10, 20, 40, 60)), ("dog", (0, 1, 10, 4))],
        "b.jpg": [],
    }
    assert read_coco_json(f, skip_crowd=True)["a.jpg"] == [("dog", (10, 20, 40, 60))]
    assert read_boxes(f) == read_coco_json(f)


@pytest.mark.parametrize(
    ("change", "fragments"),
    [
        (lambda d: d.pop("categories"), ["top level has no 'categories'"]),
        (lambda d: d["annotations"][0].pop("bbox"), ["annotations[0] has no 'bbox'"]),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, "x", 4]), ["bbox[2]", "'x'"]),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, 0, 4]), ["annotations[0]", "empty box"]),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), ["[x, y, width, height]"]),
        (lambda d: d["annotations"][0].update(category_id=5), ["category_id 5"]),
        (lambda d: d["images"][1].pop("file_name"), ["images[1] has no 'file_name'"]),
    ],
)
def test_malformed_coco_raises_data_error(tmp_path, change, fragments):
    data = json.loads(json.dumps(COCO))
    change(data)
    f = write(tmp_path / "bad.json", json.dumps(data))
    with pytest.raises(DataError) as exc:
        read_coco_json(f)
    one_line_error(exc, "bad.json", *fragments)


def test_invalid_json_raises_data_error(tmp_path):
    f = write(tmp_path / "bad.json", "{not json")
    with pytest.raises(DataError) as exc:
        read_coco_json(f)
    one_line_error(exc, "bad.json", "not valid JSON")


def test_csv_boxes(tmp_path):
    f = write(
        tmp_path / "boxes.csv",
        "image,class,x0,y0,x1,y1\na.jpg,dog,0,0,10,5\na.jpg,cat,3.0,4,7,8\nb.jpg,dog,1,1,2,2\n",
    )
    assert read_box_csv(f) == {
        "a.jpg": [("dog", (0, 0, 10, 5)), ("cat", (3, 4, 7, 8))],
        "b.jpg": [("dog", (1, 1, 2, 2))],
    }
    assert read_boxes(f) == read_box_csv(f)


CSV_HEAD = "image,class,x0,y0,x1,y1\n"


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("image,class,x0,y0,x1\na.jpg,dog,0,0,1\n", ["missing: y1"]),
        (CSV_HEAD + "a.jpg,dog,0,0,1\n", ["line 2", "missing y1"]),
        (
            "image,class,x0,y0,x1,y1\na.jpg,dog,0,0,1,2\na.jpg,dog,0,zero,1,2\n",
            ["line 3", "'zero'"],
        ),
        (CSV_HEAD + "a.jpg,dog,5,0,5,2\n", ["line 2", "empty box (5, 0, 5, 2)"]),
    ],
)
def test_malformed_csv_raises_data_error(tmp_path, text, fragments):
    f = write(tmp_path / "bad.csv", text)
    with pytest.raises(DataError) as exc:
        read_box_csv(f)
    one_line_error(exc, "bad.csv", *fragments)


def test_read_boxes_rejects_unknown_and_missing_files(tmp_path):
    with pytest.raises(DataError, match="unknown box file type"):
        read_boxes(tmp_path / "boxes.txt")
    with pytest.raises(DataError, match="not found"):
        read_boxes(tmp_path / "missing.csv")

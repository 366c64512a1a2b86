"""Intervals and paired tests behind ``rtsal metric``'s 95 % intervals and ``rtsal compare``,
on cases whose answers are known in closed form."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rtsal.errors import RtsalError
from rtsal.metrics.uncertainty import (
    Z95,
    bootstrap_interval,
    compare_means,
    compare_rates,
    mcnemar_exact,
    wilson_interval,
)
from rtsal.runs.compare import compare_scores, describe
from tests.helpers import assert_one_line_error, run_main


def test_wilson_interval_known_answers():
    z2 = Z95**2
    # no success in one trial: [0, z^2 / (1 + z^2)]
    assert wilson_interval(0, 1) == pytest.approx((0.0, z2 / (1 + z2)))
    assert wilson_interval(1, 1) == pytest.approx((1 / (1 + z2), 1.0))
    # half of 100: centred on 0.5, half-width z / (1 + z^2/n) * sqrt(1/400 + z^2/40000)
    lo, hi = wilson_interval(50, 100)
    half = Z95 / (1 + z2 / 100) * math.sqrt(0.25 / 100 + z2 / 40000)
    assert (lo, hi) == pytest.approx((0.5 - half, 0.5 + half))
    # the interval narrows with n and always holds the rate
    assert wilson_interval(500, 1000)[1] - wilson_interval(500, 1000)[0] < hi - lo
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
    with pytest.raises(ValueError):
        wilson_interval(0, 0)


def test_mcnemar_exact_known_answers():
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)  # six coin flips all one way
    assert mcnemar_exact(6, 0) == mcnemar_exact(0, 6)
    assert mcnemar_exact(5, 5) == 1.0
    assert mcnemar_exact(0, 0) == 1.0
    # 1 against 9: 2 * (1 + 10) / 1024
    assert mcnemar_exact(1, 9) == pytest.approx(22 / 1024)


def test_bootstrap_interval():
    assert bootstrap_interval([0.25] * 50) == (0.25, 0.25)  # no spread, no width
    v = np.random.default_rng(1).normal(2.0, 1.0, size=400)
    lo, hi = bootstrap_interval(v)
    assert lo < v.mean() < hi
    # about the normal-theory interval: mean +- 1.96 * sd / sqrt(n)
    se = v.std(ddof=1) / math.sqrt(v.size)
    assert hi - lo == pytest.approx(2 * Z95 * se, rel=0.15)
    assert bootstrap_interval(v, seed=3) == bootstrap_interval(v, seed=3)  # seeded
    with pytest.raises(ValueError):
        bootstrap_interval([])
    with pytest.raises(ValueError):
        bootstrap_interval([1.0, float("inf")])


def test_paired_comparisons():
    a = [True] + [False] * 9  # A misses image 0
    b = [True] * 7 + [False] * 3  # B misses images 0-6
    r = compare_rates(a, b)
    assert (r.a, r.b, r.only_a, r.only_b) == (0.1, 0.7, 0, 6)
    assert r.difference == pytest.approx(-0.6)
    assert r.p_value == pytest.approx(2 / 64)
    # a constant per-image difference has a zero-width interval at that difference
    m = compare_means([0.1, 0.5, 0.9], [0.3, 0.7, 1.1])
    assert m.difference == pytest.approx(-0.2)
    assert m.interval == pytest.approx((-0.2, -0.2))
    with pytest.raises(ValueError):
        compare_rates([True], [True, False])


def _scores(folder, method, rows, command="localize"):
    folder.mkdir()
    header = {
        "rtsal": "scores",
        "version": 1,
        "command": command,
        "options": {"method": method, "checkpoint": None, "metrics": ["localization"]},
        "samples": len(rows),
        "inputs": "x",
        "shard": "0/1",
    }
    lines = [header] + [
        {"sample": i, "input": f"img{i}.jpg", "class_index": 3, **r} for i, r in enumerate(rows)
    ]
    (folder / f"{method}-{command}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return folder


def test_compare_scores_pairs_images_by_input(tmp_path):
    # A localises images 1-9; B only 7-9; image 10 was scored by A alone
    a = _scores(
        tmp_path / "a",
        "masker",
        [{"localized": i > 0, "saliency": 0.1} for i in range(11)],
    )
    b = _scores(
        tmp_path / "b",
        "grad-cam",
        [{"localized": i > 6, "saliency": 0.4} for i in range(10)],
    )
    c = compare_scores(a, b)
    assert (c.images, c.only_in_a, c.only_in_b) == (10, 1, 0)
    loc = c.rates["localization_error"]
    assert (loc.a, loc.b, loc.only_a, loc.only_b) == (0.1, 0.7, 0, 6)
    assert loc.p_value == pytest.approx(2 / 64)
    assert c.means["saliency"].interval == pytest.approx((-0.3, -0.3))
    assert "pointing" not in c.rates  # neither run scored it
    text = describe(c)
    assert "A  10.0%  B  70.0%" in text and "p = 0.031" in text and "1 only in A" in text


def test_compare_bad_input_is_one_line(tmp_path):
    a = _scores(tmp_path / "a", "masker", [{"localized": True}])
    run = run_main("compare", a, tmp_path / "missing")
    assert_one_line_error(run, "missing", "no such file")
    (tmp_path / "empty").mkdir()
    run = run_main("compare", a, tmp_path / "empty")
    assert_one_line_error(run, "no scores")
    other = _scores(tmp_path / "o", "m", [{"localized": True}])
    text = (other / "m-localize.jsonl").read_text().replace("img0.jpg", "elsewhere.jpg")
    (other / "m-localize.jsonl").write_text(text)
    run = run_main("compare", a, other)
    assert_one_line_error(run, "share no image")
    # a header without the run's fields (samples, inputs, shard) is named, not a traceback
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "m-localize.jsonl").write_text(
        json.dumps({"rtsal": "scores", "command": "localize", "options": {"method": "m"}})
        + "\n"
        + json.dumps({"sample": 0, "input": "img0.jpg", "class_index": 3, "localized": 1})
        + "\n"
    )
    run = run_main("compare", a, broken)
    assert_one_line_error(run, "lacks its run's fields")
    with pytest.raises(RtsalError, match="no scores"):
        compare_scores(a, tmp_path / "empty")
    # one shard of two: the other's samples are missing
    shards = _sharded(tmp_path / "sharded", [{"localized": True}, {"localized": False}])
    (shards / "masker-localize.shard-1-of-2.jsonl").unlink()
    run = run_main("compare", a, shards)
    assert_one_line_error(run, "1 of 2 samples", "missing shards")


def _sharded(folder, rows):
    """The scores of ``rows`` as written by two shards (sample i in shard i % 2)."""
    whole = _scores(folder, "masker", rows)
    lines = (whole / "masker-localize.jsonl").read_text().splitlines()
    (whole / "masker-localize.jsonl").unlink()
    for i in range(2):
        header = {**json.loads(lines[0]), "shard": f"{i}/2"}
        mine = [x for x in lines[1:] if json.loads(x)["sample"] % 2 == i]
        text = "".join(json.dumps(header) + "\n" + "".join(x + "\n" for x in mine))
        (whole / f"masker-localize.shard-{i}-of-2.jsonl").write_text(text)
    return whole


def test_compare_reads_a_folder_of_complete_shards_as_one_run(tmp_path):
    # A localises images 1-3 of 4 (scored in two shards), B image 3 only
    rows = [{"localized": i > 0} for i in range(4)]
    a = _sharded(tmp_path / "a", rows)
    b = _scores(tmp_path / "b", "grad-cam", [{"localized": i > 2} for i in range(4)])
    c = compare_scores(a, b)
    assert c.images == 4
    r = c.rates["localization_error"]
    assert (r.a, r.b, r.only_a, r.only_b) == (0.25, 0.75, 0, 2)

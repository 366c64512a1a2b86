"""bench/seen_unseen.py: a scored run's photos split by seen class or by the black box's
confidence in the label, with hand-counted shares."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "seen_unseen.py"
SPEC = importlib.util.spec_from_file_location("seen_unseen", BENCH)
seen_unseen = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(seen_unseen)


def record(cls: int, p: float, keep: float, drop: float, localized: bool) -> dict:
    return {
        "class_index": cls,
        "p_image": p,
        "p_image_times_mask": keep,
        "p_image_times_inverse": drop,
        "localized": localized,
        "saliency": 1.0,
    }


RECORDS = [
    record(1, 0.05, 0.01, 0.02, False),  # unsure of the label, wrong way round
    record(2, 0.05, 0.03, 0.01, True),
    record(1, 0.9, 0.8, 0.1, True),  # sure, removal halves it
    record(3, 0.7, 0.3, 0.5, False),  # sure, wrong way round
]


def test_confidence_bins_count_by_hand():
    bins = seen_unseen.by_confidence(RECORDS)
    low, high = bins["0.0-0.1"], bins["0.6-1.0"]
    assert low["photos"] == 2 and high["photos"] == 2 and bins["0.1-0.3"]["photos"] == 0
    assert low["wrong_way"] == pytest.approx(0.5) and low["localization_error"] == 0.5
    assert high["wrong_way"] == pytest.approx(0.5)
    assert high["removal_halves"] == pytest.approx(0.5)  # 0.1 <= 0.45; 0.5 > 0.35


def test_the_command_splits_by_seen_class_or_confidence(tmp_path):
    rows = tmp_path / "rows"
    rows.mkdir()
    lines = [json.dumps({"rtsal": "scores"})] + [json.dumps(r) for r in RECORDS]
    (rows / "masker-metric.jsonl").write_text("\n".join(lines) + "\n")
    classes = tmp_path / "train-classes.tsv"
    classes.write_text("1\ttench\t40\n2\tgoldfish\t3\n")
    run = [sys.executable, str(BENCH), str(rows)]
    seen = json.loads(
        subprocess.run(
            [*run, str(classes), "--json"], capture_output=True, text=True, check=True
        ).stdout
    )
    assert seen["seen"]["photos"] == 3 and seen["unseen"]["photos"] == 1  # class 3 unseen
    assert seen["unseen"]["wrong_way"] == 1.0
    conf = json.loads(
        subprocess.run(
            [*run, "--by-confidence", "--json"], capture_output=True, text=True, check=True
        ).stdout
    )
    assert conf["all"]["photos"] == 4 and conf["0.6-1.0"]["localization_error"] == 0.5
    bad = subprocess.run(run, capture_output=True, text=True)
    assert bad.returncode != 0 and "--by-confidence" in bad.stderr

"""`rtsal classifier train`, `rtsal train` and `rtsal evaluate` end to end on Fashion-MNIST, and
their answers to bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rtsal.registry.resolve import load_masking_model
from tests.helpers import (
    FASHION_MNIST_REASON,
    assert_one_line_error,
    fashion_mnist_installed,
    run_main,
    run_rtsal,
)

pytestmark = pytest.mark.skipif(not fashion_mnist_installed(), reason=FASHION_MNIST_REASON)


@pytest.fixture(scope="module")
def fm_masker(fm_classifier, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("fm") / "masker"
    run = run_rtsal(
        "train",
        "--blackbox",
        fm_classifier,
        "--data",
        "fashion-mnist",
        "--steps",
        30,
        "--batch-size",
        16,
        "--out",
        out,
        "--json",
        "--upsampler-channels",
        "32,16",
        "--encoder",
        "small",
        "--small-widths",
        "16,32,64",
    )
    assert run.code == 0, run.stderr
    return out, json.loads(run.stdout)


def test_train_writes_a_self_describing_checkpoint(fm_masker, fm_classifier):
    out, summary = fm_masker
    assert summary["steps"] == 30
    meta = json.loads((out / "rtsal.json").read_text())
    assert meta["format"] == "rtsal-masking-model"
    assert meta["black_box"]["name"] == str(fm_classifier.resolve())
    assert meta["black_box"]["class_names"][0] == "T-shirt/top"
    assert meta["black_box"]["input_size"] == [28, 28]
    assert meta["model"]["encoder"] == "small" and meta["model"]["in_channels"] == 1
    assert meta["training"]["steps_done"] == 30 and meta["training"]["batch_size"] == 16
    assert meta["objective"]["preset"] == "paper"
    for term in ("total", "tv", "area", "preserve", "destroy"):
        assert term in meta["final_losses"]
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 31))
    assert all({"tv", "area", "preserve", "destroy"} <= r.keys() for r in log)


def test_checkpoint_loads_back_and_gives_masks(fm_masker):
    out, _ = fm_masker
    # its black box is a classifier folder outside the checkpoint: trusted explicitly
    model, box, _ = load_masking_model(out, trust_code=True)
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        masks = model(x, torch.tensor([0, 4, 9])).mask
    assert masks.shape == (3, 1, 28, 28)
    assert float(masks.min()) >= 0.0 and float(masks.max()) <= 1.0


def test_evaluate_reports_and_draws_a_grid(fm_masker, fm_classifier, tmp_path):
    out, _ = fm_masker
    # the masker's black box is a classifier folder outside its checkpoint: named by the user
    refused = run_main("evaluate", out, "--data", "fashion-mnist", "--limit", 10)
    assert_one_line_error(refused, "--blackbox", "--trust-code")
    run = run_rtsal(
        "evaluate",
        out,
        "--blackbox",
        fm_classifier,
        "--data",
        "fashion-mnist",
        "--limit",
        200,
        "--grid",
        8,
        "--out",
        tmp_path,
        "--json",
    )
    assert run.code == 0, run.stderr
    rep = json.loads(run.stdout)
    assert rep["images"] == 200
    for k in ("p_image", "p_preserved", "p_destroyed", "area_true", "area_fake"):
        assert 0.0 <= rep[k] <= 1.0
    assert (tmp_path / "grid.png").stat().st_size > 0
    assert json.loads((tmp_path / "report.json").read_text())["images"] == 200


def test_unknown_black_box_suggests_close_matches(tmp_path):
    run = run_main("train", "--blackbox", "resnet5O", "--data", tmp_path, "--out", tmp_path)
    assert_one_line_error(run, "unknown black box", "resnet50")


def test_missing_data_path(fm_classifier, tmp_path):
    # in a process of its own, as a user runs it
    run = run_rtsal(
        "train", "--blackbox", fm_classifier, "--data", tmp_path / "nope", "--out", tmp_path / "o"
    )
    assert_one_line_error(run, "data path not found", "nope")


def test_unwritable_out_fails_before_training(fm_classifier, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    run = run_main(
        "train", "--blackbox", fm_classifier, "--data", "fashion-mnist", "--out", blocker / "sub"
    )
    assert_one_line_error(run, "cannot write to output directory")
    run = run_main(
        "train", "--blackbox", fm_classifier, "--data", "fashion-mnist", "--out", blocker
    )
    assert_one_line_error(run, "not a directory")
    assert blocker.read_text() == "x"  # nothing overwritten


def test_checkpoint_from_another_black_box_is_refused(fm_masker, tmp_path):
    out, _ = fm_masker
    other = tmp_path / "other.py"
    other.write_text(
        "import torch\n"
        "def build():\n"
        "    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 5))\n"
        "    net.mean, net.std, net.input_size = (0.5,), (0.5,), 28\n"
        "    return net\n"
    )
    run = run_rtsal(  # in a process of its own, as a user runs it
        "evaluate", out, "--blackbox", f"{other}:build", "--data", "fashion-mnist", "--limit", 10
    )
    assert_one_line_error(run, "trained for black box", "10 classes", "has 5")


def test_bad_checkpoint_path(tmp_path):
    run = run_main("evaluate", tmp_path / "missing", "--data", "fashion-mnist")
    assert_one_line_error(run, "checkpoint not found")
    (tmp_path / "rtsal.json").write_text("{not json")
    run = run_main("evaluate", tmp_path, "--data", "fashion-mnist")
    assert_one_line_error(run, "unreadable checkpoint")


def test_objective_options_reach_the_objective(fm_classifier, tmp_path, monkeypatch):
    import rtsal.training.trainer as trainer_module

    seen = {}

    class Stop(Exception):
        pass

    def capture(config, black_box, generator=None):
        seen["config"] = config
        raise Stop

    monkeypatch.setattr(trainer_module, "SaliencyObjective", capture)
    run = run_main(
        "train", "--blackbox", fm_classifier, "--data", "fashion-mnist", "--steps", 1,
        "--batch-size", 4, "--out", tmp_path / "m", "--encoder", "small",
        "--upsampler-channels", "32,16", "--small-widths", "16,32,64",
        "--destroy-dilation", 3, "--area-power", 0.5, "--area-weight", 2,
    )  # fmt: skip
    assert "Stop" in run.stderr  # stopped where the objective is built
    cfg = seen["config"]
    assert (cfg.destroy_dilation, cfg.area_power, cfg.area_weight) == (3, 0.5, 2.0)
    assert cfg.tv_weight == trainer_module.objective_preset("paper").tv_weight  # the rest: preset

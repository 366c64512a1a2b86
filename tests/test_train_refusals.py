"""Training option values that would write a useless checkpoint are refused before any data or
model is loaded, with a message naming the option."""

from __future__ import annotations

import math

import pytest

from rtsal.errors import RtsalError
from rtsal.training.trainer import TrainConfig, check_options
from tests.helpers import assert_one_line_error, run_rtsal


def _cfg(**options) -> TrainConfig:
    return TrainConfig(blackbox="resnet18", data="photos/", **options)


@pytest.mark.parametrize(
    "options, option",
    [
        ({"steps": 0}, "--steps"),
        ({"steps": -3}, "--steps"),
        ({"epochs": 0}, "--epochs"),
        ({"epochs": 0.0}, "--epochs"),
        ({"epochs": -1.5}, "--epochs"),
        ({"epochs": math.nan}, "--epochs"),
        ({"epochs": math.inf}, "--epochs"),
        ({"lr": 0.0}, "--lr"),
        ({"lr": -1e-3}, "--lr"),
        ({"lr": math.nan}, "--lr"),
        ({"holdout": 1.0}, "--holdout"),
        ({"holdout": 1.5}, "--holdout"),
        ({"holdout": -0.1}, "--holdout"),
        ({"holdout": math.nan}, "--holdout"),
        ({"holdout": 0.1, "val_every": 50, "val_photos": 0}, "--val-photos"),
        ({"holdout": 0.1, "val_every": 50, "val_photos": -5}, "--val-photos"),
        ({"destroy_dilation": -1}, "--destroy-dilation"),
        ({"area_power": 0.0}, "--area-power"),
        ({"area_power": math.nan}, "--area-power"),
        # a negative holdout is named as such, not as a missing one
        ({"holdout": -0.1, "val_every": 50}, "--holdout"),
    ],
)
def test_bad_values_are_refused_naming_the_option(options, option):
    with pytest.raises(RtsalError, match=f"^{option} "):
        check_options(_cfg(**options))


@pytest.mark.parametrize(
    "options",
    [
        {},  # neither --steps nor --epochs: one epoch
        {"steps": 1},
        {"epochs": 0.25},  # a fraction of an epoch still trains
        {"steps": 10, "epochs": 2.0},
        {"lr": 1e-6},
        {"destroy_dilation": 0, "area_power": 0.3},
        {"holdout": 0.0},
        {"holdout": 0.99, "val_every": 10, "val_photos": 1},
        {"val_photos": 0},  # not validating: the value is never used
        {"holdout": 0.2, "val_photos": 0},  # held out, not validated on
    ],
)
def test_working_values_pass(options):
    check_options(_cfg(**options))


def test_train_steps_0_is_one_error_line_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    run = run_rtsal(
        "train", "--blackbox", "resnet18", "--data", tmp_path, "--steps", "0", "--out", out
    )
    assert run.code == 1
    assert_one_line_error(run, "--steps must be at least 1")
    assert not out.exists()
    assert "nan" not in run.stderr.lower()

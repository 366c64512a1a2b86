"""`rtsal train` with nothing but a black box and a folder of photos: the ``photos`` preset is the
default for a pretrained classifier, a folder without class folders is labelled by the black box
(said in one line), and the preset's options reach the objective and the optimiser."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.helpers import SHARED_DATA, lite_plugin_only

SAMPLE = SHARED_DATA / "imagenet-sample"
pytestmark = pytest.mark.skipif(not SAMPLE.is_dir(), reason="../shared/data is not present")


@pytest.fixture()
def unlabelled_photos(tmp_path):
    """24 real photos whose file names say nothing of their class."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, p in enumerate(sorted(SAMPLE.iterdir())[::37][:24]):
        shutil.copy(p, folder / f"IMG_{i:04d}.jpg")
    return folder


def test_default_training_uses_the_photos_preset(unlabelled_photos, tmp_path, capsys):
    import rtsal.training.trainer as trainer_module
    from rtsal.cli import main

    seen = {}
    real_objective = trainer_module.SaliencyObjective

    def capture(config, black_box, generator=None):
        seen["objective"] = config
        return real_objective(config, black_box, generator)

    out = tmp_path / "run"
    with lite_plugin_only() as mp:
        mp.setattr(trainer_module, "SaliencyObjective", capture)
        mp.setenv("RTSAL_CACHE", str(tmp_path / "cache"))
        args = ["train", "--blackbox", "efficientnet_lite0", "--data", str(unlabelled_photos)]
        with pytest.raises(SystemExit) as done:
            main([*args, "--steps", "2", "--out", str(out)])
    assert done.value.code == 0
    err = capsys.readouterr().err
    assert "has no class folders" in err and "--labels blackbox" in err
    assert "preset photos" in err
    objective = seen["objective"]
    assert (objective.tv_weight, objective.area_weight, objective.destroy_weight) == (40, 9, 10)
    assert objective.keep_blur_prob == 0.0  # the preserved image's fill: colour and noise
    meta = json.loads((out / "rtsal.json").read_text())
    training = meta["training"]
    assert training["preset"] == "photos" and meta["objective"]["preset"] == "photos"
    assert (training["lr"], training["batch_size"], training["mosaic"]) == (5e-4, 12, 0.3)
    assert training["labels"] == "auto"
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [1, 2] and log[0]["lr"] <= 5e-4

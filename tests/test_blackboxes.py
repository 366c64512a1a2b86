"""Black-box names, weights and the offline behaviour of timm black boxes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from rtsal import create_black_box, is_black_box
from rtsal.errors import CheckpointError, RtsalError, UnknownBlackBoxError
from rtsal.registry.providers.timm_provider import hub_reachable
from tests.helpers import LITE_PLUGIN, REPO, SHARED_DATA, assert_one_line_error, run_rtsal

IMAGENET_SAMPLE = SHARED_DATA / "imagenet-sample"
needs_imagenet_sample = pytest.mark.skipif(
    not IMAGENET_SAMPLE.is_dir(), reason="../shared/data/imagenet-sample is not present"
)
offline = pytest.mark.skipif(hub_reachable(), reason="the model hub is reachable here")


def test_timm_names_with_and_without_prefix():
    a = create_black_box("timm:resnet18", pretrained=False)
    b = create_black_box("resnet18", pretrained=False)
    assert a.name == b.name == "timm:resnet18"
    assert a.num_classes == 1000 and a.class_names[162] == "beagle"
    assert a.input_size == (224, 224) and a.shares_features


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UnknownBlackBoxError) as info:
        create_black_box("resnet5O")
    assert "resnet50" in str(info.value)
    assert isinstance(info.value, KeyError)
    assert not is_black_box("no-such-model-anywhere")


def test_user_code_black_box_from_a_file():
    box = create_black_box("examples/my_model.py:build")
    assert box.num_classes == 10 and box.class_names[3] == "cat"
    assert box.name.startswith(str(REPO / "examples" / "my_model.py"))  # resolved path
    with pytest.raises(RtsalError, match="no callable"):
        create_black_box("examples/my_model.py:nope")
    with pytest.raises(RtsalError, match="not found"):
        create_black_box("missing_file.py:build")


def test_weights_file_is_loaded_into_a_timm_black_box(tmp_path):
    torch.manual_seed(1)
    ref = create_black_box("resnet18", pretrained=False)
    sd = {k: v.contiguous() for k, v in ref.network.state_dict().items()}
    save_file(sd, tmp_path / "r18.safetensors")
    box = create_black_box("resnet18", weights=str(tmp_path / "r18.safetensors"))
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(box(x), ref(x))
    save_file({"fc.weight": torch.zeros(3, 3)}, tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError, match="does not fit"):
        create_black_box("resnet18", weights=str(tmp_path / "bad.safetensors"))


def test_pickled_code_in_a_weights_file_is_refused(tmp_path):
    import pickle

    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"w": Payload()}, f)
    with pytest.raises(CheckpointError, match="refusing to load"):
        create_black_box("resnet18", weights=str(path))
    assert not (tmp_path / "pwned").exists()


@offline
@needs_imagenet_sample
def test_offline_resnet50_fails_fast_with_a_line_about_weights(tmp_path):
    run = run_rtsal(
        "train",
        "--blackbox",
        "resnet50",
        "--data",
        IMAGENET_SAMPLE,
        "--out",
        tmp_path,
        "--steps",
        1,
    )
    assert_one_line_error(run, "cannot get pretrained weights for 'resnet50'", "--weights")


@pytest.mark.slow
@needs_imagenet_sample
def test_resnet50_trains_with_no_pretrained(tmp_path):
    run = run_rtsal(
        "train",
        "--blackbox",
        "resnet50",
        "--no-pretrained",
        "--data",
        IMAGENET_SAMPLE,
        "--limit",
        4,
        "--batch-size",
        2,
        "--steps",
        1,
        "--upsampler-channels",
        "32,16,8",
        "--out",
        tmp_path,
        "--json",
    )
    assert run.code == 0, run.stderr
    assert json.loads(run.stdout)["steps"] == 1


@pytest.mark.slow
@needs_imagenet_sample
def test_lite0_accuracy_command():
    pytest.importorskip("rtsal_efficientnet_lite")
    run = run_rtsal(
        "classifier",
        "evaluate",
        "--blackbox",
        "efficientnet_lite0",
        "--data",
        IMAGENET_SAMPLE,
        "--limit",
        48,
        "--json",
        env=LITE_PLUGIN,
    )
    assert run.code == 0, run.stderr
    res = json.loads(run.stdout)
    assert res["images"] == 48
    assert res["top1"] >= 0.7  # 88 % over all 900 photos (docs/results-imagenet.md)


def test_module_factory_found_in_the_current_folder_and_missing_normalisation_warned(tmp_path):
    """`rtsal explain --blackbox mymodel:build` from the folder holding mymodel.py works with the
    `rtsal` script (which, unlike `python -m`, does not put that folder on the path), and a
    module without mean/std is used unnormalised with a warning."""
    import subprocess
    import sys

    (tmp_path / "cwd_model_rtsal_test.py").write_text(
        "import torch\n"
        "def build():\n"
        "    return torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),\n"
        "                               torch.nn.Linear(3, 4))\n"
    )
    code = (
        "import sys, warnings\n"
        "sys.path = [p for p in sys.path if p not in ('', '.') and p != sys.argv[1]]\n"
        "from rtsal import create_black_box\n"
        "with warnings.catch_warnings(record=True) as seen:\n"
        "    warnings.simplefilter('always')\n"
        "    box = create_black_box('cwd_model_rtsal_test:build')\n"
        "print(box.num_classes, box.mean.flatten().tolist(), [str(w.message) for w in seen])\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("4 [0.0, 0.0, 0.0]")
    assert "no mean/std attributes" in p.stdout
    with pytest.raises(RtsalError, match="cannot import module"):
        create_black_box("no_such_module_rtsal_test:build")

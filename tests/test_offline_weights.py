"""Offline, every command that builds a black box takes --weights FILE and --no-pretrained, as
the offline error tells the user to: rtsal explain, metric, localize and evaluate, with --blackbox
or with the black box a masking-model checkpoint names. A weights file gives exactly the network
that loading it by hand gives; a wrong one is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.helpers import assert_one_line_error, run_main

timm = pytest.importorskip("timm")
skdata = pytest.importorskip("skimage.data")

OFFLINE = {"HF_HUB_OFFLINE": "1"}  # no model hub, whatever the machine can reach
HINT = "pass --weights FILE, or --no-pretrained for random weights"


def rtsal(*args):
    return run_main(*map(str, args), env=OFFLINE)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A real photo (a tabby cat), named by its synset as a labelled folder; and its box."""
    d = tmp_path_factory.mktemp("data")
    (d / "images").mkdir()
    Image.fromarray(skdata.chelsea()).resize((240, 160)).save(d / "images" / "n02123045_cat.jpg")
    (d / "boxes.csv").write_text("image,class,x0,y0,x1,y1\nn02123045_cat.jpg,tabby,70,20,200,150\n")
    return d


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A ResNet-18 state dict (seeded random weights), as a user would save one (seed 1: not
    the network ``--no-pretrained`` rebuilds for a checkpoint, which takes the run's seed, 0)."""
    from safetensors.torch import save_file

    torch.manual_seed(1)
    net = timm.create_model("resnet18", pretrained=False)
    path = tmp_path_factory.mktemp("weights") / "resnet18.safetensors"
    save_file(net.state_dict(), str(path))
    return path


@pytest.fixture(scope="module")
def masker(tmp_path_factory, weights) -> Path:
    """An (untrained) masking-model checkpoint for timm:resnet18 with the weights of
    ``weights`` (its fingerprint is theirs), as `rtsal train` online writes it: its black box
    comes from the hub unless told otherwise."""
    from rtsal import create_black_box
    from rtsal.engine.checkpoint import save_masker
    from rtsal.engine.model import MaskerConfig, build_masking_model

    box = create_black_box("resnet18", weights=str(weights))
    torch.manual_seed(0)
    cfg = MaskerConfig(
        num_classes=1000,
        encoder="blackbox",
        embedding="classifier-tied",
        upsampler_channels=(64, 32, 16),
    )
    out = tmp_path_factory.mktemp("masker") / "resnet18"
    save_masker(out, build_masking_model(cfg, box), box, training={}, final_losses={}, objective={})
    return out


def commands(data: Path, masker: Path) -> dict[str, list]:
    images, boxes = data / "images", data / "boxes.csv"
    gradcam = ["--blackbox", "resnet18", "--method", "gradcam"]
    return {
        "explain": ["explain", images / "n02123045_cat.jpg", *gradcam],
        "explain (checkpoint)": ["explain", images, "--checkpoint", masker],
        "metric": ["metric", "--data", images, *gradcam],
        "localize": ["localize", "--data", images, "--boxes", boxes, *gradcam],
        "evaluate": ["evaluate", masker, "--data", images, "--blackbox", "resnet18"],
    }


@pytest.mark.parametrize("command", ["explain", "explain (checkpoint)", "metric", "localize"])
def test_the_offline_hint_is_true_for_every_command(command, data, masker, weights):
    args = commands(data, masker)[command]
    assert_one_line_error(rtsal(*args), "cannot get pretrained weights for 'resnet18'", HINT)
    for given in (["--no-pretrained"], ["--weights", weights]):
        if command == "explain (checkpoint)" and given == ["--no-pretrained"]:
            # random weights are another network than the one the checkpoint was trained for
            assert_one_line_error(rtsal(*args, *given), "output layer", "--allow-other-black-box")
            given = [*given, "--allow-other-black-box"]
        run = rtsal(*args, *given)
        assert run.code == 0, run.stderr
        assert "error" not in run.stderr


def test_evaluate_takes_them_too(data, masker, weights):
    args = commands(data, masker)["evaluate"]
    assert_one_line_error(rtsal(*args), HINT)
    run = rtsal(*args, "--weights", weights, "--json")
    assert run.code == 0, run.stderr
    assert json.loads(run.stdout)["images"] == 1


def test_weights_give_the_logits_of_loading_them_by_hand(data, masker, weights):
    from safetensors.torch import load_file
    from timm.data import resolve_data_config

    from rtsal.inference.explainer import Explainer
    from rtsal.registry.resolve import resolve_models

    by_hand = timm.create_model("resnet18", pretrained=False).eval()
    by_hand.load_state_dict(load_file(str(weights)))
    cfg = resolve_data_config({}, model=by_hand)
    mean, std = (torch.tensor(cfg[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = by_hand((x - mean) / std)
        for _, box in (
            resolve_models(masker, black_box="resnet18", weights=weights),
            resolve_models(masker, weights=weights),  # the checkpoint's
        ):
            assert torch.equal(box(x), want)
    # the command: top-3 classes and probabilities of the photo as loading by hand gives them
    photo = data / "images" / "n02123045_cat.jpg"
    args = ["explain", photo, "--blackbox", "resnet18", "--method", "gradcam", "--topk", "3"]
    run = rtsal(*args, "--weights", weights, "--json")
    assert run.code == 0, run.stderr
    got = [(r["class_index"], r["p_image"]) for r in map(json.loads, run.stdout.splitlines())]
    prepare = Explainer(method="gradcam", black_box="resnet18", pretrained=False)
    with torch.no_grad():
        p = by_hand((prepare.prepare(Image.open(photo).convert("RGB"))[None] - mean) / std)
    top = p.softmax(1)[0].topk(3)
    assert [c for c, _ in got] == top.indices.tolist()
    assert max(abs(q - float(v)) for (_, q), v in zip(got, top.values, strict=True)) < 2e-6
    random = rtsal(*args, "--no-pretrained", "--json")  # other weights, other numbers
    assert random.code == 0, random.stderr
    assert [json.loads(r)["p_image"] for r in random.stdout.splitlines()] != [q for _, q in got]


def test_wrong_weights_are_one_line(data, masker, weights, tmp_path):
    from safetensors.torch import load_file, save_file

    sd = load_file(str(weights))
    sd["fc.weight"], sd["fc.bias"] = sd["fc.weight"][:10], sd["fc.bias"][:10]  # 10 classes
    ten = tmp_path / "ten-classes.safetensors"
    save_file(sd, str(ten))
    not_tensors = tmp_path / "notes.pt"
    not_tensors.write_text("not a tensor file")
    for command in ("explain", "metric", "localize", "evaluate"):
        run = rtsal(*commands(data, masker)[command], "--weights", ten)
        assert_one_line_error(run, str(ten), "does not fit the model", "fc.weight")
    run = rtsal(*commands(data, masker)["explain"], "--weights", tmp_path / "none.safetensors")
    assert_one_line_error(run, "weights file not found")
    run = rtsal(*commands(data, masker)["explain (checkpoint)"], "--weights", not_tensors)
    assert_one_line_error(run, "refusing to load", "not a plain tensor file")


@pytest.mark.parametrize("command", ["explain", "metric", "localize", "evaluate", "train"])
def test_help_lists_the_options(command):
    run = run_main(command, "--help")
    assert run.code == 0
    for option in ("--weights", "--no-pretrained"):
        assert option in run.stdout, (command, option)


def test_classifier_evaluate_offline(data, weights):
    """rtsal classifier evaluate too: the hint offline, then --no-pretrained and --weights."""
    args = ("classifier", "evaluate", "--blackbox", "resnet18", "--data", data / "images")
    assert_one_line_error(rtsal(*args), HINT)
    for extra in (("--no-pretrained",), ("--weights", weights)):
        run = rtsal(*args, *extra, "--json")
        assert run.code == 0, run.stderr
        result = json.loads(run.stdout)
        assert result["images"] == 1, result

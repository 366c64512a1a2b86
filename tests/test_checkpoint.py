"""Masking-model checkpoints: safetensors + rtsal.json round trip and refusals."""

import json

import pytest
import torch
from torch import nn

from rtsal import BlackBox
from rtsal.engine.checkpoint import MASKER_WEIGHTS, META_NAME, load_masker, save_masker
from rtsal.engine.model import MaskerConfig, build_masking_model
from rtsal.errors import CheckpointError


class TinyNet(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x):
        return self.fc(self.conv(x).relu().mean(dim=(2, 3)))


def make_box(
    name="tiny", num_classes=5, class_names=None, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)
):
    names = class_names or [f"thing{i}" for i in range(num_classes)]
    return BlackBox(
        TinyNet(len(names)),
        name=name,
        class_names=names,
        mean=mean,
        std=std,
        input_size=(32, 32),
    )


CONFIG = dict(
    num_classes=5,
    encoder="small",
    small_widths=(8, 16, 32),
    small_layers=2,
    upsampler_channels=(16, 8),
)


def perturbed_model(box):
    """A masking model with every weight and BN statistic moved away from its init."""
    torch.manual_seed(0)
    model = build_masking_model(MaskerConfig(**CONFIG), box)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.add_(0.1 * torch.randn_like(b))
            elif name.endswith("running_var"):
                b.mul_(torch.rand_like(b) + 0.5)
    return model.eval()


def save(tmp_path, model, box):
    return save_masker(
        tmp_path / "ckpt",
        model,
        box,
        training={"steps": 0},
        final_losses={},
        objective={"preset": "paper"},
    )


@pytest.fixture
def saved(tmp_path):
    box = make_box()
    model = perturbed_model(box)
    return save(tmp_path, model, box), model, box


def test_round_trip_gives_identical_masks(saved):
    path, model, box = saved
    assert (path / MASKER_WEIGHTS).is_file() and (path / META_NAME).is_file()
    loaded, loaded_box, meta = load_masker(path, black_box=box)
    assert loaded_box is box
    assert loaded.config == model.config
    assert not loaded.training
    torch.manual_seed(1)
    images = torch.rand(3, 3, 32, 32)
    classes = torch.tensor([0, 2, 4])
    with torch.no_grad():
        want = model(images, classes).mask
        got = loaded(images, classes).mask
    assert torch.equal(got, want)
    # a model freshly built from the same config gives different masks: the weights were loaded
    fresh = build_masking_model(MaskerConfig(**CONFIG), box).eval()
    with torch.no_grad():
        assert not torch.allclose(fresh(images, classes).mask, want)


def test_round_trip_state_and_meta(saved):
    path, model, box = saved
    loaded, _, meta = load_masker(path, black_box=box)
    sd, sd2 = model.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys()
    assert all(torch.equal(sd[k], sd2[k]) for k in sd)
    assert meta["format"] == "rtsal-masking-model"
    assert meta["black_box"]["name"] == "tiny"
    assert meta["black_box"]["class_names"] == box.class_names
    assert meta["training"] == {"steps": 0}
    assert json.loads((path / META_NAME).read_text())["model"]["small_widths"] == [8, 16, 32]


def test_other_class_count_is_refused(saved):
    path, _, _ = saved
    other = make_box(name="bigger", num_classes=7)
    with pytest.raises(CheckpointError) as err:
        load_masker(path, black_box=other)
    msg = str(err.value)
    assert "'tiny'" in msg and "'bigger'" in msg
    assert "5" in msg and "7" in msg


def test_other_class_names_are_refused(saved):
    path, _, _ = saved
    other = make_box(name="renamed", class_names=[f"other{i}" for i in range(5)])
    with pytest.raises(CheckpointError, match="class names") as err:
        load_masker(path, black_box=other)
    assert "'tiny'" in str(err.value) and "'renamed'" in str(err.value)


def test_other_mean_is_refused(saved):
    path, _, _ = saved
    with pytest.raises(CheckpointError, match="preprocessing"):
        load_masker(path, black_box=make_box(mean=(0.4, 0.5, 0.5)))


def test_other_std_is_refused(saved):
    path, _, _ = saved
    with pytest.raises(CheckpointError, match="preprocessing"):
        load_masker(path, black_box=make_box(std=(0.5, 0.5, 0.5)))


@pytest.mark.parametrize("keep", [0.5, 0.01, 0.0])
def test_truncated_weights_are_refused(saved, keep):
    path, _, box = saved
    w = path / MASKER_WEIGHTS
    data = w.read_bytes()
    w.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_masker(path, black_box=box)


def test_missing_meta_is_refused(saved):
    path, _, box = saved
    (path / META_NAME).unlink()
    with pytest.raises(CheckpointError, match=META_NAME):
        load_masker(path, black_box=box)


def test_missing_weights_are_refused(saved):
    path, _, box = saved
    (path / MASKER_WEIGHTS).unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_masker(path, black_box=box)


def test_corrupt_meta_is_refused(saved):
    path, _, box = saved
    (path / META_NAME).write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_masker(path, black_box=box)


def test_missing_directory_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_masker(tmp_path / "nowhere", black_box=make_box())


def test_architecture_mismatch_is_refused(saved):
    path, _, box = saved
    meta = json.loads((path / META_NAME).read_text())
    meta["model"]["upsampler_channels"] = [32, 8]
    (path / META_NAME).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not match"):
        load_masker(path, black_box=box)


def test_meta_path_may_be_the_json_file(saved):
    path, model, box = saved
    loaded, _, _ = load_masker(path / META_NAME, black_box=box)
    assert loaded.config == model.config


def test_another_network_of_the_same_classes_is_refused_by_its_fingerprint(saved):
    """Same classes and preprocessing, other weights (another training run of the network):
    refused in one line naming both, unless the user overrides it explicitly."""
    path, model, box = saved
    torch.manual_seed(123)
    other = make_box(name="tiny-retrained")  # TinyNet again: same architecture, new weights
    assert other.fingerprint()["architecture"] == box.fingerprint()["architecture"]
    assert other.fingerprint()["head"] != box.fingerprint()["head"]
    with pytest.raises(CheckpointError) as err:
        load_masker(path, black_box=other)
    msg = str(err.value)
    assert "'tiny'" in msg and "'tiny-retrained'" in msg and "output layer" in msg
    assert "--allow-other-black-box" in msg and "\n" not in msg
    loaded, _, _ = load_masker(path, black_box=other, allow_other_black_box=True)
    assert loaded.config == model.config
    assert json.loads((path / META_NAME).read_text())["black_box"]["fingerprint"] == (
        box.fingerprint()
    )


def test_another_architecture_is_refused_by_its_fingerprint(saved):
    path, _, box = saved

    class WiderNet(TinyNet):
        def __init__(self, num_classes):
            super().__init__(num_classes)
            self.conv = nn.Conv2d(3, 4, 5, padding=2)

    wider = BlackBox(
        WiderNet(5), name="wider", class_names=box.class_names, mean=box.mean_values,
        std=box.std_values, input_size=box.input_size,
    )  # fmt: skip
    wider.network.fc.load_state_dict(box.network.fc.state_dict())  # the same output layer
    with pytest.raises(CheckpointError, match="differs in its architecture"):
        load_masker(path, black_box=wider)


def test_the_fingerprint_is_the_output_layer_hashed_as_float32():
    box = make_box()
    same = make_box()
    same.network.load_state_dict(box.network.state_dict())
    assert same.fingerprint() == box.fingerprint()
    half = make_box()
    half.network.load_state_dict(box.network.state_dict())
    half.network.fc.half()
    with torch.no_grad():  # float16 weights that are float32's rounded: another head
        assert half.fingerprint()["head"] != box.fingerprint()["head"]
    count = sum(p.numel() for p in box.network.parameters())
    assert box.fingerprint()["architecture"] == f"TinyNet/{count}"

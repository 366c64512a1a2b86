"""The library API (docs/api.md): ``from rtsal import Explainer``, calling it on photos, paths
and tensors with every kind of target, ``from_pretrained`` and Captum-style ``attribute``; each
checked against the explanation path ``rtsal explain`` uses (``explain_batch``)."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys

import pytest
import torch
from PIL import Image

from rtsal.errors import CheckpointError, DataError, RtsalError, UnknownClassError
from tests.helpers import REPO, lite_plugin_only

skdata = pytest.importorskip("skimage.data")
pytest.importorskip("rtsal_efficientnet_lite")

SHIPPED = REPO / "rtsal" / "assets" / "efficientnet_lite0"
EGYPTIAN_CAT, TABBY, ESPRESSO = 285, 281, 967  # chelsea is an Egyptian cat to the black box


@pytest.fixture(scope="module", autouse=True)
def only_the_lite_plugin():
    """The shipped model's black box comes from the EfficientNet-Lite plugin; no other plugin
    installed here is loaded into this process."""
    with lite_plugin_only():
        yield


@pytest.fixture(scope="module")
def explainer():
    from rtsal import Explainer

    return Explainer()  # the shipped model


@pytest.fixture(scope="module")
def chelsea() -> Image.Image:
    return Image.fromarray(skdata.chelsea())  # 451 x 300


@pytest.fixture(scope="module")
def coffee() -> Image.Image:
    return Image.fromarray(skdata.coffee())  # 600 x 400


@pytest.fixture(scope="module")
def batch224(chelsea, coffee) -> torch.Tensor:
    """Two real photos as the black box takes them: (2, 3, 224, 224) in [0, 1]."""
    from rtsal.data.images import pil_to_tensor

    return torch.stack(
        [pil_to_tensor(im.resize((224, 224), Image.BICUBIC)) for im in (chelsea, coffee)]
    )


def reference_mask(explainer, image: Image.Image, cls: int | None = None) -> torch.Tensor:
    """The mask ``rtsal explain`` writes for ``image`` (its top-1 class without ``cls``)."""
    (explanation,) = explainer.explain_batch([image], None if cls is None else [cls])[0]
    return explanation.mask[None]  # (1, H, W)


def test_import_rtsal_leaves_torch_out_and_explainer_resolves():
    code = (
        "import sys, rtsal\n"
        "assert 'torch' not in sys.modules, 'import rtsal imported torch'\n"
        "from rtsal import Explainer\n"
        "from rtsal.inference.explainer import Explainer as Defined\n"
        "assert Explainer is Defined and rtsal.Explainer is Defined\n"
        "assert 'Explainer' in rtsal.__all__ and 'Explainer' in dir(rtsal)\n"
        "print(Explainer.__module__)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "RTSAL_DISABLE_PLUGIN_AUTOLOAD": "1"},
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "rtsal.inference.explainer"


def test_shipped_model_on_a_photo_is_the_explain_commands_mask(explainer, chelsea, tmp_path):
    masks = explainer(chelsea)
    assert masks.shape == (1, 1, 300, 451) and masks.dtype == torch.float32
    assert float(masks.min()) >= 0 and float(masks.max()) <= 1
    assert 0.05 < float(masks.mean()) < 0.95  # a mask, not all or nothing
    assert not masks.is_inference()  # an ordinary tensor, usable with autograd
    assert (masks[0] - reference_mask(explainer, chelsea)).abs().max() <= 1e-6
    # the top-1 class is what is explained: the same as asking for it
    assert (explainer(chelsea, EGYPTIAN_CAT) - masks).abs().max() <= 1e-6
    # a file gives the same mask as the image it holds (PNG: lossless)
    chelsea.save(tmp_path / "chelsea.png")
    for path in (tmp_path / "chelsea.png", str(tmp_path / "chelsea.png")):
        assert (explainer(path) - masks).abs().max() <= 1e-6


def test_an_int_target_applies_to_every_photo(explainer, chelsea, coffee):
    both = explainer([chelsea, coffee], TABBY)  # different sizes: a list of (1, H, W)
    assert isinstance(both, list) and [m.shape for m in both] == [(1, 300, 451), (1, 400, 600)]
    for mask, photo in zip(both, (chelsea, coffee), strict=True):
        alone = explainer(photo, TABBY)
        assert alone.shape == (1, *mask.shape)
        assert (mask - alone[0]).abs().max() <= 1e-6
        assert (mask - reference_mask(explainer, photo, TABBY)).abs().max() <= 1e-6
    for same in (torch.tensor(TABBY), torch.tensor([TABBY]), [TABBY, TABBY], (TABBY, "tabby")):
        again = explainer([chelsea, coffee], same)
        assert all((a - b).abs().max() <= 1e-6 for a, b in zip(again, both, strict=True))


def test_a_class_name_or_synset_is_its_class_id(explainer, chelsea, coffee):
    by_id = explainer(chelsea, TABBY)
    for selector in ("tabby", "Tabby", "n02123045", "281", torch.tensor(TABBY)):
        assert (explainer(chelsea, selector) - by_id).abs().max() <= 1e-6, selector
    # one class per image, by name and by id
    per_image = explainer([chelsea, coffee], ["Egyptian cat", ESPRESSO])
    assert (per_image[0] - explainer(chelsea)[0]).abs().max() <= 1e-6
    assert (per_image[1] - reference_mask(explainer, coffee, ESPRESSO)).abs().max() <= 1e-6
    with pytest.raises(UnknownClassError, match="unknown class 'tabbby'; did you mean 'tabby'"):
        explainer(chelsea, "tabbby")


def test_attribute_is_captum_shaped_and_equals_calling(explainer, batch224):
    targets = torch.tensor([EGYPTIAN_CAT, ESPRESSO])
    attributions = explainer.attribute(batch224, targets)
    assert attributions.shape == (2, 1, 224, 224) and attributions.dtype == torch.float32
    assert attributions.device == batch224.device and not attributions.is_inference()
    assert float(attributions.min()) >= 0 and float(attributions.max()) <= 1
    # the same tensor through __call__ (already at the model's resolution: not resized)
    assert (explainer(batch224, targets) - attributions).abs().max() <= 1e-6
    # the one-pass path underneath, and the top-1 classes (these two are the photos' top-1)
    masks, logits, classes = explainer.masks(batch224, targets)
    assert (masks - attributions).abs().max() <= 1e-6
    assert logits.argmax(1).tolist() == [EGYPTIAN_CAT, ESPRESSO]
    assert (explainer.attribute(batch224) - attributions).abs().max() <= 1e-6
    assert (
        explainer.attribute(batch224, [EGYPTIAN_CAT, "espresso"]) - attributions
    ).abs().max() <= 1e-6
    # an int target is broadcast over the batch; each row is that image explained alone
    broadcast = explainer.attribute(batch224, TABBY)
    for i in range(2):
        alone = explainer.attribute(batch224[i : i + 1], TABBY)
        assert (broadcast[i] - alone[0]).abs().max() <= 1e-5  # another batch size: rounding
    # float64 inputs: float32 masks; any resolution: masks at that resolution
    assert explainer.attribute(batch224.double(), TABBY).dtype == torch.float32
    odd = explainer.attribute(batch224[:, :, :200, :150], TABBY)
    assert odd.shape == (2, 1, 200, 150)


def test_attribute_serves_captums_metrics(explainer, batch224):
    """Captum's metrics call ``explanation_func(inputs, target=...)`` with ``inputs`` as a
    one-tensor tuple: an unchanged input gives unchanged masks (sensitivity 0, up to rounding),
    a little noise changes them a little."""
    pytest.importorskip("captum")
    from captum.metrics import sensitivity_max

    targets = torch.tensor([EGYPTIAN_CAT, ESPRESSO])
    (masks,) = explainer.attribute((batch224,), targets)
    assert (masks - explainer.attribute(batch224, targets)).abs().max() <= 1e-6
    options = {"target": targets, "n_perturb_samples": 2}
    still = sensitivity_max(explainer.attribute, batch224, perturb_radius=0.0, **options)
    assert still.shape == (2,) and still.abs().max() <= 1e-4  # rounding: a larger batch
    noisy = sensitivity_max(explainer.attribute, batch224, perturb_radius=0.02, **options)
    assert bool(((noisy > 0) & (noisy < 1)).all()), noisy
    with pytest.raises(RtsalError, match="a tuple holds one tensor"):
        explainer.attribute((batch224, batch224), targets)


def test_a_tensor_photo_is_explained_like_the_photo(explainer, chelsea):
    from rtsal.data.images import pil_to_tensor

    x = pil_to_tensor(chelsea)  # (3, 300, 451): resized for the model as the PIL image is
    from_tensor = explainer(x)
    assert from_tensor.shape == (1, 1, 300, 451)
    assert (explainer(x[None]) - from_tensor).abs().max() <= 1e-6
    # torch's and PIL's bicubic resizes differ slightly; the masks barely do
    assert float((from_tensor - explainer(chelsea)).abs().mean()) < 0.02
    listed = explainer([x, chelsea])
    assert [m.shape for m in listed] == [(1, 300, 451)] * 2  # a list in, a list out
    assert (listed[0] - from_tensor[0]).abs().max() <= 1e-5


def test_from_pretrained_loads_a_checkpoint_directory(explainer, chelsea):
    from rtsal import Explainer

    loaded = Explainer.from_pretrained(SHIPPED)
    assert (loaded(chelsea) - explainer(chelsea)).abs().max() <= 1e-6
    square = Explainer.from_pretrained(str(SHIPPED), resize="square", device="cpu")
    assert square.resize == "square" and square(chelsea).shape == (1, 1, 300, 451)


def test_from_pretrained_refuses_what_is_not_a_checkpoint(tmp_path):
    from rtsal import Explainer

    missing = tmp_path / "nowhere"
    with pytest.raises(CheckpointError, match=re.escape(f"checkpoint not found: {missing}")):
        Explainer.from_pretrained(missing)
    with pytest.raises(CheckpointError, match="no rtsal.json in it; not an rtsal checkpoint"):
        Explainer.from_pretrained(tmp_path)
    with pytest.raises(RtsalError, match="takes a checkpoint directory"):
        Explainer.from_pretrained(None)


SHAPE = r"inputs must have shape \(B, C, H, W\) with C = 3 for black box 'efficientnet_lite0'"
RANGE = r"inputs must hold images in \[0, 1\] \(the black box normalises them itself\)"
NON_FINITE = r"inputs must hold images in \[0, 1\]; got "


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (torch.rand(3, 224, 224), SHAPE + r"; got \(3, 224, 224\)"),
        (torch.rand(2, 1, 224, 224), SHAPE + r"; got \(2, 1, 224, 224\)"),
        (torch.rand(1, 2, 3, 224, 224), SHAPE + r"; got \(1, 2, 3, 224, 224\)"),
        (torch.rand(2, 3, 0, 224), SHAPE + r"; got \(2, 3, 0, 224\)"),
        (torch.zeros(2, 3, 8, 8, dtype=torch.uint8), r"float tensor in \[0, 1\]; got torch.uint8"),
        (torch.full((1, 3, 8, 8), -2.0), RANGE + "; got values from -2 to -2"),
        (torch.full((1, 3, 8, 8), 255.0), RANGE + "; got values from 255 to 255"),
        (torch.full((1, 3, 8, 8), math.nan), NON_FINITE + "192 non-finite .* among 192"),
        (torch.rand(2, 3, 8, 8).index_fill_(3, torch.tensor([5]), math.inf), NON_FINITE + "48 "),
        (torch.rand(1, 3, 8, 8).index_fill_(2, torch.tensor([0]), -math.inf), NON_FINITE + "24 "),
        ([[0.5]], r"inputs must be a tensor \(B, C, H, W\); got list"),
    ],
)
def test_attribute_refuses_wrong_inputs_in_one_line(explainer, inputs, message):
    with pytest.raises(RtsalError, match=message) as caught:
        explainer.attribute(inputs, TABBY)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ([1, 2, 3], "target: 3 classes for 2 images; give one class for all of them, or one per"),
        (torch.tensor([1, 2, 3]), "target: 3 classes for 2 images"),
        (torch.tensor([0.5, 1.0]), "target: a tensor of class indices must be integer; got torch"),
        (1000, "unknown class '1000' .*class indices run from 0 to 999"),
        (-1, "unknown class '-1'"),
        (2.0, "target: a class is an index, a name or a synset; got 2.0"),
        (True, "target: a class is an index, a name or a synset; got True"),
    ],
)
def test_wrong_targets_are_one_line_errors(explainer, batch224, target, message):
    with pytest.raises(RtsalError, match=message):
        explainer.attribute(batch224, target)


def test_a_nan_image_is_refused_by_every_call(explainer):
    """All-NaN pixels used to come back as all-NaN masks with no word."""
    nan = torch.full((3, 32, 32), math.nan)
    with pytest.raises(RtsalError, match=r"images must hold .*3072 non-finite .* among 3072"):
        explainer(nan)
    with pytest.raises(RtsalError, match=r"images must hold .*6144 non-finite"):
        explainer(torch.stack([nan, nan]))
    with pytest.raises(RtsalError, match="non-finite"):
        explainer.attribute(nan[None], TABBY)


def test_calling_on_what_is_not_an_image_says_what_is(explainer, tmp_path):
    import numpy as np

    with pytest.raises(DataError, match="nope.jpg: no such file"):
        explainer(tmp_path / "nope.jpg")
    with pytest.raises(RtsalError, match=r"images\[1\]: an image is .*; got ndarray .*fromarray"):
        explainer([torch.rand(3, 32, 32), np.zeros((32, 32, 3), np.uint8)])
    with pytest.raises(RtsalError, match=r"images\[0\] must have shape \(C, H, W\)"):
        explainer([torch.rand(1, 3, 32, 32)])  # a list holds single images
    with pytest.raises(RtsalError, match="batch_size must be at least 1"):
        explainer(torch.rand(3, 32, 32), batch_size=0)
    assert explainer([]) == []
    assert explainer(torch.rand(0, 3, 32, 32)).shape == (0, 1, 32, 32)


def test_grad_cam_through_the_same_api(chelsea):
    from rtsal import Explainer

    gradcam = Explainer(method="gradcam")  # the shipped checkpoint's black box
    masks = gradcam(chelsea, "Egyptian cat")
    assert masks.shape == (1, 1, 300, 451) and 0 <= float(masks.min()) <= float(masks.max()) <= 1
    assert (masks - reference_mask(gradcam, chelsea, EGYPTIAN_CAT)).abs().max() <= 1e-6

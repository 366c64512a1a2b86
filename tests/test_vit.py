"""Vision transformers as black boxes: square resizing by default, the token pyramid the masking
model reads, Grad-CAM on patch tokens (checked against pytorch-grad-cam), and a small ViT
classifier trained from scratch. Random weights: no hub download here, and every check below
holds whatever the weights are."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from rtsal import Explainer, RtsalError
from rtsal.engine.model import MaskerConfig, TimmEncoder, build_masking_model
from rtsal.methods.gradcam import GradCAMMethod, as_map, token_grid
from rtsal.registry.blackbox import create_black_box
from tests.helpers import SHARED_DATA, run_main

SAMPLE = SHARED_DATA / "imagenet-sample"
pytestmark = pytest.mark.skipif(not SAMPLE.is_dir(), reason="../shared/data is not present")


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return create_black_box("vit_tiny_patch16_224", pretrained=False)


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    """Three real photos at 224 x 224, in [0, 1]."""
    files = sorted(SAMPLE.iterdir())[:3]
    ims = [Image.open(f).convert("RGB").resize((224, 224), Image.Resampling.BICUBIC) for f in files]
    return (
        torch.stack(
            [
                torch.from_numpy(__import__("numpy").asarray(im).copy()).permute(2, 0, 1)
                for im in ims
            ]
        ).float()
        / 255
    )


def test_timm_vits_take_one_input_size_and_are_resized_square(vit):
    assert vit.fixed_input_size and vit.input_size == (224, 224)
    assert not create_black_box("resnet18", pretrained=False).fixed_input_size
    assert Explainer(method="gradcam", black_box=vit).resize == "square"
    with pytest.raises(RtsalError, match=r"takes 224 x 224 images only: use --resize square"):
        Explainer(method="gradcam", black_box=vit, resize="fit")


def test_token_grids():
    assert token_grid(196, (224, 224)) == (14, 14)
    assert token_grid(14 * 21, (224, 336)) == (14, 21)
    assert token_grid(7, (224, 224)) is None  # a prime count on a square image: no grid
    tokens = torch.arange(2 * 5 * 3, dtype=torch.float32).view(1, 5, 6)  # class token + 2 x 2
    net = torch.nn.Module()
    net.num_prefix_tokens = 1
    grid = as_map(tokens, (32, 32), net)  # (1, 6, 2, 2): token t at (t // 2, t % 2)
    assert grid.shape == (1, 6, 2, 2)
    assert torch.equal(grid[0, :, 1, 0], tokens[0, 3])  # patch token 2 (after the class token)


def test_gradcam_picks_the_last_blocks_attention_input_and_matches_pytorch_grad_cam(vit, photos):
    """With a class-token head the final norm's patch tokens get no gradient; the default layer
    is the last block's norm1 (pytorch-grad-cam's ViT tutorial), and the maps equal
    pytorch-grad-cam's with its reshape_transform."""
    pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    method = GradCAMMethod(vit, normalize="minmax")
    classes = torch.tensor([1, 5, 9])
    ours = method.explain(photos, classes)[:, 0].detach()
    assert method.target_layer == "blocks.11.norm1"

    def reshape(t: torch.Tensor) -> torch.Tensor:
        return t[:, 1:].reshape(t.shape[0], 14, 14, t.shape[2]).permute(0, 3, 1, 2)

    layer = vit.network.blocks[-1].norm1
    with GradCAM(model=vit, target_layers=[layer], reshape_transform=reshape) as cam:
        theirs = cam(
            input_tensor=photos.clone().requires_grad_(True),
            targets=[ClassifierOutputTarget(int(c)) for c in classes],
        )
    theirs = torch.from_numpy(theirs)
    assert (ours - theirs).abs().mean() < 0.01
    assert ((ours > 0.5) != (theirs > 0.5)).float().mean() < 0.01
    # the same map through a module, and through the public explainer's Captum-style call
    same = GradCAMMethod(vit, target_layer=layer, normalize="minmax").explain(photos, classes)
    assert torch.allclose(same[:, 0], ours, atol=1e-6)


def test_the_token_pyramid_of_a_vit(vit, photos):
    enc = TimmEncoder(vit.network, vit.mean_values, vit.std_values)
    assert enc.tokens and enc.take == [3, 7, 11]
    assert enc.skip_strides == [4, 8, 16] and enc.coarsest_stride == 32
    feats = enc(photos[:2], with_logits=True)
    assert [tuple(s.shape) for s in feats.skips] == [(2, 192, 56, 56), (2, 192, 28, 28)] + [
        (2, 192, 14, 14)
    ]
    assert tuple(feats.coarsest.shape) == (2, 192, 7, 7)
    with torch.no_grad():
        logits = vit(photos[:2])
        final, inter = vit.network.forward_intermediates(vit.normalize(photos[:2]), indices=[11])
    assert torch.allclose(feats.logits, logits, atol=1e-4)  # the head on the same final tokens
    assert torch.allclose(feats.skips[2], inter[0], atol=1e-5)  # block 11, unresized
    grid = final[:, 1:].transpose(1, 2).reshape(2, 192, 14, 14)
    assert torch.allclose(feats.coarsest, torch.nn.functional.avg_pool2d(grid, 2), atol=1e-5)
    model = build_masking_model(MaskerConfig(num_classes=1000, encoder="blackbox"), vit)
    out = model(photos[:2], torch.tensor([3, 4]))
    assert out.mask.shape == (2, 1, 224, 224)


def test_a_channels_last_final_map_is_read_channels_first():
    swin = create_black_box("swin_tiny_patch4_window7_224", pretrained=False)
    enc = TimmEncoder(swin.network, swin.mean_values, swin.std_values)
    assert enc.channels_last_final and not enc.tokens
    x = torch.rand(1, 3, 224, 224)
    feats = enc(x)
    with torch.no_grad():
        nhwc = swin.network.forward_features(swin.normalize(x))  # (1, 7, 7, 768)
    assert torch.allclose(feats.coarsest, nhwc.permute(0, 3, 1, 2), atol=1e-5)


@pytest.mark.slow
def test_train_and_explain_with_a_vit_black_box(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for f in sorted(SAMPLE.iterdir())[:8]:
        (photos / f.name).write_bytes(f.read_bytes())
    out = tmp_path / "vit"
    run = run_main(
        "train", "--blackbox", "vit_tiny_patch16_224", "--no-pretrained", "--data", photos,
        "--labels", "blackbox", "--min-confidence", "0", "--steps", "2", "--batch-size", "2",
        "--out", out,
    )  # fmt: skip
    assert run.code == 0, run.stderr
    photo = sorted(SAMPLE.iterdir())[0]
    explainer = Explainer.from_pretrained(out)
    assert explainer.resize == "square"
    mask = explainer(photo, target=3)
    width, height = Image.open(photo).size
    assert mask.shape == (1, 1, height, width) and 0 <= mask.min() <= mask.max() <= 1
    run = run_main("explain", photo, "--checkpoint", out, "--out", tmp_path / "masks")
    assert run.code == 0, run.stderr
    assert list((tmp_path / "masks").glob("*mask*.png"))


@pytest.mark.slow
def test_a_small_vit_classifier_trains_and_serves_as_a_black_box(tmp_path):
    from rtsal.registry.classifiers import load_classifier

    out = tmp_path / "vit"
    run = run_main(
        "classifier", "train", "--data", "fashion-mnist", "--arch", "vit", "--width", "8",
        "--steps", "3", "--batch-size", "16", "--limit", "64", "--out", out,
    )  # fmt: skip
    assert run.code == 0, run.stderr
    box = load_classifier(out)
    assert box.fixed_input_size and box.input_size == (28, 28)
    net = box.network
    assert net.patch_embed.patch_size == (2, 2) and len(net.blocks) == 6 and net.embed_dim == 48
    x = torch.rand(2, 1, 28, 28)
    assert box(x).shape == (2, 10)
    masks = Explainer(method="gradcam", black_box=box).attribute(x, target=0)
    assert masks.shape == (2, 1, 28, 28)

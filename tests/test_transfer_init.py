"""`rtsal train --init` from a masking model trained for another black box: the decoder tensors
that fit are reused, the class embedding comes from the new black box's classifier, and the run
says what it did in one line."""

from __future__ import annotations

import shutil

import pytest
import torch

from tests.helpers import SHARED_DATA, lite_plugin_only, run_main

SAMPLE = SHARED_DATA / "imagenet-sample"
pytestmark = pytest.mark.skipif(not SAMPLE.is_dir(), reason="../shared/data is not present")


@pytest.fixture()
def resnet_masker(tmp_path):
    """A masking model for a ResNet-18 (seeded random weights), its decoder's weights moved
    away from their initialisation so that reuse is visible."""
    from rtsal import create_black_box
    from rtsal.engine.checkpoint import save_masker
    from rtsal.engine.model import MaskerConfig, build_masking_model

    torch.manual_seed(0)
    box = create_black_box("resnet18", pretrained=False)
    cfg = MaskerConfig(num_classes=1000, encoder="blackbox", embedding="classifier-init")
    model = build_masking_model(cfg, box)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05)
    out = tmp_path / "resnet-masker"
    save_masker(out, model, box, training={"seed": 0}, final_losses={}, objective={})
    return out, {k: v.clone() for k, v in model.trainable_state_dict().items()}


def test_init_from_another_black_box_reuses_the_decoder(resnet_masker, tmp_path):
    from safetensors.torch import load_file

    from rtsal import create_black_box

    ckpt, theirs = resnet_masker
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in sorted(SAMPLE.iterdir())[::60][:12]:
        shutil.copy(p, photos / p.name)  # synset-named: folder labels
    out = tmp_path / "lite0"
    with lite_plugin_only():
        run = run_main(
            "train", "--blackbox", "efficientnet_lite0", "--data", photos, "--init", ckpt,
            "--steps", 1, "--batch-size", 4, "--mosaic", 0, "--lr", 1e-12, "--out", out,
            env={"RTSAL_DISABLE_PLUGIN_AUTOLOAD": "", "RTSAL_PLUGINS": "efficientnet-lite"},
        )  # fmt: skip
    assert run.code == 0, run.stderr
    notes = [line for line in run.stderr.splitlines() if line.startswith("--init")]
    assert len(notes) == 1, run.stderr
    note = notes[0]
    assert "trained for timm:resnet18, not efficientnet_lite0" in note  # names as stored
    assert "re-initialised the class embedding (from this black box's classifier)" in note
    ours = load_file(str(out / "model.safetensors"))
    reused = [k for k in ours if k in theirs and ours[k].shape == theirs[k].shape
              and not k.startswith("filter.")]  # fmt: skip
    assert reused and f"reused {len(reused)} of" in note
    buffers = ("running_mean", "running_var", "num_batches_tracked")  # a train step moves them
    weights = [k for k in reused if not k.endswith(buffers)]
    assert weights
    for k in weights:  # lr 1e-12: one step leaves them as they were loaded
        assert torch.allclose(ours[k].float(), theirs[k].float(), atol=1e-6), k
    misfit = [k for k in ours if not k.startswith("filter.") and k not in reused]
    assert all(ours[k].shape != theirs[k].shape for k in misfit)  # same names, other shapes
    assert misfit and f"{len(misfit)} tensors whose shapes differ" in note
    with lite_plugin_only():
        lite0_head = create_black_box("efficientnet_lite0").network.classifier
    embedding = ours["filter.embedding.weight"].float()
    assert torch.allclose(embedding, lite0_head.weight.float(), atol=1e-6)  # not resnet18's


def test_init_from_this_black_box_with_a_cheaper_decoder_reuses_what_fits(tmp_path):
    """The shipped Lite0 masker as the start of one whose head sits at stride 8 (one upsampler
    block fewer): every tensor that fits is reused, the class embedding included, the head's
    weight (other width) starts anew, and one line says so. Another class embedding is refused
    in one line."""
    from safetensors.torch import load_file

    from rtsal.engine.locate import open_checkpoint

    shipped = open_checkpoint(None)  # the shipped Lite0 model
    theirs = shipped.read_weights()
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in sorted(SAMPLE.iterdir())[::60][:12]:
        shutil.copy(p, photos / p.name)
    out = tmp_path / "stride8"
    env = {"RTSAL_DISABLE_PLUGIN_AUTOLOAD": "", "RTSAL_PLUGINS": "efficientnet-lite"}
    args = ["train", "--blackbox", "efficientnet_lite0", "--data", photos, "--init",
            shipped.folder, "--steps", 1, "--batch-size", 4, "--mosaic", 0,
            "--lr", 1e-12]  # fmt: skip
    with lite_plugin_only():
        run = run_main(*args, "--mask-stride", 8, "--out", out, env=env)
    assert run.code == 0, run.stderr
    notes = [line for line in run.stderr.splitlines() if line.startswith("--init")]
    assert len(notes) == 1 and "other model options (mask_stride 4 -> 8)" in notes[0], run.stderr
    ours = load_file(str(out / "model.safetensors"))
    assert not any(k.startswith("upsamplers.2.") for k in ours)  # the stride-4 block is gone
    assert ours["head.conv.weight"].shape[1] == 128 != theirs["head.conv.weight"].shape[1]
    assert "reused 62 of 63 tensors" in notes[0] and "re-initialised 1 tensor " in notes[0]
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    for k in ours:
        if k != "head.conv.weight" and not k.endswith(buffers):  # lr 1e-12: as loaded
            assert torch.allclose(ours[k].float(), theirs[k].float(), atol=1e-6), k
    with lite_plugin_only():
        refused = run_main(
            *args, "--embedding", "classifier-tied", "--out", tmp_path / "tied", env=env
        )
    assert refused.code != 0 and "Traceback" not in refused.stderr
    assert "--init needs the same encoder and classes" in refused.stderr
    assert "embedding" in refused.stderr.strip().splitlines()[-1]

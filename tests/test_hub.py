"""Masking models on the Hugging Face Hub, offline: save_pretrained / from_pretrained round
trips, ``hf:ORG/NAME`` read from a local Hugging Face cache (the layout the Hub client writes),
the model card, and the upload path up to the network."""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub
import huggingface_hub.constants
import pytest
import torch

from rtsal import Explainer, RtsalError
from rtsal.engine.hub import model_card, split_hub_id
from tests.helpers import LITE_PLUGIN, SHARED_DATA, run_main

PHOTO = SHARED_DATA / "imagenet-sample" / "n01440764_tench.JPEG"
pytestmark = pytest.mark.skipif(not PHOTO.is_file(), reason="../shared/data is not present")
REPO = "rtsal-test/lite0-masker"
REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def shipped() -> Explainer:
    return Explainer()


@pytest.fixture(scope="module")
def saved(shipped, tmp_path_factory) -> Path:
    return shipped.save_pretrained(tmp_path_factory.mktemp("hub") / "masker", repo_id=REPO)


@pytest.fixture
def hub_cache(saved, tmp_path, monkeypatch) -> Path:
    """A local Hugging Face cache holding REPO at REVISION (refs/main -> snapshot), with the
    Hub unreachable: what a machine that downloaded the model once sees when offline."""
    cache = tmp_path / "hf-cache"
    repo_dir = cache / ("models--" + REPO.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    for f in saved.iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(REVISION)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def test_save_pretrained_writes_the_checkpoint_and_a_card(shipped, saved):
    assert sorted(p.name for p in saved.iterdir()) == [
        "README.md",
        "model.safetensors",
        "rtsal.json",
    ]
    source = shipped.checkpoint
    assert (saved / "model.safetensors").read_bytes() == (source / "model.safetensors").read_bytes()
    meta = json.loads((saved / "rtsal.json").read_text())
    assert meta["black_box"]["name"] == "efficientnet_lite0"
    assert meta["black_box"]["mean"] == [0.5, 0.5, 0.5]
    card = (saved / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: rtsal\n")
    assert f'Explainer.from_pretrained("{REPO}")' in card and f"hf:{REPO}" in card
    assert "`efficientnet_lite0`" in card and "1000 classes, 224 x 224 input" in card


def test_from_pretrained_gives_identical_masks(shipped, saved):
    again = Explainer.from_pretrained(saved)
    a = shipped(PHOTO, target="tench")
    b = again(PHOTO, target=[0])
    assert torch.equal(a, b)


def test_a_hub_id_is_read_from_the_local_cache_offline(shipped, hub_cache):
    for location in (REPO, f"hf:{REPO}", f"hf:{REPO}@{REVISION}"):
        explainer = Explainer.from_pretrained(location)
        assert (
            explainer.checkpoint
            == hub_cache / f"models--rtsal-test--lite0-masker/snapshots/{REVISION}"
        )
        assert torch.equal(explainer(PHOTO, target="tench"), shipped(PHOTO, target="tench"))


def test_cli_checkpoint_hf_id(hub_cache, saved, tmp_path):
    by_hub, by_dir = tmp_path / "hub", tmp_path / "dir"
    run = run_main("explain", PHOTO, "--checkpoint", f"hf:{REPO}", "--out", by_hub, env=LITE_PLUGIN)
    assert run.code == 0, run.stderr
    run = run_main("explain", PHOTO, "--checkpoint", saved, "--out", by_dir, env=LITE_PLUGIN)
    assert run.code == 0, run.stderr
    masks = sorted(p.name for p in by_hub.glob("*.png"))
    assert masks and masks == sorted(p.name for p in by_dir.glob("*.png"))
    for name in masks:
        assert (by_hub / name).read_bytes() == (by_dir / name).read_bytes()


def test_a_hub_id_missing_offline_is_one_line(hub_cache, tmp_path):
    run = run_main("explain", PHOTO, "--checkpoint", "hf:rtsal-test/absent", "--out", tmp_path)
    assert run.code == 1 and len(run.error_lines) == 1, run.stderr
    assert run.error_lines[0].startswith(
        "error: cannot get checkpoint hf:rtsal-test/absent from the Hugging Face Hub"
    )
    assert "not in the local Hugging Face cache" in run.error_lines[0]
    # the Hub client's own message, whole (its last words say how to go online), on one line
    with pytest.raises(Exception) as hub_error:
        huggingface_hub.snapshot_download("rtsal-test/absent", allow_patterns=["*.json"])
    whole = " ".join(str(hub_error.value).split())
    assert len(whole) > 160 and f"({type(hub_error.value).__name__}: {whole})" in run.stderr
    with pytest.raises(RtsalError, match="a Hub checkpoint is hf:ORG/NAME"):
        split_hub_id("hf:no-slash")


def test_push_to_hub_uploads_the_saved_folder(shipped, monkeypatch):
    calls: dict[str, object] = {}

    def create_repo(self, repo_id, **kwargs):
        calls["create"] = (repo_id, kwargs)

    def upload_folder(self, *, repo_id, folder_path, commit_message, **kwargs):
        folder = Path(folder_path)
        calls["upload"] = (repo_id, commit_message)
        calls["files"] = {p.name: p.read_bytes() for p in folder.iterdir()}

        class Info:
            commit_url = f"https://huggingface.co/{repo_id}/commit/abc"

        return Info()

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    url = shipped.push_to_hub(REPO, private=True)
    assert url == f"https://huggingface.co/{REPO}/commit/abc"
    assert calls["create"] == (REPO, {"private": True, "exist_ok": True})
    assert calls["upload"] == (REPO, "Upload rtsal masking model")
    files = calls["files"]
    assert sorted(files) == ["README.md", "model.safetensors", "rtsal.json"]
    assert files["model.safetensors"] == (shipped.checkpoint / "model.safetensors").read_bytes()
    assert f'from_pretrained("{REPO}")' in files["README.md"].decode()


def test_push_without_a_connection_is_one_line(shipped, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(RtsalError) as err:
        shipped.push_to_hub(REPO, token="hf_not_a_real_token")
    message = str(err.value)
    assert message.startswith(f"cannot upload to the Hugging Face Hub repository {REPO} (")
    assert "\n" not in message


def test_only_masking_models_are_saved(tmp_path):
    with pytest.raises(RtsalError, match="save_pretrained saves masking models; .*'gradcam'"):
        Explainer(method="gradcam").save_pretrained(tmp_path)


def test_card_without_a_repository():
    card = model_card({"black_box": {"name": "resnet18", "num_classes": 10}})
    assert 'Explainer.from_pretrained(".")' in card and "--checkpoint DIR" in card

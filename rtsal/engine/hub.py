"""Masking models on the Hugging Face Hub: ``hf:ORG/NAME`` checkpoints, model cards, uploads.

A checkpoint on the Hub is the same directory ``rtsal train`` writes (``model.safetensors`` +
``rtsal.json``, whose black-box id and preprocessing keep masker and classifier paired) plus a
``README.md`` model card. ``huggingface_hub`` (a dependency of timm) is imported on first use.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from rtsal.errors import CheckpointError, RtsalError

HUB_PREFIX = "hf:"
CARD_NAME = "README.md"
# what a masking-model checkpoint consists of; nothing else is downloaded
CHECKPOINT_PATTERNS = ["*.json", "*.safetensors", CARD_NAME]


def is_hub_id(location: str | Path) -> bool:
    """``hf:ORG/NAME``, also as a command line's Path (which keeps the text as it is)."""
    return isinstance(location, (str, Path)) and str(location).startswith(HUB_PREFIX)


def split_hub_id(location: str) -> tuple[str, str | None]:
    """``hf:ORG/NAME[@REVISION]`` -> (``ORG/NAME``, revision or None)."""
    repo = location[len(HUB_PREFIX) :]
    repo, _, revision = repo.partition("@")
    parts = repo.split("/")
    if len(parts) != 2 or not all(parts):
        raise RtsalError(f"{location!r}: a Hub checkpoint is hf:ORG/NAME (or hf:ORG/NAME@REVISION)")
    return repo, revision or None


def download_checkpoint(location: str) -> Path:
    """The local directory of Hub checkpoint ``hf:ORG/NAME[@REV]``: downloaded (only the
    checkpoint's files) or, offline (``HF_HUB_OFFLINE=1`` or no connection), from the local
    Hugging Face cache. Failing both, one line saying why."""
    from huggingface_hub import snapshot_download

    repo, revision = split_hub_id(location)
    kwargs: dict[str, Any] = {
        "revision": revision,
        "allow_patterns": CHECKPOINT_PATTERNS,
        "library_name": "rtsal",
    }
    try:
        return Path(snapshot_download(repo, **kwargs))
    except Exception as online_error:  # no connection, unknown repo, gated, offline mode
        try:
            return Path(snapshot_download(repo, local_files_only=True, **kwargs))
        except Exception:
            why = _one_line(online_error)
            raise CheckpointError(
                f"cannot get checkpoint {location} from the Hugging Face Hub ({why}), and it is "
                "not in the local Hugging Face cache (HF_HUB_CACHE)"
            ) from None


def _one_line(exc: BaseException) -> str:
    """The error's whole message on one line: the Hub client's messages say what to do in
    their last words (``set 'HF_HUB_OFFLINE=0'``), so they are never cut."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def local_checkpoint(location: str | Path) -> Path:
    """A checkpoint location as a local path: ``hf:`` ids are fetched, paths pass through."""
    if is_hub_id(location):
        return download_checkpoint(str(location))
    return Path(location).expanduser()


def model_card(meta: dict[str, Any], repo_id: str | None = None) -> str:
    """A Hub model card (README.md with YAML metadata) for a masking-model checkpoint."""
    bb = meta.get("black_box", {})
    name = bb.get("name", "unknown")
    h, w = bb.get("input_size", ["?", "?"])
    training = meta.get("training", {})
    steps = training.get("steps", "?")
    data = training.get("data", "")
    load = (
        f'Explainer.from_pretrained("{repo_id}")' if repo_id else 'Explainer.from_pretrained(".")'
    )
    cli = f"--checkpoint hf:{repo_id}" if repo_id else "--checkpoint DIR"
    lines = [
        "---",
        "library_name: rtsal",
        "pipeline_tag: image-classification",
        "tags:",
        "- saliency",
        "- explainability",
        "- rtsal",
        "---",
        "",
        f"# Real-time saliency masking model for `{name}`",
        "",
        "A masking model (Dabkowski & Gal, 2017, *Real Time Image Saliency for Black Box "
        f"Classifiers*) trained against the black box `{name}` "
        f"({bb.get('num_classes', '?')} classes, {h} x {w} input, mean {bb.get('mean')}, "
        f"std {bb.get('std')}). One forward pass gives a class-specific mask for any image.",
        "",
        "```python",
        "from rtsal import Explainer",
        "",
        f"explainer = {load}",
        'masks = explainer("photo.jpg", target="beagle")  # (1, 1, H, W) in [0, 1]',
        "```",
        "",
        f"or `rtsal explain photo.jpg {cli}`.",
        "",
        "## Training",
        "",
        f"- steps: {steps}" + (f", data: `{data}`" if data else ""),
        f"- objective: `{json.dumps(meta.get('objective', {}), sort_keys=True)}`",
        f"- rtsal version: {meta.get('rtsal_version', '?')}",
        "",
        "`rtsal.json` describes the model and its black box; rtsal checks it on load, so the "
        "masker is only ever used with the classifier it was trained for.",
        "",
    ]
    return "\n".join(lines)


def save_pretrained(source: str | Path, out: str | Path, repo_id: str | None = None) -> Path:
    """Copy the checkpoint in directory ``source`` to ``out`` (weights as stored, ``rtsal.json``)
    and write its model card; returns ``out``."""
    from rtsal.engine.checkpoint import MASKER_FORMAT, META_NAME, read_meta

    meta, where = read_meta(source)
    if meta.get("format") != MASKER_FORMAT:
        raise CheckpointError(f"{where} is not a masking-model checkpoint")
    weights = where / meta.get("weights", "model.safetensors")
    if not weights.is_file():
        raise CheckpointError(f"{where}: weights file {weights.name} is missing")
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise RtsalError(f"output path exists and is not a directory: {out}")
    out.mkdir(parents=True, exist_ok=True)
    if out.resolve() != where.resolve():
        shutil.copyfile(weights, out / weights.name)
        shutil.copyfile(where / META_NAME, out / META_NAME)
    (out / CARD_NAME).write_text(model_card(meta, repo_id))
    return out


def push_to_hub(
    source: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str = "Upload rtsal masking model",
) -> str:
    """Upload the checkpoint in ``source`` (with a model card) to Hub repository ``repo_id``
    (created if missing); returns the commit's URL. Failures are one line."""
    from huggingface_hub import HfApi

    if repo_id.startswith(HUB_PREFIX):
        repo_id = repo_id[len(HUB_PREFIX) :]
    split_hub_id(HUB_PREFIX + repo_id)  # checks the form ORG/NAME
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="rtsal-hub-") as tmp:
        folder = save_pretrained(source, Path(tmp) / "checkpoint", repo_id=repo_id)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            info = api.upload_folder(
                repo_id=repo_id, folder_path=folder, commit_message=commit_message
            )
        except Exception as exc:
            raise RtsalError(
                f"cannot upload to the Hugging Face Hub repository {repo_id} ({_one_line(exc)})"
            ) from None
    return str(getattr(info, "commit_url", info))

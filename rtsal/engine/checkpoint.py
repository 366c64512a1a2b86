"""Self-describing checkpoints: ``<dir>/model.safetensors`` + ``<dir>/rtsal.json``. No pickle.

A masking-model checkpoint holds the decoder, the class embedding and any trainable encoder;
a frozen pretrained encoder comes back from the black box it names, so the JSON side-car records
the black box's id, classes and preprocessing and is checked on load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from rtsal import __version__
from rtsal.errors import CheckpointError, RtsalError
from rtsal.files import atomic_write_bytes, prepare_out_dir  # noqa: F401 (moved; importable here)

META_NAME = "rtsal.json"
SHIPPED = Path(__file__).parents[1] / "assets" / "efficientnet_lite0"
MASKER_FORMAT = "rtsal-masking-model"
MASKER_WEIGHTS = "model.safetensors"


def default_checkpoint() -> Path:
    """The masking model shipped with rtsal (EfficientNet-Lite0, ImageNet)."""
    if not (SHIPPED / META_NAME).is_file():
        raise RtsalError("no shipped masking model in this installation; pass --checkpoint")
    return SHIPPED


def write_checkpoint(
    out: str | Path,
    state: dict[str, torch.Tensor],
    meta: dict[str, Any],
    *,
    weights_name: str = MASKER_WEIGHTS,
) -> Path:
    """Write weights then the JSON side-car, each atomically (temp file + rename)."""
    from safetensors.torch import save

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    atomic_write_bytes(out / weights_name, save(tensors, metadata={"format": meta["format"]}))
    meta = {**meta, "weights": weights_name}
    atomic_write_bytes(out / META_NAME, (json.dumps(meta, indent=2) + "\n").encode())
    return out


def read_meta(path: str | Path) -> tuple[dict[str, Any], Path]:
    """A checkpoint's description and its directory; ``hf:ORG/NAME`` is fetched from the
    Hugging Face Hub (or the local Hugging Face cache) first."""
    from rtsal.engine.hub import local_checkpoint

    p = local_checkpoint(path)
    meta_path = p / META_NAME if p.is_dir() else p
    if not p.exists():
        raise CheckpointError(f"checkpoint not found: {p}")
    if meta_path.name != META_NAME and meta_path.suffix != ".json":
        raise CheckpointError(f"{p}: a checkpoint is a directory holding {META_NAME}")
    if not meta_path.is_file():
        raise CheckpointError(f"{p}: no {META_NAME} in it; not an rtsal checkpoint")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{meta_path}: unreadable checkpoint description ({exc})") from None
    if not isinstance(meta, dict) or "format" not in meta:
        raise CheckpointError(f"{meta_path}: not an rtsal checkpoint description")
    return meta, meta_path.parent


def read_checkpoint(
    path: str | Path, *, expected_format: str, weights_name: str = MASKER_WEIGHTS
) -> tuple[dict[str, torch.Tensor], dict[str, Any], Path]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    meta, where = read_meta(path)
    if meta.get("format") != expected_format:
        raise CheckpointError(
            f"{where} is a {meta.get('format')!r} checkpoint, expected {expected_format!r}"
        )
    wpath = where / meta.get("weights", weights_name)
    if not wpath.is_file():
        raise CheckpointError(f"{where}: weights file {wpath.name} is missing")
    try:
        sd = load_file(str(wpath))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{wpath}: corrupt weights ({exc})") from None
    return sd, meta, where


def masker_meta(
    model,
    black_box,
    *,
    training: dict[str, Any],
    final_losses: dict[str, float],
    objective: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "format": MASKER_FORMAT,
        "rtsal_version": __version__,
        "model": model.config.to_dict(),
        "black_box": black_box.describe(),
        "objective": objective,
        "training": training,
        "final_losses": final_losses,
        **(extra or {}),
    }


def save_masker(out: str | Path, model, black_box, **meta_kw: Any) -> Path:
    meta = masker_meta(model, black_box, **meta_kw)
    return write_checkpoint(out, model.trainable_state_dict(), meta)


def check_black_box(meta: dict[str, Any], black_box, where: Path) -> None:
    """Refuse a checkpoint trained for another black box, in one line."""
    want = meta.get("black_box", {})
    have = black_box.describe()
    if want.get("num_classes") != have["num_classes"]:
        raise CheckpointError(
            f"{where} was trained for black box {want.get('name')!r} with "
            f"{want.get('num_classes')} classes; {have['name']!r} has {have['num_classes']}"
        )
    if want.get("class_names") and want["class_names"] != have["class_names"]:
        raise CheckpointError(
            f"{where} was trained for black box {want.get('name')!r} whose class names differ "
            f"from those of {have['name']!r}"
        )

    def rounded(key: str, d: dict) -> list[float]:
        return [round(float(v), 4) for v in d.get(key, have[key])]

    if list(want.get("input_size", have["input_size"])) != list(have["input_size"]) or any(
        rounded(k, want) != rounded(k, have) for k in ("mean", "std")
    ):
        raise CheckpointError(
            f"{where} was trained for black box {want.get('name')!r}, whose preprocessing "
            f"differs from {have['name']!r}"
        )


BUILTIN_PROVIDERS = ("", "timm", "user", "checkpoint")


def _require_provider(provider: str, name: str, where: Path) -> None:
    """A black box from a third-party plugin needs that plugin; say so rather than guess."""
    from rtsal.registry.plugins import get_plugin_manager

    if provider in BUILTIN_PROVIDERS or get_plugin_manager().get_plugin(provider) is not None:
        return
    raise CheckpointError(
        f"{where} explains black box {name!r} from plugin {provider!r}, which is not installed "
        "(or not loaded: see RTSAL_PLUGINS / RTSAL_DISABLE_PLUGIN_AUTOLOAD)"
    )


def checkpoint_black_box(meta: dict[str, Any], where: Path):
    """The black box a masking-model checkpoint names, from the provider that made it."""
    from rtsal.registry.blackbox import create_black_box

    bb = meta.get("black_box", {})
    name = bb.get("name")
    if not name:
        raise CheckpointError(f"{where}: does not name its black box")
    _require_provider(bb.get("provider", ""), name, where)
    return create_black_box(name, **meta.get("black_box_options", {}))


def load_masker(path: str | Path, black_box=None, *, device: str | torch.device = "cpu"):
    """Load a masking model; builds the black box the checkpoint names when none is given.

    Returns ``(model, black_box, meta)``.
    """
    from rtsal.engine.model import (
        MaskerConfig,
        MaskingModel,
        build_encoder,
        init_embedding_from_classifier,
    )

    sd, meta, where = read_checkpoint(path, expected_format=MASKER_FORMAT)
    try:
        config = MaskerConfig.from_dict(meta["model"])
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{where}: model description is incomplete ({exc})") from None
    if black_box is None:
        black_box = checkpoint_black_box(meta, where)
    check_black_box(meta, black_box, where)
    model = MaskingModel(config, build_encoder(config, black_box))
    if config.embedding == "classifier-tied":  # class vectors are the black box's own rows
        init_embedding_from_classifier(model, black_box)
    expected = model.trainable_state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [k for k in expected if k in sd and sd[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        first = (missing or unexpected or wrong)[0]
        raise CheckpointError(
            f"{where}: weights do not match the described architecture "
            f"({len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} mis-shaped; "
            f"e.g. {first})"
        )
    model.load_state_dict(sd, strict=False)
    model.eval()
    dev = torch.device(device) if isinstance(device, str) else device
    return model.to(dev), black_box.to(dev), meta


def convert_checkpoint(
    src: str | Path, dst: str | Path, *, dtype: torch.dtype = torch.float16
) -> Path:
    """Copy a masking-model checkpoint with its floating-point weights stored as ``dtype``
    (half precision halves the size; weights are cast back to float32 on load)."""
    sd, meta, _ = read_checkpoint(src, expected_format=MASKER_FORMAT)
    small = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
    meta = {**meta, "stored_dtype": str(dtype).replace("torch.", "")}
    return write_checkpoint(dst, small, meta)

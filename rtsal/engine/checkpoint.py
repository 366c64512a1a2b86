"""Self-describing checkpoints: ``<dir>/model.safetensors`` + ``<dir>/rtsal.json``. No pickle.

A masking-model checkpoint holds the decoder, the class embedding and any trainable encoder;
a frozen pretrained encoder comes back from the black box it names, so the JSON side-car records
the black box's id, classes and preprocessing and is checked on load.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
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


# What a checkpoint may hold. A checkpoint is data someone else may have written: everything in
# it is checked before it is used, and nothing in it names a file outside its folder.
MAX_META_BYTES = 16 * 2**20  # rtsal.json
MAX_WEIGHTS_BYTES = 4 * 2**30  # model.safetensors
MAX_HEADER_BYTES = 16 * 2**20  # a safetensors file's JSON header
MAX_CLASSES = 100_000  # class names listed in rtsal.json
MAX_NAME_CHARS = 512  # a class name, a black box's name
WEIGHT_DTYPES = {"F32", "F16", "BF16", "F64", "I64"}  # floats, and BatchNorm's step counter
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8}


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint read once: its folder, its description (``rtsal.json``, checked), and where
    it came from. Everything that needs the checkpoint takes this object; nothing reads the
    description again.

    ``root`` is the folder every file of the checkpoint must lie in once symlinks are followed:
    the checkpoint's own folder, or for a Hub checkpoint the repository's folder in the local
    Hugging Face cache (whose snapshot files are links to its blobs).
    """

    folder: Path
    meta: dict[str, Any]
    location: str
    root: Path

    @property
    def format(self) -> str:
        return str(self.meta.get("format"))

    @property
    def black_box_ref(self) -> dict[str, Any]:
        """What the checkpoint says of its black box (name, provider, classes, preprocessing,
        fingerprint): data to check against a black box, never code to run."""
        return self.meta.get("black_box", {})

    @property
    def weights_path(self) -> Path:
        return self.folder / self.meta.get("weights", MASKER_WEIGHTS)

    def read_weights(self) -> dict[str, torch.Tensor]:
        """The tensors of the weights file, after checking its header (dtypes, shapes, offsets
        and sizes consistent with the file) so that a hostile file cannot make the loader
        allocate more than the file holds."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = self.weights_path
        if not path.is_file():
            raise CheckpointError(f"{self.folder}: weights file {path.name} is missing")
        _inside(self.root, path, self.folder)
        check_safetensors_header(path)
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: corrupt weights ({exc})") from None


def _inside(root: Path, path: Path, where: Path) -> None:
    """Refuse ``path`` when, symlinks followed, it lies outside ``root``."""
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        raise CheckpointError(
            f"{where}: {path.name} points outside the checkpoint's folder ({path.resolve()}); "
            "refused"
        ) from None


def check_safetensors_header(path: Path) -> None:
    """One line refusing a weights file whose header is not what rtsal writes: not a
    safetensors file (a pickle, say), a header or data larger than the file, dtypes other than
    floats (and BatchNorm's integer counter), or shapes that do not match their byte ranges."""
    size = path.stat().st_size
    if size > MAX_WEIGHTS_BYTES:
        raise CheckpointError(f"{path}: {size / 2**30:.1f} GB is more than a masking model holds")
    with path.open("rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 2 <= n <= min(MAX_HEADER_BYTES, size - 8):
            raise CheckpointError(
                f"{path}: corrupt weights (not a safetensors file: no valid header); refused"
            )
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(
            f"{path}: corrupt weights (not a safetensors file: unreadable header)"
        ) from None
    if not isinstance(header, dict):
        raise CheckpointError(
            f"{path}: corrupt weights (not a safetensors file: unreadable header)"
        )
    data_bytes = size - 8 - n
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict):
            raise CheckpointError(
                f"{path}: corrupt weights (tensor {name[:80]!r} is not described)"
            )
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in WEIGHT_DTYPES:
            raise CheckpointError(
                f"{path}: tensor {name[:80]!r} has dtype {str(dtype)[:20]!r}; a masking model "
                f"holds {', '.join(sorted(WEIGHT_DTYPES))} only"
            )
        if (
            not isinstance(shape, list)
            or not all(isinstance(d, int) and d >= 0 for d in shape)
            or not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) for o in offsets)
        ):
            raise CheckpointError(
                f"{path}: corrupt weights (tensor {name[:80]!r} has a malformed description)"
            )
        numel = 1
        for d in shape:
            numel *= d
        begin, end = offsets
        if not 0 <= begin <= end <= data_bytes or end - begin != numel * _DTYPE_BYTES[dtype]:
            raise CheckpointError(
                f"{path}: corrupt weights (tensor {name[:80]!r} claims shape {shape[:8]} "
                f"({dtype}), which does not fit the {data_bytes} bytes of the file); refused"
            )


def _check_meta(meta: Any, meta_path: Path) -> dict[str, Any]:
    """The parts of a description rtsal relies on, checked for type and size."""
    if not isinstance(meta, dict) or "format" not in meta:
        raise CheckpointError(f"{meta_path}: not an rtsal checkpoint description")
    weights = meta.get("weights", MASKER_WEIGHTS)
    if (
        not isinstance(weights, str)
        or not weights
        or weights != Path(weights).name
        or weights.startswith(".")
        or "\\" in weights
    ):
        raise CheckpointError(
            f"{meta_path}: weights file name {str(weights)[:80]!r} is not a plain file name in "
            "the checkpoint's folder; refused"
        )
    bb = meta.get("black_box", {})
    if not isinstance(bb, dict):
        raise CheckpointError(f"{meta_path}: black_box is not a description")
    name = bb.get("name", "")
    if not isinstance(name, str) or len(name) > MAX_NAME_CHARS:
        raise CheckpointError(f"{meta_path}: the black box's name is not a short string")
    names = bb.get("class_names")
    if names is not None:
        if not isinstance(names, list) or len(names) > MAX_CLASSES:
            raise CheckpointError(
                f"{meta_path}: class_names must be a list of at most {MAX_CLASSES:,} names"
                + (f"; it holds {len(names):,}" if isinstance(names, list) else "")
            )
        if not all(isinstance(n, str) and len(n) <= MAX_NAME_CHARS for n in names):
            raise CheckpointError(f"{meta_path}: class_names must be short strings")
    num = bb.get("num_classes")
    if num is not None and (not isinstance(num, int) or not 0 < num <= MAX_CLASSES):
        raise CheckpointError(f"{meta_path}: num_classes must be a number up to {MAX_CLASSES:,}")
    for key in ("model", "black_box_options"):
        if not isinstance(meta.get(key, {}), dict):
            raise CheckpointError(f"{meta_path}: {key} is not a description")
    return meta


def read_checkpoint_folder(
    path: str | Path, *, location: str | None = None, root: Path | None = None
) -> Checkpoint:
    """Read and check the description of the checkpoint in folder ``path`` (or of the
    ``rtsal.json`` file ``path`` names); no other file is opened and nothing is built."""
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointError(f"checkpoint not found: {p}")
    meta_path = p / META_NAME if p.is_dir() else p
    if meta_path.name != META_NAME and meta_path.suffix != ".json":
        raise CheckpointError(f"{p}: a checkpoint is a directory holding {META_NAME}")
    if not meta_path.is_file():
        raise CheckpointError(f"{p}: no {META_NAME} in it; not an rtsal checkpoint")
    folder = meta_path.parent
    root = root or folder
    _inside(root, meta_path, folder)
    if meta_path.stat().st_size > MAX_META_BYTES:
        raise CheckpointError(f"{meta_path}: larger than a checkpoint description can be")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{meta_path}: unreadable checkpoint description ({exc})") from None
    return Checkpoint(folder, _check_meta(meta, meta_path), location or str(path), root)


def expect_format(ckpt: Checkpoint, expected_format: str) -> Checkpoint:
    if ckpt.format != expected_format:
        raise CheckpointError(
            f"{ckpt.folder} is a {ckpt.meta.get('format')!r} checkpoint, expected "
            f"{expected_format!r}"
        )
    return ckpt


def read_meta(path: str | Path) -> tuple[dict[str, Any], Path]:
    """A local checkpoint's description and its directory (``rtsal.engine.locate`` also
    fetches ``hf:`` checkpoints)."""
    ckpt = read_checkpoint_folder(path)
    return ckpt.meta, ckpt.folder


def read_checkpoint(
    path: str | Path | Checkpoint, *, expected_format: str, weights_name: str = MASKER_WEIGHTS
) -> tuple[dict[str, torch.Tensor], dict[str, Any], Path]:
    """Weights, description and folder of a checkpoint (a local folder or a read one);
    ``weights_name`` is the weights file of a description that names none."""
    ckpt = path if isinstance(path, Checkpoint) else read_checkpoint_folder(path)
    expect_format(ckpt, expected_format)
    ckpt.meta.setdefault("weights", weights_name)
    return ckpt.read_weights(), ckpt.meta, ckpt.folder


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


def check_black_box(
    meta: dict[str, Any], black_box, where: Path, *, allow_other: bool = False
) -> None:
    """Refuse, in one line naming both, a checkpoint trained for another black box: other
    classes or preprocessing always; another network (its architecture, or its output layer's
    weights, by the fingerprint the checkpoint stores) unless ``allow_other``."""
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
    theirs = want.get("fingerprint")
    if allow_other or not isinstance(theirs, dict):
        return  # checkpoints written before fingerprints: the checks above only
    ours = black_box.fingerprint()
    if theirs != ours:
        what = (
            "architecture"
            if theirs.get("architecture") != ours["architecture"]
            else "output layer's weights"
        )
        raise CheckpointError(
            f"{where} was trained for black box {want.get('name')!r} "
            f"({_short(theirs)}); {have['name']!r} ({_short(ours)}) differs in its {what}: "
            "masks would explain another classifier. Pass --allow-other-black-box "
            "(allow_other_black_box=True) to use it anyway"
        )


def _short(fingerprint: dict[str, Any]) -> str:
    return f"{fingerprint.get('architecture')}, head {str(fingerprint.get('head', ''))[:12]}"


SHIPPED_ROOT = Path(__file__).parents[1] / "assets"


def shipped_checkpoint(black_box: str = "efficientnet_lite0") -> Path | None:
    """The folder of the masking model shipped with rtsal for ``black_box`` (its registered
    name), or None when rtsal ships none for it."""
    folder = SHIPPED_ROOT / black_box
    return folder if (folder / META_NAME).is_file() else None


def load_masker(
    checkpoint: str | Path | Checkpoint,
    black_box,
    *,
    device: str | torch.device = "cpu",
    allow_other_black_box: bool = False,
):
    """A masking model for ``black_box`` from a checkpoint (a folder, or one already read).
    The black box is built by the caller (``rtsal.registry.resolve`` builds the one a
    checkpoint names, from registered providers only); it is checked against the checkpoint.

    Returns ``(model, black_box, meta)``.
    """
    from rtsal.engine.model import (
        MaskerConfig,
        MaskingModel,
        build_encoder,
        init_embedding_from_classifier,
    )

    if black_box is None:
        raise TypeError("load_masker needs the black box (rtsal.registry.resolve builds it)")
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else read_checkpoint_folder(checkpoint)
    expect_format(ckpt, MASKER_FORMAT)
    meta, where = ckpt.meta, ckpt.folder
    try:
        config = MaskerConfig.from_dict(meta["model"])
    except (KeyError, TypeError, ValueError, RtsalError) as exc:
        raise CheckpointError(f"{where}: model description is incomplete ({exc})") from None
    check_black_box(meta, black_box, where, allow_other=allow_other_black_box)
    sd = ckpt.read_weights()
    model = MaskingModel(config, build_encoder(config, black_box))
    if config.embedding == "classifier-tied":  # class vectors are the black box's own rows
        init_embedding_from_classifier(model, black_box)
    expected = model.trainable_state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [
        k
        for k in expected
        if k in sd
        and (
            sd[k].shape != expected[k].shape
            or sd[k].is_floating_point() != expected[k].is_floating_point()
        )
    ]
    if missing or unexpected or wrong:
        first = (missing or unexpected or wrong)[0]
        raise CheckpointError(
            f"{where}: weights do not match the described architecture "
            f"({len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} mis-shaped "
            f"or of the wrong type; e.g. {first[:80]})"
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

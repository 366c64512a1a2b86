"""Data sets held in memory as uint8 arrays (N, C, H, W): the named sets ``cifar10`` and
``fashion-mnist`` (read from a torchvision root, a folder of JPEGs in ``{train,test}/<class>/``
or a ``.tar.gz`` of one, Debian's dataset package, or downloaded by torchvision when online) and
*split folders* (``train/`` and ``test/`` of class sub-folders, as ``rtsal canvas`` writes
them), each decoded once and cached; batches are fetched and augmented in one go
(:class:`TensorImageDataset`)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from rtsal.data.cache import cache_dir
from rtsal.data.images import IMAGE_EXTENSIONS, load_image
from rtsal.engine._rng import AUGMENT, generator
from rtsal.errors import DataError

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
NAMED_SETS = ("cifar10", "fashion-mnist")
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


# --------------------------------------------------------------------------- in-memory sets


def random_crop_flip(
    x: torch.Tensor, pad: int, flip: bool = True, draws: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-sample random translation (reflect padding) and horizontal flip of a batch.

    ``draws`` (B, 3) uniforms in [0, 1) fix the randomness (row shift, column shift, flip);
    without them the global generator is used.
    """
    B, C, H, W = x.shape
    u = draws if draws is not None else torch.rand(B, 3)
    if pad > 0:
        xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        i = (u[:, 0] * (2 * pad + 1)).long().clamp(max=2 * pad)
        j = (u[:, 1] * (2 * pad + 1)).long().clamp(max=2 * pad)
        rows = (i[:, None] + torch.arange(H))[:, None, :, None]  # (B, 1, H, 1)
        cols = (j[:, None] + torch.arange(W))[:, None, None, :]  # (B, 1, 1, W)
        x = xp[
            torch.arange(B)[:, None, None, None], torch.arange(C)[None, :, None, None], rows, cols
        ]
    if flip:
        f = u[:, 2] < 0.5
        x = torch.where(f[:, None, None, None], x.flip(-1), x)
    return x


class TensorImageDataset(Dataset):
    """Images held as uint8 (N, C, H, W); batches are fetched and augmented in one go."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        class_names: Sequence[str],
        *,
        size: tuple[int, int] | None = None,
        augment: bool = False,
        pad: int = 4,
        name: str = "",
    ):
        self.images = images
        self.labels = labels.long()
        self.class_names = list(class_names)
        self.size = size
        self.augment = augment
        self.pad = pad
        self.name = name
        self.aug_seed: int | None = None  # set: augmentation keyed by (seed, epoch, index)
        self.epoch = 0

    def set_epoch(self, epoch: int, seed: int | None) -> None:
        self.epoch, self.aug_seed = epoch, seed

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitems__(self, idx: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx_t = torch.as_tensor(list(idx), dtype=torch.long)
        x = self.images[idx_t].float().div_(255)  # (B, C, H, W)
        if self.augment:
            draws = None
            if self.aug_seed is not None:
                draws = torch.stack(
                    [
                        torch.rand(3, generator=generator(self.aug_seed, self.epoch, AUGMENT, i))
                        for i in idx_t.tolist()
                    ]
                )
            x = random_crop_flip(x, self.pad, draws=draws)
        if self.size is not None and tuple(x.shape[-2:]) != tuple(self.size):
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False).clamp_(0, 1)
        return x, self.labels[idx_t]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.__getitems__([i])
        return x[0], y[0]

    @staticmethod
    def collate(batch):
        return batch


# --------------------------------------------------------------------------- split folders


def split_folder(root: str | Path) -> tuple[list[str], int] | None:
    """Class names and channels of a *split folder*: ``train/`` and ``test/`` with one
    sub-folder per class (``rtsal canvas`` writes these). Class order comes from ``canvas.json``
    (``classes``) or ``classes.txt`` (one per line) when present, else sorted folder names.
    None when ``root`` is not a split folder."""
    root = Path(root).expanduser()
    if not ((root / "train").is_dir() and (root / "test").is_dir()):
        return None
    names: list[str] | None = None
    channels = 3
    described = root / "canvas.json"
    if described.is_file():
        try:
            info = json.loads(described.read_text())
            names = [str(n) for n in info.get("classes") or info["class_names"]]
            channels = int(info.get("channels", 3))
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{described}: unreadable ({exc})") from None
    elif (root / "classes.txt").is_file():
        names = [n.strip() for n in (root / "classes.txt").read_text().splitlines() if n.strip()]
    else:
        names = sorted(
            d.name for d in (root / "train").iterdir() if d.is_dir() and not d.name.startswith(".")
        )
    if not names:
        raise DataError(f"{root / 'train'}: no class folders")
    return names, channels


def load_split_folder(
    root: str | Path, split: str, class_names: Sequence[str], channels: int = 3
) -> tuple[torch.Tensor, torch.Tensor]:
    """A split of a split folder decoded once into uint8 (N, C, H, W) and labels (cached)."""
    return _decode_jpeg_tree(
        Path(root).expanduser(), split, class_names, "L" if channels == 1 else "RGB"
    )


# --------------------------------------------------------------------------- named sets


def _npz_cache(key: str) -> Path:
    return cache_dir() / "arrays" / f"{key}.npz"


def _decode_jpeg_tree(root: Path, split: str, class_names: Sequence[str], mode: str):
    split_dir = root / split
    stamp = [split_dir.stat().st_mtime_ns if split_dir.exists() else 0]
    stamp += [
        (root / f).stat().st_mtime_ns for f in ("canvas.json", "classes.txt") if (root / f).exists()
    ]
    key = hashlib.sha1(
        f"{split_dir.resolve()}|{mode}|{stamp}|{list(class_names)}".encode()
    ).hexdigest()[:16]
    cached = _npz_cache(f"{split}-{key}")
    if cached.exists():
        with np.load(cached) as z:
            return torch.from_numpy(z["x"]), torch.from_numpy(z["y"])
    xs, ys = [], []
    for label, name in enumerate(class_names):
        d = split_dir / name.replace("/", "_")
        if not d.is_dir():
            raise DataError(f"{split_dir}: class folder {name!r} is missing")
        for p in sorted(d.iterdir()):
            if p.suffix.lower() in IMAGE_EXTENSIONS:
                a = np.asarray(load_image(p, mode), dtype=np.uint8)
                xs.append(a if a.ndim == 3 else a[:, :, None])
                ys.append(label)
    x = np.stack(xs).transpose(0, 3, 1, 2).copy()
    y = np.asarray(ys, dtype=np.int64)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".tmp.npz")
    np.savez(tmp, x=x, y=y)
    os.replace(tmp, cached)
    return torch.from_numpy(x), torch.from_numpy(y)


def _extract_tarball(path: Path) -> Path:
    st = path.stat()
    key = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    dest = cache_dir() / "extracted" / key
    done = dest / ".complete"
    if not done.exists():
        dest.mkdir(parents=True, exist_ok=True)
        try:
            with tarfile.open(path) as tf:
                tf.extractall(dest, filter="data")
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DataError(f"{path}: cannot extract ({exc})") from None
        done.touch()
    return dest


def _find_jpeg_root(root: Path, name: str) -> Path | None:
    for cand in (root / name, root):
        if (cand / "train").is_dir() and (cand / "test").is_dir():
            return cand
    return None


def load_cifar10(root: Path | None, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    if root is not None:
        if root.is_file() and root.name.endswith((".tar.gz", ".tgz", ".tar")):
            root = _extract_tarball(root)
        if not root.exists():
            raise DataError(f"data root not found: {root}")
        jpeg = _find_jpeg_root(root, "cifar10")
        if jpeg is not None:
            return _decode_jpeg_tree(jpeg, split, CIFAR10_CLASSES, "RGB")
    from torchvision.datasets import CIFAR10

    tv_root = root or cache_dir() / "torchvision"
    try:
        ds = CIFAR10(str(tv_root), train=split == "train", download=root is None)
    except Exception as exc:
        raise DataError(
            f"CIFAR-10 not found under {tv_root} and could not be downloaded "
            f"({type(exc).__name__}); pass --data-root with a torchvision root, a folder of "
            "JPEGs (train/, test/) or a .tar.gz of one"
        ) from None
    return torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets)


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 8:
        raise DataError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated IDX header")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise DataError(f"{path}: truncated IDX file")
    return arr.reshape(dims)


def load_fashion_mnist(root: Path | None, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    prefix = "train" if split == "train" else "t10k"
    roots = [root] if root is not None else []
    roots += [DEBIAN_FASHION_MNIST, cache_dir() / "torchvision" / "FashionMNIST" / "raw"]
    for r in roots:
        for sub in (r, r / "FashionMNIST" / "raw"):
            for ext in (".gz", ""):
                imgs = sub / f"{prefix}-images-idx3-ubyte{ext}"
                labs = sub / f"{prefix}-labels-idx1-ubyte{ext}"
                if imgs.is_file() and labs.is_file():
                    x = torch.from_numpy(_read_idx(imgs).copy()).unsqueeze(1)
                    y = torch.from_numpy(_read_idx(labs).astype(np.int64))
                    if x.shape[0] != y.shape[0]:
                        raise DataError(f"{sub}: images and labels differ in number")
                    return x, y
    if root is not None and not root.exists():
        raise DataError(f"data root not found: {root}")
    from torchvision.datasets import FashionMNIST

    try:
        ds = FashionMNIST(str(cache_dir() / "torchvision"), train=split == "train", download=True)
    except Exception as exc:
        raise DataError(
            f"Fashion-MNIST not found and could not be downloaded ({type(exc).__name__}); "
            "install Debian's dataset-fashion-mnist or pass --data-root"
        ) from None
    return ds.data.unsqueeze(1), ds.targets


@dataclass
class DataSpec:
    """What ``--data`` names, before a black box fixes sizes and labels."""

    spec: str
    root: Path | None = None

    @property
    def named(self) -> str | None:
        key = self.spec.lower().replace("_", "-")
        return {
            "cifar10": "cifar10",
            "cifar-10": "cifar10",
            "fashion-mnist": "fashion-mnist",
            "fashionmnist": "fashion-mnist",
        }.get(key)


def named_class_names(name: str) -> tuple[str, ...]:
    return CIFAR10_CLASSES if name == "cifar10" else FASHION_MNIST_CLASSES

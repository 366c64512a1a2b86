"""Reading images safely: any mode to RGB (or grey), EXIF orientation, a pixel limit."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from rtsal.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
DEFAULT_MAX_PIXELS = 100_000_000  # refuse larger images (decompression bombs)


def max_pixels() -> int:
    return int(os.environ.get("RTSAL_MAX_PIXELS", DEFAULT_MAX_PIXELS))


def is_image_path(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit / integer / float grey
        a = np.asarray(im, dtype=np.float64)
        lo, hi = (0.0, 65535.0) if im.mode.startswith("I;16") else (a.min(), max(a.max(), 1e-12))
        if im.mode == "I" and a.max() <= 65535 and a.min() >= 0:
            lo, hi = 0.0, 65535.0 if a.max() > 255 else 255.0
        a = np.clip((a - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
        im = Image.fromarray((a * 255 + 0.5).astype(np.uint8), mode="L")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    return im.convert("RGB")


def _too_big(path: str | Path, limit: int, what: str) -> str:
    return f"{path}: {what} exceeds the limit of {limit} pixels (set RTSAL_MAX_PIXELS to allow it)"


def _frame_count(im: Image.Image) -> int:
    """The frames of an animated or multi-page file (GIF, TIFF, WebP, APNG), 1 for a still
    image. A JPEG's extra pictures (MPO: previews, depth maps) are not frames of the photo."""
    if im.format == "MPO":
        return 1
    try:
        return int(getattr(im, "n_frames", 1))
    except Exception:  # a later frame that does not parse: the first is still read
        im.seek(0)
        return 1


def load_image(path: str | Path, mode: str = "RGB", *, name: str | None = None) -> Image.Image:
    """Open ``path`` as an RGB (or ``"L"``) image, upright, or raise :class:`DataError`.

    The pixel limit (``RTSAL_MAX_PIXELS``) is checked on the header, before anything is
    decoded. A file with several frames gives its first, with a warning saying so. Messages
    name the file ``name`` (default: ``path``), e.g. an upload by the name its sender gave it."""
    path = Path(path)
    shown = path if name is None else name
    limit = max_pixels()
    frames = 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            old = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = limit
            try:
                with Image.open(path) as im:
                    if im.width * im.height > limit:
                        raise DataError(_too_big(shown, limit, f"{im.width}x{im.height} pixels"))
                    frames = _frame_count(im)
                    im.load()
                    im = ImageOps.exif_transpose(im)
            finally:
                Image.MAX_IMAGE_PIXELS = old
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{shown}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{shown}: is a directory") from None
    except PermissionError:
        raise DataError(f"{shown}: permission denied") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(_too_big(shown, limit, "the image")) from None
    except UnidentifiedImageError:
        raise DataError(f"{shown}: not an image file (or an unsupported format)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise DataError(f"{shown}: corrupt or truncated image ({exc})") from None
    except Exception as exc:  # decoders raise a zoo of exception types on hostile bytes
        raise DataError(f"{shown}: cannot decode image ({type(exc).__name__})") from None
    if im.width < 1 or im.height < 1:
        raise DataError(f"{shown}: empty image")
    if frames > 1:
        warnings.warn(f"{shown}: {frames} frames; explaining the first", stacklevel=2)
    rgb = _to_rgb(im)
    return rgb.convert("L") if mode == "L" else rgb


def pil_interpolation(name: str) -> int:
    """PIL's resampling filter for a black box's ``interpolation`` (bilinear unless bicubic or
    nearest)."""
    return {"bicubic": Image.BICUBIC, "nearest": Image.NEAREST}.get(name, Image.BILINEAR)


def pil_to_tensor(im: Image.Image) -> torch.Tensor:
    """PIL image -> float tensor (C, H, W) in [0, 1]."""
    a = np.asarray(im, dtype=np.uint8)
    if a.ndim == 2:
        a = a[:, :, None]
    return torch.from_numpy(a.copy()).permute(2, 0, 1).float().div_(255)


def tensor_to_pil(x: torch.Tensor) -> Image.Image:
    """(C, H, W) or (H, W) tensor in [0, 1] -> 8-bit PIL image."""
    x = x.detach().float().clamp(0, 1).mul(255).round().byte().cpu()
    if x.dim() == 3 and x.shape[0] == 1:
        x = x[0]
    if x.dim() == 2:
        return Image.fromarray(x.numpy(), mode="L")
    return Image.fromarray(x.permute(1, 2, 0).numpy(), mode="RGB")


def fit_size(
    width: int, height: int, short: int, multiple: int = 32, max_aspect: float = 2.0
) -> tuple[int, int]:
    """Model input (H, W): short side ``short``, long side keeping the aspect (at most
    ``max_aspect``), rounded to a multiple of the encoder's stride and never below ``short``
    (a square photo stays square at a short side that is no multiple, as Lite2's 260 px)."""
    aspect = min(max(width, height) / min(width, height), max_aspect)
    long = max(short, multiple, int(round(short * aspect / multiple)) * multiple)
    return (short, long) if width >= height else (long, short)


def photo_transform(
    size: tuple[int, int],
    train: bool,
    interpolation: str,
    crop_pct: float,
    crop_scale: float = 0.35,
    color_jitter: float = 0.0,
):
    """PIL image -> PIL image at ``size``: for training a random resized crop (area share in
    [crop_scale, 1], aspect around the target's), a flip and optional colour jitter
    (torchvision.transforms.v2); for evaluation a resize and centre crop."""
    from torchvision.transforms import v2 as T

    interp = T.InterpolationMode(
        interpolation if interpolation in ("bilinear", "bicubic", "nearest") else "bilinear"
    )
    if train:
        aspect = size[1] / size[0]  # width / height of the target
        steps = [
            T.RandomResizedCrop(
                size,
                scale=(crop_scale, 1.0),
                ratio=(0.75 * aspect, aspect / 0.75),
                interpolation=interp,
                antialias=True,
            ),
            T.RandomHorizontalFlip(),
        ]
        if color_jitter > 0:
            steps.append(
                T.ColorJitter(
                    brightness=color_jitter,
                    contrast=color_jitter,
                    saturation=color_jitter,
                    hue=min(0.5, color_jitter / 4),
                )
            )
        return T.Compose(steps)
    resize = [int(round(s / max(crop_pct, 1e-3))) for s in size]
    return T.Compose([T.Resize(min(resize), interpolation=interp), T.CenterCrop(size)])

"""Augmentation, IDX reading, image-folder labelling and class-selector sampling."""

import gzip
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from rtsal.data.arrays import TensorImageDataset, _read_idx, random_crop_flip
from rtsal.data.folders import scan_image_folder
from rtsal.errors import DataError
from rtsal.registry.classes import ClassResolver
from rtsal.registry.providers.timm_provider import imagenet_classes
from rtsal.training.trainer import sample_selectors

# --------------------------------------------------------------------------- random_crop_flip


def distinct_batch(B=8, C=2, H=6, W=7):
    return torch.arange(B * C * H * W, dtype=torch.float32).view(B, C, H, W)


def test_crop_flip_without_pad_or_flip_is_identity():
    x = distinct_batch()
    assert torch.equal(random_crop_flip(x, pad=0, flip=False), x)


def crops_of(xp_b, H, W):
    return [
        (i, j, xp_b[:, i : i + H, j : j + W])
        for i in range(xp_b.shape[-2] - H + 1)
        for j in range(xp_b.shape[-1] - W + 1)
    ]


@pytest.mark.parametrize("flip", [False, True])
def test_crop_flip_takes_a_crop_of_the_padded_input(flip):
    torch.manual_seed(0)
    pad, x = 2, distinct_batch(B=16)
    B, C, H, W = x.shape
    out = random_crop_flip(x, pad=pad, flip=flip)
    assert out.shape == x.shape
    xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    offsets, flips = set(), set()
    for b in range(B):
        hits = [
            (i, j, f)
            for i, j, crop in crops_of(xp[b], H, W)
            for f in ((False, True) if flip else (False,))
            if torch.equal(out[b], crop.flip(-1) if f else crop)
        ]
        assert hits, f"sample {b} is not a (flipped) crop of its padded input"
        offsets.add(hits[0][:2])
        flips.add(hits[0][2])
    assert len(offsets) > 1  # translations are drawn per sample
    assert flips == ({False, True} if flip else {False})


def test_flip_only_mirrors_some_samples():
    torch.manual_seed(0)
    x = distinct_batch(B=32)
    out = random_crop_flip(x, pad=0, flip=True)
    same = [torch.equal(out[b], x[b]) for b in range(32)]
    mirrored = [torch.equal(out[b], x[b].flip(-1)) for b in range(32)]
    assert all(s or m for s, m in zip(same, mirrored, strict=True))
    assert any(same) and any(mirrored)


def test_tensor_dataset_scales_to_unit_range():
    images = torch.tensor([[[[0, 255], [51, 102]]]], dtype=torch.uint8).repeat(3, 1, 1, 1)
    ds = TensorImageDataset(images, torch.tensor([2, 0, 1]), ["a", "b", "c"])
    x, y = ds.__getitems__([2, 0])
    assert x.dtype == torch.float32
    assert torch.allclose(x[0, 0], torch.tensor([[0.0, 1.0], [0.2, 0.4]]))
    assert y.tolist() == [1, 2]
    x1, y1 = ds[1]
    assert x1.shape == (1, 2, 2) and y1.item() == 0
    big = TensorImageDataset(images, torch.tensor([0, 0, 0]), ["a"], size=(4, 4))
    assert big.__getitems__([0])[0].shape == (1, 1, 4, 4)


# --------------------------------------------------------------------------- IDX files


def idx_bytes(arr):
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


ARRAY = (np.arange(24) * 7 % 256).astype(np.uint8).reshape(2, 3, 4)


def test_read_idx_gzip(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(ARRAY)))
    got = _read_idx(path)
    assert got.shape == (2, 3, 4) and got.dtype == np.uint8
    assert np.array_equal(got, ARRAY)


def test_read_idx_plain_labels(tmp_path):
    labels = np.array([9, 0, 3, 3], dtype=np.uint8)
    path = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes(idx_bytes(labels))
    assert np.array_equal(_read_idx(path), labels)


@pytest.mark.parametrize("cut", [1, 10, 24])  # payload short by 1 / 10 / all 24 bytes
def test_read_idx_truncated_payload(tmp_path, cut):
    path = tmp_path / "x-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(ARRAY)[:-cut]))
    with pytest.raises(DataError, match="truncated"):
        _read_idx(path)


def test_read_idx_truncated_header(tmp_path):
    # 3 dimensions announced, only the first size present
    path = tmp_path / "x-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(ARRAY)[:8]))
    with pytest.raises(DataError):
        _read_idx(path)


def test_read_idx_truncated_gzip_stream(tmp_path):
    path = tmp_path / "x-idx3-ubyte.gz"
    data = gzip.compress(idx_bytes(ARRAY))
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError):
        _read_idx(path)


def test_read_idx_wrong_magic(tmp_path):
    path = tmp_path / "x-idx3-ubyte"
    data = bytearray(idx_bytes(ARRAY))
    data[2] = 0x0D  # float32 type code
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="IDX"):
        _read_idx(path)


# --------------------------------------------------------------------------- image folders


@pytest.fixture(scope="module")
def imagenet():
    names, synonyms = imagenet_classes()
    return ClassResolver(names, synonyms)


def write_png(path, value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4, 3), value, dtype=np.uint8)).save(path)


def test_flat_folder_labelled_from_file_names(tmp_path, imagenet):
    for name in ("n02088364_beagle.png", "n02123045_1.png", "egyptian_cat.png", "beagle.png"):
        write_png(tmp_path / name)
    (tmp_path / "README.txt").write_text("not an image")
    samples = scan_image_folder(tmp_path, imagenet)
    assert [(p.name, label) for p, label in samples] == [
        ("beagle.png", 162),
        ("egyptian_cat.png", 285),
        ("n02088364_beagle.png", 162),
        ("n02123045_1.png", 281),
    ]


def test_class_subfolders(tmp_path, imagenet):
    write_png(tmp_path / "beagle" / "a.png")
    write_png(tmp_path / "beagle" / "b.png")
    write_png(tmp_path / "n02123045" / "x.png")
    samples = scan_image_folder(tmp_path, imagenet)
    assert [(p.parent.name, p.name, label) for p, label in samples] == [
        ("beagle", "a.png", 162),
        ("beagle", "b.png", 162),
        ("n02123045", "x.png", 281),
    ]


def test_missing_folder(tmp_path, imagenet):
    with pytest.raises(DataError, match="not found"):
        scan_image_folder(tmp_path / "absent", imagenet)


def test_folder_with_unlabellable_file(tmp_path, imagenet):
    write_png(tmp_path / "n02088364_beagle.png")
    write_png(tmp_path / "holiday.png")
    with pytest.raises(DataError, match="holiday"):
        scan_image_folder(tmp_path, imagenet)


def test_camera_style_file_name_is_not_a_class_index(tmp_path, imagenet):
    # "IMG_0001" names no class; its numeric tail must not be read as class index 1
    write_png(tmp_path / "n02088364_beagle.png")
    write_png(tmp_path / "IMG_0001.png")
    with pytest.raises(DataError, match="IMG_0001"):
        scan_image_folder(tmp_path, imagenet)


def test_unknown_subfolder(tmp_path, imagenet):
    write_png(tmp_path / "beagle" / "a.png")
    write_png(tmp_path / "holidays" / "b.png")
    with pytest.raises(DataError, match="holidays"):
        scan_image_folder(tmp_path, imagenet)


def test_folder_without_images(tmp_path, imagenet):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="no images"):
        scan_image_folder(tmp_path, imagenet)


# --------------------------------------------------------------------------- selectors


def test_selectors_without_fakes_are_the_labels():
    labels = torch.randint(0, 10, (200,), generator=torch.Generator().manual_seed(0))
    classes, is_real = sample_selectors(labels, 10, 0.0, torch.Generator().manual_seed(1))
    assert torch.equal(classes, labels)
    assert is_real.all()


def test_selectors_all_fake_never_return_the_label():
    labels = torch.randint(0, 7, (2000,), generator=torch.Generator().manual_seed(0))
    classes, is_real = sample_selectors(labels, 7, 0.999999, torch.Generator().manual_seed(1))
    assert not is_real.any()
    assert (classes != labels).all()
    assert classes.min() >= 0 and classes.max() < 7
    # the other classes are drawn uniformly: each (label, other) pair turns up
    pairs = set(zip(labels.tolist(), classes.tolist(), strict=True))
    assert len(pairs) == 7 * 6


def test_selectors_two_classes_fake_is_the_other_class():
    labels = torch.tensor([0, 1, 1, 0])
    classes, is_real = sample_selectors(labels, 2, 0.999999, torch.Generator().manual_seed(0))
    assert classes.tolist() == [1, 0, 0, 1]
    assert not is_real.any()


def test_selectors_fake_fraction():
    labels = torch.randint(0, 10, (10000,), generator=torch.Generator().manual_seed(0))
    classes, is_real = sample_selectors(labels, 10, 0.3, torch.Generator().manual_seed(2))
    assert (~is_real).float().mean().item() == pytest.approx(0.3, abs=0.02)
    assert torch.equal(classes[is_real], labels[is_real])
    assert (classes[~is_real] != labels[~is_real]).all()
    assert classes.min() >= 0 and classes.max() < 10


def test_selectors_are_reproducible_with_a_generator():
    labels = torch.arange(50) % 5
    a = sample_selectors(labels, 5, 0.5, torch.Generator().manual_seed(3))
    b = sample_selectors(labels, 5, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])

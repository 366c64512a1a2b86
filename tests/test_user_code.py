"""User code as a black box: where the optional metadata of a plain ``nn.Module`` is read from
(the module's own attributes, else the top level of the factory's file), as examples/README.md
says."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from rtsal import create_black_box

NETWORK = """
import torch
from torch import nn


class Net(nn.Module):
    {own}

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = nn.Linear(4, 4)

    def forward(self, x):
        return self.head(self.conv(x).mean((2, 3)))


def build():
    return Net()
"""


def factory_file(folder: Path, top: str, own: str = "pass") -> str:
    path = folder / "net.py"
    path.write_text(top + NETWORK.replace("{own}", own))
    return f"{path}:build"


def test_top_level_metadata_of_the_factory_file_is_read(tmp_path):
    spec = factory_file(
        tmp_path,
        'class_names = ["ant", "bee", "cat", "dog"]\n'
        "mean = (0.5, 0.4, 0.3)\nstd = [0.2, 0.25, 0.3]\ninput_size = (48, 64)\n"
        'interpolation = "bicubic"\n',
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # mean and std found: no "unnormalised" warning
        box = create_black_box(spec)
    assert box.class_names == ["ant", "bee", "cat", "dog"]
    assert box.mean_values == (0.5, 0.4, 0.3) and box.std_values == (0.2, 0.25, 0.3)
    assert box.input_size == (48, 64) and box.interpolation == "bicubic"
    x = torch.rand(1, 3, 48, 64)
    normalised = (x - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / torch.tensor(
        [0.2, 0.25, 0.3]
    ).view(1, 3, 1, 1)
    torch.testing.assert_close(box(x), box.network(normalised))


def test_the_module_own_attributes_win_over_the_file(tmp_path):
    spec = factory_file(
        tmp_path,
        'class_names = ["a", "b", "c", "d"]\ninput_size = 99\n',
        own='class_names = ("w", "x", "y", "z")\n    mean = (0.0, 0.0, 0.0)\n'
        "    std = (1.0, 1.0, 1.0)",
    )
    box = create_black_box(spec)
    assert box.class_names == ["w", "x", "y", "z"]  # the module's, not the file's
    assert box.input_size == (99, 99)  # the module has none: the file's


def test_a_top_level_name_of_another_kind_is_not_metadata(tmp_path):
    spec = factory_file(tmp_path, "from statistics import mean\nstd = 'not numbers'\n")
    with pytest.warns(UserWarning, match="no mean/std attributes"):
        box = create_black_box(spec)
    assert box.mean_values == (0.0, 0.0, 0.0) and box.std_values == (1.0, 1.0, 1.0)
    assert box.class_names == ["class_0", "class_1", "class_2", "class_3"]
    assert box.input_size == (224, 224)

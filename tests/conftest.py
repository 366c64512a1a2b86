"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import FASHION_MNIST_REASON, fashion_mnist_installed


@pytest.fixture(scope="session")
def fm_classifier(tmp_path_factory) -> Path:
    """A tiny ResNet-9 trained for 40 steps on Fashion-MNIST, as a classifier checkpoint."""
    if not fashion_mnist_installed():
        pytest.skip(FASHION_MNIST_REASON)
    from rtsal.tools.classifier import ClassifierConfig, train_classifier

    out = tmp_path_factory.mktemp("fm") / "classifier"
    result = train_classifier(
        ClassifierConfig(
            data="fashion-mnist", width=8, max_steps=40, batch_size=64, lr=0.1, out=str(out)
        )
    )
    assert result.test_accuracy > 0.5  # 40 steps already beat chance (0.1) by far
    return out

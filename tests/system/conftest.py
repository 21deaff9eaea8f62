"""Fixtures of the system tests: what real training makes."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def trained_fashion(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny fashion_mnist version, trained by the real training code with a seed and validation fraction
    that are not the defaults (--seed 7 --validation-fraction 0.25); its version directory and data folder."""
    from tests.system.test_training import OOD_ARGS, idx_files
    from training import fashion_mnist

    root = tmp_path_factory.mktemp("trained-fashion")
    data = idx_files(root / "fashion", train=120)
    argv = ["--data-dir", str(data), "--epochs", "1", "--seed", "7", "--validation-fraction", "0.25", *OOD_ARGS]
    fashion_mnist.main([*argv, "--output-dir", str(root / "m")])
    return root / "m" / "fashion_mnist" / "1", data

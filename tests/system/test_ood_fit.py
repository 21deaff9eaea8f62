"""training.ood_fit: every candidate is fitted and measured, one is chosen (or forced), and it is what is exported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.system.test_training import OOD_ARGS, image_folder
from training import rps


def _train_rps(tmp_path: Path, *options: str) -> dict:
    root = tmp_path / "rps"
    image_folder(root / "train", rps.TASK.labels, per_class=12, fmt="PNG", mode="RGBA", groups=4)
    image_folder(root / "test", rps.TASK.labels, per_class=2, fmt="PNG", mode="RGBA")
    rps.main(["--data-dir", str(root), "--epochs", "1", "--output-dir", str(tmp_path / "m"), *OOD_ARGS, *options])
    return json.loads((tmp_path / "m" / "rps" / "1" / "metadata.json").read_text())["ood"]


def test_a_forced_method_is_exported_and_every_candidate_still_reported(tmp_path: Path) -> None:
    ood = _train_rps(tmp_path, "--ood-method", "energy")
    assert ood["method"] == "energy" and ood["selection"] == "forced by --ood-method"
    assert set(ood["candidates"]) == {"msp", "energy", "mahalanobis", "knn"}  # rps' CNN names no blocks
    # The exported graph's threshold is the fitted candidate's (set on the same validation images).
    # Candidates are compared at the validation rule; the served threshold is the calibration split's PAC one.
    assert ood["threshold_split"] == "calibration" and ood["guarantee"]["calibration_examples"] > 0
    assert set(ood["evaluation"]) == set(ood["candidates"]["energy"]["report"])
    assert ood["candidates"]["knn"]["constants_bytes"] > 0 == ood["candidates"]["energy"]["constants_bytes"]


def test_an_ensemble_on_a_model_without_blocks_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="needs a model with blocks"):
        _train_rps(tmp_path, "--ood-method", "knn_ensemble")

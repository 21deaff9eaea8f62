"""The committed models keep their guarantees on their own test splits, measured afresh from the images: the
prediction sets cover the true label, and the out-of-distribution threshold flags few genuine images, each
within what its calibration split's size allows by chance (not a guessed tolerance), and the figures in
metadata.json are those measured here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import betabinom

from app.core.conformal import prediction_sets
from app.core.metadata import read_metadata
from app.core.repository import discover
from training import exported
from training.evaluation import predict_in_batches

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
DATASETS = ROOT.parent / "shared" / "datasets"
FOLDERS = {
    "flowers": "flower_photos",
    "cats_vs_dogs": "cats_vs_dogs",
    "fashion_mnist": "fashion_mnist",
    "rps": "rps_28x28",
}
CHANCE = 0.001  # a test fails by bad luck alone at most this often


def _committed() -> list[str]:
    found = discover(MODELS)
    return [task for task in sorted(found) if read_metadata(found[task]).conformal is not None]


@pytest.fixture(scope="module", params=_committed())
def measured(request: pytest.FixtureRequest) -> tuple[object, dict[str, np.ndarray]]:
    import tensorflow as tf

    task = request.param
    data_dir = DATASETS / FOLDERS[task]
    if not data_dir.is_dir():
        pytest.skip(f"{data_dir} not found (the shared datasets)")
    version = exported.load(discover(MODELS)[task], data_dir)
    served = tf.saved_model.load(str(version.version_dir)).signatures[version.metadata.signature.name]
    return version, predict_in_batches(served, version.data.test.x)


def test_prediction_sets_cover_the_true_label_as_promised(measured) -> None:
    version, outputs = measured
    conformal = version.metadata.conformal
    recorded = conformal.model_extra["test"]
    n_cal, y = conformal.model_extra["examples"], version.data.test.y
    for key, quantile in conformal.score_quantiles.items():
        members = prediction_sets(outputs["probabilities"], quantile, penalty=conformal.penalty, k_reg=conformal.k_reg)
        covered = int(members[np.arange(len(y)), y].sum())
        # Split conformal: given the calibration draw a new image is covered with probability ~ Beta(k, n + 1 - k),
        # k = ceil((n + 1) c); the count covered among the test images is then beta-binomial.
        k = int(np.ceil((n_cal + 1) * float(key) - 1e-9))
        floor = betabinom(len(y), k, n_cal + 1 - k).ppf(CHANCE)
        assert covered >= floor, f"coverage {key}: {covered} of {len(y)} covered, fewer than {floor:.0f}"
        assert covered / len(y) == pytest.approx(recorded[key]["coverage"], abs=1e-4)
        assert members.sum(axis=1).mean() == pytest.approx(recorded[key]["mean_set_size"], abs=1e-3)


def test_the_out_of_distribution_threshold_flags_few_genuine_images(measured) -> None:
    version, outputs = measured
    ood = version.metadata.ood
    guarantee = ood.guarantee
    assert guarantee is not None and guarantee.holds and (guarantee.alpha, guarantee.delta) == (0.05, 0.1)
    flagged = int(np.sum(outputs["ood_score"] > ood.threshold))
    n, k, count = guarantee.calibration_examples, guarantee.model_extra["order_statistic"], len(version.data.test.y)
    # A new genuine image lands above the k-th of n calibration scores with probability ~ Beta(n + 1 - k, k).
    ceiling = betabinom(count, n + 1 - k, k).ppf(1 - CHANCE)
    assert flagged <= ceiling, f"{flagged} of {count} genuine test images flagged, more than {ceiling:.0f}"
    assert flagged / count == pytest.approx(ood.model_extra["test_flagged"], abs=1e-4)

"""The out-of-distribution candidates, threshold rule and figures on synthetic features with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from training import ood


@pytest.fixture(scope="module")
def clusters() -> dict[str, np.ndarray]:
    """Three tight, correlated classes in 16 dimensions; far points lie off every class."""
    rng = np.random.default_rng(0)
    mix = rng.normal(0, 1, (16, 16))
    centres = rng.normal(0, 6, (3, 16))

    def sample(n: int, centre: np.ndarray) -> np.ndarray:
        return centre + rng.normal(0, 1, (n, 16)) @ mix * 0.3

    labels = np.repeat(np.arange(3), 300)
    train = np.concatenate([sample(300, c) for c in centres])
    val = np.concatenate([sample(100, c) for c in centres])
    far = rng.normal(0, 6, (200, 16)) + 12
    return {"train": train, "labels": labels, "val": val, "far": far}


def _outputs(features: np.ndarray, logits: np.ndarray | None = None) -> dict[str, np.ndarray]:
    return {"features": features, "logits": features[:, :3] if logits is None else logits}


@pytest.mark.parametrize("method", ["mahalanobis", "knn"])
def test_feature_methods_separate_far_points(clusters, method: str) -> None:
    detector = ood.fit(method, _outputs(clusters["train"]), clusters["labels"], temperature=1.0, seed=0)
    val = detector.score_array(_outputs(clusters["val"]))
    far = detector.score_array(_outputs(clusters["far"]))
    figures = ood.evaluate(val, far, ood.threshold(val))
    assert figures["auroc"] > 0.99 and figures["flagged"] > 0.95 and figures["fpr_at_95_tpr"] < 0.05


def test_mahalanobis_graph_equals_the_textbook_formula(clusters) -> None:
    detector = ood.fit("mahalanobis", _outputs(clusters["train"]), clusters["labels"], temperature=1.0, seed=0)
    from sklearn.covariance import LedoitWolf

    means = np.stack([clusters["train"][clusters["labels"] == c].mean(axis=0) for c in range(3)])
    centred = clusters["train"] - means[clusters["labels"]]
    precision = np.linalg.inv(LedoitWolf(assume_centered=True).fit(centred).covariance_)
    points = clusters["far"][:5]
    expected = np.min([np.einsum("nd,de,ne->n", points - m, precision, points - m) for m in means], axis=0)
    np.testing.assert_allclose(detector.score_array(_outputs(points)), expected, rtol=1e-3)


def test_logit_methods_score_flat_logits_as_less_familiar() -> None:
    confident, flat = np.array([[8.0, 0.0, 0.0]]), np.array([[0.1, 0.0, 0.0]])
    features = np.zeros((1, 4))
    for method in ("msp", "energy"):
        detector = ood.fit(method, _outputs(features, confident), np.zeros(1, int), temperature=1.5, seed=0)
        assert detector.score_array(_outputs(flat, flat))[0] > detector.score_array(_outputs(confident, confident))[0]


def _with_block(features: np.ndarray, block: np.ndarray) -> dict[str, np.ndarray]:
    return {**_outputs(features), "block1": block}


@pytest.mark.parametrize("method", ["feature_ensemble", "knn_ensemble"])
def test_ensembles_catch_what_only_a_block_sees(clusters, method: str) -> None:
    """Images whose penultimate features look in-distribution but whose low-level statistics do not
    (noise shown to a small CNN) are flagged by an ensemble and missed by the features alone."""
    rng = np.random.default_rng(2)
    block = {split: rng.normal(0, 1, (len(clusters[split]), 8)) for split in ("train", "val")}
    train = _with_block(clusters["train"], block["train"])
    val = _with_block(clusters["val"], block["val"])
    odd = _with_block(clusters["val"], rng.normal(0, 1, (len(clusters["val"]), 8)) + 6)  # same features
    assert ood.available(train) == ood.METHODS and "knn_ensemble" not in ood.available(_outputs(clusters["train"]))
    ensemble = ood.fit(method, train, clusters["labels"], temperature=1.0, seed=0, validation=val)
    alone = ood.fit(ood.ENSEMBLES[method], train, clusters["labels"], temperature=1.0, seed=0)
    for detector, separates in ((ensemble, True), (alone, False)):
        inside = detector.score_array(val)
        figures = ood.evaluate(inside, detector.score_array(odd), ood.threshold(inside))
        assert (figures["auroc"] > 0.99 and figures["flagged"] > 0.95) is separates
    # Each part is standardized on validation: the parts' sum has mean 0 there.
    assert abs(float(np.mean(ensemble.score_array(val)))) < 1e-3


def test_ensembles_need_blocks_and_validation(clusters) -> None:
    with pytest.raises(ValueError, match="block"):
        ood.fit("knn_ensemble", _outputs(clusters["train"]), clusters["labels"], temperature=1, seed=0, validation={})
    with pytest.raises(ValueError, match="validation"):
        ood.fit("knn_ensemble", _outputs(clusters["train"]), clusters["labels"], temperature=1, seed=0)


def test_threshold_keeps_95_percent_of_validation_images() -> None:
    scores = np.random.default_rng(1).normal(0, 1, 1000)
    cutoff = ood.threshold(scores)
    assert np.mean(scores <= cutoff) == pytest.approx(0.95, abs=0.002)
    assert ood.threshold(np.arange(20.0)) == 19.0  # 95% of 20 is 19 images: "higher" never keeps fewer


def test_flagged_count_distribution_matches_repeated_draws() -> None:
    # Validation and test scores drawn alike, many times: the test split's flagged count varies as predicted.
    rng = np.random.default_rng(2)
    counts = []
    for _ in range(4000):
        validation, test = rng.normal(0, 1, 60), rng.normal(0, 1, 50)
        counts.append(int(np.sum(test > ood.threshold(validation))))  # keeps 58 of 60
    predicted = ood.flagged_count_distribution(60, 58, 50)
    assert predicted.args == (50, 3, 58)  # new scores land above the 58th of 60 with probability 3/61
    assert np.mean(counts) == pytest.approx(predicted.mean(), rel=0.05)
    assert np.mean(np.array(counts) >= 6) == pytest.approx(predicted.sf(5), abs=0.02)
    # A test split drawn higher than validation flags far more than the distribution allows.
    validation = rng.normal(0, 1, 400)
    cutoff = ood.threshold(validation)
    shifted = rng.normal(1, 1, 100)
    assert ood.flagged_count_distribution(400, 381, 100).sf(int(np.sum(shifted > cutoff)) - 1) < 0.001


def test_figures_of_a_known_split() -> None:
    inside = np.arange(100.0)  # 95% at or below 94
    outside = np.array([50.0, 96.0, 97.0, 98.0])
    figures = ood.evaluate(inside, outside, cutoff=94.0)
    assert figures["flagged"] == 0.75 and figures["fpr_at_95_tpr"] == 0.25 and figures["examples"] == 4
    # Each outside score beats the inside scores below it and half of an equal one: (50.5 + 96.5 + 97.5 + 98.5) / 400.
    assert figures["auroc"] == pytest.approx(343 / 400)


def test_selection_prefers_the_best_worst_case() -> None:
    selection = {
        "steady": {"a": {"auroc": 0.93}, "b": {"auroc": 0.94}},
        "spiky": {"a": {"auroc": 1.0}, "b": {"auroc": 0.6}},
    }
    assert ood.select(selection) == "steady"


def test_the_pac_threshold_bounds_the_false_flag_rate_with_the_stated_confidence() -> None:
    """Over 4,000 draws of 300 in-distribution calibration scores, the share of genuine images the threshold
    flags exceeds alpha in at most delta of the draws (plus the simulation's own 3-sigma error), while the
    order statistic one lower would break the bound: the rule is the tightest that holds."""
    from scipy.stats import beta

    from training.ood import pac_threshold

    rng = np.random.default_rng(0)
    draws, n, alpha, delta = 4000, 300, 0.05, 0.1
    rates = []
    for _ in range(draws):
        threshold = pac_threshold(rng.uniform(size=n), alpha, delta)
        rates.append(1.0 - threshold.value)  # uniform scores: the share above the threshold is 1 - its value
    failures = float(np.mean(np.asarray(rates) > alpha))
    assert failures <= delta + 3 * np.sqrt(delta * (1 - delta) / draws)
    assert threshold.holds and threshold.k == 291 and threshold.failure_probability <= delta
    assert beta.cdf(1 - alpha, threshold.k - 1, n - threshold.k + 2) > delta  # k - 1 would not hold


def test_too_few_calibration_images_are_said_to_give_no_guarantee() -> None:
    from training.ood import pac_threshold

    small, enough = pac_threshold(np.arange(44.0)), pac_threshold(np.arange(45.0))
    assert not small.holds and small.value == 43.0  # flags nothing it has seen, and claims nothing
    assert enough.holds and enough.k == 45 and enough.guarantee()["calibration_examples"] == 45

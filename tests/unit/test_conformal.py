"""Prediction sets: the service's sets (`app.core.conformal`) and training's scores and quantiles
(`training.conformal`) give MAPIE's sets on the same probabilities, and cover as promised."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.stats import betabinom
from sklearn.base import BaseEstimator, ClassifierMixin

from app.core.conformal import coverage_key, labels_in_set, prediction_sets
from training import conformal
from training.conformal import Method

mapie_classification = pytest.importorskip("mapie.classification")
mapie_scores = pytest.importorskip("mapie.conformity_scores")

LEVELS = [0.8, 0.9, 0.95, 0.99]
SEED = 42


class Passthrough(ClassifierMixin, BaseEstimator):
    """A prefit "estimator" whose probabilities are its input: MAPIE on precomputed probabilities."""

    def __init__(self, classes: int = 5) -> None:
        self.classes = classes
        self.classes_ = np.arange(classes)
        self.is_fitted = True

    def fit(self, x, y=None):
        return self

    def predict_proba(self, x):
        return np.asarray(x, dtype=np.float64)

    def predict(self, x):
        return self.classes_[np.argmax(x, axis=1)]


class MapieUniform:
    """The uniform draws MAPIE's randomized APS calibration makes for `random_state`, as a generator."""

    def uniform(self, size: int) -> np.ndarray:
        return np.random.RandomState(SEED).uniform(size=size)


def draws(n: int, classes: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(classes, 0.7), size=n)
    return p, np.array([rng.choice(classes, p=row) for row in p])


def mapie_sets(score, p_cal, y_cal, p_test):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = mapie_classification.SplitConformalClassifier(
            estimator=Passthrough(p_cal.shape[1]),
            confidence_level=LEVELS,
            conformity_score=score,
            prefit=True,
            random_state=SEED,
        )
        model.conformalize(p_cal, y_cal)
        _, sets = model.predict_set(p_test, conformity_score_params={"include_last_label": True})
    return model, sets


def test_aps_sets_and_quantiles_are_mapies() -> None:
    p_cal, y_cal = draws(500)
    p_test, _ = draws(500, seed=1)
    model, sets = mapie_sets("aps", p_cal, y_cal, p_test)
    ours = conformal.scores(p_cal, y_cal, Method("aps"), MapieUniform())  # type: ignore[arg-type]
    np.testing.assert_allclose(ours, np.asarray(model.conformity_scores).ravel(), atol=1e-12)
    for i, level in enumerate(LEVELS):
        q = conformal.quantile(ours, level)
        np.testing.assert_array_equal(prediction_sets(p_test, q), sets[:, :, i], err_msg=f"coverage {level}")


class FixedRaps(mapie_scores.APSConformityScore):
    """MAPIE's APS with RAPS's penalty at a fixed `penalty` and `k_reg` (its own RAPS searches for them on a
    split of its own)."""

    def __init__(self, penalty: float, k_reg: int) -> None:
        super().__init__()
        self.penalty, self.k_reg = penalty, k_reg

    def get_conformity_scores(self, y, y_pred, y_enc=None, **kwargs):
        scores = super().get_conformity_scores(y, y_pred, y_enc=y_enc, **kwargs)
        rank = self.get_true_label_cumsum_proba(y, y_pred, self.classes)[1].reshape(-1, 1)
        return scores + np.maximum(self.penalty * (rank - self.k_reg), 0)

    def _add_regularization(self, cumulative, **kwargs):
        return cumulative + self.penalty * np.maximum(0, np.cumsum(np.ones(cumulative.shape), axis=1) - self.k_reg)


@pytest.mark.parametrize(("penalty", "k_reg"), [(0.01, 2), (0.1, 1), (0.5, 3)])
def test_raps_sets_are_mapies_with_the_same_penalty(penalty: float, k_reg: int) -> None:
    p_cal, y_cal = draws(600, classes=7, seed=2)
    p_test, _ = draws(400, classes=7, seed=3)
    _, sets = mapie_sets(FixedRaps(penalty, k_reg), p_cal, y_cal, p_test)
    method = Method("raps", penalty, k_reg)
    ours = conformal.scores(p_cal, y_cal, method, MapieUniform())  # type: ignore[arg-type]
    for i, level in enumerate(LEVELS):
        members = prediction_sets(p_test, conformal.quantile(ours, level), penalty=penalty, k_reg=k_reg)
        np.testing.assert_array_equal(members, sets[:, :, i], err_msg=f"coverage {level}")


def test_sets_cover_as_promised_on_exchangeable_images() -> None:
    """Calibrated on 1,000 images, tested on 5,000 drawn alike: at each coverage c the count covered is at
    least the 0.1% quantile of the beta-binomial that split conformal predicts for these split sizes."""
    p_cal, y_cal = draws(1000, seed=4)
    p_test, y_test = draws(5000, seed=5)
    method = Method("aps")
    quantiles = conformal.fit(p_cal, y_cal, method, seed=SEED)
    figures = conformal.evaluate(p_test, y_test, method, quantiles)
    for level in LEVELS:
        k = int(np.ceil(1001 * level))
        floor = betabinom(5000, k, 1001 - k).ppf(0.001) / 5000
        assert figures[coverage_key(level)]["coverage"] >= floor, (level, figures[coverage_key(level)])


def test_a_set_is_never_empty_holds_ties_together_and_orders_labels_by_probability() -> None:
    p = np.array([[0.4, 0.4, 0.2], [1.0, 0.0, 0.0], [0.1, 0.2, 0.7]])
    members = prediction_sets(p, 0.3)
    assert members.tolist() == [[True, True, False], [True, False, False], [False, False, True]]
    assert labels_in_set(p[2], prediction_sets(p[2:], 0.85)[0], ["a", "b", "c"]) == ["c", "b"]
    assert prediction_sets(p, 0.0).sum(axis=1).min() == 1  # a quantile of zero still keeps the best label


def test_a_method_is_chosen_on_validation_and_too_small_a_split_records_fewer_coverages() -> None:
    p, y = draws(400, seed=6)
    method, sizes = conformal.choose(p, y, seed=SEED)
    assert method.name in ("aps", "raps") and min(sizes.values()) == sizes[conformal._name(method)]
    assert set(conformal.fit(p[:50], y[:50], method, seed=SEED)) == {"0.8", "0.9", "0.95"}  # 0.99 needs 99
    with pytest.raises(ValueError, match="too few"):
        conformal.quantile(np.zeros(10), 0.99)


@pytest.mark.parametrize(("value", "key"), [(0.9, "0.9"), (0.90, "0.9"), (0.95, "0.95"), (0.8, "0.8")])
def test_coverages_have_one_spelling(value: float, key: str) -> None:
    assert coverage_key(value) == key

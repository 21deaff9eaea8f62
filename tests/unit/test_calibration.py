"""Temperature scaling and the calibration figures, on synthetic data whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from training import calibration


def overconfident(temperature: float, n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z), reported as logits z * `temperature`: calibrated at T = `temperature`."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, (n, 5))
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(5, p=row) for row in p])
    return z * temperature, labels


def test_temperature_scaling_recovers_the_temperature_and_lowers_nll_and_ece() -> None:
    logits, labels = overconfident(3.0)
    temperature = calibration.fit_temperature(logits, labels)
    assert temperature == pytest.approx(3.0, rel=0.1)
    figures = calibration.summary(logits, labels, temperature)
    assert figures["nll_after"] < figures["nll_before"]
    assert figures["ece_after"] < 0.03 < figures["ece_before"]
    # The predictions themselves do not move.
    np.testing.assert_array_equal(
        calibration.softmax(logits).argmax(axis=1), calibration.softmax(logits, temperature).argmax(axis=1)
    )


def test_underconfident_logits_get_a_temperature_below_one() -> None:
    logits, labels = overconfident(0.5)
    assert calibration.fit_temperature(logits, labels) == pytest.approx(0.5, rel=0.1)


def test_ece_of_a_known_example() -> None:
    # Two images at confidence 0.9 (one right) and two at 0.6 (both right): |0.5 - 0.9| and |1 - 0.6| = 0.4.
    probabilities = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]])
    labels = np.array([0, 1, 1, 1])
    assert calibration.ece(probabilities, labels) == pytest.approx(0.4)
    curve = calibration.reliability(probabilities, labels)
    assert curve.count.sum() == 4 and curve.count[np.searchsorted(curve.edges, 0.9) - 1] == 2


def test_a_confidence_of_one_falls_in_the_last_bin() -> None:
    curve = calibration.reliability(np.array([[1.0, 0.0]]), np.array([0]))
    assert curve.count[-1] == 1 and curve.ece == 0.0


def test_nll_needs_no_log_of_zero() -> None:
    assert np.isfinite(calibration.nll(np.array([[1000.0, -1000.0]]), np.array([1])))

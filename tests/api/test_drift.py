"""Drift and estimated accuracy through the API, on the fake model: its OOD score is an image's colourfulness
(flagged above 0.2), its label the brightness (dark / light). Genuine traffic is grayish photos of every
brightness, as the recorded deciles and class mix say; a stream of saturated colours is not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.fakes import write_model_dir
from tests.helpers import image_bytes

DECILES = {f"{q / 10:g}": round(0.1 * q / 10, 4) for q in range(1, 10)}  # scores uniform on [0, 0.1]
GUARANTEE = {"alpha": 0.05, "delta": 0.1, "calibration_examples": 500, "expected_flagged": 0.03}


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    ood = {"method": "colourfulness", "output": "ood_score", "threshold": 0.2, "guarantee": GUARANTEE}
    dataset = {"name": "fake", "train_examples": 100, "validation_examples": 0, "class_counts": [50, 50]}
    write_model_dir(root, ood={**ood, "validation_score_quantiles": DECILES}, dataset=dataset)
    write_model_dir(root, task="plain", ood=None, dataset=dataset)  # no OOD score: only the class mix is tested
    return root


def send(client, task: str, colours: list[tuple[int, int, int]]) -> None:
    for start in range(0, len(colours), 16):
        files = [("file", (f"{i}.png", image_bytes(c), "image/png")) for i, c in enumerate(colours[start : start + 16])]
        assert client.post(f"/predict/{task}", files=files).status_code == 200


def genuine(count: int, seed: int = 0) -> list[tuple[int, int, int]]:
    """Grays of every brightness with a slight tint: scores spread over [0, 0.1] like the calibration images'."""
    rng = np.random.default_rng(seed)
    colours = []
    for _ in range(count):
        mean, tint = int(rng.integers(20, 230)), int(rng.uniform(0, 25.5))
        colours.append((mean + tint, mean, mean))
    return colours


def test_too_few_images_give_no_verdict_and_say_why(make_client) -> None:
    client = make_client(drift_min_images=50)
    send(client, "shades", genuine(10))
    report = client.get("/models/shades/drift").json()
    assert report["drift"] is None and report["window"]["images"] == 10
    assert report["reasons"] == ["10 images in the window; drift needs at least 50"]


def test_genuine_traffic_shows_no_drift_and_a_stream_of_foreign_images_does(make_client) -> None:
    client = make_client(drift_min_images=50, drift_window_images=200)
    send(client, "shades", genuine(160))
    calm = client.get("/models/shades/drift").json()
    assert calm["drift"] is False, calm
    assert set(calm["tests"]) == {"flagged_share", "ood_score", "class_mix"}
    assert all(0 <= t["p_value"] <= 1 for t in calm["tests"].values())
    assert calm["expected_flagged_share"] == 0.03 and calm["flagged_share"] == 0.0
    estimate = calm["estimated_accuracy"]
    assert estimate["images"] == 160 and estimate["interval"][0] <= estimate["value"] <= estimate["interval"][1]
    assert estimate["test_accuracy"] == 0.5

    send(client, "shades", [(250, 10, 10), (10, 250, 10), (10, 10, 250)] * 27)  # saturated: flagged
    drifted = client.get("/models/shades/drift").json()
    assert drifted["drift"] is True and drifted["window"]["images"] == 200
    assert drifted["flagged_share"] == pytest.approx(81 / 200)
    assert any("images flagged out of distribution" in reason for reason in drifted["reasons"])
    assert drifted["tests"]["flagged_share"]["p_value"] < 1e-6

    metrics = client.get("/metrics").text
    assert 'model_drift{task="shades",version="1"} 1.0' in metrics
    assert 'model_flagged_share{task="shades",version="1"} 0.405' in metrics
    assert 'model_drift_p_value{task="shades",test="flagged_share",version="1"}' in metrics


def test_a_model_without_an_ood_score_tests_the_class_mix_and_says_so(make_client) -> None:
    client = make_client(drift_min_images=20)
    send(client, "plain", [(240, 240, 240)] * 40)  # every image "light": a class mix unlike training's 50/50
    report = client.get("/models/plain/drift").json()
    assert report["flagged_share"] is None and set(report["tests"]) == {"class_mix"}
    assert report["drift"] is True
    assert any("'light'" in reason for reason in report["reasons"])
    assert "only the class mix is tested" in report["reasons"][-1]


def test_drift_of_an_unknown_task_is_404(client) -> None:
    answer = client.get("/models/nothing/drift")
    assert answer.status_code == 404 and "nothing" in answer.json()["detail"]

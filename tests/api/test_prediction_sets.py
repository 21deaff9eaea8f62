"""Prediction sets through the API: `?coverage=` on the native route and the `coverage` parameter of the Open
Inference Protocol, on the fake model (probabilities [1 - mean/255, mean/255]) with recorded quantiles."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from tests.fakes import write_model_dir
from tests.helpers import image_bytes

CONFORMAL = {
    "method": "aps",
    "split": "calibration",
    "examples": 500,
    "score_quantiles": {"0.8": 0.7, "0.9": 0.9, "0.95": 0.97},
    "test": {"0.9": {"coverage": 0.91, "mean_set_size": 1.3, "examples": 500}},
}
GUARANTEE = {"alpha": 0.05, "delta": 0.1, "calibration_examples": 500}


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    write_model_dir(
        root,
        conformal=CONFORMAL,
        ood={
            "method": "colourfulness",
            "output": "ood_score",
            "threshold": 0.2,
            "guarantee": GUARANTEE,
            "test_flagged": 0.03,
        },
    )
    write_model_dir(root, task="plain")  # exported elsewhere: no conformal record, no guarantee
    return root


def predict(client, task: str, query: str, *colors):
    files = [("file", (f"{i}.png", image_bytes(c), "image/png")) for i, c in enumerate(colors)]
    return client.post(f"/predict/{task}{query}", files=files)


def test_a_coverage_adds_each_images_set_most_probable_first(client) -> None:
    answer = predict(client, "shades", "?coverage=0.9", (255, 255, 255), (128, 128, 128))
    assert answer.status_code == 200, answer.text
    first, second = answer.json()["predictions"]
    assert first["prediction_set"] == ["light"]  # 1.0 >= 0.9 at once
    assert second["prediction_set"] == ["light", "dark"]  # 0.502 < 0.9: the next label joins
    plain = predict(client, "shades", "", (128, 128, 128)).json()["predictions"][0]
    assert "prediction_set" not in plain  # without a coverage the field is absent


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("?coverage=0.5", "ask for one of 0.8, 0.9, 0.95"),
        ("?coverage=1.5", "less than 1"),
        ("?coverage=0", "greater than 0"),
        ("?coverage=ninety", "valid number"),
    ],
)
def test_a_coverage_that_is_not_recorded_or_not_a_number_is_422_saying_why(client, query: str, reason: str) -> None:
    answer = predict(client, "shades", query, (128, 128, 128))
    assert answer.status_code == 422 and reason in answer.json()["detail"], answer.text


def test_a_model_without_conformal_quantiles_answers_null_and_its_card_says_why(client) -> None:
    answer = predict(client, "plain", "?coverage=0.9", (128, 128, 128))
    assert answer.status_code == 200 and answer.json()["predictions"][0]["prediction_set"] is None
    card = client.get("/models/plain").json()["guarantees"]
    assert card["prediction_sets"] == {"available": False, "why": card["prediction_sets"]["why"]}
    assert "no conformal quantiles" in card["prediction_sets"]["why"]
    assert card["out_of_distribution"]["available"] is False and "no guarantee" in card["out_of_distribution"]["why"]


def test_the_model_card_states_the_guarantees_in_figures_and_words(client) -> None:
    card = client.get("/models/shades").json()["guarantees"]
    assert card["prediction_sets"]["coverages"] == [0.8, 0.9, 0.95]
    assert card["prediction_sets"]["test"]["0.9"] == {"coverage": 0.91, "mean_set_size": 1.3, "examples": 500}
    ood = card["out_of_distribution"]
    assert ood["available"] and ood["test_flagged"] == 0.03
    assert ood["statement"] == (
        "at most 5% of genuine images flagged, with 90% confidence over the draw of the 500 calibration images"
    )


def test_the_v2_coverage_parameter_adds_a_bool_set_per_label(client) -> None:
    body = {
        "inputs": [
            {
                "name": "images",
                "shape": [2],
                "datatype": "BYTES",
                "data": [base64.b64encode(image_bytes(c)).decode() for c in ((255, 255, 255), (128, 128, 128))],
            }
        ],
        "parameters": {"coverage": 0.9},
    }
    answer = client.post("/v2/models/shades/infer", json=body)
    assert answer.status_code == 200, answer.text
    sets = {o["name"]: o for o in answer.json()["outputs"]}["prediction_set"]
    assert sets["datatype"] == "BOOL" and sets["shape"] == [2, 2]
    assert sets["data"] == [False, True, True, True]  # labels in the model's order: dark, light
    body["parameters"] = {"coverage": "0.9"}
    refused = client.post("/v2/models/shades/infer", json=body)
    assert refused.status_code == 422 and "coverage must be a number" in refused.json()["error"]
    body["parameters"] = {"coverage": 0.85}
    refused = client.post("/v2/models/shades/infer", json=body)
    assert refused.status_code == 422 and "ask for one of 0.8, 0.9, 0.95" in refused.json()["error"]

"""Model discovery and loading against real (tiny) SavedModels written by the training exporter."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from app.core.imaging import ImageSpec
from app.core.model import OOD_SCORE, PROBABILITIES, ModelLoadError
from app.core.repository import discover
from app.core.runtimes import tensorflow as registry
from app.core.runtimes.tensorflow import load_saved_model
from tests.fakes import export_tiny_model, metadata

SPEC = ImageSpec(height=8, width=8, channels=3)


def tiny_model_dir(root: Path, *, classes: int = 2, with_ood: bool = True, **meta_overrides: object) -> Path:
    """The training exporter's SavedModel; `classes` other than 2 makes it disagree with its labels."""
    if classes == 2:
        return export_tiny_model(root, with_ood=with_ood, **meta_overrides)
    path = export_tiny_model(root / "wide", with_ood=with_ood, **meta_overrides)
    meta = json.loads((path / "metadata.json").read_text())
    meta["labels"] = [f"class {i}" for i in range(classes)]
    (path / "metadata.json").write_text(json.dumps(meta))
    return path


def test_loads_and_predicts_probabilities_and_ood_score(tmp_path: Path) -> None:
    model = load_saved_model(tiny_model_dir(tmp_path))
    outputs = model.predict(np.zeros((3, 8, 8, 3), np.uint8))
    assert set(outputs) == {PROBABILITIES, OOD_SCORE}
    probabilities = outputs[PROBABILITIES]
    assert probabilities.shape == (3, 2) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    assert outputs[OOD_SCORE].shape == (3,) and outputs[OOD_SCORE].dtype == np.float32
    assert model.spec == SPEC


def test_the_exported_signature_has_both_outputs_and_calibrates_inside(tmp_path: Path) -> None:
    import tensorflow as tf

    path = tiny_model_dir(tmp_path)
    loaded = tf.saved_model.load(str(path))
    function = loaded.signatures["serving_default"]
    assert set(function.structured_outputs) == {"probabilities", "ood_score"}
    assert function.structured_outputs["ood_score"].shape.as_list() == [None]
    # softmax(logits / 2) is flatter than softmax(logits): the graph applies the temperature.
    batch = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    probabilities = function(images=tf.constant(batch))["probabilities"].numpy()
    weights = function.variables
    kernel = next(v.numpy() for v in weights if v.shape == (3, 2))
    bias = next(v.numpy() for v in weights if v.shape == (2,))
    logits = (batch.astype(np.float32) / 255).mean(axis=(1, 2)) @ kernel + bias
    expected = np.exp(logits / 2) / np.exp(logits / 2).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)


def test_a_model_without_ood_serves_probabilities_only(tmp_path: Path) -> None:
    model = load_saved_model(tiny_model_dir(tmp_path, with_ood=False))
    assert set(model.predict(np.zeros((1, 8, 8, 3), np.uint8))) == {PROBABILITIES}
    assert model.outputs == (PROBABILITIES,)


def test_declared_ood_output_must_exist(tmp_path: Path) -> None:
    path = tiny_model_dir(tmp_path, with_ood=False, ood={"method": "energy", "output": "ood_score", "threshold": 1.0})
    with pytest.raises(ModelLoadError, match="lack the ood output 'ood_score'"):
        load_saved_model(path)


def test_frozen_signature_gives_the_savedmodel_probabilities(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        registry, "best_seconds", lambda frozen, saved_model, batches, rounds: (0.001, 0.001)
    )  # a tie: frozen
    path = tiny_model_dir(tmp_path)
    frozen, plain = load_saved_model(path), load_saved_model(path, freeze=False)
    assert frozen.frozen and not plain.frozen
    batch = np.random.default_rng(1).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    for name in (PROBABILITIES, OOD_SCORE):
        np.testing.assert_allclose(frozen.predict(batch)[name], plain.predict(batch)[name], atol=1e-6)


def test_freezing_falls_back_to_the_savedmodel_when_outputs_differ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(registry, "_FREEZE_TOLERANCE", -1.0)  # any difference, even 0, counts as too large
    with caplog.at_level(logging.WARNING, logger="app.core.registry"):
        model = load_saved_model(tiny_model_dir(tmp_path))
    assert not model.frozen
    assert "serving the SavedModel unfrozen (frozen outputs differ by" in caplog.text
    assert model.predict(np.zeros((1, 8, 8, 3), np.uint8))[PROBABILITIES].shape == (1, 2)


def test_a_frozen_signature_that_is_slower_is_not_served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "best_seconds", lambda frozen, saved_model, batches, rounds: (0.002, 0.001))
    model = load_saved_model(tiny_model_dir(tmp_path))
    assert not model.frozen
    assert model.predict(np.zeros((1, 8, 8, 3), np.uint8))[PROBABILITIES].shape == (1, 2)


def test_label_count_must_match_the_model_output(tmp_path: Path) -> None:
    path = tiny_model_dir(tmp_path, classes=3)
    with pytest.raises(ModelLoadError, match="outputs 2 classes, metadata lists 3 labels"):
        load_saved_model(path)


def test_input_size_must_match_the_signature(tmp_path: Path) -> None:
    path = tiny_model_dir(tmp_path, input={"height": 9, "width": 8, "channels": 3})
    with pytest.raises(ModelLoadError, match=r"signature input is uint8 \[None, 8, 8, 3\]"):
        load_saved_model(path)


def test_signature_names_must_exist(tmp_path: Path) -> None:
    path = tiny_model_dir(tmp_path, signature={"name": "predict", "input": "images", "output": "probabilities"})
    with pytest.raises(ModelLoadError, match="no signature 'predict'"):
        load_saved_model(path)
    path = tiny_model_dir(tmp_path / "b", signature={"name": "serving_default", "input": "images", "output": "logits"})
    with pytest.raises(ModelLoadError, match="lack metadata output 'logits'"):
        load_saved_model(path)


def test_metadata_must_match_its_directory(tmp_path: Path) -> None:
    path = tiny_model_dir(tmp_path)
    meta = json.loads((path / "metadata.json").read_text())
    (path / "metadata.json").write_text(json.dumps({**meta, "version": 2}))
    with pytest.raises(ModelLoadError, match="version 2"):
        load_saved_model(path)


def test_not_a_saved_model(tmp_path: Path) -> None:
    path = tmp_path / "shades" / "1"
    path.mkdir(parents=True)
    (path / "metadata.json").write_text(json.dumps(metadata()))
    with pytest.raises(ModelLoadError, match="not a loadable SavedModel"):
        load_saved_model(path)


def test_discover_picks_the_highest_integer_version(tmp_path: Path) -> None:
    for name in ("1", "2", "10", "latest", "0"):
        (tmp_path / "a" / name).mkdir(parents=True)
    (tmp_path / "b" / "notes").mkdir(parents=True)
    (tmp_path / ".hidden" / "1").mkdir(parents=True)
    assert discover(tmp_path) == {"a": tmp_path / "a" / "10"}
    assert discover(tmp_path / "nowhere") == {}

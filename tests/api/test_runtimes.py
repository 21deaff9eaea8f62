"""Runtime choice (`app.core.runtimes`): OpenVINO serves only where every output matches the SavedModel's;
`auto` times the runtimes that match; int8 only where its recorded accuracy allows."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from app.core import runtimes
from app.core.model import OOD_SCORE, PROBABILITIES, Compiled, ModelLoadError, ModelMetadata
from app.core.runtimes import openvino
from app.core.runtimes.base import RuntimeOptions
from app.core.settings import Settings
from tests.fakes import FakeCompiled, export_tiny_model

pytest.importorskip("openvino", reason="pip install openvino (a runtime dependency: make install)")


@pytest.fixture(scope="module")
def version_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny_model(tmp_path_factory.mktemp("runtimes"), size=16)


def test_openvino_gives_the_savedmodels_outputs(version_dir: Path) -> None:
    model = runtimes.load(version_dir, settings=Settings(runtime="openvino"))
    reference = runtimes.load(version_dir, settings=Settings(runtime="tensorflow"))
    assert model.runtime == "openvino" and reference.runtime == "tensorflow"
    batch = np.random.default_rng(0).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    ours, theirs = model.predict(batch), reference.predict(batch)
    assert set(ours) == {PROBABILITIES, OOD_SCORE}
    for name in ours:
        np.testing.assert_allclose(ours[name], theirs[name], atol=1e-5, rtol=1e-5)
    assert model.describe()["why"] == "APP_RUNTIME=openvino"


def test_openvino_runs_any_batch_size_in_static_chunks(version_dir: Path) -> None:
    model = runtimes.load(version_dir, settings=Settings(runtime="openvino"))
    sizes = model.describe()["batch_sizes"]
    assert sizes and sizes == [2**i for i in range(len(sizes))]  # 1, 2, 4, ...: the ones that paid here
    reference = runtimes.load(version_dir, settings=Settings(runtime="tensorflow"))
    batch = np.random.default_rng(1).integers(0, 256, (2 * sizes[-1] + 3, 16, 16, 3), dtype=np.uint8)
    for n in (1, 2, 3, len(batch)):  # whole chunks, and remainders of every kind
        ours, theirs = model.predict(batch[:n]), reference.predict(batch[:n])
        for name in theirs:
            assert ours[name].shape == theirs[name].shape
            np.testing.assert_allclose(ours[name], theirs[name], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("n", "sizes", "runs"),
    [(1, [1], [1]), (5, [1], [1] * 5), (4, [1, 2, 4], [4]), (7, [1, 2, 4], [4, 2, 1]), (13, [1, 2, 4, 8], [8, 4, 1])],
)
def test_a_batch_splits_into_compiled_sizes_without_padding(n: int, sizes: list[int], runs: list[int]) -> None:
    assert openvino.chunks(n, sizes) == runs


def test_auto_serves_the_fastest_runtime_that_matches_and_says_why(version_dir: Path) -> None:
    model = runtimes.load(version_dir, settings=Settings())
    assert model.runtime in ("tensorflow", "openvino")
    assert "ms vs TensorFlow's" in model.why


class Drifting:
    """OpenVINO, with every output moved by 1e-3: a runtime registered in the table that does not match."""

    name = "openvino"

    def load(self, version_dir: Path, metadata: ModelMetadata, options: RuntimeOptions) -> Compiled:
        exact = openvino.RUNTIME.load(version_dir, metadata, options)
        return FakeCompiled(lambda batch: {k: v + 1e-3 for k, v in exact.run(batch).items()})


def test_a_runtime_that_differs_is_refused_or_passed_over(version_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(runtimes.RUNTIMES, "openvino", Drifting())
    with pytest.raises(ModelLoadError, match="differs from the SavedModel on the probe batch"):
        runtimes.load(version_dir, settings=Settings(runtime="openvino"))
    fallback = runtimes.load(version_dir, settings=Settings(runtime="auto"))
    assert fallback.runtime == "tensorflow" and fallback.why.startswith("OpenVINO not used: openvino differs")


def test_int8_serves_only_with_a_recorded_accuracy_close_to_fp32(
    version_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="app.core.runtimes"):
        model = runtimes.load(version_dir, settings=Settings(precision="int8"))
    assert model.precision == "fp32" and "no int8 model recorded" in caplog.text
    meta_path = version_dir / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["quantization"] = {"int8": {"test_accuracy": 0.90, "fp32_test_accuracy": 0.92}}
    meta_path.write_text(json.dumps(meta))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="app.core.runtimes"):
        model = runtimes.load(version_dir, settings=Settings(precision="int8"))
    assert model.precision == "fp32" and "2.00 points below fp32's" in caplog.text


def test_the_model_listing_shows_the_runtime(make_client) -> None:
    info = make_client().get("/models/shades").json()
    assert info["runtime"] == {
        "name": "tensorflow",
        "precision": "fp32",
        "frozen": False,
        "why": "",
        "ood_threshold": 0.2,
        "batch_sizes": None,
    }

"""training.ood_check: an exported version's in-distribution flag rate beside what its threshold rule predicts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from training import exported, ood_check


def _run(capsys: pytest.CaptureFixture[str], version_dir: Path, data: Path, *options: str) -> dict:
    model_dir = version_dir.parent.parent
    ood_check.main(["fashion_mnist", "--data-dir", str(data), "--model-dir", str(model_dir), *options])
    return json.loads(capsys.readouterr().out)


def test_reports_the_exported_models_test_split_beside_the_rule(
    trained_fashion: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    version_dir, data = trained_fashion
    report = _run(capsys, version_dir, data, "--target", "0.1")
    recorded = json.loads((version_dir / "metadata.json").read_text())["ood"]
    assert report["method"] == recorded["method"] and report["threshold"] == recorded["threshold"]
    # 40 held-out images: half calibrate the guarantees, half are the test split.
    assert report["calibration"]["examples"] == 20 and report["test"]["examples"] == 20
    # The same served graph on the same images: the test split's flagged fraction is the one training recorded.
    assert report["test"]["flagged_fraction"] == recorded["test_flagged"]
    assert report["threshold_recomputed"] == pytest.approx(recorded["threshold"], rel=1e-5)
    assert report["guarantee"]["calibration_examples"] == recorded["guarantee"]["calibration_examples"] == 20
    predicted = report["test"]["if_drawn_like_calibration"]
    low, high = predicted["interval_90_flagged_fraction"]
    assert low <= predicted["expected_flagged_fraction"] <= high
    assert 0 < predicted["p_flagging_at_least_as_many"] <= 1 and 0 <= predicted["p_flagging_more_than_0.1"] <= 1
    assert 0 <= report["test"]["ks_against_calibration"]["p_value"] <= 1


def test_a_folder_of_photos_is_decoded_as_uploads_and_reported_beside_the_test_split(
    trained_fashion: tuple[Path, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    version_dir, data = trained_fashion
    # The test split's own images, as PNG files in nested folders, and a file that does not decode.
    folder = tmp_path / "our-photos"
    for index, image in enumerate(exported.load(version_dir, data).data.test.x):
        (folder / str(index % 3)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[:, :, 0], "L").save(folder / str(index % 3) / f"{index}.png")
    (folder / "broken.jpg").write_bytes(b"not an image")
    report = _run(capsys, version_dir, data, "--images", str(folder))
    assert report[str(folder)] == report["test"]  # the same pixels, decoded by the service's own load_image
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit, match="holds no decodable image"):
        _run(capsys, version_dir, data, "--images", str(empty))


def test_a_model_without_an_ood_score_is_a_clear_error(trained_fashion: tuple[Path, Path], tmp_path: Path) -> None:
    version_dir, data = trained_fashion
    copy = tmp_path / "fashion_mnist" / "1"
    shutil.copytree(version_dir, copy)
    record = json.loads((copy / "metadata.json").read_text())
    del record["ood"]
    (copy / "metadata.json").write_text(json.dumps(record))
    with pytest.raises(SystemExit, match="has no out-of-distribution score"):
        ood_check.main(["fashion_mnist", "--data-dir", str(data), "--model-dir", str(tmp_path)])

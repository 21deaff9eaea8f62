"""training.ood_check: an exported version's in-distribution flag rate beside what its threshold rule predicts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from training import ood_check


def test_reports_the_exported_models_counts_beside_the_rule(
    trained_fashion: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    version_dir, data = trained_fashion
    model_dir = version_dir.parent.parent
    ood_check.main(["fashion_mnist", "--data-dir", str(data), "--model-dir", str(model_dir), "--target", "0.1"])
    report = json.loads(capsys.readouterr().out)
    recorded = json.loads((version_dir / "metadata.json").read_text())["ood"]
    assert report["method"] == recorded["method"] and report["threshold"] == recorded["threshold"]
    assert report["validation"]["examples"] == 30 and report["test"]["examples"] == 40
    # The same served graph on the same images: the test split's flagged fraction is the one training recorded.
    assert report["test"]["flagged_fraction"] == recorded["test_flagged"]
    assert report["threshold_recomputed"] == pytest.approx(recorded["threshold"], rel=1e-5)
    predicted = report["if_test_is_drawn_like_validation"]
    low, high = predicted["interval_90_flagged_fraction"]
    assert low <= predicted["expected_flagged_fraction"] <= high
    assert 0 < predicted["p_flagging_at_least_as_many"] <= 1 and 0 <= predicted["p_flagging_more_than_0.1"] <= 1
    assert 0 <= report["ks_validation_vs_test"]["p_value"] <= 1


def test_a_model_without_an_ood_score_is_a_clear_error(trained_fashion: tuple[Path, Path], tmp_path: Path) -> None:
    version_dir, data = trained_fashion
    copy = tmp_path / "fashion_mnist" / "1"
    shutil.copytree(version_dir, copy)
    record = json.loads((copy / "metadata.json").read_text())
    del record["ood"]
    (copy / "metadata.json").write_text(json.dumps(record))
    with pytest.raises(SystemExit, match="has no out-of-distribution score"):
        ood_check.main(["fashion_mnist", "--data-dir", str(data), "--model-dir", str(tmp_path)])

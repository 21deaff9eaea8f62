"""training.exported: the commands that work on an exported version rebuild its run's own splits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_training import idx_files
from training import common, exported, fashion_mnist


def test_the_splits_are_rebuilt_with_the_runs_own_arguments(trained_fashion: tuple[Path, Path]) -> None:
    version_dir, data = trained_fashion
    version = exported.load(version_dir, data)
    assert (version.args.seed, version.args.validation_fraction, version.args.ood_per_set) == (7, 0.25, 12)
    assert len(version.data.y_val) == 30 == version.record["dataset"]["validation_examples"]
    # Today's defaults (seed 1337, 10%) would hold out other images: one of each class.
    defaults = common.parse_args(fashion_mnist.TASK_SPEC, ["--data-dir", str(data)])
    assert len(fashion_mnist.TASK_SPEC.load_data(defaults, version.spec).y_val) == 10


def test_a_dataset_that_makes_another_validation_split_is_refused(
    trained_fashion: tuple[Path, Path], tmp_path: Path
) -> None:
    version_dir, _ = trained_fashion
    other = idx_files(tmp_path / "bigger", train=200)
    with pytest.raises(common.TrainingError, match="has 50 images, the training run's had 30"):
        exported.load(version_dir, other)


def test_a_version_without_a_recorded_command_is_refused(trained_fashion: tuple[Path, Path], tmp_path: Path) -> None:
    version_dir, data = trained_fashion
    copy = tmp_path / "fashion_mnist" / version_dir.name
    copy.parent.mkdir()
    record = json.loads((version_dir / "metadata.json").read_text())
    del record["training"]["command"]
    copy.mkdir()
    (copy / "metadata.json").write_text(json.dumps(record))
    with pytest.raises(common.TrainingError, match=r"records no `python -m training\.fashion_mnist"):
        exported.load(copy, data)
    with pytest.raises(common.TrainingError, match="no exported version"):
        exported.version_dir(tmp_path, "rps")

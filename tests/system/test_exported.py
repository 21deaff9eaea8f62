"""training.exported: the commands that work on an exported version rebuild its run's own splits."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from tests.system.test_training import idx_files
from training import arguments, exported, fashion_mnist, flowers, rps
from training.errors import TrainingError


def test_the_splits_are_rebuilt_with_the_runs_own_arguments(trained_fashion: tuple[Path, Path]) -> None:
    version_dir, data = trained_fashion
    version = exported.load(version_dir, data)
    assert (version.config.seed, version.config.validation_fraction, version.config.ood_per_set) == (7, 0.25, 12)
    assert len(version.data.validation.y) == 30 == version.record["dataset"]["validation_examples"]
    # Today's defaults (seed 1337, 10%) would hold out other images: one of each class.
    defaults = arguments.parse(fashion_mnist.TASK, ["--data-dir", str(data)])
    assert len(fashion_mnist.TASK.load(defaults).validation.y) == 10


def test_a_dataset_that_makes_another_validation_split_is_refused(
    trained_fashion: tuple[Path, Path], tmp_path: Path
) -> None:
    version_dir, _ = trained_fashion
    other = idx_files(tmp_path / "bigger", train=200)
    with pytest.raises(TrainingError, match="has 50 images, the training run's had 30"):
        exported.load(version_dir, other)


def test_a_version_without_a_recorded_command_is_refused(trained_fashion: tuple[Path, Path], tmp_path: Path) -> None:
    version_dir, data = trained_fashion
    copy = tmp_path / "fashion_mnist" / version_dir.name
    copy.parent.mkdir()
    record = json.loads((version_dir / "metadata.json").read_text())
    del record["training"]["command"]
    copy.mkdir()
    (copy / "metadata.json").write_text(json.dumps(record))
    with pytest.raises(TrainingError, match=r"records no `python -m training\.<task>"):
        exported.load(copy, data)
    with pytest.raises(TrainingError, match="no exported version"):
        exported.version_dir(tmp_path, "rps")


def test_the_recorded_command_parses_back_to_the_same_frozen_configuration() -> None:
    argv = ["--data-dir", "shared data/flower_photos", "--arch", "tutorial", "--seed", "3", "--fine-tune-stages", "0"]
    config = arguments.parse(flowers.TASK, argv)
    assert (config.arch, config.epochs, config.seed) == ("tutorial", 15, 3)  # --epochs defaults per --arch
    assert config.transfer is not None and config.transfer.fine_tune_stages == 0
    assert config.ood_data_dir == Path("shared data").resolve()  # the other datasets lie beside this one
    assert config.command == (
        "python -m training.flowers --data-dir 'shared data/flower_photos' --arch tutorial --seed 3 --fine-tune-stages 0"
    )
    assert exported.rebuild({"training": {"command": config.command}}, None) == (flowers.TASK, config)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 4  # type: ignore[misc]
    # A task without a backbone to fine-tune, or that holds out whole groups, has neither option.
    assert arguments.parse(rps.TASK, []).transfer is None and arguments.parse(rps.TASK, []).validation_fraction is None

"""The model store as training writes it: all of a version or nothing, never an overwrite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from training import store
from training.errors import TrainingError


def test_a_version_appears_whole_and_only_at_the_end(tmp_path: Path) -> None:
    with store.staged(tmp_path, "parts", None) as (version, staging):
        (staging / "metadata.json").write_text("{}")
        assert version == 1 and not (tmp_path / "parts" / "1").exists()  # not visible while written
        assert staging.name.startswith(".")  # the service ignores hidden names
    assert (tmp_path / "parts" / "1" / "metadata.json").is_file()
    with store.staged(tmp_path, "parts", None) as (version, _):
        assert version == 2


def test_a_failed_or_interrupted_run_leaves_nothing(tmp_path: Path) -> None:
    for interruption in (RuntimeError("disk full"), KeyboardInterrupt()):
        with pytest.raises(type(interruption)), store.staged(tmp_path, "parts", None) as (_, staging):
            (staging / "half").write_text("x")
            raise interruption
    assert list((tmp_path / "parts").iterdir()) == []


def test_a_version_is_never_overwritten_and_a_killed_runs_leftovers_go(tmp_path: Path) -> None:
    (tmp_path / "parts" / "3").mkdir(parents=True)
    with pytest.raises(TrainingError, match="never overwritten"), store.staged(tmp_path, "parts", 3):
        pass
    abandoned = tmp_path / "parts" / ".4.staging-999999999"  # no such process
    abandoned.mkdir()
    mine = tmp_path / "parts" / f".5.staging-{os.getppid()}"  # a live process's: left alone
    mine.mkdir()
    with store.staged(tmp_path, "parts", None) as (version, _):
        assert version == 4
    assert not abandoned.exists() and mine.exists()


def test_an_unwritable_store_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(TrainingError, match="cannot write to the model store"), store.staged(blocker, "parts", None):
        pass

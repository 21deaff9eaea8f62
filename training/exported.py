"""An exported model version and the splits its training run made, for the commands that work on it afterwards
(`training.quantize`, `training.ood_check`).

The splits are rebuilt from the run's own configuration: the command recorded in `metadata.json`
(`training.command`), parsed by the task's parser (`training.arguments`), so its seed, validation fraction and
out-of-distribution set size are the run's, not today's defaults. Only the dataset's location may differ
(`data_dir`). A rebuilt validation split whose size differs from the recorded one is refused: the images in it
would not be the ones the run held out, and some could be images the model trained on.
"""

from __future__ import annotations

import importlib
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.core.imaging import ImageSpec
from app.core.model import ModelMetadata, read_metadata
from app.core.repository import Repository
from training import arguments
from training.config import RunConfig
from training.errors import TrainingError
from training.splits import Splits
from training.task import Task


@dataclass
class Exported:
    """One version directory: its metadata (validated, and as written), input spec, the run's configuration
    (with `data_dir` replaced when given) and the splits it makes."""

    version_dir: Path
    metadata: ModelMetadata
    record: dict[str, Any]
    spec: ImageSpec
    config: RunConfig
    data: Splits


def version_dir(model_dir: Path, task: str, version: int | None = None) -> Path:
    """`model_dir/task/version`, the highest version when `version` is None: the versions the service
    would find there (`app.core.repository`)."""
    versions = Repository(model_dir).layout().get(task, {})
    if not versions:
        raise TrainingError(f"no exported version in {model_dir / task}")
    if version is None:
        return versions[max(versions)]
    if version not in versions:
        raise TrainingError(f"{model_dir / task / str(version)} does not exist")
    return versions[version]


def rebuild(record: dict[str, Any], data_dir: Path | None) -> tuple[Task, RunConfig]:
    """The training run's task and configuration, parsed from its recorded command (`python -m training.<m>
    ...`), with `data_dir` (and the out-of-distribution data folder derived from it) in place of the run's when
    given. Module <m> is a task module (its `TASK`), or a command that makes its task (`training.folder`: its
    `rebuild(argv)`); loaded by name, as `python -m` does, since nothing in the library imports them."""
    command = record.get("training", {}).get("command")
    argv = shlex.split(command) if isinstance(command, str) else []
    if len(argv) < 3 or argv[:2] != ["python", "-m"] or not argv[2].startswith("training."):
        raise TrainingError(f"metadata.json records no `python -m training.<task> ...` command: {command!r}")
    module_name, argv = argv[2], argv[3:]
    if data_dir is not None:  # the last occurrence wins; the OOD sets' folder follows it unless recorded
        argv += ["--data-dir", str(data_dir)]
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise TrainingError(f"the recorded command's {module_name} does not exist here: {command}") from error
    try:
        if hasattr(module, "rebuild"):
            rebuilt: tuple[Task, RunConfig] = module.rebuild(argv)
            return rebuilt
        task: Task = module.TASK
        return task, arguments.parse(task, argv)
    except SystemExit as error:  # argparse has printed why
        raise TrainingError(f"the recorded command no longer parses: {command}") from error


def load(path: Path, data_dir: Path | None) -> Exported:
    """The exported version at `path` and its training run's splits (see the module docstring)."""
    metadata = read_metadata(path)
    record = json.loads((path / "metadata.json").read_text())
    task, config = rebuild(record, data_dir)
    data = task.load(config)
    recorded = record.get("dataset", {}).get("validation_examples")
    if recorded is not None and recorded != len(data.validation):
        raise TrainingError(
            f"the validation split rebuilt from {config.data_dir} has {len(data.validation)} images, the training "
            f"run's had {recorded}: not the same dataset or not the same code"
        )
    return Exported(path, metadata, record, task.architecture(config).input, config, data)

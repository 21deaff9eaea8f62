"""What a task module declares: a dataset of the catalogue and the architectures it can train on it.

Every architecture's `build` returns a Keras model that names two layers, `features` (the penultimate
representation) and `logits` (the pre-softmax scores), and ends in the softmax it trains with
(`training.model.classifier` makes that ending); it may name convolution blocks `block1`, `block2`, ... for
the out-of-distribution score. `training.run` does everything else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from app.core.imaging import ImageSpec
from training import fitting
from training.catalogue import Dataset
from training.config import RunConfig
from training.fitting import History
from training.splits import Splits

Build = Callable[[RunConfig, ImageSpec, int], Any]  # (config, input, number of classes) -> keras.Model
Fit = Callable[[Any, Any, Any, RunConfig], History]  # (model, train, validation datasets, config) -> history


@dataclass(frozen=True)
class Architecture:
    """One model a task can train (`--arch`): the input it takes, how to build it and how to fit it, the
    default of `--epochs` for it, and how many stages of a pretrained backbone `--fine-tune-stages` can unfreeze
    (0: none; a task with any such architecture takes the transfer-learning options)."""

    input: ImageSpec
    build: Build
    fit: Fit = fitting.fit_plateau
    epochs: int = 10
    backbone_stages: int = 0


@dataclass(frozen=True)
class Task:
    """A dataset, the architectures offered on it and the defaults of `--arch` (the dataset's backbone unless
    given), `--batch-size` and `--patience`."""

    dataset: Dataset
    architectures: Mapping[str, Architecture]
    default_architecture: str | None = None
    batch_size: int = 32
    patience: int = 4

    def __post_init__(self) -> None:
        if self.default not in self.architectures:
            raise ValueError(
                f"{self.name}: default architecture {self.default!r} is not one of {list(self.architectures)}"
            )

    @property
    def name(self) -> str:
        return self.dataset.name

    @property
    def labels(self) -> list[str]:
        return list(self.dataset.labels)

    @property
    def default(self) -> str:
        """The default of `--arch`."""
        return self.default_architecture or self.dataset.backbone or ""

    @property
    def backbone_stages(self) -> int:
        """The most backbone stages any architecture can fine-tune (0: the task has no transfer options)."""
        return max((a.backbone_stages for a in self.architectures.values()), default=0)

    def architecture(self, config: RunConfig) -> Architecture:
        return self.architectures[config.arch]

    def load(self, config: RunConfig) -> Splits:
        """The run's splits, decoded at its architecture's input."""
        return self.dataset.load(
            config.data_dir,
            self.architecture(config).input,
            seed=config.seed,
            validation_fraction=config.validation_fraction,
        )

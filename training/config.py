"""The configuration of one training run, parsed once from the command line (`training.arguments`) and then
only read: every stage of the run takes the same frozen `RunConfig`.

Each field is the command-line option of the same name (`arch` is `--arch`, `ood_per_set` is `--ood-per-set`),
with the defaults already resolved (`epochs` from the architecture, `ood_data_dir` from `data_dir`). Options a
task does not offer are None: `validation_fraction` where the dataset holds out whole groups, `transfer` where
no architecture has a pretrained backbone to fine-tune.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

PROJECT_ROOT = Path(__file__).resolve().parent.parent  # the default model store is its models/

Schedule = Literal["plateau", "cosine"]


@dataclass(frozen=True)
class TransferConfig:
    """The transfer-learning options (`training.transfer`), defaults included: phase 2 unfreezes the top
    `fine_tune_stages` backbone stages for at most `fine_tune_epochs` (None: as many as `--epochs`) on
    `fine_tune_schedule`. Label smoothing is off by default: it blurs the penultimate features that the
    out-of-distribution score reads (Müller et al. 2019, "When does label smoothing help?")."""

    fine_tune_stages: int = 3  # of EfficientNet-Lite's 7; its head convolution is always fine-tuned with them
    fine_tune_epochs: int | None = None
    fine_tune_schedule: Schedule = "plateau"
    label_smoothing: float = 0.0
    augment: Literal["basic", "randaugment"] = "basic"


@dataclass(frozen=True)
class RunConfig:
    """One run's options (see the module docstring); `program` and `argv` are the command they were parsed from
    ("python -m training.rps" and its arguments)."""

    task: str
    program: str
    argv: tuple[str, ...]
    data_dir: Path | None
    arch: str
    epochs: int
    batch_size: int
    output_dir: Path
    version: int | None
    seed: int
    validation_fraction: float | None
    patience: int
    backbone_weights: Path | None
    limit: int | None
    ood_data_dir: Path | None
    ood_per_set: int
    ood_method: str
    ood_alpha: float = 0.05
    ood_delta: float = 0.1
    transfer: TransferConfig | None = None
    run_dir: Path | None = None  # TensorBoard logs and the review list (training.folder); None: none

    @property
    def command(self) -> str:
        """The command that reproduces this run (metadata.json's `training.command`, which
        `training.exported` parses again)."""
        return f"{self.program} {shlex.join(self.argv)}".strip()

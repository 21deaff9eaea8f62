"""`python -m training.<task>`: parse the command line once, load the splits, build and fit the chosen
architecture under a `tf.distribute` strategy, then publish the trained model (`training.publish`).

    main(argv) of a task module == run(TASK, argv)

A `TrainingError` (bad data directory, missing weights, ...) ends the process with one line, `error: ...`.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from training import arguments
from training.config import RunConfig
from training.errors import TrainingError
from training.fitting import distribution_strategy, make_dataset
from training.metadata import git_commit
from training.publish import Trained, publish
from training.splits import Splits
from training.task import Architecture, Task

log = logging.getLogger("training")


def run(task: Task, argv: Sequence[str] | None = None) -> Path:
    """Train, export, evaluate and document one model version of `task`; returns its directory. `argv`
    defaults to the process's own arguments."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = arguments.parse(task, list(sys.argv[1:] if argv is None else argv))
    commit = git_commit()  # now, before anything can change the tree during a long run
    try:
        return _run(task, config, commit)
    except TrainingError as error:
        sys.exit(f"error: {error}")


def _run(task: Task, config: RunConfig, commit: str | None) -> Path:
    import keras

    keras.utils.set_random_seed(config.seed)
    architecture = task.architecture(config)
    data = task.load(config).limited(config.limit, config.seed)
    log.info("split: %d train, %d validation, %d test", len(data.train), len(data.validation), len(data.test))
    trained = train(architecture, config, data, num_classes=len(task.labels))
    return publish(task.dataset, config, architecture.input, data, trained, commit)


def train(architecture: Architecture, config: RunConfig, data: Splits, *, num_classes: int) -> Trained:
    """Build `architecture` and fit it on `data`'s training split, validating on its validation split."""
    train_set = make_dataset(data.train.x, data.train.y, config.batch_size, shuffle=True, seed=config.seed)
    validation_set = make_dataset(
        data.validation.x, data.validation.y, config.batch_size, shuffle=False, seed=config.seed
    )
    started = time.perf_counter()
    with distribution_strategy().scope():
        model = architecture.build(config, architecture.input, num_classes)
        model.summary(print_fn=log.info)
        history = architecture.fit(model, train_set, validation_set, config)
    return Trained(model, history, time.perf_counter() - started)

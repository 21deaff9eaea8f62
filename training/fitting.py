"""Fitting a compiled Keras classifier on in-memory images: the tf.data pipeline, the device strategy and the
two learning-rate schedules. Everything a task's `Architecture.fit` needs; `training.transfer` builds its
two-phase schedule from `fit`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.config import RunConfig, Schedule
from training.errors import TrainingError

History = dict[str, list[float]]  # metric name ("loss", "val_accuracy", ...) -> one value per epoch


def make_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, *, shuffle: bool, seed: int) -> Any:
    """A tf.data pipeline over in-memory uint8 images: cache, shuffle, batch, parallel cast, prefetch."""
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((x, y)).cache()
    if shuffle:
        dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    dataset = dataset.map(
        lambda images, labels: (tf.cast(images, tf.float32), labels), num_parallel_calls=tf.data.AUTOTUNE
    )
    return dataset.prefetch(tf.data.AUTOTUNE)


def distribution_strategy() -> Any:
    """Mirror over every GPU when there are several; mixed precision whenever there is a GPU."""
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        keras.mixed_precision.set_global_policy("mixed_float16")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def fit(
    model: Any,
    train: Any,
    val: Any,
    *,
    epochs: int,
    patience: int,
    learning_rate: float = 1e-3,
    initial_epoch: int = 0,
    label_smoothing: float = 0.0,
    schedule: Schedule = "plateau",
    monitor: Monitor | None = None,
) -> History:
    """Compile and fit; returns the history.

    `schedule`: "plateau" stops after `patience` epochs without validation-loss improvement, cutting the
    learning rate on the way, and keeps the weights of the best validation loss; "cosine" decays the rate to
    zero over all `epochs` (Loshchilov & Hutter 2017), runs them all and keeps the final weights, since the
    low-rate tail is where it gains. Validation loss is no guide there: late in training it rises with
    overconfidence while accuracy still climbs (Guo et al. 2017), and the temperature fitted afterwards
    (`training.calibration`) removes that overconfidence. `monitor` adds a progress bar and TensorBoard logs
    for the stage (default: Keras' line per epoch)."""
    import keras
    import tensorflow as tf

    loss: keras.losses.Loss = keras.losses.SparseCategoricalCrossentropy()
    if label_smoothing:  # Keras' sparse loss has no smoothing: one-hot the labels instead
        classes = model.output_shape[-1]
        train, val = (d.map(lambda x, y: (x, tf.one_hot(y, classes))) for d in (train, val))
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
    rate: Any = learning_rate
    if schedule == "cosine":
        steps = int(train.cardinality())
        if steps < 1:
            raise TrainingError("a cosine schedule needs a training dataset of known length")
        rate = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=epochs * steps)
        callbacks = []
    elif schedule == "plateau":
        callbacks = [
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True),
            # Smaller steps once validation stalls; patience below early stopping's so it gets a chance.
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=0.3, patience=max(1, patience // 2), min_lr=1e-6
            ),
        ]
    else:
        raise ValueError(f"unknown schedule {schedule!r}: plateau or cosine")
    model.compile(optimizer=keras.optimizers.Adam(rate), loss=loss, metrics=["accuracy"])
    if monitor is not None:
        callbacks += monitor.callbacks(initial_epoch, initial_epoch + epochs)
    history = model.fit(
        train,
        validation_data=val,
        epochs=initial_epoch + epochs,
        initial_epoch=initial_epoch,
        callbacks=callbacks,
        verbose=0 if monitor is not None else 2,
    )
    return {k: [float(v) for v in values] for k, values in history.history.items() if k != "learning_rate"}


@dataclass(frozen=True)
class Monitor:
    """What a person watches during a long fit: a progress bar per stage with its time estimate (tqdm's Keras
    callback, on stderr), and TensorBoard logs under `log_dir/<stage>` (`tensorboard --logdir` on it)."""

    stage: str
    log_dir: Path | None = None

    def callbacks(self, initial_epoch: int, epochs: int) -> list[Any]:
        """For a fit from `initial_epoch` to `epochs` (Keras counts a second phase on from the first's end)."""
        import keras
        from tqdm.keras import TqdmCallback

        bar = TqdmCallback(epochs=epochs, verbose=0, desc=self.stage, leave=True, initial=initial_epoch)
        found: list[Any] = [bar]
        if self.log_dir is not None:
            found.append(keras.callbacks.TensorBoard(log_dir=str(self.log_dir / self.stage), write_graph=False))
        return found


def fit_plateau(model: Any, train: Any, val: Any, config: RunConfig) -> History:
    """`--epochs` at most, early stopping after `--patience`: the tutorials' way, and `Architecture`'s default."""
    return fit(model, train, val, epochs=config.epochs, patience=config.patience)


def fit_cosine(model: Any, train: Any, val: Any, config: RunConfig) -> History:
    """All `--epochs` on a cosine decay, keeping the final weights."""
    return fit(model, train, val, epochs=config.epochs, patience=config.patience, schedule="cosine")

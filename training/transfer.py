"""Transfer learning on a pretrained EfficientNet-Lite backbone, as the TensorFlow tutorials do it, then
better: phase 1 trains a new head on the frozen backbone; phase 2 unfreezes the top `--fine-tune-stages`
stages and fine-tunes them at a low learning rate. Augmentation runs inside the model (inactive at
inference). Calibration is left to temperature scaling after training (`training.calibration`), which is why
label smoothing is off by default (`training.config.TransferConfig`).

A task offers these architectures with `architectures(epochs=...)`; its command line then has the
transfer-learning options (`training.arguments`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import layers

from app.core.imaging import ImageSpec
from training import augmentation, efficientnet_lite
from training.config import RunConfig, TransferConfig
from training.errors import TrainingError
from training.fitting import History, Monitor, fit
from training.model import classifier
from training.task import Architecture

HEAD_LEARNING_RATE = 1e-3
FINE_TUNE_LEARNING_RATE = 1e-4
BACKBONE_NAME = "backbone"


def architectures(*, epochs: int, cached_head: bool = False) -> dict[str, Architecture]:
    """`efficientnet_lite0`, `_lite1` and `_lite2`, each at its ImageNet input size, `epochs` the default of
    `--epochs` (of phase 1; phase 2 has as many by default). With `cached_head`, phase 1 trains the head on the
    frozen backbone's features computed once (`fit_cached_two_phase`): minutes instead of an hour on a CPU."""
    return {
        f"efficientnet_{name}": Architecture(
            input=ImageSpec(height=variant.image_size, width=variant.image_size, channels=3),
            build=build_efficientnet_lite,
            fit=fit_cached_two_phase if cached_head else fit_two_phase,
            epochs=epochs,
            backbone_stages=len(efficientnet_lite.STAGES),
        )
        for name, variant in efficientnet_lite.VARIANTS.items()
    }


def build_efficientnet_lite(config: RunConfig, spec: ImageSpec, num_classes: int) -> keras.Model:
    """Frozen EfficientNet-Lite`N` (ImageNet, N from `--arch`) + global pooling + dropout + softmax head."""
    variant = config.arch.removeprefix("efficientnet_")
    weights = config.backbone_weights
    if weights is None:
        try:
            weights = efficientnet_lite.default_weights_path(variant)
        except FileNotFoundError as error:
            raise TrainingError(str(error)) from error
    if not Path(weights).is_file():
        raise TrainingError(f"--backbone-weights {weights} is not a file")
    backbone = efficientnet_lite.efficientnet_lite(
        variant, (spec.height, spec.width, spec.channels), include_top=False, weights=Path(weights)
    )
    backbone.name = BACKBONE_NAME
    backbone.trainable = False
    inputs = keras.Input((spec.height, spec.width, spec.channels))
    x = augmentation.fine_tuning(inputs, _options(config).augment)
    x = backbone(x, training=False)  # BatchNorm stays in inference mode, also when fine-tuning
    features = layers.GlobalAveragePooling2D(name="features")(x)
    return keras.Model(inputs, classifier(features, num_classes, dropout=0.3), name=f"{config.arch}_transfer")


def fit_two_phase(model: keras.Model, train: object, val: object, config: RunConfig) -> History:
    """`--epochs` epochs (at most) for the head, then `--fine-tune-epochs` (default as many) for fine-tuning
    the top stages. Each keeps the weights its schedule keeps (`training.fitting.fit`): the head, and
    fine-tuning on the plateau schedule, those of their best validation loss; fine-tuning on the cosine
    schedule, its final ones."""
    options = _options(config)
    history = fit(
        model,
        train,
        val,
        epochs=config.epochs,
        patience=config.patience,
        learning_rate=HEAD_LEARNING_RATE,
        label_smoothing=options.label_smoothing,
    )
    return _fine_tune(model, train, val, config, history)


def fit_cached_two_phase(model: keras.Model, train: Any, val: Any, config: RunConfig) -> History:
    """`fit_two_phase`, with phase 1 on cached features: the frozen backbone runs once over the training and
    validation images (without augmentation: phase 1 sees the photos as they are), and the head (the model's
    own dropout and `logits` layers, sharing their weights) trains on those features. Phase 2 then fine-tunes
    on the images with augmentation, as `fit_two_phase` does."""
    import tensorflow as tf

    options = _options(config)
    extractor = keras.Model(model.input, model.get_layer("features").output)

    def features(dataset: Any, stage: str) -> Any:
        parts, labels = [], []
        for x, y in progress(dataset, desc=stage):
            parts.append(extractor(x, training=False).numpy())
            labels.append(y.numpy())
        return tf.data.Dataset.from_tensor_slices((np.concatenate(parts), np.concatenate(labels)))

    batch = config.batch_size
    train_features = features(train, "features (train)").shuffle(65536, seed=config.seed).batch(batch)
    val_features = features(val, "features (validation)").batch(batch)
    inputs = keras.Input(extractor.output.shape[1:])
    x = inputs
    after_features = model.layers[model.layers.index(model.get_layer("features")) + 1 :]
    for layer in after_features:  # the head: dropout, logits, softmax (the same layer objects: shared weights)
        x = layer(x)
    head = keras.Model(inputs, x, name="head")
    history = fit(
        head,
        train_features,
        val_features,
        epochs=config.epochs,
        patience=config.patience,
        learning_rate=HEAD_LEARNING_RATE,
        label_smoothing=options.label_smoothing,
        monitor=Monitor("head", config.run_dir),
    )
    return _fine_tune(model, train, val, config, history)


def _fine_tune(model: keras.Model, train: Any, val: Any, config: RunConfig, history: History) -> History:
    """Phase 2 (see the module docstring), after the head's `history`; returns both phases' history."""
    options = _options(config)
    if not options.fine_tune_stages:
        return history
    backbone = model.get_layer(BACKBONE_NAME)
    backbone.trainable = True
    variant = efficientnet_lite.VARIANTS[config.arch.removeprefix("efficientnet_")]
    frozen_stages = len(efficientnet_lite.STAGES) - options.fine_tune_stages
    first_block = sum(stage[0] for stage in variant.stages()[:frozen_stages])
    for layer in backbone.layers:
        block = layer.name.split("_")[0]
        top = layer.name.startswith("head") or (block.startswith("block") and int(block[5:]) >= first_block)
        # BatchNorm statistics stay frozen: they were learned on far more data than we have.
        layer.trainable = top and not isinstance(layer, layers.BatchNormalization)
    fine = fit(
        model,
        train,
        val,
        epochs=options.fine_tune_epochs or config.epochs,
        patience=config.patience,
        learning_rate=FINE_TUNE_LEARNING_RATE,
        initial_epoch=len(history["loss"]),
        label_smoothing=options.label_smoothing,
        schedule=options.fine_tune_schedule,
        monitor=Monitor("fine-tuning", config.run_dir) if config.run_dir is not None else None,
    )
    return {key: history[key] + fine[key] for key in history}


def progress(iterable: Any, desc: str) -> Any:
    """`iterable` with a progress bar on stderr (tqdm; none when stderr is not a terminal)."""
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, disable=None, leave=False)


def _options(config: RunConfig) -> TransferConfig:
    if config.transfer is None:  # the parser adds them for every task with these architectures
        raise ValueError(f"{config.task} was parsed without the transfer-learning options")
    return config.transfer

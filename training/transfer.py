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

import keras
from keras import layers

from app.core.imaging import ImageSpec
from training import augmentation, efficientnet_lite
from training.config import RunConfig, TransferConfig
from training.errors import TrainingError
from training.fitting import History, fit
from training.model import classifier
from training.task import Architecture

HEAD_LEARNING_RATE = 1e-3
FINE_TUNE_LEARNING_RATE = 1e-4
BACKBONE_NAME = "backbone"


def architectures(*, epochs: int) -> dict[str, Architecture]:
    """`efficientnet_lite0`, `_lite1` and `_lite2`, each at its ImageNet input size, `epochs` the default of
    `--epochs` (of phase 1; phase 2 has as many by default)."""
    return {
        f"efficientnet_{name}": Architecture(
            input=ImageSpec(height=variant.image_size, width=variant.image_size, channels=3),
            build=build_efficientnet_lite,
            fit=fit_two_phase,
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
    )
    return {key: history[key] + fine[key] for key in history}


def _options(config: RunConfig) -> TransferConfig:
    if config.transfer is None:  # the parser adds them for every task with these architectures
        raise ValueError(f"{config.task} was parsed without the transfer-learning options")
    return config.transfer

"""Transfer learning on a pretrained backbone, as the TensorFlow tutorials do it, then better:
phase 1 trains a new head on the frozen backbone; phase 2 unfreezes the top blocks and fine-tunes them
at a low learning rate. Augmentation runs inside the model (inactive at inference)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import keras
from keras import layers

from app.imaging import ImageSpec
from training import common, efficientnet_lite

HEAD_LEARNING_RATE = 1e-3
FINE_TUNE_LEARNING_RATE = 1e-4
FINE_TUNE_FROM_BLOCK = 8  # the last three stages (blocks 8-15) and the head conv are fine-tuned
LABEL_SMOOTHING = 0.1  # keeps the small dataset from making the head overconfident
BACKBONE_NAME = "backbone"


def augmentation(x: keras.KerasTensor) -> keras.KerasTensor:
    x = layers.RandomFlip("horizontal")(x)
    x = layers.RandomRotation(0.1)(x)
    x = layers.RandomZoom(0.15)(x)
    x = layers.RandomTranslation(0.1, 0.1)(x)
    return layers.RandomContrast(0.2)(x)


def build_efficientnet_lite0(args: argparse.Namespace, spec: ImageSpec, num_classes: int) -> keras.Model:
    """Frozen EfficientNet-Lite0 (ImageNet) + global pooling + dropout + softmax head."""
    weights = args.backbone_weights
    if weights is None:
        try:
            weights = efficientnet_lite.default_weights_path()
        except FileNotFoundError as error:
            raise common.TrainingError(str(error)) from error
    if not Path(weights).is_file():
        raise common.TrainingError(f"--backbone-weights {weights} is not a file")
    backbone = efficientnet_lite.efficientnet_lite0(
        (spec.height, spec.width, spec.channels), include_top=False, weights=Path(weights)
    )
    backbone.name = BACKBONE_NAME
    backbone.trainable = False
    inputs = keras.Input((spec.height, spec.width, spec.channels))
    x = augmentation(inputs)
    x = backbone(x, training=False)  # BatchNorm stays in inference mode, also when fine-tuning
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.3)(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="efficientnet_lite0_transfer")


def fit_two_phase(model: keras.Model, train: Any, val: Any, args: argparse.Namespace) -> dict[str, list[float]]:
    """`--epochs` epochs (at most) for the head, then as many for fine-tuning the top blocks."""
    history = common.fit(
        model,
        train,
        val,
        epochs=args.epochs,
        patience=args.patience,
        learning_rate=HEAD_LEARNING_RATE,
        label_smoothing=LABEL_SMOOTHING,
    )
    backbone = model.get_layer(BACKBONE_NAME)
    backbone.trainable = True
    for layer in backbone.layers:
        block = layer.name.split("_")[0]
        top = layer.name.startswith("head") or (block.startswith("block") and int(block[5:]) >= FINE_TUNE_FROM_BLOCK)
        # BatchNorm statistics stay frozen: they were learned on far more data than we have.
        layer.trainable = top and not isinstance(layer, layers.BatchNormalization)
    fine = common.fit(
        model,
        train,
        val,
        epochs=args.epochs,
        patience=args.patience,
        learning_rate=FINE_TUNE_LEARNING_RATE,
        initial_epoch=len(history["loss"]),
        label_smoothing=LABEL_SMOOTHING,
    )
    return {key: history[key] + fine[key] for key in history}

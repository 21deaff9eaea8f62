"""A Keras model trained elsewhere becomes a served model, with the same guarantees as the built-in tasks:

    python -m training.adopt flowers_cnn.keras --data-dir ~/photos/flowers --task my_flowers
    python -m training.adopt model.h5 --data-dir DIR --task NAME --scale unit      # no Rescaling layer inside
    python -m training.adopt saved_model_dir/ --data-dir DIR --task NAME           # a TensorFlow SavedModel

What the model takes is read from it: the input size and channels from its input shape (`--input-size` where
it does not say), the preprocessing from a `Rescaling` or `Normalization` layer at its start (`--scale` where it
has none: `none` for a model that takes 0..255, `unit` for /255, `symmetric` for [-1, 1]). Its last layer gives
the logits: a Dense with a softmax, a separate Softmax, or a Dense without one (a model trained
`from_logits=True`); the input of that Dense is its `features`, which the out-of-distribution score reads
(a SavedModel offers only its outputs, so its score reads the logits). The folder (`DIR/<class>/<images>`,
labels in sorted order, as `image_dataset_from_directory` names them) is scanned as `training.folder` scans
one, split the same way, and then nothing trains: the model is wrapped into the uint8 serving signature,
calibrated, given its out-of-distribution threshold and conformal sets on the folder's held-out part, its
accuracy measured there and recorded, and published as the next version of `--task` (`training.publish`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.core.imaging import ImageSpec
from training import arguments, augmentation, scan
from training.catalogue import Dataset
from training.config import RunConfig
from training.errors import TrainingError
from training.fitting import History
from training.layouts import ClassFolders, ScannedFolder
from training.metadata import git_commit
from training.publish import Trained, publish
from training.task import Architecture, Task

PROGRAM = "python -m training.adopt"
SCALES = {"none": (1.0, 0.0), "unit": (1 / 255, 0.0), "symmetric": (1 / 127.5, -1.0)}
EXIT_REFUSED = 2


def build_parser(task: Task) -> argparse.ArgumentParser:
    parser = arguments.build_parser(
        task, program=PROGRAM, description="Serve a Keras model trained elsewhere on the classes of a folder."
    )
    own = parser.add_argument_group("the model")
    own.add_argument("model", type=Path, help="a .keras or .h5 file, or a SavedModel directory")
    own.add_argument("--task", required=True, help="the task's name in the store and the API: [a-z][a-z0-9_]{0,63}")
    own.add_argument("--input-size", default=None, metavar="HxW", help="where the model's input shape has none")
    own.add_argument("--scale", choices=sorted(SCALES), default=None, help="where the model has no Rescaling layer")
    own.add_argument("--min-per-class", type=int, default=10, help="usable images a class needs at least")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        task, config, _ = prepare(argv)
        architecture = task.architecture(config)
        model = architecture.build(config, architecture.input, len(task.labels))
        data = task.load(config)
        out = publish(task.dataset, config, architecture.input, data, Trained(model, {}, 0.0), git_commit())
    except TrainingError as error:
        sys.exit(f"error: {error}")
    except KeyboardInterrupt:
        sys.exit("interrupted: nothing was published")
    except OSError as error:  # a full disk, a store that turned read-only: nothing half-written is left
        sys.exit(f"error: {error.strerror or error} ({error.filename or 'the model store'}); nothing was published")
    print(f"published {out}", flush=True)


def prepare(argv: Sequence[str]) -> tuple[Task, RunConfig, Any]:
    """Parse, load the model, scan the folder and check they agree; the task, the run's configuration and the
    loaded model. `TrainingError` (or exit code 2 after the scan's report) otherwise."""
    from training.folder import TASK_NAME, task_for

    template = task_for("task", [], None, Path("."))
    parser = build_parser(template)
    _, args = arguments.parse_with(parser, template, argv)
    if not TASK_NAME.fullmatch(args.task):
        parser.error(f"--task {args.task!r} is not a task name: a lower-case letter, then up to 63 of a-z, 0-9, _")
    if args.data_dir is None:
        parser.error("--data-dir is required: the folder of class folders")
    model = load(args.model)
    spec, scale = read_input(model, args.input_size, args.scale)
    report = scan.scan(args.data_dir, spec, min_per_class=args.min_per_class)
    print(scan.format_report(report), flush=True)
    if not report.ok:
        print(f"refused: {'; '.join(report.fatal)}", file=sys.stderr)
        sys.exit(EXIT_REFUSED)
    units = int(model.output_shape[-1])
    if units != len(report.labels):
        raise TrainingError(
            f"{args.model} outputs {units} classes, but {args.data_dir} holds {len(report.labels)} class folders "
            f"({', '.join(report.labels)}): they must match, in sorted folder order"
        )

    def build(config: RunConfig, input_spec: ImageSpec, num_classes: int) -> Any:
        return wrap(model, input_spec, scale)

    def fit(model_: Any, train: Any, val: Any, config: RunConfig) -> History:
        return {}  # trained elsewhere

    dataset = Dataset(
        name=args.task,
        title=args.data_dir.name,
        labels=tuple(report.labels),
        subject=f"a {' or a '.join(report.labels)}",
        folder=args.data_dir.name,
        layout=ScannedFolder(report) if report.kept else ClassFolders(None, 0.3),
        input=spec,
        augmentation=augmentation.none,
        validation_fraction=0.15,
    )
    task = Task(
        dataset, architectures={"adopted": Architecture(spec, build, fit, epochs=1)}, default_architecture="adopted"
    )
    config, _ = arguments.parse_with(build_parser(task), task, argv)
    return task, config, model


def rebuild(argv: Sequence[str]) -> tuple[Task, RunConfig]:
    """The task and configuration of a recorded adoption (`training.exported`)."""
    task, config, _ = prepare(argv)
    return task, config


def load(path: Path) -> Any:
    """The Keras model at `path`: a `.keras` or `.h5` file, or a SavedModel directory (as a layer of its
    serving signature). `TrainingError` with one sentence for anything else."""
    import keras

    if not path.exists():
        raise TrainingError(f"{path} does not exist")
    try:
        if path.is_dir():
            import tensorflow as tf

            signature = tf.saved_model.load(str(path)).signatures["serving_default"]
            specs = list(signature.structured_input_signature[1].values())
            if len(specs) != 1:
                raise TrainingError(f"{path}'s serving signature takes {len(specs)} inputs; adopt takes one (images)")
            layer = keras.layers.TFSMLayer(str(path), call_endpoint="serving_default")
            inputs = keras.Input(tuple(specs[0].shape[1:]), dtype=specs[0].dtype.name)
            outputs = layer(inputs)
            if isinstance(outputs, dict):
                if len(outputs) != 1:
                    raise TrainingError(f"{path}'s signature has outputs {sorted(outputs)}; adopt takes one")
                outputs = next(iter(outputs.values()))
            return keras.Model(inputs, outputs, name="saved_model")
        return keras.saving.load_model(str(path), compile=False)
    except TrainingError:
        raise
    except Exception as error:  # Keras and TensorFlow raise many types for files that are not models
        raise TrainingError(
            f"{path} is not a Keras model (.keras, .h5) or a TensorFlow SavedModel: {type(error).__name__}: {error}"
        ) from error


def read_input(model: Any, input_size: str | None, scale: str | None) -> tuple[ImageSpec, tuple[float, float] | None]:
    """The images the model takes (`ImageSpec`), and the scaling to add in front of it (None: the model scales
    its input itself)."""
    shape = tuple(model.input_shape)
    if len(shape) != 4:
        raise TrainingError(f"the model takes inputs of shape {shape}, not images [batch, height, width, channels]")
    _, height, width, channels = shape
    if input_size is not None:
        try:
            height, width = (int(side) for side in input_size.lower().split("x"))
        except ValueError as error:
            raise TrainingError(f"--input-size must be HxW, e.g. 180x180, got {input_size!r}") from error
    if height is None or width is None:
        raise TrainingError(f"the model's input shape {shape} has no fixed size; pass --input-size HxW")
    if channels not in (1, 3):
        raise TrainingError(f"the model takes {channels} channels; images are served with 1 (gray) or 3 (RGB)")
    spec = ImageSpec(height=int(height), width=int(width), channels=int(channels))
    scales_itself = any(
        type(layer).__name__ in ("Rescaling", "Normalization") for layer in getattr(model, "layers", [])[:4]
    )
    if scale is not None:
        return spec, SCALES[scale]
    if scales_itself:
        return spec, None
    raise TrainingError(
        "the model has no Rescaling or Normalization layer at its start, so what pixel range it takes cannot be "
        "read from it; pass --scale none (0..255), unit (0..1) or symmetric (-1..1)"
    )


def wrap(model: Any, spec: ImageSpec, scale: tuple[float, float] | None) -> Any:
    """The model with the layers every served model names (`training.model`): `features`, the input of its last
    Dense (its output where it has none to offer), and `logits`, then the softmax; the weights are the model's."""
    import keras
    from keras import layers

    inputs = keras.Input((spec.height, spec.width, spec.channels))
    x = layers.Rescaling(scale[0], offset=scale[1])(inputs) if scale is not None else inputs
    last = model.layers[-1]
    dense = last if isinstance(last, layers.Dense) else None
    if dense is None and len(model.layers) > 1 and isinstance(model.layers[-2], layers.Dense):
        dense = model.layers[-2]  # a Dense followed by a Softmax (or Activation) layer
    if dense is not None:
        body = keras.Model(model.inputs, dense.input)
        features = layers.Identity(name="features")(body(x))
        logits_layer = layers.Dense(dense.units, name="logits", dtype="float32")
        logits = logits_layer(features)
        logits_layer.set_weights(dense.get_weights())  # the same weights, without the softmax
    else:  # only outputs to read (a SavedModel): probabilities or logits, and the score reads them
        outputs = model(keras.ops.cast(x, model.inputs[0].dtype))
        features = layers.Identity(name="features")(outputs)
        if _outputs_probabilities(model, spec):
            logits = layers.Lambda(lambda p: keras.ops.log(keras.ops.maximum(p, 1e-7)), name="logits")(outputs)
        else:
            logits = layers.Identity(name="logits")(outputs)
    probabilities = layers.Softmax(name="probabilities", dtype="float32")(logits)
    return keras.Model(inputs, probabilities, name=f"{model.name}_adopted")


def _outputs_probabilities(model: Any, spec: ImageSpec) -> bool:
    """Whether the model's outputs are probabilities (rows in [0, 1] summing to 1 on a probe batch) rather
    than logits."""
    import numpy as np

    probe = np.random.default_rng(0).integers(0, 256, (4, spec.height, spec.width, spec.channels))
    outputs = np.asarray(model(probe.astype(model.inputs[0].dtype)), dtype=np.float64)
    return bool(outputs.min() >= 0 and outputs.max() <= 1 and np.allclose(outputs.sum(axis=1), 1, atol=1e-3))


if __name__ == "__main__":
    main()

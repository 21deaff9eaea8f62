"""From a trained Keras model to a served version: calibrate, choose the out-of-distribution score, export,
fit the guarantees, evaluate the export, draw the plots and write metadata.json.

Nothing here trains or knows how the model was trained: it needs the model (which names `features` and `logits`,
`training.model`), the splits it was trained on and the run's configuration. The temperature, the OOD detector
and the conformal method are fitted or chosen on the training and validation splits; the OOD threshold and the
conformal quantiles on the calibration split (`training.guarantee`), which chose nothing; the test split and the
report halves of the OOD sets only report. The figures recorded are the *exported* model's, reloaded from disk,
not the in-memory Keras model's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.core.imaging import ImageSpec
from training import calibration, guarantee, metadata, ood_fit, plots, store
from training.catalogue import Dataset
from training.config import RunConfig
from training.evaluation import check_served, classification_metrics, predict_in_batches
from training.export import export, forward_fn
from training.fitting import History
from training.model import heads
from training.splits import Splits

log = logging.getLogger("training")


@dataclass(frozen=True)
class Trained:
    """A trained Keras model, the history of its fit and how long the fit took."""

    model: Any
    history: History
    seconds: float


def publish(
    dataset: Dataset, config: RunConfig, spec: ImageSpec, data: Splits, trained: Trained, commit: str | None
) -> Path:
    """Write version `config.version` (default: the next) of `dataset`'s task under `config.output_dir` from
    `trained`, whose input is `spec`; returns its directory. `commit` is recorded as the code's commit."""
    import tensorflow as tf

    head_model = heads(trained.model)
    forward = tf.function(forward_fn(head_model, auto_invert=dataset.auto_invert))
    splits = {"train": data.train, "validation": data.validation, "test": data.test}
    measured = {name: predict_in_batches(forward, split.x) for name, split in splits.items()}
    temperature = calibration.fit_temperature(measured["validation"]["logits"], data.validation.y)
    log.info("temperature %.4f (fitted on %d validation images)", temperature, len(data.validation))
    ood = ood_fit.fit(dataset.name, config, spec, forward, measured, data.train.y, temperature)

    with store.staged(config.output_dir, dataset.name, config.version) as (version, out):
        signature = export(
            head_model, out, spec, auto_invert=dataset.auto_invert, temperature=temperature, detector=ood.detector
        )

        # Evaluate what will be served: the SavedModel reloaded from disk, not the in-memory Keras model.
        served = tf.saved_model.load(str(out)).signatures[signature["name"]]
        assert data.calibration is not None  # every catalogue dataset carves one (training.splits.carve_calibration)
        outputs = {
            name: predict_in_batches(served, split.x)
            for name, split in (("validation", data.validation), ("calibration", data.calibration), ("test", data.test))
        }
        served_test = outputs["test"]
        check_served(served_test, measured["test"], temperature, ood.detector)
        probabilities = served_test["probabilities"]
        metrics = classification_metrics(data.test.y, probabilities.argmax(axis=1), dataset.labels)
        metrics["split"] = data.test_source
        log.info("test accuracy %.4f on %d images", metrics["test_accuracy"], metrics["test_examples"])
        # The served graph's own outputs on the calibration split set the served threshold and quantiles.
        fitted = guarantee.fit(outputs, data, alpha=config.ood_alpha, delta=config.ood_delta, seed=config.seed)
        assert fitted.threshold is not None  # every model this project exports has an OOD score
        cutoff = fitted.threshold.value
        log.info("OOD threshold %.4g: %s", cutoff, fitted.threshold.guarantee())
        served_ood = {name: predict_in_batches(served, x)["ood_score"] for name, x in ood.report_sets.items()}
        test_scores = served_test["ood_score"]

        labels = list(dataset.labels)
        if trained.history.get("loss"):  # an adopted model was trained elsewhere: no curves to draw
            plots.training_curves(trained.history, out / "training_curves.png", title=f"{dataset.name} ({config.arch})")
        plots.confusion_matrix(np.asarray(metrics["confusion_matrix"]), labels, out / "confusion_matrix.png")
        plots.prediction_grid(
            data.test.x, data.test.y, probabilities, labels, out / "test_predictions.png", seed=config.seed
        )
        plots.reliability_diagram(
            calibration.reliability(calibration.softmax(measured["test"]["logits"]), data.test.y),
            calibration.reliability(probabilities, data.test.y),
            out / "reliability.png",
            temperature=temperature,
        )
        plots.ood_histogram(test_scores, served_ood, cutoff, out / "ood_scores.png", method=ood.chosen)

        record = metadata.build(
            dataset=dataset,
            config=config,
            spec=spec,
            version=version,
            signature=signature,
            parameters=int(trained.model.count_params()),
            metrics=metrics,
            temperature=temperature,
            calibration_test=calibration.summary(measured["test"]["logits"], data.test.y, temperature),
            ood=ood.metadata(cutoff, test_scores, served_ood) | fitted.ood_fields(test_scores),
            conformal=fitted.conformal,
            data=data,
            history=trained.history,
            seconds=trained.seconds,
            commit=commit,
        )
        if fitted.note:
            record["conformal_note"] = fitted.note
        metadata.write(out, record)
    final = out.parent / str(version)
    log.info("wrote %s", final)
    return final

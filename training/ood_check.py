"""Does an exported version flag unseen in-distribution images as often as its threshold rule predicts?

    python -m training.ood_check cats_vs_dogs --data-dir ../shared/datasets/cats_vs_dogs [--version N]
    python -m training.ood_check cats_vs_dogs --data-dir ... --images ~/photos/our-cats  # your own photos too

The out-of-distribution threshold is the k-th smallest of the n calibration split's scores, chosen so that
it flags at most `alpha` of genuine images with probability 1 - `delta` (`training.ood.pac_threshold`). On
new images of the task it flags more or fewer by chance, by how many images set the threshold and how many
are counted. If new images are drawn like the calibration images, the count flagged follows a known
distribution (`ood.flagged_count_distribution`). This prints, as JSON, the exported SavedModel's counts on
the training run's own test split (`training.exported`), and on the photos in each `--images` folder
(decoded as the service decodes uploads), beside that distribution: its 90% interval, the chance of flagging
at least as many as observed, the chance of flagging more than `--target` (the guarantee's alpha by
default), and a two-sample Kolmogorov-Smirnov test against the calibration scores, which looks for a shift
from them. A folder of
photos from another camera, place or breed mix that is flagged far beyond the interval is a shift the
threshold was not set for. Nothing is fitted or written: it measures what training exported.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training import exported
from training.config import PROJECT_ROOT
from training.errors import TrainingError
from training.evaluation import predict_in_batches
from training.images import IMAGE_SUFFIXES, decode_files, image_files
from training.ood import flagged_count_distribution, pac_threshold

log = logging.getLogger("training")


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m training.ood_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("task", help="a task of the model store: a built-in one, or one training.folder or adopt made")
    parser.add_argument("--data-dir", type=Path, default=None, help="the dataset, as for training")
    parser.add_argument("--model-dir", type=Path, default=PROJECT_ROOT / "models")
    parser.add_argument("--version", type=int, default=None, help="default: the highest")
    parser.add_argument(
        "--images",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="a folder of further in-distribution photos (searched recursively), reported beside the test split; "
        "repeatable",
    )
    parser.add_argument(
        "--target", type=float, default=None, help="flagged fraction not to exceed (default: the guarantee's alpha)"
    )
    args = parser.parse_args(argv)
    try:
        version = exported.load(exported.version_dir(args.model_dir, args.task, args.version), args.data_dir)
        groups = {"test": version.data.test.x} | {str(folder): _photos(folder, version) for folder in args.images}
        report = check(version, groups, target=args.target)
    except TrainingError as error:
        sys.exit(f"error: {error}")
    print(json.dumps(report, indent=2))


def check(version: exported.Exported, groups: dict[str, np.ndarray], *, target: float | None) -> dict[str, Any]:
    """The report described in the module docstring: each group of images (decoded arrays) against the rule."""
    import tensorflow as tf

    ood = version.metadata.ood
    if ood is None:
        raise TrainingError(f"{version.version_dir} has no out-of-distribution score")
    if ood.guarantee is None or version.data.calibration is None:
        raise TrainingError(f"{version.version_dir} records no calibrated guarantee (exported before the PAC rule)")
    served = tf.saved_model.load(str(version.version_dir)).signatures[version.metadata.signature.name]

    def scores(x: np.ndarray) -> np.ndarray:
        return predict_in_batches(served, x)[ood.output]

    calibration = scores(version.data.calibration.x)
    if not len(calibration):
        raise TrainingError(f"{version.version_dir}'s calibration split is empty: there is no rule to check")
    rule = pac_threshold(calibration, ood.guarantee.alpha, ood.guarantee.delta)
    goal = ood.guarantee.alpha if target is None else target
    return {
        "task": version.metadata.task,
        "version": version.metadata.version,
        "method": ood.method,
        "threshold": ood.threshold,
        # The rule applied to the scores on this machine (another CPU's arithmetic moves them by ~1e-7).
        "threshold_recomputed": rule.value,
        "guarantee": rule.guarantee(),
        "calibration": {"examples": len(calibration), "flagged": int(np.sum(calibration > ood.threshold))},
        **{name: against_rule(calibration, rule.k, scores(x), ood.threshold, goal) for name, x in groups.items()},
    }


def against_rule(calibration: np.ndarray, k: int, scores: np.ndarray, cutoff: float, target: float) -> dict[str, Any]:
    """How many of `scores` the threshold `cutoff` (the `k`-th smallest `calibration` score) flags, beside
    what it would flag if they were drawn like the calibration scores it was set on."""
    from scipy.stats import ks_2samp

    count, flagged = len(scores), int(np.sum(scores > cutoff))
    predicted = flagged_count_distribution(len(calibration), k, count)
    low, high = predicted.interval(0.90)
    ks = ks_2samp(calibration, scores)
    return {
        "examples": count,
        "flagged": flagged,
        "flagged_fraction": round(flagged / count, 4),
        "if_drawn_like_calibration": {
            "expected_flagged_fraction": round(float(predicted.mean()) / count, 4),
            "interval_90_flagged_fraction": [round(low / count, 4), round(high / count, 4)],
            "p_flagging_at_least_as_many": round(float(predicted.sf(flagged - 1)), 4),
            f"p_flagging_more_than_{target:g}": round(float(predicted.sf(np.floor(target * count + 1e-9))), 4),
        },
        "ks_against_calibration": {"statistic": round(float(ks.statistic), 4), "p_value": round(float(ks.pvalue), 4)},
    }


def _photos(folder: Path, version: exported.Exported) -> np.ndarray:
    """Every image file under `folder`, decoded at the model's input size as an upload would be."""
    files = image_files(folder)
    decoded = [image for image in decode_files(files, version.spec) if image is not None]
    if not decoded:
        raise TrainingError(f"{folder} holds no decodable image ({sorted(IMAGE_SUFFIXES)})")
    log.info("%s: %d images (%d files did not decode)", folder, len(decoded), len(files) - len(decoded))
    return np.stack(decoded)


if __name__ == "__main__":
    main()

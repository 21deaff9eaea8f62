"""Does an exported version flag its own unseen in-distribution images as often as its threshold rule predicts?

    python -m training.ood_check cats_vs_dogs --data-dir ../shared/datasets/cats_vs_dogs [--version N]

The out-of-distribution threshold keeps 95% of the validation images, so on new images of the task it flags
about 5%: more or fewer by chance, by how many images set the threshold and how many are counted. If the
test images are drawn like the validation images, the count flagged on the test split follows a known
distribution (`ood.flagged_count_distribution`). This prints, as JSON, the exported SavedModel's counts on the
training run's own splits (`training.exported`) beside that distribution: its 90% interval, the chance of
flagging at least as many as observed, the chance of flagging more than `--target` (the issue's 5%), and a
two-sample Kolmogorov-Smirnov test of validation against test scores, which looks for a shift between them.
Nothing is fitted or written: it measures what training exported.
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

from training import common, exported
from training.ood import flagged_count_distribution, threshold

log = logging.getLogger("training")


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m training.ood_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("task", choices=["flowers", "cats_vs_dogs", "fashion_mnist", "rps"])
    parser.add_argument("--data-dir", type=Path, default=None, help="the dataset, as for training")
    parser.add_argument("--model-dir", type=Path, default=common.PROJECT_ROOT / "models")
    parser.add_argument("--version", type=int, default=None, help="default: the highest")
    parser.add_argument("--target", type=float, default=0.05, help="flagged fraction of the test split not to exceed")
    args = parser.parse_args(argv)
    try:
        version = exported.load(exported.version_dir(args.model_dir, args.task, args.version), args.data_dir)
        report = check(version, target=args.target)
    except common.TrainingError as error:
        sys.exit(f"error: {error}")
    print(json.dumps(report, indent=2))


def check(version: exported.Exported, *, target: float) -> dict[str, Any]:
    """The report described in the module docstring, for one exported version."""
    import tensorflow as tf
    from scipy.stats import ks_2samp

    ood = version.metadata.ood
    if ood is None:
        raise common.TrainingError(f"{version.version_dir} has no out-of-distribution score")
    served = tf.saved_model.load(str(version.version_dir)).signatures[version.metadata.signature.name]
    validation, test = (
        common.predict_in_batches(served, x)[ood.output] for x in (version.data.x_val, version.data.x_test)
    )
    cutoff = ood.threshold
    flagged = int(np.sum(test > cutoff))
    predicted = flagged_count_distribution(len(validation), len(test))
    low, high = predicted.interval(0.90)
    most_within_target = int(np.floor(target * len(test) + 1e-9))
    ks = ks_2samp(validation, test)
    return {
        "task": version.metadata.task,
        "version": version.metadata.version,
        "method": ood.method,
        "threshold": cutoff,
        # The rule applied to the scores on this machine (another CPU's arithmetic moves them by ~1e-7).
        "threshold_recomputed": threshold(validation),
        "validation": {"examples": len(validation), "flagged": int(np.sum(validation > cutoff))},
        "test": {"examples": len(test), "flagged": flagged, "flagged_fraction": round(flagged / len(test), 4)},
        "if_test_is_drawn_like_validation": {
            "expected_flagged_fraction": round(float(predicted.mean()) / len(test), 4),
            "interval_90_flagged_fraction": [round(low / len(test), 4), round(high / len(test), 4)],
            "p_flagging_at_least_as_many": round(float(predicted.sf(flagged - 1)), 4),
            f"p_flagging_more_than_{target:g}": round(float(predicted.sf(most_within_target)), 4),
        },
        "ks_validation_vs_test": {"statistic": round(float(ks.statistic), 4), "p_value": round(float(ks.pvalue), 4)},
    }


if __name__ == "__main__":
    main()

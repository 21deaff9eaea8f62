"""Shrink SavedModels exported before `training.export` compacted them (same weights, same outputs):

    python -m training.compact models/flowers/1 [more version directories]

Each directory's SavedModel is rewritten in place, keeping `metadata.json` and the plots; the outputs on
a random batch are checked to be identical before the original is replaced.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np

from training.export import compact_saved_model


def compact_in_place(version_dir: Path) -> None:
    import tensorflow as tf

    before = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    shape = [d or 2 for d in before.structured_input_signature[1]["images"].shape.as_list()]
    batch = tf.constant(np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8))
    expected = before(images=batch)["probabilities"].numpy()
    with tempfile.TemporaryDirectory(dir=version_dir.parent) as staging:
        compact_saved_model(version_dir, Path(staging) / "model")
        actual = tf.saved_model.load(str(Path(staging) / "model")).signatures["serving_default"](images=batch)
        if not np.array_equal(actual["probabilities"].numpy(), expected):
            raise SystemExit(f"error: compacted {version_dir} answers differently; left unchanged")
        for name in ("saved_model.pb", "fingerprint.pb", "variables", "assets"):
            target = version_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            if (Path(staging) / "model" / name).exists():
                shutil.move(str(Path(staging) / "model" / name), target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("version_dirs", type=Path, nargs="+")
    for version_dir in parser.parse_args().version_dirs:
        compact_in_place(version_dir)
        print(f"compacted {version_dir}")


if __name__ == "__main__":
    main()

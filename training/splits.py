"""Train / validation / test splits of in-memory images, and the seeded rules that make them.

Every split is reproducible from its seed: `training.exported` rebuilds a past run's splits from the seed and
fractions its metadata records, so a rule here must never change what a given seed selects.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from training.errors import DatasetError


@dataclass(frozen=True, eq=False)
class Split:
    """Images `x` (uint8 `[n, H, W, C]`, as the service's `load_image` decodes them) and their labels `y`
    (int64 `[n]`, indices into the task's labels)."""

    x: np.ndarray
    y: np.ndarray
    index: np.ndarray | None = None  # each image's position in the loader's list of files, where it keeps one

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, indices: np.ndarray) -> Split:
        return Split(self.x[indices], self.y[indices], None if self.index is None else self.index[indices])


@dataclass(frozen=True, eq=False)
class Splits:
    """What a dataset's loader returns. `train` fits the weights; `validation` decides early stopping, the
    calibration temperature and every choice of method (the OOD score, the conformal method); `calibration`,
    images that chose nothing, sets the out-of-distribution threshold and the conformal quantiles, so their
    guarantees hold; `test` only reports, and `test_source` says where it came from (metadata.json's
    `metrics.split`). A layout returns the held-out images as `test` (with `test_groups` where they come in
    groups of near-duplicates); `carve_calibration` then moves part of them to `calibration`."""

    train: Split
    validation: Split
    test: Split
    test_source: str
    skipped_files: int = 0  # files that did not decode, in any split
    calibration: Split | None = None
    calibration_source: str = ""
    test_groups: tuple[str, ...] | None = None

    def limited(self, limit: int | None, seed: int) -> Splits:
        """At most `limit` training images, a seeded random subset (loaders return them ordered by class,
        so the first `limit` would miss classes); the other splits unchanged."""
        if limit is None:
            return self
        subset = np.random.default_rng(seed).permutation(len(self.train))[:limit]
        return dataclasses.replace(self, train=self.train.subset(subset))


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (rest, held_out) with `fraction` of every class held out, reproducibly for `seed`."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        held.append(members[: max(1, round(fraction * len(members)))])
    held_out = np.sort(np.concatenate(held))
    rest = np.setdiff1d(np.arange(len(y)), held_out)
    return rest, held_out


def grouped_split(groups: Sequence[str], y: np.ndarray, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (rest, held_out): `per_class` whole groups of every class held out, chosen reproducibly for
    `seed`. When the images of a group are near-duplicates (one rendered hand, one photo session), a
    random split leaks them into validation, which then says nothing about unseen groups."""
    rng = np.random.default_rng(seed)
    groups_array = np.asarray(groups)
    held: list[np.ndarray] = []
    for label in np.unique(y):
        names = sorted(set(groups_array[y == label]))
        if len(names) <= per_class:
            raise DatasetError(
                f"class {label} has {len(names)} group(s); holding out {per_class} leaves none to train on"
            )
        for name in rng.choice(names, size=per_class, replace=False):
            held.append(np.flatnonzero((groups_array == name) & (y == label)))
    held_out = np.sort(np.concatenate(held))
    return np.setdiff1d(np.arange(len(y)), held_out), held_out


def carve_validation(
    labelled: Split, test: Split, *, fraction: float, seed: int, test_source: str, skipped_files: int = 0
) -> Splits:
    """Splits for a dataset with its own test set: a seeded, stratified `fraction` of the `labelled` images
    becomes the validation split, the rest the training split."""
    train, validation = stratified_split(labelled.y, fraction, seed)
    return Splits(
        labelled.subset(train), labelled.subset(validation), test, test_source=test_source, skipped_files=skipped_files
    )


CALIBRATION_FRACTION = 0.5  # of the held-out images: half calibrate the guarantees, half test them


def carve_calibration(splits: Splits, *, fraction: float = CALIBRATION_FRACTION, seed: int) -> Splits:
    """Move a seeded, stratified `fraction` of the test split to the calibration split: whole groups of each
    class where the test images come in groups (`test_groups`), since near-duplicates on both sides would
    make the test split vouch for the calibration. Neither half trains or chooses anything."""
    y = splits.test.y
    rng = np.random.default_rng(seed)
    if splits.test_groups is None:
        chosen_per_class: list[np.ndarray] = []
        for label in np.unique(y):  # `stratified_split`'s draws, keeping at least one test image per class
            members = rng.permutation(np.flatnonzero(y == label))
            chosen_per_class.append(members[: min(len(members) - 1, max(1, round(fraction * len(members))))])
        held = np.sort(np.concatenate(chosen_per_class))
        rest = np.setdiff1d(np.arange(len(y)), held)
        how = f"a seeded, stratified {fraction:.0%} of the held-out images (seed {seed})"
    else:
        groups = np.asarray(splits.test_groups)
        chosen: list[np.ndarray] = []
        for label in np.unique(y):
            names = list(rng.permutation(sorted(set(groups[y == label]))))
            if len(names) < 2:
                raise DatasetError(f"class {label} has {len(names)} held-out group(s); calibration needs one of two")
            members = np.flatnonzero(y == label)
            target, taken = fraction * len(members), 0
            while names and taken < target and len(names) > 1:
                name = names.pop()
                group = np.flatnonzero((groups == name) & (y == label))
                chosen.append(group)
                taken += len(group)
        held = np.sort(np.concatenate(chosen))
        rest = np.setdiff1d(np.arange(len(y)), held)
        how = f"whole groups of the held-out images, about {fraction:.0%} of each class (seed {seed})"
    return dataclasses.replace(
        splits,
        calibration=splits.test.subset(held),
        calibration_source=f"{how}, never used in training or to choose anything",
        test=splits.test.subset(rest),
        test_source=f"{splits.test_source}; the other {1 - fraction:.0%} of it is the calibration split",
        test_groups=None if splits.test_groups is None else tuple(np.asarray(splits.test_groups)[rest]),
    )

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

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, indices: np.ndarray) -> Split:
        return Split(self.x[indices], self.y[indices])


@dataclass(frozen=True, eq=False)
class Splits:
    """What a dataset's loader returns. `train` fits the weights; `validation` decides early stopping, the
    calibration temperature and the out-of-distribution threshold; `test` only reports, and `test_source`
    says where it came from (metadata.json's `metrics.split`)."""

    train: Split
    validation: Split
    test: Split
    test_source: str
    skipped_files: int = 0  # files that did not decode, in any split

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

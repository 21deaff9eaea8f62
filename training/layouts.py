"""How a dataset's files lie on disk, and how its train / validation / test splits are made from them.

A layout knows nothing of any one dataset: the catalogue (`training.catalogue`) gives it the class folders, the
download addresses and the test split's description. Each layout offers two things:

- `load(directory, classes, spec, seed=, validation_fraction=)`: the splits, decoded at `spec`, from a local
  copy at `directory`, or downloaded when `directory` is None. `classes` are the class folders, in label order.
- `sample(directory, count, rng)`: up to `count` of its images, chosen by `rng`, as encoded files (what a user
  would upload), for other tasks' out-of-distribution sets (`training.ood_sets`).

A layout that holds out a fraction for validation needs `validation_fraction`; one that holds out whole groups
of near-identical images ignores it, and its dataset offers no `--validation-fraction`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from app.core.imaging import ImageSpec
from training import idx
from training.download import Remote
from training.errors import DatasetError
from training.images import image_files, load_image_folder, load_image_folder_with_paths, png
from training.scan import ScanReport
from training.splits import Split, Splits, carve_validation, grouped_split, stratified_split


class Layout(Protocol):
    def load(
        self,
        directory: Path | None,
        classes: Sequence[str],
        spec: ImageSpec,
        *,
        seed: int,
        validation_fraction: float | None,
    ) -> Splits: ...

    def sample(self, directory: Path | None, count: int, rng: np.random.Generator) -> list[bytes]: ...


@dataclass(frozen=True)
class ClassFolders:
    """One folder of class folders and no test split of its own (tf_flowers, or any folder of labelled
    images): a seeded, stratified `test_fraction` becomes the test split, then `validation_fraction` of all
    the images is drawn from the rest, so the test split does not depend on the validation fraction."""

    remote: Remote | None  # None: there is no public copy, a local directory is required
    test_fraction: float

    def load(
        self,
        directory: Path | None,
        classes: Sequence[str],
        spec: ImageSpec,
        *,
        seed: int,
        validation_fraction: float | None,
    ) -> Splits:
        x, y, skipped = load_image_folder(self._root(directory), classes, spec)
        images = Split(x, y)
        rest, test = stratified_split(y, self.test_fraction, seed)
        # The validation fraction counts all the images; it is drawn from those outside the test split.
        fraction = _required(validation_fraction) / (1 - self.test_fraction)
        train, validation = stratified_split(y[rest], fraction, seed + 1)
        return Splits(
            images.subset(rest[train]),
            images.subset(rest[validation]),
            images.subset(test),
            test_source=f"seeded stratified {self.test_fraction:.0%} of the images (seed {seed}), never used in training",
            skipped_files=skipped,
        )

    def sample(self, directory: Path | None, count: int, rng: np.random.Generator) -> list[bytes]:
        return _sample_files(_existing(directory) if directory is not None else self._root(None), count, rng)

    def _root(self, directory: Path | None) -> Path:
        if directory is not None:
            return directory
        if self.remote is None:
            raise DatasetError("this dataset has no public copy to download; pass --data-dir")
        return self.remote.fetch()


@dataclass(frozen=True)
class SplitFolders:
    """A training folder and a test folder, each of class folders (`train/`, `test/` of a local copy; a
    download may ship them as two archives). Validation is a seeded, stratified fraction of the training
    folder or, with `group`, `groups_per_class` whole groups of each class: `group` names a file's group
    (the rendered hand of an rps frame), whose images are too alike to sit on both sides of a split."""

    train: str
    test: str
    train_remote: Remote
    test_remote: Remote
    test_source: str
    group: Callable[[Path], str] | None = None
    groups_per_class: int = 1

    def load(
        self,
        directory: Path | None,
        classes: Sequence[str],
        spec: ImageSpec,
        *,
        seed: int,
        validation_fraction: float | None,
    ) -> Splits:
        if directory is not None:
            train_root, test_root = directory / self.train, directory / self.test
        else:
            train_root, test_root = self.train_remote.fetch(), self.test_remote.fetch()
        x, y, skipped_train, paths = load_image_folder_with_paths(train_root, classes, spec)
        x_test, y_test, skipped_test, test_paths = load_image_folder_with_paths(test_root, classes, spec)
        labelled, test, skipped = Split(x, y), Split(x_test, y_test), skipped_train + skipped_test
        if self.group is None:
            return carve_validation(
                labelled,
                test,
                fraction=_required(validation_fraction),
                seed=seed,
                test_source=self.test_source,
                skipped_files=skipped,
            )
        groups = [self.group(path) for path in paths]
        train, validation = grouped_split(groups, y, per_class=self.groups_per_class, seed=seed)
        test_groups = tuple(self.group(path) for path in test_paths)
        return Splits(
            labelled.subset(train),
            labelled.subset(validation),
            test,
            self.test_source,
            skipped,
            test_groups=test_groups,
        )

    def sample(self, directory: Path | None, count: int, rng: np.random.Generator) -> list[bytes]:
        # A local copy is sampled whole; without one, only the (smaller) test download is fetched.
        root = self.test_remote.fetch() if directory is None else _existing(directory)
        return _sample_files(root, count, rng)


@dataclass(frozen=True)
class IdxFiles:
    """Gzipped IDX files (`training.idx`), a training pair and a test pair (images, labels) in one folder, or
    downloaded one by one from `base_url`. Validation is a seeded, stratified fraction of the training pair.
    The images are used at their stored size, which must be the model's input (`spec`)."""

    base_url: str
    train: tuple[str, str]
    test: tuple[str, str]
    test_source: str

    def load(
        self,
        directory: Path | None,
        classes: Sequence[str],
        spec: ImageSpec,
        *,
        seed: int,
        validation_fraction: float | None,
    ) -> Splits:
        labelled, test = self.read(directory, self.train), self.read(directory, self.test)
        if labelled.x.shape[1:] != (spec.height, spec.width, spec.channels):
            raise ValueError(f"IDX images are {labelled.x.shape[1:]}, the model takes {spec}")
        return carve_validation(
            labelled, test, fraction=_required(validation_fraction), seed=seed, test_source=self.test_source
        )

    def sample(self, directory: Path | None, count: int, rng: np.random.Generator) -> list[bytes]:
        images = self.read(directory, self.test).x
        chosen = rng.choice(len(images), size=min(count, len(images)), replace=False)
        return [png(Image.fromarray(images[i, :, :, 0], mode="L")) for i in chosen]

    def read(self, directory: Path | None, pair: tuple[str, str]) -> Split:
        """One (images, labels) pair of files, from `directory` or downloaded."""
        paths = []
        for name in pair:
            if directory is None:
                paths.append(Remote(self.base_url + name, name, extract=False).fetch())
            elif (directory / name).is_file():
                paths.append(directory / name)
            else:
                files = [*self.train, *self.test]
                raise DatasetError(f"{directory} must hold the four official IDX files {files}; missing {name}")
        x, y = idx.read_images(paths[0]), idx.read_labels(paths[1])
        if len(x) != len(y):
            raise DatasetError(f"{paths[0].name} has {len(x)} images but {paths[1].name} {len(y)} labels")
        return Split(x, y)


def _required(validation_fraction: float | None) -> float:
    if validation_fraction is None:
        raise ValueError("this layout holds out a fraction of the images for validation; none was given")
    return validation_fraction


def _existing(directory: Path) -> Path:
    if not directory.is_dir():
        raise DatasetError(f"{directory} does not exist")
    return directory


def _sample_files(root: Path, count: int, rng: np.random.Generator) -> list[bytes]:
    files = image_files(root)
    if not files:
        raise DatasetError(f"no image files under {root}")
    chosen = rng.choice(len(files), size=min(count, len(files)), replace=False)
    return [files[i].read_bytes() for i in chosen]


@dataclass(frozen=True)
class ScannedFolder:
    """A user's folder of class folders, already scanned (`training.scan`): the kept images, decoded at the
    model's input, split as `ClassFolders` splits (a seeded, stratified `held_out_fraction` is held out, the
    rest gives the validation split), so that the held-out part, cut in two by the catalogue into calibration
    and test, is large enough for the guarantees (the PAC threshold needs at least 45 calibration images).
    The scan decides what is an image; `load` never decodes again, so a file the scan kept is what trains."""

    report: ScanReport
    held_out_fraction: float = 0.3

    def load(
        self,
        directory: Path | None,
        classes: Sequence[str],
        spec: ImageSpec,
        *,
        seed: int,
        validation_fraction: float | None,
    ) -> Splits:
        if spec != self.report.spec:
            raise ValueError(f"the folder was scanned at {self.report.spec}, the model takes {spec}")
        x, y = self.report.arrays()
        images = Split(x, y, np.arange(len(y)))  # positions in `report.kept`, for the review list
        rest, test = stratified_split(y, self.held_out_fraction, seed)
        fraction = _required(validation_fraction) / (1 - self.held_out_fraction)
        train, validation = stratified_split(y[rest], fraction, seed + 1)
        return Splits(
            images.subset(rest[train]),
            images.subset(rest[validation]),
            images.subset(test),
            test_source=f"seeded stratified {self.held_out_fraction:.0%} of the usable images (seed {seed}), "
            "never used in training",
            skipped_files=len(self.report.rejected),
        )

    def sample(self, directory: Path | None, count: int, rng: np.random.Generator) -> list[bytes]:
        kept = self.report.kept
        chosen = rng.choice(len(kept), size=min(count, len(kept)), replace=False)
        return [kept[i].path.read_bytes() for i in chosen]

"""A review list after training: the images most likely filed in the wrong class, and the near-duplicates
across splits, found on the backbone's features.

Label issues are cleanlab's confident learning (`cleanlab.filter.find_label_issues`, Northcutt et al. 2021)
on out-of-fold predicted probabilities: a multinomial logistic regression on the standardized features (a
linear probe), fitted by stratified k-fold cross-validation, so that every image is scored by a classifier
that never saw its label. Its regularization C is the one of `C_GRID` whose out-of-fold probabilities have
the lowest log loss: on 1280-d EfficientNet-Lite0 features of 750 flower photos with 5% of the labels flipped,
that choice (C = 0.01) found 85% of the flipped ones with 65% of the reports flipped ones, where C = 1 found
90% but reported twice as many as there were. An image is reported when its given label is confidently
contradicted (cleanlab's default "prune_by_noise_rate"), ranked by self-confidence, the out-of-fold
probability of the given label (lowest first); the suggested label is the out-of-fold argmax. Confident
learning is conservative: it counts an image as mislabelled only if the probability of another class reaches
that class's mean, so expect most of the wrong labels, not all (85-90% of them in the measurements above and
on synthetic clusters), and few false alarms.

Near-duplicates are pairs of images of different splits whose L2-normalised features have a cosine
similarity of at least `duplicate_similarity`. A test image with a near-twin in train inflates the test
accuracy; a calibration one weakens the guarantees fitted on the calibration split. Pairs inside one split
are not reported: they only weight the training, they do not leak.

`review` returns a `Review`; `Review.write` puts `review.csv` and `review.png` (a contact sheet) in the run
directory and `Review.summary` gives the lines for the console.
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cleanlab.filter import find_label_issues
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from training.contact_sheet import contact_sheet

SPLIT_ORDER = ("train", "validation", "calibration", "test")
C_GRID = (1.0, 0.1, 0.01, 0.001)  # the probe's inverse regularization, chosen by out-of-fold log loss
HELD_OUT = frozenset({"test", "calibration"})  # the splits a near-twin in train makes say too much
MAX_DUPLICATES = 10_000  # the pairs kept (the most similar), so degenerate features cannot exhaust memory
SHEET_LIMIT = 48  # findings on the contact sheet
THUMBNAIL = 128  # px, the side of a contact sheet's thumbnail
CSV_HEADER = ("kind", "path", "other_path", "given", "suggested", "score", "split", "other_split")
_CHUNK = 512  # rows of a similarity block: 512 x 10k float32 is 20 MB


@dataclass(frozen=True)
class LabelIssue:
    """An image whose given label the out-of-fold classifier confidently contradicts.

    `rank` is 1 for the most suspicious; `self_confidence` is the out-of-fold probability of `given`."""

    index: int
    path: Path
    split: str
    given: int
    suggested: int
    self_confidence: float
    rank: int


@dataclass(frozen=True)
class NearDuplicate:
    """Two images of different splits with nearly the same features.

    `path` is the one in the later split of `SPLIT_ORDER` (the held-out side: test before calibration before
    validation before train; unknown split names come last, by name), `other_path` the earlier one."""

    index: int
    other_index: int
    path: Path
    other_path: Path
    split: str
    other_split: str
    label: int
    other_label: int
    similarity: float

    @property
    def leaks(self) -> bool:
        """True if this pair joins train to test or calibration (inflated accuracy, weakened guarantees)."""
        return self.other_split == "train" and self.split in HELD_OUT


@dataclass(frozen=True)
class Review:
    """The findings of `review`. `label_issues` are ranked (most suspicious first), `near_duplicates` sorted by
    similarity (highest first; at most `MAX_DUPLICATES` of the `duplicates_found`). `skipped` says why the
    label-issue search did not run ("" if it did); `folds` is the number of folds it used and `c` the probe's
    regularization (both 0 if skipped)."""

    label_issues: tuple[LabelIssue, ...]
    near_duplicates: tuple[NearDuplicate, ...]
    label_names: tuple[str, ...]
    images: int
    folds: int
    c: float
    skipped: str
    duplicate_similarity: float
    duplicates_found: int

    @property
    def leaks(self) -> tuple[NearDuplicate, ...]:
        """The near-duplicates that join train to test or calibration."""
        return tuple(pair for pair in self.near_duplicates if pair.leaks)

    def write(self, run_dir: Path) -> list[Path]:
        """Write `review.csv` and `review.png` in `run_dir` (created if missing) and return their paths.

        The CSV has the header `CSV_HEADER` and one row per finding: the label issues in rank order, then the
        near-duplicates by similarity. A label issue's `score` is its self-confidence and `given`/`suggested`
        are label names; a near-duplicate's `score` is the cosine similarity, `given` the label of `path` and
        `suggested` empty. The contact sheet shows the first findings (at most `SHEET_LIMIT`); an image that
        cannot be read gets a gray tile, never an exception."""
        run_dir.mkdir(parents=True, exist_ok=True)
        csv_path = run_dir / "review.csv"
        with csv_path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(CSV_HEADER)
            for issue in self.label_issues:
                writer.writerow(
                    (
                        "label_issue",
                        str(issue.path),
                        "",
                        self.label_names[issue.given],
                        self.label_names[issue.suggested],
                        f"{issue.self_confidence:.6f}",
                        issue.split,
                        "",
                    )
                )
            for pair in self.near_duplicates:
                writer.writerow(
                    (
                        "near_duplicate",
                        str(pair.path),
                        str(pair.other_path),
                        self.label_names[pair.label],
                        "",
                        f"{pair.similarity:.6f}",
                        pair.split,
                        pair.other_split,
                    )
                )
        sheet_path = run_dir / "review.png"
        contact_sheet(self._sheet_tiles(), THUMBNAIL).save(sheet_path)
        return [csv_path, sheet_path]

    def summary(self, limit: int = 10) -> str:
        """A few lines for the console: the counts, then the first `limit` findings of each kind with paths."""
        lines: list[str] = []
        if self.skipped:
            lines.append(f"Label issues: not searched, {self.skipped}.")
        else:
            lines.append(
                f"Label issues: {len(self.label_issues)} of {self.images} images look filed in the wrong class "
                f"(cleanlab on {self.folds}-fold out-of-fold predictions of a logistic regression on the features, "
                f"C = {self.c:g})."
            )
            for issue in self.label_issues[:limit]:
                lines.append(
                    f"  {issue.rank}. {issue.path} ({issue.split}): given {self.label_names[issue.given]!r}, "
                    f"looks like {self.label_names[issue.suggested]!r} (p(given) = {issue.self_confidence:.3f})"
                )
            if len(self.label_issues) > limit:
                lines.append(f"  ... and {len(self.label_issues) - limit} more in review.csv")
        found = self.duplicates_found
        kept = "" if found == len(self.near_duplicates) else f" ({len(self.near_duplicates)} kept)"
        lines.append(
            f"Near-duplicates across splits: {found} pair{'' if found == 1 else 's'}{kept} at cosine similarity "
            f">= {self.duplicate_similarity:g}."
        )
        leaks = len(self.leaks)
        if leaks:
            lines.append(
                f"  {leaks} of them {'joins' if leaks == 1 else 'join'} train to test or calibration: a test image "
                "seen in training inflates the test accuracy, a calibration one weakens the guarantees fitted on "
                "it. Remove one image of each."
            )
        for pair in self.near_duplicates[:limit]:
            lines.append(
                f"  {pair.path} ({pair.split}) ~ {pair.other_path} ({pair.other_split}): {pair.similarity:.3f}"
            )
        if len(self.near_duplicates) > limit:
            lines.append(f"  ... and {len(self.near_duplicates) - limit} more in review.csv")
        return "\n".join(lines)

    def _sheet_tiles(self) -> list[tuple[Path, tuple[str, str, str]]]:
        """The contact sheet's tiles: label issues and duplicates sharing `SHEET_LIMIT`, half each at least
        when both have more (so neither kind hides the other)."""
        issues, pairs = self.label_issues, self.near_duplicates
        n_issues = min(len(issues), max(SHEET_LIMIT - len(pairs), SHEET_LIMIT // 2))
        n_pairs = min(len(pairs), SHEET_LIMIT - n_issues)
        tiles = [
            (
                issue.path,
                (
                    issue.path.name,
                    f"{self.label_names[issue.given]} -> {self.label_names[issue.suggested]}",
                    f"p(given) {issue.self_confidence:.3f}",
                ),
            )
            for issue in issues[:n_issues]
        ]
        tiles += [
            (
                pair.path,
                (
                    pair.path.name,
                    f"duplicate of {pair.other_path.name}",
                    f"cos {pair.similarity:.3f} ({pair.split}/{pair.other_split})",
                ),
            )
            for pair in pairs[:n_pairs]
        ]
        return tiles


def review(
    features: np.ndarray,
    labels: np.ndarray,
    paths: Sequence[Path],
    split: Sequence[str],
    label_names: Sequence[str],
    *,
    seed: int,
    folds: int = 5,
    duplicate_similarity: float = 0.97,
) -> Review:
    """Search `n` images for label issues and for near-duplicates across splits (see the module docstring).

    `features` is [n, d] of finite floats (the backbone's), `labels` [n] ints in [0, len(label_names)),
    `paths` and `split` one per image (split names such as "train", "validation", "calibration", "test").
    The search is deterministic for a given `seed` (the folds' shuffle). Fewer folds than `folds` are used if
    a class has fewer images than that; if a class has a single image, or there is a single class, the
    label-issue search is skipped and `Review.skipped` says why. Raises ValueError for inconsistent inputs."""
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    n = len(x)
    if x.ndim != 2 or n == 0:
        raise ValueError(f"features must be a non-empty [n, d] array, got shape {x.shape}")
    if y.shape != (n,) or len(paths) != n or len(split) != n:
        raise ValueError(f"{n} feature rows, but {y.shape} labels, {len(paths)} paths and {len(split)} split names")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= len(label_names):
        raise ValueError(f"labels must be ints in [0, {len(label_names)})")
    if not np.isfinite(x).all():
        raise ValueError("features must be finite")
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    if not 0.0 < duplicate_similarity <= 1.0:
        raise ValueError(f"duplicate_similarity must be in (0, 1], got {duplicate_similarity}")
    image_paths = [Path(p) for p in paths]
    split_names = [str(s) for s in split]
    names = tuple(str(name) for name in label_names)

    issues, used_folds, c, skipped = _label_issues(x, y, image_paths, split_names, names, seed=seed, folds=folds)
    pairs, found = _near_duplicates(x, y, image_paths, split_names, duplicate_similarity)
    return Review(
        label_issues=issues,
        near_duplicates=pairs,
        label_names=names,
        images=n,
        folds=used_folds,
        c=c,
        skipped=skipped,
        duplicate_similarity=duplicate_similarity,
        duplicates_found=found,
    )


def _label_issues(
    x: np.ndarray,
    y: np.ndarray,
    paths: list[Path],
    split: list[str],
    names: tuple[str, ...],
    *,
    seed: int,
    folds: int,
) -> tuple[tuple[LabelIssue, ...], int, float, str]:
    """The ranked label issues, the folds and C used, and why the search was skipped ("" if it ran)."""
    present, compact = np.unique(y, return_inverse=True)
    if len(present) < 2:
        return (), 0, 0.0, f"all {len(y)} images are in one class ({names[present[0]]!r})"
    counts = np.bincount(compact)
    lonely = [names[present[k]] for k in np.flatnonzero(counts < 2)]
    if lonely:
        reason = f"cross-validation needs 2 images per class at least, and {', '.join(map(repr, lonely))} has 1"
        return (), 0, 0.0, reason
    used_folds = int(min(folds, counts.min()))
    # Labels are compacted to the classes present (cleanlab's columns must be 0..K-1), then mapped back.
    # The same folds for every C, so that their log losses compare the regularization and nothing else.
    cv = StratifiedKFold(used_folds, shuffle=True, random_state=seed)
    best: tuple[float, float, np.ndarray] | None = None
    for c in C_GRID:
        # Standardized: the backbone's dimensions have very different ranges, and lbfgs converges far faster
        # on standardized ones (and C then means the same on every backbone).
        classifier = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000))
        with warnings.catch_warnings():
            # Separable features keep lbfgs iterating towards infinite weights; the probabilities it has by
            # then rank the labels just as well, so the warning would only be noise in the training log.
            warnings.simplefilter("ignore", ConvergenceWarning)
            probabilities = cross_val_predict(classifier, x, compact, cv=cv, method="predict_proba")
        loss = float(log_loss(compact, probabilities, labels=np.arange(len(present))))
        if best is None or loss < best[0]:
            best = (loss, c, probabilities)
    assert best is not None  # C_GRID is not empty
    _, chosen_c, pred_probs = best
    # n_jobs=1: cleanlab would otherwise fork a pool per call, which is slow for this size and unsafe in a
    # process that runs TensorFlow's threads.
    ranked = find_label_issues(compact, pred_probs, return_indices_ranked_by="self_confidence", n_jobs=1)
    suggested = present[np.argmax(pred_probs, axis=1)]
    issues = tuple(
        LabelIssue(
            index=int(i),
            path=paths[i],
            split=split[i],
            given=int(y[i]),
            suggested=int(suggested[i]),
            self_confidence=float(pred_probs[i, compact[i]]),
            rank=rank,
        )
        for rank, i in enumerate(ranked, start=1)
    )
    return issues, used_folds, chosen_c, ""


def _split_rank(name: str) -> tuple[int, str]:
    """The order of `SPLIT_ORDER`, unknown names after it by name."""
    return (SPLIT_ORDER.index(name) if name in SPLIT_ORDER else len(SPLIT_ORDER), name)


def _near_duplicates(
    x: np.ndarray, y: np.ndarray, paths: list[Path], split: list[str], threshold: float
) -> tuple[tuple[NearDuplicate, ...], int]:
    """The pairs of different splits with cosine similarity >= `threshold`, most similar first (at most
    `MAX_DUPLICATES`), and how many there are in all."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    # float32: half the memory and twice the BLAS speed; its error (~1e-6) is far below any useful threshold.
    # A zero vector stays zero, similar to nothing.
    unit = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0).astype(np.float32)
    split_arr = np.asarray(split, dtype=object)
    order = sorted(set(split), key=_split_rank)
    groups = {name: np.flatnonzero(split_arr == name) for name in order}
    later_all = np.zeros(0, np.int64)
    earlier_all = np.zeros(0, np.int64)
    sim_all = np.zeros(0, np.float32)
    found = 0
    # Only blocks of two different splits are computed, each pair once: rows from the later split, columns
    # from the earlier one, which is also the orientation of `NearDuplicate`.
    for a_pos, earlier in enumerate(order):
        columns = groups[earlier]
        block = unit[columns].T
        for later in order[a_pos + 1 :]:
            rows_all = groups[later]
            for start in range(0, len(rows_all), _CHUNK):
                rows = rows_all[start : start + _CHUNK]
                similarity = unit[rows] @ block
                r, c = np.nonzero(similarity >= threshold)
                found += len(r)
                later_all = np.concatenate((later_all, rows[r]))
                earlier_all = np.concatenate((earlier_all, columns[c]))
                sim_all = np.concatenate((sim_all, np.minimum(similarity[r, c], 1.0)))
                if len(sim_all) > 2 * MAX_DUPLICATES:
                    # Pruned as it goes: memory stays bounded even if every pair is a duplicate.
                    keep = _most_similar(later_all, earlier_all, sim_all)
                    later_all, earlier_all, sim_all = later_all[keep], earlier_all[keep], sim_all[keep]
    keep = _most_similar(later_all, earlier_all, sim_all)
    pairs = tuple(
        NearDuplicate(
            index=int(later_all[k]),
            other_index=int(earlier_all[k]),
            path=paths[later_all[k]],
            other_path=paths[earlier_all[k]],
            split=split[later_all[k]],
            other_split=split[earlier_all[k]],
            label=int(y[later_all[k]]),
            other_label=int(y[earlier_all[k]]),
            similarity=float(sim_all[k]),
        )
        for k in keep
    )
    return pairs, found


def _most_similar(later: np.ndarray, earlier: np.ndarray, similarity: np.ndarray) -> np.ndarray:
    """The positions of the `MAX_DUPLICATES` most similar pairs, most similar first; ties in a fixed order (by
    index) so that the review is reproducible."""
    return np.lexsort((earlier, later, -similarity))[:MAX_DUPLICATES]

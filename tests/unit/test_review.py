"""The review after training (`training.review`): on synthetic features, cleanlab's search names the labels
flipped on purpose (and few others) with their true class, the near-duplicates across splits are reported
once and those inside a split never, and the CSV and contact sheet are written, unreadable images included."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.review import CSV_HEADER, THUMBNAIL, Review, review

SEED = 7
SPLITS = ("train", "validation", "calibration", "test")


def clusters(rng: np.random.Generator, classes: int = 3, per_class: int = 60, d: int = 32) -> tuple:
    """Well-separated Gaussian clusters: centres 8 standard deviations from the origin in random directions."""
    centres = rng.normal(size=(classes, d))
    centres *= 8.0 / np.linalg.norm(centres, axis=1, keepdims=True)
    true = np.repeat(np.arange(classes), per_class)
    features = centres[true] + rng.normal(size=(len(true), d))
    return features, true


def flip(rng: np.random.Generator, true: np.ndarray, fraction: float, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """`true` with a `fraction` of the labels moved to another class; also the indices flipped."""
    labels = true.copy()
    flipped = rng.choice(len(true), size=round(fraction * len(true)), replace=False)
    labels[flipped] = (true[flipped] + rng.integers(1, classes, size=len(flipped))) % classes
    return labels, np.sort(flipped)


def names(n: int) -> list[Path]:
    return [Path(f"images/{i:03d}.jpg") for i in range(n)]


def test_flipped_labels_are_found_with_their_true_class() -> None:
    """Three datasets of 3 x 200 points, 5% of the labels flipped in each (90 in all). Confident learning is
    conservative: over 30 such datasets it found 90% of the flipped labels on average, 73% at worst, with at
    most 2 false alarms, so the bar is 80% of the 90 and each dataset's own at 70% (3 x 60 points, 9 flips,
    is too few for a bar: "8 of 9" held for 57% of those datasets)."""
    found = 0
    for seed in (0, 1, 2):
        rng = np.random.default_rng(seed)
        features, true = clusters(rng, per_class=200)
        labels, flipped = flip(rng, true, 0.05, 3)
        assert len(flipped) == 30
        split = list(rng.choice(SPLITS, size=len(labels)))
        result = review(features, labels, names(len(labels)), split, ["a", "b", "c"], seed=seed)

        reported = {issue.index for issue in result.label_issues}
        wrong = set(flipped.tolist())
        assert len(reported & wrong) >= 21
        assert len(reported - wrong) <= 3
        found += len(reported & wrong)
        for issue in result.label_issues:
            if issue.index in wrong:
                assert issue.suggested == true[issue.index]
            assert issue.given == labels[issue.index]
            assert issue.path == Path(f"images/{issue.index:03d}.jpg")
            assert issue.split == split[issue.index]
        assert [issue.rank for issue in result.label_issues] == list(range(1, len(result.label_issues) + 1))
        confidences = [issue.self_confidence for issue in result.label_issues]
        assert confidences == sorted(confidences)  # ranked by self-confidence, least confident first
        assert result.folds == 5 and result.skipped == "" and result.c in (1.0, 0.1, 0.01, 0.001)
    assert found >= 72

    summary = result.summary(limit=3)
    assert f"{len(result.label_issues)} of 600 images" in summary
    assert str(result.label_issues[0].path) in summary
    assert f"... and {len(result.label_issues) - 3} more" in summary


def test_clean_labels_give_few_issues() -> None:
    rng = np.random.default_rng(SEED + 1)
    features, true = clusters(rng)
    result = review(features, true, names(len(true)), ["train"] * len(true), ["a", "b", "c"], seed=SEED)
    assert len(result.label_issues) <= 2
    assert result.near_duplicates == ()


def duplicates_fixture() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Random 64-d features (cosine of two of them ~N(0, 1/64): none near 0.97), 40 images, with one pair planted
    across train/test (5, 30) and one inside train (6, 7)."""
    rng = np.random.default_rng(SEED)
    features = rng.normal(size=(40, 64))
    features[30] = features[5] + 0.01 * rng.normal(size=64)
    features[7] = features[6] + 0.01 * rng.normal(size=64)
    labels = np.repeat([0, 1], 20)
    split = ["train"] * 30 + ["test"] * 10
    return features, labels, split


def test_near_duplicates_across_splits_only() -> None:
    features, labels, split = duplicates_fixture()
    paths = names(len(labels))
    result = review(features, labels, paths, split, ["a", "b"], seed=SEED)
    assert review(features, labels, paths, split, ["a", "b"], seed=SEED) == result  # deterministic for a seed

    assert len(result.near_duplicates) == 1 and result.duplicates_found == 1
    pair = result.near_duplicates[0]
    assert (pair.path, pair.other_path) == (paths[30], paths[5])  # the held-out side first
    assert (pair.split, pair.other_split) == ("test", "train")
    assert pair.similarity > 0.99
    assert pair.leaks and result.leaks == (pair,)
    summary = result.summary()
    assert str(paths[30]) in summary and str(paths[5]) in summary
    assert "joins train to test or calibration" in summary


def test_a_class_of_one_skips_the_label_search_and_fewer_folds_for_small_classes() -> None:
    rng = np.random.default_rng(SEED)
    features = rng.normal(size=(13, 8))
    paths = names(13)
    single = review(features, np.array([0] * 6 + [1] * 6 + [2]), paths, ["train"] * 13, ["a", "b", "c"], seed=1)
    assert single.label_issues == () and single.folds == 0
    assert "'c' has 1" in single.skipped
    assert "not searched" in single.summary()

    small = review(features, np.array([0] * 10 + [1] * 3), paths, ["train"] * 13, ["a", "b"], seed=1)
    assert small.folds == 3 and small.skipped == ""


def test_inconsistent_inputs_raise() -> None:
    with pytest.raises(ValueError, match="paths"):
        review(np.zeros((3, 2)), np.array([0, 1, 0]), names(2), ["train"] * 3, ["a", "b"], seed=1)
    with pytest.raises(ValueError, match="labels must be ints"):
        review(np.zeros((3, 2)), np.array([0, 1, 2]), names(3), ["train"] * 3, ["a", "b"], seed=1)


def test_write_csv_and_contact_sheet(tmp_path: Path) -> None:
    features, labels, split = duplicates_fixture()
    labels = labels.copy()
    labels[3] = 1  # one planted label issue among class 0 ... the features are random, so others may appear
    paths = []
    for i in range(len(labels)):
        path = tmp_path / "images" / f"{i:03d}.png"
        paths.append(path)
        if i == 30:
            continue  # the planted duplicate's file is missing: a gray tile, not a crash
        path.parent.mkdir(exist_ok=True)
        Image.new("RGB", (40 + i, 30), (6 * i, 100, 200)).save(path)
    (tmp_path / "images" / "005.png").write_bytes(b"not an image")  # unreadable too
    result = review(features, labels, paths, split, ["a", "b"], seed=SEED)
    assert result.near_duplicates

    run_dir = tmp_path / "run"
    written = result.write(run_dir)
    assert written == [run_dir / "review.csv", run_dir / "review.png"]

    with (run_dir / "review.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == CSV_HEADER
    body = [dict(zip(CSV_HEADER, row, strict=True)) for row in rows[1:]]
    assert len(body) == len(result.label_issues) + len(result.near_duplicates)
    issues = [row for row in body if row["kind"] == "label_issue"]
    for row, issue in zip(issues, result.label_issues, strict=True):
        assert row["path"] == str(issue.path)
        assert (row["given"], row["suggested"]) == (["a", "b"][issue.given], ["a", "b"][issue.suggested])
        assert float(row["score"]) == pytest.approx(issue.self_confidence, abs=1e-6)
        assert row["other_path"] == "" and row["split"] == issue.split
    duplicate = next(row for row in body if row["kind"] == "near_duplicate")
    assert duplicate["path"] == str(paths[30]) and duplicate["other_path"] == str(paths[5])
    assert (duplicate["split"], duplicate["other_split"]) == ("test", "train")
    assert float(duplicate["score"]) > 0.99

    tiles = len(result.label_issues) + len(result.near_duplicates)
    with Image.open(run_dir / "review.png") as sheet:
        sheet.load()
        assert sheet.mode == "RGB"
        assert sheet.width >= min(tiles, 8) * THUMBNAIL
        assert sheet.height >= -(-tiles // 8) * THUMBNAIL
        assert sheet.width <= 8 * (THUMBNAIL + 20)


def test_write_with_no_findings(tmp_path: Path) -> None:
    empty = Review((), (), ("a",), 0, 0, 0.0, "nothing", 0.97, 0)
    csv_path, png_path = empty.write(tmp_path)
    assert csv_path.read_text(encoding="utf-8").strip() == ",".join(CSV_HEADER)
    with Image.open(png_path) as sheet:
        assert sheet.width > 0

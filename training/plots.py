"""The plots people look at after training: curves, confusion matrix, a grid of test predictions, the
reliability diagram and the out-of-distribution scores."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt
import numpy as np

from training.calibration import Reliability


def training_curves(history: dict[str, list[float]], path: Path, *, title: str) -> None:
    """Training and validation accuracy (left) and loss (right) per epoch."""
    epochs = np.arange(1, len(history["loss"]) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key in zip(axes, ("accuracy", "loss"), strict=True):
        ax.plot(epochs, history[key], label=f"training {key}")
        ax.plot(epochs, history[f"val_{key}"], label=f"validation {key}")
        ax.set_xlabel("epoch")
        ax.set_title(f"{title}: {key}")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def confusion_matrix(matrix: np.ndarray, labels: Sequence[str], path: Path) -> None:
    """Counts of the test split, true class per row, predicted class per column."""
    size = max(5.0, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", color="white" if count > threshold else "black")
    accuracy = np.trace(matrix) / max(1, matrix.sum())
    ax.set_title(f"test confusion matrix (accuracy {accuracy:.3f})")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def prediction_grid(
    images: np.ndarray,
    labels_true: np.ndarray,
    probabilities: np.ndarray,
    labels: Sequence[str],
    path: Path,
    *,
    seed: int,
    count: int = 25,
) -> None:
    """A random sample of test images titled 'predicted (confidence) / true', blue if right, red if wrong."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(images), size=min(count, len(images)), replace=False)
    columns = 5
    rows = -(-len(chosen) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.7 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, index in zip(axes.flat, chosen, strict=False):
        image = images[index]
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray" if image.shape[-1] == 1 else None)
        predicted = int(probabilities[index].argmax())
        right = predicted == int(labels_true[index])
        ax.set_title(
            f"{labels[predicted]} {probabilities[index, predicted]:.0%}\n(true: {labels[int(labels_true[index])]})",
            color="tab:blue" if right else "tab:red",
            fontsize=9,
        )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def reliability_diagram(before: Reliability, after: Reliability, path: Path, *, temperature: float) -> None:
    """Accuracy against confidence per bin on the test split, before and after temperature scaling; a
    calibrated model's bars touch the diagonal. Bin counts are drawn below, since most bins are nearly empty."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 7), height_ratios=(3, 1), sharex=True)
    centres = (before.edges[:-1] + before.edges[1:]) / 2
    width = before.edges[1] - before.edges[0]
    for offset, curve, name, colour in (
        (-width / 4, before, "before", "tab:orange"),
        (width / 4, after, f"after (T = {temperature:.2f})", "tab:blue"),
    ):
        shown = curve.count > 0
        top.bar(
            centres[shown] + offset,
            curve.accuracy[shown],
            width=width / 2,
            color=colour,
            alpha=0.8,
            label=f"{name}: ECE {curve.ece:.3f}",
        )
        bottom.bar(centres + offset, curve.count, width=width / 2, color=colour, alpha=0.8)
    top.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1, label="perfect calibration")
    top.set_ylabel("accuracy")
    top.set_ylim(0, 1)
    top.set_title("reliability on the test split")
    top.legend(loc="upper left")
    top.grid(alpha=0.3)
    bottom.set_yscale("symlog")
    bottom.set_xlabel("confidence of the top class")
    bottom.set_ylabel("images")
    bottom.set_xlim(0, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def ood_histogram(
    in_scores: np.ndarray, out_scores: dict[str, np.ndarray], threshold: float, path: Path, *, method: str
) -> None:
    """The out-of-distribution score of the test split against each out-of-distribution set, with the
    threshold: what lies right of the line is flagged."""
    every = np.concatenate([in_scores, *out_scores.values()])
    low, high = np.quantile(every, [0.005, 0.995])
    bins = np.linspace(low, high, 60).tolist()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.hist(np.clip(in_scores, low, high), bins=bins, density=True, color="black", alpha=0.5, label="test split")
    for name, scores in out_scores.items():
        ax.hist(np.clip(scores, low, high), bins=bins, density=True, histtype="step", linewidth=1.5, label=name)
    ax.axvline(threshold, color="tab:red", linestyle="--", label="threshold (keeps 95% of validation)")
    ax.set_xlabel(f"{method} score (higher: less like the training images)")
    ax.set_ylabel("density")
    ax.legend(fontsize=8, ncols=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

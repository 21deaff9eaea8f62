"""The plots people look at after training: curves, confusion matrix, a grid of test predictions."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt
import numpy as np


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

"""What a scan of a folder of class folders found (`training.scan`), as data and as text: the kept images,
every rejected file with its reason, notes on what the service converts, and the fatal problems; and
`format_report`, the table a person reads before training starts.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from app.core.imaging import ImageSpec
from training.errors import DatasetError

RejectKind = Literal[
    "outside classes",  # a file directly in the root, not in a class folder
    "unreadable",  # the file system refused to read it
    "unsupported",  # not an image, or a format the service does not decode (UnsupportedImageType)
    "corrupt",  # truncated or corrupt data, or an empty file (InvalidImage)
    "too large",  # over the service's byte, pixel or decode-memory limits (PayloadTooLarge)
    "too small",  # a side shorter than `min_side`
    "duplicate",  # the same bytes as an earlier file of the same class
    "ambiguous label",  # the same bytes filed under two or more classes
]
NoteKind = Literal["16-bit", "CMYK", "palette", "grayscale", "transparency", "EXIF orientation"]
NOTE_KINDS: tuple[NoteKind, ...] = ("16-bit", "CMYK", "palette", "grayscale", "transparency", "EXIF orientation")

_NOTED_PATHS = 3  # paths shown per note kind in `format_report`


# ------------------------------------------------------------------------------------------------ the report
@dataclass(frozen=True)
class Spread:
    """Minimum, median (the lower middle value, so always one of the values) and maximum of some sizes."""

    min: int
    median: int
    max: int

    @classmethod
    def of(cls, values: Sequence[int]) -> Spread:
        return cls(min(values), statistics.median_low(values), max(values))

    def __str__(self) -> str:
        return f"{self.min}/{self.median}/{self.max}"


@dataclass(frozen=True)
class KeptImage:
    """A usable image: `label` indexes `ScanReport.labels`; `width` x `height` is the file's size as displayed
    (after its EXIF orientation); `sha256` is the hex digest of the file's bytes; `array` is the service's
    decode at the scan's spec, `(height, width, channels)` uint8, or None if the scan did not keep arrays."""

    path: Path
    label: int
    sha256: str
    width: int
    height: int
    array: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Rejected:
    """A file that training will not use, and why (`reason` is one line a user can act on)."""

    path: Path
    kind: RejectKind
    reason: str


@dataclass(frozen=True)
class Note:
    """A kept image that the service converts on its way to the model (`what` says how)."""

    path: Path
    kind: NoteKind
    what: str


@dataclass(frozen=True)
class ClassReport:
    """One class folder. `files` = `kept` + `rejected` + `duplicates`: `rejected` counts the files refused
    for their content (not an image, corrupt, too small, ...), `duplicates` the copies refused for being
    the same bytes as another file (of this class or of another). `width` and `height` spread over the kept
    images (None when none is kept); the other counts are kept images converted by the service."""

    name: str
    files: int
    kept: int
    rejected: int
    duplicates: int
    width: Spread | None
    height: Spread | None
    sixteen_bit: int = 0
    cmyk: int = 0
    palette: int = 0
    grayscale: int = 0
    transparency: int = 0
    exif_rotated: int = 0


@dataclass(frozen=True)
class ScanReport:
    """What `scan` found in `root`. `labels` are the class folder names, sorted; `classes` follows the same
    order; `kept` is in label then path order; `rejected` and `notes` are in path order. `fatal` lists
    the problems that make the folder untrainable, each naming the class or the path; `ok` is their
    absence. Rejected files alone are never fatal."""

    root: Path
    spec: ImageSpec
    labels: tuple[str, ...]
    classes: tuple[ClassReport, ...]
    kept: tuple[KeptImage, ...]
    rejected: tuple[Rejected, ...]
    notes: tuple[Note, ...]
    fatal: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.fatal

    def raise_if_fatal(self) -> None:
        """Raise `DatasetError` (one line, every fatal problem) unless the report is `ok`."""
        if self.fatal:
            raise DatasetError(f"{self.root} cannot be trained on: {'; '.join(self.fatal)}")

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The kept images as `(x, y)`: uint8 `[n, H, W, C]` at `spec` and int64 `[n]` labels, in `kept`
        order. Raises ValueError if the scan was run with `keep_arrays=False`."""
        arrays = [image.array for image in self.kept]
        present = [array for array in arrays if array is not None]
        if len(present) != len(arrays):
            raise ValueError("the scan did not keep the decoded arrays (keep_arrays=False)")
        spec = self.spec
        x = np.stack(present) if present else np.empty((0, spec.height, spec.width, spec.channels), np.uint8)
        return x, np.asarray([image.label for image in self.kept], dtype=np.int64)


def format_report(report: ScanReport) -> str:
    """The report as plain text for a terminal or a log: a per-class table (files, kept, rejected,
    duplicates, width and height min/median/max of the kept images), every rejected file as
    "path: reason", the notes counted per kind with their first few paths, then the fatal problems (or a
    line saying the folder is ready). Paths are relative to the root."""
    root = report.root
    lines = [f"Scanned {root} at {report.spec.height}x{report.spec.width}x{report.spec.channels}"]
    if report.classes:
        header = ("class", "files", "kept", "rejected", "duplicates", "width min/med/max", "height min/med/max")
        rows = [
            (
                c.name,
                str(c.files),
                str(c.kept),
                str(c.rejected),
                str(c.duplicates),
                str(c.width or "-"),
                str(c.height or "-"),
            )
            for c in report.classes
        ]
        total = (
            "total",
            str(sum(c.files for c in report.classes)),
            str(len(report.kept)),
            str(sum(c.rejected for c in report.classes)),
            str(sum(c.duplicates for c in report.classes)),
            "",
            "",
        )
        lines += ["", *table(header, [*rows, total])]
    if report.rejected:
        lines += ["", f"Rejected files ({len(report.rejected)}):"]
        lines += [f"  {relative(r.path, root)}: {r.reason}" for r in report.rejected]
    if report.notes:
        lines += ["", "Converted as the service converts uploads (kept):"]
        by_kind: dict[NoteKind, list[Note]] = defaultdict(list)
        for note in report.notes:
            by_kind[note.kind].append(note)
        for kind in NOTE_KINDS:
            if kind in by_kind:
                lines.append(f"  {kind}: {plural(len(by_kind[kind]), 'image')}, {listing(by_kind[kind], root)}")
    lines.append("")
    if report.fatal:
        lines.append(f"Cannot train ({plural(len(report.fatal), 'problem')}):")
        lines += [f"  {message}" for message in report.fatal]
    else:
        lines.append(f"Ready: {plural(len(report.kept), 'usable image')} in {len(report.labels)} classes.")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- helpers
def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Fixed-width columns: the first left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        cells = [row[0].ljust(widths[0]), *(cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True))]
        return "  ".join(cells).rstrip()

    return [line(header), line(["-" * width for width in widths]), *(line(row) for row in rows)]


def relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def listing(items: Sequence[Any], root: Path) -> str:
    """The first few paths of `items`, relative to `root`, and how many more there are."""
    shown = ", ".join(relative(item.path, root) for item in items[:_NOTED_PATHS])
    more = len(items) - _NOTED_PATHS
    return f"{shown} and {more} more" if more > 0 else shown


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"

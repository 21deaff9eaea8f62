"""Scan a folder of class folders before training on it: what will be used, what will not, and why.

The layout is the one of `keras.utils.image_dataset_from_directory`: `root/<class name>/<image files>`, the
labels being the class folder names in sorted order. Files in nested folders of a class folder belong to that
class (as in Keras); names starting with "." (`.DS_Store`, `.git/`) are ignored everywhere.

Every file is decoded exactly as the service decodes an upload (`app.core.imaging.open_image` then `decode`,
at the model's `ImageSpec` and with the service's default limits), so a file is kept if and only if the
service would classify the same bytes, and the kept arrays are the ones the model will be served. Whether a
file is an image is decided by its content, never by its name: a text file called `x.jpg` is rejected and a
PNG called `photo.dat` is kept.

A scan never raises for anything it finds in the folder. It returns a `ScanReport`: the kept images, every
rejected file with its reason, notes on the images that the service converts (16-bit, CMYK, palette,
grayscale, transparency, EXIF orientation), and the fatal problems (`ScanReport.fatal`) that make the folder
untrainable: no usable layout, fewer than two classes, a class with too few usable images.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from app.core.errors import InvalidImage, PayloadTooLarge, UnsupportedImageType
from app.core.imaging import ImageSpec, decode, open_image
from training.scan_report import (
    ClassReport,
    KeptImage,
    Note,
    NoteKind,
    Rejected,
    RejectKind,
    ScanReport,
    Spread,
    format_report,
    listing,
    plural,
    relative,
)

__all__ = [
    "ClassReport",
    "KeptImage",
    "Note",
    "NoteKind",
    "RejectKind",
    "Rejected",
    "ScanReport",
    "Spread",
    "format_report",
    "scan",
]

# The service's defaults (app.core.settings: max_image_pixels, max_decode_bytes, max_upload_bytes), so that
# a file kept here is a file the service would accept; tests/unit/test_scan.py checks that they agree.
MAX_PIXELS = 40_000_000
MAX_DECODE_BYTES = 256 * 2**20
MAX_FILE_BYTES = 20 * 2**20

_WIDE_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_GRAY_MODES = frozenset({"1", "L", "LA", "La"}) | _WIDE_MODES
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_ORIENTATION_TAG = 0x0112
_TRANSPOSED = frozenset({5, 6, 7, 8})  # EXIF orientations that swap width and height

T = TypeVar("T")


# ---------------------------------------------------------------------------------------------------- scan
def scan(
    root: Path,
    spec: ImageSpec,
    *,
    min_per_class: int = 10,
    min_side: int = 32,
    max_pixels: int = MAX_PIXELS,
    max_decode_bytes: int | None = MAX_DECODE_BYTES,
    max_file_bytes: int = MAX_FILE_BYTES,
    keep_arrays: bool = True,
    progress: bool | None = None,
) -> ScanReport:
    """Scan `root/<class>/<files>` and decode every file at `spec` as the service decodes uploads.

    A file is kept when the service decodes it (`max_pixels`, `max_decode_bytes` and `max_file_bytes` are
    the service's limits), both its sides are at least `min_side` pixels, and its bytes are neither an
    earlier file of the same class (the first in path order is kept) nor filed under another class too
    (every copy is then rejected: its label is ambiguous). A class with fewer than `min_per_class` kept
    images is fatal. `keep_arrays=False` drops the decoded arrays (the scan still decodes every file, since
    only a decode tells whether a file is usable). `progress`: a bar on stderr over the files; None shows it
    when stderr is a terminal. Never raises for what the folder holds (only ValueError for bad arguments).
    """
    if min_per_class < 1 or min_side < 1:
        raise ValueError(f"min_per_class and min_side must be positive, got {min_per_class} and {min_side}")
    root = Path(root)
    fatal: list[str] = []
    rejected: list[Rejected] = []
    layout = _layout(root, fatal, rejected)
    if layout is None:
        return ScanReport(root, spec, (), (), (), tuple(rejected), (), tuple(fatal))
    labels = tuple(layout)
    jobs = [(path, label) for label, name in enumerate(labels) for path in layout[name]]
    limits = _Limits(max_pixels, max_decode_bytes, max_file_bytes, min_side)

    def examine(job: tuple[Path, int]) -> _Outcome:
        return _examine(job[0], job[1], spec, limits, keep_arrays)

    # Pillow releases the GIL while decoding, so threads use every core (as training.images does).
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        outcomes = list(_progress(pool.map(examine, jobs), len(jobs), progress))

    refused = _refuse_copies([o for o in outcomes if o.rejection is None], root)
    kept: list[KeptImage] = []
    notes: list[Note] = []
    per_class: list[list[_Outcome]] = [[] for _ in labels]
    for outcome in outcomes:
        per_class[outcome.label].append(outcome)
        rejection = outcome.rejection or refused.get(outcome.path)
        if rejection is not None:
            rejected.append(Rejected(outcome.path, *rejection))
            continue
        kept.append(
            KeptImage(outcome.path, outcome.label, outcome.sha256, outcome.width, outcome.height, outcome.array)
        )
        notes += [Note(outcome.path, kind, what) for kind, what in outcome.notes]

    classes = tuple(_class_report(name, per_class[label], refused) for label, name in enumerate(labels))
    for report in classes:
        fatal += _class_problems(report, min_per_class)
    return ScanReport(
        root,
        spec,
        labels,
        classes,
        tuple(kept),
        tuple(sorted(rejected, key=lambda r: r.path)),
        tuple(notes),
        tuple(fatal),
    )


# ------------------------------------------------------------------------------------------------ internals
@dataclass(frozen=True)
class _Limits:
    max_pixels: int
    max_decode_bytes: int | None
    max_file_bytes: int
    min_side: int


@dataclass
class _Outcome:
    """One class file examined: `rejection` is (kind, reason) or None when the file alone is usable."""

    path: Path
    label: int
    rejection: tuple[RejectKind, str] | None = None
    sha256: str = ""
    width: int = 0
    height: int = 0
    array: np.ndarray | None = None
    notes: list[tuple[NoteKind, str]] = field(default_factory=list)


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _layout(root: Path, fatal: list[str], rejected: list[Rejected]) -> dict[str, list[Path]] | None:
    """The class folders of `root` (sorted) and each one's files (sorted, hidden ones left out), or None
    (with the reason in `fatal`) when `root` holds no trainable layout. Files in the root itself go to
    `rejected`. A class folder that cannot be listed is fatal but leaves the others scanned."""
    if not root.exists():
        fatal.append(f"data directory {root} does not exist")
        return None
    if not root.is_dir():
        fatal.append(f"data directory {root} is not a directory")
        return None
    try:
        entries = sorted(p for p in root.iterdir() if not _hidden(p.name))
    except OSError as error:
        fatal.append(f"data directory {root} cannot be listed ({error.strerror or error})")
        return None
    rejected += [
        Rejected(p, "outside classes", "not in a class folder: training only reads root/<class>/<files>")
        for p in entries
        if p.is_file()
    ]
    class_dirs = [p for p in entries if p.is_dir()]
    if not class_dirs:
        fatal.append(f"{root} holds no class folders; put each class's images in {root}/<class name>/")
        return None
    if len(class_dirs) == 1:
        fatal.append(f"{root} holds one class folder ('{class_dirs[0].name}'); a classifier needs at least two")
    layout: dict[str, list[Path]] = {}
    for class_dir in class_dirs:
        try:
            layout[class_dir.name] = _class_files(class_dir)
        except OSError as error:
            fatal.append(f"class folder {class_dir} cannot be read ({error.strerror or error})")
    return layout


def _class_files(class_dir: Path) -> list[Path]:
    """Every non-hidden file under `class_dir`, nested folders included (as Keras reads them), sorted."""

    def fail(error: OSError) -> None:
        raise error  # os.walk skips unreadable folders silently otherwise

    files: list[Path] = []
    for folder, dirs, names in os.walk(class_dir, onerror=fail):
        dirs[:] = [d for d in dirs if not _hidden(d)]
        files += [Path(folder, n) for n in names if not _hidden(n) and Path(folder, n).is_file()]
    return sorted(files)


def _examine(path: Path, label: int, spec: ImageSpec, limits: _Limits, keep_array: bool) -> _Outcome:
    """Read, hash and decode one file as the service would; runs in the scan's threads."""
    outcome = _Outcome(path, label)
    try:
        size = path.stat().st_size
        # Checked before reading, so that a video or an archive left in a class folder is not read whole.
        if size > limits.max_file_bytes:
            outcome.rejection = (
                "too large",
                f"the file is {size / 2**20:,.1f} MiB; the service refuses uploads over "
                f"{limits.max_file_bytes / 2**20:,.0f} MiB",
            )
            return outcome
        data = path.read_bytes()
    except OSError as error:
        outcome.rejection = ("unreadable", f"the file cannot be read ({error.strerror or error})")
        return outcome
    if not data:
        # The service's own message speaks of an upload.
        outcome.rejection = ("corrupt", "the file is empty")
        return outcome
    outcome.sha256 = hashlib.sha256(data).hexdigest()
    try:
        header = open_image(data, spec, max_pixels=limits.max_pixels, max_decode_bytes=limits.max_decode_bytes)
        # `open_image` has already asked a JPEG for a reduced draft, which changed `header.image.size`;
        # the file's own size comes from a second header read of the same bytes (no pixels are decoded).
        with Image.open(io.BytesIO(data)) as raw:
            width, height = raw.size
        if min(width, height) < limits.min_side:
            # Before decoding: the size alone decides, and upscaling such an image would teach blur.
            outcome.rejection = (
                "too small",
                f"the image is {width}x{height} pixels; both sides must be at least {limits.min_side}",
            )
            return outcome
        array = decode(header, spec)
    except UnsupportedImageType as error:
        outcome.rejection = ("unsupported", str(error))
        return outcome
    except InvalidImage as error:
        outcome.rejection = ("corrupt", str(error))
        return outcome
    except PayloadTooLarge as error:
        outcome.rejection = ("too large", str(error))
        return outcome
    # After `decode`, `header.image` is loaded: its mode, info and EXIF are what the conversion saw (a PNG's
    # eXIf chunk, after the pixels, is only read by loading).
    image = header.image
    orientation = image.getexif().get(_ORIENTATION_TAG, 1)
    if orientation in _TRANSPOSED:
        width, height = height, width
    outcome.width, outcome.height = width, height
    outcome.array = array if keep_array else None
    outcome.notes = _conversions(image, data, orientation, spec)
    return outcome


def _conversions(image: Image.Image, data: bytes, orientation: int, spec: ImageSpec) -> list[tuple[NoteKind, str]]:
    """What `app.core.imaging.decode` does to this image beyond decoding and resizing it."""
    target = "RGB" if spec.channels == 3 else "grayscale"
    mode = image.mode
    notes: list[tuple[NoteKind, str]] = []
    # Pillow opens a 16-bit colour PNG as 8-bit RGB(A): only the header's bit depth (IHDR byte 24) tells.
    if mode in _WIDE_MODES or (image.format == "PNG" and data[12:16] == b"IHDR" and data[24] == 16):
        notes.append(("16-bit", f"{mode} image with 16 bits per sample, reduced to 8 bits"))
    if mode == "CMYK":
        notes.append(("CMYK", f"CMYK image, converted to {target}"))
    if mode in ("P", "PA"):
        notes.append(("palette", f"palette image, expanded to {target}"))
    # A 1-channel model turns every colour image into grayscale by design; only the reverse is a conversion.
    if mode in _GRAY_MODES and spec.channels == 3:
        notes.append(("grayscale", f"grayscale ({mode}) image, copied into the 3 RGB channels"))
    if mode in _ALPHA_MODES or "transparency" in image.info:
        notes.append(("transparency", "image with transparency, composited on white"))
    if 2 <= orientation <= 8:
        notes.append(("EXIF orientation", f"EXIF orientation {orientation}, turned upright as the service does"))
    return notes


def _refuse_copies(usable: Sequence[_Outcome], root: Path) -> dict[Path, tuple[RejectKind, str]]:
    """The rejections of repeated bytes among the files usable on their own (`usable`, in path order)."""
    by_hash: dict[str, list[_Outcome]] = defaultdict(list)
    for outcome in usable:
        by_hash[outcome.sha256].append(outcome)
    refused: dict[Path, tuple[RejectKind, str]] = {}
    for copies in by_hash.values():
        if len(copies) < 2:
            continue
        if len({copy.label for copy in copies}) > 1:
            # No copy can be trusted: the same picture would teach two labels (and leak across splits).
            for copy in copies:
                others = listing([o for o in copies if o is not copy], root)
                refused[copy.path] = (
                    "ambiguous label",
                    f"the same image is also filed under {others}; its label is ambiguous",
                )
        else:
            first = relative(copies[0].path, root)
            refused.update((copy.path, ("duplicate", f"duplicate of {first}")) for copy in copies[1:])
    return refused


def _class_report(name: str, outcomes: Sequence[_Outcome], refused: dict[Path, tuple[RejectKind, str]]) -> ClassReport:
    kept = [o for o in outcomes if o.rejection is None and o.path not in refused]
    counts = Counter(kind for o in kept for kind, _ in o.notes)
    duplicates = sum(1 for o in outcomes if o.rejection is None and o.path in refused)
    return ClassReport(
        name=name,
        files=len(outcomes),
        kept=len(kept),
        rejected=len(outcomes) - len(kept) - duplicates,
        duplicates=duplicates,
        width=Spread.of([o.width for o in kept]) if kept else None,
        height=Spread.of([o.height for o in kept]) if kept else None,
        sixteen_bit=counts["16-bit"],
        cmyk=counts["CMYK"],
        palette=counts["palette"],
        grayscale=counts["grayscale"],
        transparency=counts["transparency"],
        exif_rotated=counts["EXIF orientation"],
    )


def _class_problems(report: ClassReport, min_per_class: int) -> list[str]:
    name = report.name
    if report.files == 0:
        return [f"class '{name}' is empty"]
    if report.kept == 0:
        return [f"class '{name}' holds no usable image (all {plural(report.files, 'file')} rejected)"]
    if report.kept < min_per_class:
        return [
            f"class '{name}' has {plural(report.kept, 'usable image')}; at least {min_per_class} are needed "
            "to split it into train, validation, calibration and test"
        ]
    return []


def _progress(items: Iterable[T], total: int, enabled: bool | None) -> Iterator[T]:
    """`items`, with a tqdm bar on stderr (None: when stderr is a terminal, tqdm's `disable=None`)."""
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is not among the locked dependencies: no bar rather than no scan
        yield from items
        return
    disable = None if enabled is None else not enabled
    yield from tqdm(items, total=total, desc="scanning", unit="file", file=sys.stderr, disable=disable)

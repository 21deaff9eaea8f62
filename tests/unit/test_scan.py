"""training.scan on tiny folders generated here: what a user sees before training on a folder of classes."""

from __future__ import annotations

import hashlib
import io
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.core.imaging import ImageSpec, load_image
from app.core.settings import Settings
from training import scan as scan_module
from training.errors import DatasetError
from training.scan import ScanReport, format_report, scan

SPEC = ImageSpec(height=16, width=16, channels=3)
CLASSES = ("daisy", "roses", "tulips")
GOOD_PER_CLASS = 12
SIZE = (48, 40)  # width x height of every good image


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def photo(seed: int, size: tuple[int, int] = SIZE, mode: str = "RGB") -> Image.Image:
    """A small image whose bytes differ for every seed (a flat colour would make identical files)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB").convert(mode)


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def good_class(root: Path, name: str, count: int = GOOD_PER_CLASS, seed: int = 0) -> None:
    """`count` distinct images, JPEGs and PNGs alternately, named 00.jpg, 01.png, ..."""
    for i in range(count):
        fmt, suffix = ("JPEG", "jpg") if i % 2 == 0 else ("PNG", "png")
        write(root / name / f"{i:02d}.{suffix}", encode(photo(seed * 100 + i), fmt))


@pytest.fixture
def faulty(tmp_path: Path) -> Path:
    """Three classes of 12 good images each, and every fault a real folder has, planted."""
    root = tmp_path / "data"
    for index, name in enumerate(CLASSES):
        good_class(root, name, seed=index)
    daisy, roses, tulips = (root / name for name in CLASSES)
    jpeg = encode(photo(1000), "JPEG")
    write(daisy / "truncated.jpg", jpeg[: len(jpeg) // 2])
    write(daisy / "x.jpg", b"this is a text file, not a picture\n")
    write(daisy / "notes.txt", b"photographed in May\n")
    write(daisy / "photo.dat", encode(photo(1001), "PNG"))  # an image, whatever its name
    write(daisy / "deep.png", encode(Image.fromarray(np.full((40, 48), 40000, np.uint16)).convert("I;16"), "PNG"))
    shutil.copy(daisy / "00.jpg", daisy / "copy.jpg")
    write(roses / "cmyk.jpg", encode(photo(1002, mode="CMYK"), "JPEG"))
    write(roses / "palette.png", encode(photo(1003).quantize(16), "PNG"))
    write(roses / "gray.png", encode(photo(1004, mode="L"), "PNG"))
    rgba = photo(1005, mode="RGBA")
    rgba.putalpha(128)
    write(tulips / "rgba.png", encode(rgba, "PNG"))
    turned = photo(1006, size=(60, 40))
    exif = turned.getexif()
    exif[0x0112] = 6
    write(tulips / "rotated.jpg", encode(turned, "JPEG", exif=exif.tobytes()))
    write(tulips / "tiny.png", encode(photo(1007, size=(10, 10)), "PNG"))
    shared = encode(photo(1008), "JPEG")
    write(roses / "shared.jpg", shared)
    write(tulips / "shared.jpg", shared)
    write(root / "readme.jpg", encode(photo(1009), "JPEG"))
    write(root / ".hidden", b"x")
    write(daisy / ".DS_Store", b"\x00\x00\x00\x01Bud1")
    write(root / ".cache" / "thumb.jpg", encode(photo(1010), "JPEG"))  # a hidden folder is no class
    return root


@pytest.fixture
def report(faulty: Path) -> ScanReport:
    return scan(faulty, SPEC)


def reasons(report: ScanReport) -> dict[str, tuple[str, str]]:
    return {r.path.relative_to(report.root).as_posix(): (r.kind, r.reason) for r in report.rejected}


def notes(report: ScanReport) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for note in report.notes:
        found.setdefault(note.path.relative_to(report.root).as_posix(), set()).add(note.kind)
    return found


def test_a_folder_with_faults_is_trainable_and_counts_each_class(report: ScanReport) -> None:
    assert report.ok and report.fatal == ()
    assert report.labels == CLASSES
    counts = {c.name: (c.files, c.kept, c.rejected, c.duplicates) for c in report.classes}
    assert counts == {"daisy": (18, 14, 3, 1), "roses": (16, 15, 0, 1), "tulips": (16, 14, 1, 1)}
    assert len(report.kept) == 14 + 15 + 14
    for image in report.kept:
        assert report.labels[image.label] == image.path.relative_to(report.root).parts[0]


def test_each_planted_fault_is_rejected_with_its_reason(report: ScanReport) -> None:
    found = reasons(report)
    assert found["daisy/truncated.jpg"][0] == "corrupt" and "truncated" in found["daisy/truncated.jpg"][1]
    for name in ("daisy/x.jpg", "daisy/notes.txt"):  # decided by content, whatever the name
        assert found[name][0] == "unsupported" and "not a supported image" in found[name][1]
    assert found["tulips/tiny.png"] == ("too small", "the image is 10x10 pixels; both sides must be at least 32")
    assert found["daisy/copy.jpg"] == ("duplicate", "duplicate of daisy/00.jpg")
    assert found["roses/shared.jpg"] == (
        "ambiguous label",
        "the same image is also filed under tulips/shared.jpg; its label is ambiguous",
    )
    assert found["tulips/shared.jpg"] == (
        "ambiguous label",
        "the same image is also filed under roses/shared.jpg; its label is ambiguous",
    )
    assert found["readme.jpg"][0] == "outside classes" and "not in a class folder" in found["readme.jpg"][1]
    assert len(found) == 8  # hidden files and folders are neither kept nor rejected
    assert not any(part.startswith(".") for image in report.kept for part in image.path.parts[-2:])
    kept = {image.path.relative_to(report.root).as_posix() for image in report.kept}
    assert {"daisy/00.jpg", "daisy/photo.dat"} <= kept


def test_conversions_are_kept_and_noted(report: ScanReport) -> None:
    found = notes(report)
    assert found == {
        "daisy/deep.png": {"16-bit", "grayscale"},
        "roses/cmyk.jpg": {"CMYK"},
        "roses/palette.png": {"palette"},
        "roses/gray.png": {"grayscale"},
        "tulips/rgba.png": {"transparency"},
        "tulips/rotated.jpg": {"EXIF orientation"},
    }
    daisy, roses, tulips = report.classes
    assert (daisy.sixteen_bit, daisy.grayscale) == (1, 1)
    assert (roses.cmyk, roses.palette, roses.grayscale) == (1, 1, 1)
    assert (tulips.transparency, tulips.exif_rotated) == (1, 1)
    assert "EXIF orientation 6" in next(n.what for n in report.notes if n.kind == "EXIF orientation")


def test_sizes_are_as_displayed_after_the_exif_orientation(report: ScanReport) -> None:
    daisy, _, tulips = report.classes
    assert (str(daisy.width), str(daisy.height)) == ("48/48/48", "40/40/40")
    rotated = next(image for image in report.kept if image.path.name == "rotated.jpg")
    assert (rotated.width, rotated.height) == (40, 60)  # stored 60x40, orientation 6
    assert (tulips.width and tulips.width.min, tulips.height and tulips.height.max) == (40, 60)


def test_kept_arrays_are_the_services_decode_of_the_same_bytes(report: ScanReport) -> None:
    for image in report.kept:
        data = image.path.read_bytes()
        assert image.sha256 == hashlib.sha256(data).hexdigest()
        assert image.array is not None
        np.testing.assert_array_equal(image.array, load_image(data, SPEC), err_msg=str(image.path))
    x, y = report.arrays()
    assert x.shape == (len(report.kept), 16, 16, 3) and x.dtype == np.uint8
    assert y.tolist() == [image.label for image in report.kept]


def test_arrays_can_be_left_out(faulty: Path) -> None:
    light = scan(faulty, SPEC, keep_arrays=False)
    assert light.ok and len(light.kept) == 43 and all(image.array is None for image in light.kept)
    with pytest.raises(ValueError, match="keep_arrays"):
        light.arrays()


def test_the_table_shows_each_class_and_its_counts(report: ScanReport) -> None:
    text = format_report(report)
    rows = {line.split()[0]: line.split()[1:5] for line in text.splitlines() if line.split()[:1] == ["daisy"]}
    assert rows == {"daisy": ["18", "14", "3", "1"]}
    for name, counts in (("roses", "16 15 0 1"), ("tulips", "16 14 1 1"), ("total", "50 43 4 3")):
        line = next(line for line in text.splitlines() if line.startswith(name + " "))
        assert " ".join(line.split()[1:5]) == counts
    assert "daisy/copy.jpg: duplicate of daisy/00.jpg" in text
    assert "tulips/tiny.png: the image is 10x10 pixels" in text
    assert "CMYK: 1 image, roses/cmyk.jpg" in text
    assert text.rstrip().endswith("Ready: 43 usable images in 3 classes.")


def test_an_empty_class_folder_is_fatal(faulty: Path) -> None:
    (faulty / "irises").mkdir()
    (faulty / "irises" / ".DS_Store").write_bytes(b"x")  # hidden: the folder is still empty
    report = scan(faulty, SPEC)
    assert not report.ok and report.fatal == ("class 'irises' is empty",)
    assert report.labels == ("daisy", "irises", "roses", "tulips")
    assert "class 'irises' is empty" in format_report(report)
    with pytest.raises(DatasetError, match="class 'irises' is empty"):
        report.raise_if_fatal()


def test_a_class_of_rejected_files_is_fatal(faulty: Path) -> None:
    write(faulty / "irises" / "a.jpg", b"not an image")
    report = scan(faulty, SPEC)
    assert report.fatal == ("class 'irises' holds no usable image (all 1 file rejected)",)


def test_a_class_with_too_few_images_is_fatal_and_says_how_many(tmp_path: Path) -> None:
    good_class(tmp_path, "daisy")
    good_class(tmp_path, "roses", count=4, seed=1)
    write(tmp_path / "roses" / "bad.jpg", b"not an image")
    report = scan(tmp_path, SPEC)
    assert report.fatal == (
        "class 'roses' has 4 usable images; at least 10 are needed to split it into train, validation, "
        "calibration and test",
    )
    assert scan(tmp_path, SPEC, min_per_class=4).ok


def test_one_class_is_fatal(tmp_path: Path) -> None:
    good_class(tmp_path, "daisy")
    report = scan(tmp_path, SPEC)
    assert report.fatal == (f"{tmp_path} holds one class folder ('daisy'); a classifier needs at least two",)
    assert report.classes[0].kept == GOOD_PER_CLASS  # still scanned, so the user sees the rest


def test_no_class_folder_is_fatal(tmp_path: Path) -> None:
    write(tmp_path / "a.jpg", encode(photo(0), "JPEG"))
    report = scan(tmp_path, SPEC)
    assert not report.ok and "holds no class folders" in report.fatal[0]
    assert [r.kind for r in report.rejected] == ["outside classes"]


def test_a_missing_root_or_a_file_is_fatal(tmp_path: Path) -> None:
    missing = scan(tmp_path / "nowhere", SPEC)
    assert missing.fatal == (f"data directory {tmp_path / 'nowhere'} does not exist",)
    assert missing.labels == () and "does not exist" in format_report(missing)
    file = write(tmp_path / "data.zip", b"PK")
    assert scan(file, SPEC).fatal == (f"data directory {file} is not a directory",)


def test_files_over_the_services_limits_are_rejected_as_too_large(tmp_path: Path) -> None:
    for name in ("daisy", "roses"):
        good_class(tmp_path, name, count=2, seed=len(name))
    report = scan(tmp_path, SPEC, min_per_class=1, max_file_bytes=1024, max_pixels=10_000)
    assert {r.kind for r in report.rejected} == {"too large"} and len(report.rejected) == 4
    assert any("refuses uploads over" in r.reason for r in report.rejected)  # files over 1 KiB, not read


def test_the_defaults_are_the_services_limits() -> None:
    ours = {
        "max_image_pixels": scan_module.MAX_PIXELS,
        "max_decode_bytes": scan_module.MAX_DECODE_BYTES,
        "max_upload_bytes": scan_module.MAX_FILE_BYTES,
    }
    assert {name: Settings.model_fields[name].default for name in ours} == ours


def test_progress_bar_goes_to_stderr_when_asked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("daisy", "roses"):
        good_class(tmp_path, name, count=2, seed=len(name))
    scan(tmp_path, SPEC, min_per_class=1, progress=True)
    captured = capsys.readouterr()
    assert "scanning" in captured.err and captured.out == ""
    scan(tmp_path, SPEC, min_per_class=1)  # not a terminal: no bar
    assert capsys.readouterr().err == ""


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def test_a_16_bit_colour_png_is_noted_though_pillow_opens_it_as_rgb(tmp_path: Path) -> None:
    width, height = 40, 40
    rows = b"".join(b"\x00" + bytes(range(6 * width)) for _ in range(height))  # 16-bit RGB, filter 0
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(rows))
    write(tmp_path / "daisy" / "deep.png", data + png_chunk(b"IEND", b""))
    good_class(tmp_path, "roses", count=1)
    report = scan(tmp_path, SPEC, min_per_class=1)
    assert report.ok and [(n.path.name, n.kind) for n in report.notes] == [("deep.png", "16-bit")]
    assert report.classes[0].sixteen_bit == 1


def test_files_in_nested_folders_belong_to_their_class(tmp_path: Path) -> None:
    good_class(tmp_path, "daisy", count=1)
    good_class(tmp_path / "daisy", "2024", count=1, seed=1)
    good_class(tmp_path, "roses", count=2, seed=2)
    report = scan(tmp_path, SPEC, min_per_class=2)
    assert report.ok and report.labels == ("daisy", "roses")
    nested = next(image for image in report.kept if image.path.parent.name == "2024")
    assert nested.label == 0 and report.classes[0].kept == 2


def test_a_grayscale_model_notes_no_grayscale_source(faulty: Path) -> None:
    report = scan(faulty, ImageSpec(height=16, width=16, channels=1))
    assert "grayscale" not in {note.kind for note in report.notes}
    assert next(n.what for n in report.notes if n.kind == "CMYK") == "CMYK image, converted to grayscale"
    assert report.arrays()[0].shape[1:] == (16, 16, 1)

"""What is on disk: the model repository `models/<task>/<version>/`, as TensorFlow Serving lays it out.

A version directory is a positive integer; names starting with a dot are ignored, so the safe way to
publish a version is to copy it to a hidden name first and rename it into place (a rename within one
file system is atomic):

    cp -r exported/ models/flowers/.3 && mv models/flowers/.3 models/flowers/3

For copies made without that care, `Repository.scan` also reports whether each version directory is
*settled*: its files (names, sizes, modification times) were the same at the previous scan. The
registry loads only settled versions, so a directory still being copied is never loaded half-written.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

Fingerprint = tuple[tuple[str, int, int], ...]


@dataclass(frozen=True)
class VersionOnDisk:
    task: str
    version: int
    path: Path
    fingerprint: Fingerprint
    settled: bool  # unchanged since the previous scan


def _versions(task_dir: Path) -> list[Path]:
    return [p for p in task_dir.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) > 0]


def discover(model_dir: Path) -> dict[str, Path]:
    """Task name -> directory of its highest integer version. Empty if `model_dir` does not exist."""
    found: dict[str, Path] = {}
    for task, versions in Repository(model_dir).layout().items():
        found[task] = versions[max(versions)]
    return found


def fingerprint(path: Path) -> Fingerprint:
    """Every file under `path` with its size and modification time: changes while a copy is running."""
    entries = []
    for root, _, files in os.walk(path):
        for name in files:
            file = Path(root) / name
            try:
                stat = file.stat()
            except OSError:  # removed between listing and stat: the directory is changing
                continue
            entries.append((str(file.relative_to(path)), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(entries))


class Repository:
    """Scans `model_dir`; remembers the previous scan to tell settled versions from changing ones."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir
        self._previous: dict[Path, Fingerprint] = {}

    def layout(self) -> dict[str, dict[int, Path]]:
        """Task -> version -> directory, as listed now (no file is read)."""
        if not self.model_dir.is_dir():
            log.warning("model directory %s does not exist", self.model_dir)
            return {}
        tasks: dict[str, dict[int, Path]] = {}
        for task_dir in sorted(p for p in self.model_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            versions = {int(p.name): p for p in _versions(task_dir)}
            if versions:
                tasks[task_dir.name] = versions
        return tasks

    def scan(self, *, assume_settled: bool = False) -> dict[str, dict[int, VersionOnDisk]]:
        """Every version directory with its fingerprint and whether it is settled. With `assume_settled`
        (the first scan at startup) everything present counts as settled."""
        found: dict[str, dict[int, VersionOnDisk]] = {}
        current: dict[Path, Fingerprint] = {}
        for task, versions in self.layout().items():
            for version, path in versions.items():
                print_ = fingerprint(path)
                current[path] = print_
                settled = assume_settled or self._previous.get(path) == print_
                found.setdefault(task, {})[version] = VersionOnDisk(task, version, path, print_, settled)
        self._previous = current
        return found

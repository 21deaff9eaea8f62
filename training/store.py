"""The model store, `models/<task>/<version>/` (DESIGN.md), as training writes to it: a version is written
whole under a hidden name in the task's folder, then renamed into place, so a service polling the store
(`app.core.repository` ignores hidden names) never sees half a version; a failed or interrupted run leaves
nothing behind; and an existing version is never overwritten.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from training.errors import TrainingError


def next_version(task_dir: Path) -> int:
    """The highest version present (hidden staging folders aside) plus one."""
    present = [int(p.name) for p in task_dir.iterdir() if p.is_dir() and p.name.isdigit()] if task_dir.is_dir() else []
    return max(present, default=0) + 1


@contextlib.contextmanager
def staged(output_dir: Path, task: str, version: int | None) -> Iterator[tuple[int, Path]]:
    """Yield `(version, staging directory)` to write the version into (`version`, or the next); on a clean exit
    rename it to `output_dir/task/version`, on any exception (Ctrl-C included) remove it. `TrainingError` if
    the store is not writable or the version exists."""
    task_dir = output_dir / task
    try:
        task_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise TrainingError(f"cannot write to the model store {output_dir}: {error.strerror}") from error
    version = version or next_version(task_dir)
    final = task_dir / str(version)
    if final.exists():
        raise TrainingError(f"{final} already exists; pick another --version (a version is never overwritten)")
    _remove_abandoned(task_dir)
    staging = task_dir / f".{version}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir()
    except OSError as error:
        raise TrainingError(f"cannot write to the model store {output_dir}: {error.strerror}") from error
    try:
        yield version, staging
        if final.exists():
            raise TrainingError(f"{final} appeared while this run wrote it; the run's version is discarded")
        os.rename(staging, final)  # atomic within one file system: the service sees all of it or nothing
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _remove_abandoned(task_dir: Path) -> None:
    """Staging folders of runs that were killed (SIGKILL leaves no chance to clean up): hidden, so never served,
    but disk taken; removed when their process no longer runs."""
    for staging in task_dir.glob(".*.staging-*"):
        pid = staging.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(staging, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True

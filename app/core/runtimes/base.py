"""The contract every runtime keeps, as Triton's backends keep theirs: a name, and `load`, which compiles a
model version into a `Compiled` (`app.core.model`: `run` a batch, `describe` itself).

A runtime never decides whether it serves: `app.core.runtimes` holds every runtime in one table, loads the
reference (TensorFlow, which reads the SavedModel as exported) and holds every other to its outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from app.core.metadata import ModelMetadata
from app.core.model import Compiled

Precision = Literal["fp32", "bf16", "int8"]


@dataclass(frozen=True)
class RuntimeOptions:
    """What the service asks of every runtime (from `Settings`): the precision to run in, the threads a
    model call may use (0: one per core), and whether a graph may be frozen where that is faster."""

    precision: Precision = "fp32"
    threads: int = 0
    freeze: bool = True


class Runtime(Protocol):
    """A way to execute a model version."""

    name: str

    def load(self, version_dir: Path, metadata: ModelMetadata, options: RuntimeOptions) -> Compiled:
        """Compile `version_dir` for this machine; raise `ModelLoadError` (one sentence) if it cannot."""
        ...

"""Virtualenvs of their own for programs whose dependencies must not meet the service's: peer servers in
the benchmarks, real protocol clients in the tests. Created once, next to the project, on first use."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from stress.process import ROOT


def ensure(name: str, requirements: list[str]) -> Path:
    """The python of `ROOT/.venv-<name>`, created with `requirements` if it is missing or they changed."""
    venv = ROOT / f".venv-{name}"
    python = venv / "bin" / "python"
    stamp = venv / ".requirements"
    wanted = "\n".join(requirements)
    if not python.exists() or not stamp.exists() or stamp.read_text() != wanted:
        print(f"creating {venv} with {' '.join(requirements)}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *requirements], check=True)
        stamp.write_text(wanted)
    return python

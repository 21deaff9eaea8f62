"""A short smoke run proves the benchmark command still works (the full run is not a CI test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "datasets" / "flower_photos"


@pytest.mark.skipif(not PHOTOS.is_dir(), reason=f"flower photos not found at {PHOTOS}")
@pytest.mark.skipif(not (ROOT / "models" / "flowers").is_dir(), reason="no committed flowers model")
def test_quick_benchmark_runs_and_reports_every_figure(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "benchmarks.serving", "--quick", "--out", str(tmp_path)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["limit"]["images_per_s"] > 0 and report["limit"]["single_image_ms"] > 0
    for level in ("1", "8"):
        assert report["service"][level]["answered_200"] > 0
        assert report["service"][level]["errors_other_than_503"] == 0
    assert report["service_start"]["start_to_ready_s"] > 0 and report["service_start"]["rss_mb"] > 0
    assert "| service | 8 |" in (tmp_path / "results.md").read_text()

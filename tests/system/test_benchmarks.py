"""A short smoke run proves the benchmark command still works (the full run, with the peers, is not a CI
test); the load generator's request encodings are answered by the service."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks import loadgen
from tests.helpers import image_bytes

ROOT = Path(__file__).resolve().parents[2]
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


@pytest.mark.skipif(not PHOTOS.is_dir(), reason=f"flower photos not found at {PHOTOS}")
@pytest.mark.skipif(not (ROOT / "models" / "flowers").is_dir(), reason="no committed flowers model")
def test_variants_compare_settings_against_the_defaults() -> None:
    command = [sys.executable, "-m", "benchmarks.variants", "--rounds", "1", "--concurrency", "1"]
    command += ["--duration-s", "1", "APP_MAX_CONCURRENT_BATCHES=1 APP_MAX_WAIT_S=0"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[1].startswith("| defaults |") and rows[2].startswith(
        "| APP_MAX_CONCURRENT_BATCHES=1 APP_MAX_WAIT_S=0 |"
    )
    cells = rows[1].split("|")
    assert float(cells[3]) > 0 and cells[4].strip() == "1.00"
    assert float(cells[5]) > 0 and cells[6].strip() == "1.00"  # p50, and p50 as a ratio of the defaults


def test_variants_refuse_a_malformed_setting() -> None:
    command = [sys.executable, "-m", "benchmarks.variants", "APP_FREEZE_MODELS"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2 and "not space-separated KEY=VALUE" in result.stderr


def test_model_benchmark_times_every_runtime_and_reports_parity(tmp_path: Path) -> None:
    from tests.fakes import export_tiny_model

    version_dir = export_tiny_model(tmp_path / "models", size=16)
    command = [sys.executable, "-m", "benchmarks.models", "--model-dir", str(version_dir.parents[1]), "--repeats", "2"]
    command += ["--runtime", "tensorflow", "openvino", "litert"]  # LiteRT in a virtualenv of its own
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    (task,) = report["tasks"].values()
    assert set(task["runtimes"]) == {"tensorflow-fp32", "openvino-fp32", "litert-fp32"}
    assert report["machine"]["cores"] >= 1 and report["machine"]["cpu"]  # figures say what they ran on
    for timing in task["runtimes"].values():
        assert timing["single_image_ms"] > 0 and timing["batch_32_ms"] > 0
        assert timing["max_difference_vs_savedmodel"] <= 1e-4 and timing["same_best_class"]


def test_model_benchmark_sweeps_batches_and_states_ratios_to_tensorflow(tmp_path: Path) -> None:
    from tests.fakes import export_tiny_model

    version_dir = export_tiny_model(tmp_path / "models", size=16)
    command = [sys.executable, "-m", "benchmarks.models", "--model-dir", str(version_dir.parents[1]), "--repeats", "2"]
    command += ["--task", version_dir.parent.name, "--sweep", "1", "4"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    (task,) = json.loads(result.stdout)["tasks"].values()
    for timing in task["runtimes"].values():
        assert set(timing["sweep_ms_per_image"]) == {"1", "4"} and timing["best_batch"] in (1, 4)
        assert timing["best_images_per_s"] == pytest.approx(
            1000 / timing["sweep_ms_per_image"][str(timing["best_batch"])], rel=0.01
        )
    assert task["versus_tensorflow"]["tensorflow-fp32"] == {"best_throughput": 1.0, "single_image_time": 1.0}
    assert task["versus_tensorflow"]["openvino-fp32"]["best_throughput"] > 0


@pytest.mark.parametrize(("body", "path"), [("multipart", "/predict/shades"), ("v1-b64", "/v1/models/shades:predict")])
def test_load_generator_bodies_are_answered_by_the_service(
    live_server: Callable[..., tuple[str, int]], tmp_path: Path, body: str, path: str
) -> None:
    """The load generator's two request encodings (multipart for the service, BentoML and Ray Serve; the v1
    JSON of TF Serving and KServe) are well-formed: the service answers every request with 200."""
    host, port = live_server()
    photos = []
    for i, colour in enumerate(("red", "navy")):
        photos.append(tmp_path / f"{i}.png")
        photos[-1].write_bytes(image_bytes(color=colour))
    result = asyncio.run(loadgen.run(f"http://{host}:{port}{path}", "file", photos, 2, 1.0, 0.2, body))
    assert result["answered_200"] == result["requests"] and int(str(result["requests"])) > 0


def test_load_generator_reads_chunked_answers(tmp_path: Path) -> None:
    """Ray Serve's proxy streams its answers (Transfer-Encoding: chunked): every one is read to its end, so the
    next answer on the same keep-alive connection parses."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (head := await reader.readuntil(b"\r\n\r\n")) and head:
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            writer.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b'7\r\n{"a": 1\r\n1;ext=1\r\n}\r\n0\r\nTrailer: x\r\n\r\n'
            )
            await writer.drain()

    async def run() -> dict[str, object]:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        photo = tmp_path / "a.png"
        photo.write_bytes(image_bytes())
        async with server:
            return await loadgen.run(f"http://127.0.0.1:{port}/", "file", [photo], 2, 0.5, 0.1)

    result = asyncio.run(run())
    assert result["answered_200"] == result["requests"] and result["errors_other_than_503"] == 0
    assert int(str(result["requests"])) > 10

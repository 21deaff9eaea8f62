"""The project installs the way Python projects install: a wheel with the right metadata, whose
`pip install` in a fresh virtualenv gives a working `image-classifier` command."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(ROOT)], check=True, capture_output=True
    )
    (built,) = out.glob("image_classifier_service-*.whl")
    return built


def test_the_wheel_carries_the_packages_their_data_and_the_metadata(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(info).decode())
        entry_points = archive.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert {
        "app/http/application.py",
        "app/http/static/index.html",
        "training/flowers.py",
        "app/core/runtimes/tensorflow.py",
    } <= names
    assert not any(n.startswith(("models/", "tests/", "benchmarks/")) for n in names)  # models are data, not code
    assert metadata["Name"] == "image-classifier-service" and metadata["Requires-Python"] == "<3.12,>=3.11"
    requires = metadata.get_all("Requires-Dist")
    assert any(r.startswith("tensorflow-cpu") for r in requires) and any(r.startswith("fastapi") for r in requires)
    assert {"train", "dev", "bench"} <= set(metadata.get_all("Provides-Extra"))
    assert "image-classifier = app.__main__:main" in entry_points


@pytest.mark.e2e
def test_pip_install_in_a_fresh_virtualenv_serves(wheel: Path, tmp_path: Path, real_model_dir: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", str(wheel)], check=True)
    from stress.process import free_port

    port = free_port()
    env = {**os.environ, "APP_MODEL_DIR": str(real_model_dir), "APP_PORT": str(port), "APP_HOST": "127.0.0.1"}
    server = subprocess.Popen(
        [str(venv / "bin" / "image-classifier")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
                    assert answer.status == 200
                    break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "the installed service did not start"
                time.sleep(0.5)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as page:
            assert b"Image classifier" in page.read()  # the web page came with the wheel
    finally:
        server.terminate()
        server.wait(60)

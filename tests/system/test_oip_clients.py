"""NVIDIA's tritonclient[http] and the kserve SDK's v2 REST client, unmodified, against a live service:
server and model metadata, readiness, and infer with BYTES and UINT8 inputs, as JSON and with the binary
tensor data extension, with and without gzip compression. They run in a virtualenv of their own."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from stress.process import ROOT, service
from stress.venvs import ensure
from tests.helpers import image_bytes

CLIENTS = ["tritonclient[http]==2.73.0", "kserve==0.21.0", "pillow==13.0.0", "numpy==2.4.6"]
pytestmark = pytest.mark.e2e


def test_real_oip_clients_talk_to_the_service(real_model_dir: Path, tmp_path: Path) -> None:
    python = ensure("clients", CLIENTS)
    photo = tmp_path / "gray.jpg"
    photo.write_bytes(image_bytes((120, 120, 120), size=(64, 48), fmt="JPEG"))
    with service({"APP_MODEL_DIR": str(real_model_dir), "APP_LOG_LEVEL": "warning"}) as live:
        script = ROOT / "tests" / "clients" / "oip_clients.py"
        command = [str(python), str(script), "--url", live.url, "--task", "shades", "--image", str(photo)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    triton, kserve = report["tritonclient"], report["kserve"]
    for calls in (triton, kserve):
        assert calls["is_server_live"] is True and calls["is_server_ready"] is True and calls["is_model_ready"] is True
    assert triton["server_metadata"]["name"] == "image-classifier-service"
    assert "binary_tensor_data" in triton["server_metadata"]["extensions"]
    assert [i["name"] for i in triton["model_metadata"]["inputs"]] == ["images"]
    infers = {
        **{f"tritonclient {k}": v for k, v in triton.items() if k.startswith("infer")},
        **{f"kserve {k}": v for k, v in kserve.items() if k.startswith("infer")},
    }
    assert len(infers) == 12  # tritonclient: 2 datatypes x json/binary x plain/gzip; kserve: 2 x json/binary
    answers = {(v["top"], v["confidence"], v["ood_score"]) for v in infers.values()}
    assert len(answers) == 1, infers  # every path classified the same image the same way

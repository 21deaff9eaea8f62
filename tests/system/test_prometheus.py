"""Monitoring against the real thing: promtool checks the project's rules and runs their unit tests; a real
Prometheus (Debian's, installed by scripts/system-deps.sh) scrapes a running service, sees the drift alert go
pending once the traffic drifts, and answers every query of the Grafana dashboard with data."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from PIL import Image

from stress.process import ROOT, Live, free_port, service
from tests.fakes import export_tiny_model
from tests.helpers import image_bytes

RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
RULES_TEST = ROOT / "deploy" / "prometheus" / "rules_test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "image-classifier.json"
PROMTOOL, PROMETHEUS = shutil.which("promtool"), shutil.which("prometheus")
pytestmark = pytest.mark.skipif(PROMTOOL is None, reason="promtool not found (make system-deps installs prometheus)")


def test_the_rules_are_valid_and_pass_their_unit_tests() -> None:
    assert PROMTOOL is not None
    checked = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [PROMTOOL, "test", "rules", str(RULES_TEST)], capture_output=True, text=True, check=False, cwd=RULES.parent
    )
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr


def _query(base: str, path: str, **params: str) -> dict:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}" if params else f"{base}{path}"
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.loads(answer.read())


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Live, str]]:
    if PROMETHEUS is None:
        pytest.skip("prometheus not found (make system-deps installs Debian's prometheus)")
    root = tmp_path_factory.mktemp("monitored")
    deciles = {f"{q / 10:g}": -0.7 + q / 100 for q in range(1, 10)}
    guarantee = {"alpha": 0.05, "delta": 0.1, "calibration_examples": 500, "expected_flagged": 0.03}
    # The tiny model's weights are random: a threshold far above its energies keeps genuine photos unflagged,
    # so that what drifts is the class mix (one class only, where training had two halves).
    ood = {
        "method": "energy",
        "output": "ood_score",
        "threshold": 100.0,
        "guarantee": guarantee,
        "validation_score_quantiles": deciles,
    }
    dataset = {"name": "fake", "train_examples": 100, "validation_examples": 50, "class_counts": [50, 50]}
    export_tiny_model(root / "models", ood=ood, dataset=dataset)
    env = {"APP_MODEL_DIR": str(root / "models"), "APP_LOG_LEVEL": "warning", "APP_DRIFT_MIN_IMAGES": "20"}
    with service(env) as live:
        port = free_port()
        target = live.url.removeprefix("http://")
        config = root / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"rule_files: [{RULES}]\n"
            f"scrape_configs: [{{job_name: image-classifier, static_configs: [{{targets: ['{target}']}}]}}]\n"
        )
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={root / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(root / "prometheus.log").open("w"),
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if _query(base, "/api/v1/query", query='up{job="image-classifier"}')["data"]["result"]:
                        break
                except OSError:
                    pass
                assert process.poll() is None and time.monotonic() < deadline, (root / "prometheus.log").read_text()
                time.sleep(0.5)
            yield live, base
        finally:
            process.terminate()
            process.wait(10)


def _drive(live: Live) -> None:
    """Traffic that drifts: every photo alike (one class, where training had two halves), and noise."""
    rng = np.random.default_rng(0)
    noise = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(4)]
    files = [image_bytes((250, 250, 250)) for _ in range(36)]
    for image in noise:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        files.append(buffer.getvalue())
    with httpx.Client(base_url=live.url, timeout=30) as client:
        for start in range(0, len(files), 8):
            chunk = [("file", (f"{i}.png", data, "image/png")) for i, data in enumerate(files[start : start + 8])]
            assert client.post("/predict/shades", files=chunk).status_code == 200


def test_the_drift_alert_goes_pending_in_a_real_prometheus(scraped: tuple[Live, str]) -> None:
    live, base = scraped
    _drive(live)
    assert httpx.get(f"{live.url}/models/shades/drift").json()["drift"] is True
    deadline = time.monotonic() + 60
    while True:
        alerts = _query(base, "/api/v1/alerts")["data"]["alerts"]
        states = {a["labels"]["alertname"]: a["state"] for a in alerts}
        if states.get("ImageClassifierDrift") in ("pending", "firing"):
            break
        assert time.monotonic() < deadline, f"no drift alert; alerts: {states}"
        time.sleep(1)
    drift = next(a for a in alerts if a["labels"]["alertname"] == "ImageClassifierDrift")
    assert drift["labels"]["task"] == "shades" and drift["labels"]["version"] == "1"


def test_every_dashboard_panel_queries_data_from_the_live_prometheus(scraped: tuple[Live, str]) -> None:
    live, base = scraped
    _drive(live)
    queries = [t["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"] for t in panel["targets"]]
    assert len(queries) >= 12
    empty: list[str] = []
    deadline = time.monotonic() + 45
    for query in queries:
        while True:
            answer = _query(base, "/api/v1/query", query=query)
            assert answer["status"] == "success", (query, answer)
            values = [float(r["value"][1]) for r in answer["data"]["result"]]
            if any(np.isfinite(values)):  # a quantile of a route with no request in the window is NaN
                break
            if time.monotonic() > deadline:
                empty.append(query)
                break
            time.sleep(1)
    assert not empty, f"panels without data: {empty}"

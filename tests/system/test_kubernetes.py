"""The Kubernetes manifests (deploy/kubernetes, kustomize base and overlays), rendered with
`kubectl kustomize` and checked offline: against the Kubernetes schemas (kubernetes-validate --strict) and
by checkov's policies, with every exception justified in the manifest that needs it. The custom resources
(ServiceMonitor, ScaledObject, InferenceService) have no schema offline and are reported as such."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from stress.process import ROOT
from stress.venvs import ensure

KUSTOMIZATIONS = [
    ROOT / "deploy" / "kubernetes" / "base",
    *sorted((ROOT / "deploy" / "kubernetes" / "overlays").iterdir()),
    ROOT / "deploy",  # the monitored deployment: the prometheus overlay and the Grafana dashboard
]
TOOLS = ["kubernetes-validate==1.37.0", "checkov==3.3.30"]
CUSTOM_KINDS = {"ServiceMonitor", "ScaledObject", "InferenceService"}


@pytest.fixture(scope="module")
def tools() -> Path:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl (for kustomize) is not installed: install Debian's kubernetes-client or Google's kubectl")
    return ensure("k8s", TOOLS).parent


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_manifests_validate_and_pass_the_policy_scan(tools: Path, kustomization: Path, tmp_path: Path) -> None:
    rendered = subprocess.run(["kubectl", "kustomize", str(kustomization)], capture_output=True, text=True, check=True)
    manifest = tmp_path / f"{kustomization.name}.yaml"
    manifest.write_text(rendered.stdout)
    kinds = {line.split(":", 1)[1].strip() for line in rendered.stdout.splitlines() if line.startswith("kind:")}
    assert kinds, "nothing rendered"

    validate = subprocess.run(
        [str(tools / "kubernetes-validate"), "--strict", "-k", "1.32.0", str(manifest)],
        capture_output=True,
        text=True,
        check=False,
    )
    print(validate.stdout.strip())
    assert validate.returncode == 0 and "ERROR" not in validate.stdout, validate.stdout + validate.stderr
    unvalidated = {
        line.split("kind ")[1].split(" ")[0] for line in validate.stdout.splitlines() if "Couldn't find schema" in line
    }
    assert unvalidated <= CUSTOM_KINDS, unvalidated

    scan = subprocess.run(
        [str(tools / "checkov"), "-f", str(manifest), "--framework", "kubernetes", "--output", "json", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
    )
    if kinds <= CUSTOM_KINDS:  # checkov has no policy for these kinds and says so with an empty result
        return
    summary = json.loads(scan.stdout)["summary"]
    print(
        f"checkov {kustomization.name}: {summary['passed']} passed, {summary['failed']} failed, {summary['skipped']} skipped"
    )
    assert summary["failed"] == 0, scan.stdout[-4000:]


def test_the_monitored_deployment_provisions_the_dashboard_grafana_loads(tools: Path) -> None:
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "deploy")], capture_output=True, text=True, check=True
    )
    (config_map,) = [d for d in yaml.safe_load_all(rendered.stdout) if d and d["kind"] == "ConfigMap"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"  # what Grafana's sidecar watches for
    dashboard = ROOT / "deploy" / "grafana" / "dashboards" / "image-classifier.json"
    assert json.loads(config_map["data"]["image-classifier.json"]) == json.loads(dashboard.read_text())

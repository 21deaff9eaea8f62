"""End to end: build the image, `docker compose up`, wait for healthy, classify a real image from the
container, tear down. Skipped, with the reason printed, only where no Docker engine can run."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
DOCKER = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else (shutil.which("docker") or "docker")
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
pytestmark = pytest.mark.e2e


def _run(*args: str, timeout: float = 900, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env, check=False)


def _engine() -> str | None:
    """None when a Docker engine answers (starting dockerd if we may), else why not."""
    if shutil.which(DOCKER) is None and not Path(DOCKER).exists():
        return "no docker client installed (make system-deps installs Debian's docker.io)"
    if _run(DOCKER, "info", timeout=30).returncode == 0:
        return None
    dockerd = shutil.which("dockerd")
    if dockerd is None or os.geteuid() != 0:
        return "no Docker engine is running and dockerd cannot be started here (needs root and docker.io)"
    with open("/tmp/dockerd-tests.log", "ab") as log:
        subprocess.Popen([dockerd], stdout=log, stderr=log, start_new_session=True)
    for _ in range(60):
        if _run(DOCKER, "info", timeout=30).returncode == 0:
            return None
        time.sleep(1)
    return "dockerd did not start (see /tmp/dockerd-tests.log)"


@pytest.fixture(scope="module")
def compose() -> Iterator[tuple[list[str], dict[str, str], int]]:
    reason = _engine()
    if reason:
        pytest.skip(reason)
    if _run(DOCKER, "compose", "version", timeout=30).returncode != 0:
        pytest.skip("the Docker Compose v2 plugin is not installed (make system-deps installs it)")
    base = _run("bash", "scripts/docker-offline-base.sh", timeout=1200)
    assert base.returncode == 0, base.stdout + base.stderr
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, HOST_PORT=str(port), DOCKER_BUILDKIT="1", PATH=f"/usr/bin:{os.environ['PATH']}")
    if CA_BUNDLE.is_file():  # behind a TLS-intercepting proxy, pip in the build needs the host's CA
        env["EXTRA_CA_BUNDLE"] = str(CA_BUNDLE)
    command = [DOCKER, "compose", "-p", f"classifier-e2e-{uuid.uuid4().hex[:8]}"]
    try:
        yield command, env, port
    finally:
        logs = _run(*command, "logs", "--tail", "20", env=env, timeout=60)
        print(logs.stdout[-3000:])
        down = _run(*command, "down", "--volumes", "--remove-orphans", env=env, timeout=120)
        print("compose down:", down.returncode, down.stderr.strip()[-500:])


def test_compose_up_becomes_healthy_and_classifies(compose: tuple[list[str], dict[str, str], int]) -> None:
    command, env, port = compose
    built = _run(*command, "build", "classifier", env=env, timeout=1800)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    size = _run(DOCKER, "image", "inspect", "image-classifier:cpu", "--format", "{{.Size}}").stdout.strip()
    print(f"image image-classifier:cpu: {int(size) / 1e6:.0f} MB")

    started = time.monotonic()
    up = _run(*command, "up", "-d", "classifier", env=env, timeout=300)
    assert up.returncode == 0, up.stderr
    container = _run(*command, "ps", "-q", "classifier", env=env).stdout.strip()
    status = ""
    while time.monotonic() - started < 300:
        status = _run(DOCKER, "inspect", "--format", "{{.State.Health.Status}}", container).stdout.strip()
        if status in ("healthy", "unhealthy"):
            break
        time.sleep(0.5)
    assert status == "healthy", status
    print(f"docker compose up -> healthy in {time.monotonic() - started:.1f} s")

    user = _run(DOCKER, "exec", container, "id", "-u").stdout.strip()
    assert user != "0", "the service must not run as root"

    models = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/models", timeout=10))
    served = {m["task"]: m for m in models}
    task = "flowers" if "flowers" in served else models[0]["task"]
    photo = sorted((ROOT.parent / "shared" / "datasets" / "flower_photos" / "sunflowers").glob("*.jpg"))
    if task == "flowers" and photo:
        data, name = photo[0].read_bytes(), photo[0].name
    else:
        buffer = io.BytesIO()
        Image.new("RGB", (300, 200), (240, 200, 40)).save(buffer, format="JPEG")
        data, name = buffer.getvalue(), "generated.jpg"
    boundary = "e2eboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/predict/{task}",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    answer = json.load(urllib.request.urlopen(request, timeout=30))
    print(f"prediction from the container ({task}, {name}):", json.dumps(answer["predictions"][0]))
    assert answer["task"] == task and answer["predictions"][0]["label"] in served[task]["labels"]

    mounts = json.loads(_run(DOCKER, "inspect", "--format", "{{json .Mounts}}", container).stdout)
    assert any(m["Destination"] == "/srv/models" and not m["RW"] for m in mounts), mounts
    host = json.loads(_run(DOCKER, "inspect", "--format", "{{json .HostConfig}}", container).stdout)
    assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"], host
    assert "no-new-privileges:true" in host["SecurityOpt"], host["SecurityOpt"]
    write = _run(DOCKER, "exec", container, "sh", "-c", "touch /srv/x 2>&1 || echo refused")
    assert "refused" in write.stdout  # the root filesystem is read-only


def test_the_gpu_profile_does_not_take_the_cpu_services_port() -> None:
    if shutil.which(DOCKER) is None or _run(DOCKER, "compose", "version", timeout=30).returncode != 0:
        pytest.skip("the Docker Compose v2 plugin is not installed (make system-deps installs it)")
    rendered = _run(DOCKER, "compose", "--profile", "gpu", "config", "--format", "json", timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    services = json.loads(rendered.stdout)["services"]
    published = {name: [p["published"] for p in services[name]["ports"]] for name in ("classifier", "classifier-gpu")}
    every = published["classifier"] + published["classifier-gpu"]
    assert len(published["classifier"]) == len(published["classifier-gpu"]) == 2, published  # HTTP and gRPC each
    assert len(every) == len(set(every)), published

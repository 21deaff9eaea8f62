"""Model lifecycle with the fake model: new versions load while serving and switch atomically, broken
ones never replace a good one, removed ones and removed tasks stop, version pinning, the repository
API and its admin token."""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.fakes import write_model_dir
from tests.helpers import image_bytes

PNG = image_bytes((40, 40, 40))
ADMIN = {"Authorization": "Bearer s3cret"}


def predict(client, task: str = "shades", **params) -> httpx.Response:
    return client.post(f"/predict/{task}", files={"file": ("g.png", PNG)}, params=params)


def wait_for(condition, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def publish(root: Path, version: int, task: str = "shades", **overrides) -> Path:
    """Copy-then-rename, as the README says to publish."""
    staging = write_model_dir(root / task / ".staging", task=task, version=version, **overrides)
    target = root / task / str(version)
    staging.rename(target)
    shutil.rmtree(root / task / ".staging")
    return target


def test_a_new_version_takes_over_while_clients_keep_sending(live_server, model_dir: Path, loader) -> None:
    loader.delay_s = 0.002
    host, port = live_server(model_poll_s=0.1)
    seen: Counter[int] = Counter()
    failures: list[str] = []
    stop = threading.Event()
    after_switch: list[int] = []
    switched = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=f"http://{host}:{port}", timeout=10) as http:
            while not stop.is_set():
                response = predict(http)
                if response.status_code != 200:
                    failures.append(response.text)
                    continue
                version = response.json()["model_version"]
                seen[version] += 1
                if switched.is_set():
                    after_switch.append(version)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    publish(model_dir, 2)
    with httpx.Client(base_url=f"http://{host}:{port}") as http:
        wait_for(lambda: http.get("/models/shades").json()["version"] == 2)
        time.sleep(0.3)  # requests that held v1 when it was retired have finished by now
        switched.set()
        time.sleep(0.5)
        publish(model_dir, 3, labels=["only one"])  # broken: metadata and model disagree
        time.sleep(1.0)
        assert http.get("/models/shades").json()["version"] == 2
        index = {(e["name"], e["version"]): e for e in http.post("/v2/repository/index").json()}
    stop.set()
    for thread in threads:
        thread.join()
    assert failures == []
    assert set(seen) == {1, 2} and seen[1] > 0 and seen[2] > 0
    assert after_switch and set(after_switch) == {2}
    assert index[("shades", "2")]["state"] == "READY"
    assert index[("shades", "3")]["state"] == "UNAVAILABLE" and "labels" in index[("shades", "3")]["reason"]


def test_versions_served_and_pinning(make_client, model_dir: Path) -> None:
    write_model_dir(model_dir, version=2)
    write_model_dir(model_dir, version=3)
    client = make_client(versions_served=2)
    assert predict(client).json()["model_version"] == 3
    assert predict(client, version=2).json()["model_version"] == 2
    missing = predict(client, version=1)
    assert missing.status_code == 404
    assert missing.json()["detail"] == (
        "model 'shades' does not serve version 1 (UNAVAILABLE: not among the latest 2 served); it serves 3, 2"
    )
    assert client.get("/models/shades", params={"version": 2}).json()["version"] == 2
    assert client.get("/v2/models/shades").json()["versions"] == ["3", "2"]
    assert client.get("/v2/models/shades/versions/2/ready").json() == {"name": "shades", "version": "2", "ready": True}
    assert client.get("/v2/models/shades/versions/1/ready").status_code == 404
    body = {"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": [_b64(PNG)]}]}
    answer = client.post("/v2/models/shades/versions/2/infer", json=body).json()
    assert answer["model_version"] == "2"


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def test_removed_versions_and_tasks_stop_and_new_tasks_start(make_client, model_dir: Path) -> None:
    write_model_dir(model_dir, version=2)
    client = make_client(model_poll_s=0.05)
    assert predict(client).json()["model_version"] == 2
    shutil.rmtree(model_dir / "shades" / "2")
    wait_for(lambda: predict(client).json().get("model_version") == 1)
    publish(model_dir, 1, task="tones")
    wait_for(lambda: predict(client, task="tones").status_code == 200)
    shutil.rmtree(model_dir / "shades")
    wait_for(lambda: predict(client).status_code == 404)
    assert "served tasks: tones" in predict(client).json()["detail"]


def test_a_directory_still_changing_is_not_loaded(make_client, model_dir: Path, loader) -> None:
    client = make_client(model_poll_s=0.2)
    path = write_model_dir(model_dir, version=2)
    for i in range(30):  # a slow copy: a file grows several times between two polls
        (path / "part.bin").write_bytes(b"x" * (i + 1))
        time.sleep(0.04)
        assert predict(client).json()["model_version"] == 1
    wait_for(lambda: predict(client).json()["model_version"] == 2)


def test_a_failed_version_is_logged_once_and_retried_when_its_files_change(
    make_client, model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(model_poll_s=0.05)
    broken = publish(model_dir, 2, labels=["only one"])
    with caplog.at_level(logging.ERROR, logger="app.core.registry"):
        time.sleep(0.6)  # about ten polls
    assert caplog.text.count("refusing model shades v2") == 1
    assert predict(client).json()["model_version"] == 1
    meta = json.loads((broken / "metadata.json").read_text())
    (broken / "metadata.json").write_text(json.dumps({**meta, "labels": ["dark", "light"]}))
    wait_for(lambda: predict(client).json()["model_version"] == 2)


def test_repository_api_needs_the_admin_token(make_client) -> None:
    for closed in (make_client(), make_client(admin_token="  ")):  # compose passes "" when it is unset
        assert (
            closed.post("/v2/repository/models/shades/unload", headers={"Authorization": "Bearer "}).status_code == 403
        )
        assert "APP_ADMIN_TOKEN" in closed.post("/v2/repository/models/shades/unload").json()["error"]
    client = make_client(admin_token="s3cret", model_poll_s=0.05)
    assert client.post("/v2/repository/models/shades/unload").status_code == 403
    wrong = client.post("/v2/repository/models/shades/unload", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403 and "admin token" in wrong.json()["error"]
    assert client.post("/v2/repository/models/shades/unload", headers=ADMIN).json() == {}
    gone = predict(client)
    assert gone.status_code == 404 and "unloaded" in gone.json()["detail"]
    time.sleep(0.3)  # polls leave an unloaded task alone
    assert predict(client).status_code == 404
    index = client.post("/v2/repository/index").json()
    assert index == [{"name": "shades", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"}]
    assert client.post("/v2/repository/models/shades/load", headers=ADMIN).json() == {}
    assert predict(client).status_code == 200
    assert client.post("/v2/repository/index", json={"ready": True}).json() == [
        {"name": "shades", "version": "1", "state": "READY", "reason": ""}
    ]
    assert client.post("/v2/repository/models/nothing/load", headers=ADMIN).status_code == 404


def test_loading_a_task_whose_versions_all_fail_is_400(make_client, model_dir: Path) -> None:
    write_model_dir(model_dir, task="broken", labels=["one"])
    client = make_client(admin_token="s3cret", model_poll_s=0)
    answer = client.post("/v2/repository/models/broken/load", headers=ADMIN)
    assert answer.status_code == 400 and answer.json()["error"].startswith("failed to load 'broken': v1: ")

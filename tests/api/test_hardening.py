"""What hostile clients send, answered in-process with the fake model: echoed surrogates, loose UINT8
values, oversized JSON, bodies beyond the in-flight budget, decode bombs, fuzzed images. Never a 5xx."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading

import numpy as np
import pytest
from PIL import Image

from app.core import decoding
from app.core.decoding import Decoder
from app.core.errors import Overloaded, PayloadTooLarge
from app.core.imaging import ImageSpec
from app.core.metrics import Metrics
from app.core.settings import Settings
from tests.helpers import image_bytes

PNG = base64.b64encode(image_bytes((0, 0, 0))).decode()


def infer_raw(client, body: bytes):
    return client.post("/v2/models/shades/infer", content=body, headers={"content-type": "application/json"})


def test_a_lone_surrogate_is_a_clear_422_not_a_500(client) -> None:
    # json.dumps writes the surrogate as the escape \\udfff: valid JSON text, not valid Unicode once decoded.
    for field in ("id", "datatype"):
        tensor = {"name": "images", "shape": [1], "datatype": "BYTES", "data": [PNG]}
        body = {"id": "req", "inputs": [tensor]}
        (body if field == "id" else tensor)[field] = "\udfff"
        response = infer_raw(client, json.dumps(body).encode())
        assert response.status_code == 422 and "surrogate" in response.json()["error"], response.text


def test_responses_that_echo_a_surrogate_are_still_json() -> None:
    from app.http.application import SafeJSONResponse

    rendered = SafeJSONResponse({"filename": "a\udfffb.png"}).body
    assert rendered == b'{"filename":"a\\udfffb.png"}'
    assert json.loads(rendered) == {"filename": "a\udfffb.png"}


def test_undecodable_filenames_are_answered(client) -> None:
    raw = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="\xed\xbf\xbf\xff.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + image_bytes() + b"\r\n--b--\r\n"
    )
    response = client.post("/predict/shades", content=raw, headers={"content-type": "multipart/form-data; boundary=b"})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("values", "found"),
    [([7.9], "float"), (["7"], "str"), ([True], "bool"), ([1, True], "bool"), ([None], "NoneType")],
)
def test_uint8_takes_only_json_integers(client, values: list, found: str) -> None:
    data = values + [0] * (16 * 16 * 3 - len(values))
    tensor = {"name": "images", "shape": [1, 16, 16, 3], "datatype": "UINT8", "data": data}
    response = infer_raw(client, json.dumps({"inputs": [tensor]}).encode())
    assert response.status_code == 422
    assert response.json()["error"] == f"UINT8 data must be JSON integers 0..255; found {found}"


def test_uint8_accepts_nested_rows(client) -> None:
    pixels = np.full((1, 16, 16, 3), 255, np.uint8).tolist()  # nested lists, as the protocol allows
    tensor = {"name": "images", "shape": [1, 16, 16, 3], "datatype": "UINT8", "data": pixels}
    response = infer_raw(client, json.dumps({"inputs": [tensor]}).encode())
    assert response.status_code == 200 and response.json()["outputs"][0]["data"] == [0.0, 1.0]


def test_json_bodies_have_their_own_limit_and_large_ones_parse_off_the_loop(make_client) -> None:
    client = make_client(max_json_bytes=200_000)
    pixels = np.zeros((1, 16, 16, 3), np.uint8).ravel().tolist()
    tensor = {"name": "images", "shape": [1, 16, 16, 3], "datatype": "UINT8", "data": pixels}
    padded = json.dumps({"id": "x" * 100_000, "inputs": [tensor]}).encode()  # above the inline size: worker thread
    assert infer_raw(client, padded).status_code == 200
    too_big = json.dumps({"id": "x" * 300_000, "inputs": [tensor]}).encode()
    response = infer_raw(client, too_big)
    assert response.status_code == 413 and "200,000-byte limit" in response.json()["error"]


def test_health_routes_answer_head(client) -> None:
    for path in ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"):
        response = client.head(path)
        assert response.status_code == 200 and response.content == b"", path


def test_openapi_lists_every_status_the_routes_return(client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"404", "503"} <= set(paths["/v2/models/{task}"]["get"]["responses"])
    assert {"404", "503"} <= set(paths["/v2/models/{task}/ready"]["get"]["responses"])
    assert {"400", "404", "408", "413", "415", "422", "503"} <= set(
        paths["/v2/models/{task}/infer"]["post"]["responses"]
    )
    assert {"400", "404", "408", "413", "415", "422", "503"} <= set(paths["/predict/{task}"]["post"]["responses"])
    assert "head" in paths["/healthz"] and "head" in paths["/readyz"]


def test_bodies_beyond_the_in_flight_budget_are_refused_before_reading(make_client) -> None:
    client = make_client(max_inflight_body_bytes=2**20)
    response = client.post("/predict/shades", files={"file": ("big.png", b"\0" * (2**20 + 1))})
    assert response.status_code == 503 and "in flight" in response.json()["detail"]
    assert response.headers["retry-after"] == "1"
    assert client.post("/predict/shades", files={"file": ("ok.png", image_bytes())}).status_code == 200


def test_a_decode_over_the_memory_limit_is_413_before_decoding(make_client) -> None:
    client = make_client(max_decode_bytes=2**20 * 32)
    wide = io.BytesIO()
    Image.fromarray(np.full((2000, 2000), 1000, np.uint16)).save(wide, format="PNG")  # 4 Mpx of 16-bit gray
    ok = client.post("/predict/shades", files={"file": ("gray16.png", wide.getvalue())})
    assert ok.status_code == 200, ok.text
    rgba = io.BytesIO()
    Image.new("RGBA", (2400, 2400), (1, 2, 3, 4)).save(rgba, format="PNG")  # 5.8 Mpx x 8 bytes > 32 MiB
    response = client.post("/predict/shades", files={"file": ("rgba.png", rgba.getvalue())})
    assert response.status_code == 413
    assert "rgba.png: decoding this 2400x2400 RGBA PNG image would take" in response.json()["detail"]


async def test_large_decodes_take_one_lane_in_order_and_refuse_beyond_its_queue(monkeypatch) -> None:
    gate = threading.Event()
    order: list[int] = []
    real_decode = decoding.decode

    def gated_decode(header, spec):
        gate.wait(5)
        order.append(header.image.size[0])
        return real_decode(header, spec)

    monkeypatch.setattr(decoding, "decode", gated_decode)
    decoder = Decoder(Settings(small_decode_bytes=0, max_large_waiting=2), Metrics())
    spec = ImageSpec(8, 8, 3)
    first = asyncio.create_task(decoder("t", image_bytes(size=(30, 30)), spec, "a"))
    second = asyncio.create_task(decoder("t", image_bytes(size=(40, 40)), spec, "b"))
    while decoder.large_waiting < 2:  # noqa: ASYNC110  # the decoder exposes a count, not an event
        await asyncio.sleep(0.01)
    with pytest.raises(Overloaded, match="2 large images are waiting"):
        await decoder("t", image_bytes(size=(50, 50)), spec, "c")
    gate.set()
    assert [a.shape for a in await asyncio.gather(first, second)] == [(8, 8, 3), (8, 8, 3)]
    assert order == [30, 40] and decoder.large_waiting == 0
    with pytest.raises(PayloadTooLarge, match="c: "):  # client errors name the upload
        await Decoder(Settings(max_decode_bytes=2**20), Metrics())("t", image_bytes(size=(600, 600)), spec, "c")
    decoder.shutdown()


def test_fuzzed_images_never_get_a_5xx(client) -> None:
    """A few hundred mutated images of every format through the API (`python -m stress.fuzz` runs more)."""
    from stress.fuzz import mutations

    statuses: dict[int, int] = {}
    for name, data in mutations(count=300, seed=7):
        status = client.post("/predict/shades", files={"file": (name, data)}).status_code
        statuses[status] = statuses.get(status, 0) + 1
    assert all(status < 500 for status in statuses), statuses
    assert statuses.get(200, 0) > 10 and statuses.get(400, 0) > 10, statuses

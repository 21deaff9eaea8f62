"""Real Open Inference Protocol clients against a live service: NVIDIA's `tritonclient[http]` and the
`kserve` SDK's v2 REST client. Runs in a virtualenv of its own (the clients' dependencies are theirs);
prints one JSON object: what each call returned.

    python tests/clients/oip_clients.py --url http://127.0.0.1:8000 --task flowers --image rose.jpg

JSON `BYTES` elements are base64 text (JSON holds no raw bytes); binary `BYTES` elements are the files.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
from typing import Any

import numpy as np
import tritonclient.http as triton
from PIL import Image


def _pixels(image: bytes, height: int, width: int) -> np.ndarray:
    decoded = Image.open(io.BytesIO(image)).convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(decoded, dtype=np.uint8)[None]


def _summary(probabilities: np.ndarray, ood: np.ndarray | None, labels: list[str] | None = None) -> dict[str, Any]:
    top = int(np.argmax(probabilities[0]))
    return {
        "shape": list(probabilities.shape),
        "top": labels[top] if labels else top,
        "confidence": round(float(probabilities[0, top]), 4),
        "ood_score": None if ood is None else round(float(ood[0]), 4),
    }


def run_tritonclient(url: str, task: str, image: bytes) -> dict[str, Any]:
    client = triton.InferenceServerClient(url=url.removeprefix("http://"))
    report: dict[str, Any] = {
        "is_server_live": client.is_server_live(),
        "is_server_ready": client.is_server_ready(),
        "is_model_ready": client.is_model_ready(task),
        "server_metadata": client.get_server_metadata(),
        "model_metadata": client.get_model_metadata(task),
    }
    model = report["model_metadata"]
    (source,) = model["inputs"]
    height, width = source["shape"][1], source["shape"][2]
    outputs = [o["name"] for o in model["outputs"]]
    for datatype in ("BYTES", "UINT8"):
        for binary in (False, True):
            for compression in (None, "gzip"):
                if datatype == "BYTES":
                    data = np.array([image if binary else base64.b64encode(image)], dtype=np.object_)
                    tensor = triton.InferInput(source["name"], [1], "BYTES")
                else:
                    data = _pixels(image, height, width)
                    tensor = triton.InferInput(source["name"], list(data.shape), "UINT8")
                tensor.set_data_from_numpy(data, binary_data=binary)
                requested = [triton.InferRequestedOutput(name, binary_data=binary) for name in outputs]
                result = client.infer(
                    task,
                    [tensor],
                    outputs=requested,
                    request_compression_algorithm=compression,
                    response_compression_algorithm=compression,
                )
                ood = result.as_numpy("ood_score") if "ood_score" in outputs else None
                key = f"infer {datatype} {'binary' if binary else 'json'}{' gzip' if compression else ''}"
                report[key] = _summary(result.as_numpy(outputs[0]), ood)
    return report


async def run_kserve(url: str, task: str, image: bytes, height: int, width: int) -> dict[str, Any]:
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=60))
    report: dict[str, Any] = {
        "is_server_live": await client.is_server_live(url),
        "is_server_ready": await client.is_server_ready(url),
        "is_model_ready": await client.is_model_ready(url, task),
    }
    for datatype in ("BYTES", "UINT8"):
        for binary in (False, True):
            if datatype == "BYTES":
                data = np.array([image if binary else base64.b64encode(image)], dtype=np.object_)
                tensor = InferInput("images", [1], "BYTES")
            else:
                data = _pixels(image, height, width)
                tensor = InferInput("images", list(data.shape), "UINT8")
            tensor.set_data_from_numpy(data, binary_data=binary)
            result = await client.infer(url, InferRequest(model_name=task, infer_inputs=[tensor]), model_name=task)
            by_name = {o.name: o.as_numpy() for o in result.outputs}
            report[f"infer {datatype} {'binary' if binary else 'json'}"] = _summary(
                by_name["probabilities"], by_name.get("ood_score")
            )
    await client.close()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--task", required=True)
    parser.add_argument("--image", required=True)
    args = parser.parse_args()
    with open(args.image, "rb") as file:
        image = file.read()
    triton_report = run_tritonclient(args.url, args.task, image)
    (source,) = triton_report["model_metadata"]["inputs"]
    kserve_report = asyncio.run(run_kserve(args.url, args.task, image, source["shape"][1], source["shape"][2]))
    print(json.dumps({"tritonclient": triton_report, "kserve": kserve_report}, indent=2, default=str))


if __name__ == "__main__":
    main()

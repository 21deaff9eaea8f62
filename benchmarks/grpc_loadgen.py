"""A closed-loop gRPC load generator, the twin of `benchmarks.loadgen` for the Open Inference Protocol over
gRPC: `concurrency` clients, each on its own channel (its own HTTP/2 connection, as each HTTP client has its
own keep-alive connection), calling `inference.GRPCInferenceService/ModelInfer` back to back with one
encoded image as a BYTES tensor (`contents.bytes_contents`) for `duration_s` seconds after a warm-up.

Requests are serialized once up front and sent as bytes (the stub's serializer is the identity), so per call
the client only writes bytes and reads the answer, as the HTTP generator does. Prints one JSON object in
`benchmarks.loadgen`'s shape: status "200" is OK, "503" the refusals a loaded server sheds with
(RESOURCE_EXHAUSTED, UNAVAILABLE), any other status its gRPC code name.

    python -m benchmarks.grpc_loadgen --address 127.0.0.1:8001 --task flowers --photos a.jpg b.jpg
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from pathlib import Path

import grpc
from grpc import aio

from app.protocols.grpc.generated import grpc_service_pb2 as pb
from benchmarks.loadgen import summarize

METHOD = "/inference.GRPCInferenceService/ModelInfer"
_SHED = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)
# Any other code is recorded as 1000 + its number (never an HTTP status), then named.
_NAMES = {str(1000 + code.value[0]): code.name for code in grpc.StatusCode}


def infer_request(task: str, image: bytes) -> bytes:
    """A serialized ModelInferRequest for one encoded image."""
    request = pb.ModelInferRequest(model_name=task)
    request.inputs.add(name="images", datatype="BYTES", shape=[1]).contents.bytes_contents.append(image)
    return request.SerializeToString()


async def _client(address: str, requests: list[bytes], start: float, end: float, out: list[tuple[float, int]]) -> None:
    # A channel of its own (not one shared subchannel): one connection per client, as in benchmarks.loadgen.
    async with aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        call = channel.unary_unary(METHOD, request_serializer=None, response_deserializer=None)
        index = random.randrange(len(requests))
        while time.perf_counter() < end:
            request = requests[index % len(requests)]
            index += 1
            sent = time.perf_counter()
            try:
                await call(request, timeout=60)
                status = 200
            except aio.AioRpcError as error:
                status = 503 if error.code() in _SHED else 1000 + error.code().value[0]
            if sent >= start:
                out.append((time.perf_counter() - sent, status))


async def run(
    address: str, task: str, photos: list[Path], concurrency: int, duration_s: float, warmup_s: float
) -> dict[str, object]:
    requests = [infer_request(task, p.read_bytes()) for p in photos]
    start = time.perf_counter() + warmup_s
    end = start + duration_s
    samples: list[tuple[float, int]] = []
    cpu_before = os.times()
    await asyncio.gather(*(_client(address, requests, start, end, samples) for _ in range(concurrency)))
    cpu = os.times()
    result = summarize(samples, duration_s)
    statuses: dict[str, int] = result["statuses"]  # type: ignore[assignment]
    result["statuses"] = {_NAMES.get(status, status): n for status, n in statuses.items()}
    result["concurrency"] = concurrency
    result["loadgen_cpu_s"] = round((cpu.user - cpu_before.user) + (cpu.system - cpu_before.system), 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", required=True, help="host:port of the gRPC server")
    parser.add_argument("--task", required=True)
    parser.add_argument("--photos", type=Path, nargs="+", required=True)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration-s", type=float, default=15)
    parser.add_argument("--warmup-s", type=float, default=2)
    args = parser.parse_args()
    result = asyncio.run(run(args.address, args.task, args.photos, args.concurrency, args.duration_s, args.warmup_s))
    print(json.dumps(result))


if __name__ == "__main__":
    main()

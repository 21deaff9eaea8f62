"""Throughput and latency of the service against the in-process limit, the naive baseline and the peers:
BentoML, KServe's Python ModelServer and Ray Serve, each serving the same SavedModel as its documentation
recommends for batching on CPU, each in a virtualenv of its own that this command creates.

    python -m benchmarks.serving                    # full run (~10 minutes), writes out/benchmark/
    python -m benchmarks.serving --peers kserve ray # only some peers
    python -m benchmarks.serving --quick            # smoke run (CI): short, no peer
    python -m benchmarks.serving --skip-peers --grpc --repeats 3 --concurrency 1 32
                                                    # REST and gRPC ModelInfer side by side, alternating

Every server runs as its own process on loopback, one at a time, loaded by `benchmarks.loadgen`
(closed loop, asyncio + uvloop, raw HTTP/1.1). With `--grpc`, each level of the service is also measured
over gRPC (`benchmarks.grpc_loadgen`: ModelInfer, one encoded image as BYTES per call) on the same process
and model, the two alternating (`--repeats` times each; the median run of each is reported).
Results: out/benchmark/results.json and results.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from app.core import repository
from benchmarks import machine
from stress.process import free_port, service
from stress.venvs import ensure

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
MODEL_REQUIREMENTS = ["tensorflow-cpu==2.21.0", "pillow==13.0.0"]


@dataclass(frozen=True)
class Peer:
    """A peer server: its virtualenv, how it starts on a port, and where and how it is loaded."""

    requirements: list[str]
    package: str  # whose version the report records
    command: Callable[[Path, int], list[str]]  # (its python, port) -> command line
    path: str
    ready_path: str
    body: str = "multipart"
    field: str = "file"


PEERS = {
    "bentoml": Peer(
        ["bentoml==1.4.38", *MODEL_REQUIREMENTS],
        "bentoml",
        lambda py, port: [
            str(py),
            "-m",
            "bentoml",
            "serve",
            "benchmarks.bento_service:FlowersClassifier",
            "--port",
            str(port),
        ],
        "/classify",
        "/readyz",
        field="images",
    ),
    "kserve": Peer(
        ["kserve==0.21.0", *MODEL_REQUIREMENTS],
        "kserve",
        lambda py, port: [str(py), "-m", "benchmarks.kserve_service", "--http_port", str(port)],
        "/v1/models/flowers:predict",
        "/v1/models/flowers",
        body="v1-b64",
    ),
    "ray": Peer(
        ["ray[serve]==2.60.0", "python-multipart==0.0.34", *MODEL_REQUIREMENTS],
        "ray",
        lambda py, port: [str(py), "-m", "benchmarks.ray_service"],
        "/",
        "/",
    ),
}


@contextmanager
def _server(command: list[str], env: dict[str, str], port: int, ready_path: str) -> Iterator[dict[str, Any]]:
    log_path = ROOT / "out" / "benchmark" / f"server-{port}.log"
    with service(env, command=command, port=port, ready_path=ready_path, log_path=log_path) as live:
        yield {"start_to_ready_s": live.start_to_ready_s, "rss_mb": live.rss_mb()}


def load(
    url: str, field: str, photos: list[Path], concurrency: int, duration_s: float, body: str = "multipart"
) -> dict[str, Any]:
    command = [PYTHON, "-m", "benchmarks.loadgen", "--url", url, "--field", field, "--body", body]
    command += ["--concurrency", str(concurrency)]
    command += ["--duration-s", str(duration_s), "--photos", *map(str, photos)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    return dict(json.loads(result.stdout))


def _load_grpc(address: str, task: str, photos: list[Path], concurrency: int, duration_s: float) -> dict[str, Any]:
    command = [PYTHON, "-m", "benchmarks.grpc_loadgen", "--address", address, "--task", task]
    command += ["--concurrency", str(concurrency), "--duration-s", str(duration_s), "--photos", *map(str, photos)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    return dict(json.loads(result.stdout))


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median throughput (the lower middle one of an even count)."""
    return sorted(runs, key=lambda r: r["images_per_s"])[(len(runs) - 1) // 2]


def _batch_stats(base: str, task: str) -> tuple[float, float]:
    return metric_sum(base, "batch_size_sum", task=task), metric_sum(base, "batch_size_count", task=task)


def metric_sum(base: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` on `base`/metrics whose labels include `labels` (0 if none)."""
    text = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def sample_photos(photos_dir: Path, count: int) -> list[Path]:
    """`count` photos spread evenly over the sorted photos under `photos_dir` (exits if there are none)."""
    photos = sorted(p for p in photos_dir.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not photos:
        sys.exit(f"no photos under {photos_dir}")
    return photos[:: max(1, len(photos) // count)][:count]


def _version(python: Path | str, package: str) -> str:
    code = f"import importlib.metadata as m; print(m.version('{package}'))"
    result = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False)
    return result.stdout.strip() or "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="flowers")
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--photos-dir", type=Path, default=ROOT.parent / "shared" / "datasets" / "flower_photos")
    parser.add_argument("--photos", type=int, default=64, help="distinct photos cycled by the load generator")
    parser.add_argument("--duration-s", type=float, default=15)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument(
        "--queue-size",
        type=int,
        default=32,
        help="the service's max_queue_size: small, so that 128 clients overload it",
    )
    parser.add_argument(
        "--service-env", nargs="*", default=[], help="extra KEY=VALUE settings for the service (tuning)"
    )
    parser.add_argument("--skip-peers", action="store_true", help="measure only the limit and the service")
    parser.add_argument(
        "--peers", nargs="+", choices=["naive", *PEERS], default=["naive", *PEERS], help="peers to measure"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 s per level, concurrency 1 and 8, no peers")
    parser.add_argument(
        "--grpc", action="store_true", help="also measure the service's gRPC ModelInfer, alternating with REST"
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs of each level (alternating REST and gRPC)")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "benchmark")
    args = parser.parse_args()
    if args.quick:
        args.duration_s, args.concurrency, args.skip_peers, args.photos = 2, [1, 8], True, 16
    args.out.mkdir(parents=True, exist_ok=True)
    (ROOT / "out" / "benchmark").mkdir(parents=True, exist_ok=True)

    photos = sample_photos(args.photos_dir, args.photos)
    version_dir = repository.discover(args.model_dir)[args.task]  # the version the service serves
    report: dict[str, Any] = {
        "machine": machine.describe(),
        "versions": {p: _version(PYTHON, p) for p in ("tensorflow-cpu", "fastapi", "uvicorn", "pillow")},
        "task": args.task,
        "model": str(version_dir.relative_to(ROOT) if version_dir.is_relative_to(ROOT) else version_dir),
        "photos": len(photos),
        "duration_s_per_level": args.duration_s,
        "load_generator": "benchmarks/loadgen.py: closed loop, asyncio + uvloop, raw HTTP/1.1 keep-alive",
    }

    print("1/4 in-process limit", file=sys.stderr)
    limit = subprocess.run(
        [
            PYTHON,
            "-m",
            "benchmarks.limit",
            "--model-dir",
            str(args.model_dir),
            "--task",
            args.task,
            "--photos",
            *map(str, photos),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    report["limit"] = json.loads(limit.stdout)

    print("2/4 the service", file=sys.stderr)
    port = free_port()
    env = {
        "APP_MODEL_DIR": str(args.model_dir),
        "APP_LOG_LEVEL": "warning",
    }
    env["APP_MAX_QUEUE_SIZE"] = str(args.queue_size)
    grpc_port = free_port()
    env["APP_GRPC_PORT"] = str(grpc_port)
    env.update(item.split("=", 1) for item in args.service_env)  # type: ignore[misc]
    report["service_settings"] = {k: v for k, v in env.items() if k not in ("APP_PORT", "APP_HOST", "APP_MODEL_DIR")}
    base = f"http://127.0.0.1:{port}"
    with _server([PYTHON, "-m", "app"], env, port, "/readyz") as info:
        report["service_start"] = info
        levels, grpc_levels, runs = {}, {}, {}

        def measure(mode: str, concurrency: int) -> dict[str, Any]:
            before = _batch_stats(base, args.task)
            if mode == "grpc":
                address = f"127.0.0.1:{grpc_port}"
                result = _load_grpc(address, args.task, photos, concurrency, args.duration_s)
            else:
                result = load(f"{base}/predict/{args.task}", "file", photos, concurrency, args.duration_s)
            after = _batch_stats(base, args.task)
            calls = after[1] - before[1]
            result["mean_batch_size"] = round((after[0] - before[0]) / calls, 2) if calls else None
            print(
                f"   {mode} c={concurrency}: {result['images_per_s']} img/s, p50 {result['p50_ms']} ms, "
                f"p99 {result['p99_ms']} ms",
                file=sys.stderr,
            )
            return result

        for concurrency in args.concurrency:
            modes = ["rest", "grpc"] if args.grpc else ["rest"]
            done: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
            for repeat in range(args.repeats):  # alternate which goes first, so that neither always runs warmer
                for mode in modes if repeat % 2 == 0 else modes[::-1]:
                    done[mode].append(measure(mode, concurrency))
            levels[str(concurrency)] = median_run(done["rest"])
            if args.grpc:
                grpc_levels[str(concurrency)] = median_run(done["grpc"])
                runs[str(concurrency)] = {
                    mode: {k: [r[k] for r in done[mode]] for k in ("images_per_s", "p50_ms", "p99_ms")}
                    for mode in modes
                }
        report["service"] = levels
        if args.grpc:
            report["service_grpc"] = grpc_levels
            report["rest_and_grpc_runs"] = runs

    peers = [] if args.skip_peers else args.peers
    naive_env = {"BENCH_MODEL_DIR": str(version_dir), "TF_CPP_MIN_LOG_LEVEL": "2"}
    if "naive" in peers:
        print("3/4 naive baseline", file=sys.stderr)
        port = free_port()
        command = [PYTHON, "-m", "uvicorn", "benchmarks.naive_app:app", "--port", str(port), "--log-level", "warning"]
        with _server(command, naive_env, port, "/docs") as info:
            report["naive"] = {"start": info}
            for concurrency in (1, 32):
                report["naive"][str(concurrency)] = load(
                    f"http://127.0.0.1:{port}/predict/flowers", "file", photos, concurrency, args.duration_s
                )
    for name in (p for p in peers if p in PEERS):
        print(f"4/4 {name}", file=sys.stderr)
        peer = PEERS[name]
        python = ensure(name, peer.requirements)
        report["versions"][peer.package] = _version(python, peer.package)
        port = free_port()
        with _server(peer.command(python, port), {**naive_env, "BENCH_PORT": str(port)}, port, peer.ready_path) as info:
            report[name] = {"start": info}
            for concurrency in (1, 32):
                url = f"http://127.0.0.1:{port}{peer.path}"
                report[name][str(concurrency)] = load(url, peer.field, photos, concurrency, args.duration_s, peer.body)

    report["ratios"] = _ratios(report)
    (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    markdown = _markdown(report)
    (args.out / "results.md").write_text(markdown)
    print(markdown)


def _ratios(report: dict[str, Any]) -> dict[str, Any]:
    service, limit = report["service"], report["limit"]
    ratios: dict[str, Any] = {}
    if "32" in service:
        ratios["service_c32_vs_limit"] = round(service["32"]["images_per_s"] / limit["images_per_s"], 2)
        for peer in ("naive", *PEERS):
            if peer in report and report[peer]["32"]["images_per_s"]:
                ratios[f"service_c32_vs_{peer}"] = round(
                    service["32"]["images_per_s"] / report[peer]["32"]["images_per_s"], 2
                )
                ratios[f"p99_c32_service_ms_vs_{peer}_ms"] = [service["32"]["p99_ms"], report[peer]["32"]["p99_ms"]]
    if "1" in service:
        budget = 1.3 * limit["single_image_ms"] + 5
        ratios["p50_c1_ms"] = service["1"]["p50_ms"]
        ratios["p50_c1_budget_ms (1.3 x single + 5)"] = round(budget, 1)
    grpc_levels = report.get("service_grpc", {})
    if "32" in grpc_levels and service["32"]["images_per_s"]:
        ratios["grpc_c32_vs_rest_c32 (images/s)"] = round(
            grpc_levels["32"]["images_per_s"] / service["32"]["images_per_s"], 2
        )
    if "1" in grpc_levels:
        ratios["p50_c1_ms rest vs grpc"] = [service["1"]["p50_ms"], grpc_levels["1"]["p50_ms"]]
    if "128" in service:
        ratios["c128_errors_other_than_503"] = service["128"]["errors_other_than_503"]
        ratios["c128_p99_answered_ms"] = service["128"]["p99_ms"]
    return ratios


def _markdown(report: dict[str, Any]) -> str:
    limit = report["limit"]
    lines = [
        f"# Serving benchmark: {report['task']} ({report['model']}), {report['machine']['cores']} cores of "
        f"{report['machine']['cpu']} ({', '.join(report['machine']['simd']) or 'SIMD unknown'})",
        "",
        f"In-process limit (decode + resize + {limit.get('runtime', {}).get('name', 'SavedModel')} as the service "
        f"chooses it, no HTTP): **{limit['images_per_s']} images/s** at batch "
        f"{limit['best_batch_size']}; single image {limit['single_image_ms']} ms (decode {limit['decode_ms']} ms).",
        "",
        "| server | concurrency | images/s | p50 ms | p95 ms | p99 ms | errors (non-503) | 503s | mean batch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    rows = [("service", c, r) for c, r in report["service"].items()]
    rows += [("service (gRPC ModelInfer)", c, r) for c, r in report.get("service_grpc", {}).items()]
    for peer in ("naive", *PEERS):
        rows += [(peer, c, r) for c, r in report.get(peer, {}).items() if c != "start"]
    for name, concurrency, r in rows:
        lines.append(
            f"| {name} | {concurrency} | {r['images_per_s']} | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} | "
            f"{r['errors_other_than_503']} | {r['statuses'].get('503', 0)} | {r.get('mean_batch_size', '')} |"
        )
    lines += ["", "| ratio | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in report["ratios"].items()]
    start = report["service_start"]
    lines += [
        "",
        f"Service: start to /readyz 200 in {start['start_to_ready_s']} s; resident memory with all models "
        f"loaded {start['rss_mb']} MB. Settings: {report['service_settings']}.",
        f"Versions: {report['versions']}. Load generator: {report['load_generator']}; "
        f"{report['duration_s_per_level']} s per level after a 2 s warm-up, {report['photos']} distinct photos.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

"""What tracing costs, side by side in one run: the service with tracing off (no OTLP endpoint), with it on
(every request traced, exported to a real receiver), sampled (one trace in ten, the same receiver), and
optionally a checkout from before tracing existed.

    git worktree add ../before-tracing 61037c1      # the last commit before OpenTelemetry came in
    python -m benchmarks.tracing --baseline ../before-tracing --variants before off --instances 2
    python -m benchmarks.tracing --variants off on sampled --concurrency 1 32

Every variant runs as its own processes (`--instances` each) at once, all idle but the one under load, from
the same virtualenv and on the same model directory; each round loads each process in turn, in an order that
rotates from round to round, so that none always runs first or warmest. Two processes of the same code
differed here by a percent or two, run after run, so a variant's figures pool the runs of all its processes.
gRPC is off in every variant (`APP_GRPC_PORT=0`; the baseline predates it): the only difference is tracing.

The receiver is Arize Phoenix (`stress.receivers`), started only when a variant traces, on the same machine.
Its ingestion shares the cores with the service, so the traced throughput includes the cost of a collector
beside the service (an upper bound for one elsewhere); the service's own CPU time per image is measured apart from the receiver's (from /proc),
and each run starts once the receiver has ingested the previous run's spans. Runs vary by several percent
from round to round, more than tracing off could cost, so it also times in process what the request path
runs for tracing while it is off (`off_path_us`), against the service's CPU time per image.

Reports the median run of each variant per level, every run, and the ratios off / before, on / off and
sampled / off. Results: out/benchmark/tracing.json and tracing.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
import timeit
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from app.core import tracing
from benchmarks import machine
from benchmarks.serving import load, median_run, metric_sum, sample_photos
from stress import receivers
from stress.process import Live, service

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "benchmark"
_PER_RUN = ("instance", "images_per_s", "p50_ms", "p99_ms", "service_cpu_ms_per_image", "receiver_cpu_ms_per_image")


def _cpu_s(receiver: Live | None) -> float:
    return receiver.cpu_s() if receiver is not None else 0.0


def _settle(receiver: Live, timeout_s: float = 300) -> None:
    """Wait until the receiver has ingested its backlog (under 2% of a core for a second): Phoenix works
    through the spans of a traced run for a while after it, which would otherwise slow the next variant's."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        before = receiver.cpu_s()
        time.sleep(1.0)
        if receiver.cpu_s() - before < 0.02:
            return


def off_path_us(repeats: int = 200_000) -> float:
    """Microseconds per single-image request spent in what the request path calls for tracing while it is
    off (in the order app.core.pipeline and app.core.batching call it): the check before the server span's
    attributes, the no-op `decode` span, the context the batcher keeps (None), the batch's "any traced?" and
    one log line's trace id. The whole difference, in code that runs, between tracing off and no tracing."""
    tracing.install(None)
    record = logging.LogRecord("app", logging.INFO, __file__, 0, "answered", None, None)

    def one_request() -> None:
        tracing.enabled()
        with tracing.tracer().start_as_current_span("decode", attributes={"images": 1}):
            pass
        contexts = [tracing.current_context()]
        any(c is not None for c in contexts)
        record.trace_id = tracing.trace_id() or "-"

    one_request()
    return min(timeit.repeat(one_request, number=repeats, repeat=3)) / repeats * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="flowers")
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--photos-dir", type=Path, default=ROOT.parent / "shared" / "datasets" / "flower_photos")
    parser.add_argument("--photos", type=int, default=64, help="distinct photos cycled by the load generator")
    parser.add_argument("--duration-s", type=float, default=15)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--repeats", type=int, default=3, help="rounds per level; the median run is reported")
    parser.add_argument(
        "--baseline", type=Path, default=None, help="a checkout from before tracing (e.g. a git worktree), served too"
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=["before", "off", "on", "sampled"],
        default=["before", "off", "on", "sampled"],
        help="which to serve (before: only with --baseline)",
    )
    parser.add_argument(
        "--instances",
        type=int,
        default=1,
        help="processes per variant: two processes of the same code differ by 1-2%%, which this shows",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "benchmark")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    photos = sample_photos(args.photos_dir, args.photos)
    common = {"APP_MODEL_DIR": str(args.model_dir.resolve()), "APP_LOG_LEVEL": "warning", "APP_GRPC_PORT": "0"}

    with ExitStack() as stack:
        working = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        print("starting the services (and the receiver, if a variant traces)", file=sys.stderr)
        receiver: Live | None = None
        if {"on", "sampled"} & set(args.variants):
            receiver = stack.enter_context(receivers.phoenix(working / "phoenix", log_path=args.out / "phoenix.log"))
        on = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url if receiver else "",
            "OTEL_RESOURCE_ATTRIBUTES": f"openinference.project.name={PROJECT}",
        }
        # "sampled": one trace in ten, kept or dropped as the caller's traceparent says (OpenTelemetry's variables).
        sampled = {**on, "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}
        variants: dict[str, tuple[dict[str, str], Path]] = {
            "off": (common, ROOT),
            "on": ({**common, **on}, ROOT),
            "sampled": ({**common, **sampled}, ROOT),
        }
        if args.baseline is not None:
            variants = {"before": (common, args.baseline.resolve()), **variants}
        variants = {name: variant for name, variant in variants.items() if name in args.variants}
        live = {}
        for name, (env, cwd) in variants.items():
            for i in range(args.instances):
                log_path = args.out / f"tracing-{name}-{i + 1}.log"
                live[name, i] = stack.enter_context(service(env, cwd=cwd, log_path=log_path))

        runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
        servers = list(live)
        for concurrency in args.concurrency:
            done: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
            for repeat in range(args.repeats):
                for name, i in servers[repeat % len(servers) :] + servers[: repeat % len(servers)]:
                    server = live[name, i]
                    url = server.url
                    cpu, classified = (server.cpu_s(), _cpu_s(receiver)), metric_sum(url, "images_classified_total")
                    result = load(f"{url}/predict/{args.task}", "file", photos, concurrency, args.duration_s)
                    # Per image classified over the whole run, warm-up included: the CPU clock cannot tell them apart.
                    images = max(1.0, metric_sum(url, "images_classified_total") - classified)
                    result["service_cpu_ms_per_image"] = round((server.cpu_s() - cpu[0]) * 1000 / images, 2)
                    result["instance"] = i + 1
                    result["receiver_cpu_ms_per_image"] = round((_cpu_s(receiver) - cpu[1]) * 1000 / images, 2)
                    done[name].append(result)
                    if receiver is not None:
                        _settle(receiver)
                    print(
                        f"   {name}#{i + 1} c={concurrency}: {result['images_per_s']} img/s, p50 {result['p50_ms']} ms, "
                        f"p99 {result['p99_ms']} ms, CPU ms/image: service {result['service_cpu_ms_per_image']}, "
                        f"receiver {result['receiver_cpu_ms_per_image']}",
                        file=sys.stderr,
                    )
            runs[str(concurrency)] = done
        on_servers = [server for (name, _), server in live.items() if name in ("on", "sampled")]
        dropped = sum(metric_sum(s.url, "trace_spans_dropped_total") for s in on_servers) if on_servers else None

    report: dict[str, Any] = {
        "machine": machine.describe(),
        "task": args.task,
        "photos": len(photos),
        "duration_s_per_run": args.duration_s,
        "repeats": args.repeats,
        "instances_per_variant": args.instances,
        "baseline": str(args.baseline) if args.baseline else None,
        "receiver": f"Arize Phoenix ({receivers.PHOENIX[0]}) on the same machine; on: every request traced, sampled: one in ten",
        "spans_dropped_with_tracing_on": dropped,
        "tracing_off_path_us_per_request": round(off_path_us(), 2),
        "median": {c: {name: median_run(r) for name, r in done.items()} for c, done in runs.items()},
        "runs": {
            c: {name: {k: [r[k] for r in rs] for k in _PER_RUN} for name, rs in done.items()}
            for c, done in runs.items()
        },
    }
    report["ratios"] = _ratios(report["median"], runs)
    for c, medians in report["median"].items():
        if "off" not in medians:
            continue
        per_image_us = 1000 * medians["off"]["service_cpu_ms_per_image"]
        report["ratios"][f"c={c} tracing-off path / service CPU per image"] = round(
            report["tracing_off_path_us_per_request"] / per_image_us, 5
        )
    (args.out / "tracing.json").write_text(json.dumps(report, indent=2) + "\n")
    markdown = _markdown(report)
    (args.out / "tracing.md").write_text(markdown)
    print(markdown)


def _ratios(
    median: dict[str, dict[str, dict[str, Any]]], runs: dict[str, dict[str, list[dict[str, Any]]]]
) -> dict[str, float]:
    """Throughput and median latency of the median runs; the service's CPU per image, median over runs."""
    ratios = {}
    for c, variants in median.items():
        for a, b in (("off", "before"), ("on", "off"), ("sampled", "off")):
            if a in variants and b in variants:
                ratios[f"c={c} images/s {a} / {b}"] = round(
                    variants[a]["images_per_s"] / variants[b]["images_per_s"], 3
                )
                ratios[f"c={c} p50 {a} / {b}"] = round(variants[a]["p50_ms"] / variants[b]["p50_ms"], 3)
                cpu = [statistics.median(r["service_cpu_ms_per_image"] for r in runs[c][v]) for v in (a, b)]
                ratios[f"c={c} service CPU per image {a} / {b}"] = round(cpu[0] / cpu[1], 3)
    return ratios


def _markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Tracing cost: {report['task']}, {report['machine']['cores']} cores of {report['machine']['cpu']}",
        "",
        f"{report['repeats']} rounds of {report['duration_s_per_run']} s per variant and level, order rotating; "
        f"the median run of each. Receiver: {report['receiver']}. Spans dropped with tracing on: "
        f"{report['spans_dropped_with_tracing_on']}. With tracing off, the request path spends "
        f"{report['tracing_off_path_us_per_request']} µs per request in tracing's calls (`off_path_us`).",
        "",
        "| variant | concurrency | images/s | p50 ms | p99 ms | service CPU ms/image | receiver CPU ms/image "
        "| images/s of every run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c, variants in report["median"].items():
        for name, r in variants.items():
            every = ", ".join(str(v) for v in report["runs"][c][name]["images_per_s"])
            lines.append(
                f"| {name} | {c} | {r['images_per_s']} | {r['p50_ms']} | {r['p99_ms']} | "
                f"{r['service_cpu_ms_per_image']} | {r['receiver_cpu_ms_per_image']} | {every} |"
            )
    lines += ["", "| ratio | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in report["ratios"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

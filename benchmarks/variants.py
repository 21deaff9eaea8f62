"""What each tuning setting buys: the service at one concurrency under several settings, interleaved.

    python -m benchmarks.variants --rounds 3 APP_FREEZE_MODELS=false APP_MAX_CONCURRENT_BATCHES=1

Each argument is one variant: space-separated KEY=VALUE settings applied on top of the defaults (the
defaults themselves are always measured, as "defaults"). The variants run one after another, round after
round, so that a slow spell on a shared machine hits them alike; each run is `benchmarks.serving
--skip-peers` at one concurrency. Prints a Markdown table: images/s per round, and the means of images/s,
p50 and p99.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _measure(settings: str, concurrency: int, duration_s: float) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "benchmarks.serving", "--skip-peers", "--out", out]
        command += ["--concurrency", str(concurrency), "--duration-s", str(duration_s)]
        if settings:
            command += ["--service-env", *settings.split()]
        subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
        level = json.loads((Path(out) / "results.json").read_text())["service"][str(concurrency)]
    return float(level["images_per_s"]), float(level["p50_ms"]), float(level["p99_ms"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="*", help='e.g. "APP_FREEZE_MODELS=false"')
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration-s", type=float, default=8)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    for variant in args.variants:
        if any("=" not in item for item in variant.split()):
            parser.error(f"variant {variant!r} is not space-separated KEY=VALUE settings")

    variants = ["", *args.variants]
    runs: dict[str, list[tuple[float, float, float]]] = {v: [] for v in variants}
    for round_ in range(1, args.rounds + 1):
        for variant in variants:
            runs[variant].append(_measure(variant, args.concurrency, args.duration_s))
            rate, p50, p99 = runs[variant][-1]
            print(f"round {round_} {variant or 'defaults'}: {rate} img/s, p50 {p50} p99 {p99} ms", file=sys.stderr)

    print(
        f"| settings (c={args.concurrency}) | images/s per round | mean images/s | vs defaults "
        "| mean p50 ms | p50 vs defaults | mean p99 ms |"
    )
    print("|---|---|---|---|---|---|---|")
    base_rate, base_p50 = (statistics.mean(run[i] for run in runs[""]) for i in (0, 1))
    for variant, results in runs.items():
        rate, p50, p99 = (statistics.mean(run[i] for run in results) for i in range(3))
        rounds = ", ".join(str(run[0]) for run in results)
        print(
            f"| {variant or 'defaults'} | {rounds} | {rate:.1f} | {rate / base_rate:.2f} "
            f"| {p50:.1f} | {p50 / base_p50:.2f} | {p99:.0f} |"
        )


if __name__ == "__main__":
    main()

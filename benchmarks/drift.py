"""Drift and estimated accuracy from outside: a running service is sent genuine photos, then foreign ones,
and its `GET /models/{task}/drift` is read after each stream.

    python -m benchmarks.drift --task cats_vs_dogs \\
        --genuine ../shared/datasets/cats_and_dogs_filtered/validation \\
        --foreign ../shared/datasets/flower_photos --foreign ../shared/datasets/rps_28x28

`--genuine` is a folder of class folders named as the model's labels (or mapped with `--label-map`): the
photos are sent in a seeded random order, `--genuine-count` of them, and the accuracy of the service's
answers on them is measured against the folder names, beside the drift endpoint's `estimated_accuracy` and
its interval for that window. Then `--foreign-count` photos drawn from the `--foreign` folders (searched
recursively) are sent and the endpoint read again. Prints one JSON report. Starts its own service on the
project's models (`--model-dir`) unless `--url` names a running one; use photos the model never trained on.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

import httpx

from stress.process import ROOT, service

SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())


def _send(client: httpx.Client, task: str, paths: list[Path], per_request: int = 8) -> list[dict[str, Any]]:
    answers: list[dict[str, Any]] = []
    for i in range(0, len(paths), per_request):
        chunk = paths[i : i + per_request]
        files = [("file", (p.name, p.read_bytes(), "application/octet-stream")) for p in chunk]
        response = client.post(f"/predict/{task}", files=files)
        response.raise_for_status()
        answers.extend(response.json()["predictions"])
    return answers


def run(url: str, args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    mapping = dict(pair.split("=", 1) for pair in args.label_map)
    genuine = [(p, mapping.get(p.parent.name, p.parent.name)) for p in _files(args.genuine)]
    rng.shuffle(genuine)
    genuine = genuine[: args.genuine_count]
    foreign = [p for folder in args.foreign for p in _files(folder)]
    rng.shuffle(foreign)
    foreign = foreign[: args.foreign_count]
    with httpx.Client(base_url=url, timeout=120) as client:
        answers = _send(client, args.task, [p for p, _ in genuine])
        calm = client.get(f"/models/{args.task}/drift").json()
        right = sum(a["label"] == label for a, (_, label) in zip(answers, genuine, strict=True))
        kept = [(a, label) for a, (_, label) in zip(answers, genuine, strict=True) if not a.get("out_of_distribution")]
        foreign_answers = _send(client, args.task, foreign)
        drifted = client.get(f"/models/{args.task}/drift").json()
    estimate = calm.get("estimated_accuracy") or {}
    measured_unflagged = sum(a["label"] == label for a, label in kept) / len(kept) if kept else None
    interval = estimate.get("interval") or [None, None]
    return {
        "task": args.task,
        "genuine": {
            "images": len(genuine),
            "accuracy": round(right / len(genuine), 4),
            "accuracy_unflagged": round(measured_unflagged, 4) if measured_unflagged is not None else None,
            "flagged": sum(bool(a.get("out_of_distribution")) for a in answers),
            "drift": calm["drift"],
            "reasons": calm["reasons"],
            "p_values": {name: t["p_value"] for name, t in calm["tests"].items()},
            "estimated_accuracy": estimate,
            "measured_within_interval": (
                measured_unflagged is not None
                and interval[0] is not None
                and interval[0] <= measured_unflagged <= interval[1]
            ),
        },
        "after_foreign": {
            "foreign_images": len(foreign),
            "foreign_flagged": sum(bool(a.get("out_of_distribution")) for a in foreign_answers),
            "window": drifted["window"],
            "drift": drifted["drift"],
            "reasons": drifted["reasons"],
            "p_values": {name: t["p_value"] for name, t in drifted["tests"].items()},
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.drift", description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", required=True)
    parser.add_argument("--genuine", type=Path, required=True, help="class folders of photos of the task")
    parser.add_argument("--foreign", type=Path, action="append", default=[], help="photos of anything else")
    parser.add_argument("--label-map", nargs="*", default=[], metavar="FOLDER=LABEL", help="e.g. cats=cat dogs=dog")
    parser.add_argument("--genuine-count", type=int, default=200)
    parser.add_argument("--foreign-count", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--url", default=None, help="a running service (default: start one)")
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models")
    args = parser.parse_args()
    if args.url:
        report = run(args.url, args)
    else:
        env = {"APP_MODEL_DIR": str(args.model_dir), "APP_LOG_LEVEL": "warning"}
        with service(env) as live:
            report = run(live.url, args)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

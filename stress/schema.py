"""The full schemathesis run: every operation of the service's OpenAPI schema, `--max-examples` cases each
(plus schemathesis' examples and stateful phases), every check but "schema-valid data must be
accepted" (any bytes are a schema-valid `file`, and undecodable ones are 400/415 by design), against a live
service on the committed models. Its summary line is the figure to report. The tests run a bounded, seeded
version in-process (`tests/api/test_schemathesis.py`).

    python -m stress.schema --max-examples 500
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from stress.process import ROOT, service


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--max-examples", type=int, default=500)
    parser.add_argument("--seed", type=int, default=20261123)
    args = parser.parse_args()
    env = {"APP_MODEL_DIR": str(args.model_dir), "APP_LOG_LEVEL": "error", "APP_ADMIN_TOKEN": ""}
    with service(env) as live:
        command = [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{live.url}/openapi.json",
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
            "--max-examples",
            str(args.max_examples),
            "--seed",
            str(args.seed),
            "--request-timeout",
            "60",
            "--workers",
            "2",
            "--continue-on-failure",
            # Not the coverage phase: with Python 3.11.7 it crashes inside Hypothesis while describing a
            # lambda ("AST constructor recursion depth mismatch"), a fault of the tools, not of the service.
            "--phases",
            "examples,fuzzing,stateful",
        ]
        result = subprocess.run(command, cwd=ROOT, check=False)
    sys.exit(result.returncode)


if __name__ == "__main__":
    main()

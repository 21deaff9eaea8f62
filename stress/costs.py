"""Does `app.core.imaging.decode_cost` bound what decoding really takes? For each bomb image of
`stress.bombs`, the estimate from the header against the peak resident memory that `decode` added,
measured in a fresh process per image (Linux's VmHWM, reset just before decoding).

    python -m stress.costs            # every bomb; prints estimate and measured MiB
"""

from __future__ import annotations

import json
import subprocess
import sys

from stress.process import ROOT

IMAGES = ("png16_gray", "webp_flat", "png_rgba", "gif_flat", "bmp_rle8", "jpeg_40mp")


def measure(name: str, height: int = 224, width: int = 224) -> dict[str, float]:
    """Estimate and measured peak (MiB) of decoding `stress.bombs.<name>()` at `height` x `width`."""
    code = f"""
import json, re
from stress import bombs
from app.core.imaging import ImageSpec, decode, open_image
def peak():
    return int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024
data = bombs.{name}()
spec = ImageSpec({height}, {width}, 3)
header = open_image(data, spec, max_pixels=10**9)
open("/proc/self/clear_refs", "w").write("5")
base = peak()
decode(header, spec)
print(json.dumps({{"estimate": header.cost_bytes / 2**20, "measured": (peak() - base) / 2**20}}))
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return {k: round(v, 1) for k, v in json.loads(result.stdout.strip().splitlines()[-1]).items()}


def main() -> None:
    rows = {name: measure(name) for name in IMAGES}
    for name, row in rows.items():
        verdict = "bound holds" if row["estimate"] >= row["measured"] else "UNDERESTIMATE"
        print(f"{name:12} estimate {row['estimate']:7.1f} MiB  measured {row['measured']:7.1f} MiB  {verdict}")
    out = ROOT / "out" / "stress" / "costs.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2) + "\n")
    sys.exit(0 if all(r["estimate"] >= r["measured"] for r in rows.values()) else 1)


if __name__ == "__main__":
    main()

"""What a benchmark ran on, recorded beside its figures: results from machines with other CPUs are not
comparable (an AVX2-only AMD EPYC and an AVX-512 VNNI Xeon differ most in int8, where VNNI has a dot-product
instruction and AVX2 does not)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

# The SIMD extensions the CPU runtimes' kernels are chosen by (OpenVINO's oneDNN, XNNPACK, TensorFlow's).
SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def describe() -> dict[str, Any]:
    """Cores, CPU model and SIMD extensions (from /proc/cpuinfo, where there is one), platform, Python."""
    model, flags = "", set[str]()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    return {
        "cores": os.cpu_count(),
        "cpu": model or platform.processor() or platform.machine(),
        "simd": [flag for flag in SIMD_FLAGS if flag in flags],
        "platform": platform.platform(),
        "python": platform.python_version(),
    }

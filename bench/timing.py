"""Timing helpers shared by the benchmarks (``generate.py``, ``evaluate.py``): thread setup, timed calls in
wall and CPU seconds, ABBA ordering, best-of-round medians, and the machine description."""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path


def setup(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)


def timed(fn, *, repeats: int, budget: float) -> dict:
    """Wall and process CPU seconds of up to ``repeats`` calls of ``fn``, stopping once ``budget`` seconds
    have been timed (at least one call); the last call's result under ``"last"``."""
    seconds, cpu, last = [], [], None
    while len(seconds) < repeats and (not seconds or sum(seconds) < budget):
        start, cpu_start = time.perf_counter(), time.process_time()
        last = fn()
        seconds.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu_start)
    return {"seconds": seconds, "cpu_seconds": cpu, "last": last}


def versions() -> dict:
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "threads": torch.get_num_threads()}


def abba(variants: tuple[str, ...], rounds: int) -> list[str]:
    """The variants in order, then reversed, alternating over ``rounds`` (ABBA...): drift in a shared
    machine's load falls on every variant alike."""
    return [v for r in range(rounds) for v in (variants if r % 2 == 0 else variants[::-1])]


def best_median(runs: list[dict], key: str = "seconds") -> float:
    return min(statistics.median(r[key]) for r in runs)


def machine(first: dict, *, load_start: tuple) -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").is_file() else ""
    return {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "torch": first["torch"], "transformers": first["transformers"],
            "threads": first["threads"], "load_average_start": [round(x, 2) for x in load_start],
            "load_average_end": [round(x, 2) for x in os.getloadavg()]}

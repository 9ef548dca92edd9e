"""Quality against training time and windows seen (issue 14 item 4): free-running step accuracy and pitch
accuracy at the true onsets, from each run's validation lines in metrics.jsonl, plotted into one PNG.

    python docs/scripts/quality_curves.py /work/runs/plan-ae-init-2500 /work/runs/plan-vae-init \
        /work/runs/peer-lstm -o docs/quality_vs_time.png

Minutes come from the ``seconds`` field the trainers log (since 2026-12-06, carried across --resume); for
older runs, from the wall time of their TensorBoard events, counted from the first event (a run that was
resumed has a gap there, which is counted). Windows seen: ``windows_seen``, else step x train.batch_size.
Each run validates on its own held-out windows (a small set while training: noisier than ``evaluate``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

METRICS = ("free_step_accuracy", "free_onset_pitch_accuracy")


def validation_points(run: Path) -> list[dict]:
    """One dict per validation line: step, minutes, windows, and the metrics."""
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    valid = [x for x in lines if x.get("split") == "valid" and METRICS[0] in x]
    batch = _batch_size(run)
    wall = _tensorboard_seconds(run) if any("seconds" not in x for x in valid) else {}
    points = []
    for x in valid:
        seconds = x.get("seconds", wall.get(x["step"]))
        windows = x.get("windows_seen", x["step"] * batch if batch else None)
        points.append({"step": x["step"], "minutes": None if seconds is None else seconds / 60,
                       "windows": windows, **{m: x[m] for m in METRICS}})
    return points


def _batch_size(run: Path) -> int | None:
    for name in ("config.yaml", "run.json"):
        path = run / name
        if path.exists():
            cfg = yaml.safe_load(path.read_text())
            return (cfg.get("train") or {}).get("batch_size") or cfg.get("batch_size")
    return None


def _tensorboard_seconds(run: Path) -> dict[int, float]:
    """step -> seconds since the run's first TensorBoard event (the nearest logged step at or before it)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = []
    for path in sorted((run / "tensorboard").glob("events.*")):
        acc = EventAccumulator(str(path))
        acc.Reload()
        events += [(e.step, e.wall_time) for e in acc.Scalars("train/loss")]
    if not events:
        return {}
    events.sort(key=lambda e: e[1])
    start = events[0][1]
    out = {}
    for step, wall in events:
        out[step] = wall - start
    steps = sorted(out)
    return {s: out[max([t for t in steps if t <= s] or [steps[0]])] for s in range(0, steps[-1] + 1, 10)}


def plot(runs: dict[str, list[dict]], output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharey="row")
    for row, metric in enumerate(METRICS):
        for col, x in enumerate(("minutes", "windows")):
            ax = axes[row][col]
            for name, points in runs.items():
                pts = [p for p in points if p[x] is not None]
                ax.plot([p[x] for p in pts], [p[metric] for p in pts], marker="o", ms=3, label=name)
            ax.set_xlabel("training minutes (one CPU core)" if x == "minutes" else "windows seen")
            ax.set_ylabel(metric.replace("_", " "))
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Held-out validation while training (free-running, greedy)")
    fig.tight_layout()
    fig.savefig(output, dpi=110)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="run folders holding metrics.jsonl")
    p.add_argument("-o", "--output", default="docs/quality_vs_time.png")
    args = p.parse_args(argv)
    runs = {Path(r).name: validation_points(Path(r)) for r in args.runs}
    plot(runs, Path(args.output))
    last = {name: pts[-1] for name, pts in runs.items() if pts}
    print(json.dumps({"output": args.output, "last": last}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

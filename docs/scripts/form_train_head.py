"""Train the supervised song-form boundary head (issue 16, "tags as supervision") and write it to
src/midistruct/form/boundary_head.json, the file `midistruct form --method supervised` reads.

    python docs/scripts/form_train_head.py                       # ~3 min on one core; seeded, the same file each run
    python docs/scripts/form_train_head.py --hidden 0 --out /tmp/head.json     # logistic regression instead

Songs: the head learns from the POP909 ``train`` songs of form_eval.py (train split, the project's
deterministic song split, less the 40 ``dev`` songs), each bar line a sample, its target 1 where either
annotator starts a section. The decoding settings (the phrase program's ``cost`` and ``off_period``) are then
chosen on the 40 ``dev`` songs, by the mean of boundary F exact and within one bar. No eval song (test or
valid split) is read: the evaluation is `python docs/scripts/form_eval.py --methods tracks-supervised`.
Inputs: midistruct.form.supervised.bar_inputs on each track's note features (the default features).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import form_eval  # the song lists and features the evaluation uses

from midistruct.form import segment, supervised
from midistruct.form.bars import POSITIONS
from midistruct.form.evaluate import aligned_score, scores

COSTS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
OFF_PERIODS = (0.0, 0.1, 0.2, 0.3)


def song_samples(refs, *, pop909: Path, settings) -> list[dict]:
    """Per song: its ref, bar vectors x (NB, D), ssm (NB, NB), inputs (NB, F), target (NB,)."""
    import symusic

    out = []
    for ref in refs:
        score = aligned_score(symusic.Score(str(pop909 / ref.song / f"{ref.song}.mid")), ref)
        x = form_eval.features("tracks", score, ref, None, settings)
        ssm = segment.self_similarity(x, center=settings.center)
        target = np.zeros(ref.bars)
        for bounds in ref.bounds:
            target[[b for b in bounds[1:-1] if b < ref.bars]] = 1.0
        out.append({"ref": ref, "x": x, "ssm": ssm, "target": target,
                    "inputs": supervised.bar_inputs(x, ssm, block=12 + POSITIONS)})
    return out


def fit(samples: list[dict], *, hidden: int, seed: int) -> dict:
    """A head (the JSON's mean, scale, layers) fitted on the bar lines 1..NB-1 of ``samples``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    inputs = np.concatenate([s["inputs"][1:] for s in samples])
    target = np.concatenate([s["target"][1:] for s in samples])
    mean, scale = inputs.mean(axis=0), inputs.std(axis=0) + 1e-6
    z = (inputs - mean) / scale
    if hidden:
        clf = MLPClassifier(hidden_layer_sizes=(hidden,), alpha=1e-3, max_iter=400, random_state=seed).fit(z, target)
        layers = [{"weight": w.T, "bias": b} for w, b in zip(clf.coefs_, clf.intercepts_)]
    else:
        clf = LogisticRegression(C=1.0, max_iter=2000).fit(z, target)
        layers = [{"weight": clf.coef_, "bias": clf.intercept_}]
    return {"inputs": list(supervised.INPUTS), "mean": _round(mean), "scale": _round(scale),
            "layers": [{"weight": _round(layer["weight"]), "bias": _round(layer["bias"])} for layer in layers]}


def dev_scores(samples: list[dict], head: dict, *, cost: float, off_period: float, settings) -> dict:
    """Mean over songs and both annotators of F exact, F within one bar and pairwise F."""
    rows = []
    for s in samples:
        p = supervised.probabilities(s["inputs"], head)
        bounds = segment.phrase_boundaries(p, period=4, off_period=off_period, cost=cost, min_bars=settings.min_bars)
        letters = segment.labels(s["ssm"], bounds, threshold=settings.label_threshold)
        rows += [scores(s["ref"], bounds, letters, annotator=k) for k in (0, 1)]
    return {m: round(float(np.mean([r[m] for r in rows])), 3) for m in rows[0]}


def _round(a) -> list:
    return np.round(np.asarray(a, dtype=np.float64), 5).tolist()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", type=Path, default=form_eval.DATASETS)
    parser.add_argument("--hidden", type=int, default=8, help="hidden units (0: logistic regression)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=supervised.HEAD)
    args = parser.parse_args(argv)
    from midistruct.config import SplitConfig
    from midistruct.form.analysis import Settings

    started, settings, split_cfg = time.perf_counter(), Settings(), SplitConfig()
    pop909, phrases = args.datasets / "pop909" / "songs", args.datasets / "pop909-phrases" / "songs"
    train = song_samples(form_eval.song_list("train", split_cfg, pop909=pop909, phrases=phrases)[0], pop909=pop909,
                         settings=settings)
    dev = song_samples(form_eval.song_list("dev", split_cfg, pop909=pop909, phrases=phrases)[0], pop909=pop909,
                       settings=settings)
    head = fit(train, hidden=args.hidden, seed=args.seed)
    grid = {(c, o): dev_scores(dev, head, cost=c, off_period=o, settings=settings) for c in COSTS for o in OFF_PERIODS}
    cost, off_period = max(grid, key=lambda k: grid[k]["f_exact"] + grid[k]["f_1bar"])
    head |= {"decode": {"period": 4, "cost": cost, "off_period": off_period},
             "trained": {"hidden": args.hidden, "seed": args.seed, "songs": len(train),
                         "bar_lines": int(sum(len(s["target"]) - 1 for s in train)), "dev_songs": len(dev),
                         "dev_scores": grid[(cost, off_period)],
                         "target": "a section starts at the bar line (either POP909 annotator)"},
             "trained_on": [s["ref"].song for s in train]}
    args.out.write_text(json.dumps(head, separators=(",", ":")) + "\n")
    print(json.dumps({"out": str(args.out), "bytes": args.out.stat().st_size, **head["trained"],
                      "decode": head["decode"], "dev_grid": {f"{c}/{o}": v for (c, o), v in grid.items()},
                      "seconds": round(time.perf_counter() - started, 1)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

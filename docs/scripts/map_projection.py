"""Which projection should `midistruct map` use? t-SNE, UMAP and PCA on a saved library, by measurement.

For each method and seed: wall time (the first run of a method in this process includes its import and, for
UMAP, numba's compilation: what a one-shot `midistruct map` pays; ``first_seconds``, the rest's median in
``seconds``), the fraction of each piece's 10 nearest
neighbours in the library's cosine Space that stay among its 10 nearest on the map, and leave-one-out 5-NN
tune-type accuracy on the map (Nottingham: the type is the file name's letters, reels* -> reels), beside the
same accuracy in the full space. Prints JSON.

    python docs/scripts/map_projection.py /tmp/lib/nott-codes.npz --seeds 0 1 2 --threads 1

Needs scikit-learn and umap-learn (pip install scikit-learn umap-learn).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np

from midistruct.library.map import METHODS, _knn, neighbours_kept, project
from midistruct.library.search import Space
from midistruct.library.store import Library


def tune_type(path: str) -> str:
    """``jigs12.mid`` -> jigs, ``reelsa-c3.mid`` -> reels."""
    letters = re.match(r"[a-z]*", Path(path).name.lower()).group(0)
    return "reels" if letters.startswith("reels") else letters


def knn_accuracy(neighbours: np.ndarray, labels: np.ndarray) -> float:
    """Leave-one-out majority vote of the (N, k) neighbours' labels (ties: the nearest's label)."""
    hits = []
    for i, row in enumerate(neighbours):
        votes = {lab: (labels[row] == lab).sum() for lab in labels[row]}
        best = max(votes.values())
        hits.append(next(lab for lab in labels[row] if votes[lab] == best) == labels[i])
    return float(np.mean(hits))


def measure(library: Library, *, method: str, seed: int, threads: int) -> dict:
    labels = np.array([tune_type(p) for p in library.paths])
    start = time.perf_counter()
    xy = project(library.vectors, method=method, seed=seed, threads=threads)
    seconds = time.perf_counter() - start
    low = ((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1)
    return {"method": method, "seed": seed, "seconds": round(seconds, 2),
            "kept_10nn": round(neighbours_kept(library.vectors, xy, k=10), 4),
            "type_5nn_acc": round(knn_accuracy(_knn(low, 5), labels), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("library", help="a library written by midistruct embed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one run per seed and method")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, help="methods to compare")
    parser.add_argument("--threads", type=int, default=1, help="native threads (default: 1)")
    args = parser.parse_args()
    library = Library.load(args.library)
    labels = np.array([tune_type(p) for p in library.paths])
    unit = Space(library.vectors).unit
    runs = [measure(library, method=m, seed=s, threads=args.threads) for m in args.methods for s in args.seeds]
    summary = {m: {k: round(float(np.median([r[k] for r in runs if r["method"] == m])), 4)
                   for k in ("seconds", "kept_10nn", "type_5nn_acc")} for m in args.methods}  # median of seeds
    for m in args.methods:
        summary[m]["first_seconds"] = next(r["seconds"] for r in runs if r["method"] == m)
    print(json.dumps({"library": args.library, "pieces": len(library), "dims": int(library.vectors.shape[1]),
                      "types": {t: int((labels == t).sum()) for t in sorted(set(labels))},
                      "full_space_type_5nn_acc": round(knn_accuracy(_knn(-(unit @ unit.T), 5), labels), 4),
                      "summary": summary, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()

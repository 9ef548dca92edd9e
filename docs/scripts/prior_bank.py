"""Where a Gaussian code prior's samples go wrong, and what a bank of real bar codes changes (docs/RESULTS.md,
"Sampling deterministic codes": "A bank of real bar codes").

Encodes up to --windows training windows of DATA with MODEL, then decodes --n samples (greedy, seed 0; the
reference windows' meters, `midistruct.evaluation.statistics.sample_statistics`) from each of:

    gaussian-rR      a Gaussian fitted to all those codes, R leading directions + diagonal (R = D: full covariance)
    real             the codes of real training windows (the ceiling)
    shuffled-bars    each bar position's code from another real window, the segment code from yet another
    own              the model's own code prior, as fitted (without its bank, if it has one)
    bank-B           the rank --rank Gaussian (with --own: the model's own), each bar code moved to the nearest of B
                     real bar codes (any meter)
    kmeans-K         the same with K k-means centroids of the bar codes instead of real ones

    python docs/scripts/prior_bank.py MODEL DATA [--windows 20000] [--n 64] [--rank 48] [--banks 250 1000 8000] [--own]

The model's own code prior is left as it is (this measures variants in memory; `midistruct prior --bank` writes one).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from midistruct.evaluation import statistics
from midistruct.generation.pipeline import MidiStruct
from midistruct.model.prior import CodePrior

KEYS = {"scale_consistency.generated_mean": "scale_consistency", "scale_consistency.reference_mean": "data",
        "polyphony.generated_mean": "polyphony", "polyphony.reference_mean": "polyphony_data",
        "pitch_range.generated_mean": "pitch_range", "pitch_range.reference_mean": "pitch_range_data",
        "oa_mean": "oa_mean"}


class Drawn:
    """A stand-in prior: ``draw(n)`` -> (z_bar, z_segment); no bank, so the pipeline does not snap."""

    bank = None

    def __init__(self, draw):
        self.draw = draw

    def sample(self, n, **_):
        return self.draw(n)


def kmeans(x: torch.Tensor, k: int, *, iters: int = 15, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = x[torch.randperm(len(x), generator=g)[:k]].clone()
    for _ in range(iters):
        nearest = torch.cdist(x, centres).argmin(1)
        for j in range(k):
            if (nearest == j).any():
                centres[j] = x[nearest == j].mean(0)
    return centres


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("--windows", type=int, default=20000, help="training windows encoded (a seeded random subset)")
    ap.add_argument("--n", type=int, default=64, help="samples decoded for each variant")
    ap.add_argument("--rank", type=int, default=48, help="the Gaussian the bank variants snap from")
    ap.add_argument("--ranks", type=int, nargs="*", default=[48, 256, 0], help="Gaussians to try (0: full)")
    ap.add_argument("--banks", type=int, nargs="*", default=[250, 1000, 8000, 100000])
    ap.add_argument("--kmeans", type=int, nargs="*", default=[1024])
    ap.add_argument("--own", action="store_true", help="snap the model's own code prior's samples, not a refitted one")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ms = MidiStruct.from_pretrained(args.model)
    started = time.time()
    _, z, _ = ms.corpus_codes(args.data, windows=args.windows, progress=True)
    z_bar, z_seg = z.z_bar, z.z_segment
    windows, bars, bar_dim = z_bar.shape
    flat = z_bar.reshape(-1, bar_dim)
    own = ms.prior
    prior = own if args.own and own is not None else CodePrior.fit(z_bar, z_seg, rank=args.rank)
    print(json.dumps({"windows": windows, "bars": bars, "dim": prior.dim, "encode_s": round(time.time() - started)}))
    g = torch.Generator().manual_seed(1)

    def snapped(book):
        def draw(n):
            b, s = prior.sample(n, snap=False)
            return book[torch.cdist(b.reshape(-1, bar_dim), book).argmin(1)].reshape(b.shape), s
        return draw

    variants = {}
    if own is not None:
        variants["own"] = Drawn(lambda n: own.sample(n, snap=False))
    for rank in args.ranks:
        fitted = CodePrior.fit(z_bar, z_seg, rank=rank or prior.dim)
        variants[f"gaussian-r{rank or prior.dim}"] = Drawn(lambda n, f=fitted: f.sample(n, snap=False))
    variants["real"] = Drawn(lambda n: (lambda i: (z_bar[i], z_seg[i]))(torch.randperm(windows, generator=g)[:n]))
    variants["shuffled-bars"] = Drawn(lambda n: (z_bar[torch.randint(windows, (n, bars), generator=g), torch.arange(bars)],
                                                 z_seg[torch.randint(windows, (n,), generator=g)]))
    order = torch.randperm(len(flat), generator=torch.Generator().manual_seed(0))
    for size in args.banks:
        variants[f"bank-{min(size, len(flat))}"] = Drawn(snapped(flat[order[:size]]))
    for k in args.kmeans:
        variants[f"kmeans-{k}"] = Drawn(snapped(kmeans(flat[order[:60000]], k)))
    for name, variant in variants.items():
        ms.prior = variant
        found = statistics.sample_statistics(ms, args.data, n=args.n, temperature=0.0, seed=0)
        print(json.dumps({"variant": name, **{v: round(found[k], 3) for k, v in KEYS.items()}}), flush=True)


if __name__ == "__main__":
    main()

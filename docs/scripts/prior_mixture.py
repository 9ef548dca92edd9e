"""Issue 14: does a Gaussian mixture over a model's training codes sample more tonal music than the shipped prior
(one Gaussian, low rank plus diagonal)? Fits sklearn's GaussianMixture (full covariances) with K components to the
codes of up to 20,000 training windows, draws 128 windows from each at scale 1 and decodes them greedily, through
the same ``sample_statistics`` path as ``midistruct evaluate --samples`` (docs/RESULTS.md, "Sampling deterministic
codes"). One JSON line per prior.

    python docs/scripts/prior_mixture.py folk-2bar --data data/folk-2bar --components 1 8 32
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from sklearn.mixture import GaussianMixture

from midistruct.evaluation import statistics
from midistruct.generation.attributes import corpus_windows_with_pieces
from midistruct.generation.pipeline import MidiStruct

KEYS = ("scale_consistency.generated_mean", "scale_consistency.reference_mean", "polyphony.generated_mean",
        "pitch_range.generated_mean", "oa_mean", "generated_empty")


class MixturePrior:
    """A fitted GaussianMixture behind the code prior's ``sample`` (torch's global generator, as the prior uses)."""

    def __init__(self, mixture: GaussianMixture, fitted):
        self.mixture, self.fitted = mixture, fitted
        self.bars, self.bar_dim, self.segment_dim = fitted.bars, fitted.bar_dim, fitted.segment_dim
        self.cholesky = np.linalg.cholesky(mixture.covariances_)  # (K, D, D)

    def sample(self, n, *, scale=1.0, tags=None, tag_strength=1.0, generator=None, **_):  # keeps no bank: no snap
        which = np.searchsorted(np.cumsum(self.mixture.weights_), torch.rand(n, generator=generator).numpy())
        which = which.clip(0, len(self.mixture.weights_) - 1)
        noise = torch.randn(n, self.mixture.means_.shape[1], generator=generator, dtype=torch.float64).numpy()
        codes = self.mixture.means_[which] + scale * np.einsum("nij,nj->ni", self.cholesky[which], noise)
        return self.fitted.split(torch.from_numpy(codes).float())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a model with a fitted code prior (code_prior.safetensors)")
    parser.add_argument("--data", required=True, help="shard folder: its train split is fitted, its test split compared")
    parser.add_argument("--components", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--windows", type=int, default=20000)
    parser.add_argument("--n", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(1)
    ms = MidiStruct.from_pretrained(args.checkpoint)
    fitted = ms.prior
    if fitted is None:
        raise SystemExit(f"{args.checkpoint} has no fitted code prior (midistruct prior {args.checkpoint})")
    found = statistics.sample_statistics(ms, args.data, n=args.n, temperature=0.0, seed=0)
    print(json.dumps({"prior": "shipped (one Gaussian, low rank + diagonal)", **{k: round(found[k], 4) for k in KEYS}}),
          flush=True)
    rows = [row for row in corpus_windows_with_pieces(args.data, split="train", limit=args.windows, seed=0)
            if ms.vocab.count_bars(row[0]) == ms.bars]
    z = ms.encode_windows([ids for ids, _, _ in rows])
    codes = torch.cat([z.z_bar.flatten(1), z.z_segment], 1).numpy().astype(np.float64)  # the prior's layout
    for k in args.components:
        start = time.time()
        mixture = GaussianMixture(k, covariance_type="full", reg_covar=1e-4, random_state=0, max_iter=200).fit(codes)
        ms.prior = MixturePrior(mixture, fitted)
        found = statistics.sample_statistics(ms, args.data, n=args.n, temperature=0.0, seed=0)
        print(json.dumps({"prior": f"mixture of {k}", "windows": len(codes), "fit_seconds": round(time.time() - start),
                          "log_likelihood": round(float(mixture.score(codes)), 1),
                          **{key: round(found[key], 4) for key in KEYS}}), flush=True)


if __name__ == "__main__":
    main()

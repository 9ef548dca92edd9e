"""Statistics of samples from a model's fitted code prior against held-out windows (docs/RESULTS.md,
"Sampling deterministic codes"): the prior as fitted (its bar codes snapped to its bank of real ones, when it
keeps one), its Gaussian alone (without the snap), the Gaussian without its correlations (diagonal only), and,
as the ceiling, the codes of real held-out windows, each decoded greedily and at temperature 1.

    python docs/scripts/prior_samples.py CHECKPOINT DATA [--n 128] [--seed 0]

CHECKPOINT must hold code_prior.safetensors (`midistruct prior CHECKPOINT --data DATA`).
"""

from __future__ import annotations

import argparse
import json

import torch

from midistruct.evaluation import statistics
from midistruct.generation.pipeline import MidiStruct
from midistruct.model.prior import CodePrior


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("data")
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0, help="draws the samples and picks the reference windows")
    args = ap.parse_args()
    ms = MidiStruct.from_pretrained(args.checkpoint)
    fitted = ms.prior
    assert fitted is not None, "no code_prior.safetensors in the checkpoint"
    total = (fitted.factor**2).sum(1) + fitted.residual**2
    diagonal = CodePrior(fitted.mean, fitted.factor[:, :0], total.sqrt(), fitted.bars, fitted.bar_dim,
                         fitted.segment_dim, fitted.windows)
    out = {}
    runs = [("fitted", fitted, True), *([("gaussian", fitted, False)] if fitted.bank is not None else []),
            ("diagonal", diagonal, True)]
    for name, prior, snap in runs:
        ms.prior = prior
        for t in (0.0, 1.0):
            found = statistics.sample_statistics(ms, args.data, n=args.n, temperature=t, seed=args.seed, snap=snap)
            out[f"{name}_t{t:g}"] = {k: round(found[k], 4) for k in
                                     ("scale_consistency.generated_mean", "scale_consistency.reference_mean",
                                      "polyphony.generated_mean", "polyphony.reference_mean",
                                      "pitch_range.generated_mean", "pitch_range.reference_mean", "oa_mean")}
            print(name, t, json.dumps(out[f"{name}_t{t:g}"]), flush=True)
    # the ceiling: real held-out windows' own codes through the same decoder
    real = statistics_real(ms, args.data, args.n, seed=args.seed)
    out.update(real)
    print(json.dumps(out, indent=1))


def statistics_real(ms, folder, n, *, seed: int = 0):
    """The same statistics with the prior replaced by the codes of ``n`` other held-out windows."""
    from midistruct.generation.attributes import corpus_windows_with_pieces

    rows = [row for row in corpus_windows_with_pieces(folder, split="test", limit=4 * n, seed=7)
            if ms.vocab.count_bars(row[0]) == ms.bars][:n]
    windows = [ids for ids, _, _ in rows]
    # a model that reads a canonical key encodes each window moved by its piece's shift
    z = ms.encode_windows(windows, shifts=ms.corpus_shifts(folder, "test", [piece["id"] for _, piece, _ in rows]))

    class Replay:  # a "prior" that hands out those codes in order (over the calls for each meter)
        bars, bar_dim, segment_dim, bank, taken = ms.bars, z.z_bar.shape[2], z.z_segment.shape[1], None, 0

        def check(self, **_):
            pass

        def sample(self, k, generator=None, scale=1.0, **_):
            start, self.taken = self.taken, self.taken + k
            return z.z_bar[start : start + k], z.z_segment[start : start + k]

    out = {}
    for t in (0.0, 1.0):
        ms.prior = Replay()
        found = statistics.sample_statistics(ms, folder, n=len(windows), temperature=t, seed=seed)
        out[f"real_codes_t{t:g}"] = {k: round(found[k], 4) for k in
                                     ("scale_consistency.generated_mean", "scale_consistency.reference_mean",
                                      "polyphony.generated_mean", "polyphony.reference_mean",
                                      "pitch_range.generated_mean", "pitch_range.reference_mean", "oa_mean")}
        print("real", t, json.dumps(out[f"real_codes_t{t:g}"]), flush=True)
    torch.manual_seed(0)
    return out


if __name__ == "__main__":
    main()

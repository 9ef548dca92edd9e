"""A kernel prior over a model's codes, against the fitted Gaussian (docs/RESULTS.md, "Sampling deterministic
codes"): each sample is the codes of a random training window plus Gaussian noise of ``h`` times each
coordinate's spread. Prints, per bandwidth ``h``, the samples' scale consistency (128 greedy samples against 128
held-out windows, as ``prior_samples.py``) and how close a sample stays to the window it was drawn around: the
note F1 (onset and pitch) between the sample's decoding and its anchor window's own decoding (64 samples).

    python docs/scripts/prior_kernel.py folk-2bar /work/data/folk-2bar --h 0.25 0.5 1.0
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from midistruct.evaluation import statistics
from midistruct.generation.attributes import corpus_windows
from midistruct.generation.pipeline import MidiStruct
from midistruct.metrics.notes import notes_of
from midistruct.tokens.tokenizer import decode_ids


class KernelPrior:
    """Samples ``anchors`` (N, D) rows plus N(0, (h * spread)^2) noise; :attr:`last` the rows drawn last."""

    def __init__(self, anchors: torch.Tensor, *, h: float, bars: int, bar_dim: int, segment_dim: int):
        self.anchors, self.h, self.spread = anchors, h, anchors.std(0)
        self.bars, self.bar_dim, self.segment_dim = bars, bar_dim, segment_dim
        self.last = None

    def check(self, **_):
        pass

    def sample(self, n, *, scale=1.0, tags=None, tag_strength=1.0, generator=None, **_):  # keeps no bank: no snap
        self.last = torch.randint(len(self.anchors), (n,), generator=generator)
        x = self.anchors[self.last] + self.h * self.spread * torch.randn(n, self.anchors.shape[1], generator=generator)
        width = self.bars * self.bar_dim
        return x[:, :width].reshape(n, self.bars, self.bar_dim), x[:, width:]


def note_f1(a: np.ndarray, b: np.ndarray) -> float:
    """F1 of (onset, pitch) pairs between two note arrays (``notes_of``)."""
    x = {(round(float(t), 3), int(p)) for t, p in zip(a[:, 0], a[:, 2])}
    y = {(round(float(t), 3), int(p)) for t, p in zip(b[:, 0], b[:, 2])}
    return 2 * len(x & y) / (len(x) + len(y)) if x and y else 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("data")
    ap.add_argument("--h", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    ap.add_argument("--anchors", type=int, default=3000, help="training windows drawn around")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ms = MidiStruct.from_pretrained(args.checkpoint)
    train = [w for w in corpus_windows(args.data, split="train", limit=args.anchors, seed=3)
             if ms.vocab.count_bars(w) == ms.bars]
    z = ms.encode_windows(train)
    anchors = torch.cat([z.z_bar.flatten(1), z.z_segment], 1)
    for h in args.h:
        prior = KernelPrior(anchors, h=h, bars=ms.bars, bar_dim=z.z_bar.shape[2], segment_dim=z.z_segment.shape[1])
        ms.prior = prior
        found = statistics.sample_statistics(ms, args.data, n=128, temperature=0.0, seed=0)
        torch.manual_seed(0)
        drawn = ms.sample_latents(64)
        rows = prior.last.tolist()
        drawn.time_signatures = [ms.vocab.meter(train[i]) for i in rows]
        samples = ms.generate_tokens(drawn, temperature=0.0)
        own = ms.generate_tokens(ms.encode_windows([train[i] for i in rows]), temperature=0.0)
        close = np.mean([note_f1(notes_of(decode_ids(ms.tokenizer, s)), notes_of(decode_ids(ms.tokenizer, o)))
                         for s, o in zip(samples, own)])
        print(json.dumps({"h": h, "scale_consistency": round(found["scale_consistency.generated_mean"], 4),
                          "data": round(found["scale_consistency.reference_mean"], 4),
                          "note_f1_to_anchor": round(float(close), 3)}), flush=True)


if __name__ == "__main__":
    main()

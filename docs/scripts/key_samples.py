"""Where a canonical model's key control goes wrong (docs/RESULTS.md, "Tags as conditioning", "From the canonical
tonic"): the pitch classes of its samples near and far from the prior's mean, and what the tag judge calls samples
and reconstructions asked for each key.

    python docs/scripts/key_samples.py --model folk-2bar --data /work/data/folk-2bar
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tag_control import labelled  # noqa: E402 - the same labelled windows as the tag-control script

from midistruct.evaluation.tag_control import fit_judge, judge_windows  # noqa: E402
from midistruct.generation.pipeline import MidiStruct  # noqa: E402
from midistruct.tokens.key import pitch_class_histogram  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="folk-2bar")
    ap.add_argument("--data", required=True)
    ap.add_argument("--meter", default="6/8", help="meter of the pitch-class samples")
    ap.add_argument("-n", type=int, default=100)
    args = ap.parse_args()
    torch.set_num_threads(1)
    ms = MidiStruct.from_pretrained(args.model)
    assert ms.canonical, f"{args.model} reads pitches as written"
    torch.manual_seed(0)
    out = {"pitch_classes": {}, "keys": {}}
    for mode in ("major", "minor"):
        for scale in (0.5, 1.0):
            z = ms.sample_latents(args.n, meter=args.meter, tags={"mode": mode}, scale=scale)
            h = sum(pitch_class_histogram(ms.vocab.to_base(t), ms.vocab) for t in ms.generate_tokens(z))
            out["pitch_classes"][f"{mode} scale {scale}"] = np.round(h / h.sum(), 3).tolist()  # C first
    train = labelled(ms, args.data, "train", 20000, "key", seed=0)
    test = labelled(ms, args.data, "test", 1500, "key", seed=1)
    values = [v for v, c in Counter(v for _, v in test).most_common() if c >= 40][:6]
    judge = fit_judge(ms, [w for w, _ in train], [v for _, v in train], values, per_value=500)
    for value in values:
        real = [w for w, v in test if v == value][: args.n]
        rest, key = ms.sample_tonic({"key": value})
        z = ms.encode_windows(real, shifts=ms.own_key_shifts(real))
        z.shifts = [0] * len(real)  # decoded in C major / A minor, then moved from the canonical tonic
        moved = [ms.in_tonic(ids, key) for ids in ms.generate_tokens(z)]
        calls = {"real": judge_windows(judge, ms, real), "reconstructed, moved": judge_windows(judge, ms, moved)}
        for scale in (0.5, 1.0):
            zs = ms.sample_latents(args.n, meter=ms.prior.meter_for(rest) or "4/4", tags=rest, scale=scale)
            calls[f"sampled at scale {scale}"] = judge_windows(
                judge, ms, [ms.in_tonic(ids, key) for ids in ms.generate_tokens(zs)])
        out["keys"][value] = {name: dict(Counter(c).most_common(3)) for name, c in calls.items()}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

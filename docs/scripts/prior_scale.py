"""Sample statistics of a fitted code prior drawn at several scales (the truncation trick), greedy decoding
(docs/RESULTS.md, "Sampling deterministic codes").

    python docs/scripts/prior_scale.py CHECKPOINT DATA --scales 0.5 0.75 [--n 128] [--temperature 0] [--top-p 1] [--no-snap]
"""

from __future__ import annotations

import argparse
import json

from midistruct.evaluation import statistics
from midistruct.generation.pipeline import MidiStruct

KEYS = ("scale_consistency.generated_mean", "scale_consistency.reference_mean", "polyphony.generated_mean",
        "polyphony.reference_mean", "pitch_range.generated_mean", "pitch_range.reference_mean",
        "note_density.generated_mean", "note_density.reference_mean", "oa_mean", "generated_empty")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("data")
    ap.add_argument("--scales", type=float, nargs="+", default=[0.5, 0.75])
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling of the decoder (with --temperature > 0)")
    ap.add_argument("--seed", type=int, default=0, help="draws the samples and picks the reference windows")
    ap.add_argument("--no-snap", action="store_true", help="keep the Gaussian's bar codes (where the prior has a bank)")
    args = ap.parse_args()
    ms = MidiStruct.from_pretrained(args.checkpoint)
    assert ms.prior is not None, "no code_prior.safetensors in the checkpoint"
    for scale in args.scales:
        found = statistics.sample_statistics(ms, args.data, n=args.n, temperature=args.temperature, seed=args.seed,
                                             prior_scale=scale, top_p=args.top_p, snap=not args.no_snap)
        print(json.dumps({"scale": scale, "temperature": args.temperature, "top_p": args.top_p, "seed": args.seed,
                          "snap": found["snap"],
                          **{k: round(found[k], 4) for k in KEYS}}), flush=True)


if __name__ == "__main__":
    main()

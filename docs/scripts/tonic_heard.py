"""How many samples asked for a tonic the Krumhansl-Schmuckler key finder hears in that tonic (docs/RESULTS.md,
"A bank of real bar codes"; `tests/test_tags.py` asks the same of 8 samples).

    python docs/scripts/tonic_heard.py MODEL --tag tonic=F [--tag mode=major] [--n 32] [--prior-scale 0.5]
        [--tag-strength 2] [--no-snap]
"""

from __future__ import annotations

import argparse
import json

import torch

from midistruct.generation.pipeline import MidiStruct
from midistruct.tags import parse_key
from midistruct.tokens.key import key_of


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--tag", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--prior-scale", type=float, default=0.5)
    ap.add_argument("--tag-strength", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-snap", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    tags = dict(t.split("=", 1) for t in args.tag)
    tonic = parse_key(tags["key"] if "key" in tags else f"{tags['tonic']} major")[0]
    ms = MidiStruct.from_pretrained(args.model)
    scores = ms.sample(args.n, seed=args.seed, temperature=0.0, prior_scale=args.prior_scale, tags=tags,
                       tag_strength=args.tag_strength, snap=not args.no_snap)
    heard = [key_of([ms.piece_encoder.tokenize(s)], ms.vocab) for s in scores]
    print(json.dumps({"tags": tags, "snap": not args.no_snap, "n": args.n, "prior_scale": args.prior_scale,
                      "heard_in_tonic": sum(1 for k in heard if k and k[0] == tonic),
                      "heard": [f"{k[0]}:{k[1]}" if k else None for k in heard]}))


if __name__ == "__main__":
    main()

"""Issue 19: measure a model with an arrangement block -- swap the arrangement code between held-out POP909 windows
(content kept? arrangement moved?) and probe each block for the other's attributes. Writes JSON to stdout.

    python docs/scripts/blocks_transfer.py RUN/best --data data/pop909-4bar --pairs 100 > blocks.json

A model without the block (``pop909-4bar``) gets the content scores of its own reconstruction of the same
windows instead (``reconstruction``): what a swap could keep at best.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from midistruct.evaluation.blocks import measure_reconstruction, measure_swaps, probe_blocks, swap_pairs
from midistruct.generation.pipeline import MidiStruct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data", required=True, help="shard folder (its test split is used)")
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--probe-windows", type=int, default=1500)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", action="store_true", help="keep every pair's scores in the output")
    parser.add_argument("--block", default="arrangement", choices=["arrangement", "performance"],
                        help="the block swapped (performance: a model with velocity tokens)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.time()
    ms = MidiStruct.from_pretrained(args.checkpoint)
    pairs = swap_pairs(args.data, ms.vocab, n=args.pairs, bars=ms.bars)
    result = {"checkpoint": args.checkpoint, "data": args.data}
    if args.block in ms.blocks():
        swaps = measure_swaps(ms, pairs, block=args.block)
        if not args.rows:
            swaps.pop("rows")
        result.update(swaps=swaps, probes=probe_blocks(ms, args.data, windows=args.probe_windows))
    else:
        print(f"{args.checkpoint} has no {args.block} block: scoring its reconstruction of the same content windows",
              file=sys.stderr)
        result["reconstruction"] = measure_reconstruction(ms, [a for a, _ in pairs])
    json.dump({**result, "seconds": round(time.time() - start, 1)}, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()

"""Tag control accuracy (issue 18): do samples drawn with --tag NAME=VALUE sound like VALUE to a judge trained
on real music? Writes JSON (midistruct.evaluation.tag_control explains the four shares).

    python docs/scripts/tag_control.py --model MODEL_WITH_TAGGED_PRIOR --data /work/data/folk-2bar \
        --tags mode,tune_type --out docs/results/tag_control_folk-2bar.json --threads 1
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from midistruct.evaluation.tag_control import FinderJudge, control, fit_judge
from midistruct.generation.attributes import corpus_windows_with_pieces
from midistruct.generation.pipeline import MidiStruct
from midistruct.tags import window_tags


def labelled(ms, folder, split, limit, name, seed):
    rows = []
    for ids, piece, bar in corpus_windows_with_pieces(folder, split=split, limit=limit, seed=seed):
        if ms.vocab.count_bars(ids) != ms.bars:
            continue
        value = window_tags(piece.get("tags", {}), piece["id"], ms.vocab.meter(ids, default=None), bar=bar,
                            n_bars=ms.bars, names=[name])
        if name in value:
            rows.append((ids, value[name]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="checkpoint or shipped name whose code prior has tags")
    parser.add_argument("--data", required=True, help="shard folder: train split fits the judge, test scores it")
    parser.add_argument("--tags", default="mode,tune_type")
    parser.add_argument("--judge-windows", type=int, default=20000, help="train windows scanned for the judge")
    parser.add_argument("--per-value", type=int, default=500, help="judge training windows per value")
    parser.add_argument("--held-out", type=int, default=1500)
    parser.add_argument("--min-windows", type=int, default=40, help="least held-out windows of a value judged")
    parser.add_argument("--max-values", type=int, default=6)
    parser.add_argument("-n", type=int, default=50, help="samples per value")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--prior-scale", type=float, default=1.0)
    parser.add_argument("--tag-strength", type=float, default=1.0)
    parser.add_argument("--route", default="both", choices=("both", "prior", "decoder", "meter"),
                        help="who is told the tag, for a model whose decoder reads tags (model.decoder_tags)")
    parser.add_argument("--no-snap", dest="snap", action="store_false",
                        help="draw bar codes from the prior's Gaussian alone, not snapped to its bank of real bars")
    parser.add_argument("--judge", choices=("fitted", "finder"), default="fitted",
                        help="fitted: softmax regression on the notes, choosing among the values judged; finder: the "
                             "key finder over all 24 keys (key tags only)")
    parser.add_argument("--tries", type=int, default=1,
                        help="a canonical model's key samples drawn again while heard in another key (sample --tries)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.judge == "finder" and set(args.tags.split(",")) != {"key"}:
        parser.error("--judge finder judges key tags only: give --tags key")
    torch.set_num_threads(args.threads)
    ms = MidiStruct.from_pretrained(args.model)
    report = {"model": args.model, "data": args.data, "command": "python docs/scripts/tag_control.py "
              + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()), "tags": {}}
    for name in args.tags.split(","):
        start = time.time()
        train = labelled(ms, args.data, "train", args.judge_windows, name, seed=0)
        test = labelled(ms, args.data, "test", args.held_out, name, seed=1)
        counts = Counter(v for _, v in test)
        known = set(ms.known_tags().get(name, []))
        if ms.canonical and name in ("tonic", "key"):  # reached by transposing samples: any tonic can be asked
            known = set(counts)
        values = [v for v, c in counts.most_common() if c >= args.min_windows and v in known][: args.max_values]
        if len(values) < 2:
            report["tags"][name] = {"skipped": f"{len(values)} value(s) with {args.min_windows} held-out windows"}
            continue
        judge = (FinderJudge(values) if args.judge == "finder" else
                 fit_judge(ms, [w for w, _ in train], [v for _, v in train], values, per_value=args.per_value))
        held = [(w, v) for w, v in test if v in values]
        result = control(ms, judge, name, held_out=held, n=args.n, temperature=args.temperature,
                         prior_scale=args.prior_scale, tag_strength=args.tag_strength, route=args.route,
                         seed=args.seed, snap=args.snap, tries=args.tries)
        result["judge_train_windows"] = sum(v in values for _, v in train)
        result["seconds"] = round(time.time() - start, 1)
        report["tags"][name] = result
        print(json.dumps({name: {k: v for k, v in result.items() if k != "values"}}, indent=1))
        for value, shares in result["values"].items():
            print(f"  {value:12s} " + " ".join(f"{k} {shares[k]}" for k in ("controlled", "unconditioned",
                                                                              "retagged", "real")))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2, default=lambda o: float(o) if isinstance(o, np.floating) else str(o)))


if __name__ == "__main__":
    main()

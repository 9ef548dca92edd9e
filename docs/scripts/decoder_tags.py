"""Does a decoder that reads tags (model.decoder_tags, issue 18 item 2) use them? Two checks on held-out windows:
the size of the learnt tag vectors beside the segment codes they are added to, and how often greedy decoding of the
same codes changes when only the tag changes (each window's own codes, and zero codes).

    python docs/scripts/decoder_tags.py RUN/best /work/data/folk-2bar --tag tune_type --values jig reel --n 128
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from midistruct.generation.attributes import corpus_windows_with_pieces
from midistruct.generation.pipeline import MidiStruct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("data")
    parser.add_argument("--tag", default="tune_type")
    parser.add_argument("--values", nargs="+", default=["jig", "reel"])
    parser.add_argument("--n", type=int, default=128, help="held-out (test split) windows")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ms = MidiStruct.from_pretrained(args.model)
    tables = ms.model.tag_codes
    if tables is None:
        raise SystemExit(f"{args.model}: its decoder reads no tags")
    rows = [ids for ids, _, _ in corpus_windows_with_pieces(args.data, split="test", limit=4 * args.n, seed=0)
            if ms.vocab.count_bars(ids) == ms.bars][: args.n]
    shifts = ms.own_key_shifts(rows) if ms.canonical else None
    z = ms.encode_windows(rows, shifts=shifts)
    z.shifts = []  # compare the decoded ids in the model's key
    table = tables.tables[tables.names.index(args.tag)].weight.detach()
    report = {"model": args.model, "windows": len(rows), "tag": args.tag, "values": args.values,
              "tag_vector_norms": [round(float(x), 3) for x in table.norm(dim=1)],
              "segment_code_norm": round(float(z.z_segment.norm(dim=1).mean()), 3)}
    for name, codes in {"own codes": z, "zero codes": z.with_codes(torch.zeros_like(z.z_bar),
                                                                     torch.zeros_like(z.z_segment))}.items():
        decoded = [ms.generate_tokens(codes.with_tags({args.tag: v})) for v in args.values]
        plain = ms.generate_tokens(codes.with_tags({}))
        report[name] = {"changed_between_values": float(np.mean([a != b for a, b in zip(*decoded[:2])])),
                        "changed_from_no_tag": [float(np.mean([a != b for a, b in zip(d, plain)])) for d in decoded]}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

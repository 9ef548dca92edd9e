"""Teacher-forced NLL of two checkpoints on held-out windows, grouped by whether the key finder agrees with a
piece's labelled key signature (docs/RESULTS.md, "Key apart from content": does the canonical POP909 model lose
where the finder mishears the key?).

    python docs/scripts/key_groups.py /work/data/pop909-4bar pop909-4bar /work/runs/pop909-canonical-4bar/best
"""

from __future__ import annotations

import argparse
import contextlib
import json

import numpy as np
import torch

from midistruct.model.checkpoint import key_mode, load_checkpoint
from midistruct.shards.dataset import WindowDataset, collate, piece_shifts
from midistruct.shards.reader import ShardSet
from midistruct.tags import parse_key
from midistruct.tokens.key import canonical_shift
from midistruct.tokens.remi import RemiVocab
from midistruct.training import validation


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--split", default="test")
    ap.add_argument("--windows", type=int, default=384, help="windows per group")
    args = ap.parse_args()
    torch.set_num_threads(1)
    shards = ShardSet(args.data)
    arrays = shards.split(args.split)
    shifts = piece_shifts(arrays, RemiVocab(shards.tokenizer()))
    labels = [parse_key(p.get("tags", {}).get("key")) for p in arrays.pieces()]
    agrees = np.array([None if not key or key[1] not in ("major", "minor") else (canonical_shift(key) - s) % 12 == 0
                       for key, s in zip(labels, shifts)], dtype=object)
    piece_of = np.asarray(arrays.windows)[:, 2]
    rng = np.random.default_rng(0)
    groups = {name: rng.permutation(np.flatnonzero(agrees[piece_of] == flag))[: args.windows]
              for name, flag in (("finder agrees", True), ("finder disagrees", False))}
    out = {"pieces": {"agree": int(sum(a is not None and bool(a) for a in agrees)),
                      "disagree": int(sum(a is not None and not a for a in agrees))}}
    for checkpoint in args.checkpoints:
        model, tokenizer, meta = load_checkpoint(checkpoint)
        ds = WindowDataset([args.data], args.split, key=key_mode(meta), **model.config.view_options())
        for name, rows in groups.items():
            batches = [collate([ds[int(i)] for i in rows[s : s + 32]]) for s in range(0, len(rows), 32)]
            found = validation.teacher_forced(model, batches, device="cpu", autocast=contextlib.nullcontext,
                                              tokenizer=tokenizer)
            out[f"{checkpoint} | {name}"] = {"windows": len(rows), "nll": round(found["recon_nll_per_token"], 3),
                                             "pitch_accuracy": round(found["token_accuracy.Pitch"], 3)}
        print(json.dumps(out, indent=1), flush=True)


if __name__ == "__main__":
    main()

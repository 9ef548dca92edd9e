"""How new are a model's samples, bar by bar (docs/RESULTS.md, "A bank of real bar codes").

For samples drawn from the model's code prior with and without its bank's snap (`sample --no-snap`), greedy and
at decoder temperature 1, and for the bars of real held-out tunes (one window of each of --n test pieces):

    in_train   the share of their bars found note for note among the training windows' bars (the bar's tokens with
               its time signature left out; a model that reads a canonical key compares in that key)
    pairs_in_train  the share of their pairs of consecutive bars found so, one after the other, in a training window
    distinct   the share of their bars that no other of those bars repeats

    python docs/scripts/sample_novelty.py MODEL DATA [--n 256] [--seed 0]

Samples take the meters of --n random held-out windows.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from midistruct.generation.pipeline import MidiStruct
from midistruct.shards.dataset import piece_shifts
from midistruct.shards.reader import ShardSet


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    ms = MidiStruct.from_pretrained(args.model)
    vocab = ms.vocab
    meter_ids = {i for i, kind in enumerate(vocab.base_kinds) if kind == "TimeSig"}

    def bars_of(ids) -> list[tuple[int, ...]]:
        base = np.array([i for i in vocab.to_base(ids).tolist() if i not in meter_ids])
        return [tuple(c.tolist()) for c in np.split(base, np.flatnonzero(base == vocab.bar_id)[1:]) if len(c) > 1]

    def windows(split: str) -> list[tuple[np.ndarray, int]]:
        """(base ids in the model's key, piece) of every window of a split."""
        arrays = ShardSet(args.data).split(split)
        shifts = piece_shifts(arrays, vocab) if ms.canonical else None
        out = []
        for i in range(arrays.n_windows):
            ids, piece = vocab.to_base(arrays.window(i)[0]), int(arrays.windows[i][2])
            out.append((vocab.shift_pitches(ids, int(shifts[piece]), fold=True) if shifts is not None else ids, piece))
        return out

    train, train_pairs = set(), set()
    for ids, _ in windows("train"):
        bars = bars_of(ids)
        train.update(bars)
        train_pairs.update(zip(bars, bars[1:]))
    test = windows("test")
    rng = np.random.default_rng(args.seed)
    one_each: dict[int, np.ndarray] = {}
    for i in rng.permutation(len(test)):
        one_each.setdefault(test[i][1], test[i][0])
    meters = [vocab.meter(test[i][0]) for i in rng.permutation(len(test))[: args.n]]

    def measure(pieces: list[list[tuple[int, ...]]]) -> dict:
        bars = [b for bars in pieces for b in bars]
        pairs = [p for bars in pieces for p in zip(bars, bars[1:])]
        return {"in_train": round(float(np.mean([b in train for b in bars])), 3),
                "pairs_in_train": round(float(np.mean([p in train_pairs for p in pairs])), 3),
                "distinct": round(len(set(bars)) / len(bars), 3), "bars": len(bars)}

    out = {"model": args.model, "train_bars": len(train),
           "real_held_out": measure([bars_of(ids) for ids in list(one_each.values())[: args.n]])}
    for snap in (True, False):
        for temperature in (0.0, 1.0):
            torch.manual_seed(args.seed)
            tokens = ms.generate_tokens(ms.sample_latents_in_meters(meters, snap=snap), temperature=temperature)
            out[f"{'snapped' if snap else 'gaussian'}_t{temperature:g}"] = measure([bars_of(ids) for ids in tokens])
    print(json.dumps(out))


if __name__ == "__main__":
    main()

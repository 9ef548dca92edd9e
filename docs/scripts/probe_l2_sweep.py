"""One-off check behind docs/RESULTS.md ("Probes on Nottingham"): does a stronger L2 weight let the
segment code's key-signature probe catch up with the histogram's? Prints held-out and training
accuracy per L2 weight for each feature set.

    python docs/scripts/probe_l2_sweep.py runs/nott2-bow/best valid [data/nottingham-2bar]
"""

import sys

import numpy as np
import torch

from midistruct.evaluation import probes
from midistruct.generation.pipeline import MidiStruct
from midistruct.metrics.notes import notes_of
from midistruct.shards.reader import ShardSet
from midistruct.tokens.tokenizer import decode_ids


def main(ckpt: str, split: str, folder: str = "data/nottingham-2bar", windows: int = 4000) -> None:
    torch.set_num_threads(1)
    ms = MidiStruct.from_pretrained(ckpt)
    arrays = ShardSet(folder).split(split)
    pieces = arrays.pieces()
    pick = np.sort(np.random.default_rng(0).permutation(arrays.n_windows)[:windows])
    ids = [arrays.window(int(i))[0] for i in pick]
    owners = [pieces[int(arrays.windows[i][2])] for i in pick]
    groups = [p.get("group") or p["id"] for p in owners]
    test = probes.piece_test_mask(groups, seed=0)
    labels = [p["tags"].get("key_signature") for p in owners]
    z = ms.encode_windows(ids)
    real = np.arange(z.z_bar.shape[1])[None, :] < np.array(z.bars)[:, None]
    features = {"latent": z.z_segment.numpy().astype(np.float64),
                "bar_latent": (z.z_bar.numpy() * real[..., None]).sum(1) / real.sum(1, keepdims=True),
                "histogram": np.stack([probes.baseline_features(notes_of(decode_ids(ms.tokenizer, w))) for w in ids])}
    keep, reason = probes.usable_labels(np.array(labels, dtype=object), test, 5)
    if reason:
        raise SystemExit(reason)
    names = sorted(set(labels[i] for i in np.flatnonzero(keep)))
    y = np.array([names.index(labels[i]) for i in np.flatnonzero(keep)])
    train, held = ~test[keep], test[keep]
    print(f"{len(ids)} windows, {len(set(groups))} pieces, classes {names}, "
          f"majority {np.mean(y[held] == np.bincount(y[train]).argmax()):.3f}")
    for l2 in (1e-3, 1e-2, 1e-1, 1.0):
        row = {}
        for name, x in features.items():
            probe = probes.fit_probe(x[keep][train], y[train], l2=l2)
            row[name] = (round(float(np.mean(probe.predict(x[keep][held]) == y[held])), 3),
                         round(float(np.mean(probe.predict(x[keep][train]) == y[train])), 3))
        print(f"l2={l2:g} (held-out, train):", row)


if __name__ == "__main__":
    main(*sys.argv[1:])

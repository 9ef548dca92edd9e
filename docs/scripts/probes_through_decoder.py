"""Issue 14: do the codes hold the key? A linear probe on the codes beside the same probe on the pitch-class +
duration histogram of the model's own greedy reconstruction of each window (the codes read through the decoder)
and of the true notes. Writes JSON to stdout.

    python docs/scripts/probes_through_decoder.py folk-2bar --data data/nottingham-2bar --target key_signature
    python docs/scripts/probes_through_decoder.py folk-2bar --data data/folk-2bar --target key

The windows, the split by piece and the probe are ``midistruct evaluate --probes``'s (``evaluation.probes.probe_windows``), with
the same seed, so the ``segment`` / ``bar_mean`` / ``histogram`` rows equal its ``latent`` / ``bar_latent`` /
``histogram`` accuracies; ``bars_concat`` probes the window's bar codes side by side instead of their mean.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from midistruct.evaluation.probes import (
    TARGETS,
    baseline_features,
    probe_windows,
    run_probes,
)
from midistruct.generation.pipeline import MidiStruct
from midistruct.metrics.notes import notes_of
from midistruct.tokens.tokenizer import decode_ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data", required=True, help="shard folder")
    parser.add_argument("--target", default="key", choices=sorted(TARGETS))
    parser.add_argument("--split", default="test")
    parser.add_argument("--windows", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    ms = MidiStruct.from_pretrained(args.checkpoint)
    chosen = probe_windows(ms.vocab, args.data, split=args.split, windows=args.windows, targets=[args.target],
                           seed=args.seed)
    ids = chosen.ids
    z = ms.encode_windows(ids)
    real = np.arange(z.z_bar.shape[1])[None, :] < np.array(z.bars)[:, None]  # (W, NB) bars the window has
    bars = z.z_bar.numpy().astype(np.float64) * real[..., None]
    decoded = ms.generate_tokens(z)  # greedy, the grammar path

    def histograms(windows):
        return np.stack([baseline_features(notes_of(decode_ids(ms.tokenizer, w))) for w in windows])

    features = {"segment": z.z_segment.numpy().astype(np.float64), "bar_mean": bars.sum(1) / real.sum(1, keepdims=True),
                "bars_concat": bars.reshape(len(ids), -1), "decoded_histogram": histograms(decoded),
                "histogram": histograms(ids)}
    result = run_probes(features, chosen.labels, chosen.test)
    json.dump({"checkpoint": args.checkpoint, "data": args.data, "target": args.target, "windows": len(ids),
               **{k: v for k, v in result.items() if "accuracy" in k or k.endswith("windows")}},
              sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()

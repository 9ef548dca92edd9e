"""What the codes alone say about each bar's notes in order: the sequence head's (``model.sequence_head``)
argmax at every slot of held-out bars against the true token there, Pitch slots apart; the check behind
docs/RESULTS.md "issue 14" (does the code hold the order of the pitches, or only the rhythm?).

    python docs/scripts/sequence_head_pitch.py runs/nott2-seq/best [windows] [seed]
"""

import sys

import numpy as np
import torch

from midistruct.model.modeling import slot_targets
from midistruct.shards.dataset import WindowDataset, collate
from midistruct.model.checkpoint import load_checkpoint


def main(checkpoint: str, windows: str = "512", seed: str = "0") -> None:
    torch.set_num_threads(1)
    model, tokenizer, meta = load_checkpoint(checkpoint)
    if model.sequence_head is None:
        raise SystemExit(f"{checkpoint}: the model has no sequence head (model.sequence_head = 0)")
    ds = WindowDataset([meta["run_config"]["data"]["output"]], "test")
    pick = np.random.default_rng(int(seed)).permutation(len(ds))[: int(windows)]
    pitch = torch.tensor([tokenizer[i].startswith("Pitch_") for i in range(len(tokenizer))])  # (V,)
    right = {"Pitch": [0, 0], "other": [0, 0]}
    for start in range(0, len(pick), 64):
        batch = collate([ds[int(i)] for i in pick[start : start + 64]])
        with torch.no_grad():
            latents = model.encode(batch["input_ids"], batch["attention_mask"], batch["bar_ids"], sample=False)
            codes, bar_ids = model.bar_codes(latents, batch["bar_ids"])
            targets = slot_targets(batch["labels"], bar_ids, n_bars=codes.shape[1], max_slots=model.config.sequence_slots)
            guess = model.sequence_head(codes, n_slots=targets.shape[-1]).argmax(-1)  # (B, NB, K)
        real = targets != -100
        is_pitch = pitch[targets.clamp(min=0)] & real
        for kind, where in (("Pitch", is_pitch), ("other", real & ~is_pitch)):
            right[kind][0] += int((guess == targets)[where].sum())
            right[kind][1] += int(where.sum())
    for kind, (hits, total) in right.items():
        print(f"{checkpoint}: sequence head from the codes alone, {kind} slots right {hits / total:.3f} ({total} slots)")


if __name__ == "__main__":
    main(*sys.argv[1:])

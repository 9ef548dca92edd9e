"""Share of a shard folder's onsets that sit on the 16th-note grid (even Position tokens at 8
positions per beat), the check behind the POP909 downbeat alignment in docs/RESULTS.md.

    python docs/scripts/onset_grid.py data/pop909 [valid]
"""

import sys

import numpy as np

from midistruct.shards.reader import ShardSet


def main(folder: str, split: str = "valid") -> None:
    shards = ShardSet(folder)
    tokenizer = shards.tokenizer()
    names = [tokenizer[int(i)] for i in np.unique(shards.split(split).tokens)]
    position = {tokenizer.vocab[n]: int(n.split("_")[1]) for n in names if n.startswith("Position_")}
    tokens = shards.split(split).tokens
    values = np.array([position[int(t)] for t in tokens if int(t) in position])
    print(f"{folder} {split}: {len(values)} onsets; on the 16th grid {np.mean(values % 2 == 0):.3f}, "
          f"on the 8th grid {np.mean(values % 4 == 0):.3f}")


if __name__ == "__main__":
    main(*sys.argv[1:])

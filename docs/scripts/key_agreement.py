"""How often the canonical key's shift (midistruct.tokens.key, the Krumhansl-Schmuckler finder over a whole piece)
agrees with a piece's labelled key (its ``key`` tag: POP909's key_audio.txt, the music21 books' key signatures),
counted on the key signature: relative keys (C major, A minor) share a shift (docs/RESULTS.md "Key apart from
content"). Pieces labelled with another mode than major or minor are left out.

    python docs/scripts/key_agreement.py /work/data/pop909-4bar /work/data/folk-2bar [--split train]
"""

from __future__ import annotations

import argparse
import json

from midistruct.shards.dataset import piece_shifts
from midistruct.shards.reader import ShardSet
from midistruct.tags import parse_key
from midistruct.tokens.key import canonical_shift
from midistruct.tokens.remi import RemiVocab


def agreement(folder: str, split: str) -> dict:
    shards = ShardSet(folder)
    arrays = shards.split(split)
    shifts = piece_shifts(arrays, RemiVocab(shards.tokenizer()))
    pairs = [(parse_key(p.get("tags", {}).get("key")), int(s)) for p, s in zip(arrays.pieces(), shifts)]
    pairs = [(key, s) for key, s in pairs if key and key[1] in ("major", "minor")]
    same = sum((canonical_shift(key) - s) % 12 == 0 for key, s in pairs)
    return {"data": folder, "split": split, "labelled_pieces": len(pairs),
            "same_key_signature": round(same / max(len(pairs), 1), 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--split", default="train")
    args = ap.parse_args()
    for folder in args.folders:
        print(json.dumps(agreement(folder, args.split)))


if __name__ == "__main__":
    main()

"""How melodic are an interpolation's steps? For each MIDI file, its notes and how many of them start before the
note before them ends (notes sorted by start: a melody has none; a decoder answering a code no real bar has stacks
notes into chords). Used for the interpolations in docs/RESULTS.md ("The ELBO as a bound", "Interpolants a language
model believes").

    python docs/scripts/stacked_notes.py out/vae        # a folder of an interpolation's step files, in name order
    python docs/scripts/stacked_notes.py src/midistruct/pretrained/folk-2bar/examples    # the tunes themselves
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def stacked(path: Path) -> tuple[int, int]:
    """(notes, notes starting before the previous note ends) of one MIDI file, all tracks together."""
    from midistruct.metrics.notes import notes_of
    from midistruct.tokens.validate import load_score

    notes = notes_of(load_score(path))  # (N, 3): onset, duration, pitch in quarter notes, sorted by onset
    ends = notes[:, 0] + notes[:, 1]
    return len(notes), int(np.sum(notes[1:, 0] < ends[:-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="MIDI files (*.mid), read in name order")
    args = parser.parse_args()
    files = sorted(args.folder.glob("*.mid"))
    if not files:
        raise SystemExit(f"{args.folder}: no MIDI files")
    rows = {f.name: stacked(f) for f in files}
    counts = [s for _, s in rows.values()]
    print(json.dumps({"files": {k: {"notes": n, "stacked": s} for k, (n, s) in rows.items()},
                      "inner_stacked": int(sum(counts[1:-1])) if len(counts) > 2 else None}, indent=1))


if __name__ == "__main__":
    main()

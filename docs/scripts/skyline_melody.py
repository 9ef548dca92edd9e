"""Issue 19: how well the content view's melody (the skyline, ``midistruct.tokens.views.skyline``) finds POP909's
sung melody. Each song's tracks are merged and read in 4/4 as the POP909 models read them; its skyline notes are
matched to the MELODY track's notes by (position, pitch). Prints JSON.

    python docs/scripts/skyline_melody.py --model pop909-4bar --songs 30
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import symusic

from midistruct.generation.pipeline import MidiStruct
from midistruct.tokens.views import melody_and_rest

DATASETS = Path(__file__).resolve().parents[3] / "shared" / "datasets"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pop909-4bar", help="whose tokenizer reads the songs")
    parser.add_argument("--songs", type=int, default=30)
    args = parser.parse_args()
    ms = MidiStruct.from_pretrained(args.model)
    per_beat = ms.vocab.positions_per_beat
    hit = sky_total = sung_total = while_sung = while_sung_hit = 0
    songs = sorted((DATASETS / "pop909" / "songs").glob("[0-9][0-9][0-9]/[0-9][0-9][0-9].mid"))[: args.songs]
    for path in songs:
        score = symusic.Score(str(path))
        melody = next(t for t in score.tracks if t.name.upper().startswith("MELODY"))
        notes, onset, top = melody_and_rest(ms.piece_encoder.tokenize(score, time_signature="4/4"), ms.vocab)
        starts = np.array([round(n.time / score.tpq * per_beat) for n in melody.notes])
        ends = np.array([round(n.end / score.tpq * per_beat) for n in melody.notes])
        sung = set(zip(starts.tolist(), (n.pitch for n in melody.notes)))
        sky = list(zip(onset[top].tolist(), notes.pitch[top].tolist()))
        hit += sum(note in sung for note in sky)
        sky_total, sung_total = sky_total + len(sky), sung_total + len(sung)
        for position, pitch in sky:  # skyline notes while the singer sings (or is about to, within half a beat)
            if ((starts <= position) & (ends > position)).any() or ((starts > position) &
                                                                     (starts < position + per_beat // 2)).any():
                while_sung += 1
                while_sung_hit += (position, pitch) in sung
    print(json.dumps({"songs": len(songs), "recall": hit / sung_total, "precision": hit / sky_total,
                      "precision_while_sung": while_sung_hit / while_sung}, indent=2))


if __name__ == "__main__":
    main()

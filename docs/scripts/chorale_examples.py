"""The example pieces shipped with `pop909-4bar`: two Bach chorales from music21's own corpus (public domain), as
the piano model reads a piece (its parts merged into one track, the pickup moved so that the first full bar
starts on a bar line: `PieceEncoder.prepared`). They replace two POP909 songs, which the package may not carry
(POP909 stays in ../shared/datasets). The chorales are the first two in 4/4 by Riemenschneider's numbering
(No. 2, BWV 347, and No. 3, BWV 153.1; No. 1 is in 3/4), a rule fixed before any was tried on the model.

    python docs/scripts/chorale_examples.py -o /tmp/chorales                  # writes the two MIDI files
    python docs/scripts/chorale_examples.py -o /tmp/chorales --check     # + each window's onset F1

With ``--check`` it prints, per chorale, the reconstruction's note onset F1 per window (greedy, the
model's own codes): the numbers in the model card's notes and in tests/test_pretrained.py.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

RIEMENSCHNEIDER = (2, 3)  # the first two 4/4 chorales in Riemenschneider's order


def chorale(number: int):
    """(music21 score, file stem) of Riemenschneider chorale ``number``."""
    from music21 import corpus
    from music21.corpus.chorales import ChoraleListRKBWV

    bwv = ChoraleListRKBWV().byRiemenschneider[number]["bwv"]
    return corpus.parse(f"bach/bwv{bwv}"), f"bach-bwv{bwv}"


def downbeat_seconds(score, midi_path: Path) -> float:
    """Where the first full bar starts in the MIDI music21 wrote: after the pickup (a first measure shorter
    than its bar), at the file's first tempo."""
    import symusic

    first = score.parts[0].getElementsByClass("Measure").first()
    quarters = first.barDuration.quarterLength - first.paddingLeft if first.paddingLeft else 0.0
    tempos = symusic.Score(str(midi_path)).tempos
    return float(quarters) * 60.0 / (tempos[0].qpm if len(tempos) else 120.0)


def write_examples(out: Path, ms) -> list[Path]:
    """Write the chorales, each as ``ms`` reads it, into ``out``; their paths."""
    from midistruct.corpus.music21_corpus import write_midi
    from midistruct.tokens.validate import load_score

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    with tempfile.TemporaryDirectory() as tmp:
        for number in RIEMENSCHNEIDER:
            score, stem = chorale(number)
            raw = Path(tmp) / f"{stem}.mid"
            write_midi(score, raw)
            read = ms.piece_encoder.prepared(load_score(raw), downbeat=downbeat_seconds(score, raw))
            read.tracks[0].name = "merged"
            read.dump_midi(str(out / f"{stem}.mid"))
            paths.append(out / f"{stem}.mid")
    return paths


def window_f1(ms, path: Path) -> list[float]:
    """Onset F1 of each window's greedy reconstruction from its own codes."""
    from midistruct.metrics.notes import notes_of, onset_f1
    from midistruct.tokens.tokenizer import decode_ids

    windows = ms.windows(str(path))
    tokens = ms.generate_tokens(ms.encode_windows(windows))
    return [round(onset_f1(notes_of(decode_ids(ms.tokenizer, a.tolist())), notes_of(decode_ids(ms.tokenizer, b))), 3)
            for a, b in zip(windows, tokens)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder for the MIDI files")
    parser.add_argument("--model", default="pop909-4bar", help="the model whose reading is written")
    parser.add_argument("--check", action="store_true", help="print each window's reconstruction onset F1")
    args = parser.parse_args()

    import torch

    from midistruct.generation.pipeline import MidiStruct

    torch.set_num_threads(1)
    ms = MidiStruct.from_pretrained(args.model)
    paths = write_examples(args.output, ms)
    report = {p.name: ({"window_onset_f1": window_f1(ms, p)} if args.check else {}) for p in paths}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

"""Samples to hear: the same draws from a model's code prior decoded with the bank's snap and without it (docs/RESULTS.md,
"A bank of real bar codes"). Writes MIDI and one page with each sample's piano roll and audio (index.html, the audio
embedded at 11 kHz).

    python docs/scripts/sample_examples.py folk-16bar -n 3 --meter 6/8 -o docs/figures/folk-16bar-samples

Each pair shares its seed: the Gaussian draws the same codes, then one is snapped to the nearest real bars' codes.
Decoded as `midistruct sample` does by default (decoder temperature 1), in C major / A minor for a canonical model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from midistruct.metrics import features
from midistruct.generation.pipeline import MidiStruct
from midistruct.metrics.notes import notes_of, window_quarters
from midistruct.render.outputs import render_outputs, write_outputs_page


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("-n", type=int, default=3)
    ap.add_argument("--meter", default=None)
    ap.add_argument("-o", "--output", required=True)
    args = ap.parse_args()
    ms = MidiStruct.from_pretrained(args.model)
    scores, titles = {}, []
    for i in range(args.n):
        for snap in (False, True):
            (score,) = ms.sample(1, seed=i, meter=args.meter, snap=snap)
            name = f"seed{i}.{'snapped' if snap else 'gaussian'}"
            scores[name] = score
            scale = features.scale_consistency(notes_of(score), window_quarters(score, ms.bars))
            titles.append(f"seed {i}, {'snapped to real bars' if snap else 'the Gaussian alone (--no-snap)'}: "
                          f"scale consistency {scale:.2f}")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    for name, score in scores.items():
        score.dump_midi(str(out / f"{name}.mid"))
    record = render_outputs(scores, out, audio=True, sample_rate=11025)  # the page embeds the audio: kept small
    command = ["python docs/scripts/sample_examples.py", args.model, "-n", str(args.n), "-o", args.output]
    if args.meter:
        command[3:3] = ["--meter", args.meter]
    write_outputs_page(list(scores), out, title=f"Samples of {args.model}, with and without the bank's snap",
                       titles=titles,
                       notes=[f"model {args.model}, decoder temperature 1 (the sample command's default); each pair "
                              f"shares its seed; audio: {record['audio']['backend']}", " ".join(command)])
    for name in scores:
        (out / f"{name}.wav").unlink()  # embedded in index.html


if __name__ == "__main__":
    main()

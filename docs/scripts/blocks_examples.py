"""Issue 19: one held-out POP909 passage in three arrangements (or performances), to hear. Writes MIDI, one page
with each piece's piano roll and audio (index.html, the audio embedded at 11 kHz) and examples.json (each output's
melody F1, chord accuracy, texture and dynamics against its sources).

    python docs/scripts/blocks_examples.py RUN/best --data data/pop909-4bar -o docs/figures/pop909-blocks-transfer
    python docs/scripts/blocks_examples.py RUN/best --data data/pop909-4bar-vel --block performance \
        -o docs/figures/pop909-performance-transfer        # a model with a performance block

The content passage A and the two style sources come from the test split (different songs): for an arrangement,
B is the passage whose accompaniment has the most notes per onset, C the one with the fewest; for a performance,
B is the loudest passage (mean velocity), C the softest; among the first candidates.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from midistruct.evaluation.blocks import chord_accuracy, melody_f1, window_parts
from midistruct.generation.pipeline import MidiStruct
from midistruct.render.outputs import render_outputs, write_outputs_page
from midistruct.shards.reader import ShardSet


def passages(arrays, vocab, *, bars: int, windows: int, limit: int = 400):
    """Runs of ``windows`` consecutive full 4/4 windows (by first bar) of one piece: (piece, [ids, ...])."""
    rows = np.asarray(arrays.windows)
    starts = {(int(r[2]), int(r[3])): i for i, r in enumerate(rows)}
    out = []
    for (piece, first), i in sorted(starts.items()):
        run = [starts.get((piece, first + k * bars)) for k in range(windows)]
        if any(j is None for j in run):
            continue
        ids = [arrays.window(j)[0] for j in run]
        if all(vocab.count_bars(w) == bars and vocab.meter(w) == "4/4" for w in ids) and first >= 8:
            out.append((piece, ids))
        if len(out) >= limit:
            break
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data", required=True)
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--windows", type=int, default=2, help="consecutive windows per passage")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--block", choices=["arrangement", "performance"], default="arrangement",
                        help="the block taken from B and C")
    args = parser.parse_args()
    statistic, verb = {"arrangement": ("polyphony", "arranged"), "performance": ("loudness", "played")}[args.block]
    torch.set_num_threads(1)
    ms = MidiStruct.from_pretrained(args.checkpoint)
    arrays = ShardSet(args.data).split("test")
    found = passages(arrays, ms.vocab, bars=ms.bars, windows=args.windows)
    rng = np.random.default_rng(args.seed)
    picked = [found[i] for i in rng.permutation(len(found))[:60]]
    poly = [np.mean([window_parts(w, ms.vocab)["texture"][statistic] for w in ids]) for _, ids in picked]
    content = picked[int(np.argsort(poly)[len(poly) // 2])]  # a middling accompaniment to move both ways
    b = max((p for p in zip(poly, range(len(picked))) if picked[p[1]][0] != content[0]))[1]
    c = min((p for p in zip(poly, range(len(picked))) if picked[p[1]][0] not in (content[0], picked[b][0])))[1]
    sources = {"B": picked[b][1], "C": picked[c][1]}
    z = ms.encode_windows(content[1])
    block = ms.blocks()[args.block]
    scores = {"A": ms.stitch(list(content[1])), "A.reconstructed": ms.decode(z)}
    for name, ids in sources.items():
        scores[f"A.{verb}-as-{name}"] = ms.stitch(ms.generate_tokens(z.with_block(ms.encode_windows(ids), block)))
    for name, ids in sources.items():
        scores[name] = ms.stitch(list(ids))
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    for name, score in scores.items():
        score.dump_midi(str(out / f"{name}.mid"))
    record = render_outputs(scores, out, audio=True, sample_rate=11025)  # the page embeds the audio: kept small
    most, fewest = {"arrangement": ("most notes per onset", "fewest"), "performance": ("loudest", "softest")}[args.block]
    titles = {"A": "A: the content passage (held-out song)", "A.reconstructed": "A reconstructed (its own codes)",
              f"A.{verb}-as-B": f"A with B's {args.block} codes", f"A.{verb}-as-C": f"A with C's {args.block} codes",
              "B": f"B: {args.block} source ({most})", "C": f"C: {args.block} source ({fewest})"}
    plural = {"arrangement": "arrangements", "performance": "performances"}[args.block]
    write_outputs_page(list(scores), out, title=f"One passage, three {plural} (issue 19)",
                       titles=[titles[n] for n in scores],
                       notes=[f"model {args.checkpoint}, greedy decoding; audio: {record['audio']['backend']}",
                              "python docs/scripts/blocks_examples.py " + " ".join(
                                  [args.checkpoint, "--data", args.data, "--block", args.block, "-o", args.output])])
    for name in scores:
        (out / f"{name}.wav").unlink()  # embedded in index.html
    report = {"checkpoint": args.checkpoint, "content_piece": content[0], "sources": {"B": picked[b][0],
                                                                                       "C": picked[c][0]}}
    ref = window_parts(np.concatenate(content[1]), ms.vocab)
    for name in scores:
        parts = window_parts(ms.piece_encoder.tokenize(scores[name]), ms.vocab)
        report[name] = {"melody_f1_vs_A": melody_f1(ref["melody"], parts["melody"]),
                        "chord_accuracy_vs_A": chord_accuracy(ref["chords"], parts["chords"]),
                        **{k: (float(v) if np.ndim(v) == 0 else None) for k, v in parts["texture"].items()}}
    (out / "examples.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

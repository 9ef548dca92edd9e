"""Where the bar lines go (``--downbeat auto``, :mod:`midistruct.tokens.downbeat`): fit its 4/4 template on POP909's
training split, and measure it on the held-out songs against their annotated downbeats.

    python docs/scripts/downbeat.py fit      # writes src/midistruct/tokens/downbeat_template.json
    python docs/scripts/downbeat.py eval --reconstruct 40 --threads 1   # + pop909-4bar's reconstructions

The truth is each song's first bar line as ``prepare`` places it (``beat_midi.txt``: the first hyper-downbeat of a
song ``index.xlsx`` counts in 2/4, whose bars are read as 4/4; 3/4 and 6/8 songs are left out), and the split is
``pop909-4bar``'s (by song, as it trained). ``eval`` reports, over the test and valid songs, how often the estimate
falls within a 32nd note of the truth (``bar``) and within a 32nd note of a beat of it (``beat``: the grid is right,
the bar may start on another beat), against the files' own bar lines at tick 0; with ``--reconstruct K``, the onset
F1 of ``pop909-4bar``'s greedy reconstruction of windows 2-4 of K of those songs read each way. With
``--nottingham``, how often the estimate leaves Nottingham's (quantised, well barred) tunes where they are, and
MidiTok's multitrack test songs (sequenced pop);
``--keep-margin M`` measures with another margin (``KEEP_MARGIN``, chosen from such runs). Prints one JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import symusic

from midistruct.config import load_config
from midistruct.corpus.pop909 import _first_bar_line, meter_of, read_index
from midistruct.shards.splits import assign_split
from midistruct.tokens import downbeat as db

DATASETS = Path(__file__).resolve().parents[3] / "shared" / "datasets"
SONGS = DATASETS / "pop909" / "songs"
TOLERANCE = db.BINS_PER_QUARTER // 8  # bins: a 32nd note


def songs(splits: set[str]) -> list[tuple[Path, int]]:
    """(song folder, annotated downbeat tick within a 4/4 bar) of POP909's songs in 2/4 or 4/4 of ``splits``."""
    index, cfg = read_index(SONGS), load_config("pop909-4bar").splits
    out = []
    for folder in sorted(p for p in SONGS.iterdir() if p.is_dir()):
        row = index.get(folder.name, {})
        meter = meter_of(row.get("num_beats_per_measure", ""), row.get("num_quavers_per_beat", ""))
        if meter not in ("2/4", "4/4") or assign_split(f"pop909/{folder.name}", cfg) not in splits:
            continue
        seconds = _first_bar_line(folder, meter)
        if seconds is not None:
            score = symusic.Score(str(folder / f"{folder.name}.mid"))
            out.append((folder, db.tick_at(score, seconds) % (4 * score.tpq)))
    return out


def fit(args) -> dict:
    rows = songs({"train"})
    hists, bins = [], []
    for folder, tick in rows:
        score = symusic.Score(str(folder / f"{folder.name}.mid"))
        hists.append(db.onset_histogram(score, 4.0))
        bins.append(int(round(tick * db.BINS_PER_QUARTER / score.tpq)) % len(hists[-1]))
    template = db.fit_template(hists, bins)
    out = {"meter": "4/4", "bins_per_quarter": db.BINS_PER_QUARTER, "songs": len(rows),
           "fitted_on": "POP909 songs in 2/4 or 4/4 of pop909-4bar's train split, at their annotated first bar line",
           "command": "python docs/scripts/downbeat.py fit", "template": [round(float(x), 6) for x in template]}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    return {k: v for k, v in out.items() if k != "template"} | {"written": args.out}


def _off(tick: int, truth: int, period: int, tpq: int) -> bool:
    d = (tick - truth) % period
    return min(d, period - d) <= TOLERANCE * tpq / db.BINS_PER_QUARTER


def evaluate(args) -> dict:
    rows = songs({"test", "valid"})
    found = {"auto": {"bar": 0, "beat": 0}, "as_is": {"bar": 0, "beat": 0}}
    for folder, truth in rows:
        score = symusic.Score(str(folder / f"{folder.name}.mid"))
        for name, tick in (("auto", db.downbeat_tick(score, time_signature="4/4")), ("as_is", 0)):
            found[name]["bar"] += _off(tick, truth, 4 * score.tpq, score.tpq)
            found[name]["beat"] += _off(tick, truth, score.tpq, score.tpq)
    out = {"songs": len(rows), **{k: {m: round(v / len(rows), 3) for m, v in d.items()} for k, d in found.items()}}
    if args.reconstruct:
        out["reconstruction_onset_f1"] = reconstruction(rows[: args.reconstruct], args)
    if args.nottingham:
        out["nottingham"] = nottingham()
        out["miditok_multitrack"] = nottingham(DATASETS / "miditok-test-midis" / "MIDIs_multitrack")
    return out


def reconstruction(rows, args) -> dict:
    import torch

    from midistruct.generation.pipeline import MidiStruct
    from midistruct.metrics.notes import notes_of, onset_f1

    torch.set_num_threads(args.threads)
    ms = MidiStruct.from_pretrained(args.model)
    f1 = {"as_is": [], "auto": [], "annotated": []}
    for folder, truth in rows:
        score = symusic.Score(str(folder / f"{folder.name}.mid"))
        for name, downbeat in (("as_is", None), ("auto", db.AUTO), ("annotated", db.seconds_at(score, truth))):
            windows = ms.windows(score, time_signature="4/4", downbeat=downbeat, drop_long=True)[1:4]
            out = ms.generate_tokens(ms.encode_windows(windows))
            f1[name] += [onset_f1(notes_of(ms.stitch([list(a)])), notes_of(ms.stitch([list(b)])))
                         for a, b in zip(windows, out)]
    return {"model": args.model, "songs": len(rows), "windows": len(f1["auto"]),
            **{k: round(float(np.mean(v)), 3) for k, v in f1.items()}}


def nottingham(folder: Path = DATASETS / "nottingham" / "midi" / "melody") -> dict:
    files = sorted(folder.glob("*.mid"))
    kept, beat = 0, 0
    for path in files:
        score = symusic.Score(str(path))
        tick = db.downbeat_tick(score)
        kept += tick in (0, None)
        beat += tick is None or tick % score.tpq == 0
    return {"tunes": len(files), "left_where_they_are": round(kept / len(files), 3),
            "moved_by_whole_quarters": round(beat / len(files), 3)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["fit", "eval"])
    p.add_argument("--out", default=str(db.TEMPLATE_FILE), help="fit: where the template goes")
    p.add_argument("--reconstruct", type=int, default=0, metavar="K", help="eval: reconstruct K held-out songs")
    p.add_argument("--model", default="pop909-4bar")
    p.add_argument("--nottingham", action="store_true", help="eval: also Nottingham's tunes")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--keep-margin", type=float, default=None, metavar="M",
                   help=f"eval with another KEEP_MARGIN than the module's {db.KEEP_MARGIN} (how it was chosen)")
    args = p.parse_args(argv)
    if args.keep_margin is not None:
        db.KEEP_MARGIN = args.keep_margin
    if not SONGS.is_dir():
        sys.exit(f"POP909 is not at {SONGS}")
    start = time.time()
    out = fit(args) if args.what == "fit" else evaluate(args)
    print(json.dumps(out | {"keep_margin": db.KEEP_MARGIN, "seconds": round(time.time() - start, 1)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

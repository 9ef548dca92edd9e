"""Forms against POP909's human phrase labels (Dai et al. 2020, two annotators), in bars.

The labels count bars from the start of ``melody.txt`` (the melody quantised to sixteenths, a rest first up
to its first note), so the MIDI tick of the labels' bar 0 is the first MELODY note's tick less that rest.
A song is evaluated only when the alignment holds: its labels' bars are 4/4 (songs whose ``index.xlsx`` says
2 or 4 beats a measure: the labels count 4/4 hyper-bars) or 3/4, and at least ``LABEL_MATCH`` of the MIDI
melody's onsets fall within a sixteenth of a ``melody.txt`` onset once aligned (about 3 songs in 4 pass).

Scores (mir_eval.segment): boundary F at the exact bar (window 0.5 bar) and within one bar (window 1), with
the song's first and last boundaries left out (``trim``), and the pairwise label F over bars.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from midistruct.corpus.pop909 import labels_zero_tick, meter_of
from midistruct.form import FormError
from midistruct.shards.splits import assign_split
from midistruct.tags import parse_phrase_labels
from midistruct.tokens.segment import bar_start_ticks

SIXTEENTHS = {"2/4": ("4/4", 16), "4/4": ("4/4", 16), "3/4": ("3/4", 12)}  # index meter -> labels' bar, length


@dataclass(frozen=True)
class Reference:
    """One song's phrase labels: ``bounds[k]`` the section starts and end of annotator k (bars from the
    labels' bar 0, which is ``zero_tick`` in the MIDI), ``letters[k]`` each section's letter."""

    song: str
    meter: str
    zero_tick: int
    bounds: tuple[tuple[int, ...], ...]
    letters: tuple[tuple[str, ...], ...]

    @property
    def bars(self) -> int:
        """Bars both annotators cover."""
        return min(b[-1] for b in self.bounds)


def song_role(song: str, split_cfg) -> str:
    """``"eval"`` for a POP909 song (``"001"``) of the test or valid split of ``split_cfg`` (a
    :class:`~midistruct.config.SplitConfig`; the project's deterministic song split), else ``"train"``: the
    songs a learnt form head may see (docs/scripts/form_train_head.py) and the evaluation never scores."""
    return "eval" if assign_split(f"pop909/{song}", split_cfg) in ("test", "valid") else "train"


def reference(song: str, *, pop909: Path, phrases: Path, index_row: dict) -> Reference:
    """The labels of ``song`` ("001") aligned to ``pop909/NNN/NNN.mid``; :class:`FormError` saying why not."""
    meter = meter_of(index_row.get("num_beats_per_measure", ""), index_row.get("num_quavers_per_beat", ""))
    if meter not in SIXTEENTHS:
        raise FormError(f"{song}: meter {meter} not evaluated (only 2/4, 4/4 and 3/4 songs)")
    bar_meter, _ = SIXTEENTHS[meter]
    folder = phrases / song
    annotations = [parse_phrase_labels((folder / f"human_label{k}.txt").read_text()) for k in (1, 2)]
    try:
        zero = labels_zero_tick(pop909 / song / f"{song}.mid", folder / "melody.txt")
    except ValueError as err:
        raise FormError(f"{song}: {err}") from None
    bounds = tuple(tuple(np.cumsum([0] + [n for _, n in a]).tolist()) for a in annotations)
    return Reference(song, bar_meter, zero, bounds, tuple(tuple(letter for letter, _ in a) for a in annotations))


def aligned_score(score, ref: Reference):
    """A copy of ``score`` in the labels' bars: moved so their bar 0 is tick 0, in their meter, cut at the
    end of their last bar (notes before bar 0 or after the end dropped)."""
    import symusic

    num, den = (int(x) for x in ref.meter.split("/"))
    out = score.shift_time(-ref.zero_tick)  # tempos and meters move too; clip keeps what starts in [0, end)
    out.time_signatures = [symusic.TimeSignature(0, num, den)]
    end = int(bar_start_ticks(out.time_signatures, out.tpq, ref.bars + 1)[-1])
    return out.clip(0, end)


def scores(ref: Reference, bounds: list[int], letters: list[str], *, annotator: int) -> dict[str, float]:
    """Boundary F exact and within one bar, and pairwise label F, of a form (``bounds`` 0..NB, a letter per
    section) against annotator ``annotator`` (0 or 1), over the bars both annotators cover."""
    import mir_eval

    n = ref.bars
    ref_bounds, ref_letters = _cut(ref.bounds[annotator], ref.letters[annotator], n)
    est_bounds, est_letters = _cut(bounds, letters, n)
    ref_iv, est_iv = _intervals(ref_bounds), _intervals(est_bounds)
    out = {}
    for name, window in (("f_exact", 0.5), ("f_1bar", 1.0)):
        out[name] = float(mir_eval.segment.detection(ref_iv, est_iv, window=window, trim=True)[2])
    out["f_pairwise"] = float(mir_eval.segment.pairwise(ref_iv, list(ref_letters), est_iv, list(est_letters),
                                                        frame_size=1.0)[2])
    return out


def _cut(bounds, letters, n: int) -> tuple[list[int], list[str]]:
    """Sections cut at bar ``n`` (those starting at or after it dropped), ending exactly at ``n``."""
    keep = [(b, letter) for b, letter in zip(bounds[:-1], letters) if b < n]
    return [b for b, _ in keep] + [n], [letter for _, letter in keep]


def _intervals(bounds: list[int]) -> np.ndarray:
    return np.array(list(zip(bounds[:-1], bounds[1:])), dtype=float)

"""Where a file's bar lines belong when its own are wrong: the first downbeat estimated from the notes.

MIDI transcribed from audio or played to a click keeps a tempo whose beat grid sits off the music: in 84 % of
the POP909 songs held out from its template the files' beats lie more than a 32nd note from the annotated ones,
and their bar lines fall on any beat of the bar. Read as they are, every onset is quantised to the wrong grid
position and every bar holds the wrong beats (``--downbeat SECONDS`` fixes this when the downbeat is known;
``--downbeat auto`` asks this module).

The estimate is a matched filter over one bar. Each note adds its duration (in quarters, at most 4) at its
onset's position in the bar, at :data:`BINS_PER_QUARTER` positions a quarter note (a 1/96 note); the result,
rolled to every position, is correlated with a metrical template, and the best roll is where the bar lines go:

    h[b] = sum of min(duration, 4) of the notes whose onset falls in bin b of the bar      (bins B = bar * 24)
    score(r) = sum_b template[b] * h[(b + r) mod B]         downbeat = the tick of bin argmax_r score(r)

unless the file's own bar lines (r = 0) score within :data:`KEEP_MARGIN` of the range of ``score`` below the best:
onsets alone often cannot tell a bar's first beat from its middle (a jig's two dotted quarters), so a file whose
bar lines are right is left as it is (Nottingham's tunes: 57 % kept without the margin, 98.8 % with it; the
margin was chosen from the table in docs/RESULTS.md "Where the bar lines go", which has the cost on POP909).

The 4/4 template is learnt (:func:`fit_template`): the mean of real songs' histograms rolled so that their
annotated downbeat is bin 0, minus its mean (``downbeat_template.json``, written by
``docs/scripts/downbeat.py fit`` from POP909's training split; docs/RESULTS.md "Where the bar lines go" has what
it finds). Other meters use its beat profile (the four beats averaged) repeated over the bar's quarters, the first
quarter weighted as the 4/4 template weights its first beat against the others (measured only on well-barred
files in those meters, which it leaves alone). Onsets, not key or harmony: about a millisecond a file.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

BINS_PER_QUARTER = 24
MAX_WEIGHT = 4.0  # quarters: a held note counts as no more than a bar of 4/4
TEMPLATE_FILE = Path(__file__).with_name("downbeat_template.json")
AUTO = "auto"  # the ``downbeat`` that asks for the estimate (``--downbeat auto``)
KEEP_MARGIN = 0.15  # the file's own bar lines stay unless another place scores this share of the range above them


def bar_quarters(score, time_signature: str | None = None) -> float:
    """Length of a bar in quarter notes: of ``time_signature`` ("6/8") when given, else of the score's first time
    signature (4/4 without one)."""
    if time_signature is not None:
        num, den = (int(x) for x in time_signature.split("/"))
    elif len(score.time_signatures):
        num, den = score.time_signatures[0].numerator, score.time_signatures[0].denominator
    else:
        num, den = 4, 4
    return num * 4.0 / den


def onset_histogram(score, quarters: float) -> np.ndarray:
    """(B,) the notes' durations (quarters, at most :data:`MAX_WEIGHT`) summed at their onsets' positions in a bar
    of ``quarters`` from tick 0, B = ``quarters`` * :data:`BINS_PER_QUARTER` bins, scaled to sum 1 (zeros without
    notes). Drum tracks are left out."""
    bins = max(int(round(quarters * BINS_PER_QUARTER)), 1)
    rows = [t.notes.numpy() for t in score.tracks if not t.is_drum and len(t.notes)]
    hist = np.zeros(bins)
    if not rows:
        return hist
    time = np.concatenate([r["time"] for r in rows]).astype(np.float64) / score.tpq  # quarters
    weight = np.minimum(np.concatenate([r["duration"] for r in rows]) / score.tpq, MAX_WEIGHT)
    np.add.at(hist, np.rint(time * BINS_PER_QUARTER).astype(np.int64) % bins, weight)  # the nearest bin
    return hist / max(hist.sum(), 1e-12)


def fit_template(histograms: list[np.ndarray], downbeat_bins: list[int]) -> np.ndarray:
    """The template of songs' :func:`onset_histogram` s (each (B,)) and their annotated downbeats (the bin of the
    bar where one falls): the mean histogram rolled to put each downbeat at bin 0, minus its mean."""
    if not histograms or len(histograms) != len(downbeat_bins):
        raise ValueError(f"{len(histograms)} histograms for {len(downbeat_bins)} downbeats")
    mean = np.mean([np.roll(h, -int(b)) for h, b in zip(histograms, downbeat_bins)], axis=0)
    return mean - mean.mean()


@functools.lru_cache(maxsize=1)
def _learnt() -> dict:
    return json.loads(TEMPLATE_FILE.read_text())


def template_for(quarters: float) -> np.ndarray:
    """The template of a bar of ``quarters``: the learnt one for 4 quarters, else its beat profile repeated (see
    the module)."""
    learnt = np.asarray(_learnt()["template"], dtype=np.float64)  # (4 * BINS_PER_QUARTER,)
    if abs(quarters - 4.0) < 1e-9:
        return learnt
    beats = (learnt + 1.0 / len(learnt)).reshape(4, BINS_PER_QUARTER)  # the mean histogram again, by beats
    strength = beats[0].sum() / beats[1:].sum(1).mean()  # the first beat's weight against the others'
    bins = max(int(round(quarters * BINS_PER_QUARTER)), 1)
    profile = np.resize(beats.mean(0), bins)
    profile[:BINS_PER_QUARTER] *= strength
    return profile / profile.sum() - 1.0 / bins


def downbeat_tick(score, *, time_signature: str | None = None) -> int | None:
    """The tick within the first bar (0 <= tick < a bar) where the bar lines belong, by the matched filter of the
    module (to the nearest bin: within half a 1/96 note); None for a score without notes."""
    quarters = bar_quarters(score, time_signature)
    hist = onset_histogram(score, quarters)
    if not hist.any():
        return None
    template = template_for(quarters)
    scores = np.array([template @ np.roll(hist, -r) for r in range(len(hist))])  # (B,)
    best = int(np.argmax(scores))
    if scores[best] - scores[0] <= KEEP_MARGIN * (scores.max() - scores.min()):
        return 0  # the file's own bar lines are nearly as good: a well-barred file is not moved by a beat
    return int(round(best * score.tpq / BINS_PER_QUARTER)) % int(round(quarters * score.tpq))


def tick_at(score, seconds: float) -> int:
    """The tick at ``seconds`` under the score's tempo map (120 qpm before its first tempo)."""
    tempos = sorted((t.time, t.qpm) for t in score.tempos)
    if not tempos or tempos[0][0] > 0:
        tempos.insert(0, (0, 120.0))
    elapsed = 0.0  # seconds at the start of the current tempo
    for (start, qpm), (end, _) in zip(tempos, tempos[1:] + [(None, None)]):
        per_tick = 60.0 / (qpm * score.tpq)
        if end is None or elapsed + (end - start) * per_tick > seconds:
            return int(round(start + (seconds - elapsed) / per_tick))
        elapsed += (end - start) * per_tick
    raise AssertionError("unreachable: the last tempo has no end")


def seconds_at(score, tick: int) -> float:
    """Seconds at ``tick`` under the score's tempo map (120 qpm before its first tempo)."""
    tempos = sorted((t.time, t.qpm) for t in score.tempos)
    if not tempos or tempos[0][0] > 0:
        tempos.insert(0, (0, 120.0))
    elapsed = 0.0
    for (start, qpm), (end, _) in zip(tempos, tempos[1:] + [(None, None)]):
        if end is None or tick < end:
            return elapsed + (tick - start) * 60.0 / (qpm * score.tpq)
        elapsed += (end - start) * 60.0 / (qpm * score.tpq)
    raise AssertionError("unreachable: the last tempo has no end")


def estimate_downbeat(score, *, time_signature: str | None = None) -> float | None:
    """Seconds of the first place, within the first bar, where a bar line belongs (what ``--downbeat`` takes),
    estimated from the notes (see the module); None for a score without notes."""
    tick = downbeat_tick(score, time_signature=time_signature)
    return None if tick is None else seconds_at(score, tick)

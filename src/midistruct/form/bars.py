"""The bar grid of a score and the "notes" features: per bar, a pitch-class and an onset-position histogram.

The note features are the baseline of issue 16 (no model needed): pitch classes weighted by how long each
note sounds in its bar, and where in the bar notes start (``POSITIONS`` equal bins of the bar). Drums count
for neither.
"""

from __future__ import annotations

import numpy as np

from midistruct.tokens.segment import bar_start_ticks

POSITIONS = 16  # onset bins per bar: sixteenths of a 4/4 bar


def pitched_notes(score) -> np.ndarray:
    """All notes of the pitched tracks as one structured array (fields time, duration, pitch), by time."""
    arrays = [t.notes.numpy() for t in score.tracks if not t.is_drum and t.note_num()]
    if not arrays:
        return np.zeros(0, dtype=[("time", "i8"), ("duration", "i8"), ("pitch", "i8")])
    time = np.concatenate([a["time"] for a in arrays]).astype(np.int64)
    order = np.argsort(time, kind="stable")
    out = np.zeros(len(time), dtype=[("time", "i8"), ("duration", "i8"), ("pitch", "i8")])
    out["time"] = time[order]
    out["duration"] = np.concatenate([a["duration"] for a in arrays]).astype(np.int64)[order]
    out["pitch"] = np.concatenate([a["pitch"] for a in arrays]).astype(np.int64)[order]
    return out


def bar_grid(score, *, bars: int | None = None) -> np.ndarray:
    """Bar line ticks (NB + 1,) from tick 0 under the score's time signatures (4/4 without one): the start of
    every bar up to the one holding the last note onset, then the end of that bar. ``bars`` fixes NB."""
    if bars is not None:
        return bar_start_ticks(score.time_signatures, score.tpq, bars + 1)
    notes = pitched_notes(score)
    last = int(notes["time"].max()) if len(notes) else 0
    shortest = min((score.tpq * 4 * ts.numerator // ts.denominator for ts in score.time_signatures),
                   default=score.tpq * 4)
    ticks = bar_start_ticks(score.time_signatures, score.tpq, last // max(shortest, 1) + 2)
    n_bars = int(np.searchsorted(ticks, last, side="right"))  # the bar holding ``last`` is n_bars - 1
    return ticks[: n_bars + 1]


def note_features(score, grid: np.ndarray) -> np.ndarray:
    """(NB, 12 + POSITIONS): per bar of ``grid`` (:func:`bar_grid`), the pitch-class histogram (duration in
    the bar) and the onset-position histogram (notes), each scaled to unit length; zeros in an empty bar."""
    notes = pitched_notes(score)
    n_bars = len(grid) - 1
    pitch_class = np.zeros((n_bars, 12))
    onsets = np.zeros((n_bars, POSITIONS))
    bar = np.searchsorted(grid, notes["time"], side="right") - 1
    inside = (bar >= 0) & (bar < n_bars)
    notes, bar = notes[inside], bar[inside]
    start, length = grid[bar], np.diff(grid)[bar]
    sounding = np.minimum(notes["duration"], start + length - notes["time"])
    np.add.at(pitch_class, (bar, notes["pitch"] % 12), np.maximum(sounding, 1))
    position = ((notes["time"] - start) * POSITIONS // length).clip(0, POSITIONS - 1)
    np.add.at(onsets, (bar, position), 1.0)
    return np.concatenate([_unit_rows(pitch_class), _unit_rows(onsets)], axis=1)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)

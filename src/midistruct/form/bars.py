"""The bar grid of a score and the note features: per bar, a pitch-class and an onset-position histogram.

The note features need no model: pitch classes weighted by how long each note sounds in its bar, and where
in the bar notes start (``POSITIONS`` equal bins of the bar). Drums count for neither. "notes" (the baseline
of issue 16) pools all the pitched tracks; "tracks" gives each pitched track its own pair of histograms,
side by side, so that a melody repeating over a changed accompaniment, or the reverse, still shows (better
boundaries and labels on POP909 with either method: docs/RESULTS.md, song form).
"""

from __future__ import annotations

import numpy as np

from midistruct.tokens.segment import bar_start_ticks

POSITIONS = 16  # onset bins per bar: sixteenths of a 4/4 bar


def pitched_notes(score, *, tracks=None) -> np.ndarray:
    """All notes of the pitched tracks (or of ``tracks``, a list of symusic tracks) as one structured array
    (fields time, duration, pitch), by time."""
    tracks = pitched_tracks(score) if tracks is None else tracks
    arrays = [t.notes.numpy() for t in tracks]
    if not arrays:
        return np.zeros(0, dtype=[("time", "i8"), ("duration", "i8"), ("pitch", "i8")])
    time = np.concatenate([a["time"] for a in arrays]).astype(np.int64)
    order = np.argsort(time, kind="stable")
    out = np.zeros(len(time), dtype=[("time", "i8"), ("duration", "i8"), ("pitch", "i8")])
    out["time"] = time[order]
    out["duration"] = np.concatenate([a["duration"] for a in arrays]).astype(np.int64)[order]
    out["pitch"] = np.concatenate([a["pitch"] for a in arrays]).astype(np.int64)[order]
    return out


def pitched_tracks(score) -> list:
    """The score's tracks that are not drums and hold notes."""
    return [t for t in score.tracks if not t.is_drum and t.note_num()]


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


def note_features(score, grid: np.ndarray, *, per_track: bool = False, pickup: float = 0.0) -> np.ndarray:
    """(NB, 12 + POSITIONS): per bar of ``grid`` (:func:`bar_grid`), the pitch-class histogram (duration in
    the bar) and the onset-position histogram (notes), each scaled to unit length; zeros in an empty bar.
    ``per_track``: (NB, T (12 + POSITIONS)), the two histograms of each of the T pitched tracks in turn.
    ``pickup``: the notes of the last ``pickup`` of a bar count in the next bar (an upbeat belongs to the
    phrase it leads into); the positions are then counted from that earlier start."""
    windows = pickup_windows(grid, pickup)
    if per_track:
        tracks = pitched_tracks(score) or [None]  # no pitched track: one block of zeros
        return np.concatenate([_histograms(pitched_notes(score, tracks=[t] if t else []), windows) for t in tracks],
                              axis=1)
    return _histograms(pitched_notes(score), windows)


def pickup_windows(grid: np.ndarray, pickup: float) -> np.ndarray:
    """(NB + 1,) the edges of the bars' note windows: each bar line of ``grid`` (ticks) moved earlier by
    ``pickup`` of the bar before it (the first by ``pickup`` of bar 0), so that, where the meter holds, every
    window is as long as its bar; the notes of the song's last ``pickup`` fall in no window."""
    grid = np.asarray(grid, dtype=np.int64)
    if not pickup or len(grid) < 2:
        return grid
    lengths = np.diff(grid)
    return grid - np.round(pickup * np.concatenate([lengths[:1], lengths])).astype(np.int64)


def _histograms(notes: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """(NB, 12 + POSITIONS) the two unit histograms per bar (``grid`` its NB + 1 edges in ticks) of ``notes``
    (:func:`pitched_notes`)."""
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

"""Cut a piece's token stream into bar-aligned windows; bar lines in ticks.

With REMI every bar opens with a ``Bar`` token followed by its ``TimeSig`` token, so
a window that starts at a ``Bar`` token decodes on its own with the right meter.
Arrays: ``starts`` (NB,) index of each bar's first token in a piece's ids, as
:meth:`midistruct.tokens.remi.RemiVocab.bar_starts` finds them.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Window(NamedTuple):
    """Tokens ``ids[start:end]`` covering bars ``bar`` .. ``bar + n_bars - 1`` of a piece."""

    bar: int
    start: int
    end: int


def cut_windows(starts: np.ndarray, n_tokens: int, *, bars: int, step: int) -> list[Window]:
    """Windows of exactly ``bars`` bars every ``step`` bars; a short tail is not kept."""
    bounds = np.append(starts, n_tokens).tolist()
    return [Window(b, bounds[b], bounds[b + bars]) for b in range(0, len(starts) - bars + 1, step)]


def bar_start_ticks(time_signatures, tpq: int, n_bars: int) -> np.ndarray:
    """Start tick of each of the first ``n_bars`` bars under a list of time signatures.

    ``time_signatures`` holds objects with ``time``, ``numerator``, ``denominator``
    (symusic's), sorted by time; bar lines restart at each change, as in miditok's REMI.
    """
    changes = sorted(((ts.time, ts.numerator, ts.denominator) for ts in time_signatures)) or [(0, 4, 4)]
    starts, tick, k = [], 0, 0
    while len(starts) < n_bars:
        while k + 1 < len(changes) and changes[k + 1][0] <= tick:
            k += 1
        _, num, den = changes[k]
        starts.append(tick)
        tick += num * tpq * 4 // den
    return np.array(starts, dtype=np.int64)


def crop_bars(score, bars: int):
    """The first ``bars`` bars of a symusic Score: notes starting in them, cut at the last bar line."""
    end = int(bar_start_ticks(score.time_signatures, score.tpq, bars + 1)[-1])
    out = score.clip(0, end)  # notes starting before ``end``
    for track in out.tracks:
        for note in track.notes:
            note.duration = min(note.duration, end - note.time)
    return out

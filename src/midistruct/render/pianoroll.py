"""Piano-roll pictures of symusic Scores: one panel per score, stacked (or in a grid), on a shared time axis.

Time is in quarter notes (ticks / ``score.tpq``); bar lines follow each score's own time
signatures. matplotlib is imported inside the functions and only its object API is used
(``Figure`` + the Agg canvas), so no pyplot state or display is touched.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PANEL_HEIGHT = 1.6  # inches per score
PITCH_PAD = 2  # semitones of space above the highest and below the lowest note
DRUM_COLOUR = "0.35"


def pianoroll_figure(scores, *, titles=None, bars: int | None = None, pitch_range: tuple[int, int] | None = None):
    """A matplotlib ``Figure`` with one piano-roll panel per score, top to bottom.

    Args:
        scores: symusic Scores (any time unit; converted to ticks). At least one.
        titles: one small title per panel (default ``score 0``, ``score 1``, ...).
        bars: bars shown (and bar lines drawn) per panel; default: enough to cover each score.
        pitch_range: lowest and highest pitch to show (before padding); default: those of all notes
            drawn (give the range of a larger set to draw its pieces one figure each on one scale).
    Returns:
        A ``matplotlib.figure.Figure`` with ``len(scores)`` axes sharing x (quarter notes) and a
        common pitch range. Notes are one ``PolyCollection`` per track (gid ``"notes"``), bar lines
        one ``LineCollection`` per panel (gid ``"bar_lines"``). Scores without notes give empty panels.
    """
    from matplotlib.figure import Figure

    scores = [s if str(s.ttype).endswith("Tick") else s.to("tick") for s in scores]
    if not scores:
        raise ValueError("pianoroll_figure needs at least one score")
    titles = list(titles) if titles is not None else [f"score {i}" for i in range(len(scores))]
    if len(titles) != len(scores):
        raise ValueError(f"{len(titles)} titles for {len(scores)} scores")
    fig = Figure(figsize=(10, 0.6 + PANEL_HEIGHT * len(scores)), layout="constrained")
    axes = fig.subplots(len(scores), 1, sharex=True, squeeze=False)[:, 0]
    _draw_panels(list(axes), scores, titles, bars, pitch_range)
    axes[-1].set_xlabel("time (quarter notes)")
    return fig


def pianoroll_grid(rows, *, titles=None, bars: int | None = None):
    """A matplotlib ``Figure`` with a grid of piano-roll panels: ``rows[r][c]`` at row ``r``, column ``c``.

    For ``MidiStruct.grid``'s output as it is laid out, or for paths compared side by side
    (``[[slerp[i], lerp[i]] for i in range(steps)]``).

    Args:
        rows: equally long lists of symusic Scores (any time unit). At least one score.
        titles: small panel titles of the same shape (default ``"r, c"``).
        bars: bars shown (and bar lines drawn) per panel; default: enough to cover each score.
    Returns:
        A ``matplotlib.figure.Figure`` with ``len(rows) * len(rows[0])`` axes in row-major order,
        sharing x (quarter notes) and the common pitch range; panels drawn as in :func:`pianoroll_figure`.
    """
    from matplotlib.figure import Figure

    rows = [list(row) for row in rows]
    n_cols = len(rows[0]) if rows else 0
    if n_cols == 0 or any(len(row) != n_cols for row in rows):
        raise ValueError(f"pianoroll_grid needs rows of equal, non-zero length, got {[len(r) for r in rows]}")
    titles = [list(t) for t in titles] if titles is not None else [[f"{r}, {c}" for c in range(n_cols)]
                                                                   for r in range(len(rows))]
    if [len(t) for t in titles] != [n_cols] * len(rows):
        raise ValueError(f"titles of shape {[len(t) for t in titles]} for rows of shape {[n_cols] * len(rows)}")
    scores = [s if str(s.ttype).endswith("Tick") else s.to("tick") for row in rows for s in row]
    fig = Figure(figsize=(max(10.0, 2.6 * n_cols), 0.6 + PANEL_HEIGHT * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), n_cols, sharex=True, sharey=True, squeeze=False)  # (R, C)
    _draw_panels(list(axes.ravel()), scores, [t for row in titles for t in row], bars)
    for ax in axes[-1]:
        ax.set_xlabel("time (quarter notes)", fontsize=7)
    return fig


def draw_pianoroll(ax, score, *, title: str = "", bars: int | None = None,
                   pitch_range: tuple[int, int] | None = None) -> None:
    """Draw one score's piano roll onto ``ax`` (a matplotlib Axes of a figure made elsewhere), as a panel of
    :func:`pianoroll_figure` is drawn: x from 0 to the last bar line (quarter notes), the pitch range padded."""
    score = score if str(score.ttype).endswith("Tick") else score.to("tick")
    _draw_panels([ax], [score], [title], bars, pitch_range)


def _draw_panels(axes: list, scores: list, titles: list[str], bars: int | None,
                 pitch_range: tuple[int, int] | None = None) -> None:
    """One score per axis, on a common pitch range and (shared) time axis up to the last bar line."""
    low, high = pitch_range or pitch_span(scores)
    x_end = 0.0
    for ax, score, title in zip(axes, scores, titles):
        lines = _bar_lines(score, bars)
        _draw_panel(ax, score, lines, title)
        ax.set_ylim(low - PITCH_PAD, high + PITCH_PAD + 1)
        x_end = max(x_end, lines[-1])
    axes[0].set_xlim(0, x_end)  # x is shared: this sets every panel


def plot_pianorolls(scores, path, *, titles=None) -> Path:
    """Write :func:`pianoroll_figure` of ``scores`` as a PNG at ``path`` (Agg); returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = Path(path)
    fig = pianoroll_figure(scores, titles=titles)
    FigureCanvasAgg(fig).print_png(path)
    fig.clear()  # a bare Figure is not registered with pyplot: clearing releases it
    return path


def pitch_span(scores) -> tuple[int, int]:
    """Lowest and highest pitch over all notes of all scores (C4..C5 when there are none)."""
    pitches = [int(p) for s in scores for t in s.tracks for p in t.notes.numpy()["pitch"]]
    return (min(pitches), max(pitches)) if pitches else (60, 72)


def _bar_lines(score, bars: int | None) -> np.ndarray:
    """Bar line positions in quarter notes: ``bars`` bars, or up to the first line at/after the score's end."""
    from midistruct.tokens.segment import bar_start_ticks

    tpq = score.tpq
    if bars is not None:
        return bar_start_ticks(score.time_signatures, tpq, bars + 1) / tpq
    end = max(score.end(), 1)
    shortest = min((ts.numerator * tpq * 4 // ts.denominator for ts in score.time_signatures), default=4 * tpq)
    ticks = bar_start_ticks(score.time_signatures, tpq, end // max(shortest, 1) + 2)  # every bar >= shortest
    return ticks[: int(np.searchsorted(ticks, end)) + 1] / tpq


def _draw_panel(ax, score, bar_lines: np.ndarray, title: str) -> None:
    """Notes as rectangles (one colour per program, grey drums; a white edge keeps repeated notes apart),
    bar lines, pitch ticks at each C."""
    from matplotlib.collections import PolyCollection

    tpq = score.tpq
    for track in (t for t in score.tracks if len(t.notes)):
        notes = track.notes.numpy()
        x0, x1 = notes["time"] / tpq, (notes["time"] + notes["duration"]) / tpq
        y = notes["pitch"].astype(float)
        boxes = np.stack([np.stack([x0, y], 1), np.stack([x1, y], 1),
                          np.stack([x1, y + 0.9], 1), np.stack([x0, y + 0.9], 1)], 1)  # (N, 4 corners, xy)
        ax.add_collection(PolyCollection(boxes, facecolors=_colour(track), edgecolors="white", linewidths=0.5, gid="notes",
                                         label=_label(track)), autolim=False)
    ax.vlines(bar_lines, 0, 1, transform=ax.get_xaxis_transform(), colors="0.75", linewidths=0.6, zorder=0,
              gid="bar_lines")
    ax.set_title(title, fontsize=8, loc="left")
    ax.set_yticks(range(0, 128, 12), [f"C{o - 1}" for o in range(11)], fontsize=7)
    ax.tick_params(axis="x", labelsize=7)
    if len(ax.collections) > 2:  # more than one track of notes (+ the bar lines)
        ax.legend(fontsize=6, loc="upper right", frameon=False, ncols=min(len(ax.collections) - 1, 4))


def _colour(track):
    """Same colour for the same program in every panel (tab20 by program); drums grey."""
    import matplotlib

    return DRUM_COLOUR if track.is_drum else matplotlib.colormaps["tab20"](track.program % 20)


def _label(track) -> str:
    return "drums" if track.is_drum else (track.name or f"program {track.program}")

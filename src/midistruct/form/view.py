"""The form view: a song's piano roll with each section's span shaded in its label's colour and labelled, the
self-similarity matrix beside it with the same boundaries (issue 16, item 5). For notebooks and reports;
``output.plot_png`` is the command's picture (the matrix and the boundary evidence).

matplotlib's object API only (``Figure`` + the Agg canvas), as in :mod:`midistruct.render`, whose piano-roll
drawing it reuses.
"""

from __future__ import annotations

from pathlib import Path

from midistruct.form.analysis import with_meter
from midistruct.render.pianoroll import draw_pianoroll

ALPHA = 0.2  # shading of a section's span under the notes
PALETTE = "Dark2"  # 8 colours, none the blue that render gives a piano's notes


def label_colours(labels) -> dict[str, tuple]:
    """A colour per distinct label, in order of first appearance (:data:`PALETTE`, cycled after 8)."""
    import matplotlib

    palette = matplotlib.colormaps[PALETTE]
    return {label: palette(i % palette.N) for i, label in enumerate(dict.fromkeys(labels))}


def form_view(score, form, *, reference=None, title: str | None = None, path: str | Path | None = None):
    """A matplotlib ``Figure``: the piano roll of ``score`` with ``form``'s sections shaded and labelled (left),
    ``form.ssm`` with the same boundaries and each section's diagonal block outlined in its colour (right).

    Args:
        score: the symusic Score ``form`` was found from (its meter replaced by ``form.settings.time_signature``
            when that is set, as :func:`~midistruct.form.analysis.analyse` did).
        form: a :class:`~midistruct.form.analysis.Form`.
        reference: optional sections to compare, ``(start_bar, end_bar, label)`` each (e.g. POP909's human
            phrase labels): drawn as a strip of labelled spans under the roll (a third axes), coloured by
            their own labels' order of appearance (a reference's letters need not mean the form's).
        title: the roll's title (default: the source, features, method and the labels in order).
        path: when given, the figure is also written there as a PNG.
    Returns:
        The Figure; ``fig.axes[0]`` the roll (one ``axvspan`` patch per section, gid ``"section"``),
        ``fig.axes[1]`` the matrix, ``fig.axes[2]`` the reference strip when one was given.
    """
    from matplotlib.figure import Figure

    score = with_meter(score, form.settings.time_signature)
    n = len(form.novelty)
    fig = Figure(figsize=(15, 4.6 if reference is None else 5.2), layout="constrained")
    rows = 1 if reference is None else 2  # the reference strip under the roll
    grid = fig.add_gridspec(rows, 2, width_ratios=[2.6, 1], height_ratios=[8, 1][:rows])
    roll, matrix = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[:, 1])
    colours = label_colours([s.label for s in form.sections])
    draw_pianoroll(roll, score, bars=n, title=title or _title(form))
    _shade(roll, [(s.start_qn, s.end_qn, s.label) for s in form.sections], colours)
    if reference is None:
        roll.set_xlabel("time (quarter notes)")
    else:
        roll.tick_params(labelbottom=False)
    _draw_matrix(matrix, form, colours)
    if reference is not None:
        strip = fig.add_subplot(grid[1, 0], sharex=roll)
        qn = form.grid / form.tpq  # (NB + 1,) bar lines in quarter notes
        spans = [(qn[min(a, n)], qn[min(b, n)], label) for a, b, label in reference if a < n]
        _shade(strip, spans, label_colours([label for _, _, label in spans]), alpha=0.6)
        strip.set_yticks([])
        strip.set_ylabel("reference", rotation=0, ha="right", va="center", fontsize=8)
        strip.set_xlabel("time (quarter notes)")
    if path is not None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        FigureCanvasAgg(fig).print_png(Path(path))
    return fig


def _title(form) -> str:
    return (f"{Path(form.source).name}: {form.settings.features} features, {form.settings.method}, "
            f"{len(form.novelty)} bars, {' '.join(s.label for s in form.sections)}")


def _shade(ax, spans, colours: dict, *, alpha: float = ALPHA) -> None:
    """Each ``(start_qn, end_qn, label)`` span shaded in its label's colour, a line where it starts (two
    sections of one label in a row stay apart), the label at its top left."""
    for start, end, label in spans:
        ax.axvline(start, color=colours[label], linewidth=1.2, zorder=0)
        ax.axvspan(start, end, color=colours[label], alpha=alpha, linewidth=0, zorder=-1, gid="section")
        ax.text(start, 0.97, f" {label}", transform=ax.get_xaxis_transform(), ha="left", va="top", fontsize=9,
                fontweight="bold", color=colours[label], clip_on=True)


def _draw_matrix(ax, form, colours: dict) -> None:
    """``form.ssm`` in bars, boundaries as lines, each section's diagonal block outlined in its colour."""
    from matplotlib.patches import Rectangle

    n = len(form.novelty)
    ax.imshow(form.ssm, cmap="magma", vmin=-1, vmax=1, origin="upper", extent=(0, n, n, 0), aspect="equal")
    for s in form.sections[1:]:
        ax.axvline(s.start_bar, color="white", linewidth=0.5, alpha=0.7)
        ax.axhline(s.start_bar, color="white", linewidth=0.5, alpha=0.7)
    for s in form.sections:
        ax.add_patch(Rectangle((s.start_bar, s.start_bar), s.end_bar - s.start_bar, s.end_bar - s.start_bar,
                               fill=False, edgecolor=colours[s.label], linewidth=2))
        ax.text((s.start_bar + s.end_bar) / 2, 0, s.label, ha="center", va="bottom", fontsize=8,
                color=colours[s.label], fontweight="bold")
    ax.set_xlabel("bar (0-based)")
    ax.set_ylabel("bar")
    ax.tick_params(labelsize=7)
    ax.set_title("self-similarity", fontsize=8, loc="left", pad=12)

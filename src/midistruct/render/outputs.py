"""Renders beside a generation command's MIDI files: one PNG of all outputs, one WAV per output, one HTML page."""

from __future__ import annotations

from pathlib import Path


def common_stem(names: list[str], *, default: str) -> str:
    """The dot-separated components all ``names`` start with (``a_to_b.slerp`` for ``a_to_b.slerp.00``,
    ``a_to_b.slerp.01``); ``default`` when they share none."""
    parts = [name.split(".") for name in names]
    shared = []
    for column in zip(*parts):
        if len(set(column)) != 1:
            break
        shared.append(column[0])
    return ".".join(shared) or default


def render_outputs(scores: dict, out_dir: str | Path, *, plot: bool = False, audio: bool = False,
                   default_stem: str = "outputs", sample_rate: int = 22050) -> dict:
    """Render ``name -> Score`` into ``out_dir``: ``<stem>.png`` (all scores stacked, in order) and ``<name>.wav``.

    ``stem`` is :func:`common_stem` of the names (``default_stem`` when they share none).
    Returns the entries for generation.json: ``{"plot": "<stem>.png"}`` and/or
    ``{"audio": {"backend": ..., "files": [...]}}`` (backends joined by ``"; "`` if they differ).
    """
    from midistruct.render.audio import write_wav
    from midistruct.render.pianoroll import plot_pianorolls

    out_dir, names, record = Path(out_dir), list(scores), {}
    if plot:
        png = out_dir / f"{common_stem(names, default=default_stem)}.png"
        record["plot"] = plot_pianorolls(list(scores.values()), png, titles=names).name
    if audio:
        backends = [write_wav(score, out_dir / f"{name}.wav", sample_rate=sample_rate)
                    for name, score in scores.items()]
        record["audio"] = {"backend": "; ".join(dict.fromkeys(backends)), "files": [f"{n}.wav" for n in names]}
    return record


def write_outputs_page(names: list[str], out_dir: str | Path, *, title: str, titles=None, audio: bool = True,
                       notes=()) -> Path:
    """``index.html`` in ``out_dir`` for the outputs ``<name>.mid`` already written there, in order: each
    one's piano roll (all on one pitch scale) and, with ``audio``, its ``<name>.wav`` in a player.

    ``titles`` head the pieces (default: the names); ``notes`` are lines under the page's ``title``.
    Returns the page's path (see :func:`midistruct.render.page.write_page`).
    """
    from midistruct.render.page import PAGE_NAME, write_page

    out_dir = Path(out_dir)
    titles = list(titles) if titles is not None else list(names)
    items = [(t, out_dir / f"{n}.mid", None, out_dir / f"{n}.wav" if audio else None) for n, t in zip(names, titles)]
    return write_page(items, out_dir / PAGE_NAME, title=title, notes=notes)

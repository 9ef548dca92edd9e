"""A form's files, in one folder: ``form.json``, ``form.png`` (the self-similarity matrix with the sections
drawn, the boundary evidence per bar line under it) and ``<stem>.form.mid`` (the song with a marker
meta-event, the section's label, at each section start, which DAWs show on their timeline)."""

from __future__ import annotations

import io
import json
from pathlib import Path

JSON_NAME, PNG_NAME = "form.json", "form.png"


def write(form, score, out_dir: str | Path, *, stem: str = "song", plot: bool = False) -> dict[str, str]:
    """Write the form's files into ``out_dir`` (made if needed); returns {"json", "midi"[, "plot"]} -> path.

    Everything is drawn and encoded before the first file is written, so a failure leaves the folder as it was.
    """
    import symusic

    marked = score.copy()  # the file's own markers stay; the sections' are added
    for section in form.sections:
        marked.markers.append(symusic.TextMeta(int(form.grid[section.start_bar]), section.label))
    marked.markers.sort(key=lambda m: m.time)
    text = json.dumps(form.as_dict(), indent=2)
    png = plot_png(form) if plot else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / JSON_NAME, "midi": out / f"{stem}.form.mid"}
    marked.dump_midi(str(paths["midi"]))
    paths["json"].write_text(text + "\n")
    if png is not None:
        paths["plot"] = out / PNG_NAME
        paths["plot"].write_bytes(png)
    return {k: str(v) for k, v in paths.items()}


def plot_png(form) -> bytes:
    """PNG bytes: the self-similarity matrix, section boundaries as lines, labels along the top, and the
    boundary evidence (``form.novelty``) below it with the boundaries marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(form.novelty)
    fig = Figure(figsize=(7, 8.4))
    top, bottom = fig.subplots(2, 1, height_ratios=[5, 1], sharex=True)
    top.imshow(form.ssm, cmap="magma", vmin=-1, vmax=1, origin="upper", extent=(0, n, n, 0), aspect="equal")
    for s in form.sections:
        for line in (top.axvline, top.axhline):
            line(s.start_bar, color="cyan", linewidth=0.8)
        top.text((s.start_bar + s.end_bar) / 2, -0.5, s.label, ha="center", va="bottom", fontsize=9)
    top.set_ylabel("bar")
    top.set_title(f"{Path(form.source).name}: {form.settings.features} features, {form.settings.method}, "
                  f"{len(form.sections)} sections ({''.join(s.label for s in form.sections)})", pad=18, fontsize=10)
    bottom.plot(range(n), form.novelty, color="black", linewidth=1)
    for s in form.sections[1:]:
        bottom.axvline(s.start_bar, color="tab:blue", linewidth=0.8)
    bottom.set_xlim(0, n)
    bottom.set_xlabel("bar (0-based)")
    bottom.set_ylabel("boundary evidence")
    fig.tight_layout()
    buffer = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buffer)
    return buffer.getvalue()

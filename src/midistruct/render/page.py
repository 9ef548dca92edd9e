"""One self-contained HTML page for a sequence of pieces (an interpolation, reconstructions): per piece its
title, piano roll and an audio player, in order.

The piano rolls (PNG) and the WAVs are embedded as base64 data URIs, so the page plays offline and still
works when it is moved on its own; only the links to the MIDI files point beside it. Plain HTML with a
little inline CSS: no script, nothing fetched from a network.
"""

from __future__ import annotations

import base64
import html
import io
import wave
from pathlib import Path
from urllib.parse import quote

PAGE_NAME = "index.html"
STYLE = """body{font-family:system-ui,sans-serif;max-width:64rem;margin:1.5rem auto;padding:0 1rem;color:#222}
h1{font-size:1.3rem}section{border-top:1px solid #ddd;padding:.6rem 0}h2{font-size:1rem;margin:.2rem 0 .4rem}
img{display:block;width:100%;height:auto}audio{width:100%;margin-top:.3rem}.meta{color:#666;font-size:.85rem}"""


def write_page(items, path: str | Path = PAGE_NAME, *, title: str, notes=()) -> Path:
    """Write the page at ``path``; returns the path.

    Args:
        items: in page order, ``(title, midi, image, wav)`` each: ``midi`` a MIDI file (linked relative to
            the page) or a symusic Score (written beside the page as ``<title>.mid``, then linked);
            ``image`` a PNG file, PNG bytes, a matplotlib Figure, or None to draw the piece's piano roll
            (all drawn ones on one pitch scale); ``wav`` a WAV file to embed, or None for no player.
        title: the page's heading.
        notes: lines shown under the heading (what made the pieces, which synthesis), as text.
    """
    import symusic

    from midistruct.render.pianoroll import pitch_span

    path = Path(path)
    items = [(t, _midi_file(midi, t, path.parent), image, wav) for t, midi, image, wav in items]
    drawn = {i: symusic.Score(str(midi)) for i, (_, midi, image, _) in enumerate(items) if image is None}
    span = pitch_span(list(drawn.values())) if drawn else None
    sections = [_section(i, t, midi, drawn[i] if image is None else image, wav, span=span, folder=path.parent)
                for i, (t, midi, image, wav) in enumerate(items)]
    lines = "".join(f'<p class="meta">{html.escape(str(line))}</p>\n' for line in notes)
    page = (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">\n'
            f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style></head>\n"
            f"<body>\n<h1>{html.escape(title)}</h1>\n{lines}{''.join(sections)}</body></html>\n")
    path.write_text(page, encoding="utf-8")
    return path


def _section(index: int, title: str, midi: Path, image, wav, *, span, folder: Path) -> str:
    """One piece: heading, piano roll, player, and a line with the MIDI link and the length."""
    alt = html.escape(f"piano roll of {title}", quote=True)
    parts = [f'<section id="piece-{index}">\n<h2>{html.escape(title)}</h2>\n',
             f'<img alt="{alt}" src="{_data_uri("image/png", _png(image, span))}">\n']
    link = _relative(midi, folder)
    meta = [f'<a href="{quote(link)}">{html.escape(link)}</a>']
    if wav is not None:
        data = Path(wav).read_bytes()
        parts.append(f'<audio controls preload="metadata" src="{_data_uri("audio/wav", data)}"></audio>\n')
        meta.append(f"{_wav_seconds(data):.1f} s")
    parts.append(f'<p class="meta">{" · ".join(meta)}</p>\n</section>\n')
    return "".join(parts)


def _midi_file(midi, title: str, folder: Path) -> Path:
    """The MIDI file to link: ``midi`` itself when it is a path, else the Score written as ``<title>.mid``."""
    if isinstance(midi, (str, Path)):
        return Path(midi)
    target = folder / f"{_file_name(title)}.mid"
    midi.dump_midi(str(target))
    return target


def _png(image, span: tuple[int, int] | None) -> bytes:
    """PNG bytes of ``image``: a PNG file or bytes, a Figure, or a Score drawn as a piano roll on ``span``."""
    if isinstance(image, bytes):
        return image
    if isinstance(image, (str, Path)):
        return Path(image).read_bytes()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    drawn = not isinstance(image, Figure)
    if drawn:
        from midistruct.render.pianoroll import pianoroll_figure

        image = pianoroll_figure([image], titles=[""], pitch_range=span)
    buffer = io.BytesIO()
    FigureCanvasAgg(image).print_png(buffer)
    if drawn:
        image.clear()  # a bare Figure is not registered with pyplot: clearing releases it
    return buffer.getvalue()


def _data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _wav_seconds(data: bytes) -> float:
    with wave.open(io.BytesIO(data), "rb") as f:
        return f.getnframes() / f.getframerate()


def _relative(path: Path, folder: Path) -> str:
    """``path`` relative to the page's folder when it lies inside it, else its name (kept beside the page)."""
    try:
        return path.resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        return path.name


def _file_name(title: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in title).strip("._") or "piece"

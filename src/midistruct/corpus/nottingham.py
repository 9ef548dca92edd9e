"""Nottingham Music Database folk tunes, as cleaned and rendered to MIDI by jukedeck.

Layout (``MIDI/`` in github.com/jukedeck/nottingham-dataset, ``midi/`` in ../shared/datasets)::

    midi/<book><n>.mid          full rendering: melody + chords (two tracks)
    midi/melody/<book><n>.mid   melody only
    midi/chords/<book><n>.mid   chords only (missing for 13 tunes without chord symbols)

``<book>`` is the NMD's ABC file the tune comes from (``jigs``, ``reelsa-c``, ``hpps`` ...),
which names the tune type.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from midistruct.corpus import Piece, SourceError, limit_option

RENDERINGS = {"full": ".", "melody": "melody", "chords": "chords"}

# NMD book (file name prefix) -> tune type; the reels books are split by title initial.
TUNE_TYPES = {
    "ashover": "ashover",  # the Ashover manuscript: mixed dance tunes
    "hpps": "hornpipe",
    "jigs": "jig",
    "morris": "morris",
    "playford": "playford",  # dances from Playford's English Dancing Master
    "reels": "reel",
    "slip": "slip jig",
    "waltzes": "waltz",
    "xmas": "christmas",
}

_STEM = re.compile(r"([a-z]+(?:-[a-z])?)(\d+)", re.IGNORECASE)


def book_and_tune_type(stem: str) -> tuple[str, str]:
    """``(book, tune type)`` of a file stem: ``"reelsa-c12"`` -> ``("reelsa-c", "reel")``.

    An unknown book is its own tune type; a stem without the book+number shape gives ``("", "")``.
    """
    match = _STEM.fullmatch(stem)
    if not match:
        return "", ""
    book = match.group(1).lower()
    base = "reels" if book.startswith("reels") else book
    return book, TUNE_TYPES.get(base, base)


def midi_folder(root: Path) -> Path | None:
    """The folder of full renderings: ``root/midi``, ``root/MIDI`` or ``root`` itself."""
    for candidate in (root / "midi", root / "MIDI", root):
        if candidate.is_dir() and any(p.suffix.lower() == ".mid" for p in candidate.iterdir()):
            return candidate
    return None


def _renderings(value: Any) -> list[str]:
    """``options["rendering"]`` as a list of valid names."""
    if isinstance(value, str):
        names = [value]
    else:
        names = list(value) if isinstance(value, (list, tuple)) else []
    unknown = [n for n in names if n not in RENDERINGS]
    if unknown or not names:
        valid = ", ".join(RENDERINGS)
        raise SourceError(f"nottingham source: bad rendering {value!r}; valid: {valid} or a list")
    return list(dict.fromkeys(names))


def _tune_files(folder: Path) -> dict[str, Path]:
    """``{stem: path}`` of the ``.mid`` files directly in ``folder`` (none when it is absent)."""
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in folder.iterdir() if p.suffix.lower() == ".mid" and p.is_file()}


def iter_nottingham(options: dict[str, Any]) -> Iterator[Piece]:
    """Yield Nottingham tunes, id ``nottingham/<rendering>/<stem>``.

    Options:
        path: the dataset root or its ``midi/`` folder (required).
        rendering: ``"melody"`` (default), ``"chords"``, ``"full"``, or a list of them.
        limit: at most this many tunes (with all requested renderings), in stem order.

    All renderings of a tune share ``group = "nottingham/<stem>"``. Tags: collection,
    rendering, book (the NMD file, e.g. ``reelsa-c``), tune_type (jig, reel, hornpipe,
    waltz, slip jig, morris, playford, ashover, christmas). A tune lacking a rendering
    (13 have no chords) is skipped for that rendering only.
    Raises SourceError on a missing folder, a folder without ``.mid`` files, an unknown
    rendering, or a requested rendering with no files.
    """
    if not options.get("path"):
        raise SourceError("nottingham source needs a 'path' (the dataset root or its midi/ folder)")
    root = Path(options["path"]).expanduser()
    midi = midi_folder(root) if root.is_dir() else None
    if midi is None:
        raise SourceError(f"nottingham source: {str(root)!r} holds no midi/<tune>.mid files")
    renderings = _renderings(options.get("rendering", "melody"))
    files = {name: _tune_files(midi / RENDERINGS[name]) for name in renderings}
    empty = [name for name in renderings if not files[name]]
    if empty:
        raise SourceError(f"nottingham source: no {'/'.join(empty)} rendering under {str(midi)!r}")
    stems = sorted(set().union(*files.values()), key=_natural)
    for stem in stems[: limit_option(options)]:
        yield from _tune_pieces(stem, {name: files[name].get(stem) for name in renderings})


def _tune_pieces(stem: str, paths: dict[str, Path | None]) -> Iterator[Piece]:
    """One piece per rendering of the tune ``stem`` that has a file (``paths[rendering]``)."""
    book, kind = book_and_tune_type(stem)
    for name, path in paths.items():
        if path is not None:
            tags = {"collection": "nottingham", "rendering": name, "book": book, "tune_type": kind}
            group = f"nottingham/{stem}"
            yield Piece(id=f"nottingham/{name}/{stem}", path=path, group=group, tags=tags)


def _natural(stem: str) -> tuple[str, int]:
    """Sort key putting ``jigs2`` before ``jigs10``."""
    match = _STEM.fullmatch(stem)
    return (match.group(1).lower(), int(match.group(2))) if match else (stem, -1)

"""Any folder of MIDI files, searched recursively (``.mid`` / ``.midi``, any case)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from midistruct.corpus import Piece, SourceError

MIDI_SUFFIXES = {".mid", ".midi"}


def find_midi_files(root: Path) -> list[Path]:
    """All MIDI files under ``root``, sorted for a stable order.

    Symbolic links count as what they point to; a broken one (or a loop) with a MIDI suffix is
    listed too, so that prepare reports it ("broken link") instead of losing it silently. Folders
    are searched, never listed, whatever their name.
    """
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in MIDI_SUFFIXES and (p.is_file() or _broken_link(p)))


def _broken_link(path: Path) -> bool:
    return path.is_symlink() and not path.exists()


def iter_folder(options: dict[str, Any]) -> Iterator[Piece]:
    """Yield one piece per MIDI file under ``options["path"]``.

    Options:
        path: the folder (required).
        name: prefix of the piece ids (default: the folder's name).

    Ids are ``name/relative/path/without/suffix``; tags hold ``source`` and the
    relative ``folder`` of the file.
    """
    root = Path(options.get("path", "")).expanduser()
    if not options.get("path") or not root.is_dir():
        raise SourceError(f"folder source: {str(root)!r} is not a folder")
    name = options.get("name") or root.resolve().name
    for path in find_midi_files(root):
        rel = path.relative_to(root)
        yield Piece(
            id=f"{name}/{rel.with_suffix('').as_posix()}",
            path=path,
            tags={"source": name, "folder": rel.parent.as_posix()},
        )

"""Any folder of MIDI files, searched recursively (``.mid`` / ``.midi``, any case)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from midistruct.corpus import Piece, SourceError

MIDI_SUFFIXES = {".mid", ".midi"}
RESERVED_TAGS = {"source", "folder"}  # set by the source itself; a tags file may not change them


def read_tags_csv(path: str | Path) -> dict[str, dict[str, str]]:
    """A user's tags file (issue 18): CSV with a header, a ``path`` column (the file's path relative to the
    folder, with ``/``) and one column per tag, e.g. ``path,tune_type,key`` / ``reels/a.mid,reel,D:major``.
    Returns ``{path: {tag: value}}``; empty cells are left out. :class:`SourceError` naming the file when it
    cannot be read or has no ``path`` column. (``midistruct map --tags`` reads the same format.)"""
    import csv

    path = Path(path).expanduser()
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if "path" not in (reader.fieldnames or []):
                raise SourceError(f"{path}: a tags file needs a 'path' column, found {reader.fieldnames}")
            return {row["path"].strip(): {k.strip(): v.strip() for k, v in row.items() if k and k != "path" and v}
                    for row in reader if row.get("path")}
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise SourceError(f"tags file {path}: {err}") from None


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
        tags: a CSV file of the user's tags per file (:func:`read_tags_csv`); a row whose path names no MIDI
            file of the folder is an error (a typo would otherwise drop its tags silently). Its ``time_signature``
            and ``downbeat_seconds`` columns place a file's bar lines as POP909's annotations do.
        downbeat: ``auto`` puts every file's bar lines where its notes say (``--downbeat auto``; a file's own
            ``downbeat_seconds`` in the tags file wins); for MIDI played to a click or transcribed from audio.

    Ids are ``name/relative/path/without/suffix``; tags hold ``source``, the relative ``folder`` of the file
    and the tags file's columns for it.
    """
    root = Path(options.get("path", "")).expanduser()
    if not options.get("path") or not root.is_dir():
        raise SourceError(f"folder source: {str(root)!r} is not a folder")
    name = options.get("name") or root.resolve().name
    if options.get("downbeat") not in (None, "auto"):
        raise SourceError(f"folder source: downbeat {options['downbeat']!r}: 'auto' or nothing (seconds differ "
                          "file by file: give them in the tags file's downbeat_seconds column)")
    placing = {"downbeat_seconds": "auto"} if options.get("downbeat") == "auto" else {}
    files = find_midi_files(root)
    user = _checked_tags(options["tags"], {p.relative_to(root).as_posix() for p in files}) if options.get("tags") \
        else {}
    for path in files:
        rel = path.relative_to(root)
        yield Piece(
            id=f"{name}/{rel.with_suffix('').as_posix()}",
            path=path,
            tags={**placing, **user.get(rel.as_posix(), {}), "source": name, "folder": rel.parent.as_posix()},
        )


def _checked_tags(tags_file: str, known: set[str]) -> dict[str, dict[str, str]]:
    user = read_tags_csv(tags_file)
    unknown = sorted(set(user) - known)
    if unknown:
        raise SourceError(f"tags file {tags_file}: {len(unknown)} path(s) name no MIDI file of the folder, e.g. "
                          f"{unknown[0]!r} (paths are relative to the folder, with /)")
    reserved = sorted({k for row in user.values() for k in row} & RESERVED_TAGS)
    if reserved:
        raise SourceError(f"tags file {tags_file}: the column(s) {', '.join(reserved)} are set by the folder source")
    return user

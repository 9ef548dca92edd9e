"""POP909 (Wang et al., ISMIR 2020): 909 pop songs and 1,989 versions, with their annotations.

Layout (folder ``POP909/`` of github.com/music-x-lab/POP909-Dataset, ``songs/`` in
../shared/datasets)::

    NNN/NNN.mid                 the arrangement: tracks MELODY, BRIDGE, PIANO
    NNN/versions/NNN-vK.mid     earlier versions of the same arrangement (same timing)
    NNN/beat_midi.txt           "time_s flag flag" per beat, see :class:`BeatRow`
    NNN/chord_midi.txt          "start_s end_s chord" (tab separated), chord "N" = none
    NNN/key_audio.txt           "start_s end_s key", one line per key region
    index.xlsx                  song_id, name, artist, modify_times, num_beats_per_measure,
                                num_quavers_per_beat

The companion structure dataset (github.com/Dsqvival/hierarchical-structure-analysis, Dai et
al. 2020) has ``NNN/human_label1.txt`` / ``human_label2.txt``: phrase strings such as
``i4A4B8`` (see :func:`midistruct.tags.parse_phrase_labels`).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from midistruct.corpus import Piece, SourceError, limit_option

_SONG_DIR = re.compile(r"[0-9]{3}")
_VERSION_FILE = re.compile(r"([0-9]{3})-v([0-9]+)\.mid", re.IGNORECASE)
_XLSX_NS = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main"}


class BeatRow(NamedTuple):
    """One line of ``beat_midi.txt``: a beat of the MIDI file.

    ``downbeat`` (column 2) starts a measure as ``index.xlsx`` counts them (every
    ``num_beats_per_measure`` beats); ``hyper_downbeat`` (column 3) marks every second one.
    Phrase labels count bars of ``hyper_downbeat`` where ``num_beats_per_measure`` is 2 and
    of ``downbeat`` where it is 3 (measured on the data; the upstream README says neither).
    """

    time: float
    downbeat: bool
    hyper_downbeat: bool


class Segment(NamedTuple):
    """A span in seconds with a label: a chord (``"B:maj7"``, ``"N"`` = none) or a key."""

    start: float
    end: float
    label: str


def read_beats(song_dir: Path | str) -> list[BeatRow]:
    """Parse ``song_dir/beat_midi.txt``; raises ValueError on a malformed line."""
    rows = _rows(Path(song_dir) / "beat_midi.txt", 3)
    return [BeatRow(float(t), float(a) == 1, float(b) == 1) for t, a, b in rows]


def read_chords(song_dir: Path | str) -> list[Segment]:
    """Parse ``song_dir/chord_midi.txt`` (chords of the MIDI file, in seconds)."""
    return _segments(Path(song_dir) / "chord_midi.txt")


def read_keys(song_dir: Path | str) -> list[Segment]:
    """Parse ``song_dir/key_audio.txt``: key regions in seconds; ``[]`` when the file is absent."""
    path = Path(song_dir) / "key_audio.txt"
    if not path.is_file():
        return []
    return _segments(path)


def _segments(path: Path) -> list[Segment]:
    return [Segment(float(s), float(e), label) for s, e, label in _rows(path, 3)]


def _rows(path: Path, width: int) -> list[list[str]]:
    """Whitespace-split non-empty lines of ``path``, each of exactly ``width`` fields."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != width:
            raise ValueError(f"{path}:{number}: expected {width} fields, got {line!r}")
        rows.append(fields)
    return rows


def songs_folder(root: Path) -> Path | None:
    """The folder holding the ``NNN/`` song folders: ``root/songs``, ``root/POP909`` or ``root``."""
    for candidate in (root / "songs", root / "POP909", root):
        if candidate.is_dir() and any(_is_song_dir(d) for d in candidate.iterdir()):
            return candidate
    return None


def _is_song_dir(path: Path) -> bool:
    return _SONG_DIR.fullmatch(path.name) is not None and path.is_dir()


def read_index(songs: Path) -> dict[str, dict[str, str]]:
    """Rows of ``songs/index.xlsx`` keyed by song id, read with the standard library.

    Returns ``{}`` when the file is absent; raises SourceError when it is not a readable sheet.
    """
    path = songs / "index.xlsx"
    if not path.is_file():
        return {}
    try:
        with zipfile.ZipFile(path) as book:
            shared = _shared_strings(book)
            sheet = ET.fromstring(book.read("xl/worksheets/sheet1.xml"))
    except (zipfile.BadZipFile, KeyError, ET.ParseError) as err:
        raise SourceError(f"pop909 source: cannot read {path}: {err}") from err
    rows = [_sheet_row(row, shared) for row in sheet.iterfind(".//m:sheetData/m:row", _XLSX_NS)]
    if not rows:
        return {}
    header, body = rows[0], rows[1:]
    records = [{header[col]: value for col, value in row.items() if col in header} for row in body]
    return {r["song_id"].zfill(3): r for r in records if r.get("song_id")}


def _shared_strings(book: zipfile.ZipFile) -> list[str]:
    """The workbook's shared strings (the published file inlines them, Excel re-saves do not)."""
    if "xl/sharedStrings.xml" not in book.namelist():
        return []
    root = ET.fromstring(book.read("xl/sharedStrings.xml"))
    items = root.iterfind("m:si", _XLSX_NS)
    return ["".join(t.text or "" for t in si.iterfind(".//m:t", _XLSX_NS)) for si in items]


def _sheet_row(row: ET.Element, shared: list[str]) -> dict[str, str]:
    """One ``<row>`` as ``{column letter: text}``."""
    cells = {}
    for cell in row.iterfind("m:c", _XLSX_NS):
        column = re.sub(r"\d", "", cell.get("r", ""))
        if cell.get("t") == "inlineStr":
            text = "".join(t.text or "" for t in cell.iterfind(".//m:t", _XLSX_NS))
        else:
            value = cell.find("m:v", _XLSX_NS)
            text = (value.text or "") if value is not None else ""
            if cell.get("t") == "s" and text:
                text = shared[int(text)]
        cells[column] = text.strip()
    return cells


def meter_of(beats_per_measure: str, quavers_per_beat: str) -> str | None:
    """Time signature implied by ``index.xlsx``: 2 quavers a beat -> ``"E/4"``, 3 -> ``"3E/8"``.

    The literal reading: (2, 2) -> ``"2/4"``, (3, 2) -> ``"3/4"``, (2, 3) -> ``"6/8"``.
    Returns None for values it cannot read.
    """
    if not (beats_per_measure.isdigit() and quavers_per_beat in ("2", "3")):
        return None
    beats = int(beats_per_measure)
    return f"{beats}/4" if quavers_per_beat == "2" else f"{3 * beats}/8"


def _main_key(song_dir: Path) -> str | None:
    """The key held longest in ``key_audio.txt`` (most songs have one key region)."""
    keys = read_keys(song_dir)
    if not keys:
        return None
    length: dict[str, float] = {}
    for start, end, label in keys:
        length[label] = length.get(label, 0.0) + end - start
    return max(length, key=length.__getitem__)


def _first_bar_line(song_dir: Path, meter: str) -> float | None:
    """Seconds of the song's first bar line as the phrase labels count bars: the first
    ``hyper_downbeat`` for 2/4 songs (their bars are 4/4 hyper-bars), else the first ``downbeat``.

    The MIDI files' beats do not start at 0 (song 001's first beat is at 0.055 s, 40 ticks): a bar
    grid from tick 0 puts every onset a fraction of a beat late. None without beat_midi.txt.
    """
    try:
        beats = read_beats(song_dir)
    except (OSError, ValueError):
        return None
    column = "hyper_downbeat" if meter == "2/4" else "downbeat"
    return next((b.time for b in beats if getattr(b, column)), None)


def _song_tags(song_dir: Path, index_row: dict[str, str], phrases: Path | None) -> dict[str, str]:
    """Tags shared by a song and its versions."""
    song = song_dir.name
    tags = {"collection": "pop909", "song": song}
    key = _main_key(song_dir)
    if key:
        tags["key"] = key
    meter = meter_of(
        index_row.get("num_beats_per_measure", ""),
        index_row.get("num_quavers_per_beat", ""),
    )
    if meter:
        tags["meter"] = meter
        # The MIDI files' own time signatures are unusable (617 songs say 1/4); bar lines
        # follow the phrase labels' bars instead: 2 beats a measure -> 4/4 hyper-bars.
        tags["time_signature"] = {"2/4": "4/4"}.get(meter, meter)
        downbeat = _first_bar_line(song_dir, meter)
        if downbeat is not None:
            tags["downbeat_seconds"] = f"{downbeat:.6f}"
    for tag, column in (("title", "name"), ("artist", "artist")):
        if index_row.get(column):
            tags[tag] = index_row[column]
    if phrases is not None:
        for tag, filename in (("phrases", "human_label1.txt"), ("phrases2", "human_label2.txt")):
            label_file = phrases / song / filename
            if label_file.is_file():
                tags[tag] = "".join(label_file.read_text(encoding="utf-8").split())
    return tags


LABEL_METERS = ("2/4", "4/4", "3/4")  # meters whose labels count bars of the annotation's meter (2/4: 4/4 bars)
LABEL_MATCH = 0.9  # least share of the MIDI melody's onsets within a sixteenth of melody.txt's once aligned


def labels_zero_tick(midi: Path, melody: Path) -> int:
    """The MIDI tick where the phrase labels' bar 0 starts: ``melody.txt`` counts sixteenths from there, a rest
    first up to the melody's first note. Checked against the MIDI's MELODY track; ValueError saying why not."""
    import numpy as np
    import symusic

    score = symusic.Score(str(midi))
    tracks = [t for t in score.tracks if t.name.strip().upper().startswith("MELODY") and t.note_num()]
    if not tracks:
        raise ValueError("no MELODY track")
    rows = np.loadtxt(melody, dtype=np.int64, ndmin=2)  # (pitch or 0 for a rest, sixteenths)
    onsets = np.concatenate([[0], np.cumsum(rows[:, 1])[:-1]])[rows[:, 0] > 0]
    times = np.sort(tracks[0].notes.numpy()["time"]).astype(np.int64)
    sixteenth = score.tpq / 4
    zero = int(times[0] - round(onsets[0] * sixteenth))
    found = (times - zero) / sixteenth
    share = float((np.abs(found[:, None] - onsets[None, :]).min(axis=1) <= 1).mean())
    if share < LABEL_MATCH:
        raise ValueError(f"melody.txt matches only {share:.0%} of the MIDI melody's onsets once aligned")
    return zero


def _label_tags(main: Path, tags: dict[str, str], labels: Path | None) -> dict[str, str]:
    """``label_zero_tick`` for a song's main file when its phrase labels can be placed in it (the labels'
    meter is one of :data:`LABEL_METERS` and ``melody.txt`` matches the MIDI melody); else nothing."""
    if labels is None or "phrases" not in tags or tags.get("meter") not in LABEL_METERS:
        return {}
    try:
        return {"label_zero_tick": str(labels_zero_tick(main, labels / "melody.txt"))}
    except (ValueError, OSError):
        return {}


def _song_pieces(song_dir: Path, tags: dict[str, str], *, versions: bool,
                 labels: Path | None = None) -> Iterator[Piece]:
    """The song's main file (version "0") then its versions, sorted by K."""
    song = song_dir.name
    group = f"pop909/{song}"
    main = song_dir / f"{song}.mid"
    if main.is_file():
        yield Piece(id=group, path=main, group=group, tags={**tags, **_label_tags(main, tags, labels), "version": "0"})
    if not versions:
        return
    found = {}
    for path in (song_dir / "versions").glob("*"):
        match = _VERSION_FILE.fullmatch(path.name)
        if match and match.group(1) == song:
            found[int(match.group(2))] = path
    for k, path in sorted(found.items()):
        yield Piece(id=f"{group}-v{k}", path=path, group=group, tags={**tags, "version": str(k)})


def _folder_option(options: dict[str, Any], name: str) -> Path | None:
    value = options.get(name)
    return Path(value).expanduser() if value else None


def iter_pop909(options: dict[str, Any]) -> Iterator[Piece]:
    """Yield POP909 songs (ids ``pop909/NNN``) and their versions (``pop909/NNN-vK``).

    Options:
        path: the POP909 root, a folder holding ``songs/NNN/``, ``POP909/NNN/`` or ``NNN/``
            (required).
        versions: also yield ``versions/NNN-vK.mid`` (default True).
        phrases_path: root of the phrase-label dataset (same three layouts); adds the
            ``phrases`` / ``phrases2`` tags (annotators 1 and 2) where a song has them.
        limit: at most this many songs (with all their versions), in song order.

    All files of a song share ``group = "pop909/NNN"``. Tags: collection, song, version
    ("0" for the main file), key (longest key of ``key_audio.txt``), meter / title / artist
    (from ``index.xlsx`` when present), time_signature and downbeat_seconds (the bar meter of
    the phrase labels and the time of the first bar line: prepare puts bar lines there),
    phrases, phrases2 (the label strings, whitespace removed, not validated: parse them with
    :func:`midistruct.tags.parse_phrase_labels`), and on the main file label_zero_tick (the MIDI tick of the
    labels' bar 0, :func:`labels_zero_tick`, where the labels can be placed: prepare turns it into label_bar).
    Raises SourceError when a folder is missing or holds no ``NNN/`` song folders, or on a bad
    ``versions`` / ``limit`` value.
    """
    root = _folder_option(options, "path")
    if root is None:
        raise SourceError("pop909 source needs a 'path' (the folder holding songs/NNN/ or NNN/)")
    songs = songs_folder(root) if root.is_dir() else None
    if songs is None:
        raise SourceError(
            f"pop909 source: {str(root)!r} is not a POP909 folder (expected songs/NNN/NNN.mid)"
        )
    phrases = _folder_option(options, "phrases_path")
    phrase_songs = songs_folder(phrases) if phrases is not None and phrases.is_dir() else None
    if phrases is not None and phrase_songs is None:
        raise SourceError(
            f"pop909 source: phrases_path {str(phrases)!r} holds no NNN/human_label1.txt folders"
        )
    versions = options.get("versions", True)
    if not isinstance(versions, bool):
        raise SourceError(f"pop909 source: versions must be true or false, got {versions!r}")
    index = read_index(songs)
    song_dirs = sorted(d for d in songs.iterdir() if _is_song_dir(d))
    for song_dir in song_dirs[: limit_option(options)]:
        tags = _song_tags(song_dir, index.get(song_dir.name, {}), phrase_songs)
        labels = phrase_songs / song_dir.name if phrase_songs is not None else None
        yield from _song_pieces(song_dir, tags, versions=versions, labels=labels)

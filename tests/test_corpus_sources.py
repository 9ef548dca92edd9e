"""Corpus sources (folder, pop909, nottingham) on tiny layouts built here and on the real corpora."""

from __future__ import annotations

import zipfile
from collections import Counter
from pathlib import Path

import pytest
import symusic

from midistruct.corpus import SourceError, iter_pieces
from midistruct.corpus.nottingham import book_and_tune_type
from midistruct.corpus.pop909 import (
    meter_of,
    read_beats,
    read_chords,
    read_index,
)
from midistruct.tags import parse_phrase_labels

XLSX_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
INDEX_HEADER = [
    "song_id", "name", "artist", "modify_times", "num_beats_per_measure", "num_quavers_per_beat",
]


def write_midi(path: Path, pitch: int = 60) -> Path:
    """A one-note MIDI file at ``path`` (parents created)."""
    score = symusic.Score(480)
    track = symusic.Track(name="MELODY", program=0)
    track.notes.append(symusic.Note(0, 480, pitch, 80))
    score.tracks.append(track)
    path.parent.mkdir(parents=True, exist_ok=True)
    score.dump_midi(path)
    return path


def write_index_xlsx(path: Path, rows: list[list[str]], *, shared: bool = False) -> None:
    """A minimal index.xlsx: inline strings like the published file, or Excel's shared strings."""
    strings: list[str] = []

    def cell(ref: str, value: str) -> str:
        if not shared:
            return f'<c r="{ref}" t="inlineStr"><is><t>{value}</t></is></c>'
        strings.append(value)
        return f'<c r="{ref}" t="s"><v>{len(strings) - 1}</v></c>'

    body = "".join(
        f'<row r="{r}">' + "".join(cell(f"{'ABCDEF'[c]}{r}", v) for c, v in enumerate(row)) + "</row>"
        for r, row in enumerate(rows, start=1)
    )
    with zipfile.ZipFile(path, "w") as book:
        sheet = f'<worksheet xmlns="{XLSX_NS}"><sheetData>{body}</sheetData></worksheet>'
        book.writestr("xl/worksheets/sheet1.xml", sheet)
        if shared:
            items = "".join(f"<si><t>{s}</t></si>" for s in strings)
            book.writestr("xl/sharedStrings.xml", f'<sst xmlns="{XLSX_NS}">{items}</sst>')


@pytest.fixture
def pop909(tmp_path: Path) -> Path:
    """Fake POP909: song 001 (2 versions, a key change, 3/4), song 002 (1 version, 6/8)."""
    songs = tmp_path / "pop909" / "songs"
    for name in ["001/001.mid", "001/versions/001-v1.mid", "001/versions/001-v2.mid",
                 "002/002.mid", "002/versions/002-v1.mid"]:
        write_midi(songs / name)
    write_midi(songs / "001" / "versions" / "002-v9.mid")  # another song's number: ignored
    (songs / "001" / "versions" / "001-v3.txt").write_text("not a version")
    song = songs / "001"
    (song / "key_audio.txt").write_text("0.5\t10.0\tC:maj\n10.0\t60.0\tA:min\n60.0\t70.0\tC:maj")
    (song / "beat_midi.txt").write_text("0.05 1.0 1.0\n0.72 0.0 0.0\n1.39 1.0 0.0\n")
    (song / "chord_midi.txt").write_text("0.05\t0.72\tN\n0.72\t2.05\tB:maj7\n")
    rows = [INDEX_HEADER, ["001", "Song", "Singer", "1", "3", "2"], ["002", "Other", "Band", "2", "2", "3"]]
    write_index_xlsx(songs / "index.xlsx", rows)
    return tmp_path / "pop909"


@pytest.fixture
def phrases(tmp_path: Path) -> Path:
    """Fake phrase dataset for song 001 only (annotator 2 with stray whitespace)."""
    song = tmp_path / "pop909-phrases" / "songs" / "001"
    song.mkdir(parents=True)
    (song / "human_label1.txt").write_text("i4A4B8o2\n")
    (song / "human_label2.txt").write_text(" i4A12 o2\n")
    return tmp_path / "pop909-phrases"


def pop909_pieces(**options):
    return list(iter_pieces({"kind": "pop909", **options}))


def test_pop909_ids_groups_and_tags(pop909: Path, phrases: Path) -> None:
    pieces = pop909_pieces(path=pop909, phrases_path=phrases)
    assert [p.id for p in pieces] == [
        "pop909/001", "pop909/001-v1", "pop909/001-v2", "pop909/002", "pop909/002-v1",
    ]
    assert [p.group for p in pieces] == ["pop909/001"] * 3 + ["pop909/002"] * 2
    assert [p.tags["version"] for p in pieces] == ["0", "1", "2", "0", "1"]
    assert pieces[2].path == pop909 / "songs" / "001" / "versions" / "001-v2.mid"
    first, second = pieces[0].tags, pieces[3].tags
    assert first["collection"] == "pop909" and first["song"] == "001"
    assert first["key"] == "A:min"  # held 50 s of the 69.5 s
    assert (first["meter"], second["meter"]) == ("3/4", "6/8")
    assert (first["title"], first["artist"]) == ("Song", "Singer")
    assert (first["phrases"], first["phrases2"]) == ("i4A4B8o2", "i4A12o2")
    assert pieces[1].tags["phrases"] == "i4A4B8o2"  # versions share the song's timing and labels
    assert "phrases" not in second and "key" not in second


def test_pop909_options(pop909: Path) -> None:
    assert [p.id for p in pop909_pieces(path=pop909, versions=False)] == ["pop909/001", "pop909/002"]
    assert [p.id for p in pop909_pieces(path=pop909, limit=1)] == [
        "pop909/001", "pop909/001-v1", "pop909/001-v2",
    ]
    assert pop909_pieces(path=pop909, limit=0) == []


def test_pop909_accepts_upstream_layout(pop909: Path, tmp_path: Path) -> None:
    upstream = tmp_path / "POP909-Dataset"  # the GitHub repo keeps the songs in POP909/NNN/
    upstream.mkdir()
    (pop909 / "songs").rename(upstream / "POP909")
    ids = [p.id for p in pop909_pieces(path=upstream)]
    assert ids[0] == "pop909/001" and len(ids) == 5
    assert [p.id for p in pop909_pieces(path=upstream / "POP909")] == ids


def test_pop909_errors(pop909: Path, tmp_path: Path) -> None:
    midi_only = write_midi(tmp_path / "midi_only" / "song.mid").parent
    (tmp_path / "empty").mkdir()
    cases = [
        ({}, "needs a 'path'"),
        ({"path": tmp_path / "missing"}, "not a POP909 folder"),
        ({"path": midi_only}, "expected songs/NNN/NNN.mid"),
        ({"path": pop909, "phrases_path": tmp_path / "empty"}, "human_label1"),
        ({"path": pop909, "limit": -1}, "limit"),
        ({"path": pop909, "limit": "3"}, "limit"),
        ({"path": pop909, "versions": "no"}, "versions"),
    ]
    for options, message in cases:
        with pytest.raises(SourceError, match=message):
            pop909_pieces(**options)


def test_pop909_index_with_shared_strings(tmp_path: Path) -> None:
    write_index_xlsx(tmp_path / "index.xlsx", [INDEX_HEADER, ["7", "T", "A", "1", "3", "3"]], shared=True)
    assert read_index(tmp_path)["007"]["num_beats_per_measure"] == "3"
    (tmp_path / "index.xlsx").write_text("not a zip")
    with pytest.raises(SourceError, match="index.xlsx"):
        read_index(tmp_path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("i4A4B8", [("i", 4), ("A", 4), ("B", 8)]),
        ("A16b12X7o3", [("A", 16), ("b", 12), ("X", 7), ("o", 3)]),
        (" i4 A4\nB8\n", [("i", 4), ("A", 4), ("B", 8)]),
    ],
)
def test_parse_phrase_labels(text: str, expected: list) -> None:
    assert parse_phrase_labels(text) == expected


@pytest.mark.parametrize("text", ["", "  \n", "A", "4A", "A4B", "A4-B4", "A4é4", "AB4", "A٣"])
def test_parse_phrase_labels_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        parse_phrase_labels(text)


def test_read_beats_and_chords(pop909: Path) -> None:
    song = pop909 / "songs" / "001"
    beats = read_beats(song)
    assert [(b.downbeat, b.hyper_downbeat) for b in beats] == [(True, True), (False, False), (True, False)]
    assert beats[1].time == pytest.approx(0.72)
    chords = read_chords(song)
    assert chords[1] == (0.72, 2.05, "B:maj7") and chords[0].label == "N"
    (song / "chord_midi.txt").write_text("0.0 1.0 C:maj\n1.0 2.0\n")
    with pytest.raises(ValueError, match="chord_midi.txt:2"):
        read_chords(song)


@pytest.mark.parametrize(
    ("beats", "quavers", "meter"),
    [("2", "2", "2/4"), ("3", "2", "3/4"), ("2", "3", "6/8"), ("3", "3", "9/8"),
     ("", "2", None), ("2", "4", None)],
)
def test_meter_of(beats: str, quavers: str, meter: str | None) -> None:
    assert meter_of(beats, quavers) == meter


@pytest.fixture
def nottingham(tmp_path: Path) -> Path:
    """Fake Nottingham: jigs2, jigs10, reelsa-c1 in all renderings but chords of reelsa-c1."""
    midi = tmp_path / "nottingham" / "midi"
    for stem in ["jigs2", "jigs10", "reelsa-c1"]:
        write_midi(midi / f"{stem}.mid")
        write_midi(midi / "melody" / f"{stem}.mid")
        if stem != "reelsa-c1":
            write_midi(midi / "chords" / f"{stem}.mid")
    (midi / "README.txt").write_text("not midi")
    return tmp_path / "nottingham"


def nottingham_pieces(**options):
    return list(iter_pieces({"kind": "nottingham", **options}))


def test_nottingham_melody_by_default(nottingham: Path) -> None:
    pieces = nottingham_pieces(path=nottingham)
    assert [p.id for p in pieces] == [
        "nottingham/melody/jigs2", "nottingham/melody/jigs10", "nottingham/melody/reelsa-c1",
    ]
    assert pieces[0].group == "nottingham/jigs2"
    assert pieces[0].path == nottingham / "midi" / "melody" / "jigs2.mid"
    assert pieces[2].tags == {
        "collection": "nottingham", "rendering": "melody", "book": "reelsa-c", "tune_type": "reel",
    }


def test_nottingham_renderings_share_groups(nottingham: Path) -> None:
    pieces = nottingham_pieces(path=nottingham / "midi", rendering=["melody", "chords", "full"])
    assert len(pieces) == 8  # reelsa-c1 has no chords
    groups = Counter(p.group for p in pieces)
    assert groups == {"nottingham/jigs2": 3, "nottingham/jigs10": 3, "nottingham/reelsa-c1": 2}
    full = [p for p in pieces if p.tags["rendering"] == "full"]
    assert [p.path.parent.name for p in full] == ["midi"] * 3
    chords = nottingham_pieces(path=nottingham, rendering="chords", limit=1)
    assert [p.id for p in chords] == ["nottingham/chords/jigs2"]


def test_nottingham_upstream_layout(nottingham: Path) -> None:
    (nottingham / "midi").rename(nottingham / "MIDI")  # the GitHub repo's folder name
    assert len(nottingham_pieces(path=nottingham, rendering="full")) == 3


@pytest.mark.parametrize(
    ("folder", "rendering"),
    [("", "melody"), ("missing", "melody"), ("empty", "melody"), ("melody-folder", "melody"),
     ("ok", "piano"), ("ok", ["melody", 3]), ("ok", 5), ("ok", [])],
)
def test_nottingham_errors(nottingham: Path, tmp_path: Path, folder: str, rendering: object) -> None:
    (tmp_path / "empty").mkdir()
    paths = {"": "", "missing": tmp_path / "missing", "empty": tmp_path / "empty",
             "melody-folder": nottingham / "midi" / "melody", "ok": nottingham}
    with pytest.raises(SourceError, match="nottingham"):
        nottingham_pieces(path=paths[folder], rendering=rendering)


@pytest.mark.parametrize(
    ("stem", "expected"),
    [("jigs12", ("jigs", "jig")), ("reelsu-z3", ("reelsu-z", "reel")),
     ("hpps1", ("hpps", "hornpipe")), ("slip4", ("slip", "slip jig")),
     ("xmas2", ("xmas", "christmas")), ("polkas1", ("polkas", "polkas")), ("tune", ("", ""))],
)
def test_book_and_tune_type(stem: str, expected: tuple[str, str]) -> None:
    assert book_and_tune_type(stem) == expected


def test_folder_source(tmp_path: Path) -> None:
    root = tmp_path / "my_midi"
    write_midi(root / "a.MID")
    write_midi(root / "sub" / "deeper" / "b.midi")
    (root / "notes.txt").write_text("x")
    (root / "sub" / "c.mid.bak").write_text("x")
    pieces = list(iter_pieces({"kind": "folder", "path": root}))
    assert [p.id for p in pieces] == ["my_midi/a", "my_midi/sub/deeper/b"]
    assert pieces[1].tags == {"source": "my_midi", "folder": "sub/deeper"}
    assert pieces[1].group == pieces[1].id
    assert next(iter_pieces({"kind": "folder", "path": root, "name": "mine"})).id == "mine/a"
    with pytest.raises(SourceError):
        list(iter_pieces({"kind": "folder", "path": tmp_path / "missing"}))


@pytest.mark.shared_data
def test_pop909_real(shared_datasets: Path) -> None:
    pieces = pop909_pieces(path=shared_datasets / "pop909",
                           phrases_path=shared_datasets / "pop909-phrases")
    mains = [p for p in pieces if p.tags["version"] == "0"]
    assert (len(pieces), len(mains), len({p.id for p in pieces})) == (2898, 909, 2898)
    assert {p.group for p in pieces} == {p.id for p in mains}
    assert all(p.group == f"pop909/{p.tags['song']}" and p.path.is_file() for p in pieces)
    assert all({"key", "meter", "phrases", "phrases2"} <= set(p.tags) for p in mains)
    assert Counter(p.tags["meter"] for p in mains) == {"2/4": 857, "3/4": 28, "6/8": 23, "9/8": 1}
    for piece in mains:
        assert parse_phrase_labels(piece.tags["phrases"]) and parse_phrase_labels(piece.tags["phrases2"])
    song = shared_datasets / "pop909" / "songs" / "001"
    beats = read_beats(song)
    assert len(beats) > 100 and sum(b.downbeat for b in beats) == sum(b.hyper_downbeat for b in beats) * 2
    first = next(p for p in mains if p.id == "pop909/001")
    assert float(first.tags["downbeat_seconds"]) == pytest.approx(0.0553, abs=1e-4)  # the first (hyper-)downbeat
    assert sum("downbeat_seconds" in p.tags for p in mains) > 900
    assert read_chords(song)[-1].end > 100


@pytest.mark.shared_data
def test_nottingham_real(shared_datasets: Path) -> None:
    root = shared_datasets / "nottingham"
    counts = {}
    for rendering in ("melody", "chords", "full"):
        pieces = nottingham_pieces(path=root, rendering=rendering)
        counts[rendering] = len(pieces)
        assert all(p.tags["tune_type"] and p.tags["book"] and p.path.is_file() for p in pieces)
    assert counts == {"melody": 1034, "chords": 1021, "full": 1034}
    types = Counter(p.tags["tune_type"] for p in nottingham_pieces(path=root))
    assert types == {"reel": 461, "jig": 340, "hornpipe": 65, "waltz": 52, "ashover": 46, "morris": 31,
                     "playford": 15, "christmas": 13, "slip jig": 11}
    assert len(nottingham_pieces(path=root, rendering=["melody", "chords", "full"])) == 3089

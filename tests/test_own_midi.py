"""Issue 15: your own MIDI with the shipped model ``folk-2bar``. Whatever the file, ``reconstruct``, ``interpolate``,
``continue`` and ``encode`` either work or end in one line naming the file and the reason, exit code 2, never a
traceback: files built in code here, and every file of MidiTok's test set (``../shared/datasets``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import symusic
from scores import make_score

from midistruct import cli
from midistruct.generation.pipeline import InputError, MidiStruct
from midistruct.model.pretrained import example_paths

MODEL = "folk-2bar"


@pytest.fixture(scope="module")
def folk() -> MidiStruct:
    return MidiStruct.from_pretrained(MODEL)


@pytest.fixture
def cached(folk, monkeypatch) -> MidiStruct:
    """The CLI's pipeline, loaded once for the module (loading by name is tested in test_pretrained)."""
    monkeypatch.setattr(cli, "_pipeline", lambda args: folk)
    return folk


def _with_meter(score: symusic.Score, num: int, den: int, *, at_bar: int = 0) -> symusic.Score:
    score.time_signatures.append(symusic.TimeSignature(at_bar * 4 * score.tpq, num, den))
    return score


def _many_tracks(n: int) -> symusic.Score:
    """``n`` melodies at once: merged into one stream (the model's tokenizer merges tracks), far too dense."""
    score = make_score(bars=2, seed=0)
    for k in range(1, n):
        track = make_score(bars=2, seed=k).tracks[0]
        track.program = k
        score.tracks.append(track)
    return score


def _drums_only() -> symusic.Score:
    score = make_score(bars=2, drums=True)
    score.tracks = [t for t in score.tracks if t.is_drum]
    return score


def _all_below_the_piano() -> symusic.Score:
    score = make_score(bars=2)
    for note in score.tracks[0].notes:
        note.pitch = 5
    return score


# file name -> (content: a Score, bytes, "dir" or None for no file, the reason the message must give)
BAD = {
    "empty.mid": (b"", "empty file"),
    "notes.txt.mid": (b"these are not notes\n" * 10, "unreadable MIDI: not a MIDI file"),
    "a folder.mid": ("dir", "not a file (a folder)"),
    "missing.mid": (None, "no such file"),
    "drums.mid": (_drums_only(), "drums only"),
    "no notes.mid": (symusic.Score(480), "no notes"),
    "five-eight.mid": (_with_meter(make_score(bars=2), 5, 8), "unsupported meter: 5/8 (the tokenizer reads"),
    "meter change.mid": (_with_meter(make_score(bars=4), 8, 4, at_bar=2),  # and the way to read it anyway
                         '8/4 (the tokenizer reads 1/2, 2/2, 3/2, 4/2, 1/4, 2/4, 3/4, 4/4, 5/4, 6/4, 7/4, 3/8, 6/8, '
                         '9/8, 12/8); read it in a meter it knows with --time-signature 4/4 (Python: '
                         'time_signature="4/4")'),
    "sixteen tracks.mid": (_many_tracks(16), "window 0 (bars 1-2) has"),  # ... tokens; the model reads at most 256
    "too low.mid": (_all_below_the_piano(), "no notes in the tokenizer's pitch range 21-109"),
}


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[Path, str]:
    folder = tmp_path_factory.mktemp("own")
    files = {}
    for name, (content, reason) in BAD.items():
        path = folder / name
        if isinstance(content, symusic.Score):
            content.dump_midi(str(path))
        elif isinstance(content, bytes):
            path.write_bytes(content)
        elif content == "dir":
            path.mkdir()
        files[path] = reason
    return files


def _argv(command: str, path: Path, out: Path) -> list[str]:
    good = example_paths(MODEL)[0]
    return [str(a) for a in {
        "reconstruct": ["reconstruct", MODEL, path, "-o", out],
        "encode": ["encode", MODEL, path, "-o", out / "z.safetensors"],
        "continue": ["continue", MODEL, path, "--bars", 1, "-o", out],
        "interpolate-a": ["interpolate", MODEL, path, good, "--steps", 2, "--no-audio", "-o", out],
        "interpolate-b": ["interpolate", MODEL, good, path, "--steps", 2, "--no-audio", "-o", out],
    }[command]]


def _assert_one_line(rc: int, err: str, path: Path, reason: str) -> None:
    assert rc == 2, f"{path.name}: exit {rc}, stderr {err!r}"
    assert err.count("\n") == 1 and err.startswith("midistruct: error: ") and "Traceback" not in err, err
    assert f"{path}: " in err and reason in err, f"{path.name}: {err!r}"


@pytest.mark.parametrize("command", ["reconstruct", "encode", "continue", "interpolate-a", "interpolate-b"])
def test_every_unusable_file_is_one_line_naming_it_and_the_reason(command, cached, bad_files, tmp_path, capsys):
    for path, reason in bad_files.items():
        rc = cli.main(_argv(command, path, tmp_path))
        _assert_one_line(rc, capsys.readouterr().err, path, reason)
    assert not list(tmp_path.glob("*.mid")), "nothing is written for an unusable file"


def test_a_midi_file_is_read_by_its_content_not_its_name(folk, tmp_path):
    """A MIDI file saved as .txt, .kar or without a suffix is read; text named .mid is refused as not MIDI."""
    for name in ("tune.txt", "tune.kar", "tune"):
        make_score(bars=2, seed=1).dump_midi(str(tmp_path / "x.mid"))
        (tmp_path / "x.mid").rename(tmp_path / name)
        assert len(folk.windows(tmp_path / name)) == 1
    (tmp_path / "abc.mid").write_text("X:1\nK:G\nGABc|\n")
    with pytest.raises(InputError, match="abc.mid: unreadable MIDI: not a MIDI file"):
        folk.windows(tmp_path / "abc.mid")


def test_multitrack_and_meter_changes_work(cached, tmp_path, capsys):
    """Three instruments are merged into the one stream the model reads and reconstruct; a 4/4 -> 6/8 change
    gives each window its meter."""
    three = tmp_path / "three tracks.mid"
    make_score(bars=1, tracks=3).dump_midi(str(three))
    assert cli.main(["reconstruct", MODEL, str(three), "-o", str(tmp_path / "out")]) == 0
    assert symusic.Score(str(tmp_path / "out" / "three tracks.reconstruct.mid")).note_num() > 0
    changing = _with_meter(make_score(bars=3, seed=2), 6, 8, at_bar=2)
    assert cached.encode(changing).time_signatures == ["4/4", "6/8"]


# ---- MidiTok's test files --------------------------------------------------------------------------------------

# What folk-2bar (2-bar windows of at most 256 tokens, tracks merged) cannot read of them, and why; the rest encode.
MIDITOK_REFUSED = {
    "ValueError_Control168.mid": "unreadable MIDI",
    "empty.mid": "no notes",
    "6338816_Etude No. 4.mid": "unsupported meter: 8/4",
    **{name: "the music is too dense for it" for name in (
        "Girls Just Want to Have Fun.mid", "Shut Up.mid", "d8faddb8596fff7abb24d78666f73e4e.mid", "Maestro_10.mid",
        "Maestro_2.mid", "Maestro_5.mid", "Maestro_7.mid", "Maestro_8.mid")},
}


@pytest.mark.shared_data
def test_every_miditok_test_file_encodes_or_is_refused_in_one_line(folk, cached, shared_datasets, tmp_path, capsys):
    """Each file's windows (reading, validation, tokenization, the window limit: all the checks before the model)
    or its one-line refusal through the CLI. 30 MIDI files and 5 ABC tunes (symusic reads ABC)."""
    folder = shared_datasets / "miditok-test-midis"
    files = sorted(p for p in folder.rglob("*") if p.suffix in (".mid", ".abc"))
    assert len(files) == 35, f"expected MidiTok's 30 MIDI and 5 ABC test files in {folder}"
    refused = {}
    for path in files:
        try:
            assert folk.windows(path), path.name
        except InputError:
            refused[path.name] = path
    assert set(refused) == set(MIDITOK_REFUSED)
    for name, path in refused.items():
        rc = cli.main(_argv("reconstruct", path, tmp_path))
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and f"{path}: " in err and MIDITOK_REFUSED[name] in err, err


@pytest.mark.shared_data
def test_a_miditok_multitrack_song_decodes(folk, shared_datasets):
    """A pop song's tracks, merged: its first window goes through the model and back."""
    song = shared_datasets / "miditok-test-midis" / "MIDIs_multitrack" / "Mr. Blue Sky.mid"
    assert folk.decode(folk.encode(song, max_windows=1)).note_num() > 0


def test_time_signature_and_downbeat_put_the_bar_lines_where_they_belong(folk, cached, tmp_path, capsys):
    """A file that says 1/4 and whose music starts a beat late (as POP909's do) reads as the original 4/4 tune
    once given --time-signature 4/4 and --downbeat at that beat."""
    tune = make_score((4, 4), bars=4, seed=5)
    late = tune.copy()
    late.time_signatures = [symusic.TimeSignature(0, 1, 4)]
    for track in late.tracks:
        track.shift_time(tune.tpq, inplace=True)  # one beat late: 0.5 s at 120 qpm
    path = tmp_path / "late.mid"
    late.dump_midi(str(path))
    want = [w.tolist() for w in folk.windows(tune)]
    assert [w.tolist() for w in folk.windows(str(path), time_signature="4/4", downbeat=0.5)] == want
    assert [w.tolist() for w in folk.windows(str(path), time_signature="4/4")] != want
    with pytest.raises(InputError, match="unsupported meter: 5/16"):
        folk.windows(str(path), time_signature="5/16")
    assert cli.main(["reconstruct", MODEL, str(path), "--time-signature", "4/4", "--downbeat", "0.5",
                     "-o", str(tmp_path / "out")]) == 0
    record = (tmp_path / "out" / "generation.json").read_text()
    assert '"time_signature": "4/4"' in record and '"downbeat": 0.5' in record
    assert cli.main(["encode", MODEL, str(path), "--time-signature", "4/4", "-o", str(tmp_path / "z.npz")]) == 0
    capsys.readouterr()

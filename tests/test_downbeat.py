"""``--downbeat auto``: bar lines estimated from the notes (midistruct.tokens.downbeat)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import symusic

from midistruct.config import load_config
from midistruct.tokens import downbeat as db
from midistruct.tokens.encode import PieceEncoder

ROOT = Path(__file__).resolve().parents[1]


def _song(offset: int = 0, *, bars: int = 8, tpq: int = 480, qpm: float = 90.0) -> symusic.Score:
    """A 4/4 piano song played late by ``offset`` ticks: a held bass note on each bar's first beat, a chord on
    beats 1 and 3, a melody of eighths with a long note on the third beat."""
    score = symusic.Score(tpq)
    score.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    score.tempos.append(symusic.Tempo(0, qpm))
    track = symusic.Track(name="piano", program=0)
    for b in range(bars):
        t = b * 4 * tpq + offset
        track.notes.append(symusic.Note(t, 4 * tpq, 36 + b % 3, 90))  # bass, a whole bar
        for beat in (0, 2):
            for pitch in (60, 64, 67):
                track.notes.append(symusic.Note(t + beat * tpq, 2 * tpq, pitch, 70))
        for k in range(4):  # eighths on beats 1-2, a half note on 3
            track.notes.append(symusic.Note(t + k * tpq // 2, tpq // 2, 72 + k, 80))
        track.notes.append(symusic.Note(t + 2 * tpq, 2 * tpq, 76, 80))
    score.tracks.append(track)
    return score


@pytest.mark.parametrize("offset", [0, 137, 480, 1000, 1440 + 40])
def test_the_estimate_finds_where_a_late_song_puts_its_bar_lines(offset):
    assert abs(db.downbeat_tick(_song(offset)) - offset % 1920) <= 480 // (2 * db.BINS_PER_QUARTER)  # half a bin


def test_a_song_without_notes_has_no_estimate_and_is_not_moved():
    score = symusic.Score(480)
    score.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    assert db.downbeat_tick(score) is None and db.estimate_downbeat(score) is None
    from midistruct.tokens.encode import _placed

    assert _placed(score, None, "auto")[1] == 0  # shifted by nothing


def test_auto_tokenizes_as_the_true_downbeat_does():
    """The encoder reads ``downbeat="auto"`` exactly as the annotated seconds of the bar line."""
    enc = PieceEncoder(load_config(None, ["segments.bars=2", "segments.min_notes=0"]))
    song = _song(1000)
    seconds = 1000 / 480 * 60 / 90
    assert enc.tokenize(song, downbeat="auto").tolist() == enc.tokenize(song, downbeat=seconds).tolist()
    assert enc.tokenize(song, downbeat="auto").tolist() != enc.tokenize(song).tolist()
    assert db.estimate_downbeat(song) == pytest.approx(seconds)


def test_seconds_and_ticks_agree_under_a_tempo_change():
    score = symusic.Score(480)
    score.tempos.extend([symusic.Tempo(0, 120.0), symusic.Tempo(960, 60.0)])  # 2 beats at 120, then 60
    for tick in (0, 240, 960, 1200, 5000):
        assert db.tick_at(score, db.seconds_at(score, tick)) == tick
    assert db.seconds_at(score, 1440) == pytest.approx(2.0)


def test_fit_template_puts_the_annotated_downbeat_first():
    rng = np.random.default_rng(0)
    base = np.zeros(96)
    base[[0, 24, 48, 72]] = [4, 1, 2, 1]
    hists, downbeats = [], []
    for _ in range(20):
        d = int(rng.integers(96))
        hists.append(np.roll(base + rng.random(96) * 0.1, d))
        downbeats.append(d)
    template = db.fit_template(hists, downbeats)
    assert int(np.argmax(template)) == 0 and abs(template.sum()) < 1e-9
    with pytest.raises(ValueError):
        db.fit_template(hists, downbeats[:-1])


@pytest.mark.parametrize("quarters", [4.0, 3.0, 2.0, 1.5, 3.0 * 1.5])
def test_every_meter_has_a_template_over_its_bar(quarters):
    template = db.template_for(quarters)
    assert template.shape == (round(quarters * db.BINS_PER_QUARTER),) and abs(template.sum()) < 1e-9
    assert int(np.argmax(template)) == 0  # the bar's first beat weighs most


def test_a_well_barred_waltz_is_left_where_it_is():
    """3/4 with the long note on beat 1 and quavers after: the file's own bar lines win."""
    score = symusic.Score(480)
    score.time_signatures.append(symusic.TimeSignature(0, 3, 4))
    track = symusic.Track(name="melody", program=0)
    for b in range(8):
        t = b * 1440
        track.notes.append(symusic.Note(t, 480, 67, 90))
        for k in range(4):
            track.notes.append(symusic.Note(t + 480 + 240 * k, 240, 69 + k, 80))
    score.tracks.append(track)
    assert db.downbeat_tick(score) == 0


def test_the_cli_takes_auto_or_seconds_and_refuses_the_rest(capsys):
    from midistruct.cli import _downbeat, main

    assert _downbeat("auto") == "auto" and _downbeat("2.5") == 2.5
    for bad in ("-1", "soon", "nan"):
        with pytest.raises(Exception, match="seconds"):
            _downbeat(bad)
    with pytest.raises(SystemExit) as err:
        main(["reconstruct", "folk-2bar", "x.mid", "--downbeat", "soon"])
    assert err.value.code == 2 and "'soon'" in capsys.readouterr().err


def test_the_pipeline_refuses_a_downbeat_that_is_neither(checkpoint, tmp_path):
    from midistruct.generation.pipeline import InputError, MidiStruct

    path = tmp_path / "late.mid"
    _song(1000).dump_midi(str(path))
    ms = MidiStruct.from_pretrained(checkpoint, device="cpu")
    with pytest.raises(InputError, match="'auto'"):
        ms.windows(path, downbeat="sometime")
    assert ms.windows(path, downbeat="auto")[0].tolist() == ms.windows(path, downbeat=1000 / 480 * 60 / 90)[0].tolist()


def test_a_library_read_with_auto_bars_records_it_and_is_not_reused_without(tmp_path):
    from midistruct.library.features import histogram_features
    from midistruct.library.store import Library, embed_folder

    folder = tmp_path / "songs"
    folder.mkdir()
    _song(0).dump_midi(str(folder / "on.mid"))
    _song(1000).dump_midi(str(folder / "late.mid"))
    auto = embed_folder(folder, histogram_features(downbeat="auto"), model="none", features="histogram",
                        downbeat="auto", progress=False)
    on, late = (auto.piece_bars(auto.paths.index(name)) for name in ("on.mid", "late.mid"))
    assert len(late) == len(on) and np.allclose(late, on)  # the late song's bars hold what its own bars hold
    plain = embed_folder(folder, histogram_features(), model="none", features="histogram", progress=False)
    assert not np.allclose(plain.piece_bars(plain.paths.index("late.mid"))[:8], on[:8])
    auto.save(tmp_path / "lib.npz")
    loaded = Library.load(tmp_path / "lib.npz")
    assert loaded.downbeat == "auto"
    again = embed_folder(folder, histogram_features(), model="none", features="histogram", previous=loaded,
                         progress=False)
    assert again.encoded == 2  # read another way: nothing reused
    with pytest.raises(Exception, match="file by file"):
        histogram_features(downbeat=2.0)


def test_embed_takes_downbeat_auto_and_keeps_it(tmp_path):
    from midistruct.cli import main
    from midistruct.library.store import Library

    folder = tmp_path / "songs"
    folder.mkdir()
    _song(1000).dump_midi(str(folder / "late.mid"))
    _song(0).dump_midi(str(folder / "on.mid"))
    assert main(["embed", str(folder), "-o", str(tmp_path / "lib.npz"), "--downbeat", "auto", "--quiet"]) == 0
    assert Library.load(tmp_path / "lib.npz").downbeat == "auto"


@pytest.mark.shared_data
def test_on_pop909s_held_out_songs_the_beat_is_found_and_nottingham_stays(shared_datasets):
    """docs/scripts/downbeat.py eval: the estimate's beat grid on POP909's valid and test songs (the files' own:
    0.16), its bar lines (the files' own: 0.02), and Nottingham's well-barred tunes left where they are."""
    out = subprocess.run([sys.executable, str(ROOT / "docs/scripts/downbeat.py"), "eval", "--nottingham"],
                         capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    assert result["songs"] >= 80
    assert result["auto"]["beat"] >= 0.95 and result["as_is"]["beat"] < 0.3
    assert result["auto"]["bar"] >= 0.5 and result["as_is"]["bar"] < 0.1
    assert result["nottingham"]["left_where_they_are"] >= 0.95


@pytest.mark.shared_data
def test_the_shipped_template_is_what_the_script_fits(shared_datasets, tmp_path):
    out = tmp_path / "template.json"
    subprocess.run([sys.executable, str(ROOT / "docs/scripts/downbeat.py"), "fit", "--out", str(out)],
                   capture_output=True, text=True, check=True)
    assert json.loads(out.read_text()) == json.loads(db.TEMPLATE_FILE.read_text())


def test_prepare_reads_a_folder_with_downbeat_auto(tmp_path):
    """A folder source with ``downbeat: auto`` tokenizes a late song as its true bar lines would; a tags file's
    own seconds win; anything but auto is refused."""
    from midistruct.corpus import SourceError
    from midistruct.corpus.folder import iter_folder
    from midistruct.tokens.encode import task_of

    folder = tmp_path / "songs"
    folder.mkdir()
    _song(1000).dump_midi(str(folder / "late.mid"))
    _song(0).dump_midi(str(folder / "on.mid"))
    (tmp_path / "tags.csv").write_text("path,downbeat_seconds\non.mid,0\n")
    pieces = {p.path.name: p for p in iter_folder({"path": str(folder), "downbeat": "auto",
                                                    "tags": str(tmp_path / "tags.csv")})}
    assert task_of(pieces["late.mid"].tags) == (None, "auto") and task_of(pieces["on.mid"].tags) == (None, 0.0)
    enc = PieceEncoder(load_config(None, ["segments.bars=2", "segments.min_notes=0"]))
    late = enc.encode_file(pieces["late.mid"].path, downbeat=task_of(pieces["late.mid"].tags)[1])
    assert late.ids.tolist() == enc.encode_file(folder / "late.mid", downbeat=1000 / 480 * 60 / 90).ids.tolist()
    with pytest.raises(SourceError, match="'auto' or nothing"):
        list(iter_folder({"path": str(folder), "downbeat": 2.0}))


def test_reconstruct_records_where_auto_put_the_bar_lines(checkpoint, tmp_path):
    from midistruct.cli import main

    path = tmp_path / "late.mid"
    _song(1000).dump_midi(str(path))
    assert main(["reconstruct", str(checkpoint), str(path), "--downbeat", "auto", "-o", str(tmp_path / "out"),
                 "--device", "cpu"]) == 0
    record = json.loads((tmp_path / "out" / "generation.json").read_text())
    assert record["downbeat"] == "auto"
    assert record["downbeat_estimated"] == {str(path): pytest.approx(1000 / 480 * 60 / 90, abs=1e-3)}

"""Piano-roll PNGs and audio of scores built in code; FluidSynth via a fake executable; the CLI's --plot/--audio."""

from __future__ import annotations

import json
import struct
import sys
import wave

import numpy as np
import pytest
import symusic
from scores import TPQ, make_score

from midistruct.render import audio as audio_mod
from midistruct.render import pianoroll_figure, pianoroll_grid, plot_pianorolls, synthesize, write_wav
from midistruct.render.outputs import common_stem

RATE = 8000
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _score(notes, *, meters=((0, 3, 4),), tempos=((0, 120.0),), drums=()) -> symusic.Score:
    """A score from ``(onset, duration, pitch)`` in quarter notes; meters/tempos as ``(quarter, ...)``."""
    score = symusic.Score(TPQ)
    for q, num, den in meters:
        score.time_signatures.append(symusic.TimeSignature(int(q * TPQ), num, den))
    for q, bpm in tempos:
        score.tempos.append(symusic.Tempo(int(q * TPQ), bpm))
    for is_drum, events in ((False, notes), (True, drums)):
        if events:
            track = symusic.Track(name="drums" if is_drum else "melody", program=0, is_drum=is_drum)
            for onset, duration, pitch in events:
                track.notes.append(symusic.Note(int(onset * TPQ), int(duration * TPQ), pitch, 100))
            score.tracks.append(track)
    return score


# 3/4 for two bars, then 4/4; 120 bpm, then 60 bpm from quarter 2 on. Notes in quarters 0-2 and 6-8:
# in seconds 0-1 s, a rest from 1 s to 5 s, then 5-7 s.
GAPPED = dict(notes=[(0, 1, 60), (1, 1, 64), (6, 2, 67)], meters=((0, 3, 4), (6, 4, 4)),
              tempos=((0, 120.0), (2, 60.0)))


def _notes(ax):
    return [p for c in ax.collections if c.get_gid() == "notes" for p in c.get_paths()]


def _bar_xs(ax):
    return [float(seg[0][0]) for c in ax.collections if c.get_gid() == "bar_lines" for seg in c.get_segments()]


@pytest.fixture
def no_fluidsynth(tmp_path, monkeypatch):
    """PATH without fluidsynth and no soundfont variable: the plain-synthesis fallback runs."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv(audio_mod.SOUNDFONT_ENV, raising=False)


def test_figure_has_a_panel_per_score_and_a_rectangle_per_note():
    scores = [make_score((4, 4), bars=2, seed=1, tracks=2, drums=True), _score(**GAPPED), symusic.Score(TPQ)]
    fig = pianoroll_figure(scores, titles=["two tracks", "gapped", "empty"])
    assert len(fig.axes) == 3
    assert [len(_notes(ax)) for ax in fig.axes] == [s.note_num() for s in scores] and scores[0].note_num() > 20
    assert [ax.get_title(loc="left") for ax in fig.axes] == ["two tracks", "gapped", "empty"]
    assert len({ax.get_xlim() for ax in fig.axes}) == 1 and len({ax.get_ylim() for ax in fig.axes}) == 1
    low, high = fig.axes[0].get_ylim()
    pitches = [n.pitch for s in scores for t in s.tracks for n in t.notes]
    assert low < min(pitches) and high > max(pitches) + 1  # common range, padded
    first = _notes(fig.axes[1])[0].vertices[:4]  # the note (0, 1, 60): quarters 0..1, pitch 60
    assert np.allclose(first[:, 0], [0, 1, 1, 0]) and np.allclose(first[:, 1], [60, 60, 60.9, 60.9])
    assert fig.axes[1].get_legend() is None and fig.axes[0].get_legend() is not None  # legend when >1 track


def test_bar_lines_follow_the_time_signatures():
    fig = pianoroll_figure([_score(**GAPPED)])
    assert _bar_xs(fig.axes[0]) == [0, 3, 6, 10]  # 3/4, 3/4, then 4/4; up to the first line past the last note
    assert fig.axes[0].get_xlim() == (0, 10)
    fig = pianoroll_figure([_score(**GAPPED), make_score((4, 4), bars=2)], bars=4)
    assert _bar_xs(fig.axes[0]) == [0, 3, 6, 10, 14] and _bar_xs(fig.axes[1]) == [0, 4, 8, 12, 16]


def test_grid_lays_scores_out_by_row_and_column():
    rows = [[make_score((4, 4), bars=2, seed=1), _score(**GAPPED), symusic.Score(TPQ)],
            [_score([(0, 2, 48)]), make_score((3, 4), bars=1, seed=2), make_score((4, 4), bars=1, seed=3)]]
    fig = pianoroll_grid(rows, titles=[["a", "b", "c"], ["d", "e", "f"]], bars=2)
    assert len(fig.axes) == 6
    flat = [s for row in rows for s in row]
    assert [len(_notes(ax)) for ax in fig.axes] == [s.note_num() for s in flat]  # row-major order
    assert [ax.get_title(loc="left") for ax in fig.axes] == list("abcdef")
    assert len({ax.get_xlim() for ax in fig.axes}) == 1 and len({ax.get_ylim() for ax in fig.axes}) == 1
    assert _bar_xs(fig.axes[1]) == [0, 3, 6] and _bar_xs(fig.axes[0]) == [0, 4, 8]  # 2 bars, each its own meter
    assert pianoroll_grid([[symusic.Score(TPQ)]]).axes[0].get_title(loc="left") == "0, 0"  # default titles
    with pytest.raises(ValueError, match="equal"):
        pianoroll_grid([[rows[0][0]], rows[1]])
    with pytest.raises(ValueError, match="titles"):
        pianoroll_grid(rows, titles=[["a", "b", "c"]])


def test_plot_pianorolls_writes_a_png(tmp_path):
    path = plot_pianorolls([_score(**GAPPED), symusic.Score(TPQ)], tmp_path / "roll.png", titles=["a", "b"])
    data = path.read_bytes()
    assert path == tmp_path / "roll.png" and data[:8] == PNG_MAGIC and len(data) > 1000
    width, height = struct.unpack(">II", data[16:24])  # IHDR
    assert width > 500 and height > 200
    with pytest.raises(ValueError, match="titles"):
        pianoroll_figure([symusic.Score(TPQ)], titles=["a", "b"])


def test_plain_synthesis_follows_the_tempo_map(no_fluidsynth):
    audio, backend = synthesize(_score(**GAPPED, drums=[(7, 0.25, 36)]), sample_rate=RATE)
    assert backend == "plain synthesis (no fluidsynth/soundfont found)"
    assert audio.dtype == np.float32 and audio.ndim == 1 and np.abs(audio).max() <= 1.0
    tail = (audio_mod.RELEASE_S + audio_mod.TAIL_S) * RATE
    assert 7.0 * RATE <= len(audio) <= 7.0 * RATE + tail + 1  # the last note ends at 7 s

    def rms(a, b):
        return float(np.sqrt(np.mean(audio[int(a * RATE):int(b * RATE)] ** 2)))

    assert rms(0.05, 0.45) > 0.05 and rms(5.1, 6.9) > 0.05  # notes sound where they play
    assert np.abs(audio[int(1.06 * RATE):int(4.99 * RATE)]).max() < 1e-6  # and the rest is silent
    spectrum = np.abs(np.fft.rfft(audio[: RATE // 2]))  # first note, C4
    assert abs(np.argmax(spectrum) * 2 - 261.6) < 3  # bins of 2 Hz


def test_empty_score_gives_silence_and_write_wav_reads_back(no_fluidsynth, tmp_path):
    audio, _ = synthesize(symusic.Score(TPQ), sample_rate=RATE)
    assert 0 < len(audio) <= RATE and not np.any(audio)
    backend = write_wav(_score(**GAPPED), tmp_path / "x.wav", sample_rate=RATE)
    with wave.open(str(tmp_path / "x.wav"), "rb") as f:
        assert (f.getnchannels(), f.getsampwidth(), f.getframerate()) == (1, 2, RATE)
        pcm = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2")
    expected, _ = synthesize(_score(**GAPPED), sample_rate=RATE)
    assert backend.startswith("plain synthesis") and np.allclose(pcm / 32767, expected, atol=1e-4)


FAKE_FLUIDSYNTH = """#!{python}
import math, os, struct, sys, wave
args = sys.argv[1:]
open(os.path.join({log!r}), "w").write("\\n".join(args + [str(os.path.getsize(args[-1]))]))
mode = os.environ.get("FAKE_MODE", "wav")
if mode == "fail":
    sys.exit("fluidsynth: error: cannot load soundfont")
out, rate = args[args.index("-F") + 1], int(args[args.index("-r") + 1])
frames = b"".join(struct.pack("<hh", v, v) for v in
                  (int(16000 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(rate // 2)))
if mode == "raw":
    open(out, "wb").write(frames)
else:
    with wave.open(out, "wb") as w:
        w.setnchannels(2); w.setsampwidth(2); w.setframerate(rate); w.writeframes(frames)
"""


@pytest.fixture
def fake_fluidsynth(tmp_path, monkeypatch):
    """A ``fluidsynth`` on PATH that writes half a second of 440 Hz stereo; its argv goes to ``argv.txt``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "fluidsynth"
    exe.write_text(FAKE_FLUIDSYNTH.format(python=sys.executable, log=str(tmp_path / "argv.txt")))
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv(audio_mod.SOUNDFONT_ENV, raising=False)
    sf2 = tmp_path / "Fake_GM.sf2"
    sf2.write_bytes(b"RIFF....sfbk")
    return sf2


@pytest.mark.parametrize("mode", ["wav", "raw"])
def test_fluidsynth_backend_with_a_fake_executable(fake_fluidsynth, tmp_path, monkeypatch, mode):
    monkeypatch.setenv("FAKE_MODE", mode)
    audio, backend = synthesize(_score(**GAPPED), sample_rate=RATE, soundfont=fake_fluidsynth)
    assert backend == "fluidsynth (Fake_GM.sf2)"
    assert audio.dtype == np.float32 and len(audio) == RATE // 2
    assert abs(float(np.abs(audio).max()) - 16000 / 32768) < 0.01
    argv = (tmp_path / "argv.txt").read_text().splitlines()
    assert argv[:7] == ["-ni", "-g", "1.0", "-F", argv[4], "-r", str(RATE)] and argv[4].endswith(".wav")
    assert argv[7] == str(fake_fluidsynth) and argv[8].endswith(".mid") and int(argv[9]) > 0  # MIDI written


def test_soundfont_from_the_environment_and_failures(fake_fluidsynth, tmp_path, monkeypatch):
    monkeypatch.setenv(audio_mod.SOUNDFONT_ENV, str(fake_fluidsynth))
    assert synthesize(_score(**GAPPED), sample_rate=RATE)[1] == "fluidsynth (Fake_GM.sf2)"
    monkeypatch.setenv("FAKE_MODE", "fail")
    audio, backend = synthesize(_score(**GAPPED), sample_rate=RATE)
    assert backend.startswith("plain synthesis (fluidsynth failed:") and "cannot load soundfont" in backend
    assert len(audio) >= 7 * RATE
    with pytest.raises(FileNotFoundError, match="soundfont"):
        synthesize(_score(**GAPPED), soundfont=tmp_path / "missing.sf2")
    monkeypatch.setenv(audio_mod.SOUNDFONT_ENV, str(tmp_path / "missing.sf2"))
    with pytest.raises(FileNotFoundError, match="missing.sf2"):
        synthesize(_score(**GAPPED))


def test_common_stem():
    assert common_stem(["a_to_b.slerp.00", "a_to_b.slerp.01"], default="x") == "a_to_b.slerp"
    assert common_stem(["a.reconstruct"], default="x") == "a.reconstruct"
    assert common_stem(["a.reconstruct", "b.reconstruct"], default="reconstruct") == "reconstruct"


def _png_height(path) -> int:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    return struct.unpack(">II", data[16:24])[1]


def test_cli_plot_and_audio(checkpoint, tmp_path, no_fluidsynth, capsys):
    from midistruct.cli import main

    a, b = tmp_path / "a.mid", tmp_path / "b.mid"
    make_score((4, 4), bars=2, seed=1).dump_midi(str(a))
    make_score((3, 4), bars=2, seed=2).dump_midi(str(b))
    out = tmp_path / "out"
    assert main(["interpolate", str(checkpoint), str(a), str(b), "--steps", "3", "--plot", "--audio",
                 "-o", str(out)]) == 0
    assert "plain synthesis" in capsys.readouterr().out
    record = json.loads((out / "generation.json").read_text())
    names = [f"a_to_b.slerp.0{i}" for i in range(3)]
    assert record["outputs"] == [f"{n}.mid" for n in names] and record["plot"] == "a_to_b.slerp.png"
    assert record["audio"] == {"backend": "plain synthesis (no fluidsynth/soundfont found)",
                               "files": [f"{n}.wav" for n in names]}
    for name in names:
        seconds = symusic.Score(str(out / f"{name}.mid")).to("second").end()
        with wave.open(str(out / f"{name}.wav"), "rb") as f:
            assert f.getnchannels() == 1 and f.getnframes() >= seconds * f.getframerate() > 0
    assert main(["reconstruct", str(checkpoint), str(a), "--plot", "-o", str(out / "one")]) == 0
    record = json.loads((out / "one" / "generation.json").read_text())
    assert record["plot"] == "a.reconstruct.png" and "audio" not in record
    assert _png_height(out / "a_to_b.slerp.png") > _png_height(out / "one" / "a.reconstruct.png")  # 3 panels vs 1
    assert not list((out / "one").glob("*.wav"))

"""Piano-roll PNGs and audio of scores built in code: the SF2 sampler (on a soundfont built here and on the
General MIDI one pretty_midi ships), FluidSynth via a fake executable, plain synthesis; the HTML page;
the CLI's --plot/--audio and interpolate's page; one real file (../shared/datasets)."""

from __future__ import annotations

import base64
import json
import re
import struct
import sys
import time
import wave
from html.parser import HTMLParser

import numpy as np
import pytest
import symusic
from scores import TPQ, make_score

from midistruct.errors import MidiStructError
from midistruct.render import audio as audio_mod
from midistruct.render import pianoroll_figure, pianoroll_grid, plot_pianorolls, synthesize, write_page, write_wav
from midistruct.render.outputs import common_stem, render_outputs, write_outputs_page
from midistruct.render.soundfont import MAX_RELEASE_S, SoundFont, SoundFontError

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
def no_soundfont(tmp_path, monkeypatch):
    """No soundfont anywhere (variable, pretty_midi's, system paths) and no fluidsynth: plain synthesis runs."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv(audio_mod.SOUNDFONT_ENV, raising=False)
    monkeypatch.setattr(audio_mod, "bundled_soundfont", lambda: None)
    monkeypatch.setattr(audio_mod, "SOUNDFONT_PATHS", ())


@pytest.fixture
def bundled_soundfont(monkeypatch):
    """pretty_midi's TimGM6mb.sf2, found by default (no variable set)."""
    monkeypatch.delenv(audio_mod.SOUNDFONT_ENV, raising=False)
    path = audio_mod.bundled_soundfont()
    assert path is not None and path.name == "TimGM6mb.sf2", "pretty_midi's wheel ships TimGM6mb.sf2"
    return path


def _chunk(cid: bytes, data: bytes) -> bytes:
    return cid + struct.pack("<I", len(data)) + data + b"\0" * (len(data) & 1)


def _tiny_sf2(path, *, root=69, freq=440.0, version=2, gens=()):
    """A SoundFont 2 file: preset 0 of bank 0 -> one instrument -> one second of a looped sine at ``freq``
    (sampled at RATE) whose root key is ``root``; a 31 ms release (-6000 timecents) unless ``gens`` says."""
    sine = np.round(16000 * np.sin(2 * np.pi * freq * np.arange(RATE) / RATE)).astype("<i2")
    igens = [(38, -6000 & 0xFFFF), *gens, (54, 1), (53, 0)]  # release, ..., loop, sample 0
    pdta = {
        b"phdr": struct.pack("<20sHHHIII", b"sine", 0, 0, 0, 0, 0, 0) + struct.pack("<20sHHHIII", b"EOP", 0, 0, 1, 0, 0, 0),
        b"pbag": struct.pack("<HHHH", 0, 0, 1, 0), b"pmod": bytes(10),
        b"pgen": struct.pack("<HHHH", 41, 0, 0, 0),  # instrument 0
        b"inst": struct.pack("<20sH", b"sine", 0) + struct.pack("<20sH", b"EOI", 1),
        b"ibag": struct.pack("<HHHH", 0, 0, len(igens), 0), b"imod": bytes(10),
        b"igen": b"".join(struct.pack("<HH", op, amount) for op, amount in igens) + bytes(4),
        b"shdr": struct.pack("<20s5IBbHH", b"sine", 0, RATE, 0, RATE, RATE, root, 0, 0, 1) + bytes(46),
    }
    body = (b"sfbk" + _chunk(b"LIST", b"INFO" + _chunk(b"ifil", struct.pack("<HH", version, 1)))
            + _chunk(b"LIST", b"sdta" + _chunk(b"smpl", sine.tobytes() + bytes(92)))
            + _chunk(b"LIST", b"pdta" + b"".join(_chunk(cid, data) for cid, data in pdta.items())))
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def _peak_hz(audio, start_s: float, stop_s: float, rate: int = RATE) -> float:
    """The strongest frequency of ``audio`` between two times (1/(stop - start) Hz bins)."""
    seg = audio[int(start_s * rate):int(stop_s * rate)]
    return float(np.argmax(np.abs(np.fft.rfft(seg)))) * rate / len(seg)


def _rms(audio, start_s: float, stop_s: float, rate: int = RATE) -> float:
    return float(np.sqrt(np.mean(audio[int(start_s * rate):int(stop_s * rate)] ** 2)))


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


def test_plain_synthesis_follows_the_tempo_map(no_soundfont):
    audio, backend = synthesize(_score(**GAPPED, drums=[(7, 0.25, 36)]), sample_rate=RATE)
    assert backend == "plain synthesis (no soundfont found)"
    assert audio.dtype == np.float32 and audio.ndim == 1 and abs(np.abs(audio).max() - audio_mod.PEAK) < 1e-6
    tail = (audio_mod.RELEASE_S + audio_mod.TAIL_S) * RATE
    assert 7.0 * RATE <= len(audio) <= 7.0 * RATE + tail + 1  # the last note ends at 7 s

    def rms(a, b):
        return float(np.sqrt(np.mean(audio[int(a * RATE):int(b * RATE)] ** 2)))

    assert rms(0.05, 0.45) > 0.05 and rms(5.1, 6.9) > 0.05  # notes sound where they play
    assert np.abs(audio[int(1.06 * RATE):int(4.99 * RATE)]).max() < 1e-6  # and the rest is silent
    spectrum = np.abs(np.fft.rfft(audio[: RATE // 2]))  # first note, C4
    assert abs(np.argmax(spectrum) * 2 - 261.6) < 3  # bins of 2 Hz


def test_empty_score_gives_silence_and_write_wav_reads_back(no_soundfont, tmp_path):
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
    """A ``fluidsynth`` on PATH that writes half a second of 440 Hz stereo; its argv goes to ``argv.txt``.

    Returns a soundfont the sampler cannot read (a bare RIFF header), so synthesis falls through to it."""
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
    assert backend == ("fluidsynth (Fake_GM.sf2; the sampler could not read it: soundfont Fake_GM.sf2: "
                       "damaged (no ifil, smpl, phdr, pbag, pgen, inst, ibag, igen, shdr chunk))")
    assert audio.dtype == np.float32 and len(audio) == RATE // 2  # fluidsynth's own length, no tail added
    assert abs(float(np.abs(audio).max()) - audio_mod.PEAK) < 1e-4  # normalised like every backend
    assert abs(_peak_hz(audio, 0, 0.5) - 440) < 3
    argv = (tmp_path / "argv.txt").read_text().splitlines()
    assert argv[:7] == ["-ni", "-g", "1.0", "-F", argv[4], "-r", str(RATE)] and argv[4].endswith(".wav")
    assert argv[7] == str(fake_fluidsynth) and argv[8].endswith(".mid") and int(argv[9]) > 0  # MIDI written


def test_soundfont_from_the_environment_and_failures(fake_fluidsynth, tmp_path, monkeypatch):
    monkeypatch.setenv(audio_mod.SOUNDFONT_ENV, str(fake_fluidsynth))
    assert synthesize(_score(**GAPPED), sample_rate=RATE)[1].startswith("fluidsynth (Fake_GM.sf2; the sampler")
    monkeypatch.setenv("FAKE_MODE", "fail")
    audio, backend = synthesize(_score(**GAPPED), sample_rate=RATE)
    assert backend.startswith("plain synthesis (Fake_GM.sf2: the sampler could not read it: ")
    assert backend.endswith("; fluidsynth failed: exit 1: fluidsynth: error: cannot load soundfont)")
    assert len(audio) >= 7 * RATE
    with pytest.raises(FileNotFoundError, match="soundfont"):
        synthesize(_score(**GAPPED), soundfont=tmp_path / "missing.sf2")
    monkeypatch.setenv(audio_mod.SOUNDFONT_ENV, str(tmp_path / "missing.sf2"))
    with pytest.raises(FileNotFoundError, match="missing.sf2"):
        synthesize(_score(**GAPPED))


def test_sampler_plays_a_looped_sample_at_each_key_with_its_envelope(tmp_path):
    sf = SoundFont(_tiny_sf2(tmp_path / "sine.sf2"))
    # A4 (the root), A5, A3 for 0.5 s each at 120 bpm, one second apart; the last one at velocity 64
    score = _score([(0, 1, 69), (2, 1, 81), (4, 1, 57)])
    score.tracks[0].notes[2].velocity = 64
    audio = sf.render(score, sample_rate=RATE)
    assert audio.dtype == np.float32 and 2.5 * RATE < len(audio) < 2.7 * RATE  # 2.5 s + 0.6 x 31 ms release
    assert [round(_peak_hz(audio, t + 0.05, t + 0.45)) for t in (0, 1, 2)] == [440, 880, 220]  # key - root
    top = 16000 / 32768  # the sample's peak; no attenuation, velocity scales by 40 log10(v/127) dB
    assert abs(np.abs(audio[: RATE // 2]).max() - top * (100 / 127) ** 2) < 0.01
    assert abs(np.abs(audio[2 * RATE:int(2.5 * RATE)]).max() - top * (64 / 127) ** 2) < 0.01
    assert np.abs(audio[int(0.6 * RATE):RATE]).max() < 1e-3  # released: silent 0.1 s after note-off


def test_sampler_tuning_key_ranges_and_the_sustain_pedal(tmp_path):
    # coarse tune +12 and a key range of 60..72: A4 sounds an octave up, A5 (out of range) is silent
    sf = SoundFont(_tiny_sf2(tmp_path / "tuned.sf2", gens=[(51, 12), (43, 60 | 72 << 8)]))
    audio = sf.render(_score([(0, 1, 69), (2, 1, 81)]), sample_rate=RATE)
    assert round(_peak_hz(audio, 0.05, 0.45)) == 880 and len(audio) < 0.6 * RATE  # no voice for A5
    pedalled = _score([(0, 1, 69)])
    pedalled.tracks[0].pedals.append(symusic.Pedal(0, 4 * TPQ))  # pedal down for 2 s
    sf = SoundFont(_tiny_sf2(tmp_path / "sine.sf2"))
    held = sf.render(pedalled, sample_rate=RATE)
    assert _rms(held, 1.5, 1.9) > 0.2  # sounds until the pedal lifts, looping past the sample's one second
    assert 2.0 * RATE < len(held) < 2.1 * RATE  # then released (31 ms)


def test_sampler_refuses_what_it_cannot_read(tmp_path):
    with pytest.raises(SoundFontError, match="SF3"):
        SoundFont(_tiny_sf2(tmp_path / "x.sf3", version=3))
    (tmp_path / "bad.sf2").write_bytes(b"RIFF\0\0\0\0WAVE")
    with pytest.raises(SoundFontError, match="bad.sf2: not a SoundFont 2 file"):
        SoundFont(tmp_path / "bad.sf2")
    assert issubclass(SoundFontError, MidiStructError)  # the CLI reports it as one line


def test_the_general_midi_soundfont_is_played_by_default_and_in_tune(bundled_soundfont, tmp_path):
    # piano (program 0) C4 then a flute (73) A4 0.5 s later: the sampler with TimGM6mb.sf2, both in tune
    score = _score([(0, 1, 60)], tempos=((0, 120.0),))
    flute = symusic.Track(name="flute", program=73)
    flute.notes.append(symusic.Note(2 * TPQ, 2 * TPQ, 69, 100))
    score.tracks.append(flute)
    audio, backend = synthesize(score, sample_rate=16000)
    assert backend == "soundfont sampler (TimGM6mb.sf2)"
    assert 2.0 * 16000 <= len(audio) <= (2.0 + MAX_RELEASE_S + audio_mod.TAIL_S) * 16000  # flute ends at 2 s
    assert abs(np.abs(audio).max() - audio_mod.PEAK) < 1e-4 and _rms(audio, 0.02, 0.45, 16000) > 0.05
    assert _rms(audio, 1.1, 1.9, 16000) > 0.05  # the flute sounds while held
    piano = audio[: 16000 // 2] * np.hanning(16000 // 2)  # C4: strongest partial a harmonic of 261.6 Hz
    partial = np.argmax(np.abs(np.fft.rfft(piano))) * 2
    assert abs(partial / 261.63 - round(partial / 261.63)) < 0.03
    assert abs(_peak_hz(audio, 1.1, 1.9, 16000) - 440) < 3  # the flute's A4
    # the same soundfont named explicitly, and through the variable
    assert synthesize(score, sample_rate=16000, soundfont=bundled_soundfont)[1] == "soundfont sampler (TimGM6mb.sf2)"
    sf = _tiny_sf2(tmp_path / "Mine.sf2")
    assert synthesize(score, sample_rate=RATE, soundfont=sf)[1] == "soundfont sampler (Mine.sf2)"


def test_without_the_soundfont_the_fallbacks_say_why(monkeypatch, no_soundfont, fake_fluidsynth):
    # fake_fluidsynth put a fluidsynth on PATH after no_soundfont emptied it: still no soundfont anywhere
    audio, backend = synthesize(_score(**GAPPED), sample_rate=RATE)
    assert backend == "plain synthesis (no soundfont found)" and len(audio) >= 7 * RATE
    monkeypatch.setattr(audio_mod, "bundled_soundfont", lambda: fake_fluidsynth)  # one the sampler cannot read
    assert synthesize(_score(**GAPPED), sample_rate=RATE)[1].startswith("fluidsynth (Fake_GM.sf2; the sampler ")
    monkeypatch.setenv("PATH", "")
    backend = synthesize(_score(**GAPPED), sample_rate=RATE)[1]
    assert backend.startswith("plain synthesis (Fake_GM.sf2: the sampler could not read it:")
    assert backend.endswith("; no fluidsynth)")


@pytest.mark.shared_data
def test_a_real_piece_sounds_throughout(shared_datasets, bundled_soundfont):
    path = shared_datasets / "miditok-test-midis" / "MIDIs_multitrack" / "Funkytown.mid"  # drums, bass, keys
    score = symusic.Score(str(path))
    started = time.perf_counter()
    audio, backend = synthesize(score, sample_rate=22050)
    seconds = time.perf_counter() - started
    assert backend == "soundfont sampler (TimGM6mb.sf2)"
    notes = [n for t in score.to("second").tracks for n in t.notes]
    first, last = min(n.time for n in notes), max(n.time + n.duration for n in notes)
    assert last <= len(audio) / 22050 <= last + MAX_RELEASE_S + audio_mod.TAIL_S + 0.01
    assert first < 1 and np.abs(audio).max() <= 1.0
    onsets = sorted({int(n.time) for n in notes})  # every second with an onset is heard
    assert all(_rms(audio, t, t + 1, 22050) > 0.01 for t in onsets), "a second with notes is silent"
    assert seconds < 60, f"{seconds:.1f} s to render {last:.0f} s of music"


def _png_and_audio(page: str):
    """The page's <img> and <audio> sources and <a> targets, parsed."""
    found = {"img": [], "audio": [], "a": []}

    class Parser(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag in found:
                found[tag].append(dict(attrs).get("src" if tag != "a" else "href"))

    Parser().feed(page)
    return found


def test_the_page_embeds_every_piano_roll_and_recording(no_soundfont, tmp_path):
    scores = {f"x.{i:02d}": make_score((4, 4), bars=1, seed=i) for i in range(3)}
    for name, score in scores.items():
        score.dump_midi(str(tmp_path / f"{name}.mid"))
    render_outputs(scores, tmp_path, audio=True, sample_rate=RATE)
    page = write_outputs_page(list(scores), tmp_path, title="A <&> B", titles=["one", "two", "three"],
                              notes=["audio: plain synthesis"])
    text = page.read_text()
    assert page == tmp_path / "index.html" and "<title>A &lt;&amp;&gt; B</title>" in text
    found = _png_and_audio(text)
    assert len(found["img"]) == len(found["audio"]) == 3 and found["a"] == [f"x.{i:02d}.mid" for i in range(3)]
    for i, (img, snd) in enumerate(zip(found["img"], found["audio"])):
        assert img.startswith("data:image/png;base64,") and snd.startswith("data:audio/wav;base64,")
        assert base64.b64decode(img.split(",", 1)[1])[:8] == PNG_MAGIC
        assert base64.b64decode(snd.split(",", 1)[1]) == (tmp_path / f"x.{i:02d}.wav").read_bytes()
    assert not re.search(r"https?://", text) and "<script" not in text  # nothing fetched, nothing run
    assert [line.strip() for line in re.findall(r"<h2>(.*?)</h2>", text)] == ["one", "two", "three"]
    # a Score is written beside the page; PNG bytes, files and figures are embedded as given; no WAV: no player
    png = plot_pianorolls([scores["x.00"]], tmp_path / "roll.png")
    write_page([("piece 1", scores["x.01"], png, None), ("piece 2", tmp_path / "x.00.mid", png.read_bytes(), None),
                ("piece 3", tmp_path / "x.02.mid", pianoroll_figure([scores["x.02"]]), None)],
               tmp_path / "other.html", title="t")
    found = _png_and_audio((tmp_path / "other.html").read_text())
    assert found["audio"] == [] and len(found["img"]) == 3 and found["a"] == ["piece_1.mid", "x.00.mid", "x.02.mid"]
    assert symusic.Score(str(tmp_path / "piece_1.mid")).note_num() == scores["x.01"].note_num()
    assert base64.b64decode(found["img"][0].split(",", 1)[1]) == png.read_bytes()


def test_common_stem():
    assert common_stem(["a_to_b.slerp.00", "a_to_b.slerp.01"], default="x") == "a_to_b.slerp"
    assert common_stem(["a.reconstruct"], default="x") == "a.reconstruct"
    assert common_stem(["a.reconstruct", "b.reconstruct"], default="reconstruct") == "reconstruct"


def _png_height(path) -> int:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    return struct.unpack(">II", data[16:24])[1]


def test_cli_plot_and_audio(checkpoint, tmp_path, no_soundfont, capsys):
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
    assert record["audio"] == {"backend": "plain synthesis (no soundfont found)",
                               "files": [f"{n}.wav" for n in names]}
    assert record["page"] == "index.html" and len(_png_and_audio((out / "index.html").read_text())["audio"]) == 3
    for name in names:
        seconds = symusic.Score(str(out / f"{name}.mid")).to("second").end()
        with wave.open(str(out / f"{name}.wav"), "rb") as f:
            assert f.getnchannels() == 1 and f.getnframes() >= seconds * f.getframerate() > 0
    assert main(["reconstruct", str(checkpoint), str(a), "--plot", "-o", str(out / "one")]) == 0
    record = json.loads((out / "one" / "generation.json").read_text())
    assert record["plot"] == "a.reconstruct.png" and "audio" not in record
    assert _png_height(out / "a_to_b.slerp.png") > _png_height(out / "one" / "a.reconstruct.png")  # 3 panels vs 1
    assert not list((out / "one").glob("*.wav"))


def test_cli_interpolate_writes_a_page_by_default(checkpoint, tmp_path, bundled_soundfont, capsys):
    from midistruct.cli import main

    a, b = tmp_path / "a.mid", tmp_path / "b.mid"
    make_score((4, 4), bars=2, seed=1).dump_midi(str(a))
    make_score((4, 4), bars=2, seed=2).dump_midi(str(b))
    out = tmp_path / "out"
    assert main(["interpolate", str(checkpoint), str(a), str(b), "--steps", "4", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "wrote 4 WAV file(s) with soundfont sampler (TimGM6mb.sf2)" in printed
    assert printed.rstrip().endswith(f"page with every step's piano roll and audio: {out / 'index.html'}")
    names = [f"a_to_b.slerp.0{i}" for i in range(4)]
    assert all((out / f"{n}.wav").is_file() for n in names) and not list(out.glob("*.png"))  # --plot not given
    text = (out / "index.html").read_text()
    found = _png_and_audio(text)
    assert found["a"] == [f"{n}.mid" for n in names] and len(found["img"]) == len(found["audio"]) == 4
    assert [base64.b64decode(src.split(",", 1)[1]) for src in found["audio"]] == [
        (out / f"{n}.wav").read_bytes() for n in names]
    assert "step 0 (A: a)" in text and "step 3 (B: b)" in text and "soundfont sampler (TimGM6mb.sf2)" in text
    assert json.loads((out / "generation.json").read_text())["audio"]["files"] == [f"{n}.wav" for n in names]
    quiet = tmp_path / "quiet"
    assert main(["interpolate", str(checkpoint), str(a), str(b), "--steps", "2", "--no-audio", "-o", str(quiet)]) == 0
    assert "page" not in capsys.readouterr().out
    assert sorted(p.name for p in quiet.iterdir()) == ["a_to_b.slerp.00.mid", "a_to_b.slerp.01.mid", "generation.json"]
    assert "page" not in json.loads((quiet / "generation.json").read_text())

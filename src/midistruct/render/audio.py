"""Audio of symusic Scores: a General MIDI soundfont played by the sampler, else FluidSynth, else plain synthesis.

Audio arrays are float32 mono in [-1, 1] at ``sample_rate``, peak-normalised to :data:`PEAK`. In order of
preference: :mod:`midistruct.render.soundfont` (a numpy SF2 sampler) with the soundfont that
:func:`find_soundfont` names (by default TimGM6mb.sf2, the General MIDI soundfont in pretty_midi's wheel,
so every install has one); the ``fluidsynth`` executable with that soundfont when the sampler cannot read
it (SF3, say); additive synthesis in numpy (a few harmonics under an attack/decay envelope; drums as
short noise bursts) when there is no soundfont or both fail. Each is timed by the score's tempo map.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import wave
from importlib.util import find_spec
from pathlib import Path

import numpy as np

from midistruct.errors import MidiStructError

SOUNDFONT_ENV = "MIDISTRUCT_SOUNDFONT"
BUNDLED_SOUNDFONT = ("pretty_midi", "TimGM6mb.sf2")  # (package, file): a 6 MB GM soundfont in its wheel
SOUNDFONT_PATHS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/default-GM.sf2",
                   "/usr/share/soundfonts/FluidR3_GM.sf2", "/usr/share/soundfonts/default.sf2")
HARMONICS = (1.0, 0.5, 0.25, 0.125)  # amplitude of partials 1..4
ATTACK_S, DECAY_S, RELEASE_S = 0.005, 0.8, 0.04  # envelope: linear rise, exponential decay, linear fade
DRUM_S = 0.06  # length of a drum hit's noise burst
TAIL_S = 0.25  # silence kept after the last sound
PEAK = 0.9  # every backend's audio is normalised to this peak


def synthesize(score, *, sample_rate: int = 22050, soundfont: str | Path | None = None) -> tuple[np.ndarray, str]:
    """Render ``score`` to audio with the first backend that works (see the module docstring).

    The soundfont is ``soundfont``, else ``$MIDISTRUCT_SOUNDFONT``, else pretty_midi's TimGM6mb.sf2, else
    one of :data:`SOUNDFONT_PATHS` (:func:`find_soundfont`).

    Returns:
        ``(audio, backend)``: float32 mono samples in [-1, 1], and a line naming what made them and why,
        e.g. ``"soundfont sampler (TimGM6mb.sf2)"``, ``"fluidsynth (GM.sf3; the sampler could not read it:
        ...)"`` or ``"plain synthesis (no soundfont found)"``.
    Raises:
        FileNotFoundError: ``soundfont`` or ``$MIDISTRUCT_SOUNDFONT`` names a missing file.
    """
    from midistruct.errors import one_line
    from midistruct.render.soundfont import SoundFontError, load_soundfont

    sf2 = find_soundfont(soundfont)
    if sf2 is None:
        return _plain(score, sample_rate), "plain synthesis (no soundfont found)"
    try:
        audio = load_soundfont(str(sf2)).render(score, sample_rate=sample_rate)
        return _finish(audio, sample_rate), f"soundfont sampler ({sf2.name})"
    except SoundFontError as err:
        why = [f"the sampler could not read it: {one_line(err)}"]
    exe = shutil.which("fluidsynth")
    if exe is not None:
        try:
            audio = fluidsynth(score, sf2, sample_rate=sample_rate, executable=exe)  # its own release tail
            return _finish(audio, sample_rate, tail=False), f"fluidsynth ({sf2.name}; {why[0]})"
        except (OSError, RuntimeError, subprocess.SubprocessError, wave.Error) as err:
            reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
            why.append(f"fluidsynth failed: {reason}")
    else:
        why.append("no fluidsynth")
    return _plain(score, sample_rate), f"plain synthesis ({sf2.name}: {'; '.join(why)})"


def _plain(score, sample_rate: int) -> np.ndarray:
    return _finish(plain_synthesis(score, sample_rate=sample_rate), sample_rate)


def write_wav(score, path: str | Path, *, sample_rate: int = 22050, soundfont: str | Path | None = None) -> str:
    """Write ``score`` as a 16-bit PCM mono WAV at ``path``; returns the backend line of :func:`synthesize`."""
    audio, backend = synthesize(score, sample_rate=sample_rate, soundfont=soundfont)
    pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.tobytes())
    return backend


class SoundfontError(MidiStructError, FileNotFoundError):
    """A soundfont named by the user (argument or ``$MIDISTRUCT_SOUNDFONT``) that does not exist."""


def find_soundfont(soundfont: str | Path | None = None) -> Path | None:
    """The soundfont to use: the argument, then ``$MIDISTRUCT_SOUNDFONT``, then :func:`bundled_soundfont`,
    then the first of :data:`SOUNDFONT_PATHS` that exists.

    A file named explicitly (argument or variable) must exist; ``None`` when nothing is found.
    """
    for explicit in (soundfont, os.environ.get(SOUNDFONT_ENV) or None):
        if explicit is not None:
            if not Path(explicit).is_file():
                raise SoundfontError(f"soundfont {explicit}: no such file")
            return Path(explicit)
    found = [bundled_soundfont(), *(Path(p) for p in SOUNDFONT_PATHS)]
    return next((p for p in found if p is not None and p.is_file()), None)


def bundled_soundfont() -> Path | None:
    """pretty_midi's General MIDI soundfont (TimGM6mb.sf2), located without importing pretty_midi."""
    package, name = BUNDLED_SOUNDFONT
    spec = find_spec(package)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    return next((Path(f) / name for f in folders if (Path(f) / name).is_file()), None)


def _finish(audio: np.ndarray, sample_rate: int, *, tail: bool = True) -> np.ndarray:
    """``audio`` peak-normalised to :data:`PEAK` (silence stays silent), with :data:`TAIL_S` of silence
    after it unless ``tail`` is False."""
    pad = int(TAIL_S * sample_rate) if tail else 0
    out = np.concatenate([audio.astype(np.float32), np.zeros(pad, dtype=np.float32)])
    peak = float(np.max(np.abs(out), initial=0.0))
    return out * np.float32(PEAK / peak) if peak > 0 else out


def fluidsynth(score, soundfont: Path, *, sample_rate: int, executable: str = "fluidsynth") -> np.ndarray:
    """Render with the FluidSynth command line (fast, non-interactive, to a file) in a temporary folder.

    Raises ``RuntimeError`` when it exits non-zero or writes nothing.
    """
    with tempfile.TemporaryDirectory(prefix="midistruct-audio-") as tmp:
        midi, wav = Path(tmp) / "in.mid", Path(tmp) / "out.wav"
        score.dump_midi(str(midi))
        seconds = float(score.to("second").end())
        cmd = [executable, "-ni", "-g", "1.0", "-F", str(wav), "-r", str(sample_rate), str(soundfont), str(midi)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60 + 2 * seconds, check=False)
        if done.returncode != 0 or not wav.is_file() or wav.stat().st_size == 0:
            raise RuntimeError(f"exit {done.returncode}: {done.stderr.strip() or 'no audio written'}")
        audio, rate = read_audio(wav, raw_rate=sample_rate)
    return np.clip(_resample(audio, rate, sample_rate), -1.0, 1.0).astype(np.float32)


def read_audio(path: Path, *, raw_rate: int) -> tuple[np.ndarray, int]:
    """Mono float samples and rate of a PCM WAV; a file without a RIFF header is read as FluidSynth's raw
    output (interleaved stereo signed 16-bit at ``raw_rate``), as written by builds without libsndfile."""
    data = path.read_bytes()
    if not data.startswith(b"RIFF"):
        frames = np.frombuffer(data[: len(data) // 4 * 4], dtype="<i2").reshape(-1, 2)
        return frames.mean(axis=1) / 32768.0, raw_rate
    with wave.open(str(path), "rb") as f:
        channels, width, rate = f.getnchannels(), f.getsampwidth(), f.getframerate()
        raw = f.readframes(f.getnframes())
    if width == 1:  # 8-bit WAV is unsigned
        samples = (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128) / 128.0
    elif width in (2, 4):
        samples = np.frombuffer(raw, dtype=f"<i{width}") / float(2 ** (8 * width - 1))
    else:
        raise wave.Error(f"{path.name}: {8 * width}-bit samples are not supported")
    return samples.reshape(-1, channels).mean(axis=1), rate


def _resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Linear-interpolation resampling (only used when FluidSynth ignored the requested rate)."""
    if rate == target or len(audio) == 0:
        return audio
    n = int(round(len(audio) * target / rate))
    return np.interp(np.arange(n) * rate / target, np.arange(len(audio)), audio)


def plain_synthesis(score, *, sample_rate: int = 22050) -> np.ndarray:
    """Additive synthesis of every note, timed in seconds by the tempo map; not normalised.

    Length: the last note-off plus its short release, in samples.
    """
    seconds = score.to("second")
    tracks = [(t.is_drum, t.notes.numpy()) for t in seconds.tracks if len(t.notes)]
    ends = [float(np.max(n["time"] + n["duration"])) for _, n in tracks]
    out = np.zeros(int(np.ceil((max(ends, default=0.0) + RELEASE_S) * sample_rate)), dtype=np.float64)
    rng = np.random.default_rng(0)  # drum noise: the same audio every time
    for is_drum, notes in tracks:
        for onset, duration, pitch, velocity in zip(notes["time"], notes["duration"], notes["pitch"],
                                                    notes["velocity"]):
            sound = _noise_burst(rng, sample_rate) if is_drum else _tone(int(pitch), float(duration), sample_rate)
            start = int(round(float(onset) * sample_rate))
            sound = sound[: len(out) - start] * (int(velocity) / 127.0)
            out[start:start + len(sound)] += sound
    return out.astype(np.float32)


def _tone(pitch: int, duration: float, sample_rate: int) -> np.ndarray:
    """One note: harmonics of the equal-tempered pitch (A4 = 440 Hz) under the envelope; none above Nyquist."""
    freq = 440.0 * 2.0 ** ((pitch - 69) / 12)
    t = np.arange(int((duration + RELEASE_S) * sample_rate)) / sample_rate
    wave_ = sum(a * np.sin(2 * np.pi * k * freq * t) for k, a in enumerate(HARMONICS, 1) if k * freq < sample_rate / 2)
    return wave_ * _envelope(t, duration)


def _envelope(t: np.ndarray, duration: float) -> np.ndarray:
    """Linear attack over ATTACK_S, exponential decay, then a linear RELEASE_S fade to 0 after note-off."""
    attack = np.minimum(t / ATTACK_S, 1.0)
    release = np.clip((duration + RELEASE_S - t) / RELEASE_S, 0.0, 1.0)
    return attack * np.exp(-t / DECAY_S) * release


def _noise_burst(rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """A drum hit: DRUM_S of white noise, exponentially decaying, at half a tone's loudness."""
    t = np.arange(int(DRUM_S * sample_rate)) / sample_rate
    return 0.5 * rng.uniform(-1.0, 1.0, len(t)) * np.exp(-t / (DRUM_S / 5))

"""A SoundFont 2 sampler in numpy: read an ``.sf2`` file and play a symusic Score through its presets.

Enough of the SF2 2.04 specification for General MIDI playback: a preset's zones lead to an
instrument's zones, and those to samples chosen by key and velocity range; each note is the sample
resampled from its root key (with the zone's tuning and scale tuning), looped where the zone loops,
under the volume envelope (delay, attack, hold, decay to sustain, release; hold and decay scaled by
key) and the zone's attenuation. Left out: filters, LFOs, the modulation envelope, modulators, pan
(the output is mono), reverb and chorus. SF3 files (Ogg-compressed samples) are refused.

Why not symusic's ``Synthesizer``: symusic 0.6.0's ``render`` cannot return its buffer (the binding
lacks an Eigen type caster: every call raises ``TypeError``), and 0.5.x plays the General MIDI
SoundFont shipped with pretty_midi (TimGM6mb.sf2) off key: its piano sounds 13 to 27 semitones sharp
(symusic issue #55 reports the same with FluidR3Mono_GM). This sampler uses the same file.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from midistruct.errors import MidiStructError

# Generator operators used (SF2 2.04, section 8.1.2).
START, END, START_LOOP, END_LOOP, START_COARSE = 0, 1, 2, 3, 4
END_COARSE, START_LOOP_COARSE, END_LOOP_COARSE = 12, 45, 50
DELAY, ATTACK, HOLD, DECAY, SUSTAIN, RELEASE, KEY_TO_HOLD, KEY_TO_DECAY = 33, 34, 35, 36, 37, 38, 39, 40
INSTRUMENT, KEY_RANGE, VEL_RANGE, ATTENUATION, COARSE_TUNE, FINE_TUNE = 41, 43, 44, 48, 51, 52
SAMPLE_ID, SAMPLE_MODES, SCALE_TUNING, ROOT_KEY = 53, 54, 56, 58
DEFAULTS = {DELAY: -12000, ATTACK: -12000, HOLD: -12000, DECAY: -12000, RELEASE: -12000, SCALE_TUNING: 100,
            ROOT_KEY: -1}  # timecents (-12000: 1 ms); every other generator defaults to 0
# Generators a preset zone may not set (they belong to the instrument); the rest add to the instrument's.
NOT_ADDITIVE = {START, END, START_LOOP, END_LOOP, START_COARSE, END_COARSE, START_LOOP_COARSE, END_LOOP_COARSE,
                INSTRUMENT, KEY_RANGE, VEL_RANGE, SAMPLE_ID, SAMPLE_MODES, 46, 47, 57, ROOT_KEY}
MAX_RELEASE_S = 3.0  # a note's release is cut here (or 60 dB down, whichever is sooner)
VOICE_CACHE = 512  # voices kept for reuse in one render (generated music repeats notes exactly)
ROM_SAMPLE = 0x8000


class SoundFontError(MidiStructError):
    """A soundfont file this sampler cannot read (not SF2, damaged, or SF3)."""


@dataclass(frozen=True)
class Region:
    """One sample as a preset plays it: key/velocity range, sample data bounds and the combined generators."""

    keys: tuple[int, int]
    vels: tuple[int, int]
    start: int  # sample data bounds, as indices into the soundfont's sample array
    end: int
    loop: tuple[int, int] | None  # (start, end) while the key is held; None: played once
    root: int  # the key at which the sample sounds at its own pitch
    tune_cents: float  # coarse + fine tune + the sample's pitch correction
    scale_tuning: float  # cents per key
    sample_rate: int
    gens: dict  # the combined generator values (for the envelope and attenuation)

    def plays(self, key: int, velocity: int) -> bool:
        return self.keys[0] <= key <= self.keys[1] and self.vels[0] <= velocity <= self.vels[1]


class SoundFont:
    """An SF2 file in memory: the samples as float32 and the regions of every (bank, preset)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        chunks = _read_chunks(self.path)
        self.samples = np.frombuffer(chunks["smpl"][: len(chunks["smpl"]) // 2 * 2], dtype="<i2") / np.float32(32768)
        try:
            self._presets = _presets(chunks, len(self.samples))
        except (struct.error, IndexError, KeyError) as err:  # records cut short or indices out of range
            raise SoundFontError(f"soundfont {self.path.name}: damaged ({type(err).__name__}: {err})") from err

    def regions(self, bank: int, program: int) -> list[Region]:
        """The regions of preset ``program`` in ``bank``; a missing preset falls back to the bank's
        preset 0, then to bank 0's (as a GM player plays an unknown instrument as a piano)."""
        for key in ((bank, program), (bank, 0), (0, program), (0, 0)):
            if key in self._presets:
                return self._presets[key]
        return next(iter(self._presets.values()), [])

    def render(self, score, *, sample_rate: int) -> np.ndarray:
        """Mono float32 audio of ``score`` (any time unit), not normalised; drums play bank 128.

        Length: up to the end of the last voice (its note-off plus its release, or its sample's end).
        """
        notes = _notes_in_seconds(score)
        last_off = max((onset + duration for onset, duration, *_ in notes), default=0.0)
        out = np.zeros(int((last_off + MAX_RELEASE_S) * sample_rate) + 2, dtype=np.float32)
        cache: dict = {}  # the same region, key, velocity and length sound the same: rendered once
        end = 0
        for onset, duration, key, velocity, bank, program in notes:
            for region in self.regions(bank, program):
                if region.plays(key, velocity):
                    voice = self._voice(region, key, velocity, duration, sample_rate, cache)
                    start = int(round(onset * sample_rate))
                    out[start:start + len(voice)] += voice
                    end = max(end, start + len(voice))
        return out[:end]

    def _voice(self, region: Region, key: int, velocity: int, duration: float, rate: int, cache: dict):
        ident = (id(region), key, velocity, int(round(duration * rate)))
        if ident in cache:
            return cache[ident]
        voice = _play(self.samples, region, key, velocity, ident[-1], rate)
        if len(cache) < VOICE_CACHE:
            cache[ident] = voice
        return voice


@functools.lru_cache(maxsize=2)
def load_soundfont(path: str) -> SoundFont:
    """A :class:`SoundFont`, read once per path (a command renders many files with one soundfont)."""
    return SoundFont(path)


def _notes_in_seconds(score) -> list[tuple[float, float, int, int, int, int]]:
    """``(onset s, duration s, key, velocity, bank, program)`` of every note, by the tempo map; a note
    released while the sustain pedal is down sounds until the pedal is lifted."""
    notes = []
    for track in score.to("second").tracks:
        n = track.notes.numpy()
        bank, program = (128 if track.is_drum else 0), int(track.program)
        durations = _pedalled(n["time"], n["duration"], track.pedals.numpy())
        notes += [(float(t), float(d), int(p), int(v), bank, program)
                  for t, d, p, v in zip(n["time"], durations, n["pitch"], n["velocity"]) if v > 0]
    return notes


def _pedalled(onsets: np.ndarray, durations: np.ndarray, pedals: dict) -> np.ndarray:
    """Note durations with each note-off that falls while a pedal is down moved to the pedal's release."""
    if len(pedals["time"]) == 0 or len(onsets) == 0:
        return durations
    order = np.argsort(pedals["time"])
    down, up = pedals["time"][order], (pedals["time"] + pedals["duration"])[order]
    off = onsets + durations
    k = np.searchsorted(down, off, side="right") - 1  # the last pedal pressed at or before each note-off
    held = (k >= 0) & (off < up[np.maximum(k, 0)])
    return np.where(held, up[np.maximum(k, 0)] - onsets, durations)


def _play(samples: np.ndarray, region: Region, key: int, velocity: int, held: int, rate: int) -> np.ndarray:
    """One voice: the region's sample at ``key``, held for ``held`` output samples, then released."""
    g = region.gens
    cents = region.scale_tuning * (key - region.root) + region.tune_cents
    step = 2.0 ** (cents / 1200) * region.sample_rate / rate  # sample frames per output sample
    release = min(0.6 * _seconds(g, RELEASE), MAX_RELEASE_S)  # 60 dB down takes 0.6 of the release time
    pos = region.start + step * np.arange(held + int(release * rate) + 1)
    if region.loop is not None:
        lo, hi = region.loop
        past = pos >= hi
        pos[past] = lo + np.mod(pos[past] - lo, hi - lo)
    else:
        pos = pos[pos < region.end - 1]
    i = pos.astype(np.int64)
    frac = (pos - i).astype(np.float32)
    wave = samples[i] * (1 - frac) + samples[np.minimum(i + 1, len(samples) - 1)] * frac
    gain = 10.0 ** (-g.get(ATTENUATION, 0) / 200) * (velocity / 127) ** 2  # cB; velocity as 40 log10(v/127) dB
    return (wave * _envelope(g, key, held, len(wave), rate) * gain).astype(np.float32)


def _envelope(g: dict, key: int, held: int, n: int, rate: int) -> np.ndarray:
    """The volume envelope over ``n`` samples: delay, linear attack, hold, decay at 100 dB per decay time
    down to the sustain level, and from note-off (sample ``held``) a release at 100 dB per release time."""
    t = np.arange(n) / rate
    delay, attack = _seconds(g, DELAY), _seconds(g, ATTACK)
    hold = _seconds(g, HOLD) * 2.0 ** (g.get(KEY_TO_HOLD, 0) * (60 - key) / 1200)
    decay = _seconds(g, DECAY) * 2.0 ** (g.get(KEY_TO_DECAY, 0) * (60 - key) / 1200)
    sustain_db = min(max(g.get(SUSTAIN, 0), 0), 1440) / 10
    decay_db = np.clip((t - delay - attack - hold) * 100 / decay, 0, sustain_db)
    amp = np.clip((t - delay) / attack, 0, 1) * 10.0 ** (-decay_db / 20)
    if held < n:
        at_off = amp[held - 1] if held > 0 else 0.0
        amp[held:] = at_off * 10.0 ** (-(t[held:] - t[held]) * 100 / _seconds(g, RELEASE) / 20)
    return amp.astype(np.float32)


def _seconds(g: dict, op: int) -> float:
    """A time generator (timecents) in seconds."""
    return 2.0 ** (g.get(op, DEFAULTS[op]) / 1200)


def _read_chunks(path: Path) -> dict[str, bytes]:
    """The sub-chunks of an SF2 file's LIST chunks by id (``smpl``, ``phdr``, ``pbag``, ...)."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise SoundFontError(f"soundfont {path}: {err.strerror or err}") from err
    if data[:4] != b"RIFF" or data[8:12] != b"sfbk":
        raise SoundFontError(f"soundfont {path.name}: not a SoundFont 2 file")
    chunks, pos = {}, 12
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        if cid == b"LIST":
            sub, stop = pos + 12, min(pos + 8 + size, len(data))
            while sub + 8 <= stop:
                sid, ssize = data[sub:sub + 4].decode("latin-1"), struct.unpack_from("<I", data, sub + 4)[0]
                chunks[sid] = data[sub + 8:sub + 8 + ssize]
                sub += 8 + ssize + (ssize & 1)
        pos += 8 + size + (size & 1)
    missing = [c for c in ("ifil", "smpl", "phdr", "pbag", "pgen", "inst", "ibag", "igen", "shdr") if c not in chunks]
    if missing:
        raise SoundFontError(f"soundfont {path.name}: damaged (no {', '.join(missing)} chunk)")
    if struct.unpack_from("<H", chunks["ifil"])[0] >= 3:
        raise SoundFontError(f"soundfont {path.name}: SF3 (compressed samples) is not supported by the sampler")
    return chunks


def _records(chunk: bytes, fmt: str) -> list[tuple]:
    """The fixed-size records of a pdta chunk, the terminal one (EOP, EOI, EOS) included."""
    size = struct.calcsize(fmt)
    return [struct.unpack_from(fmt, chunk, i) for i in range(0, len(chunk) - size + 1, size)]


def _zones(bags: list[tuple], gens: list[tuple], first: int, stop: int, link: int) -> list[dict]:
    """Generator dicts of bags ``first..stop-1``, each with the global zone (a first zone without the
    ``link`` generator) merged under it; other zones without ``link`` are dropped."""
    zones = [{op: _amount(op, raw) for op, raw in gens[bags[b][0]:bags[b + 1][0]]}
             for b in range(first, min(stop, len(bags) - 1))]
    base = zones.pop(0) if zones and link not in zones[0] else {}
    return [{**base, **z} for z in zones if link in z]


def _amount(op: int, raw: int):
    """A generator amount: a (low, high) range, an unsigned index, or a signed 16-bit value."""
    if op in (KEY_RANGE, VEL_RANGE):
        return raw & 0xFF, raw >> 8
    if op in (INSTRUMENT, SAMPLE_ID):
        return raw
    return raw - 0x10000 if raw >= 0x8000 else raw


def _presets(chunks: dict[str, bytes], n_samples: int) -> dict[tuple[int, int], list[Region]]:
    """Every preset's regions by (bank, program); of two presets with one number, the first."""
    phdr, inst = _records(chunks["phdr"], "<20sHHHIII"), _records(chunks["inst"], "<20sH")
    pbag, ibag = _records(chunks["pbag"], "<HH"), _records(chunks["ibag"], "<HH")
    pgen, igen = _records(chunks["pgen"], "<HH"), _records(chunks["igen"], "<HH")
    shdr = _records(chunks["shdr"], "<20s5IBbHH")[:-1]
    presets = {}
    for p in range(len(phdr) - 1):
        _, program, bank, bag = phdr[p][:4]
        regions = []
        for pz in _zones(pbag, pgen, bag, phdr[p + 1][3], INSTRUMENT):
            i = pz[INSTRUMENT]
            if i < len(inst) - 1:
                for iz in _zones(ibag, igen, inst[i][1], inst[i + 1][1], SAMPLE_ID):
                    regions.append(_region(pz, iz, shdr, n_samples))
        presets.setdefault((bank, program), [r for r in regions if r is not None])
    return presets


def _region(pz: dict, iz: dict, shdr: list[tuple], n_samples: int) -> Region | None:
    """The region of instrument zone ``iz`` under preset zone ``pz``; None for a sample it cannot play."""
    if iz[SAMPLE_ID] >= len(shdr):
        return None
    _, start, end, loop_start, loop_end, rate, pitch, correction, _, kind = shdr[iz[SAMPLE_ID]]
    gens = {**iz, **{op: iz.get(op, DEFAULTS.get(op, 0)) + v for op, v in pz.items() if op not in NOT_ADDITIVE}}
    start += iz.get(START, 0) + 32768 * iz.get(START_COARSE, 0)
    end = min(end + iz.get(END, 0) + 32768 * iz.get(END_COARSE, 0), n_samples)
    loop_start += iz.get(START_LOOP, 0) + 32768 * iz.get(START_LOOP_COARSE, 0)
    loop_end += iz.get(END_LOOP, 0) + 32768 * iz.get(END_LOOP_COARSE, 0)
    if kind & ROM_SAMPLE or rate <= 0 or not 0 <= start < end - 1:
        return None
    loops = gens.get(SAMPLE_MODES, 0) & 1 and start <= loop_start < loop_end <= end
    ranges = [_intersect(iz.get(op, (0, 127)), pz.get(op, (0, 127))) for op in (KEY_RANGE, VEL_RANGE)]
    root = gens[ROOT_KEY] if gens.get(ROOT_KEY, -1) >= 0 else pitch
    return Region(keys=ranges[0], vels=ranges[1], start=start, end=end,
                  loop=(loop_start, loop_end) if loops else None, root=root,
                  tune_cents=100 * gens.get(COARSE_TUNE, 0) + gens.get(FINE_TUNE, 0) + correction,
                  scale_tuning=gens.get(SCALE_TUNING, 100), sample_rate=rate, gens=gens)


def _intersect(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    return max(a[0], b[0]), min(a[1], b[1])

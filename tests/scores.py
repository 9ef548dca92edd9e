"""Scores built in code for fast tests (no files needed)."""

from __future__ import annotations

import numpy as np
import symusic

TPQ = 480


def make_score(meter: tuple[int, int] = (4, 4), *, bars: int = 8, seed: int = 0, tracks: int = 1,
               programs: tuple[int, ...] = (0, 33, 48), drums: bool = False) -> symusic.Score:
    """A random but grid-aligned piece: notes on 8th-of-a-beat positions, durations of the vocab.

    Onsets and durations are multiples of 1/8 quarter note so miditok's quantization
    (8 positions per beat) keeps them exactly.
    """
    rng = np.random.default_rng(seed)
    num, den = meter
    bar_ticks = num * TPQ * 4 // den
    score = symusic.Score(TPQ)
    score.time_signatures.append(symusic.TimeSignature(0, num, den))
    score.tempos.append(symusic.Tempo(0, 120.0))
    step = TPQ // 2  # an eighth note
    for t in range(tracks):
        track = symusic.Track(name=f"t{t}", program=programs[t % len(programs)], is_drum=False)
        for bar in range(bars):
            for onset in range(bar * bar_ticks, (bar + 1) * bar_ticks, step):
                if rng.random() < 0.6:
                    duration = step * int(rng.choice([1, 2, 3, 4]))
                    pitch = int(rng.integers(48, 84)) - 12 * t
                    track.notes.append(symusic.Note(onset, duration, pitch, 90))
        score.tracks.append(track)
    if drums:
        kit = symusic.Track(name="drums", program=0, is_drum=True)
        for onset in range(0, bars * bar_ticks, TPQ):
            kit.notes.append(symusic.Note(onset, TPQ // 4, 36, 100))
        score.tracks.append(kit)
    return score


def write_corpus(folder, n: int = 6, *, meter=(4, 4), bars: int = 8) -> list:
    """Write ``n`` distinct synthetic MIDI files into ``folder``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"piece{i}.mid"
        make_score(meter, bars=bars, seed=i).dump_midi(str(path))
        paths.append(path)
    return paths


def note_tuples(score: symusic.Score, *, start_tick: int = 0, end_tick: int | None = None) -> list[tuple]:
    """(pitch, onset, duration, program) of notes with onset in [start, end), times in quarter notes."""
    out = []
    for track in score.tracks:
        for n in track.notes:
            if n.time >= start_tick and (end_tick is None or n.time < end_tick):
                out.append((n.pitch, (n.time - start_tick) / score.tpq, n.duration / score.tpq, track.program))
    return sorted(out)


MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10)


def make_key_score(tonic: int, mode: str = "major", *, bars: int = 8, seed: int = 0, low: int = 60) -> symusic.Score:
    """A 4/4 melody in one key: quarter notes from the scale of ``tonic`` (pitch class) and ``mode``, the tonic
    on every bar's first beat and the tonic triad on its third, so that a key finder hears that key; pitches from
    ``low`` up an octave and a half."""
    rng = np.random.default_rng(seed)
    scale = MAJOR_SCALE if mode == "major" else MINOR_SCALE
    triad = (scale[0], scale[2], scale[4])
    score = symusic.Score(TPQ)
    score.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    score.tempos.append(symusic.Tempo(0, 120.0))
    track = symusic.Track(name="melody", program=0, is_drum=False)
    for beat in range(4 * bars):
        degree = 0 if beat % 4 == 0 else int(rng.choice(triad)) if beat % 4 == 2 else int(rng.choice(scale))
        pitch = low + (tonic + degree) % 12 + 12 * int(rng.integers(0, 2))
        track.notes.append(symusic.Note(beat * TPQ, TPQ, pitch, 90))
    score.tracks.append(track)
    return score

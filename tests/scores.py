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

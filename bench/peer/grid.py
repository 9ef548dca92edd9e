"""MusicVAE's melody grid (Roberts et al. 2018; magenta's ``OneHotMelodyConverter``) from shard windows, and back.

A window of ``bars`` 4/4 bars is ``16 * bars`` sixteenth-note steps (32 for MusicVAE's 2-bar models), each one
of 90 classes, magenta's ``MelodyOneHotEncoding`` over the piano range 21..108:

    0        NO_EVENT: hold the sounding note, or the rest
    1        NOTE_OFF: the sounding note stops, a rest begins
    2 + p-21 a note of MIDI pitch p starts (ending the one before)

The events themselves are midistruct's (:func:`midistruct.metrics.steps.melody_events`: the skyline, the
highest note at each onset, as magenta's melody extractor keeps it), so the peer reads exactly the melody the
step accuracy scores. Windows in another meter, with an onset off the 16th grid (triplets, 32nds) or a pitch
outside the piano are left out and counted by reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from midistruct.metrics.steps import NO_EVENT, NOTE_OFF, STEPS_PER_QUARTER, melody_events

NO_EVENT_CLASS, NOTE_OFF_CLASS, FIRST_PITCH_CLASS = 0, 1, 2
MIN_PITCH, MAX_PITCH = 21, 108
N_CLASSES = FIRST_PITCH_CLASS + MAX_PITCH - MIN_PITCH + 1  # 90
STEPS_PER_BAR = 4 * STEPS_PER_QUARTER  # 4/4 only, as MusicVAE
METER = "4/4"
TICKS_PER_QUARTER = 480  # of the scores built from grids; miditok resamples to its own resolution


# ---- events <-> classes <-> notes -------------------------------------------------------------------

def events_to_classes(events: np.ndarray) -> np.ndarray:
    """(S,) uint8 classes of (S,) melody events (pitch, ``NOTE_OFF`` or ``NO_EVENT``); pitches must be 21..108."""
    events = np.asarray(events, dtype=np.int64)
    out = np.where(events == NOTE_OFF, NOTE_OFF_CLASS, NO_EVENT_CLASS)
    is_pitch = events >= 0
    out[is_pitch] = events[is_pitch] - MIN_PITCH + FIRST_PITCH_CLASS
    return out.astype(np.uint8)


def classes_to_events(classes: np.ndarray) -> np.ndarray:
    """Inverse of :func:`events_to_classes`: (S,) int64 events."""
    classes = np.asarray(classes, dtype=np.int64)
    out = np.where(classes == NOTE_OFF_CLASS, NOTE_OFF, NO_EVENT)
    is_pitch = classes >= FIRST_PITCH_CLASS
    out[is_pitch] = classes[is_pitch] - FIRST_PITCH_CLASS + MIN_PITCH
    return out


def grid_notes(classes: np.ndarray) -> np.ndarray:
    """(N, 3) onset, duration (quarter notes) and pitch of the notes of (S,) classes: each note lasts until the
    next onset, a ``NOTE_OFF`` or the end of the grid; a ``NOTE_OFF`` in a rest is ignored."""
    rows, start, pitch = [], 0, None
    for step, c in enumerate(np.asarray(classes, dtype=np.int64).tolist()):
        if c == NO_EVENT_CLASS:
            continue
        if pitch is not None:
            rows.append((start, step - start, pitch))
            pitch = None
        if c >= FIRST_PITCH_CLASS:
            start, pitch = step, c - FIRST_PITCH_CLASS + MIN_PITCH
    if pitch is not None:
        rows.append((start, len(classes) - start, pitch))
    notes = np.array(rows, dtype=np.float64).reshape(-1, 3)
    notes[:, :2] /= STEPS_PER_QUARTER
    return notes


def notes_ids(tokenizer, notes: np.ndarray) -> list[int]:
    """The shard tokenizer's ids of a 4/4 window holding ``notes`` (N, 3), as the shards write one (a window of
    the shards decoded and encoded again gives its own ids back); [] without notes."""
    import symusic

    if len(notes) == 0:
        return []
    score = symusic.Score(TICKS_PER_QUARTER)
    score.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    score.tempos.append(symusic.Tempo(0, 120.0))
    track = symusic.Track(program=0, is_drum=False)
    for onset, duration, pitch in notes.tolist():
        track.notes.append(symusic.Note(round(onset * TICKS_PER_QUARTER), round(duration * TICKS_PER_QUARTER),
                                        int(pitch), 100))
    score.tracks.append(track)
    out = tokenizer.encode(score)
    return [int(i) for i in (out[0] if isinstance(out, list) else out).ids]


# ---- shard windows -> grids ------------------------------------------------------------------------------

@dataclass
class GridSet:
    """The grids of one split's usable windows: ``grids`` (N, S) uint8 classes, ``windows`` (N,) the shard
    window index of each, ``skipped`` windows left out by reason, ``polyphonic`` windows reduced to the skyline."""

    grids: np.ndarray
    windows: np.ndarray
    skipped: dict[str, int] = field(default_factory=dict)
    polyphonic: int = 0

    def __len__(self) -> int:
        return len(self.windows)

    def summary(self) -> dict:
        return {"windows": len(self), "skipped": dict(self.skipped), "polyphonic_reduced": self.polyphonic}


def window_grid(tokenizer, vocab, ids: np.ndarray, *, bars: int) -> tuple[np.ndarray | None, str, bool]:
    """(classes (16 * bars,) or None, why it was left out or "", whether chords were reduced) of one window."""
    from midistruct.metrics.notes import notes_of
    from midistruct.tokens.tokenizer import decode_ids

    if vocab.meter(ids, default=None) != METER:
        return None, "meter", False
    if vocab.count_bars(ids) != bars:
        return None, "bars", False
    notes = notes_of(decode_ids(tokenizer, ids))
    steps = notes[:, 0] * STEPS_PER_QUARTER
    if np.any(np.abs(steps - np.round(steps)) > 1e-6):
        return None, "off_grid", False
    events = melody_events(notes, STEPS_PER_BAR * bars)
    pitches = events[events >= 0]
    if len(pitches) == 0:
        return None, "no_notes", False
    if pitches.min() < MIN_PITCH or pitches.max() > MAX_PITCH:
        return None, "pitch_range", False
    return events_to_classes(events), "", len(pitches) < len(notes)


def load_grids(shards, split: str) -> GridSet:
    """The :class:`GridSet` of ``split`` of a :class:`midistruct.shards.reader.ShardSet`."""
    from midistruct.tokens.remi import RemiVocab

    tokenizer = shards.tokenizer()
    vocab, arrays, bars = RemiVocab(tokenizer), shards.split(split), int(shards.manifest["segments"]["bars"])
    grids, windows, skipped, polyphonic = [], [], {}, 0
    for i in range(arrays.n_windows):
        grid, why, reduced = window_grid(tokenizer, vocab, arrays.window(i)[0], bars=bars)
        if grid is None:
            skipped[why] = skipped.get(why, 0) + 1
            continue
        grids.append(grid), windows.append(i)
        polyphonic += reduced
    steps = STEPS_PER_BAR * bars
    return GridSet(np.stack(grids) if grids else np.zeros((0, steps), np.uint8), np.array(windows, dtype=np.int64),
                   skipped, polyphonic)


# ---- augmentation ----------------------------------------------------------------------------------------

def transposed(grids: np.ndarray, *, low: int, high: int, rng: np.random.Generator) -> np.ndarray:
    """``grids`` (N, S) each moved by a semitone shift drawn from [low, high] (one draw per grid, from ``rng``),
    the range narrowed per grid to keep its pitches on the piano, as midistruct's ``WindowDataset`` does."""
    grids = np.asarray(grids)
    if (low, high) == (0, 0) or len(grids) == 0:
        return grids
    is_pitch = grids >= FIRST_PITCH_CLASS
    top = np.where(is_pitch, grids, 0).max(axis=1).astype(np.int64)
    bottom = np.where(is_pitch, grids, 255).min(axis=1).astype(np.int64)
    lo = np.maximum(low, FIRST_PITCH_CLASS - bottom)
    hi = np.minimum(high, N_CLASSES - 1 - top)
    shift = np.where(lo <= hi, rng.integers(np.minimum(lo, hi), hi + 1), 0)
    return np.where(is_pitch, grids.astype(np.int64) + shift[:, None], grids).astype(np.uint8)

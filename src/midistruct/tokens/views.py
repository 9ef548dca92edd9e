"""Views of a window for a model with functional blocks (issue 19): what is played apart from how it is arranged.

A window's notes (REMI, tracks merged) are split in two token sequences of the same vocabulary, each read by
its own encoder, so that each code can only know what its view shows:

- **content**: the melody and the harmony. The melody is the *skyline*: the highest note of each onset, unless
  the melody note before it still sounds above it (in POP909 the sung melody lies on top almost everywhere;
  where it rests, the accompaniment's top line takes its place); the harmony is, for each beat, the pitch classes of
  every other note sounding in it, written as one block chord of beat-long notes in one octave (C3-B3). The
  accompaniment's rhythm, voicing and register are not in it.
- **arrangement**: every note that is not the skyline, at its own position and duration, with its pitch replaced
  by its *register and rank*: ``12 * octave + k`` for the k-th lowest note of its onset (k at most 11). How many
  notes sound together, where and how high, and their rhythm stay; which pitch classes they are does not, so
  the arrangement code cannot carry the harmony.
- **performance** (tokenizers with velocity tokens): each note's position and velocity, nothing else -- how hard
  each note is played, its accents and dynamics, without what or how many pitches (timing deviations are not in
  it: POP909's onsets lie on the grid, docs/RESULTS.md "Does a performance survive the tokenizer?").

Every view keeps every bar (a ``Bar`` and the bar's ``TimeSig``), so their bar codes line up with the window's.
Views are built from base ids (a BPE window is expanded first) and come back as base ids. Nothing here imports
torch; :class:`~midistruct.tokens.remi.RemiVocab` is the only reader of token strings.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from midistruct.tokens.remi import RemiVocab

VIEWS = ("content", "arrangement", "performance")
# how the arrangement view writes a pitch: "rank" (12 * octave + rank at its onset: no pitch classes) or "exact" (the
# pitch itself: a diagnostic that leaks the harmony, to see what the abstraction costs reconstruction)
ARRANGEMENT_PITCHES = ("rank", "exact")
# what each view shows, in a line (model cards)
VIEW_TEXT = {
    "content": "the melody (the skyline) and the harmony (one block chord per beat)",
    "arrangement": "the other notes' rhythm, voicing count and register, without their pitch classes",
    "performance": "each note's position and velocity",
}
CHORD_OCTAVE = 48  # C3: the harmony of the content view is written in C3-B3
MAX_RANK = 11


class Notes(NamedTuple):
    """The notes of a window, in token order (arrays of equal length N)."""

    bar: np.ndarray  # (N,) bar index in the window
    position: np.ndarray  # (N,) position in the bar
    pitch: np.ndarray  # (N,) MIDI pitch
    duration_id: np.ndarray  # (N,) the note's Duration id
    length: np.ndarray  # (N,) duration in positions
    velocity_id: np.ndarray  # (N,) the note's Velocity id, -1 without velocity tokens
    bar_meters: list[int]  # (NB,) the TimeSig id of each bar (-1: none)


def notes_of(ids, vocab: RemiVocab) -> Notes:
    """Parse a window's ids (T,) into its notes and each bar's meter token."""
    base = vocab.to_base(ids)
    kinds = vocab.base_kinds[base]
    bar, position, pitch, velocity, rows, meters = -1, 0, -1, -1, [], []
    for i, kind in zip(base.tolist(), kinds.tolist()):
        if kind == "Bar":
            bar, position, pitch = bar + 1, 0, -1
            meters.append(-1)
        elif kind == "TimeSig" and bar >= 0:
            meters[bar] = i
        elif kind == "Position":
            position = int(vocab.position_of[i])
        elif kind == "Pitch":
            pitch, velocity = int(vocab.pitch_of[i]), -1
        elif kind == "Velocity":
            velocity = i
        elif kind == "Duration" and pitch >= 0 and bar >= 0:
            rows.append((bar, position, pitch, i, int(vocab.duration_of[i]), velocity))
            pitch = -1
    table = np.array(rows, dtype=np.int64).reshape(-1, 6)
    return Notes(*table.T, bar_meters=meters)


def window_views(ids, vocab: RemiVocab, *, views: tuple[str, ...] = VIEWS[:2], arrangement_pitch: str = "rank",
                 max_tokens: int | None = None) -> dict[str, np.ndarray]:
    """``{view: ids}`` (base ids, each starting at a ``Bar``) of a window (T,) for each name in ``views``
    (:data:`VIEWS`), each cut to ``max_tokens`` when longer; ``arrangement_pitch`` (:data:`ARRANGEMENT_PITCHES`):
    the arrangement's pitches as register and rank, or as they are."""
    unknown = sorted(set(views) - set(VIEWS))
    if unknown:
        raise ValueError(f"unknown views {unknown}; valid: {', '.join(VIEWS)}")
    if arrangement_pitch not in ARRANGEMENT_PITCHES:
        raise ValueError(f"unknown arrangement_pitch {arrangement_pitch!r}; valid: {', '.join(ARRANGEMENT_PITCHES)}")
    if "performance" in views and not vocab.has_velocities:
        raise ValueError("the performance view needs velocity tokens (prepare with tokenizer.use_velocities: true)")
    notes, onset, top = melody_and_rest(ids, vocab)
    if len(notes.bar_meters) == 0:
        raise ValueError("a window starts with a Bar token")
    bar_length, bar_start = bar_grid(notes, vocab)
    out = {}
    for view in views:
        if view == "content":
            events = [((int(b), int(p)), (int(q), vocab.pitch_id(int(q)), int(d))) for b, p, q, d in
                      zip(notes.bar[top], notes.position[top], notes.pitch[top], notes.duration_id[top])]
            events += _chords(notes, onset, ~top, vocab, bar_length, bar_start)
        elif view == "arrangement":
            events = _arrangement(notes, onset, ~top, vocab, exact=arrangement_pitch == "exact")
        else:
            events = [((int(b), int(p)), (0, int(v))) for b, p, v in
                      zip(notes.bar, notes.position, notes.velocity_id) if v >= 0]
        seq = _emit(events, notes.bar_meters, vocab)
        out[view] = seq[:max_tokens] if max_tokens else seq
    return out


def bar_grid(notes: Notes, vocab: RemiVocab) -> tuple[np.ndarray, np.ndarray]:
    """(NB,) positions in each bar (a bar without a meter token counts as 4/4) and (NB,) where each bar starts, in
    positions from the window's start."""
    meter_names = [str(vocab.base_values[m]) if m >= 0 else "4/4" for m in notes.bar_meters]
    bar_length = np.array([vocab.positions_per_bar(m) for m in meter_names], dtype=np.int64)
    return bar_length, np.concatenate([[0], np.cumsum(bar_length)[:-1]]).astype(np.int64)


def melody_and_rest(ids, vocab: RemiVocab) -> tuple[Notes, np.ndarray, np.ndarray]:
    """A window's notes, their onsets (positions from the window's start) and which are the melody
    (:func:`skyline`), as the content view reads them."""
    notes = notes_of(ids, vocab)
    _, bar_start = bar_grid(notes, vocab)
    onset = bar_start[notes.bar] + notes.position
    return notes, onset, skyline(onset, notes.pitch, notes.length)


def skyline(onset: np.ndarray, pitch: np.ndarray, length: np.ndarray) -> np.ndarray:
    """(N,) bool: the melody notes. Onset by onset, the highest note is melody unless the melody note before it
    still sounds and is higher (an accompaniment figure under a held melody note stays accompaniment)."""
    top = np.zeros(len(onset), dtype=bool)
    order = np.lexsort((-pitch, onset))  # by onset, highest first
    held_pitch, held_end, previous = -1, -1, None
    for i in order.tolist():
        if onset[i] == previous:
            continue
        previous = onset[i]
        if held_end > onset[i] and held_pitch > pitch[i]:
            continue
        top[i] = True
        held_pitch, held_end = int(pitch[i]), int(onset[i] + max(int(length[i]), 1))
    return top


def _arrangement(notes: Notes, onset: np.ndarray, keep: np.ndarray, vocab: RemiVocab, *, exact: bool = False) -> list:
    """The kept notes with each pitch replaced by ``12 * octave + rank`` (rank among the kept notes of its onset;
    ``exact``: the pitch kept), as :func:`_emit` events."""
    index = np.flatnonzero(keep)
    order = index[np.lexsort((notes.pitch[index], onset[index]))]
    out, previous, rank = [], None, 0
    for i in order.tolist():
        rank = rank + 1 if onset[i] == previous else 0
        previous = onset[i]
        pitch = int(notes.pitch[i]) if exact else 12 * (int(notes.pitch[i]) // 12) + min(rank, MAX_RANK)
        out.append(((int(notes.bar[i]), int(notes.position[i])),
                    (pitch, vocab.pitch_id(pitch), int(notes.duration_id[i]))))
    return out


def _chords(notes: Notes, onset: np.ndarray, keep: np.ndarray, vocab: RemiVocab, bar_length: np.ndarray,
            bar_start: np.ndarray) -> list:
    """For each beat (a quarter note), the pitch classes of the kept notes sounding in it, as beat-long notes
    (:func:`_emit` events)."""
    per_beat = vocab.positions_per_beat
    beat_id = _duration_id(vocab, per_beat)
    start, end = onset[keep], onset[keep] + np.maximum(notes.length[keep], 1)
    classes = notes.pitch[keep] % 12
    out = []
    for bar, (first, length) in enumerate(zip(bar_start.tolist(), bar_length.tolist())):
        for position in range(0, length, per_beat):
            lo, hi = first + position, first + min(position + per_beat, length)
            sounding = np.unique(classes[(start < hi) & (end > lo)])
            out += [((bar, position), (CHORD_OCTAVE + pc, vocab.pitch_id(CHORD_OCTAVE + pc), beat_id))
                    for pc in sounding.tolist()]
    return out


def _duration_id(vocab: RemiVocab, positions: int) -> int:
    """The Duration id closest to ``positions`` long."""
    ids = vocab.ids_of("Duration")
    return int(ids[np.argmin(np.abs(vocab.duration_of[ids] - positions))])


def _emit(events: list, bar_meters: list[int], vocab: RemiVocab) -> np.ndarray:
    """REMI base ids of ``((bar, position), (sort key, *ids))`` events: every bar, its meter, then at each position
    its events' ids, in sort-key order."""
    by_bar: list[list] = [[] for _ in bar_meters]
    for (bar, position), event in events:
        by_bar[bar].append((position, event))
    out = []
    for bar, meter in enumerate(bar_meters):
        out.append(vocab.bar_id)
        if meter >= 0:
            out.append(meter)
        previous = None
        for position, event in sorted(by_bar[bar]):
            if position != previous:
                out.append(vocab.position_id(position))
                previous = position
            out += event[1:]
    return np.asarray(out, dtype=np.int64)

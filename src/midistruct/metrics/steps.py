"""MusicVAE's melody representation and its per-step accuracy (Roberts et al. 2018, Table 1).

A melody is one event per 16th note (4 steps per quarter): the pitch of a note starting there,
``NOTE_OFF`` where the sounding note stops and a rest begins, or ``NO_EVENT`` (hold the note or
the rest). Polyphonic music is reduced to its skyline: the highest pitch starting at each step;
a new onset ends the note before it, as in a monophonic line.
"""

from __future__ import annotations

import math

import numpy as np

NOTE_OFF = -1
NO_EVENT = -2
STEPS_PER_QUARTER = 4


def melody_events(notes: np.ndarray, n_steps: int, *, steps_per_quarter: int = STEPS_PER_QUARTER) -> np.ndarray:
    """(n_steps,) event per step of the skyline of ``notes`` (N, 3): pitch, NOTE_OFF or NO_EVENT."""
    events = np.full(n_steps, NO_EVENT, dtype=np.int64)
    if len(notes) == 0:
        return events
    on = np.round(notes[:, 0] * steps_per_quarter).astype(np.int64)
    off = np.maximum(np.round((notes[:, 0] + notes[:, 1]) * steps_per_quarter).astype(np.int64), on + 1)
    order = np.lexsort((-notes[:, 2], on))  # by onset, highest pitch first
    onsets, ends, pitches = [], [], []
    for i in order:
        if onsets and on[i] == onsets[-1]:  # a lower note starting with the top one
            continue
        onsets.append(on[i]), ends.append(off[i]), pitches.append(int(notes[i, 2]))
    for k, (start, end, pitch) in enumerate(zip(onsets, ends, pitches)):
        if start >= n_steps:
            break
        events[start] = pitch
        next_on = onsets[k + 1] if k + 1 < len(onsets) else math.inf
        if end < next_on and end < n_steps:
            events[end] = NOTE_OFF
    return events


def n_steps_of(*note_arrays: np.ndarray, quarters: float | None = None,
               steps_per_quarter: int = STEPS_PER_QUARTER) -> int:
    """Steps covering ``quarters`` quarter notes, else the latest note end of the arrays."""
    if quarters is None:
        quarters = max((float((n[:, 0] + n[:, 1]).max()) for n in note_arrays if len(n)), default=0.0)
    return max(int(math.ceil(quarters * steps_per_quarter - 1e-9)), 1)


def step_accuracy(reference: np.ndarray, estimate: np.ndarray, *, n_steps: int | None = None,
                  quarters: float | None = None) -> float:
    """Fraction of 16th steps whose melody event matches (MusicVAE's reconstruction accuracy).

    ``n_steps`` (or ``quarters``) fixes the span compared, normally the reference window's length;
    by default the span covers both arrays' notes.
    """
    n = n_steps or n_steps_of(reference, estimate, quarters=quarters)
    return float(np.mean(melody_events(reference, n) == melody_events(estimate, n)))


def step_distance(a: np.ndarray, b: np.ndarray, *, n_steps: int | None = None) -> float:
    """Normalised Hamming distance between two melodies' step events (MusicVAE's Fig. 5)."""
    return 1.0 - step_accuracy(a, b, n_steps=n_steps)


def onset_pitch_hits(reference: np.ndarray, estimate: np.ndarray) -> tuple[int, int]:
    """(hits, onsets) for two (n_steps,) event arrays from :func:`melody_events`: the true onsets, and those
    where the estimate starts a note of the same pitch (issue 14's headline: step accuracy counts hold steps,
    so a monotone on the right rhythm scores ~0.7 by it; this counts only the notes)."""
    onsets = reference >= 0
    return int((estimate[onsets] == reference[onsets]).sum()), int(onsets.sum())


def monotone_hits(reference: np.ndarray) -> tuple[int, int]:
    """(hits, onsets) of the monotone baseline: the window's most common onset pitch repeated on the true
    rhythm (``reference``: (n_steps,) events); the floor a reconstruction that only gets the rhythm reaches."""
    pitches = reference[reference >= 0]
    if len(pitches) == 0:
        return 0, 0
    return int(np.bincount(pitches).max()), len(pitches)


def onset_agreement(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Fraction of steps where both event arrays agree on whether a note starts (the rhythm, pitch ignored)."""
    return float(np.mean((reference >= 0) == (estimate >= 0)))

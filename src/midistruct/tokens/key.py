"""The key of a passage and the move to a canonical key (issue 14, item 2): the one owner of the key finder.

A model trained with ``augment.key: canonical`` reads every piece moved to C major or A minor (by the key the
Krumhansl-Schmuckler key finder hears in the whole piece), so that its codes hold scale degrees and contour, not
the key; the semitone shift is kept beside the codes (``PieceLatents.shifts``) and undone after decoding, so a
reconstruction comes back in its own key. :data:`KEY_MODES` names the options.

Ids here are base ids (no BPE): a shift moves ``Pitch`` tokens (:meth:`RemiVocab.shift_pitches`).
"""

from __future__ import annotations

import numpy as np

KEY_MODES = ("absolute", "canonical")  # augment.key: pitches as written, or each piece in C major / A minor
CANONICAL_TONIC = {"major": 0, "minor": 9}  # C major, A minor: one key signature, no sharps or flats

# Krumhansl & Kessler (1982) probe-tone profiles, C major and C minor
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def key_correlations(pitch_classes: np.ndarray) -> np.ndarray:
    """(24,) correlation of a pitch-class histogram (12,) with each major key's profile (C first), then each
    minor key's: the Krumhansl-Schmuckler key finder's scores (zeros for a flat histogram)."""
    out = np.zeros(24)
    if pitch_classes.std() == 0:
        return out
    for k, profile in enumerate((MAJOR_PROFILE, MINOR_PROFILE)):
        for tonic in range(12):
            out[12 * k + tonic] = np.corrcoef(pitch_classes, np.roll(profile, tonic))[0, 1]
    return out


def key_of_histogram(pitch_classes: np.ndarray) -> tuple[int, str] | None:
    """(tonic pitch class, "major" / "minor") that a pitch-class histogram (12,) correlates with best; None when
    it is flat (no notes)."""
    if pitch_classes.std() == 0:
        return None
    best = int(np.argmax(key_correlations(pitch_classes)))
    return best % 12, ("major", "minor")[best // 12]


def pitch_class_histogram(ids, vocab) -> np.ndarray:
    """(12,) duration-weighted pitch classes of base ids (T,): each ``Pitch`` weighted by the length of the
    ``Duration`` after it (in positions; 1 when none follows)."""
    ids = np.asarray(ids, dtype=np.int64)
    pitches = vocab.pitch_of[ids]
    at = np.flatnonzero(pitches >= 0)
    if len(at) == 0:
        return np.zeros(12)
    lengths = vocab.duration_of[ids]
    durations = np.flatnonzero(lengths >= 0)
    nxt = np.searchsorted(durations, at, side="right")  # the first Duration after each Pitch
    weights = np.ones(len(at))
    found = nxt < len(durations)
    weights[found] = np.maximum(lengths[durations[nxt[found]]], 1)
    return np.bincount(pitches[at] % 12, weights=weights, minlength=12).astype(float)


def key_of(windows: list[np.ndarray], vocab) -> tuple[int, str] | None:
    """The key of a piece given as its windows of base ids (the finder reads them all at once); None without
    notes."""
    return key_of_histogram(sum((pitch_class_histogram(w, vocab) for w in windows), np.zeros(12)))


def canonical_key_of(windows: list[np.ndarray], vocab) -> tuple[int, str] | None:
    """Which of the two canonical keys, C major or A minor, a passage written by a model that reads a canonical
    key is in (the one whose profile correlates better with its pitch classes); None without notes. The model
    wrote it in one of them, so the question is only which: asking the finder all 24 keys of a 2-bar passage
    often hears the dominant or a neighbour instead."""
    pitch_classes = sum((pitch_class_histogram(w, vocab) for w in windows), np.zeros(12))
    if pitch_classes.std() == 0:
        return None
    scores = key_correlations(pitch_classes)
    major, minor = scores[CANONICAL_TONIC["major"]], scores[12 + CANONICAL_TONIC["minor"]]
    return (CANONICAL_TONIC["major"], "major") if major >= minor else (CANONICAL_TONIC["minor"], "minor")


def signature_of(key: tuple[int, str] | None) -> int:
    """The key signature of ``key`` as the pitch class of its major key's tonic (0..11: D major and B minor are
    both 2, two sharps); -1 for None (no notes)."""
    if key is None:
        return -1
    return (key[0] + (3 if key[1] == "minor" else 0)) % 12


def signature_closeness(a, b) -> np.ndarray:
    """How near key signatures ``a`` and ``b`` (:func:`signature_of`, arrays broadcast together) lie on the circle
    of fifths: the cosine of the angle between them, 1 for the same signature, 0.87 one sharp or flat apart, 0.5
    two, -1 six (C and F#); 0 where either is unknown (-1)."""
    a, b = np.asarray(a), np.asarray(b)
    fifths = 2 * np.pi / 12 * ((a * 7) % 12 - (b * 7) % 12)
    return np.where((a < 0) | (b < 0), 0.0, np.cos(fifths))


def nearer_move(source: int, target: int) -> int:
    """Semitones (-6..5) from pitch class ``source`` to ``target`` by the nearer way."""
    step = (target - source) % 12
    return step - 12 if step >= 6 else step


def canonical_shift(key: tuple[int, str] | None) -> int:
    """Semitones (-6..5) that move ``key``'s tonic to C (major) or A (minor) by the nearer way; 0 for None."""
    return 0 if key is None else nearer_move(key[0], CANONICAL_TONIC[key[1]])


def fitting_shifts(windows: list[np.ndarray], shift: int, vocab) -> list[int]:
    """Of ``shift`` and the same move an octave up or down, those that keep every pitch of ``windows`` in the
    vocabulary's range, smallest first (none when none does)."""
    low, high = -127, 127
    for w in windows:
        low, high = vocab.allowed_shifts(w, low, high)
    return [s for s in sorted((shift, shift - 12, shift + 12), key=abs) if low <= s <= high]


def fitted_shift(windows: list[np.ndarray], shift: int, vocab) -> int:
    """The first of :func:`fitting_shifts`; 0 when none fits."""
    fits = fitting_shifts(windows, shift, vocab)
    return fits[0] if fits else 0


def to_canonical(windows: list[np.ndarray], vocab) -> tuple[list[np.ndarray], int]:
    """A piece's windows (base ids) moved to C major / A minor by its key (:func:`key_of`), and the shift
    applied (undo it with ``vocab.shift_pitches(ids, -shift)``)."""
    shift = fitted_shift(windows, canonical_shift(key_of(windows, vocab)), vocab)
    return [vocab.shift_pitches(w, shift) for w in windows], shift

"""Musical attributes of a passage, computed from its notes: the quantities attribute vectors
steer and the statistics samples are compared on.

Each attribute is ``f(notes, quarters) -> float`` for a note array (N, 3) spanning ``quarters``
quarter notes. Registry: :data:`ATTRIBUTES`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from midistruct.metrics.steps import STEPS_PER_QUARTER
from midistruct.tokens.key import key_correlations, key_of_histogram  # noqa: F401 - key_correlations re-exported


def estimated_key(notes: np.ndarray) -> tuple[int, str] | None:
    """Tonic pitch class and mode ("major" / "minor") of notes (N, 3) by the Krumhansl-Schmuckler key finder
    (:mod:`midistruct.tokens.key`) on their duration-weighted pitch classes; None without notes."""
    if len(notes) == 0:
        return None
    return key_of_histogram(np.bincount(notes[:, 2].astype(np.int64) % 12, weights=notes[:, 1], minlength=12))


def note_density(notes: np.ndarray, quarters: float) -> float:
    """Notes per quarter note."""
    return len(notes) / max(quarters, 1e-9)


def pitch_range(notes: np.ndarray, quarters: float) -> float:
    """Highest minus lowest pitch, in semitones (0 without notes)."""
    return float(np.ptp(notes[:, 2])) if len(notes) else 0.0


def mean_pitch(notes: np.ndarray, quarters: float) -> float:
    """Average MIDI pitch (the register); 0 without notes."""
    return float(notes[:, 2].mean()) if len(notes) else 0.0


def polyphony(notes: np.ndarray, quarters: float) -> float:
    """Mean number of notes sounding, over the 16th steps where at least one sounds."""
    if len(notes) == 0:
        return 0.0
    n = max(int(np.ceil(quarters * STEPS_PER_QUARTER)), 1)
    counts = np.zeros(n + 1, dtype=np.int64)
    on = np.clip(np.round(notes[:, 0] * STEPS_PER_QUARTER).astype(np.int64), 0, n)
    off = np.clip(np.maximum(np.round((notes[:, 0] + notes[:, 1]) * STEPS_PER_QUARTER).astype(np.int64), on + 1), 0, n)
    np.add.at(counts, on, 1)
    np.add.at(counts, off, -1)
    sounding = np.cumsum(counts)[:n]
    return float(sounding[sounding > 0].mean()) if (sounding > 0).any() else 0.0


def syncopation(notes: np.ndarray, quarters: float) -> float:
    """Fraction of distinct onset times that fall off the quarter-note beat (0 without notes)."""
    if len(notes) == 0:
        return 0.0
    onsets = np.unique(np.round(notes[:, 0] * 8) / 8)  # on the 32nd grid
    return float(np.mean(np.abs(onsets - np.round(onsets)) > 1e-6))


_DIATONIC = np.array([1, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 1], dtype=bool)  # C major's pitch classes


def scale_consistency(notes: np.ndarray, quarters: float) -> float:
    """Fraction of notes in the best-fitting diatonic scale (the largest over the 12 transpositions
    of the major scale, which also hold the minor and church modes), as in Mogren 2016 (C-RNN-GAN).
    Key-invariant: 1 for any diatonic passage, lower for chromatic ones; 0 without notes."""
    if len(notes) == 0:
        return 0.0
    counts = np.bincount(notes[:, 2].astype(np.int64) % 12, minlength=12)
    in_scale = [counts[np.roll(_DIATONIC, k)].sum() for k in range(12)]
    return float(max(in_scale) / len(notes))


ATTRIBUTES: dict[str, Callable[[np.ndarray, float], float]] = {
    "note_density": note_density,
    "pitch_range": pitch_range,
    "mean_pitch": mean_pitch,
    "polyphony": polyphony,
    "syncopation": syncopation,
    "scale_consistency": scale_consistency,
}


def attribute(name: str) -> Callable[[np.ndarray, float], float]:
    """The attribute function called ``name``; an unknown name lists the valid ones."""
    if name not in ATTRIBUTES:
        raise KeyError(f"unknown attribute {name!r}; valid: {', '.join(ATTRIBUTES)}")
    return ATTRIBUTES[name]


def measure(notes: np.ndarray, quarters: float, names=None) -> dict[str, float]:
    """``{name: value}`` of the attributes ``names`` (all by default) of one passage."""
    return {name: attribute(name)(notes, quarters) for name in (names or ATTRIBUTES)}

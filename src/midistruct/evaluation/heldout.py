"""Held out means held out: evaluation windows that recur in the training windows.

Folk tunes share phrases across tunes and pop songs repeat themselves, so a window of the test
split can occur verbatim (same tokens) in the training split, often transposed. Such windows
measure memory, not generalisation; evaluation excludes them (and reports how many there were).
A window's key is its token ids with each pitch replaced by its distance to the window's lowest
pitch, so transposed copies share a key.
"""

from __future__ import annotations

import hashlib

import numpy as np

from midistruct.tokens.remi import RemiVocab


def transposition_key(ids: np.ndarray, pitch_of: np.ndarray) -> bytes:
    """A digest of ``ids`` (L,) equal for every transposition: pitches relative to the lowest one.

    ``pitch_of`` (V,) maps a token id to its MIDI pitch, -1 for tokens that are not pitches.
    """
    ids = np.asarray(ids, dtype=np.int64)
    pitches = pitch_of[ids]
    is_pitch = pitches >= 0
    key = ids.copy()
    if is_pitch.any():
        key[is_pitch] = -1 - (pitches[is_pitch] - pitches[is_pitch].min())
    return hashlib.blake2b(key.tobytes(), digest_size=16).digest()


def recurring_windows(shards, *, split: str = "test", against: str = "train") -> np.ndarray:
    """(W,) bool over ``split``'s windows: True where the window occurs in ``against``, in any transposition."""
    pitch_of = RemiVocab(shards.tokenizer()).pitch_of  # BPE merges count as non-pitches: exact copies only
    seen = {transposition_key(w, pitch_of) for w in _windows(shards.split(against))}
    return np.array([transposition_key(w, pitch_of) in seen for w in _windows(shards.split(split))], dtype=bool)


def _windows(arrays):
    for i in range(arrays.n_windows):
        yield arrays.window(i)[0]

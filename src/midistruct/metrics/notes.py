"""Note arrays from scores, and note-level transcription metrics (mir_eval).

A note array is (N, 3): onset (quarter notes), duration (quarter notes), MIDI pitch.
"""

from __future__ import annotations

import numpy as np


def notes_of(score) -> np.ndarray:
    """(N, 3) onset, duration (quarter notes) and pitch of every non-drum note of a symusic Score,
    sorted by onset then pitch."""
    rows = [(n.time / score.tpq, n.duration / score.tpq, n.pitch)
            for t in score.tracks if not t.is_drum for n in t.notes]
    notes = np.array(rows, dtype=np.float64).reshape(-1, 3)
    return notes[np.lexsort((notes[:, 2], notes[:, 0]))]


def window_quarters(score, n_bars: int) -> float:
    """Length in quarter notes of the first ``n_bars`` bars of ``score`` under its time signatures."""
    from midistruct.tokens.segment import bar_start_ticks

    return float(bar_start_ticks(score.time_signatures, score.tpq, n_bars + 1)[-1]) / score.tpq


def transcription_f1(reference: np.ndarray, estimate: np.ndarray, *, offsets: bool = False,
                     onset_tolerance: float = 0.06, offset_ratio: float = 0.2) -> float:
    """Note-level F1 of ``estimate`` against ``reference`` (mir_eval.transcription).

    A note matches on pitch and onset (within ``onset_tolerance`` quarter notes: the default,
    under half a 32nd, counts only exact grid onsets) and, with ``offsets=True``, also on offset
    (within ``offset_ratio`` of the reference note's duration, or ``onset_tolerance``).
    Two empty arrays score 1.0; one empty array scores 0.0.
    """
    import mir_eval

    if len(reference) == 0 or len(estimate) == 0:
        return float(len(reference) == len(estimate))

    def intervals(n):
        return np.stack([n[:, 0], n[:, 0] + np.maximum(n[:, 1], 1e-3)], axis=1)

    _, _, f1, _ = mir_eval.transcription.precision_recall_f1_overlap(
        intervals(reference), mir_eval.util.midi_to_hz(reference[:, 2]),
        intervals(estimate), mir_eval.util.midi_to_hz(estimate[:, 2]),
        onset_tolerance=onset_tolerance, offset_ratio=offset_ratio if offsets else None,
        offset_min_tolerance=onset_tolerance)
    return float(f1)


def onset_f1(reference: np.ndarray, estimate: np.ndarray, *, tolerance_quarters: float = 0.06) -> float:
    """Note-level F1 on onset and pitch, offsets ignored (see :func:`transcription_f1`)."""
    return transcription_f1(reference, estimate, onset_tolerance=tolerance_quarters)

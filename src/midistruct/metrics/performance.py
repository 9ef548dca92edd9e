"""What a tokenizer keeps of a performance (issue 19, item 4): notes, onsets, micro-timing, velocity.

A score as ``prepare`` reads it (:meth:`midistruct.tokens.encode.PieceEncoder.prepared`) is tokenized and decoded
back; the decoded notes are matched to the notes read (same pitch, nearest onset within a quarter note) and
compared. docs/scripts/performance_tokens.py runs it over POP909 for several tokenizer settings.

Note tables are (N, 4): onset and duration (quarter notes), pitch, velocity.
"""

from __future__ import annotations

import numpy as np

from midistruct.tokens.encode import PieceEncoder, task_of
from midistruct.tokens.tokenizer import decode_ids
from midistruct.tokens.validate import Skip, load_score


def note_table(score) -> np.ndarray:
    """(N, 4) onset and duration (quarter notes), pitch, velocity of every note of the score's tracks."""
    rows = [(n.time / score.tpq, n.duration / score.tpq, n.pitch, n.velocity) for t in score.tracks for n in t.notes]
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


def match(ref: np.ndarray, dec: np.ndarray) -> list[tuple[int, int]]:
    """Pairs (i, j) of ref and decoded notes of one pitch, nearest onsets first, within a quarter note."""
    from scipy.optimize import linear_sum_assignment

    pairs = []
    for pitch in np.unique(ref[:, 2]):
        a, b = np.flatnonzero(ref[:, 2] == pitch), np.flatnonzero(dec[:, 2] == pitch)
        if not len(b):
            continue
        cost = np.abs(ref[a, 0][:, None] - dec[b, 0][None, :])
        rows, cols = linear_sum_assignment(np.minimum(cost, 1.0))
        pairs += [(a[r], b[c]) for r, c in zip(rows, cols) if cost[r, c] < 1.0]
    return pairs


def grid_offset(onsets: np.ndarray) -> np.ndarray:
    """Offset of each onset (quarters) from the nearest sixteenth note."""
    return onsets - np.round(onsets * 4) / 4


def measure(cfg, pieces, *, window_tokens: int) -> dict:
    """Over ``pieces`` (corpus :class:`~midistruct.corpus.Piece` records) tokenized with ``cfg.tokenizer``:
    ``tokens_per_bar``, ``windows_over_limit`` (4-bar windows, hop 2, over ``window_tokens``), ``notes_kept``,
    ``onset_error_ms``, ``off_grid_notes`` (share off the sixteenth grid), ``microtiming_correlation`` (their
    offsets from the grid before and after), ``velocity_mae``, ``velocity_correlation``; ``songs`` read."""
    encoder = PieceEncoder(cfg)
    per_bar, over, kept, onset_ms, ref_off, dec_off, vel_ref, vel_dec, n_ref = [], [], [], [], [], [], [], [], 0
    for piece in pieces:
        meter, downbeat = task_of(piece.tags)
        try:
            read = encoder.prepared(load_score(piece.path), time_signature=meter, downbeat=downbeat)
            ids = encoder.tokenize(load_score(piece.path), time_signature=meter, downbeat=downbeat)
        except Skip:
            continue
        starts = encoder.vocab.bar_starts(ids)
        per_bar.append(len(ids) / max(len(starts), 1))
        ends = np.append(starts, len(ids))
        over += [ends[min(k + 4, len(starts))] - ends[k] + 1 > window_tokens for k in range(0, len(starts) - 3, 2)]
        ref, dec = note_table(read), note_table(decode_ids(encoder.tokenizer, ids))
        qpm = float(read.tempos[0].qpm) if len(read.tempos) else 120.0
        pairs = np.array(match(ref, dec)).reshape(-1, 2)
        n_ref += len(ref)
        kept.append(len(pairs))
        r, d = ref[pairs[:, 0]], dec[pairs[:, 1]]
        onset_ms += list(np.abs(r[:, 0] - d[:, 0]) * 60000 / qpm)
        ref_off += list(grid_offset(r[:, 0]))
        dec_off += list(grid_offset(d[:, 0]))
        vel_ref += list(r[:, 3])
        vel_dec += list(d[:, 3])
    ref_off, dec_off, vel_ref, vel_dec = map(np.array, (ref_off, dec_off, vel_ref, vel_dec))
    off = np.abs(ref_off) > 1e-6
    corr = lambda a, b: float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else 0.0
    return {"songs": len(per_bar), "tokens_per_bar": float(np.mean(per_bar)),
            "windows_over_limit": float(np.mean(over)), "notes_kept": float(sum(kept) / max(n_ref, 1)),
            "onset_error_ms": float(np.mean(onset_ms)), "off_grid_notes": float(off.mean()),
            "microtiming_correlation": corr(ref_off[off], dec_off[off]),
            "velocity_mae": float(np.abs(vel_ref - vel_dec).mean()), "velocity_correlation": corr(vel_ref, vel_dec)}

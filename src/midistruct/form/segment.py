"""From per-bar vectors to sections: the self-similarity matrix, boundary evidence per bar line, labels.

Two ways to the boundaries (``METHODS``), both measured on POP909 songs outside the evaluated ones
(docs/scripts/form_eval.py --songs dev):

- ``repetition`` (the default): where a repetition starts or ends. A stretch of ``k`` bars from bar b that
  repeats the ``k`` bars from some bar j, while the bars before b do not repeat those before j, is a diagonal
  stripe of the self-similarity matrix starting at (b, j): the repetition-based boundary evidence of the
  "structure features" (Serrà et al. 2012, "Unsupervised detection of music boundaries by time series
  structure features"), read here straight off the matrix's diagonals. Foote's novelty is added at half
  weight so that sections that differ without repeating are found too. The boundaries are the best path of
  a dynamic program over all segmentations: each boundary gains its evidence less ``cost``, each section
  whose length is not a multiple of ``period`` bars (POP909's phrases are 4 or 8 bars long, two in three)
  loses ``off_period``; a song with no bar line of enough evidence is one section.
- ``foote``: the peaks of Foote's checkerboard novelty (Foote 2000, "Automatic audio segmentation using a
  measure of audio novelty"): a Gaussian-tapered checkerboard kernel slid along the diagonal scores how much
  the ``half`` bars before a bar line resemble each other and the ``half`` bars after it, against how much
  the two sides resemble each other. Chosen before over ruptures' kernel change points and librosa's
  agglomerative segmentation; boundaries only where the bars' content changes.
- ``supervised``: the curves above and more, read by a small head learnt from POP909's phrase labels
  (:mod:`midistruct.form.supervised`), then the same phrase dynamic program.

Labels: a section takes the label of the earlier section it is most alike (the mean similarity of their
bars aligned from their starts, or from their ends when that is higher) when that is at least
``threshold``, else a new letter: A, B, A, C ...

Shapes: ``x`` (NB, D) one vector per bar; ``ssm`` (NB, NB); ``novelty``, ``repetition``, ``evidence`` (NB,),
entry b scoring the bar line before bar b (entry 0, the song's start, is 0); boundaries are bar indices,
0 and NB included.
"""

from __future__ import annotations

import string

import numpy as np

METHODS = ("repetition", "foote", "supervised")  # supervised: a learnt head (supervised.py)


def self_similarity(x: np.ndarray, *, center: bool = True) -> np.ndarray:
    """(NB, NB) cosine similarity of the bars' vectors (NB, D). ``center`` subtracts the song's mean vector
    first, so what every bar shares (the key, the groove) does not make every pair alike. Two empty bars
    (zero vectors) are alike (1), an empty bar and a full one are not (0)."""
    x = np.asarray(x, dtype=np.float64)
    empty = ~x.any(axis=1)
    if center and (~empty).sum() > 1:
        x = np.where(empty[:, None], 0.0, x - x[~empty].mean(axis=0))
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    unit = np.divide(x, norm, out=np.zeros_like(x), where=norm > 1e-12)
    ssm = unit @ unit.T
    ssm[np.ix_(empty, empty)] = 1.0
    return ssm


def checkerboard(half: int) -> np.ndarray:
    """(2 half, 2 half) Gaussian-tapered checkerboard kernel: + on the two diagonal quadrants, - off them."""
    offsets = np.arange(-half, half) + 0.5  # bar centres relative to the bar line
    sign = np.sign(offsets)
    taper = np.exp(-0.5 * (offsets / (0.5 * half)) ** 2)
    return np.outer(sign * taper, sign * taper)


def novelty(ssm: np.ndarray, *, half: int = 4) -> np.ndarray:
    """(NB,) Foote novelty of the bar line before each bar, the matrix zero-padded at the ends, negative
    values 0. Scaled so that a change between two halves whose bars are all alike (1) and unlike each other
    (0) scores 1; :func:`relative` gives the curve as a share of its largest entry."""
    n = len(ssm)
    kernel = checkerboard(half)
    padded = np.zeros((n + 2 * half, n + 2 * half))
    padded[half : half + n, half : half + n] = ssm
    curve = np.array([0.0] + [float((kernel * padded[b : b + 2 * half, b : b + 2 * half]).sum())
                              for b in range(1, n)])
    return np.maximum(curve, 0.0) * 2 / np.abs(kernel).sum()


def relative(curve: np.ndarray) -> np.ndarray:
    """``curve`` over its largest entry (all zeros stay zeros)."""
    peak = curve.max() if len(curve) else 0.0
    return curve / peak if peak > 0 else curve


def repetition(ssm: np.ndarray, *, windows: tuple[int, ...] = (2, 4), end_weight: float = 0.5) -> np.ndarray:
    """(NB,) how clearly a repetition starts or ends at each bar line, averaged over stretch lengths ``windows``.

    For a length k, ``forward[b, j]`` is the mean similarity of bars b..b+k-1 with bars j..j+k-1 and
    ``backward[b, j]`` that of bars b-k..b-1 with j-k..j-1 (bars outside the song count as unlike; negative
    similarities as 0). A repetition starts at b when some other bar j has forward - backward high, and ends
    there when backward - forward is; the start counts fully, the end ``end_weight`` (a repeat's last bar
    often varies, so an end is found a bar early more often than a start)."""
    n = len(ssm)
    other = ~np.eye(n, dtype=bool)
    curve = np.zeros(n)
    for k in windows:
        forward, backward = _diagonal_means(np.maximum(ssm, 0.0), k)
        start = np.where(other, forward - backward, -np.inf).max(axis=1, initial=0.0)
        end = np.where(other, backward - forward, -np.inf).max(axis=1, initial=0.0)
        curve += start + end_weight * end
    curve[0] = 0.0
    return curve / len(windows)


def _diagonal_means(ssm: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(NB, NB) each: mean of ssm[b + t, j + t] over t in 0..k-1, and over t in -k..-1 (zero-padded)."""
    n = len(ssm)
    padded = np.zeros((n + 2 * k, n + 2 * k))
    padded[k : k + n, k : k + n] = ssm
    forward = np.mean([padded[k + t : k + t + n, k + t : k + t + n] for t in range(k)], axis=0)
    backward = np.mean([padded[k - t : k - t + n, k - t : k - t + n] for t in range(1, k + 1)], axis=0)
    return forward, backward


def evidence(ssm: np.ndarray, *, half: int = 4, foote_weight: float = 0.5, floor: float = 0.8) -> np.ndarray:
    """(NB,) boundary evidence for the ``repetition`` method, 0..1: :func:`repetition` plus ``foote_weight``
    times :func:`novelty`, rescaled from the song's median (0) to its largest entry (1), and 0 wherever
    the sum is below ``floor``, so that a song without clear repetitions or changes gets no boundaries."""
    raw = repetition(ssm) + foote_weight * novelty(ssm, half=half)
    if len(raw) < 2:
        return np.zeros(len(raw))
    median, top = float(np.median(raw[1:])), float(raw.max())
    if top <= median:
        return np.zeros(len(raw))
    return np.where(raw >= floor, np.maximum(raw - median, 0.0) / (top - median), 0.0)


def phrase_boundaries(curve: np.ndarray, *, period: int = 4, off_period: float = 0.3, cost: float = 0.1,
                      min_bars: int = 2) -> list[int]:
    """Section starts and the end, [0, ..., NB], maximising the sum over boundaries b of ``curve[b] - cost``
    less ``off_period`` per section whose length is not a multiple of ``period``; sections last at least
    ``min_bars`` bars (or the whole song). Dynamic programming over the section ends, O(NB^2)."""
    n = len(curve)
    if n < 2:
        return [0, n]
    gain = np.concatenate([[0.0], np.asarray(curve[1:], dtype=np.float64) - cost])  # no boundary gain at 0
    best, back = np.full(n + 1, -np.inf), np.zeros(n + 1, dtype=np.int64)
    best[0] = 0.0
    for end in range(1, n + 1):
        starts = np.arange(0, end - min_bars + 1) if end >= min_bars else np.zeros(1, dtype=np.int64)
        value = best[starts] + gain[starts] - off_period * ((end - starts) % period != 0)
        back[end] = starts[int(np.argmax(value))]
        best[end] = value.max()
    bounds = [n]
    while bounds[-1] > 0:
        bounds.append(int(back[bounds[-1]]))
    return bounds[::-1]


def boundaries(curve: np.ndarray, *, min_bars: int = 2, threshold: float = 0.2) -> list[int]:
    """Section starts: 0, the peaks of the novelty ``curve`` (NB,) at least ``min_bars`` apart whose
    prominence is at least ``threshold`` (of the largest peak, 1), and NB."""
    from scipy.signal import find_peaks

    n = len(curve)
    if n < 2:
        return [0, n]
    # the curve is padded with a 0 at both ends so a peak may sit at bar 1 or at the last bar
    found, _ = find_peaks(np.concatenate([[0.0], curve, [0.0]]), distance=max(min_bars, 1), prominence=threshold)
    inner = [int(p) - 1 for p in found if 1 <= p - 1 < n]
    return [0, *inner, n]


def labels(ssm: np.ndarray, bounds: list[int], *, threshold: float = 0.5) -> list[str]:
    """A letter per section (``bounds`` as :func:`boundaries` gives them): the label of the most alike earlier
    section when their aligned similarity is at least ``threshold``, else the next unused letter (A..Z,
    then A1, B1 ...)."""
    spans = list(zip(bounds[:-1], bounds[1:]))
    out: list[str] = []
    for i, (start, end) in enumerate(spans):
        scores = [(_aligned_similarity(ssm, (start, end), spans[j]), j) for j in range(i)]
        best = max(scores, default=(-np.inf, -1))
        out.append(out[best[1]] if best[0] >= threshold else _letter(len(set(out))))
    return out


def _aligned_similarity(ssm: np.ndarray, a: tuple[int, int], b: tuple[int, int]) -> float:
    """Mean similarity of bar a0+k with bar b0+k over the shorter section's length, or of the sections' last
    bars aligned the same way when that is higher (a section with an extra bar in front, a pickup or a fill,
    still matches its repeat)."""
    length = min(a[1] - a[0], b[1] - b[0])
    steps = np.arange(length)
    from_starts = ssm[a[0] + steps, b[0] + steps].mean()
    from_ends = ssm[a[1] - length + steps, b[1] - length + steps].mean()
    return float(max(from_starts, from_ends))


def _letter(k: int) -> str:
    letter = string.ascii_uppercase[k % 26]
    return letter if k < 26 else f"{letter}{k // 26}"

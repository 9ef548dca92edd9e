"""From per-bar vectors to sections: the self-similarity matrix, a novelty curve, boundaries, labels.

Boundaries: Foote's checkerboard novelty (Foote 2000, "Automatic audio segmentation using a measure of
audio novelty"): a Gaussian-tapered checkerboard kernel slid along the diagonal of the self-similarity
matrix scores how much the ``half`` bars before each bar line resemble each other and the ``half`` bars
after it, against how much the two sides resemble each other; its peaks (scipy.signal.find_peaks) are the
boundaries. This was chosen over ruptures' kernel change points and librosa's agglomerative segmentation by
measurement on POP909 (docs/scripts/form_eval.py). Labels: a section takes the label of the earlier
section it is most alike (mean similarity of their bars, aligned from their starts) when that is at least
``threshold``, else a new letter: A, B, A, C ...

Shapes: ``x`` (NB, D) one vector per bar; ``ssm`` (NB, NB); ``novelty`` (NB,), its entry b scoring the bar
line before bar b; boundaries are bar indices, 0 and NB included.
"""

from __future__ import annotations

import string

import numpy as np


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
    """(NB,) Foote novelty of the bar line before each bar (entry 0, the song's start, is 0), the matrix
    zero-padded at the ends, scaled so that the largest entry is 1 (all zeros when nothing changes)."""
    n = len(ssm)
    kernel = checkerboard(half)
    padded = np.zeros((n + 2 * half, n + 2 * half))
    padded[half : half + n, half : half + n] = ssm
    curve = np.array([0.0] + [float((kernel * padded[b : b + 2 * half, b : b + 2 * half]).sum())
                              for b in range(1, n)])
    curve = np.maximum(curve, 0.0)
    peak = curve.max() if n else 0.0
    return curve / peak if peak > 0 else curve


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


def labels(ssm: np.ndarray, bounds: list[int], *, threshold: float = 0.3) -> list[str]:
    """A letter per section (``bounds`` as :func:`boundaries` gives them): the label of the most alike earlier
    section (mean similarity of their bars aligned from the starts) when that is at least ``threshold``, else
    the next unused letter (A..Z, then A1, B1 ...)."""
    spans = list(zip(bounds[:-1], bounds[1:]))
    out: list[str] = []
    for i, (start, end) in enumerate(spans):
        scores = [(_aligned_similarity(ssm, (start, end), spans[j]), j) for j in range(i)]
        best = max(scores, default=(-np.inf, -1))
        out.append(out[best[1]] if best[0] >= threshold else _letter(len(set(out))))
    return out


def _aligned_similarity(ssm: np.ndarray, a: tuple[int, int], b: tuple[int, int]) -> float:
    """Mean similarity of bar a0+k with bar b0+k over the shorter section's length."""
    length = min(a[1] - a[0], b[1] - b[0])
    return float(np.mean([ssm[a[0] + k, b[0] + k] for k in range(length)]))


def _letter(k: int) -> str:
    letter = string.ascii_uppercase[k % 26]
    return letter if k < 26 else f"{letter}{k // 26}"

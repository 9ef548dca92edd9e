"""Musical statistics of generated passages against the data's (Yang & Lerch 2018, "On the
evaluation of generative models in music", section 4).

Each passage (a note array (N, 3) spanning ``quarters`` quarter notes) gives one value of each
feature in :data:`FEATURES`: a vector (pitch-class and duration histograms) or a number (note
density, polyphony, pitch range, mean inter-onset interval). Following the paper, a feature is
compared through distances, not values: for each feature

- intra-set distances: |f(x) - f(x')| (Euclidean) over all pairs x != x' of reference passages;
- inter-set distances: |f(x) - f(y)| over all pairs of a reference passage x and a generated y;
- both sets of distances are smoothed into densities (Gaussian kernels, Scott's bandwidth, on a
  common grid) and compared: ``oa`` is the overlapping area of the two densities (1: the
  generated passages sit among the data as the data sit among themselves; 0: far apart) and
  ``kl`` the KL divergence KL(intra-reference || inter), in nats (0 when they match).

(The paper's reference code evaluates the two densities of its KL on different grids; here both
share one grid, and the inter density is floored at 1e-10 so a far-off set gives a large finite KL.)
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from midistruct.metrics import features
from midistruct.metrics.notes import notes_of, window_quarters
from midistruct.shards.reader import ShardSet
from midistruct.tokens.tokenizer import decode_ids

# Duration classes: the nearest power-of-two note value in log scale (class boundaries at sqrt(2)
# times a value), the shortest and longest open-ended. A dotted note goes to the longer class.
DURATION_CLASSES = ("16th", "8th", "quarter", "half", "whole")


def pitch_class_histogram(notes: np.ndarray, quarters: float = 0.0) -> np.ndarray:
    """(12,) fraction of notes on each pitch class, C first (zeros without notes)."""
    counts = np.bincount(notes[:, 2].astype(np.int64) % 12, minlength=12).astype(np.float64)
    return counts / max(counts.sum(), 1.0)


def duration_histogram(notes: np.ndarray, quarters: float = 0.0) -> np.ndarray:
    """(5,) fraction of notes in each of :data:`DURATION_CLASSES` (zeros without notes)."""
    sixteenths = np.maximum(notes[:, 1], 1e-6) / 0.25
    # round half up in log2: a dotted 8th (log2 3 = 1.58) counts as a quarter
    classes = np.clip(np.floor(np.log2(sixteenths) + 0.5), 0, len(DURATION_CLASSES) - 1).astype(np.int64)
    counts = np.bincount(classes, minlength=len(DURATION_CLASSES)).astype(np.float64)
    return counts / max(counts.sum(), 1.0)


def mean_ioi(notes: np.ndarray, quarters: float = 0.0) -> float:
    """Mean interval between consecutive distinct onsets, in quarter notes (0 with fewer than 2)."""
    onsets = np.unique(notes[:, 0])
    return float(np.diff(onsets).mean()) if len(onsets) > 1 else 0.0


FEATURES: dict[str, Callable[[np.ndarray, float], np.ndarray | float]] = {
    "pitch_class_histogram": pitch_class_histogram,
    "duration_histogram": duration_histogram,
    "note_density": features.note_density,
    "polyphony": features.polyphony,
    "pitch_range": features.pitch_range,
    "ioi": mean_ioi,
    # key-invariant: the histogram above also compares keys, and a model trained with transposition
    # samples every key while a test set sits in a few (Nottingham: mostly G and D)
    "scale_consistency": features.scale_consistency,
}


def feature_matrix(passages: list[tuple[np.ndarray, float]], name: str) -> np.ndarray:
    """(P, D) feature ``name`` of each (notes, quarters) passage (D = 1 for a number)."""
    if name not in FEATURES:
        raise KeyError(f"unknown feature {name!r}; valid: {', '.join(FEATURES)}")
    rows = [np.atleast_1d(np.asarray(FEATURES[name](n, q), dtype=np.float64)) for n, q in passages]
    return np.array(rows, dtype=np.float64).reshape(len(passages), -1)


def intra_distances(a: np.ndarray) -> np.ndarray:
    """Euclidean distances between all pairs i < j of rows of ``a`` (P, D): (P (P - 1) / 2,)."""
    from scipy.spatial.distance import pdist

    return pdist(a) if len(a) > 1 else np.zeros(0)


def inter_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances between every row of ``a`` (P, D) and every row of ``b`` (Q, D): (P Q,)."""
    from scipy.spatial.distance import cdist

    return cdist(a, b).ravel()


def overlap_and_kl(p_samples: np.ndarray, q_samples: np.ndarray, *, grid_size: int = 1024) -> tuple[float, float]:
    """Overlapping area and KL(p || q) of the Gaussian-kernel densities of two 1-d samples.

    Both densities live on one grid spanning the two samples plus 4 bandwidths; each uses Scott's
    bandwidth (std * n^(-1/5)), at least 1/200 of the pooled span (so a sample of equal values is a
    narrow bump, not a spike). OA = sum min(p, q) and KL = sum p log(p / max(q, 1e-10)), p and q
    normalised to sum 1 on the grid: 1 and 0 for identical samples.
    """
    pooled = np.concatenate([p_samples, q_samples])
    span = float(np.ptp(pooled))
    floor = span / 200 if span > 0 else 1.0
    bw = [max(_scott(s), floor) for s in (p_samples, q_samples)]
    grid = np.linspace(pooled.min() - 4 * max(bw), pooled.max() + 4 * max(bw), grid_size)
    p, q = (_density(s, grid, h) for s, h in zip((p_samples, q_samples), bw))
    return float(np.minimum(p, q).sum()), float(np.sum(p * np.log(np.maximum(p, 1e-300) / np.maximum(q, 1e-10))))


def _scott(samples: np.ndarray) -> float:
    return float(np.std(samples, ddof=1)) * len(samples) ** (-1 / 5) if len(samples) > 1 else 0.0


def _density(samples: np.ndarray, grid: np.ndarray, bandwidth: float) -> np.ndarray:
    """(G,) Gaussian-kernel density of ``samples`` on ``grid``, as probabilities summing to 1.

    The samples are first binned to the nearest grid point (the grid step is at most a fifth of
    the bandwidth, so this moves each by under a tenth of a bandwidth).
    """
    step = grid[1] - grid[0]
    edges = np.append(grid - step / 2, grid[-1] + step / 2)
    counts, _ = np.histogram(samples, bins=edges)
    kernel = np.exp(-0.5 * ((grid[:, None] - grid[None, :]) / bandwidth) ** 2)  # (G, G)
    density = kernel @ counts
    return density / density.sum()


def compare(reference: list[tuple[np.ndarray, float]], generated: list[tuple[np.ndarray, float]], *,
            names: list[str] | None = None) -> dict:
    """Statistics of ``generated`` passages against ``reference`` ones, each a (notes, quarters) pair.

    Per feature ``f`` (all of :data:`FEATURES` by default): ``f.reference_mean`` and
    ``f.generated_mean`` (the mean value; a list for a histogram), ``f.intra_reference``,
    ``f.intra_generated`` and ``f.inter`` (mean distances), and ``f.oa`` / ``f.kl`` between the
    intra-reference and the inter-set distance densities (see the module docstring). Also
    ``oa_mean`` and ``kl_mean`` over the features. Each set needs at least 2 passages.
    """
    if len(reference) < 2 or len(generated) < 2:
        raise ValueError(f"need at least 2 passages per set, got {len(reference)} and {len(generated)}")
    out: dict = {"reference": len(reference), "generated": len(generated)}
    for name in names or FEATURES:
        ref, gen = feature_matrix(reference, name), feature_matrix(generated, name)
        intra, inter = intra_distances(ref), inter_distances(ref, gen)
        oa, kl = overlap_and_kl(intra, inter)
        out.update({f"{name}.reference_mean": _mean(ref), f"{name}.generated_mean": _mean(gen),
                    f"{name}.intra_reference": float(intra.mean()), f"{name}.intra_generated":
                    float(intra_distances(gen).mean()), f"{name}.inter": float(inter.mean()),
                    f"{name}.oa": oa, f"{name}.kl": kl})
    used = names or list(FEATURES)
    out["oa_mean"] = float(np.mean([out[f"{n}.oa"] for n in used]))
    out["kl_mean"] = float(np.mean([out[f"{n}.kl"] for n in used]))
    return out


def _mean(values: np.ndarray) -> float | list[float]:
    mean = values.mean(0)
    return float(mean[0]) if len(mean) == 1 else mean.round(4).tolist()


def sample_statistics(ms, folder, *, n: int = 256, temperature: float = 1.0, seed: int = 0,
                      split: str = "test", prior_scale: float = 1.0, top_p: float = 1.0, snap: bool = True) -> dict:
    """:func:`compare` ``n`` windows sampled from the prior by ``ms`` (a ``MidiStruct``) with
    ``n`` full windows (the model's bar count) of the shard folder's ``split``.

    The generated windows take the reference windows' meters, one each, so both sets have the
    same mix of meters (and, from a model that reads a canonical key, their keys); codes are drawn from the
    model's prior (:meth:`MidiStruct.sample_latents`) at ``prior_scale`` under ``torch.manual_seed(seed)`` and
    decoded at ``temperature`` (0: greedy) with nucleus ``top_p``; ``snap`` False keeps the Gaussian's bar codes
    where the prior has a bank of real ones. Adds ``temperature``, ``prior_scale``, ``top_p``, ``snap`` and
    ``generated_empty`` (the fraction of generated windows without a note).
    """
    import torch

    ms.check_shards(folder)
    arrays = ShardSet(folder).split(split)
    windows, pieces = [], []
    for i in np.random.default_rng(seed).permutation(arrays.n_windows):
        ids = arrays.window(int(i))[0]
        if ms.vocab.count_bars(ids) == ms.bars:
            windows.append(ids)
            pieces.append(int(arrays.windows[i][2]))
            if len(windows) == n:
                break
    torch.manual_seed(seed)
    z = ms.sample_latents_in_meters([ms.vocab.meter(ids) for ids in windows], scale=prior_scale, snap=snap)
    if ms.canonical:  # samples come in C major / A minor: each is moved to its reference window's piece's key
        from midistruct.shards.dataset import piece_shifts

        shifts = piece_shifts(arrays, ms.vocab)
        z.shifts = [int(shifts[p]) for p in pieces]
    tokens = ms.generate_tokens(z, temperature=temperature, top_p=top_p)

    def passage(ids) -> tuple[np.ndarray, float]:
        score = decode_ids(ms.tokenizer, ids)
        return notes_of(score), window_quarters(score, ms.bars)

    reference = [passage(ids) for ids in windows]
    generated = [passage(ids) for ids in tokens]
    out = compare(reference, generated)
    out.update({"temperature": temperature, "prior_scale": prior_scale, "top_p": top_p,
                "snap": bool(snap and getattr(ms.prior, "bank", None) is not None),
                "generated_empty": float(np.mean([len(g[0]) == 0 for g in generated]))})
    return out

"""The ``supervised`` boundary method (issue 16, "tags as supervision"): a small learnt head that reads, per
bar line, what the unsupervised methods compute and gives the probability that a section starts there.

Inputs per bar line b (:func:`bar_inputs`, ``INPUTS`` names them): the repetition evidence over 2, 4 and 8
bar stretches and Foote's novelty with 2, 4 and 8 bar halves (segment.py), the repetition method's own
evidence, each at b-1, b and b+1; how alike bar b is to bar b-1 (all features, and per track block: the
mean and the least of the blocks' cosine similarities), how many track blocks sound in bar b against bar
b-1, whether bars b-1 / b are empty, and where b sits in the 4- and 8-bar grid and in the song. The head is
a one-hidden-layer perceptron stored as JSON (``boundary_head.json``, beside this file: the input names,
their standardisation, the weights, the decoding settings, the songs it learnt from), trained on POP909's
human phrase labels (either annotator's section start) of train-split songs only, none of the evaluated
nor of the 40 songs settings are chosen on: docs/scripts/form_train_head.py writes it.

The probabilities become boundaries by the same 4-bar phrase dynamic program as the repetition method
(:func:`midistruct.form.segment.phrase_boundaries`, each boundary gaining ``p - cost``).

Shapes: NB bars, F = len(INPUTS) inputs per bar line, H hidden units.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from midistruct.form import FormError, segment

HEAD = Path(__file__).with_name("boundary_head.json")
CURVES = ("rep2", "rep4", "rep8", "nov2", "nov4", "nov8", "evidence")
INPUTS = (*(f"{c}{s}" for c in CURVES for s in ("_prev", "", "_next")),
          "sim_prev", "block_sim_mean", "block_sim_min", "active_change", "active_share", "empty", "empty_prev",
          "grid4_0", "grid4_1", "grid4_2", "grid4_3", "grid8_0", "position", "from_start", "to_end")


def bar_inputs(x: np.ndarray, ssm: np.ndarray, *, block: int | None = None) -> np.ndarray:
    """(NB, F) the head's inputs for bars ``x`` (NB, D) with self-similarity ``ssm`` (NB, NB); ``block``: the
    width of one track's features in ``x`` (None: x is one block). Row 0 (the song's start) is computed like
    the others but never scored."""
    n = len(x)
    curves = np.stack([segment.repetition(ssm, windows=(2,)), segment.repetition(ssm, windows=(4,)),
                       segment.repetition(ssm, windows=(8,)), segment.novelty(ssm, half=2),
                       segment.novelty(ssm, half=4), segment.novelty(ssm, half=8), segment.evidence(ssm)], axis=1)
    padded = np.pad(curves, ((1, 1), (0, 0)))
    context = np.stack([padded[:-2], padded[1:-1], padded[2:]], axis=2).reshape(n, -1)  # (NB, 7 * 3)
    bars = np.arange(n)
    grid = np.stack([bars % 4 == k for k in range(4)] + [bars % 8 == 0], axis=1).astype(float)
    place = np.stack([bars / max(n, 1), np.log1p(bars) / 5, np.log1p(n - bars) / 5], axis=1)
    return np.concatenate([context, _neighbours(x, ssm, block=block), grid, place], axis=1)


def _neighbours(x: np.ndarray, ssm: np.ndarray, *, block: int | None) -> np.ndarray:
    """(NB, 7) bar b against bar b-1: similarity, blocks' mean and least similarity, change and share of
    sounding blocks, bar b empty, bar b-1 empty."""
    n, d = x.shape
    width = block if block and d % block == 0 else max(d, 1)
    blocks = x.reshape(n, d // width if d else 1, width if d else 0)  # (NB, T, width)
    norm = np.linalg.norm(blocks, axis=2)  # (NB, T)
    unit = np.divide(blocks, norm[..., None], out=np.zeros_like(blocks), where=norm[..., None] > 1e-12)
    sim = np.ones((n, blocks.shape[1]))
    sim[1:] = (unit[1:] * unit[:-1]).sum(axis=2)
    active = (norm > 1e-12).astype(float)
    prev_active = np.vstack([active[:1], active[:-1]])
    empty = ~active.any(axis=1)
    prev_sim = np.concatenate([[1.0], ssm[np.arange(1, n), np.arange(n - 1)]]) if n else np.zeros(0)
    return np.stack([prev_sim, sim.mean(axis=1), sim.min(axis=1), (active - prev_active).sum(axis=1),
                     active.mean(axis=1), empty, np.concatenate([[0.0], empty[:-1]])], axis=1)


@lru_cache(maxsize=4)
def load_head(path: str | Path = HEAD) -> dict:
    """The head's JSON (inputs, mean, scale, layers, decode, trained_on); :class:`FormError` when missing or
    made for other inputs."""
    try:
        head = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise FormError(f"{path}: cannot read the boundary head ({err})") from None
    if tuple(head.get("inputs", ())) != INPUTS:
        raise FormError(f"{path}: the boundary head was trained on other inputs than this version computes")
    return head


def probabilities(inputs: np.ndarray, head: dict) -> np.ndarray:
    """(NB,) P(a section starts at bar b) from ``inputs`` (NB, F); entry 0 is 0."""
    z = (inputs - np.asarray(head["mean"])) / np.asarray(head["scale"])
    for k, layer in enumerate(head["layers"]):
        z = z @ np.asarray(layer["weight"]).T + np.asarray(layer["bias"])  # (NB, H), then (NB, 1)
        if k < len(head["layers"]) - 1:
            z = np.maximum(z, 0.0)
    p = 1.0 / (1.0 + np.exp(-z[:, 0]))
    if len(p):
        p[0] = 0.0
    return p


def boundaries(x: np.ndarray, ssm: np.ndarray, *, block: int | None = None, min_bars: int = 2,
               head: dict | None = None) -> tuple[np.ndarray, list[int]]:
    """The head's probabilities (NB,) and the section bounds [0, ..., NB] the phrase program picks from them
    with the head's decoding settings (``cost``, ``off_period``, ``period``)."""
    head = head or load_head()
    p = probabilities(bar_inputs(x, ssm, block=block), head)
    decode = head["decode"]
    return p, segment.phrase_boundaries(p, period=decode["period"], off_period=decode["off_period"],
                                        cost=decode["cost"], min_bars=min_bars)

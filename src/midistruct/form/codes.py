"""The "codes" features: a model's bar codes for every bar of a whole song.

The song is cut into windows of the model's bar count starting every ``hop`` bars (the last window ends at the
last bar), each window is encoded on its own, and each bar's feature is the mean, over the windows that hold
it, of its bar code, with the mean segment code of those windows after it (``segment_weight`` scales that
context; 0 leaves it out). Overlap makes a bar's code depend less on where a window happens to start.
A window longer than the model reads is left out; a bar that no window holds then is encoded alone, cut to
what the model reads if it must be (:class:`BarCodes` counts both, so the caller can say so).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from midistruct.form import FormError
from midistruct.tokens.validate import Skip


class BarCodes(NamedTuple):
    """``x`` (NB, Zb [+ Zs]) one vector per bar; windows left out as too long; bars cut to the model's length."""

    x: np.ndarray
    dropped_windows: int
    cut_bars: int


def window_starts(n_bars: int, bars: int, hop: int) -> list[int]:
    """First bar of each window: every ``hop`` bars, plus one that ends at the last bar."""
    if n_bars <= bars:
        return [0]
    starts = list(range(0, n_bars - bars + 1, hop))
    return starts if starts[-1] == n_bars - bars else [*starts, n_bars - bars]


def bar_codes(ms, score, *, hop: int = 1, segment_weight: float = 0.0, name: str = "score") -> BarCodes:
    """The codes of every bar the model's tokenizer finds in ``score`` (a symusic Score whose meters are already
    the ones to use), from ``ms`` (a :class:`~midistruct.generation.pipeline.MidiStruct`).

    Raises :class:`~midistruct.form.FormError` when the score cannot be tokenized.
    """
    try:
        ids = ms.piece_encoder.tokenize(score)
    except Skip as skip:
        raise FormError(f"{name}: {skip}") from None
    starts = ms.vocab.bar_starts(ids)
    if len(starts) == 0:
        raise FormError(f"{name}: no bars")
    bounds, n_bars = np.append(starts, len(ids)), len(starts)
    longest = ms.model.config.max_positions - 1  # EOS takes a position
    spans = [(b, min(ms.bars, n_bars - b)) for b in window_starts(n_bars, ms.bars, hop)]
    windows = {span: ms.vocab.from_base(ids[bounds[span[0]] : bounds[sum(span)]])[0] for span in spans}
    kept = {span: w for span, w in windows.items() if len(w) <= longest}
    dropped = len(windows) - len(kept)
    held = np.zeros(n_bars, dtype=bool)
    for first, count in kept:
        held[first : first + count] = True
    alone = {(b, 1): ms.vocab.from_base(ids[bounds[b] : bounds[b + 1]])[0] for b in np.flatnonzero(~held).tolist()}
    cut = sum(len(w) > longest for w in alone.values())
    kept |= {span: w[:longest] for span, w in alone.items()}
    latents = ms.encode_windows(list(kept.values()))
    x = _average(latents.z_bar, latents.z_segment, list(kept), n_bars, segment_weight=segment_weight)
    return BarCodes(x, dropped, cut)


def _average(z_bar: torch.Tensor, z_segment: torch.Tensor, spans: list[tuple[int, int]], n_bars: int, *,
             segment_weight: float) -> np.ndarray:
    """Mean bar code (and weighted mean segment code) of each bar over the windows (W,) that hold it;
    ``spans`` (W,) gives each window's first bar and bar count."""
    width = z_bar.shape[-1] + (z_segment.shape[-1] if segment_weight else 0)
    total, count = np.zeros((n_bars, width)), np.zeros((n_bars, 1))
    for w, (first, held) in enumerate(spans):
        codes = z_bar[w, :held].numpy()  # (held, Zb)
        if segment_weight:
            context = np.broadcast_to(segment_weight * z_segment[w].numpy(), (held, z_segment.shape[-1]))
            codes = np.concatenate([codes, context], axis=1)
        total[first : first + held] += codes
        count[first : first + held] += 1
    return total / np.maximum(count, 1)

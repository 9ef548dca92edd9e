"""Attribute vectors: latent directions of musical attributes, added to codes with a strength.

MusicVAE (Roberts et al. 2018, section 5.3) subtracts the mean latent of passages with little of an
attribute from the mean latent of passages with much of it; adding the difference to a code moves
the decoded music along the attribute. Here the attribute is measured from each training window's
notes (:mod:`midistruct.metrics.features`), the groups are the lowest and highest quarter of the
windows by that measure, and a direction is kept for the segment code and for the bar codes (the
mean over a window's bars, added to every bar).

Shapes: ``segment`` (A, Zs) and ``bar`` (A, Zb) for A attributes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from midistruct.generation.latents import PieceLatents
from midistruct.tokens.remi import RemiVocab


@dataclass
class AttributeVectors:
    """One latent direction per attribute, with the attribute's mean in the two groups it came from."""

    names: list[str]
    segment: torch.Tensor  # (A, Zs)
    bar: torch.Tensor  # (A, Zb)
    low: list[float]  # (A,) mean attribute of the low group
    high: list[float]  # (A,) mean attribute of the high group
    windows: int  # windows measured

    def index(self, name: str) -> int:
        if name not in self.names:
            raise KeyError(f"no attribute vector {name!r}; this file has: {', '.join(self.names)}")
        return self.names.index(name)

    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        if path.suffix != ".safetensors":
            raise ValueError(f"attribute vectors are written as .safetensors, got {path.name}")
        meta = {"names": self.names, "low": self.low, "high": self.high, "windows": self.windows}
        save_file({"segment": self.segment.contiguous(), "bar": self.bar.contiguous()}, str(path),
                  metadata={"midistruct_attributes": json.dumps(meta)})
        return path

    @classmethod
    def load(cls, path: str | Path) -> AttributeVectors:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("midistruct_attributes")
            if raw is None:
                raise ValueError(f"{path}: not an attribute-vectors file (written by `midistruct attributes`)")
            meta = json.loads(raw)
            return cls(meta["names"], f.get_tensor("segment"), f.get_tensor("bar"), meta["low"], meta["high"],
                       meta["windows"])


def directions(z_segment: torch.Tensor, z_bar_mean: torch.Tensor, values: np.ndarray, *,
               quantile: float = 0.25, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """Mean code of the top ``quantile`` of windows by ``values`` minus that of the bottom one.

    ``z_segment`` (W, Zs), ``z_bar_mean`` (W, Zb), ``values`` (W,). Windows are ranked with ties
    broken at random, so the two groups always hold the same number of windows.
    Returns the segment direction (Zs,), the bar direction (Zb,), and the low and high group means.
    """
    n = max(int(len(values) * quantile), 1)
    if 2 * n > len(values):
        raise ValueError(f"need at least 2 windows to split into groups, got {len(values)}")
    shuffle = np.random.default_rng(seed).permutation(len(values))
    order = shuffle[np.argsort(values[shuffle], kind="stable")]
    low, high = torch.from_numpy(order[:n]), torch.from_numpy(order[-n:])
    seg = z_segment[high].mean(0) - z_segment[low].mean(0)
    bar = z_bar_mean[high].mean(0) - z_bar_mean[low].mean(0)
    return seg, bar, float(values[order[:n]].mean()), float(values[order[-n:]].mean())


def measure_windows(tokenizer, windows: list[np.ndarray], names: list[str]) -> np.ndarray:
    """(W, A) attribute values of token windows, measured on their decoded notes."""
    from midistruct.metrics.features import measure
    from midistruct.metrics.notes import notes_of, window_quarters
    from midistruct.tokens.tokenizer import decode_ids

    vocab = RemiVocab(tokenizer)
    rows = []
    for ids in windows:
        score = decode_ids(tokenizer, ids)
        values = measure(notes_of(score), window_quarters(score, max(vocab.count_bars(ids), 1)), names)
        rows.append([values[name] for name in names])
    return np.array(rows, dtype=np.float64).reshape(len(windows), len(names))


def compute(ms, windows: list[np.ndarray], *, names: list[str] | None = None,
            quantile: float = 0.25, shifts: list[int] | None = None) -> AttributeVectors:
    """Attribute vectors of ``names`` (all by default) over token ``windows``, encoded by ``ms`` (moved by
    ``shifts`` for a model that reads a canonical key: :meth:`MidiStruct.encode_windows`)."""
    from midistruct.metrics.features import ATTRIBUTES, attribute

    names = list(names or ATTRIBUTES)
    for name in names:
        attribute(name)  # unknown names fail before the work
    values = measure_windows(ms.tokenizer, windows, names)
    z = ms.encode_windows(windows, shifts=shifts if shifts is not None else ms.own_key_shifts(windows))
    z_bar_mean = _bar_mean(z)
    seg, bar, low, high = [], [], [], []
    for a in range(len(names)):
        s, b, lo, hi = directions(z.z_segment, z_bar_mean, values[:, a], quantile=quantile)
        seg.append(s), bar.append(b), low.append(lo), high.append(hi)
    return AttributeVectors(names, torch.stack(seg), torch.stack(bar), low, high, len(windows))


def _bar_mean(z: PieceLatents) -> torch.Tensor:
    """(W, Zb) mean of each window's real bar codes."""
    mask = torch.arange(z.z_bar.shape[1])[None, :] < torch.tensor(z.bars)[:, None]  # (W, NB)
    return (z.z_bar * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)


def shift(latents: PieceLatents, vectors: AttributeVectors, amounts: dict[str, float]) -> PieceLatents:
    """``latents`` moved by ``amount`` times each named attribute's vector (segment and every bar).

    An amount of 1 moves a code by the distance between the low and high groups' means.
    """
    z_bar, z_segment = latents.z_bar.clone(), latents.z_segment.clone()
    for name, amount in amounts.items():
        a = vectors.index(name)
        z_segment += amount * vectors.segment[a].to(z_segment.dtype)
        z_bar += amount * vectors.bar[a].to(z_bar.dtype)
    return latents.with_codes(z_bar, z_segment)


def corpus_windows(folder: str | Path, *, split: str = "train", limit: int = 2000, seed: int = 0) -> list[np.ndarray]:
    """Up to ``limit`` token windows of a shard folder's ``split`` (a seeded random subset)."""
    return [ids for ids, _, _ in corpus_windows_with_pieces(folder, split=split, limit=limit, seed=seed)]


def corpus_windows_with_pieces(folder: str | Path, *, split: str = "train", limit: int = 2000,
                               seed: int = 0) -> list[tuple[np.ndarray, dict, int]]:
    """:func:`corpus_windows` with each window's piece record (``id``, ``tags`` ...; ``pieces.jsonl``) and the
    window's first bar in its piece."""
    from midistruct.shards.reader import ShardError, ShardSet

    arrays = ShardSet(folder).split(split)
    if arrays.n_windows == 0:
        raise ShardError(f"{folder}: the {split} split has no windows")
    pieces = arrays.pieces()
    pick = np.sort(np.random.default_rng(seed).permutation(arrays.n_windows)[:limit])
    return [(arrays.window(int(i))[0], pieces[int(arrays.windows[i][2])], int(arrays.windows[i][3])) for i in pick]


def sweep(ms, latents: list[PieceLatents], vectors: AttributeVectors, name: str, amounts: list[float], *,
          temperature: float = 0.0, seed: int = 0) -> dict:
    """Decode every piece shifted by each amount along ``name``; measure the attribute of the result.

    Returns ``measured`` (len(amounts), len(latents)) and the Spearman correlation between the
    requested amounts and the measured values over all decoded pieces (MuseMorphose's measure).
    """
    from scipy.stats import spearmanr

    from midistruct.metrics.features import attribute
    from midistruct.metrics.notes import notes_of, window_quarters

    measure = attribute(name)
    shifted = [shift(z, vectors, {name: amount}) for amount in amounts for z in latents]
    scores = ms.decode_many(shifted, temperature=temperature, seed=seed)
    spans = [sum(z.bars) for z in shifted]
    values = np.array([measure(notes_of(s), window_quarters(s, n)) for s, n in zip(scores, spans)])
    values = values.reshape(len(amounts), len(latents))
    requested = np.repeat(np.asarray(amounts, dtype=float), len(latents))
    rho = spearmanr(requested, values.ravel()).statistic if np.ptp(values) > 0 else 0.0
    return {"attribute": name, "amounts": list(amounts), "measured": values.round(4).tolist(),
            "mean_measured": values.mean(1).round(4).tolist(), "spearman": float(rho)}

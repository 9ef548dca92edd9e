"""Latent codes of a piece: one segment code per window and one code per bar of each window.

Shapes: ``z_bar`` (W, NB, Zb) and ``z_segment`` (W, Zs) for W windows of up to NB bars;
``bars`` (W,) how many bars each window really has (the last one may be shorter); ``shifts`` (W,) the
semitones each window was moved by before encoding (a model with ``augment.key: canonical`` reads every piece in
C major / A minor, :mod:`midistruct.tokens.key`), undone after decoding; empty when none was; ``tags``
({name: value}) the tags a model whose decoder reads tags (``decoder_tags``, issue 18 item 2) decodes every window
with, {} for none.
Saved as ``.safetensors`` or ``.npz`` with the musical context (meters, tempo) as metadata; read
back without pickle (``allow_pickle=False``, issue 20), so a damaged or crafted file is a
:class:`LatentsError` naming it, never code run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from midistruct.errors import MidiStructError

SUFFIXES = (".safetensors", ".npz")


class LatentsError(MidiStructError, ValueError):
    """A latents file that cannot be read (wrong suffix, damaged, pickled, missing arrays)."""


@dataclass
class PieceLatents:
    """Latents of a piece (or of a generated one), window by window."""

    z_bar: torch.Tensor  # (W, NB, Zb)
    z_segment: torch.Tensor  # (W, Zs)
    bars: list[int]  # (W,) bars per window
    time_signatures: list[str] = field(default_factory=list)  # (W,) "4/4" of each window's first bar
    tempo: float = 120.0  # qpm of the source
    shifts: list[int] = field(default_factory=list)  # (W,) semitones moved before encoding; [] : none
    tags: dict[str, str] = field(default_factory=dict)  # what the decoder reads beside the codes (decoder_tags)

    def __len__(self) -> int:
        return len(self.bars)

    def window(self, i: int) -> PieceLatents:
        return PieceLatents(self.z_bar[i : i + 1], self.z_segment[i : i + 1], self.bars[i : i + 1],
                            self.time_signatures[i : i + 1], self.tempo, self.shifts[i : i + 1], dict(self.tags))

    def with_codes(self, z_bar: torch.Tensor, z_segment: torch.Tensor) -> PieceLatents:
        """The same musical context with other codes (same shapes)."""
        return PieceLatents(z_bar, z_segment, list(self.bars), list(self.time_signatures), self.tempo,
                            list(self.shifts), dict(self.tags))

    def with_tags(self, tags: dict[str, str]) -> PieceLatents:
        """The same codes and context, decoded with ``tags`` (:attr:`tags`)."""
        z = self.with_codes(self.z_bar, self.z_segment)
        z.tags = dict(tags)
        return z

    def window_shifts(self) -> list[int]:
        """(W,) each window's shift (:attr:`shifts`), zeros when none was applied."""
        return list(self.shifts) if self.shifts else [0] * len(self)

    def with_block(self, source: PieceLatents, block: slice) -> PieceLatents:
        """These latents with the ``block`` part of every bar code (e.g. the arrangement's,
        ``MidiStructConfig.block_slices()["arrangement"]``) taken from ``source``, window by window and bar by
        bar; a shorter ``source`` is repeated (its windows, and within a window its bars)."""
        if source.z_bar.shape[-1] != self.z_bar.shape[-1]:
            raise LatentsError(f"bar codes of {source.z_bar.shape[-1]} and {self.z_bar.shape[-1]} numbers: latents of "
                               "two different models")
        z_bar = self.z_bar.clone()
        for w, n_bars in enumerate(self.bars):
            s = w % len(source)
            have = max(1, source.bars[s])
            for b in range(n_bars):
                z_bar[w, b, block] = source.z_bar[s, b % have, block]
        return self.with_codes(z_bar, self.z_segment.clone())

    def save(self, path: str | Path) -> Path:
        """Write to ``.safetensors`` or ``.npz`` (by suffix)."""
        path = Path(path)
        meta = {"bars": self.bars, "time_signatures": self.time_signatures, "tempo": self.tempo, "shifts": self.shifts,
                "tags": self.tags}
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file({"z_bar": self.z_bar.contiguous(), "z_segment": self.z_segment.contiguous()}, str(path),
                      metadata={"midistruct": json.dumps(meta)})
        elif path.suffix == ".npz":
            np.savez(path, z_bar=self.z_bar.numpy(), z_segment=self.z_segment.numpy(), meta=json.dumps(meta))
        else:
            raise LatentsError(f"latents file must end in .safetensors or .npz, got {path.name}")
        return path

    @classmethod
    def load(cls, path: str | Path) -> PieceLatents:
        """Read a file written by :meth:`save`; :class:`LatentsError` (naming it) when it is not one."""
        path = Path(path)
        if path.suffix not in SUFFIXES:
            raise LatentsError(f"latents file must end in .safetensors or .npz, got {path.name}")
        try:
            tensors, meta = _read_safetensors(path) if path.suffix == ".safetensors" else _read_npz(path)
            latents = cls(tensors["z_bar"], tensors["z_segment"], list(meta["bars"]), list(meta["time_signatures"]),
                          float(meta["tempo"]), [int(s) for s in meta.get("shifts", [])],
                          {str(k): str(v) for k, v in meta.get("tags", {}).items()})
        except Exception as err:  # noqa: BLE001 -- whatever a damaged file raises (zip, header, JSON, keys)
            reason = f"no {err}" if isinstance(err, KeyError) else " ".join(str(err).split())[:200]
            reason = reason or type(err).__name__
            raise LatentsError(f"{path}: not a midistruct latents file ({reason})") from None
        if latents.z_bar.ndim != 3 or latents.z_segment.ndim != 2 or not (
                len(latents.z_bar) == len(latents.z_segment) == len(latents.bars)) or (
                latents.shifts and len(latents.shifts) != len(latents.bars)):
            raise LatentsError(f"{path}: z_bar {list(latents.z_bar.shape)}, z_segment {list(latents.z_segment.shape)} "
                               f"and {len(latents.bars)} bar counts (and {len(latents.shifts)} shifts) do not "
                               "describe the same windows")
        return latents


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {})["midistruct"])
        return {k: f.get_tensor(k) for k in ("z_bar", "z_segment")}, meta


def _read_npz(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    with np.load(path, allow_pickle=False) as data:  # a pickled array raises instead of running code
        meta = json.loads(str(data["meta"]))
        return {k: torch.from_numpy(data[k]) for k in ("z_bar", "z_segment")}, meta

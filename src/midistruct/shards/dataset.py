"""A torch Dataset over the windows of one split of one or more shard folders.

Items are dicts of 1-D LongTensors: ``input_ids`` (L,) -- the window's tokens then EOS --
and ``bar_ids`` (L,) -- each token's bar within the window (EOS takes the last bar).
:func:`collate` pads a list of items into the batch the model reads:
``input_ids``, ``attention_mask``, ``bar_ids``, ``labels`` (B, T), labels -100 at padding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from midistruct.shards.reader import ShardError, ShardSet, open_shards

from midistruct.tokens.tokenizer import BOS_ID, EOS_ID, PAD_ID  # noqa: F401 - re-exported


class PitchShifter:
    """Transposes REMI token ids by whole semitones, staying inside the vocabulary's pitch range."""

    def __init__(self, vocab: dict[str, int]):
        size = max(vocab.values()) + 1
        self.pitch_of = np.full(size, -1, dtype=np.int64)  # (V,) pitch of a Pitch token, else -1
        self.id_of = {}
        for token, i in vocab.items():
            if token.startswith("Pitch_"):
                pitch = int(token.split("_")[1])
                self.pitch_of[i] = pitch
                self.id_of[pitch] = i
        self.lo, self.hi = min(self.id_of), max(self.id_of)
        self.lut = np.full(128, -1, dtype=np.int64)
        for pitch, i in self.id_of.items():
            self.lut[pitch] = i

    def allowed(self, ids: np.ndarray, low: int, high: int) -> tuple[int, int]:
        """The sub-range of semitone shifts [low, high] that keeps every pitch in range."""
        pitches = self.pitch_of[ids]
        pitches = pitches[pitches >= 0]
        if len(pitches) == 0:
            return 0, 0
        return max(low, self.lo - int(pitches.min())), min(high, self.hi - int(pitches.max()))

    def shift(self, ids: np.ndarray, semitones: int) -> np.ndarray:
        """``ids`` with every Pitch token moved by ``semitones`` (which must be allowed)."""
        if semitones == 0:
            return ids
        pitches = self.pitch_of[ids]
        is_pitch = pitches >= 0
        out = ids.copy()
        out[is_pitch] = self.lut[pitches[is_pitch] + semitones]
        return out


class WindowDataset(torch.utils.data.Dataset):
    """Windows of ``split`` from the shard ``folders`` (all made with one tokenizer).

    Args:
        transpose: inclusive semitone range for random transposition, e.g. ``(-5, 6)``;
            each item draws from it (clipped to the pitch range), deterministically from
            ``(seed, epoch, index)``. ``(0, 0)`` disables it.
    """

    def __init__(self, folders: list[str | Path], split: str, *, transpose: tuple[int, int] = (0, 0), seed: int = 0):
        self.sets: list[ShardSet] = open_shards(folders)
        self.arrays = [s.split(split) for s in self.sets]
        self.cum = np.cumsum([0] + [a.n_windows for a in self.arrays])
        self.transpose = tuple(transpose)
        self.seed, self.epoch = seed, 0
        self.shifter = self._shifter() if self.transpose != (0, 0) else None

    def __len__(self) -> int:
        return int(self.cum[-1])

    def _shifter(self) -> PitchShifter:
        tokenizer = self.sets[0].tokenizer()
        if tokenizer.is_trained:
            raise ShardError("transposition needs base tokens, but these shards use BPE; set augment.transpose=[0, 0]")
        return PitchShifter(tokenizer.vocab)

    def lengths(self) -> np.ndarray:
        """(N,) tokens of every item, EOS included (for length-bucketed batching)."""
        parts = [np.asarray(a.windows[:, 1] - a.windows[:, 0]) + 1 for a in self.arrays]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def set_epoch(self, epoch: int) -> None:
        """Change the transposition draw (call once per epoch)."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        which = int(np.searchsorted(self.cum, index, side="right") - 1)
        ids, bars = self.arrays[which].window(index - int(self.cum[which]))
        if self.shifter is not None:
            ids = self._transpose(ids, index)
        ids = np.append(ids, EOS_ID)
        bars = np.append(bars, bars[-1])
        return {"input_ids": torch.from_numpy(ids), "bar_ids": torch.from_numpy(bars)}

    def _transpose(self, ids: np.ndarray, index: int) -> np.ndarray:
        low, high = self.shifter.allowed(ids, *self.transpose)
        if low > high:
            return ids
        rng = np.random.default_rng((self.seed, self.epoch, index))
        return self.shifter.shift(ids, int(rng.integers(low, high + 1)))


def collate(items: list[dict[str, torch.Tensor]], *, pad_id: int = PAD_ID) -> dict[str, torch.Tensor]:
    """Right-pad items into a batch: input_ids, attention_mask, bar_ids, labels (B, T)."""
    length = max(len(it["input_ids"]) for it in items)
    batch = len(items)
    input_ids = torch.full((batch, length), pad_id, dtype=torch.long)
    bar_ids = torch.zeros((batch, length), dtype=torch.long)
    mask = torch.zeros((batch, length), dtype=torch.long)
    for row, it in enumerate(items):
        n = len(it["input_ids"])
        input_ids[row, :n] = it["input_ids"]
        bar_ids[row, :n] = it["bar_ids"]
        mask[row, :n] = 1
    labels = input_ids.masked_fill(mask == 0, -100)
    return {"input_ids": input_ids, "attention_mask": mask, "bar_ids": bar_ids, "labels": labels}

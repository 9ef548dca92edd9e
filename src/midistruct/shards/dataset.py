"""Model inputs: a torch Dataset over the windows of shard folders, and the one way a window becomes an input.

Items are dicts of 1-D LongTensors: ``input_ids`` (L,) -- the window's tokens then EOS --
and ``bar_ids`` (L,) -- each token's bar within the window (EOS takes the last bar); :func:`window_item`
makes one, for the dataset and for every window that does not come from shards (:func:`window_batch`).
For a model with functional blocks (issue 19) items also hold the window's views
(:mod:`midistruct.tokens.views`): ``<view>_ids`` and ``<view>_bar_ids`` for each view it reads; for a model
supervised by sections (issue 18), ``section_ids``, each bar's section class (:func:`midistruct.tags.bar_section_classes`);
for a model whose decoder reads tags (issue 18 item 2), ``tag_ids`` (G,), the index of each tag's value in the
model's ``decoder_tags`` (0: the window has none, or one the model does not know; :func:`tag_vocabulary`).
:func:`collate` pads a list of items into the batch the model reads:
``input_ids``, ``attention_mask``, ``bar_ids``, ``labels`` (B, T), labels -100 at padding; and, with views,
``<view>_ids``, ``<view>_mask``, ``<view>_bar_ids`` (B, T') for each; with sections, ``section_ids`` (B, NB), -100
where a bar has no label and past a window's last bar; with tags, ``tag_ids`` (B, G).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from midistruct.shards.reader import ShardError, ShardSet, open_shards
from midistruct.tags import BAR_TAGS, SECTION_CLASSES, TAGS, bar_section_classes, window_tags
from midistruct.tokens.key import KEY_MODES, canonical_shift, fitted_shift, key_of
from midistruct.tokens.remi import RemiVocab
from midistruct.tokens.tokenizer import BOS_ID, EOS_ID, PAD_ID  # noqa: F401 - re-exported
from midistruct.tokens.views import VIEWS, window_views


def window_item(ids: np.ndarray, bars: np.ndarray, *, vocab: RemiVocab | None = None, views: tuple[str, ...] = (),
                arrangement_pitch: str = "rank", max_tokens: int | None = None) -> dict[str, torch.Tensor]:
    """The model input of one window: its token ids (L,) then EOS, and their bar indices (L,) within the
    window then the last one again for EOS; both (L+1,) LongTensors. With ``views`` (names from
    :data:`~midistruct.tokens.views.VIEWS`; needs ``vocab``), also those views of the window
    (:func:`~midistruct.tokens.views.window_views`, each cut to ``max_tokens``) and their bars."""
    ids, bars = np.asarray(ids, dtype=np.int64), np.asarray(bars, dtype=np.int64)
    item = {"input_ids": torch.from_numpy(np.append(ids, EOS_ID)),
            "bar_ids": torch.from_numpy(np.append(bars, bars[-1]))}
    if views:
        for name, view in window_views(ids, vocab, views=tuple(views), arrangement_pitch=arrangement_pitch,
                                              max_tokens=max_tokens).items():
            item[f"{name}_ids"] = torch.from_numpy(view)
            item[f"{name}_bar_ids"] = torch.from_numpy(vocab.bar_index(view))
    return item


def window_batch(windows: list[np.ndarray], vocab: RemiVocab, *, views: tuple[str, ...] = (),
                 arrangement_pitch: str = "rank", max_tokens: int | None = None) -> dict[str, torch.Tensor]:
    """The padded batch (see :func:`collate`) of token windows (each starting at a bar, without BOS/EOS),
    their bars counted by ``vocab`` (right under BPE too); with ``views`` (``model.config.views``: what a model
    with functional blocks reads; ``**config.view_options()`` gives these arguments), those views, each cut to
    ``max_tokens``."""
    return collate([window_item(ids, vocab.bar_index(ids), vocab=vocab, views=views,
                                arrangement_pitch=arrangement_pitch, max_tokens=max_tokens) for ids in windows])


class WindowDataset(torch.utils.data.Dataset):
    """Windows of ``split`` from the shard ``folders`` (all made with one tokenizer).

    Args:
        transpose: inclusive semitone range for random transposition, e.g. ``(-5, 6)``;
            each item draws from it (clipped to the pitch range), deterministically from
            ``(seed, epoch, index)``. ``(0, 0)`` disables it.
        sections: items also hold ``section_ids`` (NB,), each bar's section class from its piece's phrase
            labels (POP909's), -100 where it has none.
        tags: ``{name: [value, ...]}`` (a model's ``decoder_tags``): items also hold ``tag_ids`` (G,), each tag's
            value as 1 + its place in the list, 0 where the window has no value or one not listed.
        key: ``"canonical"`` moves every window by its piece's :func:`piece_shifts` (the piece to C major /
            A minor; ``augment.key``, issue 14); ``"absolute"`` reads the pitches as written.
    """

    def __init__(self, folders: list[str | Path], split: str, *, transpose: tuple[int, int] = (0, 0), seed: int = 0,
                 views: tuple[str, ...] = (), arrangement_pitch: str = "rank", max_tokens: int | None = None,
                 sections: bool = False, key: str = "absolute", tags: dict[str, list[str]] | None = None):
        self.sets: list[ShardSet] = open_shards(folders)
        self.arrays = [s.split(split) for s in self.sets]
        self.cum = np.cumsum([0] + [a.n_windows for a in self.arrays])
        self.transpose = tuple(transpose)
        self.seed, self.epoch = seed, 0
        if key not in KEY_MODES:
            raise ValueError(f"unknown key mode {key!r}; valid: {', '.join(KEY_MODES)}")
        moves = self.transpose != (0, 0) or key == "canonical"
        self.vocab = self._transposing_vocab() if moves else None
        # canonical: each piece's shift to C major / A minor, one array per folder (indexed by piece)
        self.shifts = [piece_shifts(a, self.vocab) for a in self.arrays] if key == "canonical" else None
        # views: each item also holds these views of the window (what a model's blocks read), cut to max_tokens
        self.views, self.arrangement_pitch, self.max_tokens = tuple(views), arrangement_pitch, max_tokens
        self.view_vocab = (self.vocab or RemiVocab(self.sets[0].tokenizer())) if self.views else None
        self.tags = dict(tags or {})
        self.pieces = [a.pieces() for a in self.arrays] if sections or self.tags else None
        self.piece_tags = [[p.get("tags", {}) for p in pieces] for pieces in self.pieces] if sections else None

    def __len__(self) -> int:
        return int(self.cum[-1])

    def _transposing_vocab(self) -> RemiVocab:
        vocab = RemiVocab(self.sets[0].tokenizer())
        if vocab.is_bpe:
            raise ShardError("transposition needs base tokens, but these shards use BPE; set augment.transpose=[0, 0] "
                             "and augment.key=absolute")
        return vocab

    def lengths(self) -> np.ndarray:
        """(N,) tokens of every item, EOS included (for length-bucketed batching)."""
        parts = [np.asarray(a.windows[:, 1] - a.windows[:, 0]) + 1 for a in self.arrays]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def meter_counts(self, limit: int = 20000) -> dict[str, int]:
        """Windows per meter (``{"4/4": 18330, ...}``) among up to ``limit`` evenly spaced windows (every window
        when there are fewer), as they were written, before any transposition."""
        vocab = RemiVocab(self.sets[0].tokenizer()) if len(self) else None
        counts: dict[str, int] = {}
        for index in self._spread(limit):
            which, row = self._locate(index)
            meter = vocab.meter(self.arrays[which].window(row)[0])
            counts[meter] = counts.get(meter, 0) + 1
        return counts

    def section_counts(self, limit: int = 2000) -> dict[str, int]:
        """Labelled bars per section class (``{"B": 650, "A": 610, ...}``, commonest first) among up to ``limit``
        evenly spaced windows; {} without ``sections``."""
        if self.piece_tags is None:
            return {}
        classes = [np.zeros(0, dtype=np.int64)]
        for index in self._spread(limit):
            which, row = self._locate(index)
            classes.append(self._sections(which, row, self.arrays[which].window(row)[1]).numpy())
        classes = np.concatenate(classes)
        counts = np.bincount(classes[classes >= 0], minlength=len(SECTION_CLASSES))
        return {SECTION_CLASSES[c]: int(counts[c]) for c in np.argsort(-counts, kind="stable") if counts[c]}

    def _spread(self, limit: int) -> np.ndarray:
        """Up to ``limit`` evenly spaced item indices."""
        if not len(self):
            return np.zeros(0, dtype=np.int64)
        return np.unique(np.linspace(0, len(self) - 1, min(limit, len(self))).astype(np.int64))

    def _locate(self, index: int) -> tuple[int, int]:
        """(which shard folder, window row in its split) of item ``index``."""
        which = int(np.searchsorted(self.cum, index, side="right") - 1)
        return which, int(index) - int(self.cum[which])

    def _sections(self, which: int, row: int, bars: np.ndarray) -> torch.Tensor:
        """(NB,) section classes (``bar_section_classes``) of the window's bars, ``bars`` its tokens' bar indices
        within it (``SplitArrays.window``'s)."""
        _, _, piece, first_bar = (int(v) for v in self.arrays[which].windows[row])
        n_bars = int(bars.max()) + 1 if len(bars) else 1
        return torch.tensor(bar_section_classes(self.piece_tags[which][piece], first_bar, n_bars), dtype=torch.long)

    def set_epoch(self, epoch: int) -> None:
        """Change the transposition draw (call once per epoch)."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        which, row = self._locate(index)
        ids, bars = self.arrays[which].window(row)
        if self.shifts is not None:
            shift = int(self.shifts[which][int(self.arrays[which].windows[row][2])])
            ids = self.vocab.shift_pitches(ids, fitted_shift([ids], shift, self.vocab))
        elif self.vocab is not None:
            ids = self._transpose(ids, index)
        item = window_item(ids, bars, vocab=self.view_vocab, views=self.views, arrangement_pitch=self.arrangement_pitch,
                           max_tokens=self.max_tokens)
        if self.piece_tags is not None:
            item["section_ids"] = self._sections(which, row, bars)
        if self.tags:
            values = window_values(self.arrays[which], row, self.pieces[which], list(self.tags), bars=bars)
            item["tag_ids"] = torch.tensor([1 + known.index(values[name]) if values.get(name) in known else 0
                                            for name, known in self.tags.items()], dtype=torch.long)
        return item

    def _transpose(self, ids: np.ndarray, index: int) -> np.ndarray:
        low, high = self.vocab.allowed_shifts(ids, *self.transpose)
        if low > high:
            return ids
        rng = np.random.default_rng((self.seed, self.epoch, index))
        return self.vocab.shift_pitches(ids, int(rng.integers(low, high + 1)))


def window_values(arrays, row: int, pieces: list[dict], names: list[str], *, bars=None) -> dict[str, str]:
    """The values of tags ``names`` (:data:`midistruct.tags.TAGS` but ``meter``, and :data:`~midistruct.tags.BAR_TAGS`)
    for window ``row`` of a split (:class:`~midistruct.shards.reader.SplitArrays`; ``pieces`` its ``pieces()``),
    from its piece's tags; ``bars`` its tokens' bar indices, read from the window when a bar tag needs them."""
    _, _, piece, first_bar = (int(v) for v in arrays.windows[row])
    n_bars = 0
    if any(name in BAR_TAGS for name in names):
        bars = arrays.window(row)[1] if bars is None else bars
        n_bars = int(bars.max()) + 1 if len(bars) else 1
    record = pieces[piece]
    return window_tags(record.get("tags", {}), record["id"], None, bar=first_bar, n_bars=n_bars, names=names)


def tag_vocabulary(folders: list[str | Path], split: str, names: list[str], *,
                   min_windows: int = 20) -> dict[str, list[str]]:
    """The values of each tag of ``names`` that at least ``min_windows`` windows of ``split`` have, sorted (what a
    model's ``decoder_tags`` hold, issue 18 item 2). ``meter`` is refused (the decoder reads each bar's meter
    from its TimeSig token), as are unknown names; a tag no window has is a ValueError naming it."""
    for name in names:
        if name == "meter" or not (name in TAGS or name in BAR_TAGS):
            valid = [n for n in (*TAGS, *BAR_TAGS) if n != "meter"]
            raise ValueError(f"{name!r} cannot be a decoder tag; valid: {', '.join(valid)}"
                             + (" (the decoder reads the meter from its TimeSig tokens)" if name == "meter" else ""))
    counts: dict[str, dict[str, int]] = {name: {} for name in names}
    for arrays in (s.split(split) for s in open_shards(folders)):
        pieces = arrays.pieces()
        for row in range(arrays.n_windows):
            for name, value in window_values(arrays, row, pieces, names).items():
                counts[name][value] = counts[name].get(value, 0) + 1
    vocabulary = {name: sorted(v for v, n in found.items() if n >= min_windows) for name, found in counts.items()}
    empty = [name for name, values in vocabulary.items() if not values]
    if empty:
        raise ValueError(f"no value of tag(s) {', '.join(empty)} labels {min_windows} or more {split} windows")
    return vocabulary


def piece_shifts(arrays, vocab: RemiVocab) -> np.ndarray:
    """(P,) the semitones that move each piece of a split (:class:`~midistruct.shards.reader.SplitArrays`) to
    C major / A minor (:func:`midistruct.tokens.key.canonical_shift`), its key heard in all its windows at once
    (0 for a piece without notes or windows)."""
    rows = np.asarray(arrays.windows)
    n_pieces = int(rows[:, 2].max()) + 1 if len(rows) else 0
    shifts = np.zeros(n_pieces, dtype=np.int64)
    if not len(rows):
        return shifts
    order = np.argsort(rows[:, 2], kind="stable")
    pieces, starts = np.unique(rows[order, 2], return_index=True)
    for piece, group in zip(pieces.tolist(), np.split(order, starts[1:])):
        windows = [arrays.window(int(i))[0] for i in group]
        shifts[piece] = fitted_shift(windows, canonical_shift(key_of(windows, vocab)), vocab)
    return shifts


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
    batch = {"input_ids": input_ids, "attention_mask": mask, "bar_ids": bar_ids, "labels": labels}
    for name in VIEWS:
        if f"{name}_ids" in items[0]:
            batch.update(_padded([it[f"{name}_ids"] for it in items], [it[f"{name}_bar_ids"] for it in items],
                                 prefix=name, pad_id=pad_id))
    if "section_ids" in items[0]:
        sections = torch.full((len(items), max(len(it["section_ids"]) for it in items)), -100, dtype=torch.long)
        for row, it in enumerate(items):
            sections[row, : len(it["section_ids"])] = it["section_ids"]
        batch["section_ids"] = sections
    if "tag_ids" in items[0]:
        batch["tag_ids"] = torch.stack([it["tag_ids"] for it in items])
    return batch


def _padded(rows: list[torch.Tensor], bars: list[torch.Tensor], *, prefix: str, pad_id: int) -> dict[str, torch.Tensor]:
    """``<prefix>_ids``, ``<prefix>_mask``, ``<prefix>_bar_ids`` (B, T'): right-padded rows of one view."""
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    bar_ids = torch.zeros((len(rows), length), dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for row, (r, b) in enumerate(zip(rows, bars)):
        ids[row, : len(r)], bar_ids[row, : len(r)], mask[row, : len(r)] = r, b, 1
    return {f"{prefix}_ids": ids, f"{prefix}_mask": mask, f"{prefix}_bar_ids": bar_ids}

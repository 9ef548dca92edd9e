"""Optional BPE over prepared shards: learn merges on the train split, re-encode every split.

miditok's own bar splitting of ids is unreliable with BPE, so bars are cut here from
the base ids (each bar one pre-tokenized "word", as miditok does with
``encode_ids_split="bar"``); a BPE token never spans two bars and its bar index is the
word it came from. Windows start at bar lines, so they map onto BPE positions exactly.
"""

from __future__ import annotations

import numpy as np

from midistruct.shards.reader import ShardSet
from midistruct.shards.writer import ShardWriter
from midistruct.tokens.segment import bar_starts


class _BarWords:
    """Training iterator for miditok: per piece, the byte string of each bar (has ``__len__``)."""

    def __init__(self, tokenizer, arrays):
        self.tokenizer, self.arrays = tokenizer, arrays
        self.spans = np.cumsum([0] + [p["tokens"] for p in arrays.pieces()])

    def __len__(self) -> int:
        return len(self.spans) - 1

    def __getitem__(self, i: int) -> list[str]:
        ids = np.asarray(self.arrays.tokens[self.spans[i] : self.spans[i + 1]], dtype=np.int64)
        return bar_words(self.tokenizer, ids)


def bar_words(tokenizer, ids: np.ndarray) -> list[str]:
    """The base ids of each bar as one byte string (miditok's byte alphabet)."""
    starts = bar_starts(ids, tokenizer.vocab["Bar_None"])
    chunks = np.split(ids, starts[1:]) if len(starts) else [ids]
    return [tokenizer._ids_to_bytes(c.tolist(), as_one_str=True) for c in chunks if len(c)]


def train_bpe(tokenizer, base: ShardSet, vocab_size: int) -> None:
    """Learn BPE merges in place on the train split of ``base``."""
    tokenizer.train(vocab_size=vocab_size, model="BPE", iterator=_BarWords(tokenizer, base.split("train")))


def encode_piece(tokenizer, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """BPE ids (T',) and the bar index of each (T',) for one piece's base ids."""
    encoding = tokenizer._model.encode(bar_words(tokenizer, ids), is_pretokenized=True)
    return np.asarray(encoding.ids, dtype=np.int64), np.asarray(encoding.word_ids, dtype=np.int64)


def reencode(tokenizer, base: ShardSet, writer: ShardWriter) -> None:
    """Write every piece of ``base`` into ``writer`` as BPE tokens, windows remapped."""
    for split in ("train", "valid", "test"):
        arrays = base.split(split)
        offset = 0
        pieces = arrays.pieces()
        rows = np.asarray(arrays.windows)
        for index, record in enumerate(pieces):
            ids = np.asarray(arrays.tokens[offset : offset + record["tokens"]], dtype=np.int64)
            new_ids, new_bars = encode_piece(tokenizer, ids)
            first_token = np.searchsorted(new_bars, np.arange(record["bars"] + 1))  # (NB+1,) bar -> position
            first_token[-1] = len(new_ids)
            mine = rows[rows[:, 2] == index]
            bars = mine[:, 3]
            windows = np.stack([first_token[bars], first_token[bars + base.manifest["segments"]["bars"]],
                                np.zeros_like(bars), bars], axis=1)
            writer.add(split, ids=new_ids, bars=new_bars, windows=windows, record={**record, "tokens": len(new_ids)})
            offset += record["tokens"]

"""Optional BPE over prepared shards: learn merges on the train split, re-encode every split.

miditok's own bar splitting of ids is unreliable with BPE, so bars are cut here from
the base ids (each bar one pre-tokenized "word", as miditok does with
``encode_ids_split="bar"``; :meth:`~midistruct.tokens.remi.RemiVocab.from_base`); a BPE token never
spans two bars and its bar index is the word it came from. Windows start at bar lines, so they map
onto BPE positions exactly.
"""

from __future__ import annotations

import numpy as np

from midistruct.shards.reader import ShardError, ShardSet
from midistruct.shards.writer import ShardWriter
from midistruct.tokens.remi import RemiVocab


class _BarWords:
    """Training iterator for miditok: per piece, the byte string of each bar (has ``__len__``)."""

    def __init__(self, vocab: RemiVocab, arrays):
        self.vocab, self.arrays = vocab, arrays
        self.spans = np.cumsum([0] + [p["tokens"] for p in arrays.pieces()])

    def __len__(self) -> int:
        return len(self.spans) - 1

    def __getitem__(self, i: int) -> list[str]:
        return self.vocab.bar_words(self.arrays.tokens[self.spans[i] : self.spans[i + 1]])


def check_vocab_size(tokenizer, vocab_size: int) -> None:
    """Raise :class:`ShardError` (one line) unless ``vocab_size`` leaves room for at least one merge
    beyond the base vocabulary of the untrained ``tokenizer``."""
    base = len(tokenizer.vocab)
    if vocab_size <= base:
        raise ShardError(f"tokenizer.bpe_vocab_size {vocab_size} must be larger than the base vocabulary of "
                         f"these tokenizer settings ({base} tokens), or 0 for no BPE")


def train_bpe(tokenizer, base: ShardSet, vocab_size: int) -> None:
    """Learn BPE merges in place on the train split of ``base`` (``vocab_size`` checked first)."""
    check_vocab_size(tokenizer, vocab_size)
    words = _BarWords(RemiVocab(tokenizer), base.split("train"))
    tokenizer.train(vocab_size=vocab_size, model="BPE", iterator=words)


def reencode(tokenizer, base: ShardSet, writer: ShardWriter) -> None:
    """Write every piece of ``base`` into ``writer`` as BPE tokens, windows remapped."""
    vocab = RemiVocab(tokenizer)
    for split in ("train", "valid", "test"):
        arrays = base.split(split)
        offset = 0
        pieces = arrays.pieces()
        rows = np.asarray(arrays.windows)
        for index, record in enumerate(pieces):
            ids = np.asarray(arrays.tokens[offset : offset + record["tokens"]], dtype=np.int64)
            new_ids, new_bars = vocab.from_base(ids)
            first_token = np.searchsorted(new_bars, np.arange(record["bars"] + 1))  # (NB+1,) bar -> position
            first_token[-1] = len(new_ids)
            mine = rows[rows[:, 2] == index]
            bars = mine[:, 3]
            windows = np.stack([first_token[bars], first_token[bars + base.manifest["segments"]["bars"]],
                                np.zeros_like(bars), bars], axis=1)
            writer.add(split, ids=new_ids, bars=new_bars, windows=windows, record={**record, "tokens": len(new_ids)})
            offset += record["tokens"]

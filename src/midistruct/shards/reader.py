"""Open shard folders for reading: memory-mapped arrays, verified manifest."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from midistruct.errors import MidiStructError
from midistruct.shards import FORMAT_VERSION, MANIFEST, SPLITS


class ShardError(MidiStructError, ValueError):
    """A shard folder is missing, incomplete, of another format or another tokenizer."""


@dataclass
class SplitArrays:
    """Memory-mapped arrays of one split: ``tokens`` (T,), ``bars`` (T,), ``windows`` (W, 4)."""

    folder: Path
    token_dtype: str
    n_tokens: int
    n_windows: int

    @cached_property
    def tokens(self) -> np.ndarray:
        return _memmap(self.folder / "tokens.bin", self.token_dtype, (self.n_tokens,))

    @cached_property
    def bars(self) -> np.ndarray:
        return _memmap(self.folder / "bars.bin", "uint16", (self.n_tokens,))

    @cached_property
    def windows(self) -> np.ndarray:
        return _memmap(self.folder / "windows.bin", "int64", (self.n_windows, 4))

    def window(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Token ids (L,) and window-relative bar indices (L,) of window ``i``."""
        start, end, _, first_bar = self.windows[i]
        return np.asarray(self.tokens[start:end], dtype=np.int64), self.bars[start:end].astype(np.int64) - first_bar

    def pieces(self) -> list[dict]:
        """Per-piece records (id, group, tags, counts), in storage order."""
        with open(self.folder / "pieces.jsonl") as f:
            return [json.loads(line) for line in f]


class ShardSet:
    """A prepared shard folder. ``ShardSet(path).split("train")`` gives its arrays."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        path = self.folder / MANIFEST
        if not path.is_file():
            partial = sorted(self.folder.parent.glob(f"{self.folder.name}.partial-*"))
            hint = " (an interrupted prepare left " + partial[0].name + ")" if partial else ""
            raise ShardError(f"{self.folder} is not a prepared shard folder: no {MANIFEST}{hint}")
        self.manifest = json.loads(path.read_text())
        version = self.manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise ShardError(f"{self.folder}: shard format {version}, this midistruct reads {FORMAT_VERSION}; prepare again")

    @property
    def tokenizer_hash(self) -> str:
        return self.manifest["tokenizer_hash"]

    def split(self, name: str) -> SplitArrays:
        if name not in SPLITS:
            raise ShardError(f"unknown split {name!r}; valid: {', '.join(SPLITS)}")
        counts = self.manifest["splits"][name]
        return SplitArrays(self.folder / name, self.manifest["token_dtype"], counts["tokens"], counts["windows"])

    def tokenizer(self):
        from midistruct.tokens.tokenizer import load_tokenizer

        return load_tokenizer(self.folder)


def open_shards(folders: list[str | Path], *, expect_hash: str | None = None) -> list[ShardSet]:
    """Open several shard folders, refusing to mix tokenizers (or to differ from ``expect_hash``)."""
    sets = [ShardSet(f) for f in folders]
    want = expect_hash or (sets[0].tokenizer_hash if sets else None)
    for s in sets:
        if s.tokenizer_hash != want:
            raise ShardError(
                f"{s.folder} was made with tokenizer {s.tokenizer_hash}, expected {want}: "
                "shards of different tokenizer configs cannot be mixed; prepare them with one config"
            )
    return sets


def _memmap(path: Path, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    if shape[0] == 0:
        return np.zeros(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=shape)

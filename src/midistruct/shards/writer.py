"""Write a shard folder by streaming pieces to disk; atomic on success, nothing on failure.

Everything goes to ``<out>.partial-<pid>`` first; the manifest is written last and the
folder is renamed into place only when complete, so an interrupted run never leaves a
shard folder that looks complete. Memory use does not grow with the corpus.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from midistruct.shards import FORMAT_VERSION, MANIFEST, SPLITS


class _SplitFiles:
    """Append-only files of one split."""

    def __init__(self, folder: Path, token_dtype: str):
        folder.mkdir(parents=True)
        self.token_dtype = token_dtype
        self.tokens = open(folder / "tokens.bin", "wb")
        self.bars = open(folder / "bars.bin", "wb")
        self.windows = open(folder / "windows.bin", "wb")
        self.pieces = open(folder / "pieces.jsonl", "w")
        self.n_tokens = self.n_windows = self.n_pieces = 0

    def add(self, ids: np.ndarray, bars: np.ndarray, windows: np.ndarray, record: dict[str, Any]) -> None:
        rows = windows.astype(np.int64).copy()
        rows[:, :2] += self.n_tokens  # window start/end become offsets into tokens.bin
        rows[:, 2] = self.n_pieces
        self.tokens.write(ids.astype(self.token_dtype).tobytes())
        self.bars.write(bars.astype(np.uint16).tobytes())
        self.windows.write(rows.tobytes())
        self.pieces.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.n_tokens += len(ids)
        self.n_windows += len(rows)
        self.n_pieces += 1

    def close(self) -> dict[str, int]:
        for f in (self.tokens, self.bars, self.windows, self.pieces):
            f.close()
        return {"pieces": self.n_pieces, "windows": self.n_windows, "tokens": self.n_tokens}


class ShardWriter:
    """Stream pieces into a new shard folder; use as a context manager.

    Args:
        out: the final folder. An existing complete folder is replaced only on success.
        vocab_size: decides the token dtype (uint16 when it fits).
    """

    def __init__(self, out: Path, *, vocab_size: int):
        self.out = Path(out)
        self.tmp = self.out.with_name(f"{self.out.name}.partial-{os.getpid()}")
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True)
        self.token_dtype = "uint16" if vocab_size <= 65535 else "uint32"
        self.splits = {name: _SplitFiles(self.tmp / name, self.token_dtype) for name in SPLITS}
        self._done = False

    @property
    def folder(self) -> Path:
        """Where side files (tokenizer, report) go before the folder is moved into place."""
        return self.tmp

    def add(self, split: str, *, ids: np.ndarray, bars: np.ndarray, windows: np.ndarray, record: dict) -> None:
        """Append a piece: ``windows`` (W, 4) rows start, end, -, first bar relative to ``ids``."""
        self.splits[split].add(ids, bars, windows, record)

    def finish(self, manifest: dict[str, Any]) -> dict[str, dict[str, int]]:
        """Close the files, write the manifest, move the folder into place; returns counts."""
        counts = {name: files.close() for name, files in self.splits.items()}
        manifest = {"format_version": FORMAT_VERSION, "token_dtype": self.token_dtype, **manifest, "splits": counts}
        _write_json_atomic(self.tmp / MANIFEST, manifest)
        old = self.out.with_name(f"{self.out.name}.old-{os.getpid()}")
        if self.out.exists():
            self.out.rename(old)
        self.tmp.rename(self.out)
        shutil.rmtree(old, ignore_errors=True)
        self._done = True
        return counts

    def abort(self) -> None:
        for files in self.splits.values():
            for f in (files.tokens, files.bars, files.windows, files.pieces):
                f.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._done:
            self.abort()


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False))
    os.replace(tmp, path)

"""Write a shard folder by streaming pieces to disk; atomic on success, nothing on failure.

Everything goes to ``<out>.partial-<pid>`` first; the manifest is written last and the
folder is renamed into place only when complete, so an interrupted run never leaves a
shard folder that looks complete. Memory use does not grow with the corpus.

Nothing but a shard folder is ever replaced or deleted (issue 20): :func:`replace_problem`
says why a folder is not one, and :func:`remove_stale_temporaries` removes only folders named
like this module's temporaries whose process is gone and that hold nothing but shard files.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from midistruct.fsutil import replace_dir, replace_text
from midistruct.shards import FORMAT_VERSION, MANIFEST, SPLITS
from midistruct.shards.lock import pid_alive
from midistruct.shards.reader import ShardError
from midistruct.tokens.tokenizer import TOKENIZER_FILE

# Every name a shard folder (or its temporary) may hold; see the layout in midistruct.shards.
TOP_FILES = frozenset({MANIFEST, MANIFEST + ".tmp", TOKENIZER_FILE, "config.yaml", "report.tsv"})
SPLIT_FILES = frozenset({"tokens.bin", "bars.bin", "windows.bin", "pieces.jsonl"})


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
        if self.tmp.exists() or self.tmp.is_symlink():
            _remove_temporary(self.tmp)
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
        problem = replace_problem(self.out)  # checked again: the folder may have changed during the run
        if problem:
            raise ShardError(f"{self.out} {problem}; it was left as it was: choose another data.output")
        replace_dir(self.tmp, self.out)
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


def replace_problem(out: Path) -> str | None:
    """Why ``out`` must not be replaced by a new shard folder; None when it may be.

    It may be when it does not exist, is an empty folder, or is a shard folder: a real folder
    (not a link) holding only :data:`TOP_FILES` and split folders of :data:`SPLIT_FILES`, with a
    ``manifest.json`` carrying midistruct's ``format_version`` and ``settings_hash``. The answer
    reads as the end of a sentence starting with the folder's name.
    """
    out = Path(out)
    if out.is_symlink():
        return "is a symbolic link, not a midistruct shard folder"
    if not out.exists():
        return None
    if not out.is_dir():
        return "exists and is a file, not a midistruct shard folder"
    try:
        if not any(out.iterdir()):
            return None
        foreign = foreign_entries(out)
    except OSError as err:
        return f"cannot be read ({err.strerror}), so it is not known to be a midistruct shard folder"
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        return f"exists and is not a midistruct shard folder (it holds {shown})"
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return f"exists and is not a midistruct shard folder (no readable {MANIFEST})"
    if not isinstance(manifest, dict) or not {"format_version", "settings_hash"} <= manifest.keys():
        return f"exists and is not a midistruct shard folder ({MANIFEST} is not midistruct's)"
    return None


def foreign_entries(folder: Path) -> list[str]:
    """Paths under ``folder`` (relative, sorted) that a shard writer never makes; links count as foreign."""
    foreign = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name in SPLITS and entry.is_dir(follow_symlinks=False):
            foreign += [f"{entry.name}/{e.name}" for e in sorted(os.scandir(entry.path), key=lambda e: e.name)
                        if e.name not in SPLIT_FILES or not e.is_file(follow_symlinks=False)]
        elif entry.name not in TOP_FILES or not entry.is_file(follow_symlinks=False):
            foreign.append(entry.name)
    return foreign


def temporary_pids(out: Path, name: str) -> list[int] | None:
    """The process ids in ``name`` when it names a temporary of ``out``'s writers, else None.

    The temporaries are ``<out>.partial-P`` and ``<out>.old-P`` (:class:`ShardWriter`),
    ``<out>.base-P`` (prepare's BPE base) and ``<out>.base-P.partial-P``.
    """
    pattern = rf"{re.escape(Path(out).name)}(?:\.base-(\d+))?(?:\.(?:partial|old)-(\d+))?"
    match = re.fullmatch(pattern, name)
    if match is None or not any(match.groups()):
        return None
    return [int(g) for g in match.groups() if g]


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Remove the temporaries of ``out`` left by killed runs; returns them. Call it holding the lock.

    One is stale when each process in its name is gone (or is this one: under the lock nothing
    of ours is still writing). Folders holding anything a writer never makes are left alone.
    Each removal is one line on stderr.
    """
    out = Path(out)
    removed = []
    for path in sorted(out.parent.glob(f"{glob.escape(out.name)}.*")):
        pids = temporary_pids(out, path.name)
        if pids is None or any(pid_alive(p) and p != os.getpid() for p in pids):
            continue
        try:
            if path.is_symlink() or not path.is_dir() or foreign_entries(path):
                continue
            shutil.rmtree(path)
        except OSError as err:
            print(f"midistruct: could not remove {path}, left by an interrupted prepare: {err}", file=sys.stderr)
            continue
        print(f"midistruct: removed {path}, left by an interrupted prepare (process {pids[-1]})", file=sys.stderr)
        removed.append(path)
    return removed


def _remove_temporary(path: Path) -> None:
    """Remove a temporary of this process, refusing when it holds anything a writer never makes."""
    if path.is_symlink() or not path.is_dir() or foreign_entries(path):
        raise ShardError(f"{path} is in the way and is not a midistruct temporary folder; move it away")
    shutil.rmtree(path)


def _write_json_atomic(path: Path, data: dict) -> None:
    # the temporary's name is one the folder's checks know (TOP_FILES)
    replace_text(path, json.dumps(data, indent=2, ensure_ascii=False), tmp=path.with_suffix(path.suffix + ".tmp"))

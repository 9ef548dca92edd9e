"""Folder writes shared by every layer that writes a folder (shards, checkpoints). Imports only the
standard library, so any module may use it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def replace_dir(tmp: str | Path, final: str | Path) -> None:
    """Move the complete folder ``tmp`` to ``final``, replacing the folder there if any.

    Two renames in one parent folder: readers see the old folder or the new one, never a half-written
    one. The old folder passes through ``<final>.old-<pid>`` (the name the shard writer's stale-temporary
    cleanup knows) and is deleted last. The caller checks that ``final`` may be replaced.
    """
    tmp, final = Path(tmp), Path(final)
    old = final.with_name(f"{final.name}.old-{os.getpid()}")
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def replace_text(path: str | Path, text: str, *, tmp: str | Path | None = None) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file beside it and one rename: readers see the old file
    or the new one, never a half-written one. ``tmp``: the temporary's path where a folder's checks know its name
    (default ``.<name>.<pid>.tmp``)."""
    path = Path(path)
    tmp = Path(tmp) if tmp is not None else path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)

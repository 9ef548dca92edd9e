"""Checkpoint folders: a Hugging Face model folder plus everything needed to use or resume it.

Layout (``best/`` and ``last/`` in a run folder)::

    config.json, model.safetensors   MidiStructModel.save_pretrained
    miditok.json                     the tokenizer the model reads and writes
    midistruct.json                  package version, tokenizer hash, the resolved run config
    trainer_state.pt                 optimizer, scheduler, step, data position, RNG (for --resume)

Folders are written under a temporary name and renamed into place, so a crash mid-save
never leaves a folder that looks complete. :func:`load_checkpoint` needs no flags.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from midistruct.tokens.tokenizer import TOKENIZER_FILE, load_tokenizer, save_tokenizer

META_FILE = "midistruct.json"
STATE_FILE = "trainer_state.pt"
CHECKPOINT_FORMAT = 1


class CheckpointError(ValueError):
    """A folder is not a usable midistruct checkpoint; the message says what is missing."""


def save_checkpoint(folder: Path, *, model, tokenizer, meta: dict[str, Any], state: dict[str, Any] | None) -> None:
    """Write a complete checkpoint folder atomically (replacing an older one)."""
    from midistruct import __version__

    from transformers.utils import logging as hf_logging

    folder = Path(folder)
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    hf_logging.disable_progress_bar()  # one bar per save is noise inside a training bar
    model.save_pretrained(tmp)
    save_tokenizer(tokenizer, tmp)
    meta = {"format": CHECKPOINT_FORMAT, "midistruct_version": __version__, **meta}
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
    if state is not None:
        torch.save(state, tmp / STATE_FILE)
    old = folder.with_name(f"{folder.name}.old-{os.getpid()}")
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def check_checkpoint(folder: Path) -> dict[str, Any]:
    """The checkpoint's metadata; raises :class:`CheckpointError` naming what is wrong."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {folder} does not exist")
    missing = [f for f in ("config.json", "model.safetensors", TOKENIZER_FILE, META_FILE) if not (folder / f).is_file()]
    if missing:
        raise CheckpointError(f"{folder} is not a midistruct checkpoint: missing {', '.join(missing)}")
    meta = json.loads((folder / META_FILE).read_text())
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{folder}: checkpoint format {meta.get('format')}, this midistruct reads {CHECKPOINT_FORMAT}")
    return meta


def load_checkpoint(folder: Path, *, device: str | torch.device = "cpu"):
    """``(model, tokenizer, meta)`` from a checkpoint folder, model in eval mode."""
    from transformers.utils import logging as hf_logging

    from midistruct.model import MidiStructModel

    meta = check_checkpoint(folder)
    hf_logging.disable_progress_bar()
    model = MidiStructModel.from_pretrained(folder).to(device).eval()
    return model, load_tokenizer(folder), meta


def load_state(folder: Path) -> dict[str, Any]:
    """The trainer state saved beside the weights (for ``--resume``)."""
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"{folder} has no {STATE_FILE}: cannot resume from it")
    return torch.load(path, weights_only=False)

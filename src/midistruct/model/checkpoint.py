"""Checkpoint folders: a Hugging Face model folder plus everything needed to use or resume it.

Layout (``best/`` and ``last/`` in a run folder)::

    config.json, model.safetensors   MidiStructModel.save_pretrained (generation_config.json beside them)
    miditok.json                     the tokenizer the model reads and writes
    midistruct.json                  format, package version, tokenizer hash, step, the resolved run config
    trainer_state.safetensors        every tensor of the trainer state (for --resume), under its dotted
                                     path: optimizer.state.3.exp_avg, rng.torch (uint8), rng.cuda, ...
    trainer_state.json               the rest of it: {"format": 1, "state": tree}, where tree is the state
                                     with each tensor replaced by {"__tensor__": "<its key above>"}

The trainer state is ``{"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
"position": {step, epoch, batch_in_epoch, best}, "rng": {"torch": ..., "cuda": ...}}``. Nothing here is
read with pickle (issue 20): JSON and safetensors only. ``trainer_state.pt`` of older versions is read
with ``torch.load(weights_only=True)`` (tensors and containers only, torch >= 2.6) or refused.

Folders are written under a temporary name and renamed into place, so a crash mid-save
never leaves a folder that looks complete. :func:`load_checkpoint` is the one loader and needs no
flags (it also takes a shipped model's name, :mod:`midistruct.model.pretrained`); it and
:func:`check_checkpoint` validate a folder before use, so a damaged one fails with
one :class:`CheckpointError` line naming the folder and the file.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.torch_version import TorchVersion
from transformers.utils import logging as hf_logging

from midistruct import __version__
from midistruct.config import ConfigError, validate_config
from midistruct.errors import MidiStructError, one_line
from midistruct.fsutil import replace_dir
from midistruct.model import MidiStructConfig, MidiStructModel
from midistruct.tokens.remi import RemiVocab
from midistruct.tokens.tokenizer import TOKENIZER_FILE, load_tokenizer, save_tokenizer

META_FILE = "midistruct.json"
WEIGHTS_FILE = "model.safetensors"
MODEL_FILES = ("config.json", WEIGHTS_FILE, TOKENIZER_FILE, META_FILE)
STATE_TENSORS = "trainer_state.safetensors"
STATE_JSON = "trainer_state.json"
LEGACY_STATE_FILE = "trainer_state.pt"  # a pickle, written before issue 20
CHECKPOINT_FORMAT = 1
STATE_FORMAT = 1
TENSOR_REF = "__tensor__"
# config.json keys that decide tensor shapes; a config without them cannot describe the weights
SIZE_KEYS = ("vocab_size", "d_model", "n_heads", "encoder_layers", "decoder_layers", "ffn_dim",
             "max_positions", "max_bars", "latent_dim_bar", "latent_dim_segment")


class CheckpointError(MidiStructError, ValueError):
    """A folder is not a usable midistruct checkpoint; the message says what is missing."""


def readable_shards(folder, meta: dict, config, *, name: str | None = None, check_tokenizer: bool = True):
    """The :class:`~midistruct.shards.reader.ShardSet` at ``folder`` (or ``folder`` itself when it is one), or a
    one-line :class:`~midistruct.shards.reader.ShardError` when the model of checkpoint ``meta`` and ``config``
    (``name``: how the user gave it) cannot read it: shards of another tokenizer (their ids would mean other
    tokens; not checked without ``check_tokenizer``), or windows of more bars or tokens than the model reads."""
    from midistruct.shards.reader import ShardError, ShardSet

    shards = folder if isinstance(folder, ShardSet) else ShardSet(folder)
    who, init = name or "the model", name or "MODEL"
    want = meta.get("tokenizer_hash")
    if check_tokenizer and want and shards.tokenizer_hash != want:
        raise ShardError(f"{shards.folder} was prepared with tokenizer {shards.tokenizer_hash}, but {who} reads "
                         f"tokenizer {want}; prepare the data with its tokenizer: "
                         f"midistruct prepare --config CONFIG --init {init}")
    segments = shards.manifest.get("segments", {})
    bars, tokens = segments.get("bars", 0), segments.get("max_tokens", 0)
    if bars > config.max_bars or tokens + 1 > config.max_positions:
        raise ShardError(f"{shards.folder} holds windows of up to {bars} bars and {tokens} tokens; {who} reads at "
                         f"most {config.max_bars} bars and {config.max_positions - 1} tokens; prepare the data with "
                         f"--init {init}, which takes its window")
    return shards


# ---- writing ------------------------------------------------------------------------------------

def save_checkpoint(folder: Path, *, model, tokenizer, meta: dict[str, Any], state: dict[str, Any] | None) -> None:
    """Write a complete checkpoint folder atomically (replacing an older one).

    ``state`` is the trainer state (see the module docstring) or None for a weights-only folder.
    """
    folder = Path(folder)
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    hf_logging.disable_progress_bar()  # one bar per save is noise inside a training bar
    model.save_pretrained(tmp)
    save_tokenizer(tokenizer, tmp)
    meta = {"format": CHECKPOINT_FORMAT, "midistruct_version": __version__, **meta}
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
    if state is not None:
        save_state(tmp, state)
    replace_dir(tmp, folder)


def save_state(folder: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (nested dicts and lists of tensors, numbers, strings, None) as
    :data:`STATE_TENSORS` + :data:`STATE_JSON`. Tuples come back as lists, dict keys as strings."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(state, "", tensors)
    save_file(tensors, str(Path(folder) / STATE_TENSORS))
    (Path(folder) / STATE_JSON).write_text(json.dumps({"format": STATE_FORMAT, "state": tree}))


def _encode(obj: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    """``obj`` as JSON, its tensors moved into ``tensors`` under their dotted paths."""
    if isinstance(obj, torch.Tensor):
        tensors[key] = obj.detach().cpu().contiguous()
        return {TENSOR_REF: key}
    if isinstance(obj, dict):
        return {str(k): _encode(v, f"{key}.{k}" if key else str(k), tensors) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_encode(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"trainer state {key}: cannot store a {type(obj).__name__}")


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """The random states the training loop draws from: torch's CPU generator and, on CUDA, the
    device's (numpy generators in the loop are seeded from (seed, epoch) and need no state)."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


# ---- checking and loading a model folder --------------------------------------------------------

def check_checkpoint(folder: Path) -> dict[str, Any]:
    """The checkpoint's metadata (``midistruct.json``) after checking the folder without building a model:
    every file present, the JSON files parse, the weights' header reads, the run config validates.

    Raises :class:`CheckpointError` (one line naming the folder or file) when anything is wrong.
    """
    folder = Path(folder)
    if folder.is_file():
        raise CheckpointError(f"{folder} is a file; a checkpoint is a folder holding {', '.join(MODEL_FILES)}")
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {folder} does not exist")
    missing = [f for f in MODEL_FILES if not (folder / f).is_file()]
    if missing:
        raise CheckpointError(f"{folder} is not a midistruct checkpoint: missing {', '.join(missing)}")
    for name in ("config.json", TOKENIZER_FILE):
        _read_json(folder / name)
    meta = _read_json(folder / META_FILE)
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{folder}: checkpoint format {meta.get('format')}, this midistruct reads {CHECKPOINT_FORMAT}")
    _check_run_config(meta, folder / META_FILE)
    _weight_shapes(folder / WEIGHTS_FILE)
    return meta


def load_checkpoint(folder: str | Path, *, device: str | torch.device = "cpu"):
    """``(model, tokenizer, meta)`` from a checkpoint folder or a shipped model's name (``midistruct models``;
    :func:`midistruct.model.pretrained.resolve`: an existing folder wins), model in float32 and eval mode
    whatever dtype the weights were stored in (shipped models are bf16 or fp16).

    Checks the folder (:func:`check_checkpoint`), config.json against the model class, the weights'
    names and shapes against the model config.json builds, and the tokenizer against the model's
    vocabulary before loading; any mismatch is a :class:`CheckpointError`.
    """
    from midistruct.model.pretrained import resolve  # it imports this module

    folder = resolve(folder)
    meta = check_checkpoint(folder)
    config = checkpoint_config(folder)
    try:
        with torch.device("meta"):  # shapes only: no memory, no initialisation
            skeleton = MidiStructModel(config)
    except ValueError as err:  # e.g. an unknown conditioning, checked when the model is built
        raise CheckpointError(f"{folder / 'config.json'}: {one_line(err)}") from None
    check_weights(folder, skeleton)
    tokenizer = _checked_tokenizer(folder, config)
    hf_logging.disable_progress_bar()
    # transformers 5 loads in the stored dtype by default ("auto"); generation and training expect float32
    model = MidiStructModel.from_pretrained(folder, config=config, dtype=torch.float32).to(device).eval()
    return model, tokenizer, meta


def key_mode(meta: dict[str, Any]) -> str:
    """How the checkpoint whose ``midistruct.json`` is ``meta`` reads pitch (``augment.key``, issue 14):
    ``"canonical"`` (every piece in C major / A minor) or ``"absolute"`` (as written; checkpoints from before the
    option)."""
    return meta.get("run_config", {}).get("augment", {}).get("key", "absolute")


def checkpoint_config(folder: Path):
    """The ``MidiStructConfig`` in ``folder/config.json``; :class:`CheckpointError` when it is not one."""
    from huggingface_hub.errors import StrictDataclassError

    path = Path(folder) / "config.json"
    raw = _read_json(path)
    if raw.get("model_type", MidiStructConfig.model_type) != MidiStructConfig.model_type:
        raise CheckpointError(f"{path}: model_type {raw['model_type']!r}, not {MidiStructConfig.model_type!r}")
    missing = [k for k in SIZE_KEYS if k not in raw]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}")
    try:
        return MidiStructConfig.from_dict(raw)
    except (StrictDataclassError, ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: {one_line(err)}") from None


def _weight_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` from a safetensors file's header; :class:`CheckpointError` when unreadable."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path} is damaged ({one_line(err)})") from None


def check_weights(folder: Path, model: torch.nn.Module) -> None:
    """Raise :class:`CheckpointError` unless ``folder/model.safetensors`` holds ``model``'s tensors with
    its shapes (tied copies, which ``save_pretrained`` leaves out, may be absent)."""
    path = Path(folder) / WEIGHTS_FILE
    found = _weight_shapes(path)
    wanted = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    problems = [f"{k} is {list(found[k])}, config.json needs {list(wanted[k])}"
                for k in sorted(found.keys() & wanted.keys()) if found[k] != wanted[k]]
    problems += [f"missing {k}" for k in sorted(wanted.keys() - found.keys() - tied)]
    problems += [f"unexpected {k}" for k in sorted(found.keys() - wanted.keys())]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise CheckpointError(f"{path} does not match {folder}/config.json: {'; '.join(problems[:3])}{more}")


def load_weights(folder: Path, model: torch.nn.Module) -> None:
    """Copy ``folder/model.safetensors`` into ``model`` (in its dtype) after :func:`check_weights`: a training
    run's ``--resume`` and ``--init`` start from it."""
    from safetensors.torch import load_model

    check_weights(folder, model)
    load_model(model, Path(folder) / WEIGHTS_FILE)


POSTERIOR_STD0 = 0.5  # the posterior's first standard deviation when deterministic codes become a VAE's


def load_grown_weights(folder: Path, model: torch.nn.Module, *, vocab_map=None) -> dict[str, int]:
    """``--init`` into a model that adds functional blocks (issue 19) to ``folder``'s, and maybe tokens.

    Every weight of the same shape is copied. A layer reading ``[bar code ; segment code]`` keeps each old block's
    columns at that block's new place, the new blocks' columns starting at zero (so the decoder starts as the
    checkpoint's and learns to read the new codes). A new block's encoder starts as a copy of the checkpoint's
    content encoder where the shapes agree. ``vocab_map`` (V_new,): the checkpoint's id of each new token id (-1:
    a new token, which keeps its initialisation) for the rows of every vocabulary-sized weight (embeddings, output
    layers), when the tokenizer gained tokens (velocity). Deterministic codes (``latent_mode: ae``) growing into a
    VAE's keep each code projection as the posterior mean, the new log-variance half at ``2 ln POSTERIOR_STD0``.
    Returns how many tensors were copied, grown (columns or rows moved) and left at their initialisation."""
    from safetensors.torch import load_file

    saved = load_file(str(Path(folder) / WEIGHTS_FILE))
    old_cfg, cfg = checkpoint_config(folder), model.config
    old_blocks, new_blocks = old_cfg.block_slices(), cfg.block_slices()
    old_codes, new_codes = old_cfg.bar_code_dim, cfg.bar_code_dim
    rows = None if vocab_map is None else torch.as_tensor(vocab_map, dtype=torch.long)
    state = model.state_dict()
    counts = {"copied": 0, "grown": 0, "initialised": 0}
    for key, target in state.items():
        source = saved.get(key)
        for block in ("arrangement", "performance"):
            if source is None and key.startswith(f"{block}.encoder."):
                source = saved.get(key.removeprefix(f"{block}."))
        if source is None:
            counts["initialised"] += 1
            continue
        source, remapped = source.to(target.dtype), False
        if rows is not None and source.ndim >= 1 and source.shape[0] == old_cfg.vocab_size \
                and target.shape[0] == len(rows):  # a vocabulary-sized weight (no other size equals the vocabulary's)
            moved, known = source.new_zeros((len(rows), *source.shape[1:])), rows >= 0
            moved[known] = source[rows[known]]
            if moved.shape[1:] == target.shape[1:]:
                moved[~known] = target[~known]  # new tokens keep their initialisation
            source, remapped = moved, True
        if source.shape == target.shape:
            target.copy_(source)
            counts["grown" if remapped else "copied"] += 1
        elif (key.startswith("bottleneck.") and ".proj." in key and target.shape[0] == 2 * source.shape[0]
              and target.shape[1:] == source.shape[1:] and old_cfg.latent_mode == "ae" and cfg.latent_mode == "vae"):
            # deterministic codes become a VAE's posterior means; the log-variance half starts at 2 ln(0.5) (a
            # posterior standard deviation of 0.5 everywhere: zero weights, that bias)
            target.zero_()
            target[: source.shape[0]] = source
            if key.endswith("bias"):
                target[source.shape[0] :] = 2 * math.log(POSTERIOR_STD0)
            counts["grown"] += 1
        elif (source.ndim == 2 and source.shape[0] == target.shape[0]
              and target.shape[1] - source.shape[1] == new_codes - old_codes > 0):
            target.zero_()
            for name, old in old_blocks.items():
                target[:, new_blocks[name]] = source[:, old]
            target[:, new_codes:] = source[:, old_codes:]
            counts["grown"] += 1
        else:
            counts["initialised"] += 1
    if counts["copied"] == 0:
        raise CheckpointError(f"{folder}: none of its weights fit this model")
    return counts


def vocab_map(old_tokens: list[str], new_tokens: list[str]):
    """(V_new,) the old id of each new token string, -1 for tokens the old vocabulary lacks (numpy int64)."""
    old = {t: i for i, t in enumerate(old_tokens)}
    return np.array([old.get(t, -1) for t in new_tokens], dtype=np.int64)


def _checked_tokenizer(folder: Path, config):
    """The folder's tokenizer, checked to be the one the model was trained with (vocabulary, the ids that
    open a bar)."""
    path = folder / TOKENIZER_FILE
    try:
        tokenizer = load_tokenizer(folder)
        vocab = RemiVocab(tokenizer)
    except (ValueError, TypeError, KeyError, AttributeError) as err:  # miditok on a damaged file
        raise CheckpointError(f"{path} is not a usable tokenizer ({one_line(err)})") from None
    if vocab.size > config.vocab_size or vocab.bar_id != config.bar_token_id:
        raise CheckpointError(f"{path} does not match {folder}/config.json: vocabulary {vocab.size} "
                              f"and Bar id {vocab.bar_id}, the model has {config.vocab_size} and {config.bar_token_id}")
    if vocab.bar_opening_ids().tolist() != (config.bar_token_ids or [config.bar_token_id]):
        raise CheckpointError(f"{folder}/config.json does not list the BPE ids that open a bar (bar_token_ids), so "
                              "its decoder read every token as bar 0 (issue 13); train this model again")
    return tokenizer


def _check_run_config(meta: dict[str, Any], path: Path) -> None:
    """``meta["run_config"]`` must validate as a :class:`~midistruct.config.Config` (generation reads it)."""
    if not isinstance(meta.get("run_config"), dict):
        raise CheckpointError(f"{path} has no run_config")
    try:
        validate_config(meta["run_config"])
    except ConfigError as err:
        raise CheckpointError(f"{path}: invalid run_config ({str(err).removeprefix('invalid config: ')})") from None


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; :class:`CheckpointError` when it does not parse or is not an object."""
    try:
        value = json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
        raise CheckpointError(f"{path} is not valid JSON ({one_line(err)})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} is not a JSON object")
    return value


# ---- the trainer state (--resume) ---------------------------------------------------------------

def has_state(folder: Path) -> bool:
    """Whether ``folder`` holds a trainer state to resume from (current or legacy format)."""
    folder = Path(folder)
    return (folder / STATE_JSON).is_file() or (folder / LEGACY_STATE_FILE).is_file()


def load_state(folder: Path) -> dict[str, Any]:
    """The trainer state saved beside the weights (for ``--resume``), read with JSON and safetensors only.

    Returns ``{"optimizer", "scheduler", "position", "rng"}`` as in the module docstring, tensors on the
    CPU, optimizer state keys ints again. The structure is checked here, the fit to the live optimizer,
    scheduler and position in :func:`restore_trainer`. Raises :class:`CheckpointError`.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"cannot resume: {folder} does not exist")
    if not (folder / STATE_JSON).is_file() and (folder / LEGACY_STATE_FILE).is_file():
        return _load_legacy_state(folder / LEGACY_STATE_FILE)
    missing = [f for f in (STATE_JSON, STATE_TENSORS) if not (folder / f).is_file()]
    if missing:
        raise CheckpointError(f"cannot resume from {folder}: no trainer state ({', '.join(missing)} missing)")
    doc = _read_json(folder / STATE_JSON)
    if doc.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{folder / STATE_JSON}: format {doc.get('format')}, "
                              f"this midistruct reads {STATE_FORMAT}")
    try:
        tensors = load_file(str(folder / STATE_TENSORS))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{folder / STATE_TENSORS} is damaged ({one_line(err)})") from None
    return _checked_state(_decode(doc.get("state"), tensors, folder / STATE_TENSORS), folder / STATE_JSON)


def _decode(obj: Any, tensors: dict[str, torch.Tensor], source: Path) -> Any:
    """Inverse of :func:`_encode`: ``{"__tensor__": key}`` becomes ``tensors[key]``."""
    if isinstance(obj, dict):
        if set(obj) == {TENSOR_REF}:
            key = obj[TENSOR_REF]
            if not isinstance(key, str) or key not in tensors:
                raise CheckpointError(f"{source} lacks the tensor {key}")
            return tensors[key]
        return {k: _decode(v, tensors, source) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v, tensors, source) for v in obj]
    return obj


def _load_legacy_state(path: Path) -> dict[str, Any]:
    """``trainer_state.pt`` (a torch pickle, before issue 20) through torch's restricted unpickler, which
    builds tensors and plain containers only and refuses anything else without running it."""
    if TorchVersion(torch.__version__) < "2.6":  # weights_only had a known escape before 2.6 (CVE-2025-32434)
        raise CheckpointError(f"{path} was written by an older midistruct; resuming from it needs torch >= 2.6 "
                              "to read it safely; upgrade torch or start a new run")
    try:
        old = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # refused globals (UnpicklingError), truncation (EOFError, RuntimeError), ...
        raise CheckpointError(f"{path} (written by an older midistruct) is damaged or holds more than tensors and "
                              f"numbers ({type(err).__name__}), so it was not loaded; start a new run") from None
    if not isinstance(old, dict) or not {"optimizer", "scheduler", "position", "torch_rng"} <= old.keys():
        raise CheckpointError(f"{path} is not a midistruct trainer state")
    state = {"optimizer": old["optimizer"], "scheduler": old["scheduler"], "position": old["position"],
             "rng": {"torch": old["torch_rng"]}}
    return _checked_state(state, path)


def _checked_state(state: Any, source: Path) -> dict[str, Any]:
    """``state`` with its four parts present and the optimizer's in ``state_dict`` form (int state keys)."""
    parts = ("optimizer", "scheduler", "position", "rng")
    if not isinstance(state, dict) or not all(isinstance(state.get(p), dict) for p in parts):
        raise CheckpointError(f"{source}: the trainer state needs {', '.join(parts)}")
    opt = state["optimizer"]
    groups, entries = opt.get("param_groups"), opt.get("state")
    if (not isinstance(groups, list) or not isinstance(entries, dict) or not all(
            isinstance(g, dict) and isinstance(g.get("params"), list) and "lr" in g for g in groups)):
        raise CheckpointError(f"{source}: the optimizer state needs state and param_groups (params, lr)")
    try:
        opt["state"] = {int(k): v for k, v in entries.items()}
    except ValueError:
        raise CheckpointError(f"{source}: optimizer state keys must be parameter numbers") from None
    if "last_epoch" not in state["scheduler"]:
        raise CheckpointError(f"{source}: the scheduler state lacks last_epoch")
    return state


def restore_trainer(state: dict[str, Any], *, optimizer, scheduler, position: dict[str, Any],
                    device: torch.device, source: Path) -> dict[str, Any]:
    """Load ``state`` (from :func:`load_state`) into the optimizer, scheduler and RNGs after checking it
    fits them; returns the saved position, shaped like ``position``. :class:`CheckpointError` otherwise.

    Keys that a newer torch added to the optimizer or scheduler state may be absent (torch fills them
    in); present ones must have the live ones' kinds and lengths.
    """
    where = f"cannot resume from {source}: trainer state"
    optimizer_state = _fit_optimizer_state(state["optimizer"], optimizer, where)
    _check_like(state["scheduler"], scheduler.state_dict(), f"{where} scheduler", strict=False)
    _check_like(state["position"], position, f"{where} position")
    live_rng = rng_state(device)
    _check_like({k: v for k, v in state["rng"].items() if k in live_rng}, live_rng, f"{where} rng")
    optimizer.load_state_dict(optimizer_state)
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["torch"])
    if "cuda" in live_rng and "cuda" in state["rng"]:  # a CPU run resumed on a GPU starts the GPU stream afresh
        torch.cuda.set_rng_state(state["rng"]["cuda"], device)
    return {k: state["position"][k] for k in position}


def _fit_optimizer_state(saved: dict[str, Any], optimizer, where: str) -> dict[str, Any]:
    """``saved`` checked against ``optimizer`` (group and parameter counts, each per-parameter tensor
    shaped like its parameter), with the tuples JSON turned into lists (AdamW's betas) restored."""
    live = optimizer.state_dict()["param_groups"]
    _check_like(saved["param_groups"], live, f"{where} optimizer.param_groups", strict=False)
    params = list(chain.from_iterable(g["params"] for g in optimizer.param_groups))
    index = dict(zip(chain.from_iterable(g["params"] for g in saved["param_groups"]), params))
    for k, entry in saved["state"].items():
        if k not in index or not isinstance(entry, dict):
            raise CheckpointError(f"{where} optimizer.state has parameter {k}, which the model does not have")
        for name, value in entry.items():
            if isinstance(value, torch.Tensor) and value.ndim and value.shape != index[k].shape:
                raise CheckpointError(f"{where} optimizer.state.{k}.{name} is {list(value.shape)}, "
                                      f"its parameter {list(index[k].shape)}")
    groups = [{k: tuple(v) if isinstance(now.get(k), tuple) else v for k, v in group.items()}
              for group, now in zip(saved["param_groups"], live)]
    return {**saved, "param_groups": groups}


def _check_like(saved: Any, live: Any, where: str, *, strict: bool = True) -> None:
    """Raise :class:`CheckpointError` unless ``saved`` has ``live``'s structure: dicts with its keys (only
    those present when not ``strict``), lists of its length, tensors of its shape and dtype, numbers
    where it has numbers."""
    if isinstance(live, dict):
        if not isinstance(saved, dict):
            raise CheckpointError(f"{where}: got {_kind(saved)}, expected a mapping")
        missing = [str(k) for k in live if k not in saved]
        if missing and strict:
            raise CheckpointError(f"{where} lacks {', '.join(missing)}")
        for k in live.keys() & saved.keys():
            _check_like(saved[k], live[k], f"{where}.{k}", strict=strict)
    elif isinstance(live, (list, tuple)):
        if not isinstance(saved, (list, tuple)) or len(saved) != len(live):
            raise CheckpointError(f"{where}: got {_kind(saved)}, expected {len(live)}")
        for i, (s, v) in enumerate(zip(saved, live)):
            _check_like(s, v, f"{where}.{i}", strict=strict)
    elif isinstance(live, torch.Tensor):
        if not isinstance(saved, torch.Tensor) or saved.shape != live.shape or saved.dtype != live.dtype:
            raise CheckpointError(f"{where}: got {_kind(saved)}, expected a {live.dtype} tensor {list(live.shape)}")
    elif not _same_kind(saved, live):
        raise CheckpointError(f"{where}: got {_kind(saved)}, expected {type(live).__name__}")


def _same_kind(saved: Any, live: Any) -> bool:
    """Scalar compatibility: bools and strings exactly, ints as ints, floats as any number; None any."""
    if live is None:
        return True
    if isinstance(live, (bool, str)):
        return type(saved) is type(live)
    if isinstance(live, int):
        return isinstance(saved, int) and not isinstance(saved, bool)
    if isinstance(live, float):
        return isinstance(saved, (int, float)) and not isinstance(saved, bool)
    return True


def _kind(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor {list(value.shape)}"
    if isinstance(value, (list, tuple)):
        return f"{len(value)} values"
    return f"a {type(value).__name__}"

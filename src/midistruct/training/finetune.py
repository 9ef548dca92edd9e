"""``--init``: start a new run from a trained checkpoint's weights (issue 15: fine-tune a shipped model on your MIDI).

What the weights fix comes from the checkpoint; the config decides the rest (data, schedule, run folder):

- the model: every key of the checkpoint's ``config.json`` becomes the run's ``model`` section (a config's own
  model keys are not used; :func:`train_config` lists those that differ, for the one-line note the trainer prints);
- the tokenizer: the data must have been prepared with the checkpoint's (:func:`check_data` compares the shard
  folder's tokenizer hash), which ``midistruct prepare --init`` does (:func:`prepare_config`);
- the window: the data's windows must fit the model's bar and position tables;
- how the model reads pitch (``augment.key``: as written, or every piece in C major / A minor), so that a
  fine-tuned canonical model still reads the key it learnt in.

The optimizer, scheduler and step start afresh. Each checkpoint of the run records where it started
(:func:`record`, ``midistruct.json["init"]``), so a model card can say it and ``--resume`` rebuilds the same model.
Checkpoint folders are read by :mod:`midistruct.model.checkpoint`; nothing here opens their files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from midistruct.config import AugmentConfig, Config, ModelSettings
from midistruct.errors import MidiStructError
from midistruct.model.checkpoint import META_FILE, check_checkpoint, checkpoint_config, readable_shards, vocab_map
from midistruct.model.pretrained import names, resolve
from midistruct.tokens.remi import RemiVocab
from midistruct.tokens.tokenizer import load_tokenizer


class InitError(MidiStructError, ValueError):
    """A run cannot start from the ``--init`` checkpoint as asked; one line saying what to do."""


@dataclass(frozen=True)
class InitCheckpoint:
    """A checked checkpoint to start from: ``given`` as the user typed it (a shipped name or a folder)."""

    given: str
    folder: Path
    meta: dict[str, Any]
    config: Any  # MidiStructConfig, from its config.json

    @property
    def run_config(self) -> Config:
        return Config.model_validate(self.meta["run_config"])  # validated by check_checkpoint


def starting_point(cfg: Config, *, init: str | Path | None, resume: bool
                   ) -> tuple[Config, InitCheckpoint | None, list[str]]:
    """``(cfg, checkpoint, ignored)`` of a training run: with ``init``, ``cfg`` with that checkpoint's model and
    tokenizer (:func:`train_config`); when resuming a run that started from one, with its last checkpoint's;
    else ``(cfg, None, [])``. :class:`InitError` for ``init`` and ``resume`` together."""
    if init is not None and resume:
        raise InitError("--init starts a new run from a checkpoint's weights and --resume continues this run's own "
                        "last checkpoint; give one of them")
    start = open_init(init) if init is not None else run_init(Path(cfg.train.run_dir) / "last") if resume else None
    if start is None:
        return cfg, None, []
    cfg, ignored = train_config(cfg, start)
    return cfg, start, ignored


def open_init(name_or_folder: str | Path) -> InitCheckpoint:
    """The checkpoint folder or shipped model ``name_or_folder``, checked; :class:`CheckpointError` otherwise."""
    folder = resolve(name_or_folder)
    meta = check_checkpoint(folder)
    return InitCheckpoint(str(name_or_folder), folder, meta, checkpoint_config(folder))


def record(init: InitCheckpoint) -> dict[str, Any]:
    """What ``midistruct.json["init"]`` says: the checkpoint as given, whether it is a shipped model, its step and
    tokenizer, and the data sources its weights were trained on (its own init's included: the licence check of
    ``midistruct export`` reads them)."""
    earlier = init.meta.get("init") or {}
    sources = init.meta["run_config"].get("data", {}).get("sources", []) + earlier.get("sources", [])
    return {"checkpoint": init.given, "shipped": init.given in names() and not Path(init.given).exists(),
            "step": init.meta.get("step"), "tokenizer_hash": init.meta.get("tokenizer_hash"), "sources": sources}


def run_init(run_checkpoint: Path) -> InitCheckpoint | None:
    """The checkpoint of a run to ``--resume`` as an :class:`InitCheckpoint` when that run started from ``--init``
    (its model settings are then its own, not the config's); None for any other run or no checkpoint yet."""
    if not (Path(run_checkpoint) / META_FILE).is_file():
        return None  # resuming reports the missing checkpoint itself
    init = open_init(run_checkpoint)
    return init if init.meta.get("init") else None


# Model keys that grow a checkpoint by a part it lacks: a functional block (issue 19), the decoder's memory reads
# (``decoder_memory``), the section head or the decoder's tags (issue 18). Each maps to the width that says whether the checkpoint has
# that part; a key is the config's when its part is new, and the checkpoint's weights are copied into the larger
# model (``checkpoint.load_grown_weights``).
# A run adding memory reads may also change the conditioning (``sequence_views`` reads by attention what "plan"
# picked by the window's slot): every conditioning but "prefix" shares the projection "add" has, which is kept.
GROWN_KEYS = {"arrangement_dim": "arrangement_dim", "arrangement_layers": "arrangement_dim",
              "arrangement_pitch": "arrangement_dim", "block_pooling": "arrangement_dim",
              "performance_dim": "performance_dim", "performance_layers": "performance_dim",
              "decoder_memory": "decoder_memory", "sequence_views": "decoder_memory",
              "conditioning": "decoder_memory", "section_head": "section_head", "section_classes": "section_head",
              "decoder_tags": "decoder_tags", "tag_dropout": "decoder_tags", "tag_adversary": "tag_adversary"}
BLOCK_DIMS = ("arrangement_dim", "performance_dim")
GROWN_PARTS = (*BLOCK_DIMS, "decoder_memory", "section_head", "decoder_tags", "tag_adversary")


def adds_blocks(init: InitCheckpoint, model) -> bool:
    """Whether ``model`` (a config's ``model`` section or a ``MidiStructConfig``) has a functional block the ``init``
    checkpoint lacks."""
    return any(getattr(model, k) and not getattr(init.config, k) for k in BLOCK_DIMS)


def becomes_vae(init: InitCheckpoint, model) -> bool:
    """Whether ``model`` (``latent_mode: vae``) makes the ``init`` checkpoint's deterministic codes (``ae``) a VAE's:
    its code projections become the posterior means and a log-variance half is added (``load_grown_weights``), so a
    shipped model can be fine-tuned into a compressed code (issue 14; docs/RESULTS.md "The ELBO as a bound")."""
    return model.latent_mode == "vae" and init.config.latent_mode == "ae"


def grows(init: InitCheckpoint, model) -> bool:
    """Whether ``model`` has a part the ``init`` checkpoint lacks (``GROWN_PARTS``, or a posterior variance:
    :func:`becomes_vae`): its weights are then loaded by ``load_grown_weights``, the new parts starting where they
    leave the checkpoint's outputs as they were."""
    return any(getattr(model, k) and not getattr(init.config, k) for k in GROWN_PARTS) or becomes_vae(init, model)


def train_config(cfg: Config, init: InitCheckpoint) -> tuple[Config, list[str]]:
    """``cfg`` with the checkpoint's model (every key of its config.json) and tokenizer settings, and what of
    ``cfg`` is not used for that: ``"model.d_model=32 (checkpoint: 256)"`` per model key it sets otherwise, and
    ``"tokenizer"`` when its tokenizer section differs.

    A config that adds a part the checkpoint lacks (``GROWN_KEYS``: a functional block, the decoder's memory reads)
    keeps that part's keys. One that adds a functional block also keeps its tokenizer: a performance block needs
    velocity tokens the checkpoint may not have, and the checkpoint's weights are then moved to the new token ids
    (:func:`vocab_remap`). A part the checkpoint has keeps its size."""
    settings = {k: getattr(init.config, k) for k in ModelSettings.model_fields}
    tokenizer = init.run_config.tokenizer
    if grows(init, cfg.model):
        for key in GROWN_PARTS:
            have, want = getattr(init.config, key), getattr(cfg.model, key)
            if key == "decoder_tags":  # the config names tags, the checkpoint keeps their values
                have, want = list(have or []), list(want or [])
            if have and want and want != have:
                raise InitError(f"{init.given} has model.{key}={have}; a run growing it keeps that size "
                                f"(the config asks {want})")
        settings.update({k: getattr(cfg.model, k) for k, part in GROWN_KEYS.items() if not getattr(init.config, part)})
    if becomes_vae(init, cfg.model):  # the codes become a VAE's, with the config's free bits
        settings.update(latent_mode="vae", free_bits=cfg.model.free_bits)
    if adds_blocks(init, cfg.model):
        tokenizer = cfg.tokenizer
        for key in ("vocab_size", "bar_token_id", "bar_token_ids"):  # the data's tokenizer decides these
            settings.pop(key)
    ignored = [f"model.{k}={v!r} (checkpoint: {settings[k]!r})"
               for k, v in cfg.model.overrides().items() if k in settings and _differs(v, settings[k])]
    if cfg.tokenizer != tokenizer:
        ignored.append("tokenizer")
    augment = _checkpoint_key(cfg.augment, init.run_config.augment.key, ignored)
    return cfg.model_copy(update={"model": ModelSettings(**settings), "tokenizer": tokenizer, "augment": augment}), ignored


def _checkpoint_key(augment: AugmentConfig, key: str, ignored: list[str]) -> AugmentConfig:
    """``augment`` with the checkpoint's ``key`` mode (how its model reads pitch: as written, or every piece in
    C major / A minor), noting in ``ignored`` what of ``augment`` that overrules; a canonical checkpoint trains
    without random transposition."""
    if augment.key != key:
        ignored.append(f"augment.key={augment.key!r} (checkpoint: {key!r})")
    transpose = augment.transpose
    if key == "canonical" and transpose != (0, 0):
        ignored.append(f"augment.transpose={list(transpose)} (the checkpoint reads every piece in C major / A minor)")
        transpose = (0, 0)
    return AugmentConfig(transpose=transpose, key=key)


def vocab_remap(init: InitCheckpoint, tokenizer):
    """None when ``tokenizer`` (the run's data's) has the checkpoint's vocabulary; else (V,) the checkpoint's id of
    each of its token ids (-1 for a token the checkpoint lacks), for ``load_grown_weights``. :class:`InitError` when
    the checkpoint has tokens the data's tokenizer lacks."""
    old, new = RemiVocab(load_tokenizer(init.folder)), RemiVocab(tokenizer)
    if old.base_tokens == new.base_tokens and old.size == new.size:
        return None
    if old.is_bpe or new.is_bpe:
        raise InitError(f"{init.given}: adding tokens to a BPE vocabulary is not supported")
    lost = sorted(set(old.base_tokens) - set(new.base_tokens))
    if lost:
        raise InitError(f"the data's tokenizer lacks {len(lost)} of {init.given}'s tokens (e.g. {lost[0]}); prepare "
                        "it with the checkpoint's tokenizer settings plus what the new block needs")
    return vocab_map(old.base_tokens, new.base_tokens)


def prepare_config(cfg: Config, init: InitCheckpoint) -> tuple[Config, list[str]]:
    """``cfg`` with the checkpoint's tokenizer and window (``segments.bars``, ``segments.max_tokens``), so that
    its shards train from ``init``; and the keys of ``cfg`` that changed. :class:`InitError` for a BPE tokenizer,
    whose merges were learned on the checkpoint's own data."""
    run = init.run_config
    if run.tokenizer.bpe_vocab_size:
        raise InitError(f"{init.given} uses a BPE tokenizer learned on its own data; preparing other music with it "
                        "is not supported yet")
    window = {"bars": run.segments.bars, "max_tokens": run.segments.max_tokens}
    changed = ["tokenizer"] if cfg.tokenizer != run.tokenizer else []
    changed += [f"segments.{k}={getattr(cfg.segments, k)} (checkpoint: {v})" for k, v in window.items()
                if getattr(cfg.segments, k) != v]
    segments = cfg.segments.model_copy(update=window)
    return cfg.model_copy(update={"tokenizer": run.tokenizer, "segments": segments}), changed


def check_data(shards, init: InitCheckpoint, *, adding_blocks: bool = False) -> None:
    """:class:`InitError` unless the shard folder ``shards`` (a ``ShardSet``) was made with the checkpoint's
    tokenizer (or, ``adding_blocks``, one holding all of its tokens: :func:`vocab_remap`) and its windows fit the
    model (bars, tokens + BOS; :func:`~midistruct.model.checkpoint.readable_shards`)."""
    from midistruct.shards.reader import ShardError

    if adding_blocks:
        vocab_remap(init, shards.tokenizer())
    try:
        readable_shards(shards, init.meta, init.config, name=str(init.given), check_tokenizer=not adding_blocks)
    except ShardError as err:
        raise InitError(str(err)) from None


def _differs(a: Any, b: Any) -> bool:
    """Config values compared as JSON would (a tuple equals the list of its items; tag names equal the
    ``{name: values}`` a checkpoint keeps of them, ``decoder_tags``)."""
    norm = (lambda v: list(v) if isinstance(v, (tuple, dict)) else v)
    return norm(a) != norm(b)

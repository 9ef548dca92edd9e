"""``midistruct train``: the training loop.

AdamW with warm-up + cosine decay, gradient clipping, KL annealing (beta rises linearly
to ``train.beta_max``), bf16 autocast where the hardware supports it. Batches come from
a per-epoch permutation seeded by ``(seed, epoch)``, so the data position is two
integers and ``--resume`` continues the same run exactly (with RNG state restored).
Only rank 0 evaluates, logs and saves when run under torchrun.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from transformers import get_cosine_schedule_with_warmup

from midistruct.config import Config, dump_config
from midistruct.errors import MidiStructError
from midistruct.fsutil import replace_text
from midistruct.model import MidiStructConfig, MidiStructModel
from midistruct.model.checkpoint import (
    META_FILE, check_checkpoint, load_grown_weights, load_state, load_weights, restore_trainer, rng_state, save_checkpoint,
)
from midistruct.shards.dataset import WindowDataset, collate, tag_vocabulary
from midistruct.shards.reader import ShardSet
from midistruct.tokens.remi import RemiVocab
from midistruct.tokens.tokenizer import settings_hash
from midistruct.training import distributed, finetune, validation


class TrainError(MidiStructError, ValueError):
    """The run cannot start as configured (no shards, empty split, bad model keys...)."""


def refuse_existing_run(run_dir: Path) -> None:
    """A new run must not replace another run's checkpoints or append to its metrics (issue 20)."""
    held = [name for name in ("last", "best", "metrics.jsonl") if (run_dir / name).exists()]
    if held:
        raise TrainError(f"{run_dir} already holds a run ({', '.join(held)}); continue it with --resume, "
                         "choose another train.run_dir, or replace it with --overwrite")


def clear_run(run_dir: Path) -> None:
    """Remove a previous run's checkpoints and metrics (``--overwrite``); anything not ours is refused."""
    for name in ("last", "best"):
        folder = run_dir / name
        if folder.exists() and not (folder / META_FILE).is_file():
            raise TrainError(f"{folder} is not a midistruct checkpoint; not replacing it")
    if run_dir.is_dir():
        for name in ("last", "best"):
            shutil.rmtree(run_dir / name, ignore_errors=True)
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)


def model_config(cfg: Config, tokenizer):
    """``MidiStructConfig`` from ``cfg.model`` plus what the data decides (vocab, ids, lengths)."""
    valid = {f.name for f in dataclasses.fields(MidiStructConfig)}
    unknown = sorted(set(cfg.model.overrides()) - valid)
    if unknown:
        raise TrainError(f"unknown model keys {unknown}; valid: {', '.join(sorted(valid))}")
    vocab = RemiVocab(tokenizer)
    if cfg.model.performance_dim and not vocab.has_velocities:
        raise TrainError("model.performance_dim reads each note's velocity, and this data has no velocity tokens; "
                         "prepare it with --set tokenizer.use_velocities=true")
    derived = {
        "vocab_size": vocab.size, "bar_token_id": vocab.bar_id,
        "max_positions": cfg.segments.max_tokens + 1, "max_bars": cfg.segments.bars,
    }
    if vocab.is_bpe:  # the merges that open a bar, which the decoder must count (issue 13)
        derived["bar_token_ids"] = vocab.bar_opening_ids().tolist()
    given = cfg.model.overrides()
    names = given.pop("decoder_tags", None) or []
    if isinstance(names, dict):  # a checkpoint's (--init, --resume): its values, in its order
        derived["decoder_tags"] = names or None
    elif names:  # the tag names a user gives; the model keeps their values in the training data (issue 18 item 2)
        derived["decoder_tags"] = decoder_tag_values(cfg, names)
    return MidiStructConfig(**{**derived, **given})


def decoder_tag_values(cfg: Config, names: list[str]) -> dict[str, list[str]]:
    """``model.decoder_tags``' values: those of the training windows of ``data.output`` with 20 or more windows
    (:func:`~midistruct.shards.dataset.tag_vocabulary`). A model reading a canonical key cannot read ``key`` or
    ``tonic`` (its pieces are all in C major / A minor; generation reaches a tonic by transposing)."""
    keyed = [name for name in names if name in ("key", "tonic")]
    if keyed and cfg.augment.key == "canonical":
        raise TrainError(f"model.decoder_tags {keyed}: this model reads every piece in C major / A minor "
                         "(augment.key: canonical), so its decoder never sees another tonic; give mode instead")
    if len(set(names)) != len(names):
        raise TrainError(f"model.decoder_tags names a tag twice: {names}")
    try:
        return tag_vocabulary([cfg.data.output], "train", list(names))
    except ValueError as err:
        raise TrainError(f"model.decoder_tags: {err}") from None


class Trainer:
    """Owns the model, optimizer, data order and run folder of one training run.

    ``init`` (a checkpoint folder or shipped model name) starts a new run from its weights, model settings and
    tokenizer (:mod:`midistruct.training.finetune`), with a fresh optimizer at step 0; ``resume`` continues
    ``run_dir/last`` exactly. The two exclude each other.
    """

    def __init__(self, cfg: Config, *, resume: bool = False, init: str | Path | None = None, overwrite: bool = False,
                 progress: bool = True):
        cfg, start, ignored = finetune.starting_point(cfg, init=init, resume=resume)
        self.cfg, self.t, self.progress = cfg, cfg.train, progress
        self.device = distributed.choose_device(self.t.device)
        self.dist = distributed.setup(self.device)
        if self.t.threads:
            torch.set_num_threads(self.t.threads)
        self.bf16 = distributed.use_bf16(self.t.dtype, self.device)
        torch.manual_seed(self.t.seed)
        shards = ShardSet(cfg.data.output)
        if init is not None:
            finetune.check_data(shards, start, adding_blocks=finetune.adds_blocks(start, cfg.model))
        self.tokenizer = shards.tokenizer()
        model_cfg = model_config(cfg, self.tokenizer)
        views = model_cfg.view_options()
        sections = model_cfg.section_head > 0  # each bar's section from the pieces' phrase labels (issue 18)
        key = cfg.augment.key  # canonical: every piece read in C major / A minor (issue 14, item 2)
        tags = model_cfg.decoder_tags  # the tags the decoder reads (issue 18 item 2)
        self.train_ds = WindowDataset([cfg.data.output], "train", transpose=cfg.augment.transpose, seed=self.t.seed,
                                      sections=sections, key=key, tags=tags, **views)
        self.valid_ds = WindowDataset([cfg.data.output], "valid", sections=sections, key=key, tags=tags, **views)
        if len(self.train_ds) == 0 or len(self.valid_ds) == 0:
            raise TrainError(f"{cfg.data.output}: train ({len(self.train_ds)}) and valid ({len(self.valid_ds)}) "
                             "windows are both needed; prepare more data or raise splits.valid")
        if sections and not self.train_ds.section_counts():
            raise TrainError(f"model.section_head learns each bar's section from phrase labels, and no bar of "
                             f"{cfg.data.output}'s training windows has one; prepare POP909 (its phrase labels are "
                             "read with it) or set model.section_head=0")
        self._lengths = self.train_ds.lengths()
        self.meters = self.train_ds.meter_counts()  # saved with every checkpoint: what generation warns against
        self.model = MidiStructModel(model_cfg).to(self.device)
        if init is not None and finetune.grows(start, model_cfg):
            load_grown_weights(start.folder, self.model, vocab_map=finetune.vocab_remap(start, self.tokenizer))
        elif init is not None:
            load_weights(start.folder, self.model)
        # where the run started, for midistruct.json: the --init checkpoint, or the resumed run's record of it
        self.init = finetune.record(start) if init is not None else start.meta["init"] if start else None
        if ignored and self.dist.is_main:
            print(f"midistruct: note: the model settings and tokenizer are those of {start.given}; not used from "
                  f"the config: {', '.join(ignored)}", file=sys.stderr)
        self.net = self._wrap(self.model)
        self.optimizer = self._optimizer()
        self.scheduler = get_cosine_schedule_with_warmup(self.optimizer, self.t.warmup_steps, self.t.max_steps)
        self.state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "best": math.inf}
        # wall seconds spent in earlier invocations of this run (--resume), and when this one's clock started
        self.seconds_before, self._clock = 0.0, None
        self.run_dir = Path(self.t.run_dir)
        if resume:
            self._resume()
        elif overwrite and self.dist.is_main:
            clear_run(self.run_dir)
        elif not overwrite:
            refuse_existing_run(self.run_dir)
        distributed.barrier(self.dist)  # every rank checked the run folder before any rank writes to it

    # ---- setup --------------------------------------------------------------------------

    def _wrap(self, model):
        if self.dist.world == 1:
            return model
        return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def _optimizer(self) -> torch.optim.Optimizer:
        decay = [p for p in self.model.parameters() if p.ndim >= 2]
        no_decay = [p for p in self.model.parameters() if p.ndim < 2]
        groups = [{"params": decay, "weight_decay": self.t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=self.t.lr, betas=tuple(self.t.betas))

    def _resume(self) -> None:
        """Continue from ``run_dir/last``: weights, optimizer, scheduler, data position and RNG, each
        checked against this run's model before use (a damaged folder is one CheckpointError line)."""
        last = self.run_dir / "last"
        state = load_state(last)
        check_checkpoint(last)
        self._check_same_model(last)
        load_weights(last, self.model)
        self.seconds_before = float(state["position"].get("seconds", 0.0))  # absent in runs saved before it was kept
        self.state = restore_trainer(state, optimizer=self.optimizer, scheduler=self.scheduler, position=self.state,
                                     device=self.device, source=last)

    def _check_same_model(self, last: Path) -> None:
        """``--resume`` with a config whose model differs from the checkpoint's: one clear line, not a
        state-dict error (e.g. a ``--set model.X=`` given at the start and forgotten on resume)."""
        saved = json.loads((last / "config.json").read_text())
        now = self.model.config.to_dict()
        keys = list(inspect.get_annotations(MidiStructConfig))  # our fields, not PreTrainedConfig's
        diff = [f"{k}: {saved[k]!r} in the checkpoint, {now[k]!r} now" for k in keys
                if k in saved and k in now and saved[k] != now[k]]
        if diff:
            raise TrainError(f"cannot resume {last}: the model config differs ({'; '.join(diff)}); "
                             "resume with the same config and --set overrides as the run started with "
                             f"(saved in {self.run_dir / 'config.yaml'})")

    # ---- data ---------------------------------------------------------------------------

    def batches(self):
        """Endless ``collate``d batches for this rank, from the saved data position on (the training loop's
        data; scripts that time or inspect training read it too)."""
        order_epoch, order = None, []
        while True:
            epoch, k = self.state["epoch"], self.state["batch_in_epoch"]
            if order_epoch != epoch:
                self.train_ds.set_epoch(epoch)
                order_epoch, order = epoch, self._epoch_batches(epoch)
            if k >= len(order):
                self.state["epoch"], self.state["batch_in_epoch"] = epoch + 1, 0
                continue
            chunk = order[k][self.dist.rank :: self.dist.world]
            yield collate([self.train_ds[int(i)] for i in chunk])

    def _epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """The epoch's global batches: shuffled, then sorted by length within pools of 50 batches
        (little padding, still random), then the batches shuffled. A function of (seed, epoch) only."""
        per_step = self.t.batch_size * self.dist.world
        rng = np.random.default_rng((self.t.seed, epoch))
        order, lengths = rng.permutation(len(self.train_ds)), self._lengths
        pool = 50 * per_step
        batches = []
        for start in range(0, len(order), pool):
            chunk = order[start : start + pool]
            chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
            batches += [chunk[i : i + per_step] for i in range(0, len(chunk) - per_step + 1, per_step)]
        if not batches:  # fewer windows than one global batch: use them all
            batches = [order]
        return [batches[i] for i in rng.permutation(len(batches))]

    def _eval_batches(self) -> list[dict]:
        n = min(len(self.valid_ds), self.t.eval_batches * self.t.batch_size)
        idx = np.random.default_rng(self.t.seed).permutation(len(self.valid_ds))[:n]
        return [collate([self.valid_ds[int(i)] for i in idx[s : s + self.t.batch_size]])
                for s in range(0, n, self.t.batch_size)]

    # ---- steps ---------------------------------------------------------------------------

    def autocast(self):
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def beta(self, step: int) -> float:
        if self.t.beta_warmup_steps <= 0:
            return self.t.beta_max
        return self.t.beta_max * min(1.0, step / self.t.beta_warmup_steps)

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        self.net.train()
        batch = {k: v.to(self.device) for k, v in batch.items()}
        beta = self.beta(self.state["step"])
        with self.autocast():
            out = self.net(**batch, beta=beta)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.t.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        aux = {k: float(getattr(out, k).detach()) for k in ("bow_loss", "seq_loss", "section_loss", "tag_adversary_loss")
               if getattr(out, k) is not None}
        out = {k: float(getattr(out, k).detach()) for k in ("loss", "token_nll", "kl")}
        return {"loss": out["loss"], "nll_per_token": out["token_nll"], "kl_bits": out["kl"] / math.log(2),
                "beta": beta, "grad_norm": float(grad_norm), "lr": self.scheduler.get_last_lr()[0], **aux}

    # ---- the run ---------------------------------------------------------------------------

    def run(self, *, stop_after: int | None = None) -> list[dict[str, Any]]:
        """Train until ``max_steps`` / ``max_minutes`` (or ``stop_after`` more steps); returns train logs."""
        from tqdm import tqdm

        self._start_run_dir()
        logger = _Logger(self.run_dir, tensorboard=self.t.tensorboard, enabled=self.dist.is_main,
                         step=self.state["step"])
        start, logs = time.monotonic(), []
        self._clock = start
        bar = tqdm(total=self.t.max_steps, initial=self.state["step"], desc="train", unit="step",
                   disable=not (self.progress and self.dist.is_main), file=sys.stderr)
        batches = self.batches()
        try:
            while self.state["step"] < self.t.max_steps and (stop_after is None or len(logs) < stop_after):
                record = self.train_step(next(batches))
                self.state["step"] += 1
                self.state["batch_in_epoch"] += 1
                logs.append(record)
                bar.update()
                bar.set_postfix(loss=f"{record['nll_per_token']:.3f}", kl=f"{record['kl_bits']:.1f}b")
                self._periodic(logger, record)
                if self.t.max_minutes and time.monotonic() - start > 60 * self.t.max_minutes:
                    self._stop_between_evaluations(logger)
                    break
            else:
                self.save("last")
        except KeyboardInterrupt:
            self.save("last")
            raise
        finally:
            bar.close()
            logger.close()
        distributed.teardown(self.dist)
        return logs

    def _stop_between_evaluations(self, logger: _Logger) -> None:
        """The time limit: validate unless this step just was, so that ``best/`` exists even when the
        limit came before the first evaluation (a slow machine in quickstart), then save ``last``."""
        if self.state["step"] % self.t.eval_every and self.state["step"] != self.t.max_steps:
            self._validate(logger)
        self.save("last")

    def seconds(self) -> float:
        """Wall seconds this run has trained, every ``--resume`` included (evaluation and saving count too)."""
        return self.seconds_before + (time.monotonic() - self._clock if self._clock is not None else 0.0)

    def progress_record(self) -> dict[str, float]:
        """Where the run is, for each logged line: wall seconds so far and training windows seen."""
        return {"seconds": round(self.seconds(), 1),
                "windows_seen": self.state["step"] * self.t.batch_size * self.dist.world}

    def _periodic(self, logger: _Logger, record: dict) -> None:
        step = self.state["step"]
        if step % self.t.log_every == 0:
            logger.log(step, "train", {**record, **self.progress_record()})
        if step % self.t.eval_every == 0 or step == self.t.max_steps:
            self._validate(logger)
        if step % self.t.save_every == 0:
            self.save("last")

    def _validate(self, logger: _Logger) -> None:
        """Validation metrics logged; ``best/`` saved when the negative ELBO improved. Evaluation leaves
        the training RNG streams as they were, so when and whether it runs never changes training."""
        cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            metrics = self.evaluate() if self.dist.is_main else {}
        logger.log(self.state["step"], "valid", {**metrics, **self.progress_record()} if metrics else metrics)
        if metrics and metrics["neg_elbo_per_token"] < self.state["best"]:
            self.state["best"] = metrics["neg_elbo_per_token"]
            self.save("best")
        distributed.barrier(self.dist)

    def evaluate(self) -> dict[str, float]:
        """Validation metrics (teacher-forced and free-running); warns on posterior collapse."""
        self.model.eval()
        out = validation.teacher_forced(self.model, self._eval_batches(), device=self.device, autocast=self.autocast)
        sample = collate([self.valid_ds[i] for i in range(min(self.t.free_run_samples, len(self.valid_ds)))])
        free = validation.free_running(self.model, self.tokenizer, sample, device=self.device)
        zero = validation.free_running(self.model, self.tokenizer, sample, device=self.device, latent="zero")
        out.update({"free_onset_f1": free["onset_f1"], "free_step_accuracy": free["step_accuracy"],
                    "free_onset_pitch_accuracy": free["onset_pitch_accuracy"],
                    "free_monotone_onset_pitch_accuracy": free["monotone_onset_pitch_accuracy"],
                    "free_exact": free["exact_match"], "free_onset_f1_zero_latent": zero["onset_f1"],
                    "free_step_accuracy_zero_latent": zero["step_accuracy"]})
        collapsed = self.state["step"] >= self.t.beta_warmup_steps and out["kl_bits_per_segment"] < 1.0
        out["posterior_collapse"] = bool(collapsed and self.model.config.latent_mode == "vae")
        if out["posterior_collapse"]:
            print(f"midistruct: warning: posterior collapse at step {self.state['step']}: "
                  f"KL {out['kl_bits_per_segment']:.2f} bits per segment", file=sys.stderr)
        return out

    def save(self, name: str) -> None:
        if not self.dist.is_main:
            return
        state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "position": {**self.state, "seconds": self.seconds()}, "rng": rng_state(self.device)}
        meta = {"tokenizer_hash": settings_hash(self.cfg.tokenizer, self.tokenizer), "step": self.state["step"],
                "run_config": self.cfg.model_dump(mode="json"), "segment_bars": self.cfg.segments.bars,
                "meters": self.meters, **({"init": self.init} if self.init else {})}
        save_checkpoint(self.run_dir / name, model=self.model, tokenizer=self.tokenizer, meta=meta, state=state)

    def _start_run_dir(self) -> None:
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(dump_config(self.cfg))


def drop_rows_after(path: Path, step: int) -> int:
    """Remove the rows of ``path`` (metrics.jsonl) logged after ``step``, and a last line cut short by a kill: a
    resumed run trains those steps again, and a row per step and split must stay one row. Returns how many rows
    were dropped; the file is replaced at once (``fsutil.replace_text``)."""
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
            keep = int(row["step"]) <= step
        except (ValueError, KeyError, TypeError):
            keep = False
        if keep:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        replace_text(path, "".join(line + "\n" for line in kept))
    return dropped


class _Logger:
    """metrics.jsonl (always) and TensorBoard (when installed and enabled), rank 0 only."""

    def __init__(self, run_dir: Path, *, tensorboard: bool, enabled: bool, step: int = 0):
        """``step``: where the run (re)starts; rows logged after it by a run stopped before its next save are
        dropped, since those steps are trained again (``drop_rows_after``)."""
        self.enabled, self.tb = enabled, None
        if not enabled:
            return
        drop_rows_after(run_dir / "metrics.jsonl", step)
        self.file = open(run_dir / "metrics.jsonl", "a")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:
                print("midistruct: tensorboard not installed; logging to metrics.jsonl only", file=sys.stderr)

    def log(self, step: int, split: str, values: dict[str, Any]) -> None:
        if not self.enabled or not values:
            return
        self.file.write(json.dumps({"step": step, "split": split, **values}) + "\n")
        self.file.flush()
        if self.tb is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self.tb.add_scalar(f"{split}/{key}", value, step)

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.tb is not None:
                self.tb.close()

"""Training the peer on the shards' train split, logged and checkpointed like midistruct's trainer.

Data: the train split's readable windows as grids (:func:`grid.load_grids`), reshuffled and transposed each
epoch from ``(seed, epoch)`` alone (midistruct's ``augment.transpose`` range, read from the shard folder's
``config.yaml`` unless given), so a data position is (epoch, batch in epoch). Optimizer: Adam with magenta's
decay, ``lr = (lr - min_lr) * lr_decay ** step + min_lr``, gradients clipped to a global norm.

Run folder: ``run.json`` (the run settings), ``metrics.jsonl`` (``{"step", "split": "train" | "valid", ...,
"seconds", "windows_seen"}``, the progress keys of midistruct's trainer; validation lines carry its
``free_step_accuracy``, ``free_onset_f1``, ``free_onset_pitch_accuracy`` ... on ``valid`` windows), ``last/`` and
``best/`` (lowest validation ``neg_elbo_per_note``). A checkpoint folder holds ``model.safetensors``,
``config.json`` (:class:`model.PeerConfig`), ``peer.json`` (format, step, seconds, windows seen, the run settings,
the shards' tokenizer hash) and ``trainer_state.{json,safetensors}`` (midistruct's :func:`save_state`: optimizer,
scheduler, position, torch RNG; JSON and safetensors, no pickle). ``--resume`` continues ``last/`` exactly.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .grid import load_grids, transposed
from .model import MelodyVAE, PeerConfig

FORMAT = 1
WEIGHTS, CONFIG, META, RUN = "model.safetensors", "config.json", "peer.json", "run.json"


@dataclass
class RunSettings:
    """Where and how long to train (``run.json``); the model and optimizer settings are a :class:`PeerConfig`."""

    data: str
    run_dir: str
    seed: int = 0
    transpose: list[int] = field(default_factory=lambda: [0, 0])
    max_steps: int = 1_000_000
    max_minutes: float = 0.0  # per invocation, as midistruct's train.max_minutes; 0: no limit
    log_every: int = 20
    eval_every: int = 250
    save_every: int = 250
    eval_windows: int = 512  # teacher-forced validation windows
    free_run_windows: int = 64  # free-running validation windows (greedy, posterior mean and zero latent)
    threads: int = 1


def shard_transpose(data: str | Path) -> list[int]:
    """The ``augment.transpose`` range the shard folder was prepared with ([0, 0] when it says none)."""
    import yaml

    path = Path(data) / "config.yaml"
    found = yaml.safe_load(path.read_text()) if path.is_file() else {}
    return [int(v) for v in (found or {}).get("augment", {}).get("transpose", [0, 0])]


class PeerTrainer:
    """Trains a :class:`MelodyVAE` on ``settings.data`` into ``settings.run_dir``; ``resume`` continues ``last/``."""

    def __init__(self, settings: RunSettings, cfg: PeerConfig, *, resume: bool = False, overwrite: bool = False,
                 progress: bool = True):
        from midistruct.shards.reader import ShardSet

        self.s, self.cfg, self.progress = settings, cfg, progress
        torch.set_num_threads(settings.threads)
        torch.manual_seed(settings.seed)
        self.shards = ShardSet(settings.data)
        self.tokenizer = self.shards.tokenizer()
        self.train_set, self.valid_set = load_grids(self.shards, "train"), load_grids(self.shards, "valid")
        if len(self.train_set) < 1 or len(self.valid_set) < 1:
            raise ValueError(f"{settings.data}: the peer needs readable train and valid windows "
                             f"(train {self.train_set.summary()}, valid {self.valid_set.summary()})")
        self.model = MelodyVAE(cfg)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        decay = lambda step: ((cfg.lr - cfg.min_lr) * cfg.lr_decay ** step + cfg.min_lr) / cfg.lr  # noqa: E731
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, decay)
        self.state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "best": math.inf}
        self.seconds_before, self._clock = 0.0, None
        self.run_dir = Path(settings.run_dir)
        if resume:
            self._resume()
        elif (self.run_dir / "last").exists() or (self.run_dir / "metrics.jsonl").exists():
            if not overwrite:
                raise FileExistsError(f"{self.run_dir} holds a run; --resume it or --overwrite it")
            for name in ("last", "best", "metrics.jsonl"):
                path = self.run_dir / name
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)

    # ---- data ---------------------------------------------------------------------------------------------

    def _epoch(self, epoch: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """(the epoch's transposed train grids (N, S), its batches of indices): a function of (seed, epoch)."""
        rng = np.random.default_rng((self.s.seed, epoch))
        order = rng.permutation(len(self.train_set))
        grids = transposed(self.train_set.grids, low=self.s.transpose[0], high=self.s.transpose[1], rng=rng)
        size = self.cfg.batch_size
        batches = [order[i : i + size] for i in range(0, len(order) - size + 1, size)] or [order]
        return grids, batches

    def _batches(self):
        """Endless (B, S) long batches from the saved data position on."""
        loaded, grids, batches = None, None, []
        while True:
            epoch, k = self.state["epoch"], self.state["batch_in_epoch"]
            if loaded != epoch:
                loaded, (grids, batches) = epoch, self._epoch(epoch)
            if k >= len(batches):
                self.state["epoch"], self.state["batch_in_epoch"] = epoch + 1, 0
                continue
            yield torch.as_tensor(grids[batches[k]], dtype=torch.long)

    # ---- steps --------------------------------------------------------------------------------------------

    def train_step(self, batch: torch.Tensor) -> dict[str, float]:
        self.model.train()
        out = self.model(batch)
        loss, beta = self.model.loss(out, step=self.state["step"])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return {"loss": float(loss.detach()), "recon_nll_per_step": float(out.recon.mean().detach()) / batch.shape[1],
                "kl_bits": float(out.kl.mean().detach()) / math.log(2.0), "beta": beta,
                "grad_norm": float(grad_norm), "lr": self.scheduler.get_last_lr()[0]}

    def run(self) -> list[dict]:
        """Train until ``max_steps`` or ``max_minutes``; returns the train records of this invocation."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / RUN).write_text(json.dumps(asdict(self.s), indent=2))
        logs, batches = [], self._batches()
        self._clock = start = time.monotonic()
        with open(self.run_dir / "metrics.jsonl", "a") as log:
            try:
                while self.state["step"] < self.s.max_steps:
                    record = self.train_step(next(batches))
                    self.state["step"] += 1
                    self.state["batch_in_epoch"] += 1
                    logs.append(record)
                    self._periodic(log, record)
                    if self.s.max_minutes and time.monotonic() - start > 60 * self.s.max_minutes:
                        break
                if logs and self.state["step"] % self.s.eval_every:  # the last step was not validated yet
                    self._validate(log)
                self.save("last")
            except KeyboardInterrupt:
                self.save("last")
                raise
        return logs

    def _periodic(self, log, record: dict) -> None:
        step = self.state["step"]
        if step % self.s.log_every == 0:
            self._write(log, "train", record)
        if step % self.s.eval_every == 0:
            self._validate(log)
        if step % self.s.save_every == 0:
            self.save("last")

    def _write(self, log, split: str, values: dict) -> None:
        line = {"step": self.state["step"], "split": split, **values, **self.progress_record()}
        log.write(json.dumps(line) + "\n")
        log.flush()

    def seconds(self) -> float:
        """Wall seconds this run has trained, every ``--resume`` included (validation and saving count too)."""
        return self.seconds_before + (time.monotonic() - self._clock if self._clock is not None else 0.0)

    def progress_record(self) -> dict:
        return {"seconds": round(self.seconds(), 1), "windows_seen": self.state["step"] * self.cfg.batch_size}

    def _validate(self, log) -> None:
        """Validation metrics logged, ``best/`` saved when ``neg_elbo_per_note`` improved; the training RNG is
        left as it was, so validating never changes training."""
        with torch.random.fork_rng(devices=[]):
            metrics = self.evaluate()
        self._write(log, "valid", metrics)
        if self.progress:
            print(f"peer: step {self.state['step']} {self.progress_record()['seconds']:.0f}s "
                  f"free_step_accuracy {metrics['free_step_accuracy']:.3f} "
                  f"free_onset_pitch_accuracy {metrics['free_onset_pitch_accuracy']:.3f}", file=sys.stderr)
        if metrics["neg_elbo_per_note"] < self.state["best"]:
            self.state["best"] = metrics["neg_elbo_per_note"]
            self.save("best")

    def evaluate(self) -> dict:
        """Teacher-forced metrics on the first ``eval_windows`` readable valid windows, greedy free-running ones
        (posterior mean and zero latent) on the first ``free_run_windows``, under midistruct's trainer's names."""
        from .evaluate import free_running, teacher_forced_metrics

        out = teacher_forced_metrics(self.model, self.valid_set.grids[: self.s.eval_windows])
        arrays, n = self.shards.split("valid"), min(self.s.free_run_windows, len(self.valid_set))
        refs = [arrays.window(int(w))[0].tolist() for w in self.valid_set.windows[:n]]
        grids = self.valid_set.grids[:n]
        free = free_running(self.model, self.tokenizer, refs, grids)
        zero = free_running(self.model, self.tokenizer, refs, grids, latent="zero")
        out.update({"free_onset_f1": free["onset_f1"], "free_step_accuracy": free["step_accuracy"],
                    "free_onset_pitch_accuracy": free["onset_pitch_accuracy"],
                    "free_monotone_onset_pitch_accuracy": free["monotone_onset_pitch_accuracy"],
                    "free_exact": free["exact_match"], "free_onset_f1_zero_latent": zero["onset_f1"],
                    "free_step_accuracy_zero_latent": zero["step_accuracy"]})
        return out

    # ---- checkpoints --------------------------------------------------------------------------------------

    def save(self, name: str) -> None:
        from safetensors.torch import save_file

        from midistruct.fsutil import replace_dir
        from midistruct.model.checkpoint import rng_state, save_state

        folder = self.run_dir / name
        tmp = folder.with_name(f"{name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, str(tmp / WEIGHTS))
        (tmp / CONFIG).write_text(json.dumps(self.cfg.to_dict(), indent=2))
        meta = {"format": FORMAT, "kind": "musicvae-lstm-peer", **self.progress_record(), "step": self.state["step"],
                "seconds": self.seconds(), "run": asdict(self.s), "tokenizer_hash": self.shards.tokenizer_hash,
                "train_windows": self.train_set.summary()}
        (tmp / META).write_text(json.dumps(meta, indent=2))
        save_state(tmp, {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                         "position": {**self.state, "seconds": self.seconds()}, "rng": rng_state(torch.device("cpu"))})
        replace_dir(tmp, folder)

    def _resume(self) -> None:
        from midistruct.model.checkpoint import load_state, restore_trainer

        last = self.run_dir / "last"
        saved = PeerConfig.from_dict(json.loads((last / CONFIG).read_text()))
        if saved != self.cfg:
            raise ValueError(f"cannot resume {last}: its config {saved} differs from {self.cfg}")
        state = load_state(last)
        _load_weights(last, self.model)
        self.seconds_before = float(state["position"]["seconds"])
        self.state = restore_trainer(state, optimizer=self.optimizer, scheduler=self.scheduler, position=self.state,
                                     device=torch.device("cpu"), source=last)


def _load_weights(folder: Path, model: torch.nn.Module) -> None:
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(Path(folder) / WEIGHTS)))


def load_peer(path: str | Path) -> tuple[MelodyVAE, dict]:
    """(the model in eval mode, ``peer.json``) of a checkpoint folder, or of a run folder's ``best/`` (else
    ``last/``); no flags needed, the config travels with the weights."""
    folder = Path(path)
    if not (folder / WEIGHTS).is_file():
        folder = next((folder / n for n in ("best", "last") if (folder / n / WEIGHTS).is_file()), folder)
    missing = [f for f in (WEIGHTS, CONFIG, META) if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{path} is not a peer checkpoint or run folder: no {', '.join(missing)}")
    meta = json.loads((folder / META).read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{folder}: peer checkpoint format {meta.get('format')}, this bench reads {FORMAT}")
    model = MelodyVAE(PeerConfig.from_dict(json.loads((folder / CONFIG).read_text())))
    _load_weights(folder, model)
    return model.eval(), {**meta, "folder": str(folder)}

"""Scoring the peer with midistruct's own metric code, on midistruct's held-out windows.

Free-running: each window's posterior mean (or a shuffled or zero one) is decoded on the grid, the grid turned
into notes and those into the shard tokenizer's ids (:func:`grid.notes_ids`), and the ids scored against the
window's own tokens by ``midistruct.training.validation.score_reconstructions`` and ``merge_free_runs``, the
functions behind ``midistruct evaluate``'s ``free_*`` numbers, under the same names
(:func:`free_running_metrics` mirrors ``midistruct.evaluation.evaluate.free_running_metrics``).

Held out: the windows ``midistruct evaluate`` would draw (its seeded permutation of the split, training-set
recurrences left out by :mod:`midistruct.evaluation.heldout`), keeping those the peer can read (4/4, on the 16th
grid); :func:`evaluate_main` scores a midistruct checkpoint on exactly those windows, for a like-for-like table.

Teacher-forced numbers are the peer's own (its units are grid steps, not REMI tokens): ``recon_nll_per_step``,
``event_accuracy``, ``teacher_forced_onset_pitch_accuracy``; per window and per note, as midistruct reports them,
``kl_bits_per_segment``, ``recon_nll_per_note``, ``neg_elbo_per_note`` (nats; a note is an onset on the grid).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from .grid import FIRST_PITCH_CLASS, GridSet, grid_notes, load_grids, notes_ids

FREE_RUNS = {"": ("true", 0.0), "_shuffled_latent": ("shuffled", 0.0), "_zero_latent": ("zero", 0.0)}


@torch.no_grad()
def teacher_forced_metrics(model, grids: np.ndarray, *, batch_size: int = 256) -> dict[str, float]:
    """The peer's teacher-forced metrics over ``grids`` (N, S) from each window's posterior mean."""
    from midistruct.model import latent_usage

    model.eval()
    recon = kl = right = onset_right = onsets = 0.0
    mus = []
    for start in range(0, len(grids), batch_size):
        x = torch.as_tensor(grids[start : start + batch_size], dtype=torch.long)  # (B, S)
        out = model(x, sample=False)
        guess = out.logits.argmax(-1)  # (B, S)
        is_onset = x >= FIRST_PITCH_CLASS
        recon += float(out.recon.sum())
        kl += float(out.kl.sum())
        right += float((guess == x).sum())
        onset_right += float(((guess == x) & is_onset).sum())
        onsets += float(is_onset.sum())
        mus.append(out.mu)
    n, steps = max(len(grids), 1), grids.shape[1]
    return {"recon_nll_per_step": recon / (n * steps), "event_accuracy": right / (n * steps),
            "teacher_forced_onset_pitch_accuracy": onset_right / max(onsets, 1.0),
            "kl_bits_per_segment": kl / n / math.log(2.0),
            "recon_nll_per_note": recon / max(onsets, 1.0), "neg_elbo_per_note": (recon + kl) / max(onsets, 1.0),
            "notes_per_segment": onsets / n,
            "active_units_segment": latent_usage(torch.cat(mus))["active_units"] if mus else 0}


@torch.no_grad()
def free_running(model, tokenizer, references: list[list[int]], grids: np.ndarray, *, latent: str = "true",
                 temperature: float = 0.0) -> dict[str, float]:
    """``midistruct.training.validation.free_running``'s metrics for one batch: ``grids`` (B, S) decoded from
    the posterior mean (``latent="true"``), the batch's means rolled by one (``"shuffled"``) or zeros, greedy at
    ``temperature`` 0 else sampled (torch's global generator), scored against ``references`` (the windows' ids)."""
    from midistruct.training import validation

    change = {"true": lambda z: z, "zero": torch.zeros_like, "shuffled": lambda z: torch.roll(z, 1, dims=0)}[latent]
    model.eval()
    mu, _ = model.posterior(torch.as_tensor(grids, dtype=torch.long))
    decoded = model.decoder.decode(change(mu), grids.shape[1], temperature=temperature).numpy()  # (B, S)
    estimates = [notes_ids(tokenizer, grid_notes(row)) for row in decoded]
    return validation.score_reconstructions(tokenizer, references, estimates)


def free_running_metrics(model, tokenizer, references: list[list[int]], grids: np.ndarray, *,
                         sample_temperature: float = 0.5, seed: int = 0, batch_size: int = 32) -> dict:
    """The ``free_*`` keys of ``midistruct.evaluation.evaluate.free_running_metrics``, for the peer: greedy from
    the true, a shuffled and a zero latent, the monotone baseline, and sampled at ``sample_temperature``."""
    from midistruct.evaluation.evaluate import free_run_record
    from midistruct.training import validation

    runs = dict(FREE_RUNS)
    if sample_temperature > 0:
        runs["sampled"] = ("true", sample_temperature)
        torch.manual_seed(seed)
    out = {"free_run_windows": len(references)}
    spans = [slice(s, s + batch_size) for s in range(0, len(references), batch_size)]
    for name, (latent, temperature) in runs.items():
        found = validation.merge_free_runs([free_running(model, tokenizer, references[s], grids[s], latent=latent,
                                                         temperature=temperature) for s in spans])
        out.update(free_run_record(name, found))
    if sample_temperature > 0:
        out["free_sample_temperature"] = sample_temperature
    return out


# ---- the held-out windows ----------------------------------------------------------------------------------

def heldout_order(shards, grid_set: GridSet, *, split: str, seed: int,
                  exclude_recurring: bool = True) -> tuple[np.ndarray, int]:
    """(positions in ``grid_set`` in ``midistruct evaluate``'s order, recurring windows of the split left out).

    The order is ``midistruct evaluate``'s: a permutation of the split's windows seeded by ``seed``, less the
    windows that recur in training (any transposition), here also less those the peer cannot read."""
    n = shards.split(split).n_windows
    order = np.random.default_rng(seed).permutation(n)
    recurring = np.zeros(n, dtype=bool)
    if exclude_recurring and split != "train":
        from midistruct.evaluation.heldout import recurring_windows

        recurring = recurring_windows(shards, split=split)
        order = order[~recurring[order]]
    position = np.full(n, -1, dtype=np.int64)
    position[grid_set.windows] = np.arange(len(grid_set))
    return position[order][position[order] >= 0], int(recurring.sum())


def _selection(data: str | Path, *, split: str, seed: int, exclude_recurring: bool):
    from midistruct.shards.reader import ShardSet

    shards = ShardSet(data)
    grid_set = load_grids(shards, split)
    order, recurring = heldout_order(shards, grid_set, split=split, seed=seed, exclude_recurring=exclude_recurring)
    common = {"data": str(data), "split": split, "recurring_windows_excluded": recurring,
              "unreadable_windows_excluded": grid_set.skipped, "polyphonic_windows_reduced": grid_set.polyphonic}
    return shards, grid_set, order, common


def evaluate_run(checkpoint: str | Path, *, data: str | Path | None = None, split: str = "test", windows: int = 512,
                 free_run: int = 128, seed: int = 0, sample_temperature: float = 0.5,
                 exclude_recurring: bool = True) -> dict:
    """The peer checkpoint's metrics on ``windows`` held-out windows (teacher-forced) and the first ``free_run``
    of them (free-running), with the seconds it trained and the windows it saw."""
    from .train import load_peer

    model, meta = load_peer(checkpoint)
    data = data or meta["run"]["data"]
    shards, grid_set, order, common = _selection(data, split=split, seed=seed, exclude_recurring=exclude_recurring)
    arrays = shards.split(split)
    pick, free = order[:windows], order[:free_run]
    references = [arrays.window(int(grid_set.windows[k]))[0].tolist() for k in free]
    out = {"model": "musicvae-lstm-peer", "checkpoint": meta["folder"], **common, "windows": len(pick),
           "step": meta["step"], "seconds_trained": meta["seconds"], "windows_seen": meta["windows_seen"]}
    out.update(teacher_forced_metrics(model, grid_set.grids[pick]))
    out.update(free_running_metrics(model, shards.tokenizer(), references, grid_set.grids[free],
                                    sample_temperature=sample_temperature, seed=seed))
    return out


def evaluate_main(checkpoint: str | Path, *, data: str | Path, split: str = "test", windows: int = 512,
                  free_run: int = 128, seed: int = 0, sample_temperature: float = 0.5, exclude_recurring: bool = True,
                  batch_size: int = 32) -> dict:
    """A midistruct checkpoint scored as ``midistruct evaluate`` scores it (teacher-forced, controls, free-running),
    on the windows :func:`evaluate_run` uses: the same table, like for like."""
    import contextlib

    from midistruct.evaluation.evaluate import free_running_metrics as main_free_running
    from midistruct.model.checkpoint import key_mode, load_checkpoint
    from midistruct.shards.dataset import WindowDataset, collate
    from midistruct.training import validation

    model, tokenizer, meta = load_checkpoint(checkpoint)
    _, grid_set, order, common = _selection(data, split=split, seed=seed, exclude_recurring=exclude_recurring)
    ds = WindowDataset([data], split, key=key_mode(meta))  # a canonical model reads C major / A minor
    windows_of = grid_set.windows[order]  # shard window indices

    def batches(chosen):
        return [collate([ds[int(i)] for i in chosen[s : s + batch_size]]) for s in range(0, len(chosen), batch_size)]

    out = {"model": "midistruct", "checkpoint": str(checkpoint), **common, "windows": len(windows_of[:windows]),
           "step": meta.get("step")}
    tf_batches = batches(windows_of[:windows])
    out.update(validation.teacher_forced(model, tf_batches, device="cpu", autocast=contextlib.nullcontext,
                                         tokenizer=tokenizer))
    out.update(validation.teacher_forced_controls(model, tf_batches, device="cpu", tokenizer=tokenizer))
    out.update(main_free_running(model, tokenizer, batches(windows_of[:free_run]),
                                 sample_temperature=sample_temperature, seed=seed))
    return out

"""Evaluate a checkpoint on held-out windows: teacher-forced metrics (also with another window's
latent and a zero one, per token type), and free-running reconstruction from the posterior mean
beside the same decoder given a shuffled and a zero latent.
(``midistruct evaluate``; the full evaluation suite builds on this.)"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch

from midistruct.evaluation.heldout import recurring_windows
from midistruct.evaluation.probes import probe_latents
from midistruct.evaluation.smoothness import held_out_pairs, measure_interpolations
from midistruct.evaluation.statistics import sample_statistics
from midistruct.generation.pipeline import InputError, MidiStruct
from midistruct.model.checkpoint import key_mode, load_checkpoint, readable_shards
from midistruct.model.pretrained import resolve
from midistruct.model.prior import load_prior
from midistruct.shards.dataset import WindowDataset, collate
from midistruct.training import validation


def evaluate_checkpoint(checkpoint: Path, *, data: str | None = None, split: str = "test", windows: int = 512,
                        free_run: int = 128, interpolations: int = 0, seed: int = 0, batch_size: int = 32,
                        exclude_recurring: bool = True, probes: int = 0, samples: int = 0,
                        judge: str | Path | None = None, sample_temperature: float = 0.5, beams: int = 0,
                        tags: bool = False, code_length: bool = False, interpolation_method: str = "slerp",
                        snap_interpolations: bool = False, device: str | torch.device = "cpu") -> dict:
    """Metrics of ``checkpoint`` on a seeded random subset of ``split`` windows of its shards;
    with ``interpolations``, also the smoothness of that many 8-step interpolations between
    held-out windows (:func:`midistruct.evaluation.smoothness.measure_interpolations`; ``interpolation_method``
    slerp or lerp, the inner steps' bar codes snapped to the code prior's bank with ``snap_interpolations``), their
    likelihood judged by the ``judge`` checkpoint (e.g. the plain-LM peer) when one is given.
    Windows that recur in the training split (any transposition) are left out unless
    ``exclude_recurring=False`` (:mod:`midistruct.evaluation.heldout`). With ``probes``, linear probes
    of the latent codes on that many windows (``probe.*``, :mod:`midistruct.evaluation.probes`); with
    ``samples``, statistics of that many prior samples against as many windows (``statistics.*``,
    :mod:`midistruct.evaluation.statistics`). Free-running metrics: :func:`free_running_metrics` on the
    first ``free_run`` held-out windows (greedy, and sampled at ``sample_temperature`` unless 0). ``tags``: a model
    whose decoder reads tags (``decoder_tags``) is given each window's own (else none, as a user who gives no
    ``--tag``). Every model (the checkpoint's and the judge) runs on ``device``."""
    model, tokenizer, meta = load_checkpoint(checkpoint, device=device)
    folder = data or meta["run_config"]["data"]["output"]
    shards = readable_shards(folder, meta, model.config, name=str(checkpoint))  # one line when missing or unreadable
    if tags and not model.config.decoder_tags:
        raise InputError(f"{checkpoint}: its decoder reads no tags (trained without model.decoder_tags); drop --tags")
    given = model.config.decoder_tags if tags else None  # each window's own tags, for the decoder to read
    ds = WindowDataset([folder], split, key=key_mode(meta), tags=given, **model.config.view_options())  # canonical
    order = np.random.default_rng(seed).permutation(len(ds))
    recurring = np.zeros(len(ds), dtype=bool)
    if exclude_recurring and split != "train":
        recurring = recurring_windows(shards, split=split)
        order = order[~recurring[order]]
    pick = order[:windows]
    batches = [collate([ds[int(i)] for i in pick[s : s + batch_size]]) for s in range(0, len(pick), batch_size)]
    out = {"checkpoint": str(checkpoint), "data": str(folder), "split": split, "windows": len(pick),
           "decoder_tags_given": bool(given),
           "recurring_windows_excluded": int(recurring.sum()), "step": meta.get("step")}
    out.update(validation.teacher_forced(model, batches, device=device, autocast=contextlib.nullcontext,
                                      tokenizer=tokenizer))
    out.update(validation.teacher_forced_controls(model, batches, device=device, tokenizer=tokenizer))
    free_batches = [collate([ds[int(i)] for i in order[s : min(s + batch_size, free_run)]])
                    for s in range(0, min(free_run, len(order)), batch_size)]
    out.update(free_running_metrics(model, tokenizer, free_batches, sample_temperature=sample_temperature, seed=seed,
                                    beams=beams, device=device))
    judge_model = _load_judge(judge, tokenizer, device=device) if judge and (interpolations or code_length) else None
    if code_length:
        out.update({f"code_length.{k}": v for k, v in _code_length(checkpoint, model, batches, judge=judge_model,
                                                                   device=device).items()})
    if interpolations:
        ms = MidiStruct(model, tokenizer, meta, device=device)
        if snap_interpolations:
            ms.prior = load_prior(resolve(checkpoint))
        found = measure_interpolations(ms, held_out_pairs(ms, folder, n=interpolations, split=split, seed=seed),
                                       judge=judge_model, method=interpolation_method, snap=snap_interpolations)
        out.update({f"interpolation.{k}": v for k, v in found.items()})
    if probes:
        found = probe_latents(MidiStruct(model, tokenizer, meta, device=device), folder, split=split,
                              windows=probes, seed=seed)
        out.update({f"probe.{k}": v for k, v in found.items()})
    if samples:
        prior = load_prior(resolve(checkpoint))  # a fitted code prior when the checkpoint has one, else N(0, I)
        found = sample_statistics(MidiStruct(model, tokenizer, meta, device=device, prior=prior), folder,
                                  n=samples, seed=seed, split=split)
        found["prior"] = "fitted" if prior is not None else "normal"
        out.update({f"statistics.{k}": v for k, v in found.items()})
    return out


def _load_judge(judge, tokenizer, *, device):
    """The judge's model, refused unless it reads the same tokens (its NLL of other tokens would mean nothing)."""
    model, judge_tokenizer, _ = load_checkpoint(judge, device=device)
    if len(judge_tokenizer) != len(tokenizer):
        raise InputError(f"the judge {judge} reads a vocabulary of {len(judge_tokenizer)} tokens, the model "
                         f"{len(tokenizer)}: train the judge on the same shards")
    return model


def _code_length(checkpoint, model, batches, *, judge, device) -> dict:
    from midistruct.evaluation.code_length import CodeLengthError, measure_code_length, measure_elbo

    if model.config.latent_mode == "none":
        raise InputError(f"{checkpoint} is a plain LM: it has no codes to count; give it as --judge instead")
    prior = load_prior(resolve(checkpoint))
    if model.config.latent_mode == "ae" and prior is None:
        raise InputError(f"{checkpoint} has deterministic codes and no fitted code prior to count them under: "
                         f"fit one with `midistruct prior {checkpoint}`")
    if prior is None:
        raise InputError(f"{checkpoint} is a VAE: --code-length gives its negative ELBO under N(0, I) and under a "
                         f"code prior fitted to its posteriors; fit one first with `midistruct prior {checkpoint}`")
    try:
        found = measure_code_length(model, prior, batches, judge=judge, device=device)
        if model.config.latent_mode == "vae":  # its own bound beside its rounded means'
            found.update(measure_elbo(model, prior, batches, judge=judge, device=device))
        return found
    except CodeLengthError as err:
        raise InputError(f"{checkpoint}: {err}") from None


FREE_METRICS = ("onset_f1", "onset_offset_f1", "step_accuracy", "onset_accuracy", "onset_pitch_accuracy")


def free_running_metrics(model, tokenizer, batches, *, sample_temperature: float = 0.5, seed: int = 0,
                         beams: int = 0, device: str | torch.device = "cpu") -> dict:
    """``free_*`` metrics over ``batches``: greedy from the true, a shuffled and a zero latent
    (``free_X``, ``free_X_shuffled_latent``, ``free_X_zero_latent``), the monotone baseline on the same windows
    (``free_monotone_onset_pitch_accuracy``), with ``sample_temperature`` > 0 sampled from the true latent
    (``free_sampled_X``, seeded by ``seed``), and with ``beams`` > 1 beam search from it (``free_beam_X``)."""
    runs = {"": ("true", 0.0, 1), "_shuffled_latent": ("shuffled", 0.0, 1), "_zero_latent": ("zero", 0.0, 1)}
    if beams > 1:
        runs["beam"] = ("true", 0.0, beams)
    if sample_temperature > 0:
        runs["sampled"] = ("true", sample_temperature, 1)
        torch.manual_seed(seed)
    out = {"free_run_windows": sum(len(b["input_ids"]) for b in batches)}
    for name, (latent, temperature, num_beams) in runs.items():
        found = validation.merge_free_runs([validation.free_running(model, tokenizer, b, device=device, latent=latent,
                                                              temperature=temperature, num_beams=num_beams)
                                            for b in batches])
        out.update(free_run_record(name, found))
    if sample_temperature > 0:
        out["free_sample_temperature"] = sample_temperature
    if beams > 1:
        out["free_beams"] = beams
    return out


def free_run_record(name: str, found: dict) -> dict:
    """One free-running run's merged metrics under the names ``evaluate`` reports: ``free_X`` for the true
    latent (``name`` ""), ``free_X_shuffled_latent`` / ``free_X_zero_latent``, ``free_sampled_X`` ("sampled"),
    ``free_beam_X`` ("beam"); the true latent's also gives the monotone baseline and the onset count."""
    key = (lambda m: f"free_{name}_{m}") if name in ("sampled", "beam") else (lambda m: f"free_{m}{name}")
    out = {key(m): found.get(m, 0.0) for m in FREE_METRICS}
    if name == "":
        out["free_monotone_onset_pitch_accuracy"] = found.get("monotone_onset_pitch_accuracy", 0.0)
        out["free_onsets"] = found.get("onsets", 0)
    return out

"""Validation metrics used while training.

- teacher-forced: reconstruction NLL per token, token accuracy, KL in bits (per segment,
  bar codes and segment code apart), active latent units, negative ELBO per token;
- free-running: decode windows from the posterior mean with greedy generation and
  compare the notes with the input (note-level onset+pitch F1, mir_eval), and the same
  with the latent zeroed, to show the decoder uses the latent.
"""

from __future__ import annotations

import math

import numpy as np
import torch

LN2 = math.log(2.0)


@torch.no_grad()
def teacher_forced(model, batches, *, device, autocast) -> dict[str, float]:
    """Average teacher-forced metrics over ``batches`` (dicts from ``collate``)."""
    from midistruct.model import latent_usage

    totals = {"nll": 0.0, "tokens": 0, "correct": 0, "kl": 0.0, "kl_bar": 0.0, "kl_segment": 0.0, "segments": 0}
    mus = []
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast():
            out = model(**batch, beta=1.0)
        mask = batch["labels"] != -100
        n_seg = batch["input_ids"].shape[0]
        totals["nll"] += float(out.recon_loss) * n_seg
        totals["tokens"] += int(mask.sum())
        totals["correct"] += int(((out.logits.argmax(-1) == batch["labels"]) & mask).sum())
        for key in ("kl", "kl_bar", "kl_segment"):
            totals[key] += float(getattr(out, key)) * n_seg
        totals["segments"] += n_seg
        mus.append(out.mu_segment.float().cpu())
    segs = max(totals["segments"], 1)
    usage = latent_usage(torch.cat(mus)) if mus else {"active_units": 0}
    kl_bits = totals["kl"] / segs / LN2
    return {
        "recon_nll_per_token": totals["nll"] / max(totals["tokens"], 1),
        "token_accuracy": totals["correct"] / max(totals["tokens"], 1),
        "kl_bits_per_segment": kl_bits,
        "kl_bits_bar_codes": totals["kl_bar"] / segs / LN2,
        "kl_bits_segment_code": totals["kl_segment"] / segs / LN2,
        "active_units_segment": usage["active_units"],
        "kl_bits_per_active_unit": kl_bits / usage["active_units"] if usage["active_units"] else 0.0,
        "neg_elbo_per_token": (totals["nll"] + totals["kl"]) / max(totals["tokens"], 1),
    }


def notes_of(score) -> np.ndarray:
    """(N, 3) onset, duration (quarter notes) and pitch of every note of a symusic Score."""
    rows = [(n.time / score.tpq, n.duration / score.tpq, n.pitch) for t in score.tracks for n in t.notes]
    return np.array(rows, dtype=np.float64).reshape(-1, 3)


def onset_f1(reference: np.ndarray, estimate: np.ndarray, *, tolerance_quarters: float = 0.06) -> float:
    """Note-level F1 on onset and pitch (offsets ignored), with mir_eval's matching.

    ``tolerance_quarters`` below half a grid step (1/8 quarter) counts only exact onsets.
    """
    import mir_eval

    if len(reference) == 0 or len(estimate) == 0:
        return float(len(reference) == len(estimate))

    def intervals(n):
        return np.stack([n[:, 0], n[:, 0] + np.maximum(n[:, 1], 1e-3)], axis=1)

    _, _, f1, _ = mir_eval.transcription.precision_recall_f1_overlap(
        intervals(reference), mir_eval.util.midi_to_hz(reference[:, 2]),
        intervals(estimate), mir_eval.util.midi_to_hz(estimate[:, 2]),
        onset_tolerance=tolerance_quarters, offset_ratio=None)
    return float(f1)


@torch.no_grad()
def free_running(model, tokenizer, batch, *, device, zero_latent: bool = False) -> dict[str, float]:
    """Greedy free-running reconstruction of a batch from its posterior mean (or a zero latent)."""
    from midistruct.tokens.tokenizer import decode_ids, strip_special

    batch = {k: v.to(device) for k, v in batch.items()}
    latents = model.encode(batch["input_ids"], batch["attention_mask"], batch["bar_ids"], sample=False)
    codes = latents.codes()
    if zero_latent:
        codes = {k: torch.zeros_like(v) for k, v in codes.items()}
    cfg = model.config
    generated = model.generate(
        **codes, max_new_tokens=int(batch["attention_mask"].sum(1).max()) + 8, do_sample=False,
        eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id,
        suppress_tokens=[cfg.pad_token_id, cfg.bos_token_id, cfg.mask_token_id])
    scores, exact = [], 0
    for row in range(len(generated)):
        ref_ids = strip_special(batch["input_ids"][row])
        est_ids = strip_special(generated[row])
        exact += ref_ids == est_ids
        scores.append(onset_f1(notes_of(decode_ids(tokenizer, ref_ids)), _safe_notes(tokenizer, est_ids)))
    return {"onset_f1": float(np.mean(scores)), "exact_match": exact / len(generated)}


def _safe_notes(tokenizer, ids: list[int]) -> np.ndarray:
    from midistruct.tokens.tokenizer import decode_ids

    try:
        return notes_of(decode_ids(tokenizer, ids))
    except Exception:  # noqa: BLE001 - an undecodable generation scores zero, it must not stop training
        return np.zeros((0, 3))

"""Validation metrics used while training.

- teacher-forced: reconstruction NLL per token, token accuracy, KL in bits (per segment,
  bar codes and segment code apart), active latent units, negative ELBO per token; and
  (``teacher_forced_controls``) the same decoder reading another window's latent or a zero one,
  per token type: what the latent carries (e.g. rhythm but not pitch);
- free-running: decode windows from the posterior mean with greedy generation and
  compare the notes with the input (note-level onset+pitch F1, mir_eval, and MusicVAE's
  per-16th-step melody accuracy), and the same
  with the latent zeroed, to show the decoder uses the latent.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from midistruct.metrics.notes import notes_of, onset_f1, transcription_f1, window_quarters
from midistruct.metrics.steps import n_steps_of, step_accuracy
from midistruct.tokens.remi import RemiVocab

LN2 = math.log(2.0)


@torch.no_grad()
def teacher_forced(model, batches, *, device, autocast, tokenizer=None) -> dict[str, float]:
    """Average teacher-forced metrics over ``batches`` (dicts from ``collate``); with the ``tokenizer``,
    also the token accuracy of each token type (``token_accuracy.Pitch``, ``.Position`` ...; ``.Merged`` for
    BPE merges) and the NLL and negative ELBO per note (``*_per_note``: a note is a Pitch token)."""
    from midistruct.model import latent_usage

    totals = {"nll": 0.0, "tokens": 0, "correct": 0, "kl": 0.0, "kl_bar": 0.0, "kl_segment": 0.0, "segments": 0,
              "notes": 0}
    vocab = RemiVocab(tokenizer) if tokenizer is not None else None
    by_type = {}  # type name -> [correct, total]
    mus = []
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast():
            out = model(**batch, beta=1.0)
        mask = batch["labels"] != -100
        n_seg = batch["input_ids"].shape[0]
        totals["nll"] += float(out.recon_loss) * n_seg
        totals["tokens"] += int(mask.sum())
        right = (out.logits.argmax(-1) == batch["labels"]) & mask
        totals["correct"] += int(right.sum())
        if vocab is not None:
            labels = batch["labels"].clamp(min=0).cpu().numpy()
            _count_by_type(by_type, right=right, mask=mask, kinds=vocab.kinds[labels])
            totals["notes"] += int((torch.from_numpy(vocab.pitches_in[labels]).to(mask.device) * mask).sum())
        for key in ("kl", "kl_bar", "kl_segment"):
            totals[key] += float(getattr(out, key)) * n_seg
        totals["segments"] += n_seg
        mus.append(out.mu_segment.float().cpu())
    segs = max(totals["segments"], 1)
    usage = latent_usage(torch.cat(mus)) if mus else {"active_units": 0}
    kl_bits = totals["kl"] / segs / LN2
    per_note = {}
    if totals["notes"]:  # a note is one Pitch token (REMI); the same bound spread over notes, not tokens
        per_note = {"recon_nll_per_note": totals["nll"] / totals["notes"],
                    "neg_elbo_per_note": (totals["nll"] + totals["kl"]) / totals["notes"],
                    "notes_per_segment": totals["notes"] / segs}
    return {
        "recon_nll_per_token": totals["nll"] / max(totals["tokens"], 1),
        "token_accuracy": totals["correct"] / max(totals["tokens"], 1),
        "kl_bits_per_segment": kl_bits,
        "kl_bits_bar_codes": totals["kl_bar"] / segs / LN2,
        "kl_bits_segment_code": totals["kl_segment"] / segs / LN2,
        "active_units_segment": usage["active_units"],
        "kl_bits_per_active_unit": kl_bits / usage["active_units"] if usage["active_units"] else 0.0,
        "neg_elbo_per_token": (totals["nll"] + totals["kl"]) / max(totals["tokens"], 1),
        **{f"token_accuracy.{kind}": right / total for kind, (right, total) in sorted(by_type.items())},
        **per_note,
    }


def _count_by_type(by_type: dict, *, right, mask, kinds: np.ndarray) -> None:
    """Add each token type's [right, total] counts of one batch to ``by_type`` (``right``, ``mask``: (B, T)
    bool tensors; ``kinds``: (B, T) token type names of the labels)."""
    for kind in np.unique(kinds[mask.cpu().numpy()]):
        where = torch.from_numpy(kinds == kind).to(mask.device) & mask
        counts = by_type.setdefault(str(kind), [0, 0])
        counts[0] += int(right[where].sum())
        counts[1] += int(where.sum())


@torch.no_grad()
def teacher_forced_controls(model, batches, *, device, tokenizer) -> dict[str, float]:
    """Teacher-forced NLL per token and token accuracy per token type when the decoder reads the
    batch's codes (posterior means) rolled by one window (``*_shuffled_latent``) or zeros
    (``*_zero_latent``): set beside ``teacher_forced``'s numbers, the drop per token type is what the
    latent carries. A plain LM (``latent_mode="none"``) ignores its codes: returns ``{}``."""
    import torch.nn.functional as F

    from midistruct.model.modeling import shift_right

    if model.config.latent_mode == "none":
        return {}
    types = RemiVocab(tokenizer).kinds
    totals = {}  # suffix -> [nll, tokens, {kind: [right, total]}]
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        latents = model.encode(batch["input_ids"], batch["attention_mask"], batch["bar_ids"], sample=False)
        decoder_input_ids = shift_right(batch["input_ids"], bos_token_id=model.config.bos_token_id)
        labels = batch["labels"]
        mask = labels != -100
        kinds = types[labels.clamp(min=0).cpu().numpy()]
        for suffix, change in (("_shuffled_latent", lambda z: torch.roll(z, 1, dims=0)), ("_zero_latent", torch.zeros_like)):
            codes = {k: None if v is None else change(v) for k, v in latents.codes().items()}
            logits = model(decoder_input_ids=decoder_input_ids, **codes).logits.float()
            nll = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum")
            entry = totals.setdefault(suffix, [0.0, 0, {}])
            entry[0] += float(nll)
            entry[1] += int(mask.sum())
            right = (logits.argmax(-1) == labels) & mask
            _count_by_type(entry[2], right=right, mask=mask, kinds=kinds)
    out = {}
    for suffix, (nll, tokens, by_type) in totals.items():
        out[f"recon_nll_per_token{suffix}"] = nll / max(tokens, 1)
        out.update({f"token_accuracy{suffix}.{kind}": r / t for kind, (r, t) in sorted(by_type.items())})
    return out


@torch.no_grad()
def free_running(model, tokenizer, batch, *, device, latent: str = "true") -> dict[str, float]:
    """Greedy free-running reconstruction of a batch from its posterior mean (``latent="true"``), from
    another window's (``"shuffled"``: the batch's codes rolled by one) or from zeros (``"zero"``)."""
    from midistruct.tokens.tokenizer import decode_ids, strip_special

    if latent not in ("true", "shuffled", "zero"):
        raise ValueError(f"latent must be true, shuffled or zero, got {latent!r}")
    batch = {k: v.to(device) for k, v in batch.items()}
    latents = model.encode(batch["input_ids"], batch["attention_mask"], batch["bar_ids"], sample=False)
    codes = latents.codes()
    if latent == "zero":
        codes = {k: None if v is None else torch.zeros_like(v) for k, v in codes.items()}
    elif latent == "shuffled":  # (z_bar is None without bar latents)
        codes = {k: None if v is None else torch.roll(v, 1, dims=0) for k, v in codes.items()}
    cfg = model.config
    generated = model.generate(
        **codes, max_new_tokens=int(batch["attention_mask"].sum(1).max()) + 8, do_sample=False,
        eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id,
        suppress_tokens=[cfg.pad_token_id, cfg.bos_token_id, cfg.mask_token_id])
    scores, with_offsets, steps, exact = [], [], [], 0
    vocab = RemiVocab(tokenizer)
    for row in range(len(generated)):
        ref_ids = strip_special(batch["input_ids"][row])
        est_ids = strip_special(generated[row])
        exact += ref_ids == est_ids
        ref = decode_ids(tokenizer, ref_ids)
        ref_notes, est_notes = notes_of(ref), _safe_notes(tokenizer, est_ids)
        scores.append(onset_f1(ref_notes, est_notes))
        with_offsets.append(transcription_f1(ref_notes, est_notes, offsets=True))
        quarters = window_quarters(ref, max(vocab.count_bars(ref_ids), 1))
        steps.append(step_accuracy(ref_notes, est_notes, n_steps=n_steps_of(quarters=quarters)))
    return {"onset_f1": float(np.mean(scores)), "onset_offset_f1": float(np.mean(with_offsets)),
            "step_accuracy": float(np.mean(steps)),
            "exact_match": exact / len(generated)}


def _safe_notes(tokenizer, ids: list[int]) -> np.ndarray:
    from midistruct.tokens.tokenizer import decode_ids

    try:
        return notes_of(decode_ids(tokenizer, ids))
    except Exception:  # noqa: BLE001 - an undecodable generation scores zero, it must not stop training
        return np.zeros((0, 3))

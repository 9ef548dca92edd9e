"""Validation metrics used while training.

- teacher-forced: reconstruction NLL per token (the decoder reading the posterior mean), token accuracy, KL in
  bits (per segment, bar codes and segment code apart), active latent units, negative ELBO per token (for a VAE
  its reconstruction term reads codes drawn from the posterior, as the bound requires; seeded); and
  (``teacher_forced_controls``) the same decoder reading another window's latent or a zero one,
  per token type: what the latent carries (e.g. rhythm but not pitch);
- free-running: decode windows from the posterior mean through the grammar-constrained decoder
  (greedy, or sampled) and compare the notes with the input (note-level onset+pitch F1, mir_eval;
  MusicVAE's per-16th-step melody accuracy; the pitch at the true onsets beside a monotone on the
  true rhythm, issue 14), and the same with the latent zeroed, to show the decoder uses the latent.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from midistruct.metrics.notes import notes_of, onset_f1, transcription_f1, window_quarters
from midistruct.metrics.steps import (
    melody_events,
    monotone_hits,
    n_steps_of,
    onset_agreement,
    onset_pitch_hits,
    step_accuracy,
)
from midistruct.tokens.remi import RemiVocab
from midistruct.tokens.tokenizer import strip_special

LN2 = math.log(2.0)


def posterior_sample_forward(model, batch: dict, *, seed: int):
    """``model(**batch)`` with codes drawn from the posterior (``sample=True``) under ``seed``, the global random
    state left as it was: the reconstruction term of a VAE's ELBO, ``E_q[-log p(x | z)]``, estimated with one draw
    per window, the same draws on every call."""
    device = batch["input_ids"].device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return model(**batch, beta=1.0, sample=True)


@torch.no_grad()
def teacher_forced(model, batches, *, device, autocast, tokenizer=None, seed: int = 0) -> dict[str, float]:
    """Average teacher-forced metrics over ``batches`` (dicts from ``collate``). ``recon_nll_per_token`` is the
    decoder's NLL reading the posterior mean; for a VAE (``latent_mode: vae``) the negative ELBO
    (``neg_elbo_per_token``, ``neg_elbo_bits_per_segment``) takes its reconstruction term from codes drawn from the
    posterior (``elbo_recon_nll_per_token``; one draw per window, seeded by ``seed`` and the batch's index), since
    the mean's NLL is not a bound: a decoder can need many more bits from a draw than from the mean. With the
    ``tokenizer``,
    also the token accuracy of each token type (``token_accuracy.Pitch``, ``.Position`` ...; ``.Merged`` for
    BPE merges) and the NLL and negative ELBO per note (``*_per_note``: a note is a Pitch token). With the
    auxiliary heads, their NLL per token from the codes alone (``bow_nll_per_token``, ``seq_nll_per_token``); with
    the section head, the share of labelled bars whose section it names (``section_accuracy``); with the tag
    adversary, the share of the windows' given tags it names from the codes, per tag
    (``tag_adversary_accuracy.<name>``)."""
    from midistruct.model import latent_usage

    totals = {"nll": 0.0, "elbo_nll": 0.0, "tokens": 0, "correct": 0, "kl": 0.0, "kl_bar": 0.0, "kl_segment": 0.0,
              "segments": 0, "notes": 0}
    variational = model.config.latent_mode == "vae"
    vocab = RemiVocab(tokenizer) if tokenizer is not None else None
    by_type = {}  # type name -> [correct, total]
    mus = []
    for index, batch in enumerate(batches):
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast():
            out = model(**batch, beta=1.0)
            drawn = posterior_sample_forward(model, batch, seed=seed * 100_003 + index) if variational else out
        mask = batch["labels"] != -100
        n_seg = batch["input_ids"].shape[0]
        totals["nll"] += float(out.recon_loss) * n_seg
        totals["elbo_nll"] += float(drawn.recon_loss) * n_seg
        totals["tokens"] += int(mask.sum())
        right = (out.logits.argmax(-1) == batch["labels"]) & mask
        totals["correct"] += int(right.sum())
        if vocab is not None:
            labels = batch["labels"].clamp(min=0).cpu().numpy()
            _count_by_type(by_type, right=right, mask=mask, kinds=vocab.kinds[labels])
            totals["notes"] += int((torch.from_numpy(vocab.pitches_in[labels]).to(mask.device) * mask).sum())
        for key in ("kl", "kl_bar", "kl_segment"):
            totals[key] += float(getattr(out, key)) * n_seg
        for key in ("bow_loss", "seq_loss"):  # the auxiliary heads' NLL from the codes alone, when the model has them
            if getattr(out, key, None) is not None:
                totals[key] = totals.get(key, 0.0) + float(getattr(out, key)) * n_seg
        if getattr(out, "section_loss", None) is not None:  # section supervision: each labelled bar's class named
            sections = batch["section_ids"][:, : out.z_bar.shape[1]]
            named = model.section_logits(out.z_bar[:, : sections.shape[1]]).argmax(-1)
            totals["section_bars"] = totals.get("section_bars", 0) + int((sections >= 0).sum())
            totals["section_right"] = totals.get("section_right", 0) + int(((named == sections) & (sections >= 0)).sum())
        if getattr(out, "tag_adversary_right", None) is not None:  # how much of the decoder's tags the codes still hold
            totals["adversary_right"] = totals.get("adversary_right", 0) + out.tag_adversary_right.cpu().numpy()
            totals["adversary_tags"] = totals.get("adversary_tags", 0) + (batch["tag_ids"] > 0).sum(0).cpu().numpy()
        totals["segments"] += n_seg
        mus.append(out.mu_segment.float().cpu())
    segs = max(totals["segments"], 1)
    usage = latent_usage(torch.cat(mus)) if mus else {"active_units": 0}
    kl_bits = totals["kl"] / segs / LN2
    per_note = {}
    if totals["notes"]:  # a note is one Pitch token (REMI); the same bound spread over notes, not tokens
        per_note = {"recon_nll_per_note": totals["nll"] / totals["notes"],
                    "neg_elbo_per_note": (totals["elbo_nll"] + totals["kl"]) / totals["notes"],
                    "notes_per_segment": totals["notes"] / segs}
    return {
        "recon_nll_per_token": totals["nll"] / max(totals["tokens"], 1),
        "token_accuracy": totals["correct"] / max(totals["tokens"], 1),
        "kl_bits_per_segment": kl_bits,
        "kl_bits_bar_codes": totals["kl_bar"] / segs / LN2,
        "kl_bits_segment_code": totals["kl_segment"] / segs / LN2,
        "active_units_segment": usage["active_units"],
        "kl_bits_per_active_unit": kl_bits / usage["active_units"] if usage["active_units"] else 0.0,
        "neg_elbo_per_token": (totals["elbo_nll"] + totals["kl"]) / max(totals["tokens"], 1),
        "neg_elbo_bits_per_segment": (totals["elbo_nll"] + totals["kl"]) / segs / LN2,
        **({"elbo_recon_nll_per_token": totals["elbo_nll"] / max(totals["tokens"], 1)} if variational else {}),
        **{f"token_accuracy.{kind}": right / total for kind, (right, total) in sorted(by_type.items())},
        **per_note,
        **{f"{key[:3]}_nll_per_token": totals[key] / max(totals["tokens"], 1)
           for key in ("bow_loss", "seq_loss") if key in totals},
        **({"section_accuracy": totals["section_right"] / max(totals["section_bars"], 1),
            "section_bars": totals["section_bars"]} if "section_bars" in totals else {}),
        **({f"tag_adversary_accuracy.{name}": float(right / max(given, 1)) for name, right, given in
            zip(model.config.decoder_tags, totals["adversary_right"], totals["adversary_tags"])}
           if "adversary_tags" in totals else {}),
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
        latents = model.encode_batch(batch, sample=False)
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
def free_running(model, tokenizer, batch, *, device, latent: str = "true", temperature: float = 0.0,
                 num_beams: int = 1) -> dict[str, float]:
    """Free-running reconstruction of a batch through the grammar-constrained decoder
    (:func:`midistruct.generation.pipeline.generate_windows`), greedy at ``temperature=0`` else sampled, from the
    posterior mean (``latent="true"``), another window's (``"shuffled"``: the codes rolled by one) or zeros;
    beam search over ``num_beams`` beams when > 1 (greedy only). A batch with ``tag_ids`` (a model whose decoder
    reads tags, its dataset built with them) decodes every row with its own window's tags, whichever codes.

    Returns window means of ``onset_f1``, ``onset_offset_f1``, ``step_accuracy``, ``onset_accuracy`` (the rhythm:
    steps agreeing on whether a note starts) and ``exact_match``; and, pooled over the batch's true onsets
    (``onsets``), ``onset_pitch_accuracy`` (the reconstruction starts the same pitch there; issue 14) beside
    ``monotone_onset_pitch_accuracy`` (the window's most common pitch on the true rhythm). ``windows``: rows."""
    if latent not in ("true", "shuffled", "zero"):
        raise ValueError(f"latent must be true, shuffled or zero, got {latent!r}")
    batch = {k: v.to(device) for k, v in batch.items()}
    latents = model.encode_batch(batch, sample=False)
    change = {"true": lambda z: z, "zero": torch.zeros_like, "shuffled": lambda z: torch.roll(z, 1, dims=0)}[latent]
    codes = {k: None if v is None else change(v) for k, v in latents.codes().items()}  # z_bar None: no bar latents
    codes["tag_ids"] = batch.get("tag_ids")  # the window's own tags (decoder_tags), not changed with the codes
    references = [strip_special(row) for row in batch["input_ids"]]
    estimates = _decode_like(model, tokenizer, references, codes, temperature=temperature, num_beams=num_beams)
    return score_reconstructions(tokenizer, references, estimates)


def _decode_like(model, tokenizer, references: list[list[int]], codes: dict, *, temperature: float,
                 num_beams: int = 1) -> list[list[int]]:
    """Decode each row's codes with as many bars, in the meter, as its reference window (rows grouped by both)."""
    from midistruct.generation.pipeline import generate_windows

    vocab = RemiVocab(tokenizer)
    groups: dict[tuple[int, str | None], list[int]] = {}
    for row, ids in enumerate(references):
        groups.setdefault((max(vocab.count_bars(ids), 1), vocab.meter(ids, default=None)), []).append(row)
    estimates: list[list[int]] = [[] for _ in references]
    for (bars, meter), rows in groups.items():
        pick = torch.tensor(rows, device=codes["z_segment"].device)
        z_bar = None if codes["z_bar"] is None else codes["z_bar"][pick]
        longest = max(len(references[r]) for r in rows)
        tag_ids = None if codes.get("tag_ids") is None else codes["tag_ids"][pick]
        out = generate_windows(model, tokenizer, z_bar=z_bar, z_segment=codes["z_segment"][pick], bars=bars,
                               meter=meter, temperature=temperature, max_new=2 * longest + 16, num_beams=num_beams,
                               tag_ids=tag_ids)
        for row, ids in zip(rows, out):
            estimates[row] = ids
    return estimates


def score_reconstructions(tokenizer, references: list[list[int]], estimates: list[list[int]]) -> dict[str, float]:
    """``free_running``'s metrics of reconstructions against their reference windows (token ids, no specials)."""
    from midistruct.tokens.tokenizer import decode_ids

    vocab = RemiVocab(tokenizer)
    per_window = {"onset_f1": [], "onset_offset_f1": [], "step_accuracy": [], "onset_accuracy": [], "exact_match": []}
    hits = {"onset_pitch": 0, "monotone": 0, "onsets": 0}
    for ref_ids, est_ids in zip(references, estimates):
        ref = decode_ids(tokenizer, ref_ids)
        ref_notes, est_notes = notes_of(ref), _safe_notes(tokenizer, est_ids)
        n = n_steps_of(quarters=window_quarters(ref, max(vocab.count_bars(ref_ids), 1)))
        ref_events, est_events = melody_events(ref_notes, n), melody_events(est_notes, n)
        per_window["onset_f1"].append(onset_f1(ref_notes, est_notes))
        per_window["onset_offset_f1"].append(transcription_f1(ref_notes, est_notes, offsets=True))
        per_window["step_accuracy"].append(step_accuracy(ref_notes, est_notes, n_steps=n))
        per_window["onset_accuracy"].append(onset_agreement(ref_events, est_events))
        per_window["exact_match"].append(float(ref_ids == est_ids))
        right, onsets = onset_pitch_hits(ref_events, est_events)
        hits["onset_pitch"] += right
        hits["monotone"] += monotone_hits(ref_events)[0]
        hits["onsets"] += onsets
    out = {k: float(np.mean(v)) for k, v in per_window.items()}
    out["onset_pitch_accuracy"] = hits["onset_pitch"] / max(hits["onsets"], 1)
    out["monotone_onset_pitch_accuracy"] = hits["monotone"] / max(hits["onsets"], 1)
    return {**out, "onsets": hits["onsets"], "windows": len(references)}


POOLED_BY_ONSETS = ("onset_pitch_accuracy", "monotone_onset_pitch_accuracy")


def merge_free_runs(results: list[dict[str, float]]) -> dict[str, float]:
    """``free_running`` results of several batches as one: window means weighted by ``windows``, the onset
    pitch accuracies by ``onsets``; counts summed."""
    if not results:
        return {}
    windows = sum(r["windows"] for r in results)
    onsets = sum(r["onsets"] for r in results)
    out = {"windows": windows, "onsets": onsets}
    for key in results[0]:
        if key in out:
            continue
        weight, total = ("onsets", onsets) if key in POOLED_BY_ONSETS else ("windows", windows)
        out[key] = sum(r[key] * r[weight] for r in results) / max(total, 1)
    return out


def _safe_notes(tokenizer, ids: list[int]) -> np.ndarray:
    from midistruct.tokens.tokenizer import decode_ids

    try:
        return notes_of(decode_ids(tokenizer, ids))
    except Exception:  # noqa: BLE001 - an undecodable generation scores zero, it must not stop training
        return np.zeros((0, 3))

"""How many bits a window costs as codes plus what the decoder still has to be told: a two-part code length for
models whose codes are deterministic (issue 14: "the latent is a compressed code ... -ELBO within 1.5x the LM's NLL").

A VAE's negative ELBO is a code length (bits-back). A deterministic autoencoder (``latent_mode: ae``) has no KL;
its codes are real numbers, which cost unboundedly many bits unless they are rounded. So its codes are rounded,
and both parts are counted:

1. **the codes**, under the model's fitted code prior (:mod:`midistruct.model.prior`, probabilistic PCA): each
   window's ``[z_bar ; z_segment]`` minus the prior's mean is projected onto the prior's K principal directions,
   each coordinate is rounded to a multiple of ``step`` (the same absolute step for all, so that directions of
   little spread round to 0 and cost almost nothing: reverse water-filling), and costs
   ``-log2 P(bin)`` where P is the prior's normal for that coordinate integrated over the bin; what the K directions
   leave (the prior's diagonal residual) is not sent and is taken as the mean;
2. **the notes given the codes**: the decoder's teacher-forced NLL of the window's tokens, in bits, reading the
   rounded codes.

Their sum, over a grid of steps, is an upper bound on the bits the model needs for the window (a code that a
receiver holding the model and its prior could decode), comparable to a VAE's negative ELBO and to a plain LM's
NLL of the same windows (``judge``). Unrounded codes give the second part alone (``unquantized_nll_bits``), the
floor no rounding reaches. A prior with a bank of real bar codes is also tried as a dictionary (``bank_*``): each
bar sent as the index of its nearest bank bar (``log2 B`` bits), the segment code rounded as above.

A VAE (``latent_mode: vae``) needs no rounding: its negative ELBO, ``E_q[-log p(x | z)] + KL(q(z | x) || p(z))``,
is a code length by bits-back coding. :func:`measure_elbo` gives it under two priors p: N(0, I), which the model
was trained with, and the model's fitted code prior, the Gaussian matched to the training windows' aggregate
posterior (``CodePrior.fit(variances=...)``: the means' covariance plus the mean posterior variance). Any prior gives a valid bound; the
fitted one is the Gaussian that the training windows' posteriors sit in, so it charges nothing for the room
N(0, I) leaves unused or for correlations between the codes. The KL to it is exact (both Gaussian); the
reconstruction term is estimated with one seeded draw per window, the same draws as ``neg_elbo_per_token``.

Shapes: W windows, D = NB * Zb + Zs code numbers, K prior directions, T tokens.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F

from midistruct.errors import MidiStructError

LN2 = math.log(2.0)
DEFAULT_STEPS = (0.5, 0.71, 1.0, 1.41, 2.0, 2.83, 4.0, 5.66, 8.0, 11.3, 16.0, 22.6, 32.0)  # about x sqrt(2) apart


class CodeLengthError(MidiStructError, ValueError):
    """A model or prior the code length cannot be measured for."""


def prior_basis(prior) -> tuple[torch.Tensor, torch.Tensor]:
    """The prior's principal directions (D, K), orthonormal, and the spread (standard deviation) along each (K,).

    :func:`midistruct.model.prior._ppca` stores ``factor = directions.T * spread``, so the columns are orthogonal
    and their norms are the spreads."""
    spread = prior.factor.double().norm(dim=0)  # (K,)
    keep = spread > 0
    return prior.factor.double()[:, keep] / spread[keep], spread[keep]


def bin_bits(index: torch.Tensor, *, step: float, spread: torch.Tensor) -> torch.Tensor:
    """Bits of each rounded coordinate: ``-log2`` of N(0, spread^2)'s mass on [(i - 1/2) step, (i + 1/2) step].

    ``index`` (W, K) integer bin numbers, ``spread`` (K,). Far-out bins are computed from the upper tail so that
    their small masses do not cancel to 0."""
    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
    i = index.abs().double()  # the normal is symmetric
    spread = spread.double()
    lo, hi = (i - 0.5) * step / spread, (i + 0.5) * step / spread  # (W, K) in standard units
    mass = torch.where(i == 0, 2 * normal.cdf(hi) - 1, normal.cdf(-lo) - normal.cdf(-hi))
    return -torch.log2(mass.clamp(min=1e-300))


def round_codes(x: torch.Tensor, prior, *, step: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes ``x`` (W, D) rounded in the prior's basis: (the rounded codes (W, D), bits of each window (W,))."""
    basis, spread = prior_basis(prior)
    mean = prior.mean.double()
    index = torch.round(((x.double() - mean) @ basis) / step)  # (W, K)
    rounded = mean + (index * step) @ basis.T  # (W, D)
    return rounded.to(x.dtype), bin_bits(index, step=step, spread=spread).sum(1)


def segment_basis(prior) -> tuple[torch.Tensor, torch.Tensor]:
    """The principal directions (Zs, Zs) and spreads (Zs,) of the segment code alone under the prior (its marginal
    covariance ``F_s F_s^T + diag(r_s^2)``, the segment's rows of the factor and residual)."""
    start = prior.bars * prior.bar_dim
    f, r = prior.factor.double()[start:], prior.residual.double()[start:]
    variance, directions = torch.linalg.eigh(f @ f.T + torch.diag(r**2))  # ascending
    return directions, variance.clamp(min=1e-12).sqrt()


def bank_codes(x: torch.Tensor, prior, *, step: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes ``x`` (W, D) sent as a bank index per bar (``log2 B`` bits each: the nearest of the prior's B real
    bar codes) and the segment code rounded in its own principal basis: (the codes the receiver rebuilds (W, D),
    bits of each window (W,))."""
    z_bar, z_segment = prior.split(x.float())
    snapped = prior.snap(z_bar)  # (W, NB, Zb) the nearest bank bar codes
    basis, spread = segment_basis(prior)
    mean = prior.split(prior.mean[None])[1][0].double()  # (Zs,)
    index = torch.round(((z_segment.double() - mean) @ basis) / step)  # (W, Zs)
    segment = mean + (index * step) @ basis.T
    bits = bin_bits(index, step=step, spread=spread).sum(1) + prior.bars * math.log2(len(prior.bank))
    return torch.cat([snapped.flatten(1), segment.float()], dim=1).to(x.dtype), bits


def window_nll(model, batch: dict, *, codes: dict | None) -> torch.Tensor:
    """Teacher-forced NLL in nats of each window of ``batch`` (W,), the decoder reading ``codes``; with ``codes``
    None, the model reads the windows as it was trained to (a plain LM: the tokens alone)."""
    from midistruct.model.modeling import shift_right

    if codes is None:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       bar_ids=batch["bar_ids"]).logits.float()  # (W, T, V)
    else:
        decoder_input_ids = shift_right(batch["input_ids"], bos_token_id=model.config.bos_token_id)
        logits = model(decoder_input_ids=decoder_input_ids, **codes).logits.float()  # (W, T, V)
    labels = batch["labels"]
    nll = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="none")
    return nll.view(labels.shape).sum(1)  # padding (-100) adds 0


def _window_codes(model, batch: dict, prior) -> tuple[torch.Tensor, dict]:
    """The windows' codes as the prior's rows (W, D), and the other keyword arguments the decoder reads."""
    latents = model.encode_batch(batch, sample=False)
    z_bar, z_segment = latents.z_bar, latents.z_segment
    if z_bar is None:
        z_bar = z_segment.new_zeros(len(z_segment), 0, 0)
    if z_bar.shape[1] > prior.bars:
        raise CodeLengthError(f"windows of {z_bar.shape[1]} bars; the code prior is over {prior.bars}")
    if z_bar.shape[1] < prior.bars:  # a batch of shorter windows: the bars they lack carry the prior's mean
        fill = prior.split(prior.mean[None])[0].to(z_bar.dtype).expand(len(z_bar), -1, -1)
        z_bar = torch.cat([z_bar, fill[:, z_bar.shape[1] :]], dim=1)
    rows = torch.cat([z_bar.flatten(1), z_segment], dim=1)  # (W, D)
    return rows, {"tag_ids": batch.get("tag_ids")}


def measure_code_length(model, prior, batches, *, steps=DEFAULT_STEPS, judge=None,
                        device: str | torch.device = "cpu") -> dict:
    """Two-part code lengths of the windows of ``batches`` (dicts from ``collate``), mean bits per window.

    Returns ``tokens_per_window``, ``unquantized_nll_bits`` (the decoder's NLL reading the codes as they are),
    for each ``step`` ``step_<s>.rate_bits`` / ``.nll_bits`` / ``.total_bits``, the lowest total (``best_total_bits``
    at ``best_step``) and, with a ``judge`` (a plain LM, ``latent_mode: none``), its NLL of the same windows
    (``lm_nll_bits``) and ``best_total_over_lm``. Raises :class:`CodeLengthError` for a model the prior does not
    fit or whose decoder reads codes the prior does not cover."""
    if model.config.latent_mode == "none":
        raise CodeLengthError("a plain LM has no codes to count; give it as the judge instead")
    _check_covers(model, prior)
    banked = prior.bank is not None and prior.bar_dim > 0
    sums = {"windows": 0, "tokens": 0, "unquantized": 0.0, "lm": 0.0}
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.no_grad():
            rows, extra = _window_codes(model, batch, prior)
            sums["windows"] += len(rows)
            sums["tokens"] += int((batch["labels"] != -100).sum())
            sums["unquantized"] += float(window_nll(model, batch, codes={**_codes(prior, rows, model), **extra}).sum())
            if judge is not None:
                sums["lm"] += float(window_nll(judge, batch, codes=None).sum())
            ways = {"step": round_codes, **({"bank": bank_codes} if banked else {})}
            for (way, send), step in itertools.product(ways.items(), steps):
                rounded, bits = send(rows, prior, step=step)
                nll = window_nll(model, batch, codes={**_codes(prior, rounded, model), **extra})
                entry = sums.setdefault((way, step), [0.0, 0.0])
                entry[0] += float(bits.sum())
                entry[1] += float(nll.sum()) / LN2
    return _report(sums, steps=steps, judged=judge is not None, banked=banked)


def _check_covers(model, prior) -> None:
    """:class:`CodeLengthError` unless the prior covers every code the model's decoder reads."""
    for name in ("arrangement_dim", "performance_dim"):
        if getattr(model.config, name, 0):
            raise CodeLengthError(f"the code prior covers the bar and segment codes only; this model also has "
                                  f"{name.split('_')[0]} codes")
    prior.check(bars=prior.bars, bar_dim=model.config.latent_dim_bar if model.config.bar_latents else 0,
                segment_dim=model.config.latent_dim_segment)


def _codes(prior, rows: torch.Tensor, model) -> dict:
    """The decoder's ``z_bar`` / ``z_segment`` from the prior's rows (W, D)."""
    z_bar, z_segment = prior.split(rows)
    return {"z_bar": z_bar if model.config.bar_latents else None, "z_segment": z_segment}


def _report(sums: dict, *, steps, judged: bool, banked: bool) -> dict:
    n = max(sums["windows"], 1)
    out = {"windows": sums["windows"], "tokens_per_window": sums["tokens"] / n,
           "unquantized_nll_bits": sums["unquantized"] / n / LN2}
    for (way, step), (rate, nll) in ((k, v) for k, v in sums.items() if isinstance(k, tuple)):
        rate, nll = rate / n, nll / n
        out.update({f"{way}_{step:g}.rate_bits": rate, f"{way}_{step:g}.nll_bits": nll,
                    f"{way}_{step:g}.total_bits": rate + nll})
    best = min(steps, key=lambda s: out[f"step_{s:g}.total_bits"])
    out.update({"best_step": best, "best_total_bits": out[f"step_{best:g}.total_bits"]})
    if banked:
        best = min(steps, key=lambda s: out[f"bank_{s:g}.total_bits"])
        out.update({"bank_best_step": best, "bank_best_total_bits": out[f"bank_{best:g}.total_bits"]})
    if judged:
        out["lm_nll_bits"] = sums["lm"] / n / LN2
        out["best_total_over_lm"] = out["best_total_bits"] / max(out["lm_nll_bits"], 1e-12)
    return out


def prior_gaussian(prior) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The prior's mean (D,), full covariance ``F F^T + diag(r^2)`` (D, D), float64, and the jitter added to its
    diagonal to make it positive definite (0.0 unless it was singular, as a prior fitted to fewer windows than it
    has dimensions is: then the smallest of 1e-6, 1e-4, 1e-2 times its mean variance that does; any positive
    definite Gaussian is a prior, so the bound stays valid, only looser)."""
    f = prior.factor.double()
    cov = f @ f.T + torch.diag(prior.residual.double() ** 2)
    scale = float(torch.diagonal(cov).mean()) or 1.0
    for jitter in (0.0, 1e-6 * scale, 1e-4 * scale, 1e-2 * scale):
        trial = cov + jitter * torch.eye(len(cov), dtype=cov.dtype)
        if torch.linalg.cholesky_ex(trial).info == 0:
            return prior.mean.double(), trial, jitter
    raise CodeLengthError("the code prior's covariance is far from positive definite; fit it to more windows")


def kl_to_gaussian(mu: torch.Tensor, var: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor,
                   present: torch.Tensor | None = None) -> torch.Tensor:
    """KL(N(mu, diag var) || N(mean, cov)) in nats of each row (W,): ``mu``, ``var`` (W, D). ``present`` (W, D)
    bool: the coordinates each row has (a window shorter than the prior's has fewer bars); the others are left
    out of both, i.e. the KL to the prior's marginal over the present ones."""
    mu, var = mu.double(), var.double()
    present = torch.ones_like(mu, dtype=torch.bool) if present is None else present
    out = torch.empty(len(mu), dtype=torch.float64)
    for pattern in torch.unique(present, dim=0):
        rows = (present == pattern).all(1)
        m, c = mean[pattern], cov[pattern][:, pattern]
        chol = torch.linalg.cholesky(c)
        inv = torch.cholesky_inverse(chol)
        d = mu[rows][:, pattern] - m  # (w, d)
        v = var[rows][:, pattern]
        log_det = 2 * torch.log(torch.diagonal(chol)).sum()
        out[rows] = 0.5 * ((v * torch.diagonal(inv)).sum(1) + ((d @ inv) * d).sum(1) - len(m) + log_det
                           - torch.log(v).sum(1))
    return out


def _posterior(latents, prior) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The windows' posterior means and variances as the prior's rows (W, D), and which coordinates each has (a bar
    a window lacks: mean 0, variance 1). ``latents``: a ``Latents`` or the model's output, which carries them."""
    W, NB = len(latents.mu_segment), prior.bars
    if latents.mu_bar is not None and latents.mu_bar.shape[1] > NB:
        raise CodeLengthError(f"windows of {latents.mu_bar.shape[1]} bars; the code prior is over {NB}")
    mu_bar = latents.mu_segment.new_zeros(W, NB, prior.bar_dim)
    var_bar = latents.mu_segment.new_ones(W, NB, prior.bar_dim)
    have = torch.zeros(W, NB, dtype=torch.bool)
    if latents.mu_bar is not None:
        nb = latents.mu_bar.shape[1]
        mu_bar[:, :nb], var_bar[:, :nb] = latents.mu_bar, latents.logvar_bar.exp()
        have[:, :nb] = latents.bar_mask.cpu()
    mu = torch.cat([mu_bar.flatten(1), latents.mu_segment], 1).float().cpu()
    var = torch.cat([var_bar.flatten(1), latents.logvar_segment.exp()], 1).float().cpu()
    present = torch.cat([have.repeat_interleave(prior.bar_dim, dim=1),
                         torch.ones(W, prior.segment_dim, dtype=torch.bool)], 1)
    return mu, var, present


def measure_elbo(model, prior, batches, *, judge=None, device: str | torch.device = "cpu", seed: int = 0) -> dict:
    """A VAE's negative ELBO of the windows of ``batches``, mean bits per window, under N(0, I) and under its fitted
    code prior (see the module).

    Returns ``tokens_per_window``, ``recon_nll_bits`` (one seeded posterior draw per window, as
    ``validation.teacher_forced`` draws it), ``mean_code_nll_bits`` (the decoder reading the posterior mean: not
    part of any bound), ``kl_normal_bits``, ``kl_prior_bits``, ``neg_elbo_normal_bits``, ``neg_elbo_prior_bits``
    with the standard errors of those means over the windows (``*_bits_se``)
    , ``prior_jitter`` (:func:`prior_gaussian`) and, with a ``judge`` (a plain LM), ``lm_nll_bits`` and each bound
    over it (``*_over_lm``, with ``*_over_lm_se``: paired over the windows, by the delta method). Raises
    :class:`CodeLengthError` for a model that is not a VAE or a prior that is not its aggregate posterior."""
    from midistruct.model.modeling import gaussian_kl
    from midistruct.training.validation import posterior_sample_forward

    if model.config.latent_mode != "vae":
        raise CodeLengthError(f"an ELBO needs a VAE; this model's codes are {model.config.latent_mode!r}")
    if not prior.posterior:
        raise CodeLengthError("its code prior was fitted to the posterior means alone, not to the aggregate "
                              "posterior: fit it again with `midistruct prior` (a VAE's is, since 2026-12-07)")
    _check_covers(model, prior)
    mean, cov, jitter = prior_gaussian(prior)
    sums = dict.fromkeys(("windows", "tokens", "recon", "mean_code", "kl_normal", "kl_prior", "lm"), 0.0)
    per_window = {"normal": [], "prior": [], "lm": []}  # each window's bound (nats), for the standard errors
    for index, batch in enumerate(batches):
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.no_grad():
            at_mean = model(**batch, beta=1.0)  # eval mode: the decoder reads the posterior mean
            drawn = posterior_sample_forward(model, batch, seed=seed * 100_003 + index)
            if judge is not None:
                judged = window_nll(judge, batch, codes=None).double().cpu()  # (W,)
                sums["lm"] += float(judged.sum())
                per_window["lm"].append(judged)
        n = len(batch["input_ids"])
        mu, var, present = _posterior(at_mean, prior)  # the output carries the posterior (mu_*, logvar_*)
        sums["windows"] += n
        sums["tokens"] += int((batch["labels"] != -100).sum())
        sums["recon"] += float(drawn.recon_loss) * n
        sums["mean_code"] += float(at_mean.recon_loss) * n
        sums["kl_normal"] += float(drawn.kl) * n
        kl_prior = kl_to_gaussian(mu, var, mean, cov, present)
        sums["kl_prior"] += float(kl_prior.sum())
        labels = batch["labels"]
        recon = F.cross_entropy(drawn.logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100,
                                reduction="none").view(labels.shape).sum(1).double().cpu()  # (W,)
        per_window["normal"].append(recon + gaussian_kl(mu, var.log()).double())  # absent bars: N(0, 1), KL 0
        per_window["prior"].append(recon + kl_prior)
    n = max(sums["windows"], 1)
    bits = {k: v / n / LN2 for k, v in sums.items() if k not in ("windows", "tokens")}
    out = {"windows": int(sums["windows"]), "tokens_per_window": sums["tokens"] / n,
           "recon_nll_bits": bits["recon"], "mean_code_nll_bits": bits["mean_code"],
           "kl_normal_bits": bits["kl_normal"], "kl_prior_bits": bits["kl_prior"],
           "neg_elbo_normal_bits": bits["recon"] + bits["kl_normal"],
           "neg_elbo_prior_bits": bits["recon"] + bits["kl_prior"], "prior_jitter": jitter}
    rows = {k: torch.cat(v) / LN2 if v else torch.zeros(0, dtype=torch.float64) for k, v in per_window.items()}
    for name in ("normal", "prior"):  # over windows (and their one draw each)
        out[f"neg_elbo_{name}_bits_se"] = _standard_error(rows[name])
    if judge is not None:
        out["lm_nll_bits"] = bits["lm"]
        for name in ("normal", "prior"):
            ratio = out[f"neg_elbo_{name}_bits"] / max(bits["lm"], 1e-12)
            out[f"neg_elbo_{name}_over_lm"] = ratio
            # the ratio of two means over the same windows, paired (delta method)
            out[f"neg_elbo_{name}_over_lm_se"] = _standard_error(rows[name] - ratio * rows["lm"]) / max(bits["lm"], 1e-12)
    return out


def _standard_error(rows: torch.Tensor) -> float:
    """The standard error of the mean of ``rows`` (N,); NaN for fewer than 2."""
    return float(rows.std() / len(rows) ** 0.5) if len(rows) > 1 else float("nan")

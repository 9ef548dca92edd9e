"""The two-part code length of deterministic codes (midistruct.evaluation.code_length, ``evaluate --code-length``)."""

from __future__ import annotations

import contextlib
import math
import shutil

import pytest
import torch

from midistruct.evaluation.code_length import (
    DEFAULT_STEPS,
    CodeLengthError,
    bank_codes,
    bin_bits,
    kl_to_gaussian,
    measure_code_length,
    measure_elbo,
    prior_basis,
    round_codes,
    segment_basis,
)
from midistruct.model.prior import CodePrior


def _prior(n: int = 4000, *, bars: int = 2, bar_dim: int = 3, segment_dim: int = 4, rank: int = 100, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    d = bars * bar_dim + segment_dim
    x = torch.randn(n, d, generator=g) @ torch.randn(d, d, generator=g).T + 3.0
    prior = CodePrior.fit(x[:, : bars * bar_dim].reshape(n, bars, bar_dim), x[:, bars * bar_dim :], rank=rank)
    return prior, x


def test_bins_are_a_distribution_and_far_bins_stay_finite():
    spread = torch.tensor([0.3, 1.0, 5.0])
    index = torch.arange(-200, 201, dtype=torch.float64)[:, None].expand(-1, 3)  # (401, 3): 20 spreads each way
    for step in (0.5, 1.0, 4.0):
        mass = (2.0 ** -bin_bits(index, step=step, spread=spread)).sum(0)
        assert torch.allclose(mass, torch.ones(3, dtype=torch.float64), atol=1e-6), step
    assert torch.equal(bin_bits(index, step=1.0, spread=spread), bin_bits(-index, step=1.0, spread=spread))
    far = bin_bits(torch.tensor([[30.0]]), step=1.0, spread=torch.tensor([1.0]))
    assert torch.isfinite(far).all() and far.item() > 100  # 30 standard deviations out: costly, not infinite
    assert bin_bits(torch.tensor([[0.0]]), step=100.0, spread=torch.tensor([1.0])).item() < 1e-6


def test_fine_rounding_costs_the_differential_entropy_and_coarse_rounding_costs_nothing():
    prior, x = _prior()
    basis, spread = prior_basis(prior)
    assert torch.allclose(basis.T @ basis, torch.eye(len(spread), dtype=torch.float64), atol=1e-6)  # orthonormal
    step = 0.05
    rounded, bits = round_codes(x, prior, step=step)
    # h(N(0, s^2)) - log2(step) per coordinate: the rate of a fine uniform quantizer
    expected = sum(math.log2(float(s) * math.sqrt(2 * math.pi * math.e) / step) for s in spread)
    assert abs(bits.mean().item() - expected) < 0.02 * expected
    assert (rounded - x).abs().max() < step * len(spread) ** 0.5  # rank = D: nothing left out but the rounding
    coarse, coarse_bits = round_codes(x, prior, step=1e4)
    assert coarse_bits.max().item() < 1e-3 and torch.allclose(coarse, prior.mean.expand_as(x), atol=1e-3)
    rates = [round_codes(x, prior, step=s)[1].mean().item() for s in (0.1, 0.5, 2.0, 8.0)]
    assert rates == sorted(rates, reverse=True)


def test_a_bank_sends_each_bar_as_an_index_and_the_segment_code_rounded():
    g = torch.Generator().manual_seed(1)
    z_bar = torch.randn(500, 2, 3, generator=g) * 2
    z_segment = torch.randn(500, 4, generator=g) @ torch.randn(4, 4, generator=g)
    prior = CodePrior.fit(z_bar, z_segment, rank=100, bank=1000)  # every bar of the 500 windows is in the bank
    x = torch.cat([z_bar.flatten(1), z_segment], 1)
    sent, bits = bank_codes(x, prior, step=0.01)
    assert torch.equal(sent[:, :6], x[:, :6])  # each bar's own code is the nearest bank bar
    assert (sent[:, 6:] - x[:, 6:]).abs().max() < 0.01 * 2
    _, spread = segment_basis(prior)
    expected = 2 * math.log2(1000) + sum(math.log2(float(s) * math.sqrt(2 * math.pi * math.e) / 0.01) for s in spread)
    assert abs(bits.mean().item() - expected) < 0.02 * expected
    other = torch.randn(50, 10, generator=g) * 2  # windows whose bars are not in the bank: the nearest stand in
    assert not torch.equal(bank_codes(other, prior, step=0.01)[0][:, :6], other[:, :6])


def test_kl_to_a_full_gaussian_and_to_its_marginal():
    g = torch.Generator().manual_seed(2)
    mu, var = torch.randn(5, 4, generator=g), torch.rand(5, 4, generator=g) + 0.1
    a = torch.randn(4, 4, generator=g)
    mean, cov = torch.randn(4, generator=g).double(), (a @ a.T + 0.5 * torch.eye(4)).double()
    from midistruct.model.modeling import gaussian_kl

    unit = kl_to_gaussian(mu, var, torch.zeros(4, dtype=torch.float64), torch.eye(4, dtype=torch.float64))
    assert torch.allclose(unit, gaussian_kl(mu, var.log()).double(), atol=1e-6)
    want = torch.stack([torch.distributions.kl_divergence(
        torch.distributions.MultivariateNormal(mu[i].double(), torch.diag(var[i].double())),
        torch.distributions.MultivariateNormal(mean, cov)) for i in range(5)])
    assert torch.allclose(kl_to_gaussian(mu, var, mean, cov), want, atol=1e-6)
    present = torch.ones(5, 4, dtype=torch.bool)
    present[1, 1:3] = False  # a shorter window: the prior's marginal over what it has
    got = kl_to_gaussian(mu, var, mean, cov, present)
    keep = torch.tensor([0, 3])
    marginal = torch.distributions.kl_divergence(
        torch.distributions.MultivariateNormal(mu[1, keep].double(), torch.diag(var[1, keep].double())),
        torch.distributions.MultivariateNormal(mean[keep], cov[keep][:, keep]))
    assert got[1].item() == pytest.approx(marginal.item(), rel=1e-6)
    assert torch.allclose(got[[0, 2, 3, 4]], want[[0, 2, 3, 4]], atol=1e-6)


def test_a_prior_fitted_with_posterior_variances_is_the_aggregate_posterior_and_costs_less_than_the_unit_normal(
        tmp_path):
    """Posteriors whose means are correlated and off the unit normal: the Gaussian fitted with their variances has
    the means' covariance plus the mean posterior variance (the covariance of codes drawn from them), and charges each
    held-out posterior less than N(0, I) does."""
    from midistruct.evaluation.code_length import prior_gaussian

    g = torch.Generator().manual_seed(3)
    n, d = 20000, 6
    mix = torch.randn(d, d, generator=g) * 0.8
    mu = torch.randn(n, d, generator=g) @ mix.T + 0.7
    var = torch.rand(n, d, generator=g) * 0.4
    for rank in (d, 2):  # full, and low rank plus diagonal: the variances join the diagonal
        prior = CodePrior.fit(mu[:, :4].reshape(n, 2, 2), mu[:, 4:], rank=rank,
                              variances=(var[:, :4].reshape(n, 2, 2), var[:, 4:]))
        mean, cov, jitter = prior_gaussian(prior)
        assert jitter == 0.0 and torch.allclose(mean, mu.double().mean(0), atol=1e-5)
        draws = mu + var.sqrt() * torch.randn(n, d, generator=g)
        assert torch.allclose(torch.diagonal(cov), draws.double().var(0), rtol=0.05)
        if rank == d:
            assert torch.allclose(cov, torch.cov(mu.double().T) + torch.diag(var.double().mean(0)), atol=1e-6)
    assert prior.posterior and not CodePrior.fit(mu[:, :4].reshape(n, 2, 2), mu[:, 4:], rank=d).posterior
    mean, cov, _ = prior_gaussian(CodePrior.fit(mu[:, :4].reshape(n, 2, 2), mu[:, 4:], rank=d,
                                                variances=(var[:, :4].reshape(n, 2, 2), var[:, 4:])))
    held_mu = torch.randn(500, d, generator=g) @ mix.T + 0.7
    held_var = torch.rand(500, d, generator=g) * 0.4
    fitted = kl_to_gaussian(held_mu, held_var, mean, cov).mean()
    unit = kl_to_gaussian(held_mu, held_var, torch.zeros(d, dtype=torch.float64), torch.eye(d, dtype=torch.float64))
    assert fitted < unit.mean() - 1.0
    assert CodePrior.load(prior.save(tmp_path / "p.safetensors")).posterior
    with pytest.raises(Exception, match="variances of shapes"):
        CodePrior.fit(mu[:, :4].reshape(n, 2, 2), mu[:, 4:], variances=(var[:, :4], var[:, 4:]))


@pytest.fixture
def with_prior(checkpoint, tmp_path):
    """The session checkpoint with a full-rank code prior fitted to its training windows' codes."""
    from midistruct.cli import main

    folder = shutil.copytree(checkpoint, tmp_path / "model")
    assert main(["prior", str(folder), "--rank", "1000", "--threads", "1"]) == 0
    return folder


def _batches(folder, n: int = 16):
    from midistruct.model.checkpoint import load_checkpoint
    from midistruct.shards.dataset import WindowDataset, collate

    model, tokenizer, meta = load_checkpoint(folder)
    ds = WindowDataset([meta["run_config"]["data"]["output"]], "train")
    return model, tokenizer, [collate([ds[i] for i in range(n)])]


def test_unrounded_nll_is_the_teacher_forced_nll_and_fine_rounding_keeps_it(with_prior, checkpoint, tmp_path,
                                                                              capsys):
    from midistruct.config import load_config
    from midistruct.model.prior import load_prior
    from midistruct.training import validation
    from midistruct.training.loop import Trainer

    model, tokenizer, batches = _batches(with_prior)
    found = measure_code_length(model, load_prior(with_prior), batches, steps=(1e-4, 1e4))
    tf = validation.teacher_forced(model, batches, device="cpu", autocast=contextlib.nullcontext)
    per_window = tf["recon_nll_per_token"] * found["tokens_per_window"] / math.log(2)
    assert found["unquantized_nll_bits"] == pytest.approx(per_window, rel=1e-4)
    assert found["step_0.0001.nll_bits"] == pytest.approx(found["unquantized_nll_bits"], rel=1e-3)
    assert found["step_0.0001.rate_bits"] > 100 and found["step_10000.rate_bits"] < 1e-3
    for s in ("0.0001", "10000"):
        parts = found[f"step_{s}.rate_bits"] + found[f"step_{s}.nll_bits"]
        assert found[f"step_{s}.total_bits"] == pytest.approx(parts)
    assert found["best_total_bits"] == min(found["step_0.0001.total_bits"], found["step_10000.total_bits"])
    assert "lm_nll_bits" not in found

    # a plain LM on the same shards judges the same windows: its own NLL, exactly
    run = tmp_path / "lm"
    cfg = load_config("tiny", [f"data.output={checkpoint.parent.parent / 'data'}", f"train.run_dir={run}",
                               "train.threads=1", "model.latent_mode=none", "model.encoder_layers=0",
                               "train.max_steps=1", "train.eval_every=1", "train.save_every=1"])
    Trainer(cfg, progress=False).run()
    from midistruct.model.checkpoint import load_checkpoint

    lm = load_checkpoint(run / "last")[0]
    judged = measure_code_length(model, load_prior(with_prior), batches, steps=(1.0,), judge=lm)
    lm_tf = validation.teacher_forced(lm, batches, device="cpu", autocast=contextlib.nullcontext)
    assert judged["lm_nll_bits"] == pytest.approx(lm_tf["recon_nll_per_token"] * judged["tokens_per_window"]
                                                  / math.log(2), rel=1e-4)
    assert judged["best_total_over_lm"] == pytest.approx(judged["best_total_bits"] / judged["lm_nll_bits"])
    elbo = measure_elbo(model, load_prior(with_prior), batches, judge=lm)  # the VAE's bounds over the same LM
    assert elbo["lm_nll_bits"] == pytest.approx(judged["lm_nll_bits"])
    for name in ("normal", "prior"):
        assert elbo[f"neg_elbo_{name}_over_lm"] == pytest.approx(elbo[f"neg_elbo_{name}_bits"] / elbo["lm_nll_bits"])
        assert 0 < elbo[f"neg_elbo_{name}_over_lm_se"] < elbo[f"neg_elbo_{name}_over_lm"]
    from midistruct.cli import main

    assert main(["evaluate", str(run / "last"), "--windows", "4", "--free-run", "0", "--interpolations", "0",
                 "--split", "train", "--threads", "1", "--code-length"]) == 2  # an LM is a judge, not a subject
    assert "is a plain LM" in capsys.readouterr().err


def test_evaluate_code_length_from_the_command_line_and_its_refusals(with_prior, checkpoint, capsys):
    import json

    from midistruct.cli import main

    args = ["evaluate", str(with_prior), "--windows", "8", "--free-run", "0", "--interpolations", "0",
            "--sample-temperature", "0", "--split", "train", "--threads", "1"]
    assert main(args + ["--code-length"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["code_length.windows"] == 8 and out["code_length.best_step"] in DEFAULT_STEPS
    # a VAE (the session checkpoint): its ELBO under N(0, I) and under the prior fitted to its posteriors, too
    assert out["code_length.neg_elbo_normal_bits"] == pytest.approx(out["neg_elbo_bits_per_segment"], rel=1e-4)
    assert out["code_length.neg_elbo_prior_bits"] > out["code_length.recon_nll_bits"]
    assert main(args) == 0
    assert "code_length.windows" not in json.loads(capsys.readouterr().out)  # only when asked
    # no prior: the session checkpoint (a VAE) is told that its ELBO is its code length
    assert main(["evaluate", str(checkpoint), "--windows", "8", "--free-run", "0", "--interpolations", "0",
                 "--split", "train", "--threads", "1", "--code-length"]) == 2
    assert "negative ELBO" in capsys.readouterr().err


def test_a_vaes_elbo_under_the_unit_normal_and_under_its_fitted_prior(with_prior, tmp_path):
    """The session checkpoint is a VAE: `midistruct prior` fits its Gaussian to posterior draws, and measure_elbo's
    bound under N(0, I) is the teacher-forced negative ELBO (the same seeded draws)."""
    from midistruct.model.prior import load_prior
    from midistruct.training import validation

    prior = load_prior(with_prior)
    assert prior.posterior  # a VAE's prior is its aggregate posterior
    model, _, batches = _batches(with_prior)
    found = measure_elbo(model, prior, batches)
    tf = validation.teacher_forced(model, batches, device="cpu", autocast=contextlib.nullcontext)
    assert found["neg_elbo_normal_bits"] == pytest.approx(tf["neg_elbo_bits_per_segment"], rel=1e-4)
    assert found["kl_normal_bits"] == pytest.approx(tf["kl_bits_per_segment"], rel=1e-4)
    assert found["recon_nll_bits"] == pytest.approx(
        tf["elbo_recon_nll_per_token"] * found["tokens_per_window"] / math.log(2), rel=1e-4)
    assert found["mean_code_nll_bits"] == pytest.approx(
        tf["recon_nll_per_token"] * found["tokens_per_window"] / math.log(2), rel=1e-4)
    assert found["kl_prior_bits"] > 0 and math.isfinite(found["kl_prior_bits"])
    assert found["neg_elbo_prior_bits"] == pytest.approx(found["recon_nll_bits"] + found["kl_prior_bits"])
    for name in ("normal", "prior"):  # the standard error of the mean over 16 windows: finite, below the mean
        assert 0 < found[f"neg_elbo_{name}_bits_se"] < found[f"neg_elbo_{name}_bits"]
    one = measure_elbo(model, prior, [{k: v[:1] for k, v in batches[0].items()}])
    assert math.isnan(one["neg_elbo_prior_bits_se"])  # one window: no spread to measure
    prior.posterior = False  # a prior fitted to the means only (older files): refused, with the fix named
    with pytest.raises(CodeLengthError, match="midistruct prior"):
        measure_elbo(model, prior, batches)


@pytest.mark.shared_data
def test_a_vaes_elbo_on_a_real_tune_counts_a_short_window_under_the_marginal(with_prior, shared_datasets):
    """Real music: a Nottingham tune's windows through the session VAE, its last window cut to one bar. The bound
    is finite, and the short window is charged the KL to the prior's marginal over the codes it has."""
    from midistruct.evaluation.code_length import _posterior, prior_gaussian
    from midistruct.generation.pipeline import MidiStruct
    from midistruct.shards.dataset import window_batch

    tune = sorted((shared_datasets / "nottingham" / "midi" / "melody").glob("*.mid"))[3]
    ms = MidiStruct.from_pretrained(with_prior)
    windows = [w for w in ms.windows(str(tune)) if ms.vocab.count_bars(w) == ms.bars][:6]
    assert len(windows) == 6, tune
    short = windows[0][: ms.vocab.bar_starts(windows[0])[1]]  # the first bar alone
    batch = window_batch([*windows, short], ms.vocab)
    found = measure_elbo(ms.model, ms.prior, [batch])
    assert all(math.isfinite(v) for v in found.values())
    assert found["recon_nll_bits"] > 0 and found["kl_normal_bits"] > 0
    with torch.no_grad():
        latents = ms.model.encode_batch(batch, sample=False)
    mu, var, present = _posterior(latents, ms.prior)
    assert present[-1].sum() == ms.prior.bar_dim + ms.prior.segment_dim and present[:-1].all()
    mean, cov, _ = prior_gaussian(ms.prior)
    keep = present[-1]
    alone = kl_to_gaussian(mu[-1:, keep], var[-1:, keep], mean[keep], cov[keep][:, keep])
    assert kl_to_gaussian(mu, var, mean, cov, present)[-1].item() == pytest.approx(alone.item())


@pytest.mark.shared_data
def test_the_shipped_melody_model_on_a_real_tune(shared_datasets):
    """Real music: a Nottingham tune's windows through the shipped folk-2bar. Finely rounded codes keep the notes
    (the decoder's NLL stays within a bit of the unrounded codes'); codes rounded to the prior's mean lose them."""
    from midistruct.generation.pipeline import MidiStruct
    from midistruct.model import pretrained
    from midistruct.shards.dataset import window_batch

    if "folk-2bar" not in pretrained.names():
        pytest.skip("the shipped folk-2bar is not installed")
    tune = sorted((shared_datasets / "nottingham" / "midi" / "melody").glob("*.mid"))[0]
    ms = MidiStruct.from_pretrained("folk-2bar")
    moved, _ = ms.to_model_key(ms.windows(str(tune))[:12])
    found = measure_code_length(ms.model, ms.prior, [window_batch(moved, ms.vocab)], steps=(0.5, 64.0))
    assert found["unquantized_nll_bits"] < 0.3 * found["tokens_per_window"]  # the codes hold the window
    assert found["step_0.5.nll_bits"] < found["unquantized_nll_bits"] + 1.0
    assert found["step_64.nll_bits"] > 5 * found["step_0.5.nll_bits"] + 20
    assert found["step_0.5.rate_bits"] > 100 > found["step_64.rate_bits"]
    assert found["bank_0.5.rate_bits"] > 2 * math.log2(len(ms.prior.bank))  # a bank index per bar, then the segment


def test_rate_finetune_starts_the_vae_at_the_deterministic_models_codes(checkpoint, tmp_path):
    """docs/scripts/rate_finetune.py: an AE's weights in a VAE of the same config give posterior means equal to the
    AE's codes and log-variances 2 ln sigma0, so the fine-tune starts from the model it was given."""
    import importlib.util
    from pathlib import Path

    from midistruct.config import load_config
    from midistruct.model.checkpoint import load_checkpoint
    from midistruct.shards.dataset import WindowDataset, collate
    from midistruct.training.loop import Trainer

    script = Path(__file__).resolve().parents[1] / "docs" / "scripts" / "rate_finetune.py"
    spec = importlib.util.spec_from_file_location("rate_finetune", script)
    rate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rate)
    data = checkpoint.parent.parent / "data"
    run = tmp_path / "ae"
    Trainer(load_config("tiny", [f"data.output={data}", f"train.run_dir={run}", "train.threads=1",
                                 "model.latent_mode=ae", "train.max_steps=1", "train.eval_every=1",
                                 "train.save_every=1"]), progress=False).run()
    ae = load_checkpoint(run / "last")[0]
    vae = Trainer(load_config("tiny", [f"data.output={data}", f"train.run_dir={tmp_path / 'vae'}", "train.threads=1",
                                       "model.latent_mode=vae"]), progress=False).model.eval()
    vae.load_state_dict(rate.variational_state(ae.state_dict(), vae, sigma0=0.5))
    batch = collate([WindowDataset([data], "train")[i] for i in range(4)])
    with torch.no_grad():
        want, got = ae.encode_batch(batch, sample=False), vae.encode_batch(batch, sample=False)
    assert torch.allclose(got.mu_segment, want.z_segment, atol=1e-6) and torch.allclose(got.mu_bar, want.z_bar, atol=1e-6)
    assert torch.allclose(got.logvar_segment, torch.full_like(got.logvar_segment, 2 * math.log(0.5)))
    with pytest.raises(ValueError, match="in the AE"):
        rate.variational_state({k: v[:1] if v.ndim else v for k, v in ae.state_dict().items()}, vae, sigma0=0.5)


def test_a_vae_with_an_arrangement_block_gets_a_prior_over_its_means(arrangement_model, tmp_path, capsys):
    """Its bar codes also hold the arrangement code, which has no posterior variance: the prior is fitted to the
    codes (the content and arrangement parts the decoder reads; it was refused for their width until the fifteenth
    session), not the aggregate posterior, and --code-length refuses the block."""
    from midistruct.cli import main
    from midistruct.model.prior import load_prior

    folder = shutil.copytree(arrangement_model, tmp_path / "model")
    assert main(["prior", str(folder), "--threads", "1"]) == 0
    prior = load_prior(folder)
    assert not prior.posterior and prior.bar_dim == 8 + 4
    capsys.readouterr()
    assert main(["evaluate", str(folder), "--windows", "4", "--free-run", "0", "--interpolations", "0",
                 "--split", "train", "--threads", "1", "--code-length"]) == 2
    assert "arrangement codes" in capsys.readouterr().err

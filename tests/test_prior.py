"""The fitted code prior (midistruct.model.prior): the Gaussian, its file, and sampling through the pipeline."""

from __future__ import annotations

import shutil

import pytest
import torch

from midistruct.model.prior import PRIOR_FILE, CodePrior, PriorError, load_prior


def _correlated(n: int, bars: int = 2, bar_dim: int = 3, segment_dim: int = 4, seed: int = 0):
    """``n`` windows' codes from a known Gaussian with strong correlations and a non-zero mean."""
    g = torch.Generator().manual_seed(seed)
    d = bars * bar_dim + segment_dim
    mix = torch.randn(d, d, generator=g)
    x = torch.randn(n, d, generator=g) @ mix.T + torch.arange(d, dtype=torch.float32)
    return x[:, : bars * bar_dim].reshape(n, bars, bar_dim), x[:, bars * bar_dim :], mix @ mix.T


def test_full_rank_fit_recovers_mean_and_covariance_and_samples_follow_it():
    z_bar, z_seg, cov = _correlated(20000)
    prior = CodePrior.fit(z_bar, z_seg, rank=100)  # K capped at D = 10: the sample covariance itself
    assert prior.factor.shape == (10, 10) and prior.dim == 10
    fitted = prior.factor @ prior.factor.T + torch.diag(prior.residual**2)
    x = torch.cat([z_bar.reshape(len(z_bar), -1), z_seg], 1)
    assert torch.allclose(prior.mean, x.mean(0), atol=1e-4)
    assert torch.allclose(fitted, torch.cov(x.T), rtol=1e-3, atol=1e-3)
    assert torch.allclose(fitted, cov, rtol=0.1, atol=0.3 * cov.diag().mean().item() ** 0.5)
    s_bar, s_seg = prior.sample(20000, generator=torch.Generator().manual_seed(1))
    assert s_bar.shape == (20000, 2, 3) and s_seg.shape == (20000, 4)
    drawn = torch.cat([s_bar.reshape(20000, -1), s_seg], 1)
    scale = cov.diag().sqrt()
    assert ((drawn.mean(0) - prior.mean).abs() / scale).max() < 0.05
    corr = lambda c: c / torch.outer(c.diag().sqrt(), c.diag().sqrt())  # noqa: E731
    assert (corr(torch.cov(drawn.T)) - corr(fitted)).abs().max() < 0.05


def test_low_rank_fit_keeps_every_coordinates_variance():
    z_bar, z_seg, _ = _correlated(3000)
    prior = CodePrior.fit(z_bar, z_seg, rank=3)
    assert prior.factor.shape == (10, 3)
    x = torch.cat([z_bar.reshape(len(z_bar), -1), z_seg], 1)
    variance = (prior.factor**2).sum(1) + prior.residual**2
    assert torch.allclose(variance, x.var(0), rtol=1e-4)
    # the rank-3 part holds the leading directions: most of the total variance
    assert (prior.factor**2).sum() > 0.6 * x.var(0).sum()


def test_fit_refuses_too_few_windows_and_bad_shapes():
    z_bar, z_seg, _ = _correlated(5)
    with pytest.raises(PriorError, match="at least 2 windows"):
        CodePrior.fit(z_bar[:1], z_seg[:1])
    with pytest.raises(PriorError, match="mismatched"):
        CodePrior.fit(z_bar, z_seg[:3])
    with pytest.raises(PriorError, match="rank"):
        CodePrior.fit(z_bar, z_seg, rank=0)


def test_save_load_round_trip_and_bad_files(tmp_path):
    z_bar, z_seg, _ = _correlated(50)
    prior = CodePrior.fit(z_bar, z_seg, rank=4)
    back = CodePrior.load(prior.save(tmp_path / PRIOR_FILE))
    assert (back.bars, back.bar_dim, back.segment_dim, back.windows) == (2, 3, 4, 50)
    for a, b in [(back.mean, prior.mean), (back.factor, prior.factor), (back.residual, prior.residual)]:
        assert torch.equal(a, b)
    assert load_prior(tmp_path).windows == 50
    assert load_prior(tmp_path / "nowhere") is None
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(PriorError, match="unreadable code prior") as err:
        CodePrior.load(tmp_path / "junk.safetensors")
    assert "\n" not in str(err.value)
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(PriorError, match="not a code-prior file"):
        CodePrior.load(tmp_path / "other.safetensors")
    with pytest.raises(PriorError, match="the model has 4 x 3"):
        prior.check(bars=4, bar_dim=3, segment_dim=4)


@pytest.fixture
def own_checkpoint(checkpoint, tmp_path):
    """A copy of the session's tiny checkpoint, to write a prior into."""
    return shutil.copytree(checkpoint, tmp_path / "copy")


def test_a_deterministic_model_samples_from_its_fitted_prior(own_checkpoint, monkeypatch, capsys):
    from midistruct.cli import main
    from midistruct.generation.pipeline import InputError, MidiStruct

    ms = MidiStruct.from_pretrained(own_checkpoint)
    assert ms.prior is None
    monkeypatch.setattr(ms.model.config, "latent_mode", "ae")  # as if its codes were deterministic
    with pytest.raises(InputError, match="midistruct prior CHECKPOINT") as err:
        ms.sample(1, seed=0)
    assert "\n" not in str(err.value)
    assert main(["prior", str(own_checkpoint), "--device", "cpu", "--rank", "4"]) == 0
    assert "wrote" in capsys.readouterr().out and (own_checkpoint / PRIOR_FILE).exists()
    ms = MidiStruct.from_pretrained(own_checkpoint)
    monkeypatch.setattr(ms.model.config, "latent_mode", "ae")
    prior = ms.prior
    assert prior is not None and prior.bars == ms.bars and prior.windows >= 2
    # the prior sits where the codes of real windows do, not at N(0, I)
    z = ms.sample_latents(4000)
    assert z.z_bar.shape == (4000, ms.bars, ms.model.config.latent_dim_bar)
    std = ((prior.factor**2).sum(1) + prior.residual**2).sqrt()[-prior.segment_dim :]
    assert ((z.z_segment.mean(0) - prior.mean[-prior.segment_dim :]).abs() < 5 * std / 4000**0.5 + 1e-6).all()
    assert ((z.z_segment.std(0) - std).abs() < 0.1 * std + 1e-6).all()
    scores = ms.sample(2, seed=0, bars=1, temperature=0.0)
    assert len(scores) == 2 and all(hasattr(s, "tracks") for s in scores)  # decoded to scores
    # what sample decodes are the prior's codes: at scale 0, the prior's mean, decoded as decode() does
    def notes(score):
        return [(n.time, n.pitch, n.duration) for t in score.tracks for n in t.notes]

    torch.manual_seed(1)
    mean = ms.sample_latents(1, bars=1, scale=0.0)
    assert torch.equal(mean.z_segment[0], prior.mean[-prior.segment_dim :].float())
    (at_mean,) = ms.sample(1, seed=0, bars=1, temperature=0.0, prior_scale=0.0)
    assert notes(at_mean) == notes(ms.decode(mean, temperature=0.0))


def test_prior_of_another_shape_is_refused(own_checkpoint):
    from midistruct.generation.pipeline import InputError, MidiStruct

    z_bar, z_seg, _ = _correlated(20, bars=3, bar_dim=2, segment_dim=2)
    CodePrior.fit(z_bar, z_seg).save(own_checkpoint / PRIOR_FILE)
    with pytest.raises(InputError, match="code prior is over 3 bar codes"):
        MidiStruct.from_pretrained(own_checkpoint)

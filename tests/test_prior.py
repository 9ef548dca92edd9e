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


def _is_row_of(rows: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """(N,) whether each of ``rows`` (N, Zb) equals some row of ``bank`` (B, Zb)."""
    return (rows[:, None, :] == bank[None]).all(-1).any(1)


def test_bank_keeps_real_bar_codes_and_sampling_snaps_to_them(tmp_path):
    z_bar, z_seg, _ = _correlated(300, bars=4, bar_dim=3)
    prior = CodePrior.fit(z_bar, z_seg, rank=4, bank=50, seed=3)
    assert prior.bank.shape == (50, 3)
    assert _is_row_of(prior.bank, z_bar.reshape(-1, 3)).all()  # real bar codes
    assert len({tuple(r.tolist()) for r in prior.bank}) == 50  # drawn without replacement
    assert torch.equal(CodePrior.fit(z_bar, z_seg, rank=4, bank=50, seed=3).bank, prior.bank)  # seeded
    g = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    snapped, seg = prior.sample(64, generator=g())
    drawn, seg_free = prior.sample(64, generator=g(), snap=False)
    assert _is_row_of(snapped.reshape(-1, 3), prior.bank).all()
    assert not _is_row_of(drawn.reshape(-1, 3), prior.bank).any()
    assert torch.equal(seg, seg_free)  # the segment code is the Gaussian's either way
    # each bar goes to its nearest bank bar
    near = prior.bank[torch.cdist(drawn.reshape(-1, 3), prior.bank).argmin(1)]
    assert torch.equal(snapped.reshape(-1, 3), near)
    assert CodePrior.fit(z_bar, z_seg, rank=4, bank=10_000).bank.shape == (1200, 3)  # all the bars there are
    assert CodePrior.fit(z_bar, z_seg, rank=4).bank is None
    assert torch.equal(CodePrior.fit(z_bar, z_seg, rank=4).snap(drawn), drawn)  # no bank: as drawn
    with pytest.raises(PriorError, match="bank must be >= 0"):
        CodePrior.fit(z_bar, z_seg, bank=-1)
    # the file keeps the bank; float16 halves the bytes
    back = CodePrior.load(prior.save(tmp_path / "full.safetensors"))
    assert torch.equal(back.bank, prior.bank)
    half = CodePrior.load(prior.save(tmp_path / "half.safetensors", half=True))
    assert torch.allclose(half.bank, prior.bank, rtol=1e-3) and torch.allclose(half.factor, prior.factor, rtol=1e-3, atol=1e-3)
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    assert {t.dtype for t in load_file(str(tmp_path / "half.safetensors")).values()} == {torch.float16}
    tensors = load_file(str(tmp_path / "full.safetensors"))

    with safe_open(str(tmp_path / "full.safetensors"), framework="pt") as f:
        meta = f.metadata()
    save_file({**tensors, "bank": torch.zeros(5, 2)}, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(PriorError, match="does not fit bar codes of 3"):
        CodePrior.load(tmp_path / "bad.safetensors")


def test_tagged_samples_snap_to_bank_bars_of_their_values(tmp_path):
    g = torch.Generator().manual_seed(0)
    n = 400
    labels = ["minor" if i % 2 else "major" for i in range(n)]
    rare = ["dorian" if i < 30 else None if i % 7 == 0 else "ionian" for i in range(n)]
    z_bar = torch.randn(n, 2, 3, generator=g)
    z_bar[:, :, 0] += torch.tensor([4.0 if v == "minor" else -4.0 for v in labels])[:, None]
    z_seg = torch.randn(n, 2, generator=g)
    prior = CodePrior.fit(z_bar, z_seg, rank=4, tags={"mode": labels, "church": rare}, bank=100)
    assert sorted(prior.bank_tags) == ["church", "mode"] and len(prior.bank_tags["mode"]) == 100
    minor = prior.bank_rows({"mode": "minor"})
    assert 20 <= len(minor) < 100 and all(prior.bank_tags["mode"][i] == "minor" for i in minor)
    assert (prior.bank[minor][:, 0] > 0).all()  # the minor windows' bars
    snapped, _ = prior.sample(200, tags={"mode": "minor"}, tag_strength=0.0)  # the Gaussian's mean: between the two
    assert (snapped[..., 0] > 0).all()  # yet every bar is a minor window's
    assert len(prior.bank_rows({"church": "dorian"})) == 100  # fewer than MIN_BANK bank bars have it: the whole bank
    # a value too rare to apply leaves the others applied
    assert torch.equal(prior.bank_rows({"church": "dorian", "mode": "minor"}), minor)
    assert len(prior.bank_rows({"tune_type": "reel"})) == 100  # a tag the bank does not record is no filter
    back = CodePrior.load(prior.save(tmp_path / PRIOR_FILE, half=True))  # the bank's tags survive the file
    assert back.bank_tags == prior.bank_tags and None in back.bank_tags["church"]
    assert torch.equal(back.bank_rows({"mode": "minor"}), minor)


def test_prior_command_keeps_a_bank_and_sample_can_leave_it(own_checkpoint, monkeypatch, tmp_path, capsys):
    import json

    from safetensors.torch import load_file

    from midistruct.cli import main
    from midistruct.generation.pipeline import MidiStruct

    assert main(["prior", str(own_checkpoint), "--device", "cpu", "--rank", "4", "--bank", "6", "--half"]) == 0
    assert "kept 6 real bar codes" in capsys.readouterr().out
    written = load_file(str(own_checkpoint / PRIOR_FILE))
    assert {t.dtype for k, t in written.items() if not k.startswith("bank_tag.")} == {torch.float16}
    assert written["bank_tag.meter"].shape == (6,)  # the bank knows its bars' meters
    ms = MidiStruct.from_pretrained(own_checkpoint)
    assert ms.prior.bank.shape == (6, ms.model.config.latent_dim_bar)
    z = ms.sample_latents(5)
    assert _is_row_of(z.z_bar.reshape(-1, z.z_bar.shape[-1]), ms.prior.bank).all()
    assert not _is_row_of(ms.sample_latents(5, snap=False).z_bar.reshape(-1, z.z_bar.shape[-1]), ms.prior.bank).any()
    for flags, snapped in [([], True), (["--no-snap"], False)]:
        out = tmp_path / f"out{len(flags)}"
        assert main(["sample", str(own_checkpoint), "-n", "2", "--seed", "0", "--device", "cpu", "-o", str(out),
                     *flags]) == 0
        record = json.loads((out / "generation.json").read_text())
        assert record["snap"] is snapped and len(list(out.glob("*.mid"))) == 2
    assert main(["prior", str(own_checkpoint), "--device", "cpu", "--rank", "4", "--bank", "0"]) == 0
    assert MidiStruct.from_pretrained(own_checkpoint).prior.bank is None


def test_pipeline_snaps_within_the_samples_meter(own_checkpoint):
    from midistruct.generation.pipeline import MidiStruct

    ms = MidiStruct.from_pretrained(own_checkpoint)
    cfg = ms.model.config
    n, g = 300, torch.Generator().manual_seed(0)
    meters = ["3/4" if i % 3 == 0 else "4/4" for i in range(n)]
    z_bar = torch.randn(n, ms.bars, cfg.latent_dim_bar, generator=g)
    z_bar[:, :, 0] += torch.tensor([5.0 if m == "3/4" else -5.0 for m in meters])[:, None]
    z_seg = torch.randn(n, cfg.latent_dim_segment, generator=g)
    prior = CodePrior.fit(z_bar, z_seg, rank=4, bank=200, bank_tags={"meter": meters})
    assert prior.tags == {} and len(prior.bank_tags["meter"]) == 200  # the bank records the meter, no tag group
    ms.set_prior(prior)
    for meter, sign in (("3/4", 1), ("4/4", -1)):
        z = ms.sample_latents(40, meter=meter)
        assert (sign * z.z_bar[..., 0] > 0).all() and z.time_signatures == [meter] * 40
    mixed = ms.sample_latents(40, meter="3/4", snap=False)
    assert (mixed.z_bar[..., 0] < 0).any()  # the Gaussian alone mixes the two
    # a window in each of several meters, in the order asked (what the sample statistics draw), one call per meter
    asked = ["4/4", "3/4", "4/4", "3/4", "3/4"]
    calls, draw = [], ms.sample_latents
    ms.sample_latents = lambda n, **kw: calls.append((n, kw["meter"])) or draw(n, **kw)
    z = ms.sample_latents_in_meters(asked)
    del ms.sample_latents
    assert calls == [(3, "3/4"), (2, "4/4")] and z.time_signatures == asked and z.z_bar.shape[0] == 5
    assert [bool((w[..., 0] > 0).all()) for w in z.z_bar] == [m == "3/4" for m in asked]
    # the prior alone snaps within a meter too
    assert (prior.sample(30, meter="4/4")[0][..., 0] < 0).all()
    with pytest.raises(PriorError, match="bank tag meter: 3 labels"):
        CodePrior.fit(z_bar, z_seg, bank=5, bank_tags={"meter": meters[:3]})




def test_interpolation_snaps_its_inner_steps_to_real_bars_of_their_meter(own_checkpoint, tmp_path):
    """``interpolate(snap=True)``: the ends exact, every inner step's bar codes rows of the bank, in the meter of the
    step (a bank of 3/4 bars marked by a large first number and 4/4 bars by a small one); without a bank, a clear
    error; ``interpolate --snap`` records it."""
    import json

    from scores import write_corpus

    from midistruct.cli import main
    from midistruct.generation.pipeline import InputError, MidiStruct

    ms = MidiStruct.from_pretrained(own_checkpoint)
    a, b = write_corpus(tmp_path / "midi", n=2, bars=4)
    with pytest.raises(InputError, match="bank of real bar codes"):
        ms.interpolate(a, b, steps=4, snap=True)
    cfg, g = ms.model.config, torch.Generator().manual_seed(0)
    meters = ["3/4" if i % 2 else "4/4" for i in range(100)]
    z_bar = torch.randn(100, ms.bars, cfg.latent_dim_bar, generator=g)
    z_bar[:, :, 0] = torch.tensor([50.0 if m == "3/4" else -50.0 for m in meters])[:, None]
    ms.set_prior(CodePrior.fit(z_bar, torch.randn(100, cfg.latent_dim_segment, generator=g), rank=4, bank=150,
                               bank_tags={"meter": meters}))
    seen, decode = [], ms.decode_many
    ms.decode_many = lambda latents, **kw: seen.append(latents) or decode(latents, **kw)
    ms.interpolate(a, b, steps=4, snap=True)
    ends = ms._aligned([a, b], tags=None, time_signature=None, downbeat=None)
    path = seen[-1]
    assert torch.equal(path[0].z_bar, ends[0].z_bar) and torch.equal(path[-1].z_bar, ends[1].z_bar)
    for step in path[1:-1]:
        assert _is_row_of(step.z_bar.reshape(-1, cfg.latent_dim_bar), ms.prior.bank).all()
        for window, meter in zip(step.z_bar, step.time_signatures):
            assert (window[:, 0] == (50.0 if meter == "3/4" else -50.0)).all()  # a bar of the window's own meter
    ms.interpolate(a, b, steps=4)
    assert not _is_row_of(seen[-1][1].z_bar.reshape(-1, cfg.latent_dim_bar), ms.prior.bank).any()
    assert main(["prior", str(own_checkpoint), "--device", "cpu", "--rank", "4", "--bank", "6"]) == 0
    out = tmp_path / "out"
    assert main(["interpolate", str(own_checkpoint), str(a), str(b), "--steps", "3", "--snap", "--no-audio",
                 "--device", "cpu", "-o", str(out)]) == 0
    assert json.loads((out / "generation.json").read_text())["snap"] is True
    assert sorted(p.name for p in out.glob("*.mid")) == [f"{a.stem}_to_{b.stem}.slerp.snap.0{i}.mid" for i in range(3)]

@pytest.mark.parametrize("name, size", [("folk-2bar", 3000), ("folk-16bar", 1000)])
def test_the_shipped_melody_models_snap_to_real_bars_of_the_samples_meter(name, size):
    from midistruct.generation.pipeline import MidiStruct

    ms = MidiStruct.from_pretrained(name)
    prior = ms.prior
    assert prior.bank.shape == (size, ms.model.config.latent_dim_bar) and len(prior.bank_tags["meter"]) == size
    torch.manual_seed(0)
    z = ms.sample_latents(4, meter="6/8")
    jig_bars = prior.bank[prior.bank_rows({"meter": "6/8"})]
    assert len(jig_bars) >= 20 and _is_row_of(z.z_bar.reshape(-1, jig_bars.shape[1]), jig_bars).all()
    scores = ms.sample(2, seed=0, temperature=0.0, bars=2, meter="6/8")
    assert all(sum(len(t.notes) for t in s.tracks) > 0 for s in scores)  # decoded to notes


@pytest.mark.shared_data
def test_the_shipped_folk_2bar_interpolates_two_real_jigs_through_real_jig_bars(shared_datasets):
    """Real music: two Nottingham jigs; with ``snap`` every inner step's bars are bank bars of 6/8 windows, the ends
    are the tunes' own codes, and every step decodes to notes."""
    from midistruct.generation.pipeline import MidiStruct

    ms = MidiStruct.from_pretrained("folk-2bar")
    a, b = sorted((shared_datasets / "nottingham" / "midi" / "melody").glob("jigs*.mid"))[:2]
    seen, decode = [], ms.decode_many
    ms.decode_many = lambda latents, **kw: seen.append(latents) or decode(latents, **kw)
    scores = ms.interpolate(a, b, steps=4, snap=True, temperature=0.0)
    jig_bars = ms.prior.bank[ms.prior.bank_rows({"meter": "6/8"})]
    for step in seen[-1][1:-1]:
        assert set(step.time_signatures) == {"6/8"}
        assert _is_row_of(step.z_bar.reshape(-1, jig_bars.shape[1]), jig_bars).all()
    assert not _is_row_of(seen[-1][0].z_bar.reshape(-1, jig_bars.shape[1]), ms.prior.bank).all()  # A's own codes
    assert all(sum(len(t.notes) for t in s.tracks) > 0 for s in scores)

"""The transformer autoencoder on a tiny config (d_model 32, 2 + 2 layers, vocabulary 50, Bar id 4)."""

import itertools
import math

import pytest
import torch

from midistruct.model import (
    CONDITIONINGS,
    MidiStructConfig,
    MidiStructModel,
    count_bars,
    latent_usage,
    shift_right,
)
from midistruct.model.modeling import count_slots, gaussian_kl

BAR, EOS, PAD, BOS, MASK = 4, 2, 0, 1, 3
VARIANTS = list(itertools.product(("vae", "ae"), (True, False), sorted(CONDITIONINGS)))


def variant_id(variant) -> str:
    mode, bars, conditioning = variant
    return f"{mode}-{'bars' if bars else 'segment_only'}-{conditioning}"


def make_model(*, latent_mode="vae", bar_latents=True, conditioning="add", seed=0, **overrides) -> MidiStructModel:
    torch.manual_seed(seed)
    if conditioning == "plan":  # it reads the sequence head (by attention: the issue-14 recipe)
        overrides = {"sequence_head": 1.0, "sequence_head_memory": 4, **overrides}
    config = MidiStructConfig.tiny(
        vocab_size=50, latent_mode=latent_mode, bar_latents=bar_latents, conditioning=conditioning, **overrides
    )
    return MidiStructModel(config)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: thread hand-offs cost more than they save, badly so on a shared 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    """Two right-padded segments as the data pipeline makes them: 2 bars (12 tokens) and 1 bar (7 tokens)."""
    rows = [
        [BAR, 10, 11, 12, 13, 14, BAR, 15, 16, 17, 18, EOS],
        [BAR, 20, 21, 22, 23, 24, EOS, PAD, PAD, PAD, PAD, PAD],
    ]
    input_ids = torch.tensor(rows)
    attention_mask = (input_ids != PAD).long()
    bar_ids = torch.tensor([[0] * 6 + [1] * 6, [0] * 12])
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "bar_ids": bar_ids, "labels": labels}


# --------------------------------------------------------------------------- forward


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_forward_shapes_and_finite_loss(variant, batch):
    mode, bars, conditioning = variant
    out = make_model(latent_mode=mode, bar_latents=bars, conditioning=conditioning)(**batch, beta=0.5)
    assert out.logits.shape == (2, 12, 50)
    assert out.z_segment.shape == out.mu_segment.shape == (2, 16)
    assert torch.isfinite(out.loss) and out.loss.dim() == 0
    heads = out.seq_loss if conditioning == "plan" else 0.0  # plan comes with the sequence head
    assert torch.allclose(out.loss, out.recon_loss + 0.5 * out.kl_loss + heads)
    if bars:
        assert out.z_bar.shape == out.mu_bar.shape == (2, 2, 8)
        assert out.bar_mask.tolist() == [[True, True], [True, False]]
    else:
        assert out.z_bar is None and out.bar_mask is None
    assert (out.logvar_segment is None) == (mode == "ae")


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_every_parameter_gets_a_gradient(variant, batch):
    mode, bars, conditioning = variant
    model = make_model(latent_mode=mode, bar_latents=bars, conditioning=conditioning).train()
    model(**batch).loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_output_tuple_starts_with_loss(batch):
    out = make_model()(**batch)
    assert out[0] is out.loss


def test_forward_rejects_a_misspelt_keyword(batch):
    """A typo (``labelz``) fails instead of silently returning no loss; transformers' generic flags pass."""
    model = make_model()
    with pytest.raises(TypeError, match="labelz"):
        model(input_ids=batch["input_ids"], labelz=batch["labels"])
    out = model(**batch, output_attentions=False, output_hidden_states=False)
    assert out.loss is not None


def test_word_dropout_masks_inputs_only_in_training():
    model = make_model(word_dropout=0.5)
    ids = torch.tensor([[BOS] + list(range(10, 40)) + [PAD]])
    dropped = model.word_dropout(ids)
    assert set(dropped[dropped != ids].tolist()) == {MASK}
    assert 0 < (dropped == MASK).sum() < 30
    assert dropped[0, 0] == BOS and dropped[0, -1] == PAD


# --------------------------------------------------------------------------- latents and KL


def test_gaussian_kl_is_zero_at_the_prior():
    assert torch.equal(gaussian_kl(torch.zeros(3, 5), torch.zeros(3, 5)), torch.zeros(3))
    assert gaussian_kl(torch.ones(1, 5), torch.zeros(1, 5)).item() == pytest.approx(2.5)


def test_ae_mode_has_zero_kl(batch):
    out = make_model(latent_mode="ae")(**batch)
    assert out.kl.item() == out.kl_bar.item() == out.kl_segment.item() == out.kl_loss.item() == 0.0
    assert torch.equal(out.loss, out.recon_loss)


def test_plain_lm_mode_has_no_encoder_and_ignores_codes(batch):
    lm = make_model(latent_mode="none", encoder_layers=0, decoder_layers=4)
    assert lm.encoder is None and lm.bottleneck is None
    vae = make_model(encoder_layers=2, decoder_layers=2)
    decoder_params = sum(p.numel() for p in lm.decoder.parameters())
    assert decoder_params == sum(p.numel() for p in lm.parameters())  # the decoder (the head is tied) is all
    assert abs(sum(p.numel() for p in lm.parameters()) - sum(p.numel() for p in vae.parameters())) < 0.2 * sum(
        p.numel() for p in vae.parameters())  # 4 decoder layers weigh about as much as 2 + 2
    out = lm(**batch)
    assert out.kl.item() == out.kl_loss.item() == 0.0 and torch.equal(out.loss, out.recon_loss)
    assert out.z_bar.shape == (2, 2, lm.config.latent_dim_bar) and out.bar_mask.tolist() == [[True, True], [True, False]]
    lm.eval()
    codes = lm.encode(batch["input_ids"], batch["attention_mask"], batch["bar_ids"]).codes()
    noise = {k: torch.randn_like(v) for k, v in codes.items()}
    decoder_inputs = shift_right(batch["input_ids"], bos_token_id=BOS)
    torch.testing.assert_close(lm.decoder_forward(decoder_inputs, **codes).logits,
                               lm.decoder_forward(decoder_inputs, **noise).logits)
    out = lm.generate(max_new_tokens=5, do_sample=False, **codes)
    assert out.shape == (2, 6) and (out[:, 0] == BOS).all()


def test_kl_sums_real_bars_only(batch):
    model = make_model().eval()
    out = model(**batch)
    per_bar = gaussian_kl(out.mu_bar, out.logvar_bar)  # (B, NB)
    expected = (per_bar[0].sum() + per_bar[1, 0]) / 2  # segment 2 has one bar
    assert out.kl_bar.item() == pytest.approx(expected.item(), rel=1e-5)


def test_free_bits_forgive_kl_under_the_allowance(batch):
    out = make_model(free_bits=1000.0)(**batch)
    assert out.kl.item() > 0 and out.kl_loss.item() == 0.0


def test_posterior_mean_in_eval_samples_in_training(batch):
    model = make_model().eval()
    mean = model.encode(batch["input_ids"], batch["attention_mask"], batch["bar_ids"])
    assert torch.equal(mean.z_segment, mean.mu_segment) and torch.equal(mean.z_bar, mean.mu_bar)
    drawn = model.encode(batch["input_ids"], batch["attention_mask"], batch["bar_ids"], sample=True)
    assert not torch.equal(drawn.z_segment, drawn.mu_segment)
    assert not torch.equal(model.train().encode(batch["input_ids"]).z_bar, mean.mu_bar)


def test_encode_defaults_match_the_data_contract(batch):
    model = make_model().eval()
    given = model.encode(batch["input_ids"], batch["attention_mask"], batch["bar_ids"])
    derived = model.encode(batch["input_ids"])
    assert torch.equal(given.z_bar, derived.z_bar) and torch.equal(given.z_segment, derived.z_segment)


def test_latent_usage_counts_dimensions_that_vary():
    mu = torch.zeros(100, 4)
    mu[:, 0] = torch.linspace(-1, 1, 100)
    usage = latent_usage(mu)
    assert usage["active_units"] == 1 and usage["total_units"] == 4 and usage["active_fraction"] == 0.25


# --------------------------------------------------------------------------- the decoder reads the latents


def test_changing_a_latent_changes_the_logits(batch):
    model = make_model().eval()
    latents = model.encode(batch["input_ids"], batch["attention_mask"], batch["bar_ids"])
    decoder_ids = shift_right(batch["input_ids"], bos_token_id=BOS)
    base = model.decoder_forward(decoder_ids, **latents.codes()).logits
    other_segment = model.decoder_forward(decoder_ids, z_bar=latents.z_bar, z_segment=latents.z_segment + 1).logits
    assert not torch.allclose(base, other_segment)
    z_bar = latents.z_bar.clone()
    z_bar[0, 1] += 1.0  # second bar of the first segment
    other_bar = model.decoder_forward(decoder_ids, z_bar=z_bar, z_segment=latents.z_segment).logits
    # "add" conditioning: only the positions whose decoder bar index is 1 read that code (positions 7..11)
    changed = (other_bar - base).abs().amax(-1) > 1e-6  # (B, T)
    assert changed[0].tolist() == [False] * 7 + [True] * 5
    assert not changed[1].any()


def test_decoder_bar_index_is_the_shifted_data_bar_ids(batch):
    decoder_ids = shift_right(batch["input_ids"], bos_token_id=BOS)
    counted = count_bars(decoder_ids, bar_token_ids=BAR)
    expected = shift_right(batch["bar_ids"], bos_token_id=0)
    real = batch["attention_mask"].bool()
    assert torch.equal(counted[real], expected[real])
    assert torch.equal(count_bars(batch["input_ids"], bar_token_ids=BAR)[real], batch["bar_ids"][real])


# --------------------------------------------------------------------------- generation


@pytest.mark.parametrize("conditioning", sorted(CONDITIONINGS))
def test_incremental_decoding_equals_teacher_forcing(conditioning, batch):
    """Feed the segment one token at a time through generate's hook and a KV cache: each step's logits equal
    the full teacher-forced logits, so the bar counting and the cache positions agree with training."""
    model = make_model(conditioning=conditioning).eval()
    latents = model.encode(batch["input_ids"], batch["attention_mask"], batch["bar_ids"])
    full = model(**batch).logits  # (B, T, V)
    decoder_ids = shift_right(batch["input_ids"], bos_token_id=BOS)
    cache, steps = None, []
    for t in range(1, decoder_ids.shape[1] + 1):
        inputs = model.prepare_inputs_for_generation(
            decoder_ids[:, :t], cache=cache, use_cache=True, **latents.codes()
        )  # the cache under the name generate uses
        out = model(**inputs)
        cache = out.cache
        steps.append(out.logits)
    assert steps[0].shape[1] == 1 and steps[-1].shape[1] == 1
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def _reading(model):
    """``model`` with its decoder's memory reads switched on (their output layers start at zero)."""
    torch.manual_seed(1)
    for read in model.decoder.reads or []:
        torch.nn.init.normal_(read.out.weight, std=0.5)
    return model


@pytest.mark.parametrize("conditioning,memory", [(c, 0) for c in sorted(CONDITIONINGS)] + [("add", 3), ("plan", 3)])
def test_generate_with_and_without_cache_agree(conditioning, memory, batch):
    model = _reading(make_model(conditioning=conditioning, decoder_memory=memory)).eval()
    latents = model.encode(batch["input_ids"], batch["attention_mask"], batch["bar_ids"])
    prompt = shift_right(batch["input_ids"], bos_token_id=BOS)[:, :8]  # crosses the first segment's bar line
    kwargs = dict(input_ids=prompt, max_new_tokens=6, do_sample=False, return_dict_in_generate=True)
    kwargs.update(output_logits=True)
    cached = model.generate(**kwargs, **latents.codes(), use_cache=True)
    uncached = model.generate(**kwargs, **latents.codes(), use_cache=False)
    assert torch.equal(cached.sequences, uncached.sequences)
    torch.testing.assert_close(torch.stack(cached.logits), torch.stack(uncached.logits), atol=1e-5, rtol=1e-5)
    # and both equal the teacher-forced logits of the generated sequence
    forced = model.decoder_forward(cached.sequences[:, :-1], **latents.codes()).logits[:, 7:]  # (B, 6, V)
    torch.testing.assert_close(torch.stack(cached.logits, dim=1), forced, atol=1e-5, rtol=1e-5)


def test_cached_decoding_computes_the_plan_once(batch, monkeypatch):
    """The codes do not change while decoding, so the sequence head runs once per generate call, not once per
    token (it made 16-bar decoding minutes long); the tokens are those of the per-token plan."""
    model = make_model(conditioning="plan").eval()
    latents = model.encode(batch["input_ids"], batch["attention_mask"], batch["bar_ids"])
    prompt = shift_right(batch["input_ids"], bos_token_id=BOS)[:, :1]
    kwargs = dict(input_ids=prompt, max_new_tokens=12, do_sample=False, use_cache=True, **latents.codes())
    calls = []
    hidden = model.sequence_head.hidden
    monkeypatch.setattr(model.sequence_head, "hidden", lambda *a, **k: calls.append(k) or hidden(*a, **k))
    once = model.generate(**kwargs)
    assert len(calls) == 1 and calls[0]["n_slots"] == model.config.sequence_slots
    monkeypatch.setattr(type(model), "_plan_for", lambda self, zb, zs, slots, cache: self.plan(zb, zs, slot_ids=slots))
    assert torch.equal(model.generate(**kwargs), once) and len(calls) == 13


def test_output_carries_the_cache_under_the_name_generate_reads(batch):
    """generate reads the output's field named as in its own CausalLMOutputWithPast (``cache`` since
    transformers 5.24, the version pyproject pins) and hands it back to prepare_inputs_for_generation under it."""
    from transformers.cache_utils import Cache
    from transformers.modeling_outputs import CausalLMOutputWithPast

    assert "cache" in CausalLMOutputWithPast.__dataclass_fields__
    model = make_model().eval()
    out = model(**batch, use_cache=True)
    assert "cache" in out and isinstance(out["cache"], Cache) and out.cache is out["cache"]
    assert model(**batch).cache is None  # use_cache off: no cache
    codes = model.encode(batch["input_ids"]).codes()
    ids = torch.cat([shift_right(batch["input_ids"], bos_token_id=BOS), batch["input_ids"][:, -1:]], dim=1)
    cache = out.cache
    inputs = model.prepare_inputs_for_generation(ids, cache=cache, use_cache=True, **codes)
    assert inputs["decoder_input_ids"].shape[1] == 1  # only the token the cache lacks
    step = model(**inputs)
    assert step.cache is cache and cache.get_seq_length() == ids.shape[1]


def test_generate_feeds_each_token_once_with_the_cache(batch):
    """With use_cache, generate gets the cache back from each step (as ``cache``) and
    the decoder reads only the new token; without it, the whole sequence at every step."""
    model = make_model().eval()
    codes = model.encode(batch["input_ids"]).codes()
    fed = []
    hook = model.decoder.register_forward_pre_hook(lambda module, args: fed.append(args[0].shape[1]))
    try:
        for use_cache in (True, False):
            fed.clear()
            model.generate(**codes, max_new_tokens=5, min_new_tokens=5, do_sample=False, use_cache=use_cache)
            assert fed == ([1] * 5 if use_cache else [1, 2, 3, 4, 5])
    finally:
        hook.remove()


def test_greedy_generation_is_deterministic_and_starts_from_bos(batch):
    model = make_model().eval()
    codes = model.encode(batch["input_ids"]).codes()
    first = model.generate(**codes, max_new_tokens=8, do_sample=False)
    second = model.generate(**codes, max_new_tokens=8, do_sample=False)
    assert torch.equal(first, second)
    assert first.shape[0] == 2 and (first[:, 0] == BOS).all()


def test_decoding_without_latents_fails_clearly():
    model = make_model().eval()
    with pytest.raises(ValueError, match="z_segment"):
        model.generate(input_ids=torch.tensor([[BOS]]), max_new_tokens=2)
    with pytest.raises(ValueError, match="z_bar"):
        model.decoder_forward(torch.tensor([[BOS]]), z_segment=torch.zeros(1, 16))


def test_generating_past_max_positions_fails_clearly(batch):
    model = make_model(max_positions=12).eval()
    codes = model.encode(batch["input_ids"]).codes()
    with pytest.raises(ValueError, match="beyond max_positions=12"):
        model.generate(**codes, max_new_tokens=20, min_new_tokens=20, do_sample=False)


# --------------------------------------------------------------------------- config and checkpoints


def test_save_and_load_give_identical_logits(tmp_path, batch):
    from transformers import AutoModel

    model = make_model(conditioning="prefix").eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").is_file() and (tmp_path / "model.safetensors").is_file()
    for loaded in (MidiStructModel.from_pretrained(tmp_path), AutoModel.from_pretrained(tmp_path)):
        assert isinstance(loaded, MidiStructModel) and loaded.config.conditioning == "prefix"
        assert loaded.lm_head.weight is loaded.decoder.embed_tokens.weight
        assert torch.equal(loaded.eval()(**batch).logits, model(**batch).logits)


def test_unknown_conditioning_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown conditioning 'cross'; valid: add, plan, prefix, slot"):
        make_model(conditioning="cross")


def test_config_rejects_inconsistent_sizes():
    with pytest.raises(Exception, match="multiple of n_heads"):
        MidiStructConfig.tiny(d_model=30)
    with pytest.raises(Exception, match="valid: vae, ae"):
        MidiStructConfig.tiny(latent_mode="beta")


# --------------------------------------------------------------------------- bag-of-words auxiliary loss


@pytest.mark.parametrize("bars", [True, False], ids=["bar+segment", "segment-only"])
def test_bag_of_words_loss_is_the_nll_of_each_bar_multiset(bars, batch):
    model = make_model(bar_latents=bars, bag_of_words=0.5).eval()
    out = model(**batch, beta=0.5)
    assert torch.allclose(out.loss, out.recon_loss + 0.5 * out.kl_loss + 0.5 * out.bow_loss)
    # by hand: every real token of a bar scored by log_softmax(bow_head([bar code ; segment code]))
    expected = []
    for row in range(2):
        total = 0.0
        for t in range(12):
            label = int(batch["labels"][row, t])
            if label == -100:
                continue
            bar = int(batch["bar_ids"][row, t])
            code = out.z_segment[row]
            if bars:
                code = torch.cat([out.z_bar[row, bar], code])
            total -= torch.log_softmax(model.bow_head(code), -1)[label]
        expected.append(total)
    assert torch.allclose(out.bow_loss, torch.stack(expected).mean(), atol=1e-5)
    # bar_ids left out: counted from the labels, as encode counts them
    assert torch.allclose(model(**{k: v for k, v in batch.items() if k != "bar_ids"}).bow_loss, out.bow_loss)


def test_bag_of_words_trains_the_encoder_and_is_off_by_default(batch, tmp_path):
    assert make_model().bow_head is None and make_model()(**batch).bow_loss is None
    model = make_model(bag_of_words=1.0).train()
    out = model(**batch)
    out.bow_loss.backward()
    encoder_grads = [p.grad for p in model.encoder.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in encoder_grads)  # it reaches every encoder weight
    assert all(p.grad is None for p in model.decoder.parameters())  # and never the decoder
    model.save_pretrained(tmp_path)
    again = MidiStructModel.from_pretrained(tmp_path).eval()
    assert again.config.bag_of_words == 1.0
    assert torch.equal(again.bow_head.weight, model.bow_head.weight)
    with pytest.raises(Exception, match="bag_of_words must be >= 0"):  # huggingface_hub's strict validation error
        make_model(bag_of_words=-1.0)


# --------------------------------------------------------------------------- sequence head (issue 14)


def test_slot_targets_put_each_bar_in_order(batch):
    from midistruct.model.modeling import slot_targets

    targets = slot_targets(batch["labels"], batch["bar_ids"], n_bars=2, max_slots=64)
    assert targets.shape == (2, 2, 7)  # the longest bar: row 1's only bar, Bar + 5 tokens + EOS
    assert targets[0, 0].tolist() == [BAR, 10, 11, 12, 13, 14, -100]
    assert targets[0, 1].tolist() == [BAR, 15, 16, 17, 18, EOS, -100]
    assert targets[1, 0].tolist() == [BAR, 20, 21, 22, 23, 24, EOS]
    assert targets[1, 1].tolist() == [-100] * 7  # row 1 has no second bar
    short = slot_targets(batch["labels"], batch["bar_ids"], n_bars=2, max_slots=3)
    assert short[0, 1].tolist() == [BAR, 15, 16]  # tokens past the slot table go unscored


@pytest.mark.parametrize("bars", [True, False], ids=["bar+segment", "segment-only"])
def test_sequence_loss_is_the_nll_of_each_bar_in_order(bars, batch):
    model = make_model(bar_latents=bars, sequence_head=0.5).eval()
    out = model(**batch, beta=0.5)
    assert torch.allclose(out.loss, out.recon_loss + 0.5 * out.kl_loss + 0.5 * out.seq_loss)
    # by hand: token t of bar n is slot t - (first token of bar n), scored from [bar code ; segment code]
    expected = []
    for row in range(2):
        bar_of = batch["bar_ids"][row].tolist() if bars else [0] * 12
        codes = out.z_segment[row][None, None]  # (1, 1, Zs)
        if bars:
            codes = torch.cat([out.z_bar[row], out.z_segment[row].expand(2, -1)], -1)[None]  # (1, 2, Zb+Zs)
        logp = torch.log_softmax(model.sequence_head(codes, n_slots=12), -1)[0]  # (NB, 12, V)
        total = 0.0
        for t in range(12):
            label = int(batch["labels"][row, t])
            if label != -100:
                total -= logp[bar_of[t], t - bar_of.index(bar_of[t]), label]
        expected.append(total)
    assert torch.allclose(out.seq_loss, torch.stack(expected).mean(), atol=1e-4)


def test_sequence_head_trains_the_encoder_and_adds_nothing_when_off(batch, tmp_path):
    off = make_model()
    assert off.sequence_head is None and off(**batch).seq_loss is None
    assert not any("sequence_head" in name for name in off.state_dict())
    assert sum(p.numel() for p in off.parameters()) == sum(p.numel() for p in make_model(bag_of_words=0).parameters())
    model = make_model(sequence_head=1.0, sequence_head_layers=2).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = model(**batch).seq_loss
    first.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())
    assert all(p.grad is None for p in model.decoder.parameters())  # it never trains the decoder
    for _ in range(5):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step()
    torch.manual_seed(0)
    with torch.no_grad():
        assert float(model(**batch).seq_loss) < float(first.detach())  # it learns
    model.save_pretrained(tmp_path)
    again = MidiStructModel.from_pretrained(tmp_path).eval()
    assert again.config.sequence_head == 1.0 and len(again.sequence_head.blocks) == 2
    assert torch.equal(again.sequence_head.slots.weight, model.sequence_head.slots.weight)
    with pytest.raises(Exception, match="sequence_head must be >= 0"):
        make_model(sequence_head=-1.0)


def test_validation_reports_the_heads_nll_per_token(batch):
    import contextlib

    from midistruct.training.validation import teacher_forced

    model = make_model(sequence_head=1.0, bag_of_words=1.0).eval()
    found = teacher_forced(model, [batch], device="cpu", autocast=contextlib.nullcontext)
    out, tokens = model(**batch), int((batch["labels"] != -100).sum())
    assert found["seq_nll_per_token"] == pytest.approx(float(out.seq_loss.detach()) * 2 / tokens, rel=1e-5)
    assert found["bow_nll_per_token"] == pytest.approx(float(out.bow_loss) * 2 / tokens, rel=1e-5)
    assert "seq_nll_per_token" not in teacher_forced(make_model().eval(), [batch], device="cpu",
                                                      autocast=contextlib.nullcontext)


def test_count_slots_names_the_slot_of_the_token_each_input_predicts(batch):
    from midistruct.model.modeling import slot_targets

    decoder_ids = torch.tensor([[BOS, BAR, 10, 11, BAR, 12], [BOS, BAR, 10, 11, 12, 13]])
    assert count_slots(decoder_ids, bar_token_ids=BAR).tolist() == [[0, 1, 2, 3, 1, 2], [0, 1, 2, 3, 4, 5]]
    # on the data: input t predicts label t, which sits in slot count_slots[t] of its bar (the sequence head's
    # slots), except a bar's first token, which the previous bar's last input predicts
    slots = count_slots(shift_right(batch["input_ids"], bos_token_id=BOS), bar_token_ids=BAR)
    targets = slot_targets(batch["labels"], batch["bar_ids"], n_bars=2, max_slots=64)
    for row, t in itertools.product(range(2), range(12)):
        label, bar = int(batch["labels"][row, t]), int(batch["bar_ids"][row, t])
        if label not in (-100, BAR):
            assert int(targets[row, bar, slots[row, t]]) == label


def test_slot_conditioning_reads_the_codes_at_each_slot(batch):
    """The slot read-out adds weights only under "slot", and what it adds depends on the slot."""
    add, slot = make_model(conditioning="add"), make_model(conditioning="slot")
    extra = {n for n, _ in slot.named_parameters()} - {n for n, _ in add.named_parameters()}
    assert extra and all(n.startswith("decoder.conditioning.") for n in extra)
    conditioning = slot.decoder.conditioning.eval()
    x = torch.zeros(1, 3, 32)
    codes = dict(bar_index=torch.zeros(1, 3, dtype=torch.long), z_bar=torch.randn(1, 1, 8), z_segment=torch.randn(1, 16))
    torch.nn.init.normal_(conditioning.ffn.down.weight)  # as if trained: the read-out is no longer ~0
    same = conditioning(x, slot_index=torch.tensor([[1, 1, 1]]), with_prefix=True, **codes)
    moved = conditioning(x, slot_index=torch.tensor([[1, 2, 3]]), with_prefix=True, **codes)
    assert torch.allclose(same[0, 0], same[0, 2]) and not torch.allclose(moved[0, 0], moved[0, 2])
    with pytest.raises(ValueError, match="slot"):
        conditioning(x, with_prefix=True, **codes)


def test_slot_pooling_is_a_per_bar_read_out_that_sees_order(batch):
    from midistruct.model.modeling import SlotPooling, bar_slots, pool_bars

    assert bar_slots(batch["bar_ids"]).tolist()[0] == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5]
    mean, slots = make_model(), make_model(bar_pooling="slots", pool_queries=3)
    extra = {n for n, _ in slots.named_parameters()} - {n for n, _ in mean.named_parameters()}
    assert extra and all(n.startswith("bottleneck.bar_pool.") for n in extra) and mean.bottleneck.bar_pool is None
    out = slots.eval()(**batch)
    assert out.mu_bar.shape == (2, 2, 8) and out.bar_mask.tolist() == [[True, True], [True, False]]
    assert torch.isfinite(out.loss)
    # on given states: a bar's read-out sees only its own tokens, and their order (a mean does not)
    torch.manual_seed(1)
    pool = SlotPooling(MidiStructConfig.tiny(pool_queries=3)).eval()
    torch.nn.init.normal_(pool.slots.weight)
    torch.nn.init.normal_(pool.queries.weight)
    states = torch.randn(2, 12, 32)
    kw = dict(attention_mask=batch["attention_mask"], bar_ids=batch["bar_ids"], n_bars=2)
    pooled, bar_mask = pool(states, **kw)
    assert bar_mask.tolist() == [[True, True], [True, False]]
    other_bar = states.clone()
    other_bar[0, 6:] = torch.randn(6, 32)  # bar 1 of row 0
    torch.testing.assert_close(pool(other_bar, **kw)[0][0, 0], pooled[0, 0])
    swapped = states.clone()
    swapped[0, [1, 2]] = states[0, [2, 1]]  # two tokens of bar 0 trade places
    assert not torch.allclose(pool(swapped, **kw)[0][0, 0], pooled[0, 0], atol=1e-4)
    torch.testing.assert_close(pool_bars(swapped, **kw)[0], pool_bars(states, **kw)[0])
    with pytest.raises(Exception, match="valid: mean, slots"):
        make_model(bar_pooling="max")


def test_flat_pooling_gives_each_slot_its_own_weights(batch):
    from midistruct.model.modeling import FlatPooling, pool_bars

    mean, flat = make_model(), make_model(bar_pooling="flat", pool_slots=4, pool_width=3)
    extra = {n for n, _ in flat.named_parameters()} - {n for n, _ in mean.named_parameters()}
    assert extra == {"bottleneck.bar_pool.down.weight", "bottleneck.bar_pool.down.bias",
                     "bottleneck.bar_pool.out.weight", "bottleneck.bar_pool.out.bias"}
    out = flat.eval()(**batch)
    assert out.mu_bar.shape == (2, 2, 8) and out.bar_mask.tolist() == [[True, True], [True, False]]
    torch.manual_seed(1)
    pool = FlatPooling(MidiStructConfig.tiny(pool_slots=4, pool_width=3)).eval()
    states = torch.randn(2, 12, 32)
    kw = dict(attention_mask=batch["attention_mask"], bar_ids=batch["bar_ids"], n_bars=2)
    pooled, bar_mask = pool(states, **kw)
    assert bar_mask.tolist() == [[True, True], [True, False]]
    # by hand: bar 1 of row 0 is tokens 6..11, slots 0..3 pooled, 4 and 5 past pool_slots
    by_hand = pool.out(pool.down(states[0, 6:10]).flatten())
    torch.testing.assert_close(pooled[0, 1], by_hand)
    past = states.clone()
    past[0, 10:12] = torch.randn(2, 32)  # slots 4, 5 of bar 1: not pooled
    torch.testing.assert_close(pool(past, **kw)[0], pooled)
    swapped = states.clone()
    swapped[0, [1, 2]] = states[0, [2, 1]]  # two tokens of bar 0 trade places: the code sees the order
    assert not torch.allclose(pool(swapped, **kw)[0][0, 0], pooled[0, 0], atol=1e-4)
    torch.testing.assert_close(pool(swapped, **kw)[0][0, 1], pooled[0, 1])  # the other bar keeps its code
    torch.testing.assert_close(pool_bars(swapped, **kw)[0], pool_bars(states, **kw)[0])  # a mean does not see it
    padded = states.clone()
    padded[1, 7:] = torch.randn(5, 32)  # row 1's padding
    torch.testing.assert_close(pool(padded, **kw)[0], pooled)


def test_sequence_head_with_memory_reads_the_code_by_attention(batch):
    from midistruct.model.modeling import CodeReader

    plain, memory = make_model(sequence_head=1.0), make_model(sequence_head=1.0, sequence_head_memory=4)
    names = {n for n, _ in memory.named_parameters() if n.startswith("sequence_head.")}
    assert {"sequence_head.reader.memory.weight", "sequence_head.read_ffn.up.weight"} <= names
    assert not any(n.startswith("sequence_head.code_proj") for n in names)
    assert any(n.startswith("sequence_head.code_proj") for n, _ in plain.named_parameters())
    out = memory(**batch)
    assert torch.isfinite(out.seq_loss) and float(out.seq_loss) > 0
    out.loss.backward()
    assert memory.encoder.embed_tokens.weight.grad.abs().sum() > 0  # the head's loss reaches the encoder
    # the reader: each query picks among M memory vectors, so different slots read different parts of one code
    torch.manual_seed(2)
    reader = CodeReader(MidiStructConfig.tiny(sequence_head_memory=4), in_dim=24).eval()
    codes, queries = torch.randn(3, 24), torch.randn(3, 5, 32)
    read = reader(codes, queries)
    assert read.shape == (3, 5, 32) and not torch.allclose(read[:, 0], read[:, 1])
    other = codes.clone()
    other[1] = torch.randn(24)
    moved = reader(other, queries)
    torch.testing.assert_close(moved[[0, 2]], read[[0, 2]])  # rows do not mix
    assert not torch.allclose(moved[1], read[1])


def test_plan_conditioning_hands_each_input_the_heads_reading_of_its_slot(batch):
    model = make_model(conditioning="plan").eval()
    assert model.sequence_head is not None and model.sequence_head.reader is not None
    with pytest.raises(Exception, match="sequence_head > 0"):
        MidiStructConfig.tiny(conditioning="plan")
    latents = model.encode(batch["input_ids"], batch["attention_mask"], batch["bar_ids"])
    decoder_ids = shift_right(batch["input_ids"], bos_token_id=BOS)
    bar_ids = count_bars(decoder_ids, bar_token_ids=[BAR])
    slot_ids = count_slots(decoder_ids, bar_token_ids=[BAR])
    plan = model.plan(latents.z_bar, latents.z_segment, slot_ids=slot_ids)  # (B, NB, K, D)
    assert plan.shape == (2, 2, int(slot_ids.max()) + 1, 32)
    kw = dict(bar_index=bar_ids, slot_index=slot_ids, z_bar=latents.z_bar, z_segment=latents.z_segment)
    base = model.decoder(decoder_ids, plan=plan, **kw)
    # change the plan of bar 1, slot 2 only: row 0's input predicting it (position 8) and later ones move
    changed = plan.clone()
    changed[0, 1, 2] += 5.0
    moved = model.decoder(decoder_ids, plan=changed, **kw)
    assert bar_ids[0, 8] == 1 and slot_ids[0, 8] == 2
    torch.testing.assert_close(moved[0, :8], base[0, :8])
    assert not torch.allclose(moved[0, 8], base[0, 8])
    torch.testing.assert_close(moved[1], base[1])
    with pytest.raises(ValueError, match="plan"):
        model.decoder(decoder_ids, **kw)


def test_place_parts_start_at_default_scales_and_survive_a_save(tmp_path, batch):
    """Issue 14: FlatPooling and the reading sequence head start at PyTorch's default init (slot queries N(0, 1)),
    the rest at initializer_range; a saved plan model loads to the same logits."""
    model = make_model(conditioning="plan", bar_pooling="flat")
    assert float(model.sequence_head.slots.weight.std()) > 0.5
    assert float(model.encoder.embed_tokens.weight.std()) < 0.05
    assert float(make_model(sequence_head=1.0).sequence_head.slots.weight.std()) < 0.05  # the added-code head
    model.save_pretrained(tmp_path)
    loaded = MidiStructModel.from_pretrained(tmp_path).eval()
    assert torch.equal(loaded(**batch).logits, model.eval()(**batch).logits)


# --------------------------------------------------------------------------- decoder memory (issues 14, 19)


def test_code_attention_reads_only_the_memory_of_each_tokens_bar():
    from midistruct.model.modeling import CodeAttention

    torch.manual_seed(0)
    read = CodeAttention(MidiStructConfig.tiny(vocab_size=50, dropout=0.0)).eval()
    assert float(read.out.weight.abs().max()) == 0.0  # starts silent...
    torch.nn.init.normal_(read.out.weight)  # ...and is made to speak here
    x, memory = torch.randn(2, 5, 32), torch.randn(2, 3, 4, 32)  # 3 bars of 4 memory vectors
    bars = torch.tensor([[0, 0, 1, 2, 5], [0, 1, 1, 1, 1]])  # bar 5 is past the last coded bar: it reads bar 2
    base = read(x, memory=memory, bar_index=bars)
    changed = memory.clone()
    changed[0, 1] += 3.0  # row 0, bar 1
    moved = read(x, memory=changed, bar_index=bars)
    torch.testing.assert_close(moved[0, [0, 1, 3, 4]], base[0, [0, 1, 3, 4]])
    assert not torch.allclose(moved[0, 2], base[0, 2])
    torch.testing.assert_close(moved[1], base[1])  # rows do not mix
    last = memory.clone()
    last[0, 2] += 3.0
    assert not torch.allclose(read(x, memory=last, bar_index=bars)[0, 4], base[0, 4])


@pytest.mark.parametrize("conditioning", ["add", "plan"])
def test_decoder_memory_starts_as_the_decoder_without_it_then_reads_the_codes(conditioning, batch):
    plain = make_model(conditioning=conditioning).eval()
    model = make_model(conditioning=conditioning, decoder_memory=3).eval()
    missing, unexpected = model.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("decoder.") for k in missing)
    torch.testing.assert_close(model(**batch).logits, plain(**batch).logits)
    latents = model.encode(batch["input_ids"], batch["attention_mask"], batch["bar_ids"])
    decoder_ids = shift_right(batch["input_ids"], bos_token_id=BOS)
    base = _reading(model).decoder_forward(decoder_ids, **latents.codes()).logits
    assert not torch.allclose(base, plain.decoder_forward(decoder_ids, **latents.codes()).logits)  # once it reads
    # through the memory alone: the conditioning's own reading of the codes is switched off
    model.decoder.conditioning.proj.weight.data.zero_()
    if conditioning == "plan":
        model.decoder.conditioning.plan_proj.weight.data.zero_()
    z_bar = latents.z_bar.clone()
    base = model.decoder_forward(decoder_ids, z_bar=z_bar, z_segment=latents.z_segment).logits
    z_bar[0, 1] += 3.0
    moved = model.decoder_forward(decoder_ids, z_bar=z_bar, z_segment=latents.z_segment).logits
    first_bar = count_bars(decoder_ids, bar_token_ids=[BAR])[0] == 0
    torch.testing.assert_close(moved[0, first_bar], base[0, first_bar])
    assert not torch.allclose(moved[0, ~first_bar], base[0, ~first_bar])


def test_decoder_memory_is_checked_and_survives_a_save(tmp_path, batch):
    with pytest.raises(Exception, match="decoder_memory"):
        MidiStructConfig.tiny(conditioning="prefix", decoder_memory=2)
    with pytest.raises(Exception, match="decoder_memory"):
        MidiStructConfig.tiny(decoder_memory=-1)
    model = _reading(make_model(decoder_memory=2, bar_latents=False)).eval()
    model.save_pretrained(tmp_path)
    loaded = MidiStructModel.from_pretrained(tmp_path).eval()
    assert loaded.config.decoder_memory == 2
    torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits)


def test_validation_elbo_reads_codes_drawn_from_the_posterior(batch):
    """The negative ELBO is a bound only with E_q[-log p(x|z)]: the mean code's NLL can be far lower."""
    import contextlib

    from midistruct.training.validation import posterior_sample_forward, teacher_forced

    model = make_model().eval()
    with torch.no_grad():  # a posterior wide enough that a draw is far from the mean
        model.bottleneck.segment.proj.bias[model.config.latent_dim_segment:] = 2.0
    tokens = int((batch["labels"] != -100).sum())
    state = torch.random.get_rng_state()
    found = teacher_forced(model, [batch], device="cpu", autocast=contextlib.nullcontext, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # training's random stream is not disturbed
    with torch.no_grad():
        mean, drawn = model(**batch), posterior_sample_forward(model, batch, seed=3 * 100_003)
    assert found["recon_nll_per_token"] == pytest.approx(float(mean.recon_loss) * 2 / tokens, rel=1e-5)
    assert found["elbo_recon_nll_per_token"] == pytest.approx(float(drawn.recon_loss) * 2 / tokens, rel=1e-5)
    assert abs(found["elbo_recon_nll_per_token"] - found["recon_nll_per_token"]) > 1e-3
    kl_nats = found["kl_bits_per_segment"] * math.log(2) * 2
    assert found["neg_elbo_per_token"] == pytest.approx(found["elbo_recon_nll_per_token"] + kl_nats / tokens, rel=1e-5)
    assert found["neg_elbo_bits_per_segment"] == pytest.approx(found["neg_elbo_per_token"] * tokens / 2 / math.log(2))
    again = teacher_forced(model, [batch], device="cpu", autocast=contextlib.nullcontext, seed=3)
    assert again["neg_elbo_per_token"] == found["neg_elbo_per_token"]  # seeded: the same draws
    plain = teacher_forced(make_model(latent_mode="ae").eval(), [batch], device="cpu", autocast=contextlib.nullcontext)
    assert "elbo_recon_nll_per_token" not in plain
    assert plain["neg_elbo_per_token"] == pytest.approx(plain["recon_nll_per_token"])

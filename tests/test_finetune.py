"""Issue 15: ``train --init`` fine-tunes a checkpoint or shipped model: its weights (not re-initialised), its model
settings and tokenizer, a fresh optimizer from step 0, ``init`` recorded; ``prepare --init`` makes data that fits it."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from scores import write_corpus

from midistruct import cli
from midistruct.config import load_config
from midistruct.model import pretrained
from midistruct.model.checkpoint import META_FILE, check_checkpoint, load_checkpoint
from midistruct.prepare import prepare
from midistruct.shards.dataset import collate
from midistruct.shards.reader import ShardSet
from midistruct.training.finetune import InitError
from midistruct.training.loop import Trainer


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("finetune") / "midi"
    write_corpus(folder, n=10, bars=8)
    return folder


def _cfg(data: Path, run_dir: Path, *extra: str):
    return load_config("tiny", [f"data.output={data}", f"train.run_dir={run_dir}", "train.threads=1", *extra])


def _data_of(checkpoint: Path) -> Path:
    return checkpoint.parent.parent / "data"  # the conftest checkpoint's shards


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_init_starts_from_the_checkpoint_weights_with_a_fresh_optimizer(checkpoint, tmp_path):
    saved, _, meta = load_checkpoint(checkpoint)
    trainer = Trainer(_cfg(_data_of(checkpoint), tmp_path / "ft"), init=checkpoint, progress=False)
    assert trainer.state["step"] == 0 and not trainer.optimizer.state_dict()["state"]
    for name, value in saved.state_dict().items():
        assert torch.equal(trainer.model.state_dict()[name], value), name
    fresh = Trainer(_cfg(_data_of(checkpoint), tmp_path / "fresh"), progress=False)  # what --init must not give
    name = "encoder.embed_tokens.weight"
    assert not torch.equal(fresh.model.state_dict()[name], saved.state_dict()[name])
    trainer.run(stop_after=1)
    after = check_checkpoint(tmp_path / "ft" / "last")
    assert after["step"] == 1
    assert after["init"] == {"checkpoint": str(checkpoint), "shipped": False, "step": meta["step"],
                             "tokenizer_hash": meta["tokenizer_hash"], "sources": meta["run_config"]["data"]["sources"]}
    assert after["tokenizer_hash"] == meta["tokenizer_hash"]


def test_init_takes_the_model_settings_from_the_checkpoint_and_says_so(checkpoint, tmp_path, capsys):
    cfg = _cfg(_data_of(checkpoint), tmp_path / "ft", "model.d_model=64", "model.dropout=0.3", "model.ffn_dim=64")
    trainer = Trainer(cfg, init=checkpoint, progress=False)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"midistruct: note: the model settings and tokenizer are those of "
                                                   f"{checkpoint}")
    assert "model.d_model=64 (checkpoint: 32)" in err and "model.dropout=0.3 (checkpoint: 0.1)" in err
    assert "ffn_dim" not in err  # the same as the checkpoint's
    assert trainer.model.config.d_model == 32 and trainer.cfg.model.d_model == 32


def test_init_grows_the_decoders_memory_reads_and_starts_where_the_checkpoint_was(checkpoint, tmp_path, capsys):
    """``model.decoder_memory`` is a part a run may add to a checkpoint without it: the checkpoint's weights are
    copied, the reads start silent, so the first forward pass gives the checkpoint's logits; it then trains, and a
    checkpoint that has the part keeps its size."""
    saved, _, _ = load_checkpoint(checkpoint)
    trainer = Trainer(_cfg(_data_of(checkpoint), tmp_path / "ft", "model.decoder_memory=2", "train.max_steps=2",
                           "train.eval_every=2", "train.save_every=2"), init=checkpoint, progress=False)
    assert trainer.model.config.decoder_memory == 2 and len(trainer.model.decoder.reads) == saved.config.decoder_layers
    for name, value in saved.state_dict().items():
        assert torch.equal(trainer.model.state_dict()[name], value), name
    batch = collate([trainer.valid_ds[0], trainer.valid_ds[1]])
    with torch.no_grad():
        want = saved.eval()(**batch).logits
        got = trainer.model.eval()(**batch).logits
    torch.testing.assert_close(got, want)
    trainer.run()
    grown = tmp_path / "ft" / "last"
    assert load_checkpoint(grown)[0].config.decoder_memory == 2
    reads = load_file(str(grown / "model.safetensors"))["decoder.reads.0.out.weight"]
    assert float(reads.abs().max()) > 0  # it learnt to read
    kept = Trainer(_cfg(_data_of(checkpoint), tmp_path / "kept", "model.decoder_memory=3"), init=grown,
                   progress=False)
    assert kept.model.config.decoder_memory == 2
    assert "model.decoder_memory=3 (checkpoint: 2)" in capsys.readouterr().err
    with pytest.raises(InitError, match="decoder_memory=2"):  # growing another part keeps this one's size
        Trainer(_cfg(_data_of(checkpoint), tmp_path / "again", "model.decoder_memory=3", "model.arrangement_dim=4"),
                init=grown, progress=False)


def test_a_run_adding_memory_reads_may_change_the_conditioning(checkpoint, tmp_path):
    """``sequence_views`` replaces "plan" with "add": a run growing the memory reads takes its conditioning from the
    config, keeping the projection every conditioning but "prefix" shares; without growing, the checkpoint's."""
    saved, _, _ = load_checkpoint(checkpoint)
    assert saved.config.conditioning == "add"
    grown = Trainer(_cfg(_data_of(checkpoint), tmp_path / "a", "model.decoder_memory=2", "model.conditioning=slot"),
                    init=checkpoint, progress=False)
    assert grown.model.config.conditioning == "slot"
    key = "decoder.conditioning.proj.weight"
    assert torch.equal(grown.model.state_dict()[key], saved.state_dict()[key])
    kept = Trainer(_cfg(_data_of(checkpoint), tmp_path / "b", "model.conditioning=slot"), init=checkpoint,
                   progress=False)
    assert kept.model.config.conditioning == "add"


def test_a_fine_tuned_run_resumes_with_the_config_it_started_with(checkpoint, tmp_path):
    """The run's model is the checkpoint's, not the config's (d_model 64): --resume must rebuild that model."""
    cfg = _cfg(_data_of(checkpoint), tmp_path / "ft", "model.d_model=64")
    Trainer(cfg, init=checkpoint, progress=False).run(stop_after=1)
    resumed = Trainer(cfg, resume=True, progress=False)
    assert resumed.model.config.d_model == 32 and resumed.state["step"] == 1
    resumed.run(stop_after=1)
    assert check_checkpoint(tmp_path / "ft" / "last")["init"]["checkpoint"] == str(checkpoint)


def test_init_with_resume_is_refused(checkpoint, tmp_path, capsys):
    with pytest.raises(InitError, match="give one of them"):
        Trainer(_cfg(_data_of(checkpoint), tmp_path / "ft"), init=checkpoint, resume=True, progress=False)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--config", "tiny", "--init", str(checkpoint), "--resume"])
    assert exit_.value.code == 2 and "not allowed with argument --init" in capsys.readouterr().err


def test_init_refuses_data_of_another_tokenizer_or_window(checkpoint, corpus, tmp_path, capsys):
    source = f"data.sources=[{{kind: folder, path: '{corpus}'}}]"
    other = tmp_path / "other-tokenizer"
    prepare(load_config("tiny", [source, f"data.output={other}", "tokenizer.pitch_range=[30, 100]"]), progress=False)
    with pytest.raises(InitError, match=r"prepared with tokenizer \w+, but .* reads tokenizer \w+; prepare the data "
                                        r"with its tokenizer: midistruct prepare --config CONFIG --init"):
        Trainer(_cfg(other, tmp_path / "a"), init=checkpoint, progress=False)
    longer = tmp_path / "four-bars"
    prepare(load_config("tiny", [source, f"data.output={longer}", "segments.bars=4"]), progress=False)
    with pytest.raises(InitError, match="windows of up to 4 bars and 256 tokens; .* reads at most 2 bars"):
        Trainer(_cfg(longer, tmp_path / "b"), init=checkpoint, progress=False)
    rc = cli.main(["train", "--config", "tiny", "--quiet", "--set", f"data.output={other}", "--set",
                   f"train.run_dir={tmp_path / 'c'}", "--init", str(checkpoint)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "prepare the data with its tokenizer" in err


def test_init_names_a_missing_checkpoint(checkpoint, tmp_path, capsys, registry):
    rc = cli.main(["train", "--config", "tiny", "--set", f"data.output={_data_of(checkpoint)}",
                   "--init", "no-such-model"])
    err = capsys.readouterr().err
    assert rc == 2 and "'no-such-model' is no shipped model name" in err and "Traceback" not in err


def test_prepare_init_takes_the_tokenizer_and_window_then_train_init_runs(checkpoint, corpus, tmp_path, capsys):
    data = tmp_path / "mine"
    rc = cli.main(["prepare", "--config", "tiny", "--quiet", "--init", str(checkpoint),
                   "--set", f"data.sources=[{{kind: folder, path: '{corpus}'}}]", "--set", f"data.output={data}",
                   "--set", "tokenizer.pitch_range=[30, 100]", "--set", "segments.bars=4"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "not used from the config: tokenizer, segments.bars=4 (checkpoint: 2)" in err
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["tokenizer_hash"] == check_checkpoint(checkpoint)["tokenizer_hash"]
    assert manifest["segments"]["bars"] == 2
    rc = cli.main(["train", "--config", "tiny", "--quiet", "--init", str(checkpoint), "--set", f"data.output={data}",
                   "--set", f"train.run_dir={tmp_path / 'run'}", "--set", "train.max_steps=1"])
    assert rc == 0 and f"trained 1 steps from {checkpoint}" in capsys.readouterr().out


def test_export_of_a_fine_tuned_model_says_where_it_started(checkpoint, tmp_path, registry):
    Trainer(_cfg(_data_of(checkpoint), tmp_path / "ft"), init=checkpoint, progress=False).run(stop_after=1)
    card = {"description": "Fine-tuned.", "models": "tests", "data": "synthetic", "licence": "MIT",
            "metric": {"name": "onset F1", "value": 0.1, "command": "midistruct evaluate x"}}
    written = pretrained.export(tmp_path / "ft" / "last", tmp_path / "exported", card=card)
    assert written["fine_tuned_from"] == f"{pretrained.portable_paths(str(checkpoint))} (step 2)"
    assert "| fine-tuned from |" in (tmp_path / "exported" / "README.md").read_text()
    # the starting model's training music counts for the licence rule, not only the fine-tuning music
    folder = Path(shutil.copytree(tmp_path / "ft" / "last", tmp_path / "shippable"))
    meta = json.loads((folder / META_FILE).read_text())
    meta["run_config"]["data"]["sources"] = [{"kind": "music21", "collections": ["bach"]}]
    meta["init"]["sources"] = [{"kind": "nottingham", "path": "x"}]
    (folder / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(pretrained.PretrainedError, match="may not ship: source kind 'nottingham'"):
        pretrained.export(folder, registry / "ft", card=card)


def test_fine_tune_the_shipped_model(corpus, tmp_path, capsys):
    """``prepare --init folk-2bar`` then ``train --init folk-2bar`` for one step: its weights, its tokenizer."""
    data = tmp_path / "mine"
    assert cli.main(["prepare", "--config", "folk-2bar", "--quiet", "--init", "folk-2bar", "--set",
                     f"data.sources=[{{kind: folder, path: '{corpus}'}}]", "--set", f"data.output={data}",
                     "--set", "splits.valid=0.2"]) == 0
    cfg = load_config("folk-2bar", [f"data.output={data}", f"train.run_dir={tmp_path / 'run'}", "train.threads=1",
                                    "train.batch_size=2", "train.max_steps=1", "train.eval_batches=1",
                                    "train.free_run_samples=1", "train.tensorboard=false"])
    trainer = Trainer(cfg, init="folk-2bar", progress=False)
    shipped = load_file(str(pretrained.resolve("folk-2bar") / "model.safetensors"))
    name = "encoder.embed_tokens.weight"
    assert torch.equal(trainer.model.state_dict()[name], shipped[name].float())
    assert trainer.init["checkpoint"] == "folk-2bar" and trainer.init["shipped"] is True
    capsys.readouterr()


def test_a_model_refuses_shards_it_cannot_read_in_one_line(checkpoint, corpus, tmp_path, capsys):
    """prior, evaluate and attribute vectors on shards of another tokenizer or of longer windows: one line naming
    the fix (they crashed in the encoder, or in torch.cat with no window to stack), and no prior file written."""
    from midistruct.generation.pipeline import InputError, MidiStruct
    from midistruct.model.prior import PRIOR_FILE

    source = f"data.sources=[{{kind: folder, path: '{corpus}'}}]"
    other, longer = tmp_path / "other-tokenizer", tmp_path / "four-bars"
    prepare(load_config("tiny", [source, f"data.output={other}", "tokenizer.pitch_range=[30, 100]"]), progress=False)
    prepare(load_config("tiny", [source, f"data.output={longer}", "segments.bars=4"]), progress=False)
    model = tmp_path / "model"
    shutil.copytree(checkpoint, model)
    (model / PRIOR_FILE).unlink(missing_ok=True)
    ms = MidiStruct.from_pretrained(model)
    with pytest.raises(InputError, match=rf"prepared with tokenizer \w+, but {model} reads tokenizer \w+"):
        ms.fit_prior(other)
    with pytest.raises(InputError, match=f"windows of up to 4 bars and 256 tokens; {model} reads at most 2 bars"):
        ms.attribute_vectors(longer)
    from midistruct.evaluation.probes import probe_latents
    from midistruct.evaluation.smoothness import held_out_pairs
    from midistruct.evaluation.statistics import sample_statistics

    for read in (probe_latents, sample_statistics, held_out_pairs):  # what evaluate calls, called from Python
        with pytest.raises(InputError, match="reads at most 2 bars"):
            read(ms, longer, split="train")
    for data in (other, longer):
        for args in (["prior", str(model)], ["evaluate", str(model), "--windows", "4", "--free-run", "0"]):
            assert cli.main([*args, "--data", str(data)]) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and f"--init {model}" in err and str(data) in err, err
    assert not (model / PRIOR_FILE).exists()
    # a model of more bars than the shards' windows reads them, but has no full window to fit a prior to
    wide = tmp_path / "wide"
    shutil.copytree(checkpoint, wide)
    meta = json.loads((wide / "midistruct.json").read_text())
    meta["run_config"]["segments"]["bars"] = 4
    (wide / "midistruct.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="none of .* train windows has the model's 4 bars"):
        MidiStruct.from_pretrained(wide).fit_prior(_data_of(checkpoint))


def _codes(ms, windows):
    """(W, Zs) segment codes and (W, NB, Zb) bar codes, posterior means, of token windows."""
    z = ms.encode_windows(windows)
    return z.z_segment, z.z_bar


def test_init_turns_deterministic_codes_into_a_vae(corpus, tmp_path, capsys):
    """`train --init AE --set model.latent_mode=vae`: the code projections become the posterior means (the same
    codes), the new log-variance half starts at a standard deviation of 0.5, every other weight is copied, the
    config's free bits are taken, and the run trains and saves a VAE. The other way (a VAE's --init into ae) keeps
    the checkpoint's VAE and says so."""
    from midistruct.generation.pipeline import MidiStruct
    from midistruct.model.checkpoint import POSTERIOR_STD0

    data = tmp_path / "data"
    prepare(load_config("tiny", [f"data.sources=[{{kind: folder, path: '{corpus}'}}]", f"data.output={data}"]),
            progress=False)
    Trainer(_cfg(data, tmp_path / "ae", "model.latent_mode=ae", "train.max_steps=2", "train.eval_every=2",
                 "train.save_every=2"), progress=False).run()
    ae = MidiStruct.from_pretrained(tmp_path / "ae" / "last")
    trainer = Trainer(_cfg(data, tmp_path / "vae", "model.latent_mode=vae", "model.free_bits=0", "train.max_steps=1",
                           "train.beta_warmup_steps=0"), init=tmp_path / "ae" / "last", progress=False)
    assert trainer.model.config.latent_mode == "vae" and trainer.model.config.free_bits == 0
    state, old = trainer.model.state_dict(), ae.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in old.items() if state[k].shape == v.shape)
    grown = [k for k, v in old.items() if state[k].shape != v.shape]
    assert sorted(grown) == ["bottleneck.bar.proj.bias", "bottleneck.bar.proj.weight",
                             "bottleneck.segment.proj.bias", "bottleneck.segment.proj.weight"]
    for key in grown:
        half = old[key].shape[0]
        assert torch.equal(state[key][:half], old[key])
        rest = state[key][half:]
        assert torch.allclose(rest, torch.full_like(rest, 2 * math.log(POSTERIOR_STD0)) if key.endswith("bias")
                              else torch.zeros_like(rest))
    trainer.run()
    vae = MidiStruct.from_pretrained(tmp_path / "vae" / "last")
    assert vae.model.config.latent_mode == "vae"
    # before any step the VAE's posterior means are the AE's codes
    fresh = MidiStruct(trainer.model.__class__(trainer.model.config), ae.tokenizer, vae.meta)
    fresh.model.load_state_dict(state)
    windows = [ShardSet(data).split("train").window(i)[0] for i in range(4)]
    for a, b in zip(_codes(ae, windows), _codes(fresh, windows)):
        assert torch.allclose(a, b, atol=1e-5)
    rc = cli.main(["train", "--config", "tiny", "--quiet", "--init", str(tmp_path / "vae" / "last"), "--set",
                   f"data.output={data}", "--set", f"train.run_dir={tmp_path / 'back'}", "--set", "train.max_steps=1",
                   "--set", "model.latent_mode=ae"])
    assert rc == 0 and "model.latent_mode='ae' (checkpoint: 'vae')" in capsys.readouterr().err


@pytest.mark.shared_data
def test_the_shipped_deterministic_model_becomes_a_vae_on_real_tunes(shared_datasets, tmp_path):
    """`folk-2bar` (deterministic codes) fine-tuned as a VAE on 40 real Nottingham tunes prepared for it: the run
    starts from its codes as posterior means (a real tune's codes unchanged) and trains."""
    from midistruct.generation.pipeline import MidiStruct

    files = sorted((shared_datasets / "nottingham" / "midi" / "melody").glob("*.mid"))[::25][:40]
    assert len(files) == 40, "the Nottingham melodies are missing"
    (tmp_path / "midi").mkdir()
    for path in files:
        (tmp_path / "midi" / path.name).write_bytes(path.read_bytes())
    data = tmp_path / "data"
    assert cli.main(["prepare", "--config", "folk-2bar", "--quiet", "--init", "folk-2bar", "--set",
                     f"data.sources=[{{kind: folder, path: '{tmp_path / 'midi'}'}}]", "--set", f"data.output={data}"]) == 0
    shipped = MidiStruct.from_pretrained("folk-2bar")
    cfg = load_config("folk-2bar", [f"data.output={data}", f"train.run_dir={tmp_path / 'run'}", "train.threads=1",
                                    "train.max_steps=1", "train.eval_every=1", "train.eval_batches=1",
                                    "train.free_run_samples=1", "model.latent_mode=vae", "model.free_bits=0"])
    trainer = Trainer(cfg, init="folk-2bar", progress=False)
    fresh = MidiStruct(trainer.model.__class__(trainer.model.config), shipped.tokenizer, shipped.meta)
    fresh.model.load_state_dict(trainer.model.state_dict())
    tune = files[0]
    for a, b in zip(_codes(shipped, shipped.windows(tune)), _codes(fresh, shipped.windows(tune))):
        assert torch.allclose(a, b, atol=1e-4)
    trainer.run()
    assert MidiStruct.from_pretrained(tmp_path / "run" / "last").model.config.latent_mode == "vae"

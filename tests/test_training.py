"""Training: a tiny run end to end, checkpoints, exact resume, torchrun with 2 processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scores import write_corpus

from midistruct.cli import main
from midistruct.config import load_config
from midistruct.model.checkpoint import CheckpointError, check_checkpoint, load_checkpoint
from midistruct.prepare import prepare
from midistruct.training.loop import Trainer, TrainError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    write_corpus(root / "midi", n=12)
    prepare(load_config("tiny", [f"data.sources=[{{kind: folder, path: '{root / 'midi'}'}}]",
                                 f"data.output={root / 'data'}"]), progress=False)
    return root / "data"


def _cfg(shards, run_dir, *extra):
    return load_config("tiny", [f"data.output={shards}", f"train.run_dir={run_dir}", "train.threads=1", *extra])


def test_tiny_run_writes_checkpoints_and_metrics(shards, tmp_path):
    trainer = Trainer(_cfg(shards, tmp_path / "run"), progress=False)
    logs = trainer.run()
    assert len(logs) == 6 and all(torch.isfinite(torch.tensor(r["loss"])) for r in logs)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in records if r["split"] == "valid"]
    assert [r["step"] for r in valid] == [3, 6]
    for key in ("recon_nll_per_token", "token_accuracy", "kl_bits_per_segment", "free_onset_f1",
                "free_onset_f1_zero_latent", "neg_elbo_per_token", "active_units_segment"):
        assert key in valid[-1]
    assert (tmp_path / "run" / "config.yaml").is_file()
    for name in ("best", "last"):
        meta = check_checkpoint(tmp_path / "run" / name)
        assert meta["segment_bars"] == 2
    model, tokenizer, meta = load_checkpoint(tmp_path / "run" / "last")
    assert meta["step"] == 6 and model.config.vocab_size == tokenizer.vocab_size
    batch = next(trainer.batches())
    trainer.model.eval()
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, trainer.model(**batch).logits)


def test_resume_continues_exactly(shards, tmp_path):
    """Stop after 3 steps, resume to 6: the loss sequence equals an uninterrupted run's."""
    full = Trainer(_cfg(shards, tmp_path / "a"), progress=False).run()
    first = Trainer(_cfg(shards, tmp_path / "b"), progress=False).run(stop_after=3)
    rest = Trainer(_cfg(shards, tmp_path / "b"), resume=True, progress=False).run()
    assert [r["loss"] for r in first + rest] == [r["loss"] for r in full]
    assert len(first) == 3 and len(rest) == 3
    # every logged line says how far the run is: wall seconds (carried over the resume) and windows seen
    records = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    batch = _cfg(shards, tmp_path / "b").train.batch_size
    assert all(r["windows_seen"] == r["step"] * batch for r in records)
    valid = [r for r in records if r["split"] == "valid"]
    assert [r["step"] for r in valid] == [3, 6] and 0 < valid[0]["seconds"] <= valid[1]["seconds"]
    saved = json.loads((tmp_path / "b" / "last" / "trainer_state.json").read_text())["state"]["position"]
    assert saved["seconds"] >= valid[1]["seconds"] - 0.05 > 0  # the logged value is rounded to 0.1 s


def test_resume_drops_the_rows_of_steps_it_trains_again(shards, tmp_path):
    """A run stopped between saves logged steps whose weights were lost; the resumed run trains them again, so
    metrics.jsonl keeps one row per step and split (and not a last line a kill cut short)."""
    cfg = _cfg(shards, tmp_path / "run", "train.log_every=1")
    Trainer(cfg, progress=False).run(stop_after=3)  # saved at 3
    metrics = tmp_path / "run" / "metrics.jsonl"
    lost = [json.dumps({"step": s, "split": "train", "loss": 9.0}) for s in (4, 5)]
    metrics.write_text(metrics.read_text() + "\n".join(lost) + '\n{"step": 6, "spl')
    Trainer(cfg, resume=True, progress=False).run()
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    train = [r["step"] for r in records if r["split"] == "train"]
    assert train == [1, 2, 3, 4, 5, 6] and all(r.get("loss") != 9.0 for r in records)
    assert [r["step"] for r in records if r["split"] == "valid"] == [3, 6]


def test_resume_without_checkpoint_fails_clearly(shards, tmp_path):
    with pytest.raises(CheckpointError, match="cannot resume: .*none.last does not exist"):
        Trainer(_cfg(shards, tmp_path / "none"), resume=True, progress=False)


def test_resume_with_another_model_config_fails_clearly(shards, tmp_path):
    """A run started with --set model.bag_of_words=1 and resumed without it: one line naming the key."""
    Trainer(_cfg(shards, tmp_path / "run", "model.bag_of_words=1.0"), progress=False).run(stop_after=1)
    with pytest.raises(TrainError, match=r"bag_of_words: 1\.0 in the checkpoint, 0\.0 now"):
        Trainer(_cfg(shards, tmp_path / "run"), resume=True, progress=False)
    rest = Trainer(_cfg(shards, tmp_path / "run", "model.bag_of_words=1.0"), resume=True, progress=False).run()
    assert len(rest) == 5


def test_ctrl_c_saves_last(shards, tmp_path, monkeypatch):
    trainer = Trainer(_cfg(shards, tmp_path / "run"), progress=False)
    real = trainer.train_step
    calls = {"n": 0}

    def interrupted(batch):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(batch)

    monkeypatch.setattr(trainer, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    assert check_checkpoint(tmp_path / "run" / "last")["step"] == 1


def test_unknown_model_key_and_missing_shards(shards, tmp_path, capsys):
    from midistruct.config import ConfigError

    with pytest.raises(ConfigError, match="model.d_modle: unknown key; did you mean d_model"):  # at load, before torch
        _cfg(shards, tmp_path / "r", "model.d_modle=64")
    assert main(["train", "--config", "tiny", "--set", f"data.output={tmp_path / 'nothing'}"]) == 2
    assert "not a prepared shard folder" in capsys.readouterr().err


def test_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        check_checkpoint(tmp_path / "nope")
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="missing model.safetensors, miditok.json, midistruct.json"):
        check_checkpoint(tmp_path / "ck")


def test_cli_train(shards, tmp_path, capsys):
    args = ["train", "--config", "tiny", "--quiet", "--set", f"data.output={shards}", "--set", f"train.run_dir={tmp_path}/r",
            "--set", "train.max_steps=2", "--set", "train.eval_every=2"]
    assert main(args) == 0
    assert "trained 2 steps" in capsys.readouterr().out


@pytest.mark.skipif(sys.platform != "linux", reason="gloo smoke test on Linux CPUs")
def test_torchrun_two_processes(shards, tmp_path):
    """The same command under torchrun --nproc_per_node=2 (DDP, gloo on CPU) trains and saves once."""
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "midistruct", "train", "--config", "tiny",
           "--quiet", "--set", f"data.output={shards}", "--set", f"train.run_dir={tmp_path / 'ddp'}",
           "--set", "train.max_steps=4", "--set", "train.eval_every=2", "--set", "train.batch_size=4"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    assert check_checkpoint(tmp_path / "ddp" / "last")["step"] == 4
    assert result.stdout.count("trained 4 steps") == 1  # only rank 0 reports


def test_epoch_batches_are_bucketed_and_deterministic(shards, tmp_path):
    trainer = Trainer(_cfg(shards, tmp_path / "r", "train.batch_size=4"), progress=False)
    batches = trainer._epoch_batches(0)
    flat = np.concatenate(batches)
    n = len(trainer.train_ds)
    assert len(flat) == len(set(flat.tolist())) == (n // 4) * 4
    assert all(len(b) == 4 for b in batches)
    assert all(np.array_equal(a, b) for a, b in zip(batches, trainer._epoch_batches(0)))
    assert not all(np.array_equal(a, b) for a, b in zip(batches, trainer._epoch_batches(1)))
    lengths = trainer.train_ds.lengths()
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    shuffled = np.random.default_rng(0).permutation(n)[: len(flat)].reshape(-1, 4)
    assert spread < np.mean([np.ptp(lengths[b]) for b in shuffled])  # similar lengths share a batch


def test_onset_f1_known_values():
    from midistruct.training.validation import onset_f1

    ref = np.array([[0.0, 0.5, 60], [0.5, 0.5, 62], [1.0, 1.0, 64], [2.0, 1.0, 65]])
    assert onset_f1(ref, ref) == 1.0
    shifted = ref.copy()
    shifted[:, 0] += 0.125  # one grid step later: no onset matches
    assert onset_f1(ref, shifted) == 0.0
    half = np.concatenate([ref[:2], [[1.0, 1.0, 70], [3.0, 1.0, 65]]])
    assert onset_f1(ref, half) == pytest.approx(0.5)
    longer = ref.copy()
    longer[:, 1] *= 2  # offsets are ignored
    assert onset_f1(ref, longer) == 1.0
    assert onset_f1(ref, np.zeros((0, 3))) == 0.0


def test_cli_evaluate(shards, tmp_path, capsys):
    Trainer(_cfg(shards, tmp_path / "run", "train.max_steps=2", "train.eval_every=2"), progress=False).run()
    assert main(["evaluate", str(tmp_path / "run" / "last"), "--split", "valid", "--windows", "8", "--free-run", "4",
                 "--interpolations", "2", "--judge", str(tmp_path / "run" / "last"), "--beams", "3"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["windows"] == 8 and result["free_run_windows"] == 4 and result["step"] == 2
    assert 0.0 <= result["free_onset_f1"] <= 1.0 and 0.0 <= result["token_accuracy"] <= 1.0
    assert 0.0 <= result["free_step_accuracy"] <= 1.0 and 0.0 <= result["free_step_accuracy_zero_latent"] <= 1.0
    assert 0.0 <= result["free_onset_offset_f1"] <= result["free_onset_f1"] <= 1.0  # offsets only remove matches
    assert 0.0 <= result["free_step_accuracy_shuffled_latent"] <= 1.0
    # issue 14's headline beside its floor, greedy and sampled (the monotone does not depend on the model)
    assert 0.0 <= result["free_onset_pitch_accuracy"] <= 1.0 and result["free_onsets"] > 0
    assert 0.0 < result["free_monotone_onset_pitch_accuracy"] <= 1.0
    assert 0.0 <= result["free_sampled_onset_pitch_accuracy"] <= 1.0 and result["free_sample_temperature"] == 0.5
    assert 0.0 <= result["free_beam_onset_pitch_accuracy"] <= 1.0 and result["free_beams"] == 3  # beam search too
    assert 0.0 <= result["free_onset_accuracy"] <= 1.0
    assert result["kl_bits_per_segment"] > 0
    assert result["interpolation.pairs"] >= 1 and result["interpolation.valid"] == 1.0
    assert -1.0 <= result["interpolation.steps.spearman_a"] <= 1.0
    assert result["interpolation.judge_nll_inputs"] > 0 and result["interpolation.judge_nll_inner"] > 0
    by_type = {k.split(".", 1)[1]: v for k, v in result.items() if k.startswith("token_accuracy.")}
    assert {"Bar", "Position", "Pitch", "Duration", "EOS"} <= set(by_type)
    assert min(by_type.values()) <= result["token_accuracy"] <= max(by_type.values())  # a weighted mean of them
    # per note = per token x tokens per note (each REMI note is at least Position/Pitch/Duration: >= 3 tokens)
    ratio = result["neg_elbo_per_note"] / result["neg_elbo_per_token"]
    assert ratio == pytest.approx(result["recon_nll_per_note"] / result["recon_nll_per_token"]) and ratio > 3.0


def test_segment_only_model_trains_and_evaluates(shards, tmp_path, capsys):
    """The flat ablation (no bar codes) runs the whole loop: its free-running zero/shuffled latents have no z_bar."""
    Trainer(_cfg(shards, tmp_path / "flat", "model.bar_latents=false", "train.max_steps=2", "train.eval_every=2"),
            progress=False).run()
    assert main(["evaluate", str(tmp_path / "flat" / "last"), "--split", "valid", "--windows", "4",
                 "--free-run", "4"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["kl_bits_bar_codes"] == 0.0 and result["kl_bits_segment_code"] > 0
    assert 0.0 <= result["free_step_accuracy_zero_latent"] <= 1.0
    assert 0.0 <= result["free_step_accuracy_shuffled_latent"] <= 1.0


def test_teacher_forced_controls_known_values(shards, tmp_path):
    """Rolling a one-window batch gives the window its own codes back: the shuffled control equals the
    plain teacher-forced NLL; the zero control equals a forward pass with zero codes; a plain LM has none."""
    import contextlib

    from midistruct.model.modeling import shift_right
    from midistruct.shards.dataset import WindowDataset, collate
    from midistruct.training import validation

    Trainer(_cfg(shards, tmp_path / "run", "train.max_steps=2", "train.eval_every=2"), progress=False).run()
    model, tokenizer, _ = load_checkpoint(tmp_path / "run" / "last")
    ds = WindowDataset([shards], "train")
    one = [collate([ds[0]])]
    plain = validation.teacher_forced(model, one, device="cpu", autocast=contextlib.nullcontext, tokenizer=tokenizer)
    controls = validation.teacher_forced_controls(model, one, device="cpu", tokenizer=tokenizer)
    assert controls["recon_nll_per_token_shuffled_latent"] == pytest.approx(plain["recon_nll_per_token"], rel=1e-5)
    assert controls["token_accuracy_shuffled_latent.Pitch"] == pytest.approx(plain["token_accuracy.Pitch"])
    batch = one[0]
    latents = model.encode(batch["input_ids"], batch["attention_mask"], batch["bar_ids"], sample=False)
    with torch.no_grad():
        logits = model(decoder_input_ids=shift_right(batch["input_ids"], bos_token_id=model.config.bos_token_id),
                       z_bar=torch.zeros_like(latents.z_bar), z_segment=torch.zeros_like(latents.z_segment)).logits
    zero_nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100)
    assert controls["recon_nll_per_token_zero_latent"] == pytest.approx(float(zero_nll), rel=1e-5)
    assert controls["recon_nll_per_token_zero_latent"] != pytest.approx(plain["recon_nll_per_token"], rel=1e-5)
    model.config.latent_mode = "none"  # what a plain-LM checkpoint says: its codes mean nothing
    assert validation.teacher_forced_controls(model, one, device="cpu", tokenizer=tokenizer) == {}


def test_a_time_limit_before_the_first_evaluation_still_leaves_best(shards, tmp_path):
    """quickstart on a slow machine: the time limit came before step eval_every, and best/ was missing."""
    cfg = _cfg(shards, tmp_path / "run", "train.eval_every=1000", "train.save_every=1000", "train.max_steps=1000",
               "train.max_minutes=0.0001")
    trainer = Trainer(cfg, progress=False)
    trainer.run()
    assert 0 < trainer.state["step"] < 1000
    check_checkpoint(tmp_path / "run" / "best")
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if x["split"] == "valid"] == [trainer.state["step"]]
    last = json.loads((tmp_path / "run" / "last" / "trainer_state.json").read_text())["state"]["position"]
    assert last["best"] == trainer.state["best"] < float("inf")  # last knows the best it saved

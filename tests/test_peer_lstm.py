"""The MusicVAE-style LSTM peer (bench/peer_lstm.py, issue 14 item 3): grid conversion, exact resume, and
evaluation by midistruct's metric code under ``midistruct evaluate``'s names."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _cli():
    spec = importlib.util.spec_from_file_location("peer_lstm", BENCH / "peer_lstm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # puts bench/ on sys.path, so the peer package imports below
    return module


CLI = _cli()
from peer import grid  # noqa: E402
from peer.evaluate import free_running  # noqa: E402
from peer.train import load_peer  # noqa: E402

from midistruct.metrics.steps import NO_EVENT, NOTE_OFF, melody_events  # noqa: E402


@pytest.fixture(scope="module")
def data(checkpoint) -> Path:
    """The tiny synthetic shards (10 random 8-bar 4/4 pieces on the 8th grid) the session checkpoint trained on."""
    return checkpoint.parent.parent / "data"


def _train(data: Path, run_dir: Path, *extra: str) -> dict:
    argv = ["train", "--data", str(data), "--run-dir", str(run_dir), "--config", "tiny", "--threads", "1",
            "--eval-every", "2", "--save-every", "2", "--log-every", "1", "--quiet", *extra]
    return _run(argv)


def _run(argv: list[str]) -> dict:
    from contextlib import redirect_stdout
    from io import StringIO

    out = StringIO()
    with redirect_stdout(out):
        assert CLI.main(argv) == 0
    return json.loads(out.getvalue())


# ---- the grid ----------------------------------------------------------------------------------------------

def test_classes_follow_magentas_melody_encoding():
    events = np.array([60, NO_EVENT, NOTE_OFF, NO_EVENT, 21, 108])
    classes = grid.events_to_classes(events)
    assert classes.tolist() == [2 + 60 - 21, 0, 1, 0, 2, 89] and grid.N_CLASSES == 90
    assert grid.classes_to_events(classes).tolist() == events.tolist()


def test_grid_notes_and_events_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(50):  # random monophonic lines: notes, rests, holds on 32 steps
        onsets = np.sort(rng.choice(32, size=int(rng.integers(1, 12)), replace=False))
        ends = [min(int(rng.integers(o + 1, o + 6)), nxt) for o, nxt in zip(onsets, [*onsets[1:], 32])]
        notes = np.array([(o / 4, (e - o) / 4, int(rng.integers(40, 90))) for o, e in zip(onsets, ends)])
        classes = grid.events_to_classes(melody_events(notes, 32))
        back = grid.grid_notes(classes)
        np.testing.assert_allclose(back, notes)
        assert grid.events_to_classes(melody_events(back, 32)).tolist() == classes.tolist()


def test_notes_ids_decode_to_the_same_notes(data):
    from midistruct.metrics.notes import notes_of
    from midistruct.shards.reader import ShardSet
    from midistruct.tokens.tokenizer import decode_ids

    tokenizer = ShardSet(data).tokenizer()
    notes = np.array([[0.0, 1.0, 60], [1.0, 0.25, 62], [1.5, 2.5, 64], [4.75, 3.25, 67]])
    assert np.allclose(notes_of(decode_ids(tokenizer, grid.notes_ids(tokenizer, notes))), notes)
    assert grid.notes_ids(tokenizer, notes[:0]) == []


def test_shard_windows_become_grids_and_unreadable_ones_are_counted(data):
    from midistruct.shards.reader import ShardSet

    shards = ShardSet(data)
    found = grid.load_grids(shards, "train")
    assert len(found) == shards.split("train").n_windows - sum(found.skipped.values()) and len(found) > 0
    assert found.grids.shape == (len(found), 32) and found.grids.max() < grid.N_CLASSES
    # a window in 3/4 is left out by reason
    tokenizer = shards.tokenizer()
    from midistruct.tokens.remi import RemiVocab

    vocab = RemiVocab(tokenizer)
    ids = shards.split("train").window(0)[0].copy()
    ids[1] = vocab.time_signature_id("3/4")  # REMI: Bar, TimeSig, ...
    assert grid.window_grid(tokenizer, vocab, ids, bars=2)[:2] == (None, "meter")


def test_transposed_moves_each_window_by_one_allowed_shift():
    grids = np.zeros((3, 32), dtype=np.uint8)
    grids[:, 0], grids[:, 4], grids[:, 8] = 40, 1, 50
    grids[2, 8] = 89  # the top of the piano: this window can only move down
    moved = grid.transposed(grids, low=-5, high=6, rng=np.random.default_rng(1))
    shift = moved.astype(int)[:, 0] - 40
    assert np.all(moved.astype(int)[:, 8] - grids.astype(int)[:, 8] == shift) and moved[:, 4].tolist() == [1, 1, 1]
    assert np.all((-5 <= shift) & (shift <= 6)) and shift[2] <= 0
    assert np.array_equal(moved, grid.transposed(grids, low=-5, high=6, rng=np.random.default_rng(1)))


def test_the_true_grid_scores_perfectly_through_midistructs_scorer(data):
    """The scoring path itself: decoding a window's own grid scores 1.0 under midistruct's metrics."""
    from midistruct.shards.reader import ShardSet
    from midistruct.training import validation

    shards = ShardSet(data)
    found = grid.load_grids(shards, "valid")
    tokenizer, arrays = shards.tokenizer(), shards.split("valid")
    refs = [arrays.window(int(w))[0].tolist() for w in found.windows[:8]]
    estimates = [grid.notes_ids(tokenizer, grid.grid_notes(g)) for g in found.grids[:8]]
    scores = validation.score_reconstructions(tokenizer, refs, estimates)
    assert scores["step_accuracy"] == 1.0 and scores["onset_f1"] == 1.0 and scores["onset_pitch_accuracy"] == 1.0


# ---- training, resume, evaluation ---------------------------------------------------------------------------

def test_two_steps_then_resume_equals_four_steps(data, tmp_path):
    straight = _train(data, tmp_path / "a", "--max-steps", "4")
    _train(data, tmp_path / "b", "--max-steps", "2")
    resumed = _train(data, tmp_path / "b", "--resume", "--max-steps", "4")
    assert straight["step"] == resumed["step"] == 4 and resumed["steps_this_run"] == 2
    a, _ = load_peer(tmp_path / "a" / "last")
    b, _ = load_peer(tmp_path / "b" / "last")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
    lines = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if r["split"] == "train"] == [1, 2, 3, 4]
    assert all(r["windows_seen"] == r["step"] * 4 and r["seconds"] >= 0 for r in lines)
    valid = [r for r in lines if r["split"] == "valid"]
    assert [r["step"] for r in valid] == [2, 4] and {"free_step_accuracy", "free_onset_pitch_accuracy"} <= set(valid[0])
    assert not list((tmp_path / "b" / "last").glob("*.pt"))  # safetensors + JSON only


def test_a_run_is_not_overwritten_unless_asked(data, tmp_path):
    _train(data, tmp_path / "r", "--max-steps", "1")
    with pytest.raises(FileExistsError):
        _train(data, tmp_path / "r", "--max-steps", "1")
    assert _train(data, tmp_path / "r", "--max-steps", "1", "--overwrite")["step"] == 1


def test_evaluate_prints_midistructs_metric_names(data, tmp_path):
    from midistruct.evaluation.evaluate import FREE_METRICS

    _train(data, tmp_path / "run", "--max-steps", "2")
    out = _run(["evaluate", str(tmp_path / "run"), "--windows", "16", "--free-run", "8"])
    for suffix in ("", "_shuffled_latent", "_zero_latent"):
        assert {f"free_{m}{suffix}" for m in FREE_METRICS} <= set(out)
    assert {f"free_sampled_{m}" for m in FREE_METRICS} <= set(out)
    assert {"free_monotone_onset_pitch_accuracy", "free_onsets", "recurring_windows_excluded", "windows",
            "seconds_trained", "windows_seen", "kl_bits_per_segment", "neg_elbo_per_note"} <= set(out)
    assert out["windows_seen"] == 8 and out["seconds_trained"] > 0 and 0 < out["free_run_windows"] <= 8
    assert all(0.0 <= out[f"free_{m}"] <= 1.0 for m in FREE_METRICS)


def test_evaluate_main_scores_a_midistruct_checkpoint_on_the_peers_windows(data, checkpoint, tmp_path):
    _train(data, tmp_path / "run", "--max-steps", "1")
    peer = _run(["evaluate", str(tmp_path / "run"), "--windows", "8", "--free-run", "4"])
    main = _run(["evaluate-main", str(checkpoint), "--data", str(data), "--windows", "8", "--free-run", "4",
                 "--sample-temperature", "0"])
    assert main["model"] == "midistruct" and main["windows"] == peer["windows"]
    assert main["free_run_windows"] == peer["free_run_windows"] and main["free_onsets"] == peer["free_onsets"]
    assert "token_accuracy" in main and "free_step_accuracy_zero_latent" in main


def test_greedy_decoding_agrees_with_the_teacher_forced_pass():
    """Step-by-step decoding (initial state, z at every step, previous class as input) is the same network as the
    teacher-forced pass: fed its own greedy output, the teacher-forced argmax gives that output back."""
    from peer.model import MelodyVAE, named_config

    torch.manual_seed(0)
    model = MelodyVAE(named_config("tiny")).eval()
    z = torch.randn(5, model.cfg.z_dim) * 3
    decoded = model.decoder.decode(z, 32)
    assert torch.equal(model.decoder(decoded, z).argmax(-1), decoded)
    with pytest.raises(KeyError, match="cat-mel_2bar_small"):
        named_config("cat-mel_2bar_huge")


def test_free_running_scores_a_batch_from_each_latent(data, tmp_path):
    from midistruct.shards.reader import ShardSet

    _train(data, tmp_path / "run", "--max-steps", "1")
    model, meta = load_peer(tmp_path / "run")
    shards = ShardSet(data)
    found = grid.load_grids(shards, "valid")
    refs = [shards.split("valid").window(int(w))[0].tolist() for w in found.windows[:4]]
    for latent in ("true", "shuffled", "zero"):
        out = free_running(model, shards.tokenizer(), refs, found.grids[:4], latent=latent)
        assert out["windows"] == 4 and 0.0 <= out["step_accuracy"] <= 1.0 and out["onsets"] > 0
    assert meta["kind"] == "musicvae-lstm-peer" and meta["step"] == 1

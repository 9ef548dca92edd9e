"""The benchmarks run end to end in their quick mode and report sane numbers."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GENERATE = REPO / "bench" / "generate.py"
EVALUATE = REPO / "bench" / "evaluate.py"


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_generate", GENERATE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generate_quick_reports_speeds_and_cache_matches_no_cache():
    # One batch size (--batches 8; the default is 1,8): every measurement is a fresh process that spends ~4 s
    # importing torch and transformers, and 4 processes (2 speed, 2 interpolation) keep the test near 25 s.
    cmd = [sys.executable, str(GENERATE), "--quick", "--batches", "8"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    assert {"machine", "date", "command", "config", "kv_cache", "interpolation", "identical"} <= set(out)
    assert out["machine"]["threads"] == 1 and out["machine"]["torch"] and out["config"]["new_tokens"] == 64
    result = out["kv_cache"]["batch_8"]
    for variant in ("cache", "no_cache"):
        assert result[variant]["seconds"] > 0 and result[variant]["tokens_per_s"] > 0
    assert result["speedup"] > 0
    assert isinstance(out["kv_cache"]["goal_met"], bool)
    # greedy decoding writes the same tokens with and without the cache, and no-cache really re-reads everything
    check = out["kv_cache"]["check"]
    assert out["identical"] is True and check["identical"] is True and check["max_abs_logit_diff"] < 1e-3
    assert check["cache_disabled"] is True
    interp = out["interpolation"]
    assert interp["segments"] == ("nottingham" if _bench_module().NOTTINGHAM.is_dir() else "synthetic")
    for variant in ("batched", "sequential"):
        assert interp[variant]["seconds"] > 0 and interp[variant]["per_step_seconds"] > 0
        assert interp[variant]["tokens_generated"] > 0 and len(interp[variant]["tokens_per_step"]) == 8
    assert len(interp["batched"]["generate_calls"]) < len(interp["sequential"]["generate_calls"]) == 8
    assert interp["identical_batched_vs_sequential"] is True


def test_generate_falls_back_to_synthetic_segments(tmp_path):
    bench = _bench_module()
    args = bench.parse(["--quick", "--data", str(tmp_path / "absent")])
    scores, source, names = bench.segments(args)
    assert source == "synthetic" and len(scores) == 2 == len(names)
    for score in scores:
        onsets = [n.time for t in score.tracks for n in t.notes]
        assert onsets and max(onsets) < 4 * 4 * score.tpq  # four 4/4 bars


def test_evaluate_quick_reports_rates_and_consistent_speedups():
    # 3 fresh processes (batched, sequential, no_cache), ~5 s each, mostly importing torch and transformers.
    done = subprocess.run([sys.executable, str(EVALUATE), "--quick"], capture_output=True, text=True, timeout=120,
                          cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    assert {"machine", "date", "command", "config", "batched", "sequential", "no_cache", "speedup",
            "tokens_per_s_ratio", "agreement_with_batched"} <= set(out)
    assert out["benchmark"] == "evaluate" and out["machine"]["threads"] == 1 and out["machine"]["torch"]
    config = out["config"]
    windows, batch = config["windows"], config["batch"]
    assert (windows, batch) == (8, 4) and config["source"].startswith("synthetic")
    assert config["window_tokens_max"] + 1 <= config["max_positions"]
    calls = {"batched": -(-windows // batch), "sequential": windows, "no_cache": -(-windows // batch)}
    for variant, result in ((v, out[v]) for v in calls):
        assert result["batch"] == (1 if variant == "sequential" else batch)
        assert result["generate_calls"] == calls[variant]
        assert result["seconds"] > 0 and result["tokens_generated"] > 0
        # the rates are the measured numbers divided by the best median time (up to rounding)
        assert result["windows_per_s"] == pytest.approx(windows / result["seconds"], rel=1e-2)
        assert result["tokens_per_s"] == pytest.approx(result["tokens_generated"] / result["seconds"], rel=1e-2)
        assert result["seconds"] == min(result["seconds_per_round"])
        assert 0 < result["generate_share"] <= 1
        # generation is bounded: at most the longest window + 8 new tokens per row
        assert result["tokens_generated"] <= result["decode_row_steps"] <= windows * (config["window_tokens_max"] + 8)
        assert result["decoder_tokens_fed_as_expected"] is True  # B per step with the cache, B*N(N+1)/2 without
    assert out["no_cache"]["decoder_tokens_fed"] > out["batched"]["decoder_tokens_fed"]
    for other in ("sequential", "no_cache"):
        key = f"batched_vs_{other}"
        # speed-ups agree with the measured times and rates (no threshold: machines are noisy)
        assert out["speedup"][key] == pytest.approx(out[other]["seconds"] / out["batched"]["seconds"], rel=1e-2)
        assert out["speedup"][key] == pytest.approx(
            out["batched"]["windows_per_s"] / out[other]["windows_per_s"], rel=1e-2)
        assert out["tokens_per_s_ratio"][key] == pytest.approx(
            out["batched"]["tokens_per_s"] / out[other]["tokens_per_s"], rel=1e-2)
        # the same windows decode to the same tokens (greedy), whatever the batch and the cache
        assert out["agreement_with_batched"][other] == 1.0
    # the cache changes how, not what: same tokens, same scores
    assert out["tokens_sha1"]["no_cache"] == out["tokens_sha1"]["batched"]
    assert out["no_cache"]["tokens_generated"] == out["batched"]["tokens_generated"]
    for metric in ("onset_f1", "onset_offset_f1", "step_accuracy", "exact_match"):
        assert out["no_cache"][metric] == out["batched"][metric]


def test_form_quick_times_a_shipped_model_against_the_notes_alone(tmp_path):
    """bench/form.py on synthetic 3-minute songs (no dataset): each song analysed from the shipped model's codes and
    from the notes; the summary is the songs' own times and the goal is judged on the slowest."""
    done = subprocess.run([sys.executable, str(REPO / "bench" / "form.py"), "--quick", "--data", str(tmp_path)],
                          capture_output=True, text=True, timeout=240, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    assert out["benchmark"] == "form" and out["machine"]["threads"] == 1
    assert out["config"]["source"] == "synthetic" and out["config"]["model"] == "pop909-4bar"
    songs = out["songs"]
    assert len(songs) == 2 and all(s["bars"] == 90 and s["minutes"] == 3.0 and s["sections_codes"] >= 1 for s in songs)
    assert out["codes"]["seconds_max"] == max(s["codes_seconds"] for s in songs) > 0
    assert out["tracks"]["seconds_max"] == max(s["tracks_seconds"] for s in songs) > 0
    assert out["model_load_seconds"] > 0
    assert out["goal_met"] == (out["codes"]["seconds_per_3_minutes_max"] < 5.0)


def test_model_cards_reads_each_card_command_and_metric():
    """bench/model_cards.py turns a card's evaluate command into the same evaluation on the shipped weights."""
    spec = importlib.util.spec_from_file_location("bench_model_cards", REPO / "bench" / "model_cards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from midistruct.model import pretrained

    for name in pretrained.names():  # every shipped card can be checked
        card = pretrained.describe(name)
        run = module.card_run(card)
        assert run["windows"] > 0 and run["free_run"] > 0
        assert module.metric_key(card) in ("free_onset_pitch_accuracy", "free_onset_f1")
    card = {"name": "x", "metric": {"name": "held-out free-running pitch accuracy at the true onsets (16 bars)",
                                    "command": "midistruct evaluate runs/x/best --windows 256 --free-run 64 --split valid"}}
    assert module.card_run(card) == {"windows": 256, "free_run": 64, "interpolations": 0, "split": "valid"}
    with pytest.raises(SystemExit, match="no evaluate key known"):
        module.metric_key({"name": "x", "metric": {"name": "something else"}})

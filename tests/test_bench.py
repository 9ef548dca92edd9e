"""The benchmarks run end to end in their quick mode and report sane numbers."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GENERATE = REPO / "bench" / "generate.py"


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

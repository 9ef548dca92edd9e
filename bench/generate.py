"""Benchmark generation speed: the KV cache against no cache, and an 8-step interpolation through the public API.

Prints JSON with two parts, each measured against a baseline in the same run:

- ``kv_cache``: ``MidiStructModel.generate`` sampling exactly ``--tokens`` new tokens (512; EOS suppressed by
  ``min_new_tokens``) from random latents, with the KV cache and with ``use_cache=False`` (which makes
  ``prepare_inputs_for_generation`` feed the whole sequence at every step), at batch 1 and 8, on the ``small``
  config (``configs/small.yaml``) with random-init weights: seconds per ``generate`` call (the median of the
  timed calls after a short warm-up), tokens/s, and the cache's speed-up (goal: >= 5x at 512 tokens). A check
  (``--check-batch`` rows, after the first process's timing) runs both paths greedily on the same latents and
  reports whether they wrote identical tokens, how far their logits differ, and how many tokens the decoder was
  fed (B*N with the cache, B*N(N+1)/2 without: proof that ``use_cache=False`` recomputes everything).
  These rows time the bare decoder on purpose, with no REMI grammar constraint (the cache's effect alone, on
  exactly ``--tokens`` tokens); the grammar-constrained path users get is timed by ``interpolation`` below.
- ``interpolation``: wall time of ``MidiStruct.interpolate(a, b, steps=8)`` (greedy, slerp, the REMI grammar
  on; encoding included) between the first 4 bars of two Nottingham tunes (synthetic 4-bar pieces when
  ``../shared/datasets`` is absent), with ``runs/small/best`` (else a random-init ``small`` model); goal < 2 s.
  Its baseline, ``sequential``, is the same call with every step decoded by its own ``decode`` (one
  ``generate`` per step, as before decoding was batched).

Every measurement runs in a fresh process with ``torch.set_num_threads(--threads)``, in ABBA order (cache,
no-cache, no-cache, cache; batched, sequential, sequential, batched) so that drift in a shared machine's load
falls on both alike; a variant's time is the best of its rounds' medians. Times are also taken in process CPU
time: ``cpu_busy_fraction`` below 1 means other jobs took our core.

    python bench/generate.py                     # 1 thread, small config, 512 tokens, batch 1 and 8 (~10 min)
    python bench/generate.py --quick             # tiny sizes: a smoke test in seconds
    python bench/generate.py --checkpoint DIR    # interpolate with another checkpoint
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ helpers, also when imported by path
from timing import abba, best_median, machine, setup, timed, versions  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NOTTINGHAM = ROOT.parent / "shared" / "datasets" / "nottingham"
DEFAULT_CHECKPOINT = ROOT / "runs" / "small" / "best"
TUNES = ("reelsa-c1", "hpps1")  # a reel and a hornpipe, both 4/4: every step shares one window shape
QUICK_MODEL = ["model.d_model=64", "model.n_heads=4", "model.encoder_layers=1", "model.decoder_layers=1",
               "model.ffn_dim=256", "model.latent_dim_bar=16", "model.latent_dim_segment=32"]
QUICK_INTERPOLATE = {"max_tokens_per_bar": 16}  # a random-init model writes until the cap: keep it short
GOAL_SPEEDUP = 5.0
GOAL_INTERPOLATION_S = 2.0


# --------------------------------------------------------------------------- models and inputs


def run_config(args):
    """The ``small`` run config (tiny sizes with ``--quick``), its windows long enough for ``--tokens``."""
    from midistruct.config import load_config

    cfg = load_config("small", QUICK_MODEL if args.quick else [])
    cfg.segments.max_tokens = max(cfg.segments.max_tokens, args.tokens)  # max_positions = max_tokens + 1
    return cfg


def build_model(cfg, *, seed: int = 0):
    """``(model, tokenizer)``: a random-init ``MidiStructModel`` in eval mode, built as the trainer builds it."""
    import torch

    from midistruct.model import MidiStructModel
    from midistruct.tokens.tokenizer import build_tokenizer
    from midistruct.training.loop import model_config

    tokenizer = build_tokenizer(cfg.tokenizer)
    torch.manual_seed(seed)
    return MidiStructModel(model_config(cfg, tokenizer)).eval(), tokenizer


def random_codes(config, *, batch: int, bars: int, seed: int) -> dict:
    """BOS prompts (B, 1) and codes drawn from the prior: z_bar (B, NB, Zb), z_segment (B, Zs)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.full((batch, 1), config.bos_token_id),
            "z_bar": torch.randn(batch, bars, config.latent_dim_bar, generator=g),
            "z_segment": torch.randn(batch, config.latent_dim_segment, generator=g)}


def generate_kwargs(config, *, tokens: int, use_cache: bool, sample: bool) -> dict:
    """Exactly ``tokens`` new tokens (EOS is masked until then), nucleus-free sampling or greedy."""
    sampling = {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0} if sample else {"do_sample": False}
    return {"min_new_tokens": tokens, "max_new_tokens": tokens, "use_cache": use_cache,
            "eos_token_id": config.eos_token_id, "pad_token_id": config.pad_token_id, **sampling}


# --------------------------------------------------------------------------- timing


# --------------------------------------------------------------------------- KV cache (child processes)


def speed_child(args) -> dict:
    """Time ``generate`` sampling ``--tokens`` new tokens at ``--batch``, with or without the KV cache."""
    import torch

    setup(args)
    model, _ = build_model(run_config(args))
    inputs = random_codes(model.config, batch=args.batch, bars=args.bars, seed=1)
    use_cache = args.variant == "cache"
    warm = generate_kwargs(model.config, tokens=min(args.tokens, 16), use_cache=use_cache, sample=True)
    kwargs = generate_kwargs(model.config, tokens=args.tokens, use_cache=use_cache, sample=True)
    with torch.no_grad():
        model.generate(**inputs, **warm)
        run = timed(lambda: model.generate(**inputs, **kwargs), repeats=args.repeats, budget=args.budget)
    shape = list(run.pop("last").shape)
    if shape != [args.batch, 1 + args.tokens]:
        raise RuntimeError(f"generate returned {shape}, expected {[args.batch, 1 + args.tokens]}")
    params = sum(p.numel() for p in model.parameters())
    check = {"check": greedy_check(model, batch=args.check_batch, args=args)} if args.check else {}
    return {**run, "output_shape": shape, "params": params, "max_positions": model.config.max_positions,
            "vocab_size": model.config.vocab_size, **check, **versions()}


def greedy_check(model, *, batch: int, args) -> dict:
    """Greedy decoding of the same latents with and without the cache: tokens, logits, decoder inputs fed.
    (Run after a child's timed calls: it checks correctness and times nothing, so it needs no process of its own.)"""
    import torch

    inputs = random_codes(model.config, batch=batch, bars=args.bars, seed=2)
    fed = [0]
    hook = model.decoder.register_forward_pre_hook(lambda module, a: fed.__setitem__(0, fed[0] + a[0].numel()))
    out = {}
    for use_cache in (True, False):
        fed[0] = 0
        kwargs = generate_kwargs(model.config, tokens=args.tokens, use_cache=use_cache, sample=False)
        with torch.no_grad():
            result = model.generate(**inputs, **kwargs, output_logits=True, return_dict_in_generate=True)
        out[use_cache] = (result.sequences, torch.stack(result.logits, dim=1), fed[0])  # (B, 1+N), (B, N, V)
    hook.remove()
    (seq_c, logits_c, fed_c), (seq_n, logits_n, fed_n) = out[True], out[False]
    b, n = batch, args.tokens
    return {"batch": b, "tokens": n, "identical": bool(torch.equal(seq_c, seq_n)),
            "max_abs_logit_diff": float((logits_c - logits_n).abs().max()),
            "distinct_tokens": int(seq_c[:, 1:].unique().numel()),
            "decoder_tokens_fed": {"cache": fed_c, "no_cache": fed_n,
                                   "expected_cache": b * n, "expected_no_cache": b * n * (n + 1) // 2},
            "cache_disabled": fed_c == b * n and fed_n == b * n * (n + 1) // 2}


# --------------------------------------------------------------------------- interpolation (child processes)


def load_pipeline(args):
    """``(MidiStruct, description)``: ``--checkpoint`` (default ``runs/small/best``) when it exists and not
    ``--quick``, else a random-init model of the bench's config, wrapped directly."""
    from midistruct.generation.pipeline import MidiStruct

    if args.checkpoint:
        return MidiStruct.from_pretrained(args.checkpoint), args.checkpoint
    if DEFAULT_CHECKPOINT.is_dir() and not args.quick:
        return MidiStruct.from_pretrained(DEFAULT_CHECKPOINT), str(DEFAULT_CHECKPOINT.relative_to(ROOT))
    cfg = run_config(args)
    model, tokenizer = build_model(cfg)
    kind = "quick" if args.quick else "small"
    return MidiStruct(model, tokenizer, {"run_config": cfg.model_dump(mode="json")}), f"random-init {kind} model"


def synthetic_segment(*, bars: int, seed: int):
    """A 4/4 melody of eighth and quarter notes with a held chord per bar (a stand-in for a folk tune)."""
    import numpy as np
    import symusic

    rng, tpq = np.random.default_rng(seed), 480
    score = symusic.Score(tpq)
    score.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    score.tempos.append(symusic.Tempo(0, 120.0))
    melody, chords = symusic.Track(name="melody"), symusic.Track(name="chords")
    tick, pitch = 0, 67
    while tick < bars * 4 * tpq:
        length = int(rng.choice([tpq // 2, tpq]))
        pitch = int(np.clip(pitch + rng.integers(-3, 4), 60, 81))
        melody.notes.append(symusic.Note(tick, length, pitch, 90))
        tick += length
    for bar in range(bars):
        root = 48 + int(rng.choice([0, 5, 7]))
        chords.notes.extend(symusic.Note(bar * 4 * tpq, 4 * tpq, root + i, 70) for i in (0, 4, 7))
    score.tracks.extend([melody, chords])
    return score


def segments(args) -> tuple[list, str, list[str]]:
    """The two pieces to interpolate: the first ``--bars`` bars of ``--tunes`` (Nottingham full renderings,
    melody + chords), or synthetic pieces when the data folder is absent; with where they came from."""
    from midistruct.corpus.nottingham import midi_folder
    from midistruct.tokens.segment import crop_bars
    from midistruct.tokens.validate import load_score

    folder = midi_folder(Path(args.data)) if Path(args.data).is_dir() else None
    if folder is None:
        return [synthetic_segment(bars=args.bars, seed=s) for s in (1, 2)], "synthetic", ["synthetic-1", "synthetic-2"]
    names = args.tunes.split(",")
    return [crop_bars(load_score(folder / f"{name}.mid"), args.bars) for name in names], "nottingham", names


def record_generate(model) -> list:
    """Wrap ``model.generate`` (on the instance) to record each call's output (B, prompt + new)."""
    calls, original = [], model.generate

    def generate(*a, **kw):
        out = original(*a, **kw)
        prompt = 1 if kw.get("input_ids") is None else kw["input_ids"].shape[1]
        calls.append((out, prompt))
        return out

    model.generate = generate
    return calls


def interpolate_child(args) -> dict:
    """Time ``ms.interpolate(a, b, steps=--steps)``: as the API does it, or each step decoded on its own."""
    setup(args)
    ms, checkpoint = load_pipeline(args)
    (a, b), source, names = segments(args)
    if args.variant == "sequential":  # the baseline: one generate per step (instance attribute shadows the method)
        ms.decode_many = lambda latents, **kw: [ms.decode(z, **kw) for z in latents]
    kw = QUICK_INTERPOLATE if args.quick else {}
    calls = record_generate(ms.model)

    def interpolate():
        calls.clear()  # keep the last call's generate outputs only
        return ms.interpolate(a, b, steps=args.steps, **kw)

    interpolate()  # warm-up
    run = timed(interpolate, repeats=args.repeats, budget=args.budget)
    pad = ms.model.config.pad_token_id
    rows = [out[i, prompt:].tolist() for out, prompt in calls for i in range(out.shape[0])]
    new = [sum(t != pad for t in row) for row in rows]  # EOS included, padding after it not
    return {"seconds": run["seconds"], "cpu_seconds": run["cpu_seconds"], "checkpoint": checkpoint,
            "segments": source, "tunes": names, "input_tokens": [sum(len(w) for w in ms.windows(s)) for s in (a, b)],
            "generate_calls": [list(out.shape) for out, _ in calls], "tokens_generated": sum(new),
            "tokens_per_step": new, "decode_steps": sum(out.shape[1] - prompt for out, prompt in calls),
            "notes_per_step": [s.note_num() for s in run["last"]],
            "tokens_sha1": hashlib.sha1(json.dumps([r[:n] for r, n in zip(rows, new)]).encode()).hexdigest(),
            "interpolate_kwargs": kw, **versions()}


# --------------------------------------------------------------------------- the parent: order and summary


def child_argv(args) -> list[str]:
    argv = ["--threads", str(args.threads), "--tokens", str(args.tokens), "--repeats", str(args.repeats),
            "--budget", str(args.budget), "--steps", str(args.steps), "--bars", str(args.bars),
            "--data", args.data, "--tunes", args.tunes]
    return argv + (["--checkpoint", args.checkpoint] if args.checkpoint else []) + (["--quick"] if args.quick else [])


def run_child(mode: str, args, *, variant: str = "", batch: int = 1, check: bool = False) -> dict:
    """One measurement in a fresh process (its own threads, allocator and caches)."""
    cmd = [sys.executable, __file__, "--child", mode, "--variant", variant, "--batch", str(batch), *child_argv(args)]
    cmd += ["--check-batch", str(args.check_batch)] + (["--check"] if check else [])
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(args) -> dict:
    """Interpolation ABBA, then cache / no-cache ABBA per batch size; one process each. The first speed
    process also runs the greedy check once its timing is done."""
    interp = {"batched": [], "sequential": []}
    for variant in abba(("batched", "sequential"), args.rounds):
        interp[variant].append(run_child("interpolate", args, variant=variant))
    speed = {}
    for batch in args.batches:
        speed[batch] = {"cache": [], "no_cache": []}
        for i, variant in enumerate(abba(("cache", "no_cache"), args.rounds)):
            first = batch == args.batches[0] and i == 0
            speed[batch][variant].append(run_child("speed", args, variant=variant, batch=batch, check=first))
    check = speed[args.batches[0]]["cache"][0].pop("check")
    return {"interpolation": interp, "check": check, "speed": speed}


def timing(runs: list[dict]) -> dict:
    """Best round's median wall time (and CPU time), each round's median, the timed calls per round."""
    wall, cpu = best_median(runs), best_median(runs, "cpu_seconds")
    return {"seconds": round(wall, 4), "seconds_per_round": [round(statistics.median(r["seconds"]), 4) for r in runs],
            "cpu_seconds": round(cpu, 4), "cpu_busy_fraction": round(cpu / wall / runs[0]["threads"], 3),
            "timed_calls_per_round": [len(r["seconds"]) for r in runs]}


def speed_report(runs: dict, *, batch: int, tokens: int) -> dict:
    out = {}
    for variant in ("cache", "no_cache"):
        t = timing(runs[variant])
        out[variant] = {**t, "tokens_per_s": round(batch * tokens / t["seconds"], 1),
                        "ms_per_token_step": round(1000 * t["seconds"] / tokens, 3)}
    out["speedup"] = round(out["no_cache"]["seconds"] / out["cache"]["seconds"], 2)
    out["speedup_cpu_time"] = round(out["no_cache"]["cpu_seconds"] / out["cache"]["cpu_seconds"], 2)
    return out


def interpolation_report(runs: dict, *, steps: int) -> dict:
    first = runs["batched"][0]
    out = {k: first[k] for k in ("checkpoint", "segments", "tunes", "input_tokens", "interpolate_kwargs")}
    out.update(steps=steps, method="slerp", decoding="greedy, REMI grammar")
    for variant in ("batched", "sequential"):
        r = runs[variant][0]
        t = timing(runs[variant])
        out[variant] = {**t, "per_step_seconds": round(t["seconds"] / steps, 4), "generate_calls": r["generate_calls"],
                        "tokens_generated": r["tokens_generated"], "tokens_per_step": r["tokens_per_step"],
                        "decode_steps": r["decode_steps"], "notes_per_step": r["notes_per_step"]}
    out["speedup_batched_vs_sequential"] = round(out["sequential"]["seconds"] / out["batched"]["seconds"], 2)
    out["identical_batched_vs_sequential"] = len({r["tokens_sha1"] for v in runs.values() for r in v}) == 1
    out["goal"] = f"8-step interpolation < {GOAL_INTERPOLATION_S} s on one core (the public API: batched)"
    out["goal_met"] = out["batched"]["seconds"] < GOAL_INTERPOLATION_S
    return out


def report(args, measured: dict, *, load_start: tuple, started: float) -> dict:
    first = measured["speed"][args.batches[0]]["cache"][0]
    speed = {f"batch_{b}": speed_report(measured["speed"][b], batch=b, tokens=args.tokens) for b in args.batches}
    check = measured["check"]
    return {
        "benchmark": "generate", "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": shlex.join(["python", *sys.argv]), "machine": machine(first, load_start=load_start),
        "config": {"run_config": "small", "model_overrides": QUICK_MODEL if args.quick else [],
                   "params": first["params"], "vocab_size": first["vocab_size"],
                   "max_positions": first["max_positions"], "weights": "random init", "dtype": "fp32",
                   "new_tokens": args.tokens, "batches": args.batches, "bars": args.bars,
                   "sampling": "do_sample, temperature 1, top_k 0, top_p 1; min_new_tokens = max_new_tokens",
                   "rounds": args.rounds, "max_timed_calls": args.repeats, "budget_s": args.budget},
        "kv_cache": {**speed, "goal": f"cache speed-up >= {GOAL_SPEEDUP}x at {args.tokens} new tokens",
                     "goal_met": all(s["speedup"] >= GOAL_SPEEDUP for s in speed.values()), "check": check},
        "identical": check["identical"],
        "interpolation": interpolation_report(measured["interpolation"], steps=args.steps),
        "bench_seconds": round(time.perf_counter() - started, 1),
    }


# --------------------------------------------------------------------------- command line


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per measurement (default 1)")
    parser.add_argument("--tokens", type=int, default=None, help="new tokens per generate call (default 512; quick 64)")
    parser.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8],
                        help="batch sizes, comma-separated (default 1,8)")
    parser.add_argument("--check-batch", type=int, default=2, help="batch of the greedy cache/no-cache check")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per variant, ABBA order (default 2; quick 1)")
    parser.add_argument("--repeats", type=int, default=None, help="most timed calls per round (default 5; quick 2)")
    parser.add_argument("--budget", type=float, default=None,
                        help="stop repeating once this many seconds are timed in a round (default 20; quick 1)")
    parser.add_argument("--steps", type=int, default=8, help="interpolation steps, endpoints included")
    parser.add_argument("--bars", type=int, default=4, help="bars per interpolated segment and per latent code")
    parser.add_argument("--checkpoint", default=None,
                        help="checkpoint to interpolate with (default runs/small/best when it "
                             "exists, else a random-init small model; --quick: random-init tiny unless given)")
    parser.add_argument("--data", default=str(NOTTINGHAM), help="Nottingham folder (synthetic pieces when absent)")
    parser.add_argument("--tunes", default=",".join(TUNES), help="two Nottingham file stems, comma-separated")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test in seconds")
    parser.add_argument("--child", choices=["speed", "interpolate"], help=argparse.SUPPRESS)
    parser.add_argument("--check", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    defaults = dict(tokens=64, rounds=1, repeats=2, budget=1.0) if args.quick else dict(
        tokens=512, rounds=2, repeats=5, budget=20.0)
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


CHILDREN = {"speed": speed_child, "interpolate": interpolate_child}


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.child:
        print(json.dumps(CHILDREN[args.child](args)))
        return 0
    load_start, started = os.getloadavg(), time.perf_counter()
    print(json.dumps(report(args, measure(args), load_start=load_start, started=started), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

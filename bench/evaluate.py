"""Benchmark free-running evaluation: batched with the KV cache (``midistruct evaluate``) against one window at a time.

Prints JSON comparing, on the same windows in the same run, three ways of running
``midistruct.training.validation.free_running(model, tokenizer, batch, device="cpu", latent="true")`` (greedy
reconstruction from the posterior mean, then note F1 and step accuracy against the input) over ``--windows``
windows, each batch made by ``midistruct.shards.dataset.collate`` as ``midistruct evaluate`` makes it:

- ``batched``: midistruct's way, ``--batch`` windows per call (32, evaluate's default) with the KV cache;
- ``sequential``: the baseline, the same windows one per call (batch 1), with the KV cache;
- ``no_cache``: ``--batch`` windows per call with ``use_cache=False`` (``generate`` re-reads the whole sequence
  at every step; ``free_running`` does not take the option, so the bench wraps ``model.generate`` to pass it).

Each is timed over the whole evaluation (encoding, generation and scoring: ``generate_share`` is the part spent in
``generate``) and reports windows/s, tokens generated/s (the non-padding new tokens, EOS included: rows that
finish early in a batch are padded until the longest ends, and that padding is not counted) and the speed-ups
of ``batched`` over the others. Generation is bounded: ``free_running`` decodes under the REMI grammar, one
``generate`` call per bar count and meter in the batch, capped at twice the longest window of that group + 16
tokens (the grammar closes the bars in time); a one-window batch's cap is its own, so ``sequential`` may stop a
row sooner than ``batched`` does (``agreement_with_batched`` compares the tokens over their common length).

The model is a random-init ``small`` config (``configs/small.yaml``; tiny sizes with ``--quick``) or
``--checkpoint``; the windows are a seeded random subset of ``--split`` of the shards in ``--data`` (as
``midistruct evaluate`` draws them), or, by default, cut from synthetic 4/4 pieces (a melody over held chords,
densities varying by piece) by the pipeline's own tokenizer and windowing, so no dataset is needed.

Every measurement runs in a fresh process with ``torch.set_num_threads(--threads)``, in ABBA order (batched,
sequential, no_cache, no_cache, sequential, batched) so that drift in a shared machine's load falls on all alike;
a variant's time is the best of its rounds' medians. Times are also taken in process CPU time:
``cpu_busy_fraction`` below 1 means other jobs took our core.

    python bench/evaluate.py                     # 1 thread, small config, 32 windows of 4 bars, batch 32 (~2 min)
    python bench/evaluate.py --quick             # tiny sizes: a smoke test in seconds
    python bench/evaluate.py --checkpoint runs/small/best --data data/music21
    python bench/evaluate.py --variants batched,sequential   # leave out the no-cache baseline
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

QUICK_MODEL = ["model.d_model=64", "model.n_heads=4", "model.encoder_layers=1", "model.decoder_layers=1",
               "model.ffn_dim=256", "model.latent_dim_bar=16", "model.latent_dim_segment=32"]
VARIANTS = ("batched", "sequential", "no_cache")
METRICS = ("onset_f1", "onset_offset_f1", "step_accuracy", "exact_match")


# --------------------------------------------------------------------------- model and windows


def synthetic_piece(*, bars: int, seed: int):
    """A 4/4 piece: a melody of 16ths, 8ths and quarters (their mix drawn per piece, so window lengths vary)
    over a held triad per bar (a stand-in for a folk tune with its chords)."""
    import numpy as np
    import symusic

    rng, tpq = np.random.default_rng(seed), 480
    score = symusic.Score(tpq)
    score.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    score.tempos.append(symusic.Tempo(0, 120.0))
    melody, chords = symusic.Track(name="melody"), symusic.Track(name="chords", program=48)
    lengths, weights = [tpq // 4, tpq // 2, tpq], rng.dirichlet([1.0, 2.0, 2.0])
    tick, pitch = 0, 67
    while tick < bars * 4 * tpq:
        length = int(rng.choice(lengths, p=weights))
        pitch = int(np.clip(pitch + rng.integers(-3, 4), 60, 81))
        melody.notes.append(symusic.Note(tick, length, pitch, 90))
        tick += length
    for bar in range(bars):
        root = 48 + int(rng.choice([0, 5, 7, 9]))
        chords.notes.extend(symusic.Note(bar * 4 * tpq, 4 * tpq, root + i, 70) for i in (0, 4, 7))
    score.tracks.extend([melody, chords])
    return score


def item_of(ids, vocab) -> dict:
    """A dataset item from a window's tokens (no BOS/EOS), as ``MidiStruct.encode_windows`` makes it."""
    from midistruct.shards.dataset import window_item

    return window_item(ids, vocab.bar_index(ids))


def synthetic_items(ms, n: int) -> list[dict]:
    """``n`` full windows of ``ms.bars`` bars cut from synthetic pieces by the pipeline's tokenizer."""
    items, seed = [], 0
    while len(items) < n:
        for ids in ms.windows(synthetic_piece(bars=4 * ms.bars, seed=seed)):
            if len(items) < n and ms.vocab.count_bars(ids) == ms.bars:
                items.append(item_of(ids, ms.vocab))
        seed += 1
    return items


def shard_items(folder: str, *, split: str, n: int, seed: int) -> list[dict]:
    """The first ``n`` windows of a seeded permutation of ``split``, as ``midistruct evaluate`` picks them
    (without its recurring-window filter, which changes which windows, not how fast they decode)."""
    import numpy as np

    from midistruct.shards.dataset import WindowDataset

    ds = WindowDataset([folder], split)
    if len(ds) == 0:
        raise SystemExit(f"{folder}: split {split!r} has no windows")
    order = np.random.default_rng(seed).permutation(len(ds))[:n]
    return [ds[int(i)] for i in order]


def random_init(cfg, tokenizer, *, longest: int = 0, bars: int = 0):
    """A random-init ``MidiStructModel`` (seed 0) of ``cfg``, wrapped in a ``MidiStruct`` pipeline."""
    import torch

    from midistruct.generation.pipeline import MidiStruct
    from midistruct.model import MidiStructModel
    from midistruct.training.loop import model_config

    cfg.segments.max_tokens = max(cfg.segments.max_tokens, longest)  # max_positions = max_tokens + 1 (EOS)
    cfg.segments.bars = max(cfg.segments.bars, bars)
    torch.manual_seed(0)
    model = MidiStructModel(model_config(cfg, tokenizer)).eval()
    return MidiStruct(model, tokenizer, {"run_config": cfg.model_dump(mode="json")})


def load(args) -> tuple:
    """``(MidiStruct, items, description of the model, of the windows)``."""
    from midistruct.config import load_config
    from midistruct.generation.pipeline import MidiStruct
    from midistruct.tokens.tokenizer import build_tokenizer

    overrides = (QUICK_MODEL if args.quick else []) + ([f"segments.bars={args.bars}"] if args.bars else [])
    kind = "quick" if args.quick else "small"
    if args.data:
        from midistruct.shards.reader import ShardSet

        items = shard_items(args.data, split=args.split, n=args.windows, seed=args.seed)
        source = f"{args.data} ({args.split})"
        if args.checkpoint:
            return MidiStruct.from_pretrained(args.checkpoint), items, args.checkpoint, source
        longest = max(len(it["input_ids"]) for it in items)
        bars = max(int(it["bar_ids"].max()) + 1 for it in items)
        ms = random_init(load_config("small", overrides), ShardSet(args.data).tokenizer(), longest=longest, bars=bars)
        return ms, items, f"random-init {kind} model", source
    if args.checkpoint:
        ms, model = MidiStruct.from_pretrained(args.checkpoint), args.checkpoint
    else:
        cfg = load_config("small", overrides)
        ms, model = random_init(cfg, build_tokenizer(cfg.tokenizer)), f"random-init {kind} model"
    return ms, synthetic_items(ms, args.windows), model, f"synthetic ({ms.bars}-bar windows)"


# --------------------------------------------------------------------------- timing (child processes)


def instrument(model, *, use_cache: bool) -> list:
    """Wrap ``model.generate`` (on the instance: it shadows the method ``free_running`` calls) to record each
    call's output, prompt length and seconds, and to pass ``use_cache=False`` for the no-cache baseline."""
    calls, original = [], model.generate

    def generate(*a, **kw):
        if not use_cache:
            kw["use_cache"] = False
        start = time.perf_counter()
        out = original(*a, **kw)
        prompt = 1 if kw.get("input_ids") is None else kw["input_ids"].shape[1]
        calls.append((out, prompt, time.perf_counter() - start))
        return out

    model.generate = generate
    return calls


def evaluate_child(args) -> dict:
    """Time ``free_running`` over all windows: in batches of ``--batch`` (with or without the cache) or one by one."""
    import torch

    from midistruct.shards.dataset import collate
    from midistruct.training.validation import free_running

    setup(args)
    ms, items, model_name, source = load(args)
    model, tokenizer = ms.model, ms.tokenizer
    size = 1 if args.variant == "sequential" else args.batch
    batches = [collate(items[s : s + size]) for s in range(0, len(items), size)]
    calls = instrument(model, use_cache=args.variant != "no_cache")
    fed = [0]  # decoder tokens fed: B per step with the cache, the whole sequence per step without
    hook = model.decoder.register_forward_pre_hook(lambda module, a: fed.__setitem__(0, fed[0] + a[0].numel()))

    def evaluate():
        calls.clear()
        fed[0] = 0
        results = [free_running(model, tokenizer, b, device="cpu", latent="true") for b in batches]
        rows = [len(b["input_ids"]) for b in batches]
        return {m: sum(r[m] * n for r, n in zip(results, rows)) / sum(rows) for m in METRICS}

    with torch.no_grad():
        free_running(model, tokenizer, collate(items[:1]), device="cpu", latent="true")  # warm-up: one window
        run = timed(evaluate, repeats=args.repeats, budget=args.budget)
    hook.remove()
    pad = model.config.pad_token_id
    steps = [(out.shape[0], out.shape[1] - prompt) for out, prompt, _ in calls]  # (B, N new tokens) per call
    expected = sum(b * n if args.variant != "no_cache" else b * n * (n + 1) // 2 for b, n in steps)
    rows = [out[i, prompt:].tolist() for out, prompt, _ in calls for i in range(out.shape[0])]
    tokens = [[t for t in row if t != pad] for row in rows]  # EOS included, padding after it not
    return {"seconds": run["seconds"], "cpu_seconds": run["cpu_seconds"], "metrics": run["last"],
            "windows": len(items), "batch": size, "model": model_name, "source": source,
            "window_tokens": [len(it["input_ids"]) for it in items],
            "generate_calls": [list(out.shape) for out, _, _ in calls],
            "generate_seconds": sum(s for _, _, s in calls), "last_seconds": run["seconds"][-1],
            "tokens_generated": sum(len(t) for t in tokens), "tokens": tokens,
            "decode_row_steps": sum(b * n for b, n in steps), "decoder_tokens_fed": fed[0],
            "decoder_tokens_fed_as_expected": fed[0] == expected, "params": sum(p.numel() for p in model.parameters()),
            "vocab_size": model.config.vocab_size, "max_positions": model.config.max_positions,
            "bars": ms.bars, **versions()}


# --------------------------------------------------------------------------- the parent: order and summary


def child_argv(args) -> list[str]:
    argv = ["--threads", str(args.threads), "--windows", str(args.windows), "--batch", str(args.batch),
            "--repeats", str(args.repeats), "--budget", str(args.budget), "--split", args.split,
            "--seed", str(args.seed)]
    argv += ["--bars", str(args.bars)] if args.bars else []
    argv += ["--checkpoint", args.checkpoint] if args.checkpoint else []
    argv += ["--data", args.data] if args.data else []
    return argv + (["--quick"] if args.quick else [])


def run_child(args, *, variant: str) -> dict:
    """One measurement in a fresh process (its own threads, allocator and caches)."""
    cmd = [sys.executable, __file__, "--child", "--variant", variant, *child_argv(args)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(args) -> dict:
    runs = {v: [] for v in args.variants}
    for variant in abba(tuple(args.variants), args.rounds):
        runs[variant].append(run_child(args, variant=variant))
    return runs


def agreement(tokens: list[list[int]], reference: list[list[int]]) -> float:
    """Fraction of windows whose generated tokens equal the reference's over their common length."""
    same = [a[: min(len(a), len(b))] == b[: min(len(a), len(b))] for a, b in zip(tokens, reference)]
    return round(sum(same) / len(same), 4)


def variant_report(runs: list[dict]) -> dict:
    """Best round's median wall time (and CPU time), windows/s and tokens/s, what the last timed call did."""
    wall, cpu = best_median(runs), best_median(runs, "cpu_seconds")
    r = runs[0]
    return {"batch": r["batch"], "seconds": round(wall, 4),
            "seconds_per_round": [round(statistics.median(x["seconds"]), 4) for x in runs],
            "cpu_seconds": round(cpu, 4), "cpu_busy_fraction": round(cpu / wall / r["threads"], 3),
            "timed_calls_per_round": [len(x["seconds"]) for x in runs],
            "windows_per_s": round(r["windows"] / wall, 3), "tokens_generated": r["tokens_generated"],
            "tokens_per_s": round(r["tokens_generated"] / wall, 1),
            "generate_calls": len(r["generate_calls"]), "decode_row_steps": r["decode_row_steps"],
            "decoder_tokens_fed": r["decoder_tokens_fed"],
            "decoder_tokens_fed_as_expected": r["decoder_tokens_fed_as_expected"],
            "generate_share": round(r["generate_seconds"] / r["last_seconds"], 3),
            **{m: round(v, 4) for m, v in r["metrics"].items()}}


def report(args, runs: dict, *, load_start: tuple, started: float) -> dict:
    first = runs["batched"][0]
    out = {v: variant_report(runs[v]) for v in args.variants}
    speedup, tokens_ratio, agree = {}, {}, {}
    for other in (v for v in args.variants if v != "batched"):  # from unrounded best medians
        speedup[f"batched_vs_{other}"] = round(best_median(runs[other]) / best_median(runs["batched"]), 3)
        tokens_ratio[f"batched_vs_{other}"] = round(
            (first["tokens_generated"] / best_median(runs["batched"]))
            / (runs[other][0]["tokens_generated"] / best_median(runs[other])), 3)
        agree[other] = agreement(runs[other][0]["tokens"], first["tokens"])
    lengths = first["window_tokens"]
    return {
        "benchmark": "evaluate", "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": shlex.join(["python", *sys.argv]), "machine": machine(first, load_start=load_start),
        "config": {"model": first["model"], "run_config": None if args.checkpoint else "small",
                   "model_overrides": QUICK_MODEL if args.quick and not args.checkpoint else [],
                   "params": first["params"], "vocab_size": first["vocab_size"],
                   "max_positions": first["max_positions"], "dtype": "fp32", "windows": first["windows"],
                   "source": first["source"], "bars": first["bars"], "batch": args.batch,
                   "window_tokens_mean": round(statistics.mean(lengths), 1), "window_tokens_max": max(lengths),
                   "call": 'free_running(model, tokenizer, batch, device="cpu", latent="true")',
                   "decoding": "greedy, max_new_tokens = longest window of the batch + 8",
                   "variants": args.variants, "rounds": args.rounds, "max_timed_calls": args.repeats,
                   "budget_s": args.budget},
        **out,
        "speedup": speedup,  # windows/s of batched over the other (the same windows: the ratio of times)
        "tokens_per_s_ratio": tokens_ratio,
        "agreement_with_batched": agree,
        "tokens_sha1": {v: hashlib.sha1(json.dumps(runs[v][0]["tokens"]).encode()).hexdigest()[:12]
                        for v in args.variants},
        "bench_seconds": round(time.perf_counter() - started, 1),
    }


# --------------------------------------------------------------------------- command line


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per measurement (default 1)")
    parser.add_argument("--windows", type=int, default=None, help="windows to evaluate (default 32; quick 8)")
    parser.add_argument("--batch", type=int, default=None,
                        help="windows per free_running call, batched variants (default 32 as evaluate; quick 4)")
    parser.add_argument("--variants", type=lambda s: s.split(","), default=list(VARIANTS),
                        help="comma-separated, batched first (default batched,sequential,no_cache)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per variant, ABBA order (default 2; quick 1)")
    parser.add_argument("--repeats", type=int, default=None, help="most timed calls per round (default 3; quick 2)")
    parser.add_argument("--budget", type=float, default=None,
                        help="stop repeating once this many seconds are timed in a round (default 10; quick 1)")
    parser.add_argument("--bars", type=int, default=None,
                        help="bars per synthetic window of a random-init model (default small's 4; quick 2)")
    parser.add_argument("--checkpoint", default=None, help="checkpoint to evaluate (default a random-init model)")
    parser.add_argument("--data", default=None, help="shard folder to draw windows from (default synthetic windows)")
    parser.add_argument("--split", default="test", help="split of --data (default test)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --data window draw")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test in seconds")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    defaults = dict(windows=8, batch=4, rounds=1, repeats=2, budget=1.0, bars=2) if args.quick else dict(
        windows=32, batch=32, rounds=2, repeats=3, budget=10.0)
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if not args.child and (args.variants[0] != "batched" or not set(args.variants) <= set(VARIANTS)
                           or len(set(args.variants)) != len(args.variants)):
        parser.error(f"--variants: batched first, then any of {', '.join(VARIANTS[1:])}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.child:
        print(json.dumps(evaluate_child(args)))
        return 0
    load_start, started = os.getloadavg(), time.perf_counter()
    print(json.dumps(report(args, measure(args), load_start=load_start, started=started), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

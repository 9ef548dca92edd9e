"""Benchmark training throughput and model-FLOPs utilisation (MFU): the autoencoder against a plain causal LM.

Prints JSON: the machine's matmul peak (a large square fp32 matmul, and bf16 where the CPU has it; best of
several), then for the midistruct autoencoder and for a transformers causal LM with the same parameter count
(GPT-2 blocks by default, the same block shape as ours; ``--peer llama`` for Llama), trained the same way on
the same synthetic REMI-like batches: step time (median over the timed steps after warm-up), input tokens/s,
model FLOPs per step (analytic, PaLM appendix B) and as counted by ``FlopCounterMode`` (a cross-check), MFU
against the peak of the training dtype, and the autoencoder/LM MFU ratio.

Every measurement runs in a fresh process with ``torch.set_num_threads(--threads)``, in the order peak,
AE, LM, LM, AE, ..., peak (ABBA), so that drift in a shared machine's load falls on both models alike; each
model's step time is the best of its rounds' medians, and the peak the best of its two runs. Step times are
also taken in process CPU time: ``cpu_busy_fraction`` below 1 means other jobs took our core (contention for
the shared cache and memory bandwidth does not show there, so compare rounds too).

    python bench/train.py                        # 1 thread, bf16 where the CPU has it, batch 32 x 128
    python bench/train.py --quick                # tiny sizes: a smoke test in seconds
    python bench/train.py --profile              # top operators of a few steps of each model (text, not JSON)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

BAR_EVERY = 16  # a Bar token every 16 tokens, so a 128-token segment has 8 bars
VOCAB = 300  # about a REMI vocabulary; ids 0-3 are PAD, BOS, EOS, MASK and 4 is Bar_None
PAD, BOS, EOS, BAR = 0, 1, 2, 4
N_BATCHES = 4  # distinct batches, cycled
SIZES = {  # the autoencoder; the LM peer gets encoder + decoder layers of the same width
    "full": dict(d_model=256, n_heads=4, encoder_layers=4, decoder_layers=4, ffn_dim=1024,
                 latent_dim_bar=64, latent_dim_segment=128),
    "quick": dict(d_model=64, n_heads=4, encoder_layers=1, decoder_layers=1, ffn_dim=256,
                  latent_dim_bar=16, latent_dim_segment=32),
}
FLOPS_FORMULA = ("6 * N_token * B*T + 6 * (N_segment_head * B + N_bar_head * B*NB) + 12 * L * D * T * B*T, "
                 "N_token = non-embedding params + tied lm_head (V*D) - latent heads; L = all layers "
                 "(encoder + decoder for the autoencoder, whose encoder runs on the same T tokens)")


# --------------------------------------------------------------------------- inputs and models


def synthetic_batch(*, batch: int, seq: int, seed: int):
    """Random REMI-like ids (B, T): Bar at every 16th position from 0, EOS last, no padding."""
    import torch

    from midistruct.model import count_bars

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(BAR + 1, VOCAB, (batch, seq), generator=g)
    ids[:, ::BAR_EVERY] = BAR
    ids[:, -1] = EOS
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
            "bar_ids": count_bars(ids, bar_token_ids=BAR), "labels": ids.clone()}


def n_bars(seq: int) -> int:
    return -(-seq // BAR_EVERY)


def build_autoencoder(sizes: dict, *, seq: int, dropout: float):
    from midistruct.model import MidiStructConfig, MidiStructModel

    config = MidiStructConfig(vocab_size=VOCAB, max_positions=seq, max_bars=n_bars(seq), dropout=dropout,
                              conditioning="add", latent_mode="vae", **sizes)
    return MidiStructModel(config)


def build_lm(sizes: dict, *, seq: int, dropout: float, peer: str):
    """A causal LM with as many layers as encoder + decoder, of the same width (and about as many params)."""
    layers = sizes["encoder_layers"] + sizes["decoder_layers"]
    ids = dict(vocab_size=VOCAB, pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS, tie_word_embeddings=True)
    if peer == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        config = GPT2Config(n_positions=seq, n_embd=sizes["d_model"], n_layer=layers, n_head=sizes["n_heads"],
                            n_inner=sizes["ffn_dim"], activation_function="gelu",  # exact GELU, as ours
                            resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout, **ids)
        return GPT2LMHeadModel(config)
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=sizes["d_model"], num_hidden_layers=layers, num_attention_heads=sizes["n_heads"],
                         intermediate_size=round(2 * sizes["ffn_dim"] / 3),  # SwiGLU: 3 matrices of 2/3 width
                         max_position_embeddings=seq, attention_dropout=dropout, **ids)
    return LlamaForCausalLM(config)


def model_inputs(kind: str, batch: dict) -> dict:
    if kind == "autoencoder":
        return {**batch, "beta": 0.1}
    return {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}


# --------------------------------------------------------------------------- FLOPs


def param_counts(model) -> dict:
    """Total, non-embedding and per-token matmul parameters; latent heads run per segment / per bar."""
    from torch import nn

    total = sum(p.numel() for p in model.parameters())
    tables = [m.weight for m in model.modules() if isinstance(m, nn.Embedding)]
    embedding = sum(w.numel() for w in tables)
    head = model.get_output_embeddings().weight
    tied = head.numel() if any(head is w for w in tables) else 0  # the lm_head matmul still runs
    bottleneck = getattr(model, "bottleneck", None)
    segment_head = sum(p.numel() for p in bottleneck.segment.parameters()) if bottleneck else 0
    bar_head = sum(p.numel() for p in bottleneck.bar.parameters()) if bottleneck and bottleneck.bar else 0
    return {"total": total, "nonembedding": total - embedding, "segment_head": segment_head, "bar_head": bar_head,
            "per_token": total - embedding + tied - segment_head - bar_head}


def analytic_flops(params: dict, *, layers: int, d_model: int, batch: int, seq: int) -> int:
    """Model FLOPs of one training step (forward + backward), PaLM appendix B; see ``FLOPS_FORMULA``."""
    tokens = batch * seq
    dense = 6 * params["per_token"] * tokens + 6 * (params["segment_head"] * batch
                                                    + params["bar_head"] * batch * n_bars(seq))
    return dense + 12 * layers * d_model * seq * tokens


def counted_flops(step) -> int:
    """FLOPs that ``FlopCounterMode`` sees in one call of ``step`` (matmuls and attention, forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


# --------------------------------------------------------------------------- measurements (child processes)


def setup(args):
    """Threads, seed and the resolved dtype: bf16 autocast when asked, or by default where the CPU has it."""
    import torch

    from midistruct.training.distributed import use_bf16

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    return "bf16" if use_bf16(args.dtype, torch.device("cpu")) else "fp32"


def matmul_peak(dtype_name: str, *, size: int, trials: int = 5, per_trial: int = 3) -> dict:
    """FLOP/s of ``size``-square matmuls into a preallocated output: best and median of ``trials``."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    out = torch.mm(a, b)
    rates = []
    for _ in range(trials):
        start = time.perf_counter()
        for _ in range(per_trial):
            torch.mm(a, b, out=out)
        rates.append(2 * size**3 * per_trial / (time.perf_counter() - start))
    return {"size": size, "best_flops": max(rates), "median_flops": statistics.median(rates)}


def peak_child(args) -> dict:
    from midistruct.training.distributed import cpu_supports_bf16

    setup(args)
    dtypes = ["fp32", "bf16"] if cpu_supports_bf16() or args.dtype == "bf16" else ["fp32"]
    return {name: matmul_peak(name, size=args.peak_size) for name in dtypes}


def make_step(model, optimizer, *, inputs: list[dict], bf16: bool):
    """One training step on the i-th batch: forward (autocast), backward, AdamW; returns the loss. (The trainer
    also clips gradients and steps an LR schedule: the same small cost for both models, left out.)"""
    import contextlib

    import torch

    def step(i: int) -> float:
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with autocast:
            loss = model(**inputs[i % len(inputs)]).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def build(kind: str, args):
    sizes = SIZES["quick" if args.quick else "full"]
    if kind == "autoencoder":
        return build_autoencoder(sizes, seq=args.seq, dropout=args.dropout), sizes
    return build_lm(sizes, seq=args.seq, dropout=args.dropout, peer=args.peer), sizes


def prepared_step(kind: str, args):
    """``(step, model, sizes, dtype)``: a model in train mode and its one-step training function."""
    import torch

    dtype = setup(args)
    model, sizes = build(kind, args)
    model.train()
    inputs = [model_inputs(kind, synthetic_batch(batch=args.batch, seq=args.seq, seed=s)) for s in range(N_BATCHES)]
    step = make_step(model, torch.optim.AdamW(model.parameters(), lr=5e-4), inputs=inputs, bf16=dtype == "bf16")
    return step, model, sizes, dtype


def train_child(kind: str, args) -> dict:
    """Time ``--steps`` training steps after ``--warmup``, then count one step's FLOPs."""
    import torch

    step, model, sizes, dtype = prepared_step(kind, args)
    times, cpu_times, losses = [], [], []
    for i in range(args.warmup + args.steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        losses.append(step(i))
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    params = param_counts(model)
    layers = sizes["encoder_layers"] + sizes["decoder_layers"]
    return {"params": params, "step_seconds": times[args.warmup:], "step_cpu_seconds": cpu_times[args.warmup:],
            "loss_first_last": [losses[0], losses[-1]],
            "model_flops_per_step": analytic_flops(params, layers=layers, d_model=sizes["d_model"],
                                                   batch=args.batch, seq=args.seq),
            "counted_flops_per_step": counted_flops(lambda: step(0)),
            "threads": torch.get_num_threads(), "dtype": dtype}


def profile_child(kind: str, args) -> str:
    """The top operators (self CPU time) of a few training steps, after warm-up."""
    from torch.profiler import ProfilerActivity, profile

    step, _, _, dtype = prepared_step(kind, args)
    for i in range(args.warmup):
        step(i)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(args.steps):
            step(i)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30, max_name_column_width=60)
    return f"== {kind} ({dtype}, {args.threads} thread(s), {args.steps} steps)\n{table}"


# --------------------------------------------------------------------------- the parent: order and summary


def child_argv(args) -> list[str]:
    argv = ["--threads", str(args.threads), "--steps", str(args.steps), "--warmup", str(args.warmup),
            "--batch", str(args.batch), "--seq", str(args.seq), "--dtype", args.dtype, "--peer", args.peer,
            "--dropout", str(args.dropout), "--peak-size", str(args.peak_size)]
    return argv + (["--quick"] if args.quick else [])


def run_child(mode: str, args) -> dict:
    """One measurement in a fresh process (its own threads, allocator and caches)."""
    cmd = [sys.executable, __file__, "--child", mode, *child_argv(args)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def best_peak(runs: list[dict]) -> dict:
    return {name: max(r[name]["best_flops"] for r in runs) for name in runs[0]}


def summarise(rounds: list[dict], *, peak: float, tokens: int) -> dict:
    """Best round's median step time -> tokens/s, achieved FLOP/s and MFU (analytic and counted FLOPs; and on
    CPU time, which a shared machine's other jobs do not inflate)."""
    medians = [statistics.median(r["step_seconds"]) for r in rounds]
    step = min(medians)
    cpu = min(statistics.median(r["step_cpu_seconds"]) for r in rounds)
    first = rounds[0]
    achieved = first["model_flops_per_step"] / step
    return {
        "params_total": first["params"]["total"], "params_nonembedding": first["params"]["nonembedding"],
        "params_per_token_matmul": first["params"]["per_token"],
        "step_seconds_median": round(step, 4), "step_seconds_median_per_round": [round(m, 4) for m in medians],
        "step_cpu_seconds_median": round(cpu, 4),  # process CPU time, all threads: time given to others not counted
        "cpu_busy_fraction": round(cpu / step / first["threads"], 3),  # 1 unless the OS ran others on our cores
        "tokens_per_s": round(tokens / step, 1),
        "model_flops_per_step": first["model_flops_per_step"],
        "counted_flops_per_step": first["counted_flops_per_step"],
        "counted_to_model_flops": round(first["counted_flops_per_step"] / first["model_flops_per_step"], 4),
        "achieved_tflops": round(achieved / 1e12, 5), "mfu": round(achieved / peak, 4),
        "mfu_counted_flops": round(first["counted_flops_per_step"] / step / peak, 4),
        "mfu_cpu_time": round(first["model_flops_per_step"] * first["threads"] / cpu / peak, 4),
        "loss_first_last": [round(x, 4) for x in first["loss_first_last"]],
    }


def measure(args) -> dict:
    """Peak, then ABBA rounds of the two models, then peak again; each in its own process."""
    order = [kind for r in range(args.rounds) for kind in (("autoencoder", "lm") if r % 2 == 0
                                                           else ("lm", "autoencoder"))]
    peaks = [run_child("peak", args)]
    runs = {"autoencoder": [], "lm": []}
    for kind in order:
        runs[kind].append(run_child(kind, args))
    peaks.append(run_child("peak", args))
    return {"peaks": peaks, "runs": runs}


def report(args, measured: dict) -> dict:
    peaks = best_peak(measured["peaks"])
    dtype = measured["runs"]["autoencoder"][0]["dtype"]
    tokens = args.batch * args.seq
    ae = summarise(measured["runs"]["autoencoder"], peak=peaks[dtype], tokens=tokens)
    lm = summarise(measured["runs"]["lm"], peak=peaks[dtype], tokens=tokens)
    return {
        "benchmark": "train", "threads": measured["runs"]["autoencoder"][0]["threads"], "dtype": dtype,
        "batch": args.batch, "seq": args.seq, "tokens_per_step": tokens, "steps": args.steps,
        "warmup": args.warmup, "rounds": args.rounds, "dropout": args.dropout,
        "sizes": SIZES["quick" if args.quick else "full"], "peer": args.peer,
        "peak_flops": {name: round(v) for name, v in peaks.items()}, "peak_used": dtype,
        "peak_runs_gflops": [{n: round(r[n]["best_flops"] / 1e9, 1) for n in r} for r in measured["peaks"]],
        "flops_formula": FLOPS_FORMULA,
        "autoencoder": ae, "lm": lm,
        "params_ratio_lm_to_autoencoder": round(lm["params_total"] / ae["params_total"], 4),
        "tokens_per_s_ratio_autoencoder_to_lm": round(ae["tokens_per_s"] / lm["tokens_per_s"], 4),
        "mfu_autoencoder": ae["mfu"], "mfu_lm": lm["mfu"],
        "mfu_ratio_autoencoder_to_lm": round(ae["mfu"] / lm["mfu"], 4),
        "mfu_ratio_autoencoder_to_lm_cpu_time": round(ae["mfu_cpu_time"] / lm["mfu_cpu_time"], 4),
    }


# --------------------------------------------------------------------------- command line


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="1: two threads are slower when the other core is busy")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per round (default 10; quick 3)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3; quick 1)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per model, ABBA order (default 2; quick 1)")
    parser.add_argument("--batch", type=int, default=None, help="sequences per step (default 32; quick 4)")
    parser.add_argument("--seq", type=int, default=None, help="tokens per sequence (default 128; quick 32)")
    parser.add_argument("--dtype", choices=["auto", "bf16", "fp32"], default="auto",
                        help="auto: bf16 autocast where the CPU has native bf16 (as the trainer decides)")
    parser.add_argument("--peer", choices=["gpt2", "llama"], default="gpt2", help="the causal LM to compare with")
    parser.add_argument("--dropout", type=float, default=0.1, help="in both models (configs/small.yaml uses 0.1)")
    parser.add_argument("--peak-size", type=int, default=None, help="square matmul size (default 2048; quick 256)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test in seconds")
    parser.add_argument("--profile", action="store_true", help="print each model's top operators instead of JSON")
    parser.add_argument("--child", choices=["peak", "autoencoder", "lm"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    defaults = dict(steps=3, warmup=1, rounds=1, batch=4, seq=32, peak_size=256) if args.quick else dict(
        steps=10, warmup=3, rounds=2, batch=32, seq=128, peak_size=2048)
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.child:
        print(json.dumps(peak_child(args) if args.child == "peak" else train_child(args.child, args)))
    elif args.profile:
        print("\n".join(profile_child(kind, args) for kind in ("autoencoder", "lm")))
    else:
        print(json.dumps(report(args, measure(args)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

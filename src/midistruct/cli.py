"""Command line: ``midistruct <command> ...``. Entry point :func:`main` (argv) -> exit code.

Heavy libraries are imported inside the handlers so ``midistruct --help`` answers at once.
Expected failures (bad config, missing data, bad input) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


class UserError(Exception):
    """An error the user can fix; shown as one line, exit code 2."""


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="named config in configs/ (e.g. tiny) or a YAML path")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set segments.bars=8 (repeatable)")


def cmd_prepare(args: argparse.Namespace) -> int:
    """Validate, tokenize and segment the configured corpus into shards."""
    from midistruct.config import load_config
    from midistruct.prepare import prepare

    cfg = load_config(args.config, args.overrides)
    summary = prepare(cfg, overwrite=args.overwrite, progress=not args.quiet).as_dict()
    print(json.dumps(summary, indent=2, ensure_ascii=False) if args.json else _format_summary(summary))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train the autoencoder on prepared shards; --resume continues run_dir/last exactly."""
    from midistruct.config import load_config
    from midistruct.training.loop import Trainer

    cfg = load_config(args.config, args.overrides)
    trainer = Trainer(cfg, resume=args.resume, progress=not args.quiet)
    trainer.run()
    if trainer.dist.is_main:
        print(f"trained {trainer.state['step']} steps; checkpoints in {trainer.run_dir}/best and {trainer.run_dir}/last")
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    """Prepare a corpus slice, train briefly, interpolate two held-out pieces (the README's main job)."""
    from midistruct import quickstart
    from midistruct.config import load_config

    cfg = load_config(args.config, args.overrides)
    s = quickstart.run(cfg, out_dir=args.out_dir, progress=not args.quiet)
    ckpt, out = s["checkpoint"], s["out_dir"]
    print(f"\ndone in {s['minutes']} min ({s['trained_steps']} training steps).\n"
          f"  interpolation {s['a']} -> {s['b']}: {len(s['midi'])} MIDI files and {s['plot']} in {out}/\n"
          f"  checkpoint: {ckpt}\nnext:\n"
          f"  midistruct reconstruct {ckpt} YOUR.mid --plot --audio --out-dir out/mine\n"
          f"  midistruct interpolate {ckpt} A.mid B.mid --steps 8 --plot --out-dir out/mine\n"
          f"  midistruct train --config small     # a better model: ~1 hour on CPU (see configs/)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Reconstruction metrics of a checkpoint on a split of prepared shards."""
    from midistruct.training.evaluate import evaluate_checkpoint

    data = args.data or None
    result = evaluate_checkpoint(args.checkpoint, data=data, split=args.split, windows=args.windows,
                                 free_run=args.free_run, interpolations=args.interpolations, seed=args.seed or 0,
                                 exclude_recurring=not args.keep_recurring, probes=args.probes,
                                 samples=args.samples, judge=args.judge,
                                 sample_temperature=args.sample_temperature)
    print(json.dumps(result, indent=2))
    return 0


def _pipeline(args: argparse.Namespace):
    from midistruct.generation.pipeline import MidiStruct

    return MidiStruct.from_pretrained(args.checkpoint)


def _write_outputs(args: argparse.Namespace, scores: dict[str, object], settings: dict) -> None:
    """Write ``name -> Score`` as MIDI into --out-dir, with generation.json beside them.

    With --plot also one PNG of all outputs stacked (named by their common stem), with --audio a WAV
    beside each MIDI file; both are recorded in generation.json ("plot", "audio").
    """
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, score in scores.items():
        score.dump_midi(str(out / f"{name}.mid"))
    record = {"command": args.command, "checkpoint": str(args.checkpoint), "seed": args.seed, **settings,
              "outputs": [f"{name}.mid" for name in scores]}
    plot, audio = getattr(args, "plot", False), getattr(args, "audio", False)
    if plot or audio:
        from midistruct.render import render_outputs

        record.update(render_outputs(scores, out, plot=plot, audio=audio, default_stem=args.command))
    (out / "generation.json").write_text(json.dumps(record, indent=2))
    print(f"wrote {len(scores)} MIDI file(s) and generation.json to {out}"
          + (f"; piano rolls in {record['plot']}" if plot else ""))
    if audio:
        print(f"wrote {len(scores)} WAV file(s) with {record['audio']['backend']}")


def _sampling(args: argparse.Namespace) -> dict:
    return {"temperature": args.temperature, "top_p": args.top_p, "seed": args.seed}


def _shift(args: argparse.Namespace) -> dict:
    """``vectors`` + ``shift`` keyword arguments from --vectors FILE --shift NAME=AMOUNT."""
    if not args.shift:
        return {}
    if not args.vectors:
        raise UserError("--shift needs --vectors FILE (written by `midistruct attributes`)")
    from midistruct.generation.attributes import AttributeVectors

    if not Path(args.vectors).is_file():
        raise UserError(f"{args.vectors}: no such file")
    try:
        vectors = AttributeVectors.load(args.vectors)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise UserError(f"{args.vectors}: cannot read attribute vectors ({err})") from None
    amounts = {}
    for item in args.shift:
        name, sep, amount = item.partition("=")
        try:
            amounts[name] = float(amount)
        except ValueError:
            sep = ""
        if not sep:
            raise UserError(f"--shift {item!r}: expected NAME=AMOUNT, e.g. note_density=1.5")
        if name not in vectors.names:
            raise UserError(f"--shift {name}: no such attribute in {args.vectors}; it has {', '.join(vectors.names)}")
    return {"vectors": vectors, "shift": amounts}


def _shift_record(args: argparse.Namespace) -> dict:
    return {"vectors": args.vectors, "shift": args.shift} if args.shift else {}


def cmd_reconstruct(args: argparse.Namespace) -> int:
    """Encode and decode each input (optionally moved along attribute vectors)."""
    ms = _pipeline(args)
    shift = _shift(args)
    mode = "reconstruct" + "".join(f".{s.replace('=', '')}" for s in args.shift or [])
    scores = {f"{Path(p).stem}.{mode}": ms.reconstruct(p, **shift, **_sampling(args)) for p in args.inputs}
    _write_outputs(args, scores, {"inputs": args.inputs, **_sampling(args), **_shift_record(args)})
    return 0


def cmd_attributes(args: argparse.Namespace) -> int:
    """Measure attributes over a corpus's windows and write their latent directions."""
    from midistruct.evaluation.features import ATTRIBUTES

    names = args.names.split(",") if args.names else None
    for name in names or []:
        if name not in ATTRIBUTES:
            raise UserError(f"unknown attribute {name!r}; valid: {', '.join(ATTRIBUTES)}")
    ms = _pipeline(args)
    vectors = ms.attribute_vectors(args.data, split=args.split, windows=args.windows, names=names)
    path = vectors.save(args.output)
    print(f"measured {vectors.windows} windows; wrote {len(vectors.names)} attribute vectors to {path}")
    print(f"  {'attribute':14s} {'low quarter':>12s} {'high quarter':>12s} {'|segment dir|':>14s}")
    for i, name in enumerate(vectors.names):
        print(f"  {name:14s} {vectors.low[i]:12.3f} {vectors.high[i]:12.3f} {float(vectors.segment[i].norm()):14.3f}")
    if args.sweep:
        _print_sweeps(ms, vectors, windows=args.sweep)
    return 0


def _print_sweeps(ms, vectors, *, windows: int) -> None:
    """Shift ``windows`` held-out windows along each attribute by -2..2; print the measured means and Spearman."""
    from midistruct.generation import attributes

    held_out = ms.encode_windows(attributes.corpus_windows(ms.cfg.data.output, split="test", limit=windows, seed=1))
    latents = [held_out.window(i) for i in range(len(held_out))]
    amounts = [-2.0, -1.0, 0.0, 1.0, 2.0]
    print(f"sweep of {len(latents)} test windows (greedy), measured attribute mean at shift " + " ".join(f"{a:+g}" for a in amounts))
    for name in vectors.names:
        found = attributes.sweep(ms, latents, vectors, name, amounts)
        means = " ".join(f"{m:8.3f}" for m in found["mean_measured"])
        print(f"  {name:14s} {means}   Spearman {found['spearman']:+.3f}")


def cmd_interpolate(args: argparse.Namespace) -> int:
    """Interpolate from A to B in latent space."""
    ms = _pipeline(args)
    steps = ms.interpolate(args.a, args.b, steps=args.steps, method=args.method, **_sampling(args))
    stem = f"{Path(args.a).stem}_to_{Path(args.b).stem}.{args.method}"
    scores = {f"{stem}.{i:02d}": s for i, s in enumerate(steps)}
    _write_outputs(args, scores, {"a": args.a, "b": args.b, "steps": args.steps, "method": args.method,
                                  **_sampling(args)})
    return 0


def cmd_grid(args: argparse.Namespace) -> int:
    """A steps x steps grid between four corner pieces."""
    rows = _pipeline(args).grid(args.corners, steps=args.steps, method=args.method, **_sampling(args))
    scores = {f"grid.{args.method}.r{r}c{c}": score for r, row in enumerate(rows) for c, score in enumerate(row)}
    _write_outputs(args, scores, {"corners": args.corners, "steps": args.steps, "method": args.method,
                                  **_sampling(args)})
    return 0


def cmd_continue(args: argparse.Namespace) -> int:
    """Continue a primer, optionally steered by another piece's latent."""
    ms = _pipeline(args)
    latent = ms.encode(args.style) if args.style else None
    score = ms.continue_(args.primer, args.bars, latent=latent, **_sampling(args))
    name = f"{Path(args.primer).stem}.continue" + (f".{Path(args.style).stem}" if args.style else "")
    _write_outputs(args, {name: score}, {"primer": args.primer, "bars": args.bars, "style": args.style,
                                         **_sampling(args)})
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    """Draw codes from the prior and decode them."""
    ms = _pipeline(args)
    samples = ms.sample(args.n, bars=args.bars, meter=args.meter, **_shift(args), **_sampling(args))
    _write_outputs(args, {f"sample.{i:02d}": s for i, s in enumerate(samples)},
                   {"n": args.n, "bars": args.bars, "meter": args.meter, **_sampling(args), **_shift_record(args)})
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    """Write a piece's latents to .safetensors or .npz."""
    import torch

    if args.seed is not None:
        torch.manual_seed(args.seed)
    z = _pipeline(args).encode(args.input, sample=args.sample)
    path = z.save(args.output)
    print(f"wrote {len(z)} window(s) of latents to {path}")
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    """Decode latents written by ``encode`` to MIDI."""
    from midistruct.generation.latents import PieceLatents

    if not Path(args.latents).is_file():
        raise UserError(f"{args.latents}: no such file")
    z = PieceLatents.load(args.latents)
    score = _pipeline(args).decode(z, **_sampling(args))
    score.dump_midi(args.output)
    print(f"wrote {args.output}")
    return 0


def _add_generation_args(p: argparse.ArgumentParser, *, out_dir: bool = True) -> None:
    p.add_argument("checkpoint", type=Path, help="checkpoint folder, e.g. runs/small/best")
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default); > 0: sampling")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (with --temperature > 0)")
    p.add_argument("--seed", type=int, default=None, help="random seed, for reproducible sampling")
    if out_dir:
        p.add_argument("--out-dir", default="out", help="folder for the MIDI files and generation.json")
        p.add_argument("--plot", action="store_true", help="also write one piano-roll PNG of all outputs")
        p.add_argument("--audio", action="store_true",
                       help="also write a WAV beside each MIDI file (FluidSynth + a GM soundfont if found, "
                            "e.g. $MIDISTRUCT_SOUNDFONT; else plain synthesis)")


def _format_summary(s: dict) -> str:
    lines = [f"prepared {s['output']}", f"  files read: {s['files_read']}, skipped: {s['skipped']}"]
    lines += [f"    {reason}: {n}" for reason, n in s["skipped_by_reason"].items()]
    for name, c in s["splits"].items():
        lines.append(f"  {name:5s}: {c['pieces']} pieces, {c['windows']} windows, {c['tokens']} tokens")
    lines.append(f"  notes: {s['notes']}, bars: {s['bars']}, tokens per bar: {s['tokens_per_bar']}")
    if s["windows_dropped"]:
        lines.append("  windows dropped: " + ", ".join(f"{k}: {v}" for k, v in s["windows_dropped"].items()))
    lines.append(f"  skipped files and reasons: {s['output']}/report.tsv")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="midistruct", description="Learn the structure of music from MIDI: prepare corpora, train the "
        "bar/segment-latent autoencoder, reconstruct, interpolate, sample.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="turn a MIDI corpus into tokenized, bar-aligned shards")
    _add_config_args(p)
    p.add_argument("--overwrite", action="store_true", help="replace shards made with another tokenizer config")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_prepare)
    p = sub.add_parser("train", help="train the autoencoder on prepared shards")
    _add_config_args(p)
    p.add_argument("--resume", action="store_true", help="continue train.run_dir/last exactly where it stopped")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_train)
    p = sub.add_parser("quickstart", help="the main job: prepare a music21 slice, train ~6 min, interpolate")
    p.add_argument("--config", default="quickstart", help="named config or YAML path (default: quickstart)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (repeatable)")
    p.add_argument("--out-dir", default="out/quickstart", help="folder for the interpolation MIDI and PNG")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=cmd_quickstart)
    _add_generation_parsers(sub)
    p = sub.add_parser("evaluate", help="reconstruction metrics of a checkpoint on held-out windows")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--data", default=None, help="shard folder (default: the one the checkpoint was trained on)")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--windows", type=int, default=512, help="windows for the teacher-forced metrics")
    p.add_argument("--free-run", type=int, default=128, help="windows decoded free-running")
    p.add_argument("--interpolations", type=int, default=32,
                   help="pairs of held-out windows interpolated in 8 steps to measure smoothness (0: none)")
    p.add_argument("--judge", default=None, metavar="CKPT",
                   help="a checkpoint (e.g. the plain-LM peer) whose NLL judges the interpolants")
    p.add_argument("--keep-recurring", action="store_true",
                   help="keep held-out windows that occur in the training split (any transposition)")
    p.add_argument("--probes", type=int, default=0, metavar="N",
                   help="linear probes of the latent codes (key, mode, meter, collection ...) on N windows (0: none)")
    p.add_argument("--samples", type=int, default=0, metavar="N",
                   help="musical statistics of N prior samples against N held-out windows (0: none)")
    p.add_argument("--sample-temperature", type=float, default=0.5, metavar="T",
                   help="also decode free-running by sampling at temperature T (free_sampled_*; 0: greedy only)")
    p.add_argument("--seed", type=int, default=0, help="which windows (a seeded random subset)")
    p.set_defaults(handler=cmd_evaluate)
    return parser


def _add_generation_parsers(sub) -> None:
    p = sub.add_parser("reconstruct", help="encode and decode MIDI files")
    _add_generation_args(p)
    p.add_argument("inputs", nargs="+", help="MIDI files")
    _add_shift_args(p)
    p.set_defaults(handler=cmd_reconstruct)
    p = sub.add_parser("attributes", help="measure attributes over a corpus and write their latent directions")
    p.add_argument("checkpoint", type=Path, help="checkpoint folder, e.g. runs/small/best")
    p.add_argument("-o", "--output", default="attributes.safetensors", help="vectors file (.safetensors)")
    p.add_argument("--data", default=None, help="shard folder (default: the checkpoint's training data)")
    p.add_argument("--split", default="train", choices=["train", "valid", "test"])
    p.add_argument("--windows", type=int, default=2000, help="windows measured (a seeded random subset)")
    p.add_argument("--names", default=None, help="comma-separated attributes (default: all)")
    p.add_argument("--sweep", type=int, default=0, metavar="N",
                   help="then shift N test windows along each vector by -2..2 and report what was measured")
    p.set_defaults(handler=cmd_attributes)
    p = sub.add_parser("interpolate", help="interpolate between two MIDI files in latent space")
    _add_generation_args(p)
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--method", choices=["slerp", "lerp"], default="slerp")
    p.set_defaults(handler=cmd_interpolate)
    p = sub.add_parser("grid", help="a grid between four corner pieces (top-left, top-right, bottom-left, bottom-right)")
    _add_generation_args(p)
    p.add_argument("corners", nargs=4)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--method", choices=["slerp", "lerp"], default="slerp")
    p.set_defaults(handler=cmd_grid)
    p = sub.add_parser("continue", help="continue a primer, optionally in the style of another piece")
    _add_generation_args(p)
    p.add_argument("primer")
    p.add_argument("--bars", type=int, default=4, help="bars to add")
    p.add_argument("--style", default=None, help="a MIDI file whose latent steers the continuation")
    p.set_defaults(handler=cmd_continue, temperature=1.0)
    p = sub.add_parser("sample", help="decode codes drawn from the prior")
    _add_generation_args(p)
    p.add_argument("-n", type=int, default=4, help="how many samples")
    p.add_argument("--bars", type=int, default=None, help="bars per sample (default: the model's window)")
    p.add_argument("--meter", default="4/4")
    _add_shift_args(p)
    p.set_defaults(handler=cmd_sample, temperature=1.0)
    p = sub.add_parser("encode", help="write a MIDI file's latents to .safetensors or .npz")
    _add_generation_args(p, out_dir=False)
    p.add_argument("input")
    p.add_argument("-o", "--output", required=True, help="latents file (.safetensors or .npz)")
    p.add_argument("--sample", action="store_true", help="sample the posterior instead of its mean")
    p.set_defaults(handler=cmd_encode)
    p = sub.add_parser("decode", help="decode a latents file written by encode")
    _add_generation_args(p, out_dir=False)
    p.add_argument("latents")
    p.add_argument("-o", "--output", required=True, help="MIDI file to write")
    p.set_defaults(handler=cmd_decode)


def _add_shift_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vectors", default=None, help="attribute vectors written by `midistruct attributes`")
    p.add_argument("--shift", action="append", default=[], metavar="NAME=AMOUNT",
                   help="move the codes along an attribute vector, e.g. note_density=1.5 (repeatable)")


def _version() -> str:
    from midistruct import __version__

    return f"midistruct {__version__}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("midistruct: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if not _is_user_error(err):
            raise
        print(f"midistruct: error: {err}", file=sys.stderr)
        return 2


def _is_user_error(err: Exception) -> bool:
    from midistruct.config import ConfigError
    from midistruct.corpus import SourceError
    from midistruct.generation.pipeline import InputError
    from midistruct.shards.reader import ShardError
    from midistruct.training.checkpoint import CheckpointError
    from midistruct.training.loop import TrainError

    return isinstance(err, (UserError, ConfigError, SourceError, ShardError, CheckpointError, TrainError,
                            InputError, FileNotFoundError))


if __name__ == "__main__":
    sys.exit(main())

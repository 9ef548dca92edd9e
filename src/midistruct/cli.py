"""Command line: ``midistruct <command> ...``. Entry point :func:`main` (argv) -> exit code.

Heavy libraries are imported inside the handlers so ``midistruct --help`` answers at once.
Expected failures (bad config, missing data, bad input) print one line and exit 2.
Every command that writes takes ``-o/--output`` (a folder for several files, else a file; ``--out-dir`` is
its deprecated spelling), every command that runs the model ``--device {auto,cpu,cuda,mps}`` and ``--threads N``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path


from midistruct.errors import MidiStructError, MidiStructWarning, one_line
from midistruct.tags import CONDITIONING_TAGS


class UserError(MidiStructError):
    """A bad command-line argument; shown as one line, exit code 2."""


def _int_at_least(low: int):
    """An argparse type: an int >= ``low`` (argparse turns the ValueError into one line, exit 2)."""
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value
    parse.__name__ = f"integer >= {low}"
    return parse


def _float_in(low: float, high: float, *, low_open: bool = False):
    """An argparse type: a float in [low, high] ((low, high] with ``low_open``)."""
    def parse(text: str) -> float:
        value = float(text)
        if not (low < value if low_open else low <= value) or value > high or value != value:
            raise argparse.ArgumentTypeError(f"must be in {'(' if low_open else '['}{low}, {high}], got {text}")
        return value
    parse.__name__ = "number"
    return parse


COUNT, POSITIVE, STEPS = _int_at_least(0), _int_at_least(1), _int_at_least(2)
TEMPERATURE, TOP_P = _float_in(0.0, 100.0), _float_in(0.0, 1.0, low_open=True)
DEVICES = ("auto", "cpu", "cuda", "mps")
FINE_TUNE_EXAMPLE = """fine-tune the shipped model folk-2bar on your MIDI (README: "Your own MIDI, and fine-tuning"):
  midistruct prepare --config folk-2bar --init folk-2bar --set data.sources='[{kind: folder, path: my_midi/}]' \\
      --set data.output=data/mine
  midistruct train --config folk-2bar --init folk-2bar --set data.output=data/mine --set train.run_dir=runs/mine"""


class _DeprecatedAlias(argparse.Action):
    """An old option spelling kept for one release: stores into the new option's ``dest`` and prints
    one warning line on stderr. Its default is SUPPRESS so the new option's default stands."""

    def __init__(self, option_strings, dest, *, new: str, **kwargs):
        self.new = new
        super().__init__(option_strings, dest, default=argparse.SUPPRESS,
                         help=f"deprecated spelling of {new}, removed in the next release", **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"midistruct: warning: {option_string} is deprecated and will be removed in the next release; "
              f"use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _add_output_dir(p: argparse.ArgumentParser, *, default: str, what: str) -> None:
    """``-o/--output DIR`` for a command that writes several files; ``--out-dir`` is its old spelling."""
    p.add_argument("-o", "--output", default=default, metavar="DIR", help=f"folder for {what} (default: {default})")
    p.add_argument("--out-dir", dest="output", metavar="DIR", action=_DeprecatedAlias, new="-o/--output")


def _add_checkpoint_arg(p: argparse.ArgumentParser) -> None:
    """The positional checkpoint; a name is resolved by ``load_checkpoint`` (midistruct.model.pretrained)."""
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="checkpoint folder (e.g. runs/small/best) or a shipped model name (midistruct models)")


def _add_device_arg(p: argparse.ArgumentParser, *, config: str | None = None) -> None:
    """``--device`` and ``--threads``; with ``config`` (a section, e.g. ``train``) they default to, and override,
    that section's ``device`` and ``threads`` (``_device_overrides``)."""
    where = f"the config's {config}.device, auto unless set" if config else "auto"
    p.add_argument("--device", choices=DEVICES, default=None if config else "auto",
                   help=f"where the model runs; auto: cuda if available, else mps, else cpu (default: {where})")
    threads = f"the config's {config}.threads, else torch's choice" if config else "torch's choice"
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help=f"CPU threads for torch (default: {threads}, one per core). Use 1 while another job "
                        "keeps a core busy: on 2 shared cores a 16-bar evaluate took 213 s with the default, 17 s with 1")


def _device(args: argparse.Namespace):
    """The torch device --device names; one that this machine lacks is a one-line error."""
    from midistruct.training.distributed import choose_device

    threads = getattr(args, "threads", None)
    if threads is not None:
        if threads < 1:
            raise UserError(f"--threads must be at least 1, got {threads}")
        import torch

        torch.set_num_threads(threads)
    return choose_device(args.device, name="--device")


def _device_overrides(args: argparse.Namespace, *, section: str) -> list[str]:
    """``--set`` assignments for the --device and --threads given to a command whose config says where it runs
    (``train``: ``train.device``, ``train.threads``); none when they were not given."""
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be at least 1, got {args.threads}")
    found = {"device": args.device, "threads": args.threads}
    return [f"{section}.{key}={value}" for key, value in found.items() if value is not None]


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="named config in configs/ (e.g. tiny) or a YAML path")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set segments.bars=8 (repeatable)")


def cmd_prepare(args: argparse.Namespace) -> int:
    """Validate, tokenize and segment the configured corpus into shards (with --init, with a checkpoint's
    tokenizer and window, so that ``train --init`` can start from it)."""
    from midistruct.config import load_config
    from midistruct.prepare import prepare

    cfg = load_config(args.config, args.overrides)
    if args.init:
        from midistruct.training import finetune

        cfg, changed = finetune.prepare_config(cfg, finetune.open_init(args.init))
        if changed:
            print(f"midistruct: note: the tokenizer and window are those of {args.init}; not used from the config: "
                  f"{', '.join(changed)}", file=sys.stderr)
    summary = prepare(cfg, overwrite=args.overwrite, progress=not args.quiet).as_dict()
    print(json.dumps(summary, indent=2, ensure_ascii=False) if args.json else _format_summary(summary))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train the autoencoder on prepared shards; --resume continues run_dir/last exactly, --init starts from
    another checkpoint's weights (fine-tuning)."""
    from midistruct.config import load_config

    # before torch is imported: a typo reports at once; --device / --threads override train.device / train.threads
    cfg = load_config(args.config, [*args.overrides, *_device_overrides(args, section="train")])
    if args.device is not None:
        _device(args)  # a device this machine lacks: one line naming --device, before the trainer starts
    from midistruct.training.loop import Trainer

    trainer = Trainer(cfg, resume=args.resume, init=args.init, overwrite=args.overwrite, progress=not args.quiet)
    trainer.run()
    if trainer.dist.is_main:
        start = f" from {trainer.init['checkpoint']}" if trainer.init else ""
        print(f"trained {trainer.state['step']} steps{start}; checkpoints in {trainer.run_dir}/best and "
              f"{trainer.run_dir}/last")
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    """The README's main job: interpolate two pieces with the shipped model the config names, or (without one,
    or with --train) prepare a corpus slice, train briefly and interpolate two held-out pieces."""
    from midistruct import quickstart
    from midistruct.config import load_config

    cfg = load_config(args.config, [*args.overrides, *_device_overrides(args, section="train")])
    if args.device is not None:
        _device(args)  # a device this machine lacks: one line naming --device
    s = quickstart.run(cfg, out_dir=args.output, train=args.train, progress=not args.quiet)
    print(_quickstart_report(s))
    return 0


def _quickstart_report(s: dict) -> str:
    """What quickstart did, where its outputs are, and what to run next."""
    ckpt, out = s["checkpoint"], s["out_dir"]
    took = f"{s['seconds']:.0f} s" if s["seconds"] < 120 else f"{s['minutes']} min"
    how = (f"with the shipped model {s['pretrained']}, trained {s['trained_steps']} steps; nothing trained here"
           if s.get("pretrained") else f"{s['trained_steps']} training steps")
    better = ("midistruct quickstart --train     # train a model here instead (see configs/quickstart.yaml)"
              if s.get("pretrained") else
              "midistruct train --config small     # a better model: ~1 hour on CPU (see configs/)")
    return (f"\ndone in {took} ({how}).\n"
            f"  interpolation {s['a']} -> {s['b']}: {len(s['midi'])} MIDI files and {s['plot']} in {out}/\n"
            f"  checkpoint: {ckpt}\n"
            + (f"  listen: {s['page']}\n" if s.get("page") else "")
            + "next:\n"
            f"  midistruct reconstruct {ckpt} YOUR.mid --plot --audio -o out/mine\n"
            f"  midistruct interpolate {ckpt} A.mid B.mid --steps 8 --plot -o out/mine\n"
            f"  {better}")


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Reconstruction metrics of a checkpoint on a split of prepared shards."""
    from midistruct.evaluation.evaluate import evaluate_checkpoint

    data = args.data or None
    device = _device(args)
    result = evaluate_checkpoint(args.checkpoint, data=data, split=args.split, windows=args.windows, device=device,
                                 free_run=args.free_run, interpolations=args.interpolations, seed=args.seed or 0,
                                 exclude_recurring=not args.keep_recurring, probes=args.probes,
                                 samples=args.samples, judge=args.judge,
                                 sample_temperature=args.sample_temperature, beams=args.beams, tags=args.tags,
                                 code_length=args.code_length, interpolation_method=args.method,
                                 snap_interpolations=args.snap)
    print(json.dumps(result, indent=2))
    return 0


def _pipeline(args: argparse.Namespace):
    from midistruct.generation.pipeline import MidiStruct

    device = _device(args)  # before loading: an unavailable device fails at once
    return MidiStruct.from_pretrained(args.checkpoint, device=device)


def _write_outputs(args: argparse.Namespace, scores: dict[str, object], settings: dict) -> None:
    """Write ``name -> Score`` as MIDI into the --output folder, with generation.json beside them.

    With --plot also one PNG of all outputs stacked (named by their common stem), with --audio a WAV
    beside each MIDI file; both are recorded in generation.json ("plot", "audio").
    """
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    for name, score in scores.items():
        score.dump_midi(str(out / f"{name}.mid"))
    record = {"command": args.command, "checkpoint": str(args.checkpoint), "seed": args.seed, **settings,
              **_estimated_downbeats(args), "outputs": [f"{name}.mid" for name in scores]}
    plot, audio = getattr(args, "plot", False), getattr(args, "audio", False)
    if plot or audio:
        from midistruct.render import render_outputs

        record.update(render_outputs(scores, out, plot=plot, audio=audio, default_stem=args.command))
    (out / "generation.json").write_text(json.dumps(record, indent=2))
    print(f"wrote {len(scores)} MIDI file(s) and generation.json to {out}"
          + (f"; piano rolls in {record['plot']}" if plot else ""))
    if audio:
        print(f"wrote {len(scores)} WAV file(s) with {record['audio']['backend']}")


def _estimated_downbeats(args: argparse.Namespace) -> dict:
    """``{"downbeat_estimated": {input: seconds}}`` for the inputs read with ``--downbeat auto`` (where the bar lines
    went; None: no notes), else {}."""
    from midistruct.tokens.downbeat import AUTO, estimate_downbeat
    from midistruct.tokens.validate import load_score

    own = list(getattr(args, "inputs", None) or []) + [getattr(args, k, None) for k in ("a", "b", "primer", "content")]
    inputs = {"": own}
    inputs |= {f"{block}_": [getattr(args, f"{block}_from", None)] for block in ("arrangement", "performance")}
    found = {}
    for prefix, paths in inputs.items():
        if getattr(args, f"{prefix}downbeat", None) != AUTO:
            continue
        meter = getattr(args, f"{prefix}time_signature", None)
        for path in filter(None, paths):
            seconds = estimate_downbeat(load_score(Path(path)), time_signature=meter)
            found[str(path)] = None if seconds is None else round(seconds, 4)
    return {"downbeat_estimated": found} if found else {}


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


def _tags(args: argparse.Namespace) -> dict:
    """``tags`` (+ ``tag_strength`` where the command has it) keyword arguments from --tag NAME=VALUE."""
    from midistruct.tags import TagError, parse_tags

    try:
        tags = parse_tags(args.tag)
    except TagError as err:
        raise UserError(str(err)) from None
    if not tags:
        return {}
    strength = getattr(args, "tag_strength", None)
    return {"tags": tags} | ({"tag_strength": strength} if strength is not None else {})


def _placing(args: argparse.Namespace) -> dict:
    """``time_signature`` / ``downbeat`` keyword arguments from --time-signature and --downbeat, when given."""
    found = {"time_signature": args.time_signature, "downbeat": args.downbeat}
    return {k: v for k, v in found.items() if v is not None}


def _downbeat(text: str) -> float | str:
    """--downbeat's value: seconds >= 0, or ``auto``."""
    if text == "auto":
        return text
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give seconds >= 0 (where a bar line falls) or 'auto'")
    return seconds


def _add_placing_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--time-signature", default=None, metavar="N/D",
                   help="read the music in this meter, whatever the file says (one of the model's meters; e.g. "
                        "4/4 for POP909's files, whose own say 2/4 or 1/4)")
    p.add_argument("--downbeat", type=_downbeat, default=None, metavar="SECONDS|auto",
                   help="a bar line falls here: the music moves by less than a bar so that one does (for files "
                        "whose bar lines sit off the beat, such as POP909's: its beat_midi.txt gives the downbeats); "
                        "'auto' estimates where from the notes")


def cmd_reconstruct(args: argparse.Namespace) -> int:
    """Encode and decode each input (optionally moved along attribute vectors)."""
    ms = _pipeline(args)
    shift = _shift(args)
    tags = _tags(args)
    mode = "reconstruct" + "".join(f".{s.replace('=', '')}" for s in args.shift or []) \
        + "".join(f".{v.replace(' ', '-')}" for v in tags.get("tags", {}).values())
    scores, failed = {}, []
    for path in args.inputs:  # every good file is written; each bad one is reported and the exit code says so
        try:
            scores[f"{Path(path).stem}.{mode}"] = ms.reconstruct(path, **shift, **tags, **_placing(args),
                                                                 **_sampling(args))
        except MidiStructError as err:
            print(f"midistruct: error: {err}", file=sys.stderr)
            failed.append(path)
    if scores:
        _write_outputs(args, scores, {"inputs": [p for p in args.inputs if p not in failed], "failed": failed,
                                      **_sampling(args), **_shift_record(args), **_tags(args),
                                      **_placing(args)})
    if failed and len(args.inputs) > 1:
        print(f"midistruct: {len(failed)} of {len(args.inputs)} inputs failed", file=sys.stderr)
    return 2 if failed else 0


def cmd_transfer(args: argparse.Namespace) -> int:
    """The content of one piece with the arrangement and/or performance of others (issue 19)."""
    if not args.arrangement_from and not args.performance_from:
        raise UserError("transfer needs --arrangement-from MIDI and/or --performance-from MIDI")
    ms = _pipeline(args)
    placing = {"content_placing": _placing(args)}
    sources = {}
    for block in ("arrangement", "performance"):
        path = getattr(args, f"{block}_from")
        if path:
            sources[f"{block}_from"] = path
            given = {"time_signature": getattr(args, f"{block}_time_signature"),
                     "downbeat": getattr(args, f"{block}_downbeat")}
            placing[f"{block}_placing"] = {k: v for k, v in given.items() if v is not None}
    name = Path(args.content).stem + "".join(f".{block.removesuffix('_from')}-as.{Path(path).stem}"
                                             for block, path in sources.items())
    score = ms.transfer(args.content, **sources, **placing, **_sampling(args))
    _write_outputs(args, {name: score}, {"content": args.content, **sources, **placing, **_sampling(args)})
    return 0


def cmd_attributes(args: argparse.Namespace) -> int:
    """Measure attributes over a corpus's windows and write their latent directions."""
    from midistruct.metrics.features import ATTRIBUTES

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


def cmd_prior(args: argparse.Namespace) -> int:
    """Fit a Gaussian to the codes of a corpus's windows and write it beside the weights, so `sample` can
    draw codes where the model puts them (needed for deterministic codes, optional for a VAE)."""
    from midistruct.model.pretrained import resolve
    from midistruct.model.prior import PRIOR_FILE

    ms = _pipeline(args)
    output = Path(args.output) if args.output else resolve(args.checkpoint) / PRIOR_FILE
    if output.suffix != ".safetensors":
        raise UserError(f"{output}: a code prior is written as .safetensors")
    tags = [t for t in args.tags.split(",") if t] if args.tags is not None else CONDITIONING_TAGS
    prior = ms.fit_prior(args.data, split=args.split, windows=args.windows, rank=args.rank, progress=True,
                         tags=tags, min_tag_windows=args.min_tag_windows, bank=args.bank)
    path = prior.save(output, half=args.half)
    k = prior.factor.shape[1]
    print(f"fitted a Gaussian over {prior.dim} code dimensions (rank {k} + diagonal) to {prior.windows} {args.split} "
          f"windows; wrote {path}")
    if prior.posterior:
        print("  a VAE: the Gaussian is its aggregate posterior (the means' spread plus the posterior variances), "
              "under which `evaluate --code-length` measures its ELBO")
    if prior.bank is not None:
        print(f"  kept {len(prior.bank)} real bar codes: sampled bar codes snap to the nearest (`sample --no-snap` "
              "draws from the Gaussian alone)")
    for name, group in prior.tags.items():
        print(f"  tag {name}: {len(group.values)} values ({', '.join(group.values[:8])}"
              f"{', ...' if len(group.values) > 8 else ''})")
    keyless = [t for t in tags if ms.canonical and t in ("tonic", "key")]
    if keyless:
        print(f"  not kept: {', '.join(keyless)} (this model reads every piece in C major / A minor; `sample --tag "
              "tonic=D` transposes its samples instead)")
    missing = [t for t in tags if t not in prior.tags and t not in keyless]
    if missing:
        print(f"  not kept (fewer than 2 values with {args.min_tag_windows} windows): {', '.join(missing)}")
    if args.output and output.parent.resolve() != resolve(args.checkpoint).resolve():
        print(f"  `sample` uses it once it is in the checkpoint folder as {PRIOR_FILE}")
    return 0


def _print_sweeps(ms, vectors, *, windows: int) -> None:
    """Shift ``windows`` held-out windows along each attribute by -2..2; print the measured means and Spearman."""
    from midistruct.generation import attributes

    rows = attributes.corpus_windows_with_pieces(ms.cfg.data.output, split="test", limit=windows, seed=1)
    held_out = ms.encode_windows([ids for ids, _, _ in rows],
                                 shifts=ms.corpus_shifts(ms.cfg.data.output, "test", [p["id"] for _, p, _ in rows]))
    latents = [held_out.window(i) for i in range(len(held_out))]
    amounts = [-2.0, -1.0, 0.0, 1.0, 2.0]
    print(f"sweep of {len(latents)} test windows (greedy), measured attribute mean at shift " + " ".join(f"{a:+g}" for a in amounts))
    for name in vectors.names:
        found = attributes.sweep(ms, latents, vectors, name, amounts)
        means = " ".join(f"{m:8.3f}" for m in found["mean_measured"])
        print(f"  {name:14s} {means}   Spearman {found['spearman']:+.3f}")


def cmd_interpolate(args: argparse.Namespace) -> int:
    """Interpolate from A to B in latent space; unless --no-audio also a WAV per step and index.html, one
    page with every step's piano roll and player (audio embedded, so it plays offline)."""
    ms = _pipeline(args)
    steps = ms.interpolate(args.a, args.b, steps=args.steps, method=args.method, snap=args.snap, **_tags(args),
                           **_placing(args), **_sampling(args))
    a, b = Path(args.a).stem, Path(args.b).stem
    way = args.method + (".snap" if args.snap else "")  # a snapped path beside a plain one in the same folder
    scores = {f"{a}_to_{b}.{way}.{i:02d}": s for i, s in enumerate(steps)}
    page = {"page": "index.html"} if args.audio else {}
    _write_outputs(args, scores, {"a": args.a, "b": args.b, "steps": args.steps, "method": args.method,
                                  "snap": args.snap, **_sampling(args), **_tags(args), **_placing(args), **page})
    if args.audio:
        from midistruct.render import write_outputs_page

        titles = [f"step {i}" + (f" (A: {a})" if i == 0 else f" (B: {b})" if i == len(steps) - 1 else "")
                  for i in range(len(steps))]
        backend = json.loads((Path(args.output) / "generation.json").read_text())["audio"]["backend"]
        notes = [f"checkpoint: {args.checkpoint}", f"audio: {backend}"]
        snapped = ", inner steps snapped to real bars" if args.snap else ""
        path = write_outputs_page(list(scores), args.output, title=f"{a} to {b}: {args.method}{snapped}, "
                                  f"{len(steps)} steps", titles=titles, notes=notes)
        print(f"page with every step's piano roll and audio: {path}")
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
    score = ms.continue_(args.primer, args.bars, latent=latent, **_tags(args), **_placing(args), **_sampling(args))
    name = f"{Path(args.primer).stem}.continue" + (f".{Path(args.style).stem}" if args.style else "")
    _write_outputs(args, {name: score}, {"primer": args.primer, "bars": args.bars, "style": args.style,
                                         **_sampling(args), **_tags(args), **_placing(args)})
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    """Draw codes from the prior and decode them."""
    ms = _pipeline(args)
    samples = ms.sample(args.n, bars=args.bars, meter=args.meter, prior_scale=args.prior_scale, **_shift(args),
                        **_tags(args), **_sampling(args), snap=not args.no_snap, tries=args.tries)
    _write_outputs(args, {f"sample.{i:02d}": s for i, s in enumerate(samples)},
                   {"n": args.n, "bars": args.bars, "meter": ms.sample_meter(_tags(args).get("tags"), args.meter),
                    "prior_scale": args.prior_scale,
                    "prior": "fitted" if ms.prior is not None else "normal",
                    "snap": ms.prior is not None and ms.prior.bank is not None and not args.no_snap,
                    "tries": args.tries, **_sampling(args),
                    **_shift_record(args), **_tags(args)})
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    """Write a piece's latents to .safetensors or .npz."""
    import torch

    if args.seed is not None:
        torch.manual_seed(args.seed)
    z = _pipeline(args).encode(args.input, sample=args.sample, **_placing(args))
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


def cmd_export(args: argparse.Namespace) -> int:
    """Write a checkpoint as a shipped model folder: bf16/fp16 weights, no trainer state, a model card."""
    from midistruct.model import pretrained

    card = pretrained.export(args.checkpoint, args.output, card=pretrained.read_card(args.card), dtype=args.dtype,
                             examples=args.examples)
    size = pretrained.folder_bytes(Path(args.output)) / 1e6
    print(f"exported {args.checkpoint} to {args.output} ({size:.1f} MB, {card['dtype']}, "
          f"{card['parameters']:,} parameters, {card['bars']} bars, {len(card['examples'])} examples); "
          f"model card in {Path(args.output) / 'README.md'}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """List the shipped models (name, what it models, bars, parameters, headline metric)."""
    from midistruct.model import pretrained

    cards = [pretrained.describe(name) for name in pretrained.names()]
    if args.json:
        print(json.dumps(cards, indent=2))
        return 0
    if not cards:
        print(f"no models are shipped yet (looked in {pretrained.root()}).\n"
              "export one: midistruct export RUN/best -o src/midistruct/pretrained/NAME --card card.yaml "
              "(see src/midistruct/pretrained/README.md)")
    for c in cards:
        m = c["metric"]
        print(f"{c['name']:20s} {c['models']}, {c['bars']} bars, {c['parameters'] / 1e6:.1f}M parameters, "
              f"{m['name']} {m['value']:g}")
    return 0


def _add_generation_args(p: argparse.ArgumentParser, *, writes_folder: bool = True, temperature: float = 0.0) -> None:
    """The checkpoint, device and sampling options of every generating command; with ``writes_folder``
    also -o/--output DIR, --plot and --audio (decode adds its own -o/--output FILE; encode, which decodes
    nothing, takes the checkpoint, device and --seed only)."""
    _add_checkpoint_arg(p)
    _add_device_arg(p)
    p.add_argument("--temperature", type=TEMPERATURE, default=temperature,
                   help=f"0: greedy; > 0: sampling at this temperature (default: {temperature:g})")
    p.add_argument("--top-p", type=TOP_P, default=1.0, help="nucleus sampling mass (with --temperature > 0)")
    p.add_argument("--seed", type=int, default=None, help="random seed, for reproducible sampling")
    if writes_folder:
        _add_output_dir(p, default="out", what="the MIDI files and generation.json")
        p.add_argument("--plot", action="store_true", help="also write one piano-roll PNG of all outputs")
        p.add_argument("--audio", action="store_true",
                       help="also write a WAV beside each MIDI file (a General MIDI soundfont: $MIDISTRUCT_SOUNDFONT or "
                            "pretty_midi's TimGM6mb.sf2; the output says which synthesis was used)")


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
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="run `midistruct COMMAND --help` for its options")
    p = sub.add_parser("prepare", help="turn a MIDI corpus into tokenized, bar-aligned shards",
                       epilog=FINE_TUNE_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_config_args(p)
    p.add_argument("--overwrite", action="store_true", help="replace shards made with another tokenizer config")
    p.add_argument("--init", default=None, metavar="CHECKPOINT",
                   help="prepare for fine-tuning this checkpoint folder or shipped model (midistruct models): use its "
                        "tokenizer and window (segments.bars, segments.max_tokens) instead of the config's")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_prepare)
    p = sub.add_parser("train", help="train the autoencoder on prepared shards (or fine-tune one with --init)",
                       epilog=FINE_TUNE_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_config_args(p)
    start = p.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true", help="continue train.run_dir/last exactly where it stopped")
    start.add_argument("--init", default=None, metavar="CHECKPOINT",
                       help="fine-tune: start from the weights of this checkpoint folder or shipped model (midistruct "
                            "models), with its model settings (the config's model section is not used) on data "
                            "prepared with its tokenizer (midistruct prepare --init CHECKPOINT); a fresh optimizer "
                            "from step 0")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in train.run_dir (its checkpoints and metrics) with a new one")
    _add_device_arg(p, config="train")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_train)
    p = sub.add_parser("quickstart", help="the main job: interpolate two tunes with the shipped model, or without "
                                          "one prepare a music21 slice, train ~6 min and interpolate")
    p.add_argument("--config", default="quickstart", help="named config or YAML path (default: quickstart)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (repeatable)")
    p.add_argument("--train", action="store_true",
                   help="prepare and train even when the shipped model that quickstart.pretrained names is installed")
    _add_output_dir(p, default="out/quickstart", what="the interpolation MIDI, PNG and quickstart.json")
    _add_device_arg(p, config="train")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=cmd_quickstart)
    _add_generation_parsers(sub)
    _add_latent_parsers(sub)
    _add_evaluate_parser(sub)
    _add_pretrained_parsers(sub)
    _add_form_parser(sub)
    _add_library_parsers(sub)
    _add_map_parser(sub)
    return parser


def _add_generation_parsers(sub) -> None:
    """reconstruct, interpolate, grid, continue, sample: the commands that write MIDI files into a folder."""
    p = sub.add_parser("reconstruct", help="encode and decode MIDI files")
    _add_generation_args(p)
    p.add_argument("inputs", nargs="+", help="MIDI files (read by content, whatever the name; *.abc: ABC tunes)")
    _add_shift_args(p)
    _add_tag_args(p)
    _add_placing_args(p)
    p.set_defaults(handler=cmd_reconstruct)
    p = sub.add_parser("transfer", help="play one piece's content (melody, harmony) with another's arrangement and/or "
                       "performance (a model with those blocks, e.g. configs/pop909-blocks-views-4bar.yaml)")
    _add_generation_args(p)
    p.add_argument("content", help="MIDI file whose melody and harmony are kept")
    _add_placing_args(p)
    for block, what in (("arrangement", "arrangement (accompaniment rhythm, voicing, register)"),
                        ("performance", "performance (how hard each note is played)")):
        p.add_argument(f"--{block}-from", default=None, metavar="MIDI", help=f"MIDI file whose {what} is taken")
        p.add_argument(f"--{block}-time-signature", default=None, metavar="N/D",
                       help=f"--time-signature for the --{block}-from file")
        p.add_argument(f"--{block}-downbeat", type=_downbeat, default=None, metavar="SECONDS|auto",
                       help=f"--downbeat for the --{block}-from file")
    p.set_defaults(handler=cmd_transfer)
    p = sub.add_parser("interpolate", help="interpolate between two MIDI files in latent space")
    _add_generation_args(p)
    p.add_argument("a", help="MIDI file at the start of the path")
    p.add_argument("b", help="MIDI file at the end of the path")
    p.add_argument("--steps", type=STEPS, default=8, help="pieces on the path, both ends included (>= 2)")
    _add_method_arg(p)
    p.add_argument("--snap", action="store_true",
                   help="move each inner step's bar codes to the nearest real bars' in the code prior's bank (a "
                        "prior fitted with --bank): interpolants of real bars, as likely as the ends to a plain LM")
    _add_tag_args(p)
    _add_placing_args(p)
    p.add_argument("--no-audio", dest="audio", action="store_false",
                   help="skip the WAV files and index.html (written by default: one page with every step's "
                        "piano roll and player)")
    p.set_defaults(handler=cmd_interpolate, audio=True)  # --audio is the default here
    p = sub.add_parser("grid", help="a grid between four corner pieces (top-left, top-right, bottom-left, bottom-right)")
    _add_generation_args(p)
    p.add_argument("corners", nargs=4, metavar="CORNER",
                   help="four MIDI files: top-left, top-right, bottom-left, bottom-right")
    p.add_argument("--steps", type=STEPS, default=5, help="pieces per side of the grid (>= 2)")
    _add_method_arg(p)
    p.set_defaults(handler=cmd_grid)
    p = sub.add_parser("continue", help="continue a primer, optionally in the style of another piece")
    _add_generation_args(p, temperature=1.0)
    p.add_argument("primer", help="MIDI file to continue")
    p.add_argument("--bars", type=POSITIVE, default=4, help="bars to add")
    p.add_argument("--style", default=None, help="a MIDI file whose latent steers the continuation")
    _add_tag_args(p)
    _add_placing_args(p)
    p.set_defaults(handler=cmd_continue)
    p = sub.add_parser("sample", help="decode codes drawn from the model's prior (a VAE's N(0, I), or the code "
                       "prior `midistruct prior` fitted)")
    _add_generation_args(p, temperature=1.0)
    p.add_argument("-n", type=POSITIVE, default=4, help="how many samples")
    p.add_argument("--bars", type=POSITIVE, default=None, help="bars per sample (default: the model's window)")
    p.add_argument("--meter", default=None,
                   help="time signature of the samples, one in the model's vocabulary (default: the meter most "
                        "training windows with the --tag values are in, else the one most of them are in, else 4/4)")
    p.add_argument("--prior-scale", type=TEMPERATURE, default=1.0, metavar="S",
                   help="draw codes nearer the prior's mean: every deviation from it times S (the truncation "
                        "trick; default: 1, the prior as it is)")
    p.add_argument("--no-snap", action="store_true",
                   help="keep the bar codes the Gaussian draws, rather than moving each to the nearest real bar's "
                        "code the prior keeps (its bank; `midistruct prior --bank`)")
    p.add_argument("--tries", type=POSITIVE, default=1, metavar="N",
                   help="with --tag key=... (or tonic) on a model that reads a canonical key: draw a sample again "
                        "when the key finder hears it in another key than the one asked for, up to N draws in all "
                        "(default: 1, no redraw)")
    _add_shift_args(p)
    _add_tag_args(p, sampling=True)
    p.set_defaults(handler=cmd_sample)


def _add_latent_parsers(sub) -> None:
    """attributes, encode, decode: the commands that write latents or latent directions to one file."""
    p = sub.add_parser("attributes", help="measure attributes over a corpus and write their latent directions")
    _add_checkpoint_arg(p)
    _add_device_arg(p)
    p.add_argument("-o", "--output", default="attributes.safetensors", metavar="FILE",
                   help="vectors file to write (.safetensors; default: attributes.safetensors)")
    p.add_argument("--data", default=None, help="shard folder (default: the checkpoint's training data)")
    p.add_argument("--split", default="train", choices=["train", "valid", "test"],
                   help="which split's windows are measured (default: train)")
    p.add_argument("--windows", type=POSITIVE, default=2000, help="windows measured (a seeded random subset)")
    p.add_argument("--names", default=None, help="comma-separated attributes (default: all)")
    p.add_argument("--sweep", type=COUNT, default=0, metavar="N",
                   help="then shift N test windows along each vector by -2..2 and report what was measured")
    p.set_defaults(handler=cmd_attributes)
    p = sub.add_parser("prior", help="fit a Gaussian to a corpus's codes so `sample` can draw from it "
                       "(needed by models with deterministic codes)")
    _add_checkpoint_arg(p)
    _add_device_arg(p)
    p.add_argument("-o", "--output", default=None, metavar="FILE",
                   help="prior file to write (.safetensors; default: CHECKPOINT/code_prior.safetensors, "
                        "where `sample` and `evaluate --samples` find it)")
    p.add_argument("--data", default=None, help="shard folder (default: the checkpoint's training data)")
    p.add_argument("--split", default="train", choices=["train", "valid", "test"],
                   help="whose windows' codes are fitted (default: train)")
    p.add_argument("--windows", type=POSITIVE, default=20000,
                   help="windows drawn (a seeded random subset; those shorter than the model's window are left "
                        "out; default: 20000)")
    p.add_argument("--rank", type=POSITIVE, default=128,
                   help="principal directions kept in the covariance, the rest is diagonal (default: 128)")
    p.add_argument("--tags", default=None, metavar="NAMES",
                   help="comma-separated tags whose values the prior keeps, so that generation can be given "
                        f"--tag NAME=VALUE (default: {','.join(CONDITIONING_TAGS)}; '' for none)")
    p.add_argument("--min-tag-windows", type=POSITIVE, default=20, metavar="N",
                   help="a tag value is kept when at least N windows have it (default: 20)")
    p.add_argument("--bank", type=COUNT, default=1000, metavar="N",
                   help="real bar codes kept (drawn at random from the windows fitted) for `sample` to snap its bar "
                        "codes to; 0 keeps none (default: 1000)")
    p.add_argument("--half", action="store_true", help="write float16 tensors (half the bytes), as shipped models do")
    p.set_defaults(handler=cmd_prior)
    p = sub.add_parser("encode", help="write a MIDI file's latents to .safetensors or .npz")
    _add_checkpoint_arg(p)
    _add_device_arg(p)
    p.add_argument("--seed", type=int, default=None, help="random seed, for a reproducible --sample")
    p.add_argument("input", help="MIDI file to encode")
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="latents file to write (.safetensors or .npz)")
    p.add_argument("--sample", action="store_true", help="sample the posterior instead of its mean")
    _add_placing_args(p)
    p.set_defaults(handler=cmd_encode)
    p = sub.add_parser("decode", help="decode a latents file written by encode")
    _add_generation_args(p, writes_folder=False)
    p.add_argument("latents", help="latents file written by `midistruct encode` (.safetensors or .npz)")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="MIDI file to write")
    p.set_defaults(handler=cmd_decode)


def _add_evaluate_parser(sub) -> None:
    """evaluate: metrics of a checkpoint, printed as JSON."""
    p = sub.add_parser("evaluate", help="reconstruction metrics of a checkpoint on held-out windows")
    _add_checkpoint_arg(p)
    _add_device_arg(p)
    p.add_argument("--data", default=None, help="shard folder (default: the one the checkpoint was trained on)")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"],
                   help="which split's windows are measured (default: test)")
    p.add_argument("--windows", type=POSITIVE, default=512, help="windows for the teacher-forced metrics")
    p.add_argument("--free-run", type=COUNT, default=128, help="windows decoded free-running")
    p.add_argument("--interpolations", type=COUNT, default=32,
                   help="pairs of held-out windows interpolated in 8 steps to measure smoothness (0: none)")
    p.add_argument("--judge", default=None, metavar="CKPT",
                   help="a checkpoint folder or shipped model name (e.g. the plain-LM peer) whose NLL judges "
                        "the interpolants and, with --code-length, the windows")
    p.add_argument("--keep-recurring", action="store_true",
                   help="keep held-out windows that occur in the training split (any transposition)")
    p.add_argument("--probes", type=COUNT, default=0, metavar="N",
                   help="linear probes of the latent codes (key, mode, meter, collection ...) on N windows (0: none)")
    p.add_argument("--samples", type=COUNT, default=0, metavar="N",
                   help="musical statistics of N prior samples against N held-out windows (0: none)")
    p.add_argument("--sample-temperature", type=TEMPERATURE, default=0.5, metavar="T",
                   help="also decode free-running by sampling at temperature T (free_sampled_*; 0: greedy only)")
    p.add_argument("--beams", type=COUNT, default=0, metavar="K",
                   help="also decode free-running by beam search over K beams (free_beam_*; 0 or 1: not measured)")
    p.add_argument("--tags", action="store_true",
                   help="a model whose decoder reads tags (model.decoder_tags) is given each window's own; without "
                        "it, none (as `reconstruct` without --tag)")
    _add_method_arg(p)
    p.add_argument("--snap", action="store_true",
                   help="snap the interpolations' inner bar codes to the code prior's bank (as interpolate --snap)")
    p.add_argument("--code-length", action="store_true",
                   help="bits per window as rounded codes under the fitted code prior plus the decoder's NLL given "
                        "them; for a VAE, its negative ELBO under N(0, I) and under the code prior fitted to its "
                        "posteriors (code_length.*; beside the --judge LM's NLL of the same windows when given)")
    p.add_argument("--seed", type=int, default=0, help="which windows (a seeded random subset)")
    p.set_defaults(handler=cmd_evaluate)


def _add_pretrained_parsers(sub) -> None:
    """models, export: the shipped models (midistruct.model.pretrained)."""
    p = sub.add_parser("models", help="list the shipped models, usable by name wherever a checkpoint is asked for")
    p.add_argument("--json", action="store_true", help="print every model card (card.json) as JSON")
    p.set_defaults(handler=cmd_models)
    p = sub.add_parser("export", help="write a checkpoint as a shipped model: bf16 weights, no trainer state, "
                                      "a model card")
    _add_checkpoint_arg(p)
    p.add_argument("-o", "--output", required=True, metavar="DIR",
                   help="folder to write, named as the model (e.g. src/midistruct/pretrained/NAME)")
    p.add_argument("--card", required=True, metavar="FILE",
                   help="YAML or JSON: description, models, data, licence, metric {name, value, command}, "
                        "optional notes (src/midistruct/pretrained/README.md)")
    p.add_argument("--dtype", choices=["bf16", "fp16"], default="bf16",
                   help="how the weights are stored; loading gives float32 (default: bf16)")
    p.add_argument("--examples", nargs="+", default=[], metavar="MIDI",
                   help="MIDI files the model was not trained on and the package may carry (public domain, no "
                        "dataset's files) to copy into DIR/examples/ and list in the card; `midistruct quickstart` "
                        "interpolates between the first two")
    p.set_defaults(handler=cmd_export)
    p = sub.add_parser("tags", help="the tags a model can be given (--tag NAME=VALUE) and their values: those its "
                                    "code prior keeps and those its decoder reads (model.decoder_tags)")
    _add_checkpoint_arg(p)
    p.add_argument("--json", action="store_true", help="print {tag: {value: training windows}} as JSON")
    p.set_defaults(handler=cmd_tags)


def cmd_tags(args: argparse.Namespace) -> int:
    """List the tags of a checkpoint's code prior, with how many training windows each value had, and those its
    decoder reads (``model.decoder_tags``; in --json with null counts where the prior does not know the tag)."""
    from midistruct.model.pretrained import resolve
    from midistruct.model.prior import load_prior

    from midistruct.model.checkpoint import META_FILE, key_mode

    folder = resolve(args.checkpoint)
    prior = load_prior(folder)
    found = {name: dict(zip(g.values, g.counts)) for name, g in (prior.tags if prior else {}).items()}
    decoder = json.loads((folder / "config.json").read_text()).get("decoder_tags") or {}  # issue 18 item 2
    if args.json:
        print(json.dumps(found | {name: {v: None for v in values} for name, values in decoder.items()
                                  if name not in found}, indent=2))
        return 0
    for name, values in decoder.items():  # a tag the prior knows too is listed once, with the prior's counts
        if name not in found:
            print(f"{name} (the decoder reads it): {', '.join(values)}")
    if not found and decoder:
        return 0
    if not found:
        print(f"{args.checkpoint}: no tags (" + ("its code prior was fitted without tags" if prior else "no code prior")
              + "); fit one with `midistruct prior CHECKPOINT`")
        return 0
    for name, values in found.items():
        reads = " (the decoder reads it too)" if name in decoder else ""
        print(f"{name}{reads}: " + ", ".join(f"{v} ({n})" for v, n in values.items()))
    if key_mode(json.loads((folder / META_FILE).read_text())) == "canonical":
        print("tonic, key: any (this model reads every piece in C major / A minor; a tonic transposes the music)")
    return 0


def cmd_form(args: argparse.Namespace) -> int:
    """Sections of a whole song and which of them repeat (issue 16): form.json, the song with a marker at each
    section start and, with --plot, the self-similarity matrix with the sections drawn (midistruct.form)."""
    from midistruct.form import output
    from midistruct.form.analysis import Settings, analyse, load

    if len(args.paths) > 2:
        raise UserError(f"form takes [CHECKPOINT] MIDI, got {len(args.paths)} paths")
    checkpoint, midi = (None, args.paths[0]) if len(args.paths) == 1 else args.paths
    features = args.features or ("codes" if checkpoint else "tracks")
    if features == "codes" and checkpoint is None:
        raise UserError("--features codes needs a model: midistruct form CHECKPOINT song.mid")
    settings = Settings(features=features, method=args.method, hop=args.hop, time_signature=args.time_signature)
    score = load(midi)  # a bad file fails before the model loads
    model = None
    if features == "codes":
        args.checkpoint = checkpoint
        model = _pipeline(args)
    elif checkpoint:
        print(f"midistruct: note: --features {features} does not use {checkpoint}", file=sys.stderr)
    form = analyse(score, settings=settings, model=model, name=midi)
    if form.extra.get("windows_too_long"):
        print(f"midistruct: note: {form.extra['windows_too_long']} windows hold more tokens than the model reads; "
              f"their bars were encoded from the other windows or alone ({form.extra['bars_cut']} cut short)",
              file=sys.stderr)
    form.extra |= {"checkpoint": str(checkpoint)} if model is not None else {}
    files = output.write(form, score, args.output, stem=Path(midi).stem, plot=args.plot)
    if args.json:
        print(json.dumps({**form.as_dict(), "outputs": files}, indent=2))
    else:
        print(_form_report(form, files))
    return 0


def _form_report(form, files: dict[str, str]) -> str:
    """The sections as a table (bars numbered from 1 here; form.json counts from 0) and the files written."""
    lines = [f"{form.source}: {len(form.novelty)} bars, {len(form.sections)} sections "
             f"({''.join(s.label for s in form.sections)}), {form.settings.features} features, "
             f"{form.settings.method} boundaries",
             "  label  bars (from 1)   quarter notes"]
    lines += [f"  {s.label:5s}  {s.start_bar + 1:>4d}-{s.end_bar:<8d}  {s.start_qn:g}-{s.end_qn:g}" for s in form.sections]
    lines.append("wrote " + ", ".join(files.values()))
    return "\n".join(lines)


def _add_form_parser(sub) -> None:
    """form: a song's sections and repetitions from its bars' codes or notes."""
    p = sub.add_parser("form", help="find a song's sections and which repeat (A B A C ...), from a model's bar codes "
                       "or from the notes", usage="midistruct form [options] [CHECKPOINT] MIDI")
    p.add_argument("paths", nargs="+", metavar="[CHECKPOINT] MIDI",
                   help="a checkpoint folder or shipped model name (midistruct models), then the song; the song "
                        "alone analyses its notes")
    _add_device_arg(p)
    p.add_argument("--features", choices=["codes", "tracks", "notes"], default=None,
                   help="codes: the model's bar codes (windows every --hop bars, each bar's codes averaged); tracks: "
                        "per bar, each track's pitch-class and onset histograms, no model; notes: the same of all "
                        "tracks together (default: codes with a CHECKPOINT, else tracks)")
    p.add_argument("--method", choices=["repetition", "foote", "supervised"], default="repetition",
                   help="boundaries where repetitions start or end (and the bars change), in 4-bar phrases where "
                        "the evidence allows; foote: at the peaks of Foote's novelty alone, the first method; "
                        "supervised: where a small head learnt from POP909's phrase labels (train-split songs) "
                        "reads the same evidence, in 4-bar phrases (default: repetition)")
    p.add_argument("--hop", type=POSITIVE, default=1, help="codes: bars between window starts (default: 1)")
    p.add_argument("--time-signature", default=None, metavar="N/D",
                   help="count bars in this meter instead of the file's (e.g. 4/4 for POP909 files that say 1/4)")
    _add_output_dir(p, default="out", what="form.json, SONG.form.mid (markers at section starts) and form.png")
    p.add_argument("--plot", action="store_true", help="also write form.png: the self-similarity matrix with the "
                   "sections drawn, and the novelty curve")
    p.add_argument("--json", action="store_true", help="print form.json instead of the table")
    p.set_defaults(handler=cmd_form)


def _features_and_model(args: argparse.Namespace, *, command: str, what: str):
    """``[CHECKPOINT] PATH`` of embed and radio: (features, path, encoder, model id); the model loads only for
    codes features."""
    from midistruct.library import features as lf

    if len(args.paths) > 2:
        raise UserError(f"{command} takes [CHECKPOINT] {what}, got {len(args.paths)} paths")
    checkpoint, path = (None, args.paths[0]) if len(args.paths) == 1 else args.paths
    features = args.features or ("codes" if checkpoint else "histogram")
    if features == "codes" and checkpoint is None:
        raise UserError(f"--features codes needs a model: midistruct {command} CHECKPOINT {what}")
    placing = {"tracks": getattr(args, "tracks", None), "time_signature": getattr(args, "time_signature", None),
               "downbeat": getattr(args, "downbeat", None)}
    if features == "histogram":
        return features, path, lf.histogram_features(**placing), "none"
    from midistruct.library.store import model_id

    args.checkpoint = checkpoint
    args.pipeline = getattr(args, "pipeline", None) or _pipeline(args)  # radio --library DIR asks twice
    return features, path, lf.code_features(args.pipeline, **placing), model_id(checkpoint)


def _embed_into(args: argparse.Namespace, folder: str, cache: Path, *, command: str, what: str, fresh: bool = False):
    """``folder`` embedded with the command's model and features (``_features_and_model``), ``--tracks`` and
    ``--time-signature``, reusing what ``cache`` already holds (unless ``fresh``), saved into ``cache`` as it goes
    and at the end: the one embedding path of embed, map and radio. The files the model warned about are
    summed up in one warning."""
    from midistruct.library.store import Library, embed_folder

    features, _, encode, model = _features_and_model(args, command=command, what=what)
    previous = Library.load(cache) if cache.exists() and not fresh else None
    cache.parent.mkdir(parents=True, exist_ok=True)
    library = embed_folder(folder, encode, model=model, features=features, tracks=getattr(args, "tracks", None),
                           time_signature=getattr(args, "time_signature", None),
                           downbeat=getattr(args, "downbeat", None), previous=previous,
                           progress=not args.quiet, save=lambda partial: partial.save(cache))
    library.save(cache)
    if library.warned:
        first = next(iter(library.warned.values()))
        print(f"midistruct: warning: {len(library.warned)} of the {library.encoded} files encoded now were read in a "
              f"meter the model rarely saw; the first: {one_line(first, limit=2000)}", file=sys.stderr)
    return library


def cmd_embed(args: argparse.Namespace) -> int:
    """One vector per piece of a folder (issue 17), cached by file content in the output library."""
    _device(args)  # an unavailable device fails at once
    output = Path(args.output)
    library = _embed_into(args, args.paths[-1], output, command="embed", what="DIR", fresh=args.overwrite)
    print(f"wrote {output}: {len(library)} pieces ({library.encoded} encoded, {len(library) - library.encoded} "
          f"from the cache), {len(library.skipped)} skipped")
    for rel, reason in list(library.skipped.items())[:10]:
        print(f"  skipped {rel}: {reason}", file=sys.stderr)
    if len(library.skipped) > 10:
        print(f"  ... and {len(library.skipped) - 10} more (the library file lists them all)", file=sys.stderr)
    return 0


def cmd_radio(args: argparse.Namespace) -> int:
    """A playlist of library pieces that go with a seed, each step a smooth transition (issue 17)."""
    from midistruct.library import LibraryError
    from midistruct.library.radio import radio, write_playlist
    from midistruct.library.store import Library, content_hash, same_model

    _device(args)  # an unavailable device fails at once
    library = _radio_library(args) if Path(args.library).is_dir() else Library.load(args.library)
    # the seed as the library
    args.features, args.tracks, args.time_signature = args.features or library.features, library.tracks, \
        library.time_signature
    args.downbeat = library.downbeat
    if args.features != library.features:
        raise LibraryError(f"{args.library} holds {library.features} features; embed the seed the same way")
    if args.medley and library.features == "histogram":
        raise LibraryError("--medley needs a model to write the bridges: embed the library with one, and give it")
    if library.features == "histogram" and len(args.paths) == 2:
        raise LibraryError(f"{args.library} holds histogram features, made without a model: leave out "
                           f"{args.paths[0]}, or embed the library with it")
    features, seed_path, encode, model = _features_and_model(args, command="radio", what="SEED")
    if not same_model(model, library.model):
        raise LibraryError(f"{args.library} was embedded with {library.model}, not {model}: run midistruct embed "
                           f"with this model first")
    seed = encode(Path(seed_path))
    own = library.index_of(content_hash(Path(seed_path)))
    space = None
    if library.keys is None and args.key_weight > 0:
        print(f"{args.library} was embedded before libraries kept keys: the key signatures are not weighed (embed it "
              f"again; only the keys are read, nothing is encoded twice)", file=sys.stderr)
    settings = {"n": args.n, "smoothness": args.smoothness, "edge_bars": args.edge_bars,
                "key_weight": args.key_weight if library.keys is not None else 0.0}
    if args.playlists:
        from midistruct.library.playlists import HybridSpace, read_playlists

        lists = read_playlists(args.playlists, library)
        space = HybridSpace(library, lists.lists, weight=args.playlist_weight)
        settings |= {"playlists": str(args.playlists), "playlist_weight": args.playlist_weight,
                     "playlists_used": len(lists.lists), "pieces_in_playlists": int(space.seen.sum()),
                     "unknown_items": len(lists.unknown)}
        print(f"playlists: {len(lists.lists)} used, {int(space.seen.sum())} of {len(library)} pieces in them, "
              f"{len(lists.unknown)} items not in the library", file=sys.stderr)
    steps = radio(library, seed, n=args.n, smoothness=args.smoothness, edge_bars=args.edge_bars,
                  seed_index=own, space=space, key_weight=args.key_weight)
    m3u, js = write_playlist(steps, library, args.output, seed=str(seed_path), settings=settings)
    for i, step in enumerate(steps, 1):
        print(f"{i:3d}  {step.path}  similarity {step.similarity:.3f}  transition {step.transition:.3f}  "
              f"key {step.key:+.2f}")
    print(f"wrote {m3u} and {js}")
    if args.medley:
        from midistruct.library.medley import medley

        paths = [Path(seed_path), *(Path(library.root) / s.path for s in steps)]
        score = medley(args.pipeline, paths, bridge_windows=args.bridge_windows, progress=not args.quiet)
        Path(args.medley).parent.mkdir(parents=True, exist_ok=True)
        score.dump_midi(str(args.medley))
        print(f"wrote {args.medley}: the seed and {len(steps)} pieces, {args.bridge_windows} bridge window(s) "
              f"of the model's {args.pipeline.bars} bars at each join")
    return 0


def _radio_library(args: argparse.Namespace):
    """``--library DIR``: the folder embedded as `embed` would (the model and features of the radio command), its
    library kept beside the playlist (``<output>.library.npz``) so that the next radio over it encodes only
    what is new."""
    cache = Path(args.output).with_suffix(".library.npz")
    library = _embed_into(args, args.library, cache, command="radio", what="SEED")
    print(f"embedded {args.library}: {len(library)} pieces ({library.encoded} encoded), {len(library.skipped)} "
          f"skipped; kept as {cache}", file=sys.stderr)
    return library


def _add_library_parsers(sub) -> None:
    """embed and radio: a library of pieces and playlists from it (midistruct.library)."""
    from midistruct.library import KEY_WEIGHT
    p = sub.add_parser("embed", help="one vector per piece of a folder of MIDI files, for radio and search",
                       usage="midistruct embed [options] [CHECKPOINT] DIR")
    p.add_argument("paths", nargs="+", metavar="[CHECKPOINT] DIR",
                   help="a checkpoint folder or shipped model name (midistruct models), then the folder (searched "
                        "recursively); the folder alone uses the histogram features")
    _add_device_arg(p)
    _add_library_features(p)
    p.add_argument("-o", "--output", default="library.npz", metavar="FILE",
                   help="the library file; if it exists, pieces it holds (same content, same model) are not "
                        "encoded again (default: library.npz)")
    p.add_argument("--tracks", default=None, metavar="REGEX",
                   help="embed only the tracks whose name matches this regular expression, case ignored (e.g. "
                        "melody: POP909's melody line); recorded in the library, and radio embeds its seed the same "
                        "way (default: all tracks)")
    p.add_argument("--overwrite", action="store_true", help="ignore the existing library file: encode everything")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_embed)
    p = sub.add_parser("radio", help="a playlist of library pieces that go with a seed, ordered for smooth "
                       "transitions (M3U + JSON)", usage="midistruct radio [options] [CHECKPOINT] SEED --library FILE")
    p.add_argument("paths", nargs="+", metavar="[CHECKPOINT] SEED",
                   help="the model the library was embedded with (none for histogram features), then the seed MIDI")
    _add_device_arg(p)
    _add_library_features(p)
    p.add_argument("--library", required=True, metavar="FILE_OR_DIR",
                   help="a library written by midistruct embed, or a folder of MIDI files, embedded first with the "
                        "given model (histograms without one; --tracks as embed) and kept as OUTPUT.library.npz")
    p.add_argument("--tracks", default=None, metavar="REGEX",
                   help="--library DIR: embed only the tracks whose name matches (a library file says its own)")
    p.add_argument("-n", type=POSITIVE, default=12, help="pieces in the playlist (default: 12)")
    p.add_argument("--smoothness", type=float, default=0.5,
                   help="weight of the transition (end of one piece to the start of the next) against likeness to "
                        "the seed, 0..1 (default: 0.5)")
    p.add_argument("--edge-bars", type=POSITIVE, default=2,
                   help="bars at each end of a piece that a transition compares (default: 2)")
    p.add_argument("--key-weight", type=float, default=KEY_WEIGHT, metavar="W",
                   help="weight of the key signatures' closeness on the circle of fifths against the codes' cosines, "
                        f"in likeness to the seed and in each transition, 0..1 (default: {KEY_WEIGHT}; a model that "
                        "reads a canonical key holds no key in its codes)")
    p.add_argument("-o", "--output", default="radio", metavar="PATH",
                   help="writes PATH.m3u and PATH.json (default: radio)")
    p.add_argument("--medley", default=None, metavar="MIDI",
                   help="also write the seed and the playlist as one MIDI file, each join crossed by bars the model "
                        "writes between the end of one piece and the start of the next")
    p.add_argument("--bridge-windows", type=COUNT, default=1,
                   help="--medley: model windows in each bridge, 0 for none (default: 1)")
    p.add_argument("--playlists", default=None, metavar="FILE",
                   help="your playlists, one per line (file names, paths or stems, separated by commas, tabs or "
                        "spaces): pieces that share playlists count as alike (Word2Vec item vectors joined with the "
                        "codes; pieces in no playlist get theirs from their codes). Only as good as the playlists")
    p.add_argument("--playlist-weight", type=float, default=0.5,
                   help="--playlists: weight of the playlist similarity against the codes', 0..1 (default: 0.5)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_radio)


def cmd_map(args: argparse.Namespace) -> int:
    """A 2-D map of a library or a folder (issue 17): map.png, map.html (self-contained) and map.json."""
    from midistruct.library import map as lm
    from midistruct.library.store import Library

    _device(args)  # an unavailable device fails at once
    out = Path(args.output)
    if args.paths[-1].endswith(".npz"):
        if len(args.paths) > 1:
            raise UserError(f"{args.paths[-1]} is a library, mapped as it was embedded: leave out {args.paths[0]}")
        library = Library.load(args.paths[-1])
    else:
        library = _embed_into(args, args.paths[-1], out / "library.npz", command="map", what="DIR")
    tags = lm.piece_tags(library, user=lm.read_tags(args.tags) if args.tags else None)
    xy = lm.project(library.vectors, method=args.method, seed=args.seed, threads=args.threads or 1)
    record = lm.map_record(library, xy, tags, method=args.method)
    args.color_by = args.color_by or lm.default_colour_tag(record)
    if args.color_by not in record["tags"]:
        raise UserError(f"--color-by {args.color_by}: no such tag; choose one of {', '.join(record['tags'])}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "map.json").write_text(json.dumps(record, indent=1))
    lm.write_png(record, out / "map.png", color_by=args.color_by)
    lm.write_html(record, out / "map.html", color_by=args.color_by)
    print(f"wrote {out}/map.png, map.html and map.json: {len(library)} pieces by {args.method}, tags "
          f"{', '.join(record['tags'])}")
    return 0


def _add_map_parser(sub) -> None:
    """map: a 2-D map of a library (midistruct.library.map)."""
    p = sub.add_parser("map", help="a 2-D map of a library: PNG, one self-contained HTML page and JSON",
                       usage="midistruct map [options] [CHECKPOINT] DIR_OR_LIBRARY")
    p.add_argument("paths", nargs="+", metavar="[CHECKPOINT] DIR_OR_LIBRARY",
                   help="a library written by midistruct embed (.npz), mapped as it is; or a folder of MIDI files, "
                        "embedded first (with CHECKPOINT, a checkpoint folder or shipped model name, its codes; "
                        "without, the histogram features)")
    _add_device_arg(p)
    _add_library_features(p)
    p.add_argument("-o", "--output", default="out/map", metavar="DIR",
                   help="folder for map.png, map.html and map.json (and library.npz when given a folder: the "
                        "embedding cache of the next run) (default: out/map)")
    # midistruct.library.map.METHODS, written out so that --help does not import numpy (a test checks they agree)
    p.add_argument("--method", choices=("tsne", "umap", "pca"), default="tsne",
                   help="projection to 2-D: tsne (scikit-learn; kept the most neighbours, see README), umap "
                        "(needs pip install umap-learn) or pca (default: %(default)s)")
    p.add_argument("--color-by", default=None, metavar="TAG",
                   help="tag that colours the PNG and the page's first view: folder, meter, key or a --tags column "
                        "(default: the first of folder, meter, key, then the --tags columns, whose value is not the "
                        "same for every piece)")
    p.add_argument("--tags", default=None, metavar="CSV",
                   help="more tags: a CSV file with a 'path' column (relative to the library's folder) and any "
                        "other columns, e.g. artist")
    p.add_argument("--seed", type=int, default=0, help="seed of the projection: same seed, same map (default: 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_map)


def _add_library_features(p: argparse.ArgumentParser) -> None:
    p.add_argument("--features", choices=["codes", "histogram"], default=None,
                   help="codes: the model's [mean bar code ; mean segment code]; histogram: pitch classes weighted "
                        "by duration and note durations, no model (the baseline) (default: codes with a "
                        "CHECKPOINT, else histogram; radio: the library's)")
    p.add_argument("--time-signature", default=None, metavar="N/D",
                   help="read every file in this meter, whatever it declares (e.g. 4/4 for POP909, whose files say "
                        "1/4 or 2/4); recorded in the library, and radio reads its seed the same way (default: each "
                        "file's own meters)")
    p.add_argument("--downbeat", choices=["auto"], default=None,
                   help="auto: put each file's bar lines where its notes say they go, for files whose own sit off "
                        "the beat (POP909's); recorded in the library like --time-signature (default: the files' own)")


def _add_method_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", choices=["slerp", "lerp"], default="slerp",
                   help="path between codes: slerp (spherical, MusicVAE's) or lerp (straight line) (default: slerp)")


def _add_tag_args(p, *, sampling: bool = False) -> None:
    p.add_argument("--tag", action="append", default=[], metavar="NAME=VALUE",
                   help="condition on a tag, e.g. key=D:minor, mode=minor, tune_type=reel (repeatable); the model's "
                        "code prior, and the decoder of a model trained with model.decoder_tags, know which "
                        "(`midistruct tags CHECKPOINT` lists them)")
    p.add_argument("--tag-strength", type=float, default=1.0, metavar="S",
                   help=("draw codes from the --tag values' mean offset times S (default: 1, the tagged windows' "
                         "codes as they are; 2-3 obey the tag more, docs/RESULTS.md)") if sampling else
                   ("how far codes move towards the --tag values: 1 (default) from the mean of the value they are "
                    "nearest to all the way to the asked value's mean"))


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
        with warnings.catch_warnings():
            warnings.simplefilter("always", MidiStructWarning)
            warnings.showwarning = _show_warning
            code = args.handler(args)
            sys.stdout.flush()  # here, not at exit: a reader that left (`| head`) is then caught below
            return code
    except KeyboardInterrupt:
        print("midistruct: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `midistruct tags MODEL | head -1`: the reader had what it wanted; no traceback
        _silence_stdout()
        return 141  # what a shell reports for a writer stopped by SIGPIPE (128 + 13)
    except Exception as err:
        if not _is_user_error(err):
            raise
        # one line, and long enough for a config error's several keys and lists of valid keys (~500 each)
        print(f"midistruct: error: {one_line(err, limit=2000)}", file=sys.stderr)
        return 2


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that Python's own flush at exit does not fail again on the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # a stdout without a file descriptor (tests capture it)
        pass


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """The package's own warnings as one ``midistruct: warning:`` line on stderr; others as Python shows them."""
    if issubclass(category, MidiStructWarning):
        print(f"midistruct: warning: {one_line(message, limit=2000)}", file=sys.stderr)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def _is_user_error(err: Exception) -> bool:
    """Errors the user can fix (one line, exit 2); anything else is a bug and keeps its traceback.
    FileNotFoundError stays here while a missing user file can still raise it bare: a soundfont that
    ``$MIDISTRUCT_SOUNDFONT`` names (``render.audio.find_soundfont``, with --audio)."""
    return isinstance(err, (MidiStructError, FileNotFoundError))

if __name__ == "__main__":
    sys.exit(main())

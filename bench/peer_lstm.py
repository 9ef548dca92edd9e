"""The MusicVAE-style LSTM peer (issue 14 item 3): train it on midistruct's shards and score it by midistruct's code.

A flat 2-bar melody VAE as in Roberts et al. 2018 (magenta's ``cat-mel_2bar_small``: bidirectional LSTM encoder,
2-layer LSTM decoder, z 256, 90 classes per 16th step; see ``bench/peer/``), trained on the readable windows
(4/4, on the 16th grid) of the same shard folder as midistruct, evaluated on ``midistruct evaluate``'s held-out
windows under its metric names. Training logs ``seconds`` and ``windows_seen`` like midistruct's trainer, so
both go on one quality-versus-time plot.

    python bench/peer_lstm.py train --data /work/data/nottingham-2bar --run-dir runs/peer --max-minutes 60 --threads 1
    python bench/peer_lstm.py train --data ... --run-dir runs/peer --resume --max-minutes 60   # continue last/ exactly
    python bench/peer_lstm.py evaluate runs/peer --data /work/data/nottingham-2bar --windows 512 --free-run 128
    python bench/peer_lstm.py evaluate-main runs/nott2-bow/best --data /work/data/nottingham-2bar   # same windows

``--config`` names a :data:`peer.model.CONFIGS` entry; ``--set key=value`` changes one of its fields
(``--set batch_size=128 --set enc_layers=2``). Every command prints JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/, for the peer package


def _config(name: str, sets: list[str]):
    from peer.model import PeerConfig, named_config

    cfg, types = named_config(name), {f.name: type(f.default) for f in fields(PeerConfig)}
    changes = {}
    for item in sets:
        key, _, value = item.partition("=")
        if key not in types:
            raise SystemExit(f"peer_lstm: unknown config key {key!r}; valid: {', '.join(types)}")
        changes[key] = types[key](value)
    return replace(cfg, **changes)


def train(args) -> dict:
    from peer.model import PeerConfig
    from peer.train import CONFIG, RUN, PeerTrainer, RunSettings, shard_transpose

    run_dir = Path(args.run_dir)
    if args.resume:  # the run's own settings and config; only the limits and threads may change
        saved = json.loads((run_dir / RUN).read_text())
        if args.data and Path(args.data).resolve() != Path(saved["data"]).resolve():
            raise SystemExit(f"peer_lstm: {run_dir} trained on {saved['data']}, not {args.data}")
        settings = RunSettings(**{**saved, "run_dir": str(run_dir), "threads": args.threads,
                                  **{k: v for k, v in (("max_minutes", args.max_minutes), ("max_steps", args.max_steps))
                                     if v is not None}})
        cfg = PeerConfig.from_dict(json.loads((run_dir / "last" / CONFIG).read_text()))
    else:
        if not args.data:
            raise SystemExit("peer_lstm: train needs --data (a folder made by `midistruct prepare`)")
        settings = RunSettings(data=args.data, run_dir=str(run_dir), seed=args.seed, threads=args.threads,
                               transpose=list(args.transpose) if args.transpose else shard_transpose(args.data),
                               max_minutes=args.max_minutes or 0.0, max_steps=args.max_steps or 1_000_000,
                               log_every=args.log_every, eval_every=args.eval_every, save_every=args.save_every)
        cfg = _config(args.config, args.set)
    trainer = PeerTrainer(settings, cfg, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    logs = trainer.run()
    return {"run_dir": str(run_dir), "step": trainer.state["step"], **trainer.progress_record(),
            "steps_this_run": len(logs), "last_loss": logs[-1]["loss"] if logs else None,
            "train_windows": trainer.train_set.summary(), "valid_windows": trainer.valid_set.summary(),
            "config": cfg.to_dict(), "transpose": settings.transpose}


def evaluate(args) -> dict:
    from peer.evaluate import evaluate_main, evaluate_run

    options = dict(split=args.split, windows=args.windows, free_run=args.free_run, seed=args.seed,
                   sample_temperature=args.sample_temperature, exclude_recurring=not args.keep_recurring)
    if args.command == "evaluate-main":
        if not args.data:
            raise SystemExit("peer_lstm: evaluate-main needs --data (the peer's shard folder)")
        return evaluate_main(args.checkpoint, data=args.data, **options)
    return evaluate_run(args.checkpoint, data=args.data, **options)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train (or --resume) the peer")
    t.add_argument("--data", help="a shard folder (midistruct prepare)")
    t.add_argument("--run-dir", required=True)
    t.add_argument("--config", default="cat-mel_2bar_small")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="change one PeerConfig field")
    t.add_argument("--max-minutes", type=float, help="wall minutes of this invocation (default: no limit)")
    t.add_argument("--max-steps", type=int)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--transpose", type=int, nargs=2, metavar=("LOW", "HIGH"),
                   help="semitone range of the random transposition (default: the shard folder's augment.transpose)")
    t.add_argument("--log-every", type=int, default=20)
    t.add_argument("--eval-every", type=int, default=250)
    t.add_argument("--save-every", type=int, default=250)
    t.add_argument("--resume", action="store_true", help="continue RUN_DIR/last exactly")
    t.add_argument("--overwrite", action="store_true", help="start afresh over a run in RUN_DIR")
    t.add_argument("--quiet", action="store_true")
    for name, what in (("evaluate", "a peer run or checkpoint folder"),
                       ("evaluate-main", "a midistruct checkpoint, on the peer's windows")):
        e = sub.add_parser(name, help=f"metrics of {what} on held-out windows")
        e.add_argument("checkpoint")
        e.add_argument("--data", help="the shard folder (default for a peer: the one it trained on)")
        e.add_argument("--split", default="test")
        e.add_argument("--windows", type=int, default=512)
        e.add_argument("--free-run", type=int, default=128)
        e.add_argument("--seed", type=int, default=0)
        e.add_argument("--sample-temperature", type=float, default=0.5)
        e.add_argument("--keep-recurring", action="store_true", help="keep windows that recur in training")
        e.add_argument("--threads", type=int, default=1)
        e.add_argument("-o", "--output", help="also write the JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    import torch

    torch.set_num_threads(args.threads)
    out = train(args) if args.command == "train" else evaluate(args)
    text = json.dumps(out, indent=2)
    print(text)
    if getattr(args, "output", None):
        Path(args.output).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

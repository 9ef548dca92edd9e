"""Command line: ``midistruct <command> ...``. Entry point :func:`main` (argv) -> exit code.

Heavy libraries are imported inside the handlers so ``midistruct --help`` answers at once.
Expected failures (bad config, missing data, bad input) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys


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
    parser = argparse.ArgumentParser(prog="midistruct", description=__doc__.splitlines()[0])
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
    return parser


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
    from midistruct.shards.reader import ShardError
    from midistruct.training.checkpoint import CheckpointError
    from midistruct.training.loop import TrainError

    return isinstance(err, (UserError, ConfigError, SourceError, ShardError, CheckpointError, TrainError,
                            FileNotFoundError))


if __name__ == "__main__":
    sys.exit(main())

"""Run every benchmark and write their results into ``docs/RESULTS.md``.

Each benchmark prints JSON that compares midistruct with a baseline measured in the same run
(prepare vs the bare symusic + miditok loop, training MFU vs a plain causal LM, generation with vs
without the KV cache, free-running evaluation batched vs one window at a time, song form from a shipped model's
codes vs from the notes alone). This runner calls
them one after the other in fresh processes, then replaces the block between the ``bench:start`` /
``bench:end`` markers of the results file with one table per benchmark (every number of its JSON),
headed by the command, date and machine.

    python bench/run_all.py                    # full sizes: about 17 minutes on 2 cores
    python bench/run_all.py --quick            # smoke sizes, seconds; writes the same tables
    python bench/run_all.py --only generate --out /tmp/results.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
BENCHES = {  # name -> (script, full-size arguments, quick arguments)
    "prepare": ("bench/prepare.py", [], ["--limit", "30"]),
    "train": ("bench/train.py", [], ["--quick"]),
    "generate": ("bench/generate.py", [], ["--quick"]),
    "evaluate": ("bench/evaluate.py", [], ["--quick"]),
    "form": ("bench/form.py", [], ["--quick"]),
}


def run_bench(name: str, *, quick: bool) -> tuple[list[str], dict]:
    """Run one benchmark in a fresh process; returns its command line and parsed JSON."""
    script, full, small = BENCHES[name]
    argv = [sys.executable, script, *(small if quick else full)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{script} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return ["python", script, *(small if quick else full)], json.loads(done.stdout)


def flatten(data, prefix: str = "") -> list[tuple[str, object]]:
    """(dotted key, leaf) pairs of nested dicts/lists, in order."""
    if isinstance(data, dict):
        return [pair for k, v in data.items() for pair in flatten(v, f"{prefix}{k}.")]
    if isinstance(data, list) and data and all(isinstance(v, (dict, list)) for v in data):
        return [pair for i, v in enumerate(data) for pair in flatten(v, f"{prefix}{i}.")]
    return [(prefix[:-1], data)]


def table(name: str, command: list[str], result: dict) -> str:
    """A markdown section: heading, command, and a key/value table of the JSON."""
    rows = ["| key | value |", "| --- | --- |"]
    for key, value in flatten(result):
        if isinstance(value, float):
            value = f"{value:.4g}"
        rows.append(f"| `{key}` | {str(value).replace('|', '/')} |")
    return f"### {name}\n\n`{' '.join(command)}`\n\n" + "\n".join(rows) + "\n"


def block(sections: list[str], *, quick: bool) -> str:
    machine = f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    head = (f"{START}\n## Benchmarks (written by `python bench/run_all.py{' --quick' if quick else ''}`)\n\n"
            f"Run {datetime.datetime.now().isoformat(timespec='minutes')} on {machine}. "
            "Each table holds every number one benchmark printed; the baseline it is compared with was "
            "measured in the same run.\n\n")
    return head + "\n".join(sections) + END


def write(results_file: Path, text: str) -> None:
    """Replace the marked block of ``results_file`` (or append it)."""
    old = results_file.read_text() if results_file.is_file() else "# Results\n"
    if START in old and END in old:
        new = old[: old.index(START)] + text + old[old.index(END) + len(END):]
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    results_file.write_text(new)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke sizes (seconds)")
    parser.add_argument("--only", action="append", choices=list(BENCHES), help="run only these (repeatable)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "RESULTS.md", help="results file to update")
    args = parser.parse_args(argv)
    sections = []
    for name in args.only or list(BENCHES):
        print(f"running {name} ...", file=sys.stderr, flush=True)
        command, result = run_bench(name, quick=args.quick)
        sections.append(table(name, command, result))
    write(args.out, block(sections, quick=args.quick))
    print(f"wrote {len(sections)} benchmark table(s) into {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

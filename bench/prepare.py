"""Benchmark ``prepare`` against the bare loop it cannot beat: symusic load + miditok encode.

Prints JSON: files/s and notes/s of (a) the bare loop, one process, (b) the whole
prepare with 1 and 2 worker processes, all on the same files in the same run; our
ratio to the bare loop per core, the 1 -> 2 worker scaling, and peak memory (main
process and largest worker) for the full file list and for half of it, to show that
memory does not grow with the corpus.

    python bench/prepare.py                       # POP909 from ../shared/datasets
    python bench/prepare.py --data DIR --limit 500
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "pop909" / "songs"


def files_of(data: Path, limit: int | None) -> list[str]:
    from midistruct.corpus.folder import find_midi_files

    files = [str(p) for p in find_midi_files(data)]
    return files[:limit] if limit else files


def bare_loop(files: list[str]) -> dict:
    """symusic load + miditok encode, nothing else: the floor for prepare's cost."""
    import symusic

    from midistruct.config import load_config
    from midistruct.tokens.tokenizer import build_tokenizer

    tokenizer = build_tokenizer(load_config("pop909").tokenizer)
    notes = 0
    start = time.perf_counter()
    for f in files:
        try:
            score = symusic.Score(f)
            notes += score.note_num()
            tokenizer.encode(score)
        except Exception:  # noqa: BLE001 - the bare loop ignores bad files, as prepare skips them
            pass
    return {"seconds": time.perf_counter() - start, "notes": notes}


def full_prepare(files: list[str], workers: int) -> dict:
    from midistruct.config import load_config
    from midistruct.prepare import prepare

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "links"
        src.mkdir()
        for i, f in enumerate(files):  # the exact file list, as a folder source
            (src / f"{i:06d}.mid").symlink_to(f)
        cfg = load_config("pop909", [f"data.sources=[{{kind: folder, path: '{src}'}}]",
                                     f"data.output={tmp}/out", f"data.workers={workers}"])
        start = time.perf_counter()
        summary = prepare(cfg, progress=False).as_dict()
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "notes": summary["notes"], "pieces": sum(s["pieces"] for s in summary["splits"].values())}


def child(mode: str, files: list[str], workers: int) -> dict:
    result = bare_loop(files) if mode == "bare" else full_prepare(files, workers)
    result["peak_rss_mb_main"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["peak_rss_mb_worker"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result["files"] = len(files)
    result["files_per_s"] = len(files) / result["seconds"]
    result["notes_per_s"] = result["notes"] / result["seconds"]
    return result


def run_child(mode: str, data: Path, limit: int | None, workers: int = 1) -> dict:
    """Each measurement in a fresh process, so peak memory is its own."""
    cmd = [sys.executable, __file__, "--child", mode, "--data", str(data), "--workers", str(workers)]
    if limit:
        cmd += ["--limit", str(limit)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--child", choices=["bare", "prepare"])
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, files_of(args.data, args.limit), args.workers)))
        return
    if not args.data.is_dir():
        sys.exit(f"no data at {args.data}; pass --data DIR")
    n = len(files_of(args.data, args.limit))
    bare = run_child("bare", args.data, n)
    one = run_child("prepare", args.data, n, 1)
    two = run_child("prepare", args.data, n, 2)
    half = run_child("prepare", args.data, n // 2, 2)
    print(json.dumps({
        "benchmark": "prepare", "data": str(args.data), "files": n,
        "bare_loop": bare, "prepare_1_worker": one, "prepare_2_workers": two, "prepare_2_workers_half_corpus": half,
        "ratio_to_bare_per_core": round(one["files_per_s"] / bare["files_per_s"], 3),
        "scaling_1_to_2_workers": round(two["files_per_s"] / one["files_per_s"], 3),
        "peak_rss_growth_half_to_full": round(
            (two["peak_rss_mb_main"] + two["peak_rss_mb_worker"]) / (half["peak_rss_mb_main"] + half["peak_rss_mb_worker"]), 3),
    }, indent=2))


if __name__ == "__main__":
    main()

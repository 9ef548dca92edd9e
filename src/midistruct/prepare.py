"""``midistruct prepare``: corpus sources -> validation -> tokens -> bar windows -> shards.

One path for every corpus, driven by the config: the sources in ``data.sources`` are
listed, files are encoded in worker processes (:mod:`midistruct.tokens.encode`) and
streamed into a shard folder (:mod:`midistruct.shards.writer`). Skipped files are kept
in ``report.tsv`` with their reason; exact duplicates are skipped as such.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from midistruct.config import Config, dump_config
from midistruct.corpus import Piece, SourceError, iter_pieces, source_failures
from midistruct.shards.splits import assign_split


@dataclass
class PrepareSummary:
    """What a prepare run did; ``skipped`` maps a reason to its count."""

    output: Path
    files: int = 0
    skipped: Counter = field(default_factory=Counter)
    splits: dict[str, dict[str, int]] = field(default_factory=dict)
    bars: int = 0
    notes: int = 0
    dropped_windows: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        tokens = sum(s["tokens"] for s in self.splits.values())
        return {
            "output": str(self.output),
            "files_read": self.files,
            "skipped": sum(self.skipped.values()),
            "skipped_by_reason": dict(self.skipped.most_common()),
            "splits": self.splits,
            "tokens": tokens,
            "notes": self.notes,
            "bars": self.bars,
            "tokens_per_bar": round(tokens / self.bars, 2) if self.bars else 0.0,
            "windows_dropped": dict(self.dropped_windows),
        }


def collect_pieces(cfg: Config) -> tuple[list[Piece], list[tuple[str, str, str]]]:
    """All pieces of all configured sources (ids unique across sources), and the
    ``(id, path, reason)`` of those a source found but could not convert."""
    if not cfg.data.sources:
        raise SourceError("config has no data.sources")
    pieces, seen, failed = [], set(), []
    for source in cfg.data.sources:
        for piece in iter_pieces(source):
            if piece.id in seen:
                raise SourceError(f"piece id {piece.id!r} appears twice; give sources distinct names")
            seen.add(piece.id)
            pieces.append(piece)
        failed += [(pid, "", f"conversion failed: {why}") for pid, why in source_failures(source).items()]
    return pieces, failed


def _encode_all(cfg: Config, pieces: list[Piece], workers: int, progress: bool) -> Iterator:
    """Yield ``(piece, Encoded | Skipped)`` in input order, encoding in ``workers`` processes."""
    from tqdm import tqdm

    from midistruct.tokens import encode

    tasks = [(str(p.path), *encode.task_of(p.tags)) for p in pieces]  # (path, meter override, first bar line)
    bar = tqdm(total=len(pieces), desc="prepare", unit="file", disable=not progress, file=sys.stderr)
    if workers <= 1:
        encode.init_worker(cfg.model_dump_json())
        results = map(encode.encode_file, tasks)
        yield from _tick(zip(pieces, results), bar)
        return
    ctx = get_context("fork" if sys.platform == "linux" else "spawn")
    with ctx.Pool(workers, initializer=encode.init_worker, initargs=(cfg.model_dump_json(),)) as pool:
        results = pool.imap(encode.encode_file, tasks, chunksize=4)
        yield from _tick(zip(pieces, results), bar)


def _tick(items: Iterator, bar) -> Iterator:
    with bar:
        for item in items:
            yield item
            bar.update()


def prepare(cfg: Config, *, overwrite: bool = False, progress: bool = True) -> PrepareSummary:
    """Prepare the shard folder ``cfg.data.output`` from ``cfg.data.sources``."""
    from midistruct.shards.reader import ShardError, ShardSet
    from midistruct.tokens.tokenizer import build_tokenizer, settings_hash

    out = Path(cfg.data.output)
    if (out / "manifest.json").exists() and not overwrite:
        if ShardSet(out).manifest.get("settings_hash") != settings_hash(cfg.tokenizer):
            raise ShardError(f"{out} holds shards of another tokenizer config; use --overwrite or another data.output")
    pieces, failed = collect_pieces(cfg)
    tokenizer = build_tokenizer(cfg.tokenizer)
    if not cfg.tokenizer.bpe_vocab_size:
        return _encode_corpus(cfg, pieces, failed, tokenizer, out, progress)
    base = out.with_name(f"{out.name}.base-{os.getpid()}")
    try:
        summary = _encode_corpus(cfg, pieces, failed, tokenizer, base, progress)
        summary.splits = _apply_bpe(cfg, tokenizer, ShardSet(base), out)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return summary


def _encode_corpus(cfg: Config, pieces: list[Piece], failed: list, tokenizer, out: Path, progress: bool) -> PrepareSummary:
    """Pass over all pieces: validate, tokenize, dedupe, split, stream into ``out``.

    ``failed`` are pieces a source could not convert: reported, counted as read and skipped.
    """
    from midistruct.shards.writer import ShardWriter
    from midistruct.tokens.encode import Skipped

    workers = cfg.data.workers or os.cpu_count() or 1
    summary = PrepareSummary(output=Path(cfg.data.output), files=len(pieces) + len(failed))
    report, seen = list(failed), {}
    summary.skipped.update(_reason_kind(reason) for _, _, reason in failed)
    with ShardWriter(out, vocab_size=tokenizer.vocab_size) as writer:
        for piece, result in _encode_all(cfg, pieces, workers, progress):
            if not isinstance(result, Skipped) and result.content_hash in seen:
                result = Skipped(f"duplicate of {seen[result.content_hash]}")
            if isinstance(result, Skipped):
                summary.skipped[_reason_kind(result.reason)] += 1
                report.append((piece.id, str(piece.path), result.reason))
                continue
            seen[result.content_hash] = piece.id
            _add_piece(writer, piece, result, assign_split(piece.group, cfg.splits), summary)
        _write_side_files(writer.folder, cfg, tokenizer, report)
        summary.splits = writer.finish(_manifest(cfg, tokenizer, summary))
    return summary


def _apply_bpe(cfg: Config, tokenizer, base, out: Path) -> dict[str, dict[str, int]]:
    """Learn BPE on ``base``'s train split and write the re-encoded shards to ``out``."""
    from midistruct.shards import bpe
    from midistruct.shards.writer import ShardWriter
    from midistruct.tokens.tokenizer import settings_hash

    bpe.train_bpe(tokenizer, base, cfg.tokenizer.bpe_vocab_size)
    with ShardWriter(out, vocab_size=tokenizer.vocab_size) as writer:
        bpe.reencode(tokenizer, base, writer)
        shutil.copy(base.folder / "report.tsv", writer.folder / "report.tsv")
        _write_side_files(writer.folder, cfg, tokenizer, None)
        manifest = {k: v for k, v in base.manifest.items() if k not in ("format_version", "token_dtype", "splits")}
        manifest["tokenizer_hash"] = settings_hash(cfg.tokenizer, tokenizer)
        return writer.finish(manifest)


def _write_side_files(folder: Path, cfg: Config, tokenizer, report: list | None) -> None:
    from midistruct.tokens.tokenizer import save_tokenizer

    save_tokenizer(tokenizer, folder)
    (folder / "config.yaml").write_text(dump_config(cfg))
    if report is not None:
        _write_report(folder / "report.tsv", report)


def _add_piece(writer, piece: Piece, enc, split: str, summary: PrepareSummary) -> None:
    rows = np.array([(w.start, w.end, 0, w.bar) for w in enc.windows], dtype=np.int64)
    n_bars = int(enc.bars[-1]) + 1
    tags = piece.tags
    if enc.key_signature is not None and "key_signature" not in tags:  # the file's own, unless a source gave one
        tags = {**tags, "key_signature": enc.key_signature}
    record = {"id": piece.id, "group": piece.group, "path": str(piece.path), "tags": tags,
              "tokens": len(enc.ids), "bars": n_bars, "notes": enc.n_notes, "windows": len(rows)}
    writer.add(split, ids=enc.ids, bars=enc.bars, windows=rows, record=record)
    summary.bars += n_bars
    summary.notes += enc.n_notes
    summary.dropped_windows.update(enc.dropped_windows)


def _reason_kind(reason: str) -> str:
    """Group reasons for the summary: 'too long (2342 s > 1800 s)' -> 'too long'."""
    if reason.startswith("duplicate of"):
        return "duplicate"
    return reason.split(" (")[0].split(":")[0].strip()


def _write_report(path: Path, rows: list[tuple[str, str, str]]) -> None:
    with open(path, "w") as f:
        f.write("id\tpath\treason\n")
        for row in rows:
            f.write("\t".join(c.replace("\t", " ") for c in row) + "\n")


def _manifest(cfg: Config, tokenizer, summary: PrepareSummary) -> dict:
    import miditok

    from midistruct import __version__
    from midistruct.tokens.tokenizer import settings_hash

    return {
        "midistruct_version": __version__,
        "miditok_version": miditok.__version__ if hasattr(miditok, "__version__") else "unknown",
        "settings_hash": settings_hash(cfg.tokenizer),
        "tokenizer_hash": settings_hash(cfg.tokenizer, tokenizer),
        "segments": cfg.segments.model_dump(),
        "sources": cfg.data.sources,
        "summary": {k: v for k, v in summary.as_dict().items() if k != "splits"},
    }

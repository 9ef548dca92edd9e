"""``midistruct prepare``: corpus sources -> validation -> tokens -> bar windows -> shards.

One path for every corpus, driven by the config: the sources in ``data.sources`` are
listed, files are encoded in worker processes (:mod:`midistruct.tokens.encode`) and
streamed into a shard folder (:mod:`midistruct.shards.writer`). Skipped files are kept
in ``report.tsv`` with their reason; exact duplicates are skipped as such.

Nothing is lost (issue 20): only a shard folder is ever replaced, never a folder a source reads
or one holding anything else; one prepare per output at a time (:mod:`midistruct.shards.lock`).
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

from midistruct import __version__
from midistruct.config import Config, dump_config
from midistruct.corpus import Piece, SourceError, iter_pieces, source_failures
from midistruct.shards import bpe
from midistruct.shards.lock import OutputLock
from midistruct.shards.reader import ShardError, ShardSet
from midistruct.shards.splits import assign_split
from midistruct.shards.writer import ShardWriter, remove_stale_temporaries, replace_problem
from midistruct.tokens import encode
from midistruct.tokens.encode import Skipped
from midistruct.tokens.tokenizer import build_tokenizer, save_tokenizer, settings_hash


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
    ``(id, path, reason)`` of those a source found but could not convert.

    Raises :class:`SourceError` when there are no sources or one of them finds nothing at all.
    """
    if not cfg.data.sources:
        raise SourceError("config has no data.sources")
    pieces, seen, failed = [], set(), []
    for source in cfg.data.sources:
        found = list(iter_pieces(source))
        failures = [(pid, "", f"conversion failed: {why}") for pid, why in source_failures(source).items()]
        if not found and not failures:
            raise _empty_source(source)
        for piece in found:
            if piece.id in seen:
                raise SourceError(f"piece id {piece.id!r} appears twice; give sources distinct names")
            seen.add(piece.id)
        pieces += found
        failed += failures
    return pieces, failed


def _empty_source(source: dict) -> SourceError:
    kind = source.get("kind")
    if source.get("path"):
        return SourceError(f"no usable MIDI files in {source['path']} ({kind} source)")
    return SourceError(f"the {kind} source found no pieces")


def _encode_all(cfg: Config, pieces: list[Piece], workers: int, progress: bool) -> Iterator:
    """Yield ``(piece, Encoded | Skipped)`` in input order, encoding in ``workers`` processes."""
    from tqdm import tqdm

    # (path, meter override, first bar line, where the source's labels start)
    tasks = [(str(p.path), *encode.task_of(p.tags), encode.label_tick_of(p.tags)) for p in pieces]
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
    """Prepare the shard folder ``cfg.data.output`` from ``cfg.data.sources``.

    Raises :class:`ShardError` before any work when the output is, holds or lies inside a source
    folder, exists and is not a shard folder (``overwrite`` never changes that), holds shards of
    another tokenizer config (unless ``overwrite``), or is being prepared by another process.
    Temporaries of killed runs are removed first. Raises :class:`SourceError` when a source finds
    nothing or every file is skipped; the output is then left as it was.
    """
    out = Path(cfg.data.output)
    _check_output_path(cfg, out)
    with OutputLock(out):
        remove_stale_temporaries(out)
        _check_output(cfg, out, overwrite=overwrite)
        return _prepare_locked(cfg, out, progress)


def _prepare_locked(cfg: Config, out: Path, progress: bool) -> PrepareSummary:
    tokenizer = build_tokenizer(cfg.tokenizer)
    if cfg.tokenizer.bpe_vocab_size:
        bpe.check_vocab_size(tokenizer, cfg.tokenizer.bpe_vocab_size)  # before the corpus pass, not after it
    pieces, failed = collect_pieces(cfg)
    if not cfg.tokenizer.bpe_vocab_size:
        return _encode_corpus(cfg, pieces, failed, tokenizer, out, progress)
    base = out.with_name(f"{out.name}.base-{os.getpid()}")
    summary = _encode_corpus(cfg, pieces, failed, tokenizer, base, progress)
    try:  # only once it is there: a folder of that name that was not ours made _encode_corpus raise
        summary.splits = _apply_bpe(cfg, tokenizer, ShardSet(base), out)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return summary


def _check_output_path(cfg: Config, out: Path) -> None:
    """Raise :class:`ShardError` when ``out`` names no folder of its own, or is, holds or lies
    inside a folder a source reads."""
    if out.name in ("", ".", ".."):
        raise ShardError(f"data.output {str(out)!r} must name a folder of its own, such as data/mycorpus")
    target = out.expanduser().resolve()
    for folder in _source_folders(cfg.data.sources):
        resolved = folder.expanduser().resolve()
        if target.is_relative_to(resolved):
            where = "is" if target == resolved else "is inside"
            raise ShardError(f"data.output {out} {where} the source folder {folder}; "
                             "choose a data.output outside every source")
        if resolved.is_relative_to(target):
            raise ShardError(f"the source folder {folder} is inside data.output {out}; "
                             "preparing would replace it: choose another data.output")


def _source_folders(sources: list[dict]) -> list[Path]:
    """The folders the sources read: their ``path`` and ``*_path`` / ``*_dir`` options."""
    return [Path(value) for source in sources for key, value in source.items()
            if isinstance(value, str) and value and (key == "path" or key.endswith(("_path", "_dir")))]


def _check_output(cfg: Config, out: Path, *, overwrite: bool) -> None:
    """Raise :class:`ShardError` unless ``out`` may be replaced (absent, empty or a shard folder)
    by shards of this tokenizer config; ``overwrite`` allows another config, nothing else."""
    problem = replace_problem(out)
    if problem:
        raise ShardError(f"{out} {problem}; choose another data.output (--overwrite replaces only shard folders)")
    if (out / "manifest.json").exists() and not overwrite:
        if ShardSet(out).manifest.get("settings_hash") != settings_hash(cfg.tokenizer):
            raise ShardError(f"{out} holds shards of another tokenizer config; use --overwrite or another data.output")


def _encode_corpus(cfg: Config, pieces: list[Piece], failed: list, tokenizer, out: Path, progress: bool) -> PrepareSummary:
    """Pass over all pieces: validate, tokenize, dedupe, split, stream into ``out``.

    ``failed`` are pieces a source could not convert: reported, counted as read and skipped.
    """
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
        if not seen:
            raise _nothing_kept(Path(cfg.data.output), summary, report)
        _write_side_files(writer.folder, cfg, tokenizer, report)
        summary.splits = writer.finish(_manifest(cfg, tokenizer, summary))
    return summary


def _apply_bpe(cfg: Config, tokenizer, base, out: Path) -> dict[str, dict[str, int]]:
    """Learn BPE on ``base``'s train split and write the re-encoded shards to ``out``."""
    bpe.train_bpe(tokenizer, base, cfg.tokenizer.bpe_vocab_size)
    with ShardWriter(out, vocab_size=tokenizer.vocab_size) as writer:
        bpe.reencode(tokenizer, base, writer)
        shutil.copy(base.folder / "report.tsv", writer.folder / "report.tsv")
        _write_side_files(writer.folder, cfg, tokenizer, None)
        manifest = {k: v for k, v in base.manifest.items() if k not in ("format_version", "token_dtype", "splits")}
        manifest["tokenizer_hash"] = settings_hash(cfg.tokenizer, tokenizer)
        return writer.finish(manifest)


def _write_side_files(folder: Path, cfg: Config, tokenizer, report: list | None) -> None:
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
    if enc.label_bar is not None:  # the bar of the tokens where the source's labels start (midistruct.tags)
        tags = {**tags, "label_bar": str(enc.label_bar)}
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


_REPORT_HEADER = "id\tpath\treason\n"


def _write_report(path: Path, rows: list[tuple[str, str, str]]) -> None:
    with open(path, "w") as f:
        f.write(_REPORT_HEADER)
        for row in rows:
            f.write("\t".join(c.replace("\t", " ") for c in row) + "\n")


def _nothing_kept(out: Path, summary: PrepareSummary, report: list) -> SourceError:
    """The error of a run that skipped every file; its report goes to ``<out>.report.tsv`` (unless a
    file of that name is not an earlier such report), as the output is left as it was."""
    path = out.with_name(f"{out.name}.report.tsv")
    ours = not path.exists() or _first_line(path) == _REPORT_HEADER
    if ours:
        _write_report(path, report)
    reasons = ", ".join(f"{k}: {n}" for k, n in summary.skipped.most_common())
    where = f"; see {path}" if ours else ""
    return SourceError(f"all {summary.files} files were skipped ({reasons}){where}; {out} was not written")


def _first_line(path: Path) -> str:
    try:
        with open(path) as f:
            return f.readline()
    except (OSError, UnicodeDecodeError):
        return ""


def _manifest(cfg: Config, tokenizer, summary: PrepareSummary) -> dict:
    import miditok

    return {
        "midistruct_version": __version__,
        "miditok_version": miditok.__version__ if hasattr(miditok, "__version__") else "unknown",
        "settings_hash": settings_hash(cfg.tokenizer),
        "tokenizer_hash": settings_hash(cfg.tokenizer, tokenizer),
        "segments": cfg.segments.model_dump(),
        "sources": cfg.data.sources,
        "summary": {k: v for k, v in summary.as_dict().items() if k != "splits"},
    }

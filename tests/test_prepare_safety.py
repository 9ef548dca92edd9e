"""prepare loses nothing (issue 20): it replaces only shard folders, holds a lock per output,
cleans its own leftovers, refuses empty or fully skipped corpora, and reports every bad file."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import symusic
from scores import make_score, write_corpus

from midistruct.cli import main
from midistruct.config import load_config
from midistruct.corpus import SourceError
from midistruct.prepare import prepare
from midistruct.shards.reader import ShardError, ShardSet


def _cfg(src, out, *extra):
    return load_config("tiny", [f"data.sources=[{{kind: folder, path: '{src}'}}]", f"data.output={out}", *extra])


def _args(src, out, *extra):
    return ["prepare", "--config", "tiny", "--quiet", "--set", f"data.sources=[{{kind: folder, path: '{src}'}}]",
            "--set", f"data.output={out}", *extra]


def _report(out) -> dict[str, str]:
    """report.tsv as file name -> reason."""
    rows = [line.split("\t") for line in (out / "report.tsv").read_text().splitlines()[1:]]
    return {os.path.basename(path) or pid: reason for pid, path, reason in rows}


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    return proc.pid


def _fake_temporary(folder) -> None:
    """A folder shaped like a shard writer's temporary: split folders of shard files, a report."""
    for split in ("train", "valid", "test"):
        (folder / split).mkdir(parents=True)
        (folder / split / "tokens.bin").write_bytes(b"\0\0")
    (folder / "report.tsv").write_text("id\tpath\treason\n")


@pytest.fixture()
def src(tmp_path):
    folder = tmp_path / "midi"
    write_corpus(folder, n=3)
    return folder


# ---- data.output is never anything but a shard folder -----------------------------------------


def test_user_folder_as_output_is_refused_and_kept(src, tmp_path, capsys):
    user = tmp_path / "thesis"
    user.mkdir()
    (user / "chapter1.txt").write_text("precious")
    for extra in ([], ["--overwrite"]):
        assert main(_args(src, user, *extra)) == 2
        err = capsys.readouterr().err
        assert err.startswith("midistruct: error: ") and err.count("\n") == 1
        assert f"{user} exists and is not a midistruct shard folder" in err and "chapter1.txt" in err
        assert sorted(p.name for p in user.iterdir()) == ["chapter1.txt"]
        assert (user / "chapter1.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["midi", "thesis"]  # no lock, no temporaries left


def test_output_equal_to_inside_or_around_a_source_is_refused(src, tmp_path, capsys):
    before = sorted(p.name for p in src.iterdir())
    assert main(_args(src, src)) == 2
    assert f"data.output {src} is the source folder" in capsys.readouterr().err
    assert main(_args(src, src / "shards")) == 2
    assert "is inside the source folder" in capsys.readouterr().err
    assert main(_args(src, tmp_path)) == 2  # the source lies inside the output
    assert f"the source folder {src} is inside data.output {tmp_path}" in capsys.readouterr().err
    assert sorted(p.name for p in src.iterdir()) == before
    assert not (src / "shards").exists() and not list(tmp_path.glob("*.lock"))


def test_output_that_is_a_file_or_a_link_is_refused(src, tmp_path):
    (tmp_path / "notes.txt").write_text("keep")
    with pytest.raises(ShardError, match="is a file"):
        prepare(_cfg(src, tmp_path / "notes.txt"), progress=False)
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(ShardError, match="symbolic link"):
        prepare(_cfg(src, tmp_path / "link"), progress=False)
    assert (tmp_path / "notes.txt").read_text() == "keep" and (tmp_path / "link").is_symlink()
    with pytest.raises(ShardError, match="must name a folder of its own"):
        prepare(_cfg(src, "."), progress=False)


def test_a_folder_named_like_our_temporary_is_not_deleted(src, tmp_path):
    """Even a user folder that happens to carry the BPE base's name survives."""
    base = tmp_path / f"s.base-{os.getpid()}"
    base.mkdir()
    (base / "mine.txt").write_text("mine")
    with pytest.raises(ShardError, match="not a midistruct shard folder"):
        prepare(_cfg(src, tmp_path / "s", "tokenizer.bpe_vocab_size=400"), progress=False)
    assert (base / "mine.txt").read_text() == "mine" and not (tmp_path / "s").exists()


def test_shard_folder_with_a_foreign_file_is_refused(src, tmp_path):
    out = tmp_path / "s"
    prepare(_cfg(src, out), progress=False)
    (out / "train" / "my_notes.md").write_text("mine")
    with pytest.raises(ShardError, match=r"not a midistruct shard folder \(it holds train/my_notes.md\)"):
        prepare(_cfg(src, out), overwrite=True, progress=False)
    assert (out / "train" / "my_notes.md").read_text() == "mine"


def test_shard_folders_and_empty_folders_are_replaced(src, tmp_path):
    out = tmp_path / "s"
    out.mkdir()
    prepare(_cfg(src, out), progress=False)  # an empty folder holds nothing to lose
    first = json.loads((out / "manifest.json").read_text())
    write_corpus(src, n=4)
    prepare(_cfg(src, out), progress=False)  # same settings: replaced, no flag needed
    assert sum(c["pieces"] for c in ShardSet(out).manifest["splits"].values()) == 4
    assert first["settings_hash"] == ShardSet(out).manifest["settings_hash"]
    with pytest.raises(ShardError, match="another tokenizer config"):
        prepare(_cfg(src, out, "tokenizer.use_velocities=true"), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["midi", "s"]


def test_writer_rechecks_the_output_before_replacing_it(tmp_path):
    """A folder that became the user's during the run is not replaced at the end either."""
    import numpy as np

    from midistruct.shards.writer import ShardWriter

    out = tmp_path / "s"
    with pytest.raises(ShardError, match="not a midistruct shard folder"):
        with ShardWriter(out, vocab_size=100) as writer:
            writer.add("train", ids=np.arange(4), bars=np.zeros(4), windows=np.array([[0, 4, 0, 0]]), record={})
            out.mkdir()
            (out / "photo.jpg").write_bytes(b"jpeg")
            writer.finish({"settings_hash": "x"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"] and (out / "photo.jpg").read_bytes() == b"jpeg"


# ---- one prepare per output ---------------------------------------------------------------------


def test_second_prepare_is_refused_while_another_holds_the_lock(src, tmp_path, capsys):
    out = tmp_path / "s"
    holder = ("import sys\nfrom midistruct.shards.lock import OutputLock\n"
              f"with OutputLock({str(out)!r}):\n    print('ready', flush=True)\n    sys.stdin.readline()\n")
    proc = subprocess.Popen([sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert main(_args(src, out)) == 2
        err = capsys.readouterr().err
        assert f"{out} is being prepared by process {proc.pid}" in err and f"{out}.lock" in err
        assert not out.exists()
    finally:
        proc.communicate("\n", timeout=30)
    assert proc.returncode == 0 and not (tmp_path / "s.lock").exists()
    assert main(_args(src, out)) == 0  # the lock is free again


def test_lock_left_by_a_dead_process_is_taken_over(src, tmp_path, capsys):
    out = tmp_path / "s"
    lock = tmp_path / "s.lock"
    lock.write_text(json.dumps({"tool": "midistruct prepare", "pid": _dead_pid(), "host": "h"}))
    prepare(_cfg(src, out), progress=False)
    assert "taking over" in capsys.readouterr().err
    assert ShardSet(out).manifest and not lock.exists()


def test_foreign_lock_file_is_not_touched(src, tmp_path):
    (tmp_path / "s.lock").write_text("my own lock notes")
    with pytest.raises(ShardError, match="not a midistruct lock file"):
        prepare(_cfg(src, tmp_path / "s"), progress=False)
    assert (tmp_path / "s.lock").read_text() == "my own lock notes"


def test_lock_is_released_after_a_failure(src, tmp_path):
    from midistruct.shards.lock import OutputLock

    out = tmp_path / "s"
    with pytest.raises(ShardError):
        with OutputLock(out):
            raise ShardError("boom")
    assert not (tmp_path / "s.lock").exists()
    with OutputLock(out) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()


# ---- leftovers of killed runs -------------------------------------------------------------------


def test_stale_temporaries_are_removed_and_nothing_else(src, tmp_path, capsys):
    dead = _dead_pid()
    stale = [f"s.partial-{dead}", f"s.old-{dead}", f"s.base-{dead}", f"s.base-{dead}.partial-{dead}"]
    for name in stale:
        _fake_temporary(tmp_path / name)
    _fake_temporary(tmp_path / f"s.partial-{dead + 100000}")  # not a live process either: removed too
    kept = [f"s.partial-{os.getppid()}", "s.partial-abc", f"s-partial-{dead}", f"t.partial-{dead}", f"s.mine-{dead}"]
    for name in kept:
        _fake_temporary(tmp_path / name)
    user = tmp_path / f"s.old-{dead + 1}"
    _fake_temporary(user)
    (user / "train" / "essay.doc").write_text("mine")  # named like ours but holding user data
    prepare(_cfg(src, tmp_path / "s"), progress=False)
    err = capsys.readouterr().err
    assert all(f"removed {tmp_path / name}" in err for name in stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["midi", "s", user.name, *kept])


def test_interrupted_bpe_prepare_leaves_nothing(src, tmp_path, monkeypatch):
    import midistruct.prepare as prep

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prep, "_apply_bpe", boom)
    with pytest.raises(KeyboardInterrupt):
        prepare(_cfg(src, tmp_path / "s", "tokenizer.bpe_vocab_size=400"), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["midi"]


# ---- nothing to prepare -------------------------------------------------------------------------


def test_empty_source_folder_is_an_error(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no music here")
    assert main(_args(empty, tmp_path / "s")) == 2
    assert f"no usable MIDI files in {empty}" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_all_files_skipped_is_an_error_and_keeps_the_old_shards(src, tmp_path):
    out = tmp_path / "s"
    prepare(_cfg(src, out), progress=False)
    manifest = (out / "manifest.json").read_text()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.mid").write_bytes(b"")
    (bad / "b.mid").write_text("<?xml version='1.0'?><score-partwise/>")
    with pytest.raises(SourceError, match=r"all 2 files were skipped \((empty file: 1, unreadable MIDI: 1|"
                                          r"unreadable MIDI: 1, empty file: 1)\); see .*s\.report\.tsv"):
        prepare(_cfg(bad, out), progress=False)
    assert (out / "manifest.json").read_text() == manifest
    rows = (tmp_path / "s.report.tsv").read_text().splitlines()
    assert rows[0] == "id\tpath\treason" and len(rows) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "midi", "s", "s.report.tsv"]


# ---- every bad file has its own reason ----------------------------------------------------------


def _with_notes(seed: int, change) -> symusic.Score:
    score = make_score(bars=8, seed=seed)
    for i, note in enumerate(score.tracks[0].notes):
        change(i, note)
    return score


def test_bad_files_are_reported_with_their_reasons(src, tmp_path):
    _with_notes(10, lambda i, n: setattr(n, "duration", 0)).dump_midi(str(src / "silent.mid"))
    _with_notes(11, lambda i, n: setattr(n, "pitch", 10)).dump_midi(str(src / "low.mid"))
    _with_notes(12, lambda i, n: setattr(n, "pitch", 120)).dump_midi(str(src / "high.mid"))
    (src / "gone.mid").symlink_to(src / "nowhere.mid")
    (src / "loop.mid").symlink_to(src / "loop.mid")
    (src / "text.mid").write_text("just some text\n" * 10)
    (src / "score.mid").write_text('<?xml version="1.0"?><score-partwise version="3.1"/>')
    (src / "folder.mid").mkdir()
    make_score(bars=8, seed=13).dump_midi(str(src / "folder.mid" / "inside.mid"))
    make_score(bars=8, seed=14).dump_midi(str(src / "LOUD.MIDI"))
    out = tmp_path / "s"
    summary = prepare(_cfg(src, out), progress=False).as_dict()
    reasons = _report(out)
    assert reasons["silent.mid"].startswith("zero-length notes")
    assert reasons["low.mid"].startswith("no notes in the tokenizer's pitch range 21-109 (all ")
    assert reasons["low.mid"].endswith(" notes outside it: lowest 10, highest 10)")
    assert reasons["high.mid"].startswith("no notes in the tokenizer's pitch range 21-109")
    assert reasons["gone.mid"] == reasons["loop.mid"] == "broken link"
    assert reasons["text.mid"].startswith("unreadable MIDI") and reasons["score.mid"].startswith("unreadable MIDI")
    assert len(reasons) == 7 and summary["files_read"] == 3 + 7 + 2
    ids = {p["id"] for s in ("train", "valid", "test") for p in ShardSet(out).split(s).pieces()}
    assert {"midi/folder.mid/inside", "midi/LOUD"} <= ids


def _encoder(*overrides):
    from midistruct.tokens.encode import PieceEncoder

    return PieceEncoder(load_config("tiny", list(overrides)))


def test_zero_length_notes_are_dropped_not_invented():
    score = _with_notes(3, lambda i, n: setattr(n, "duration", 0 if i % 2 else n.duration))
    lasting = sum(n.duration > 0 for n in score.tracks[0].notes)
    assert _encoder().encode_score(score).n_notes == lasting


def test_negative_lengths_and_out_of_range_pitches_in_a_score_built_in_code():
    from midistruct.tokens.validate import Skip, usable_score

    enc = _encoder()
    score = _with_notes(4, lambda i, n: setattr(n, "duration", -n.duration))
    with pytest.raises(Skip, match="^zero-length notes"):
        usable_score(score, enc.cfg, meters=enc.meters)
    score = _with_notes(5, lambda i, n: setattr(n, "pitch", 15 if i % 3 else n.pitch))
    before = score.note_num()
    cleaned = usable_score(score, enc.cfg, meters=enc.meters)
    assert score.note_num() == before  # the caller's score is left unchanged
    pitches = [n.pitch for t in cleaned.tracks for n in t.notes]
    assert pitches and min(pitches) >= 21 and len(pitches) == sum(1 for n in score.tracks[0].notes if n.pitch != 15)


def test_min_notes_counts_usable_notes_only():
    from midistruct.tokens.validate import Skip

    score = _with_notes(6, lambda i, n: setattr(n, "pitch", n.pitch if i < 5 else 5))
    with pytest.raises(Skip, match=r"^too few notes \(5 < 8\)"):
        _encoder().encode_score(score)

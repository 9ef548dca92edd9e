"""prepare end to end: shards on disk, report, splits, duplicates, atomicity, dataset, CLI."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import numpy as np
import pytest
import torch
from scores import TPQ, make_score, write_corpus

from midistruct.cli import main
from midistruct.config import load_config
from midistruct.prepare import prepare
from midistruct.shards.dataset import EOS_ID, WindowDataset, collate
from midistruct.shards.reader import ShardError, ShardSet, open_shards
from midistruct.shards.splits import assign_split


def _cfg(src, out, *extra):
    return load_config("tiny", [f"data.sources=[{{kind: folder, path: '{src}'}}]", f"data.output={out}", *extra])


@pytest.fixture()
def corpus(tmp_path):
    src = tmp_path / "midi"
    write_corpus(src, n=8)
    shutil.copy(src / "piece0.mid", src / "copy_of_piece0.MID")  # a duplicate, upper-case suffix
    (src / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06garbage")
    (src / "notes.txt").write_text("not midi")
    return src


def test_prepare_writes_shards_and_report(corpus, tmp_path):
    out = tmp_path / "shards"
    summary = prepare(_cfg(corpus, out), progress=False).as_dict()
    assert summary["files_read"] == 10  # 8 pieces + duplicate + broken; .txt ignored
    assert summary["skipped_by_reason"] == {"duplicate": 1, "unreadable MIDI": 1}
    report = (out / "report.tsv").read_text().splitlines()
    assert len(report) == 3 and "duplicate of" in report[1] + report[2]
    shards = ShardSet(out)
    total = sum(shards.split(s).n_windows for s in ("train", "valid", "test"))
    assert total == summary["splits"]["train"]["windows"] + summary["splits"]["valid"]["windows"] + summary["splits"]["test"]["windows"]
    assert sum(c["pieces"] for c in summary["splits"].values()) == 8
    assert (out / "miditok.json").is_file() and (out / "config.yaml").is_file()
    assert not list(tmp_path.glob("shards.partial-*"))


def test_key_signature_becomes_a_tag(tmp_path):
    """The file's first key signature is kept as a piece tag (the probes' key_signature target); a
    source's own tag wins; a file without one gets none."""
    import symusic

    from midistruct.tokens.encode import key_signature

    src = tmp_path / "midi"
    paths = write_corpus(src, n=3)
    for path, sig in zip(paths[:2], [(-3, 0), (2, 1)]):
        score = symusic.Score(str(path))
        score.key_signatures.append(symusic.KeySignature(0, *sig))
        score.key_signatures.append(symusic.KeySignature(TPQ * 8, 5, 0))  # a later change is not the key
        score.dump_midi(str(path))
    assert key_signature(symusic.Score(str(paths[0]))) == "3b"
    assert key_signature(symusic.Score(str(paths[2]))) is None
    out = tmp_path / "shards"
    prepare(_cfg(src, out), progress=False)
    shards = ShardSet(out)
    tags = {p["id"].rsplit("/", 1)[-1]: p["tags"] for s in ("train", "valid", "test") for p in shards.split(s).pieces()}
    assert tags["piece0"]["key_signature"] == "3b" and tags["piece1"]["key_signature"] == "2#"
    assert "key_signature" not in tags["piece2"]


def test_a_tags_file_tags_the_pieces_of_a_folder(tmp_path):
    """Issue 18: a folder source's ``tags`` CSV (path relative to the folder, one column per tag) reaches each
    piece's tags in the shards; a row naming no file, or a column the source sets itself, is an error."""
    from midistruct.corpus import SourceError, iter_pieces

    src = tmp_path / "midi"
    write_corpus(src, n=3)
    (tmp_path / "tags.csv").write_text("path,tune_type,key\npiece0.mid,reel,D:major\npiece2.mid,jig,\n")
    out = tmp_path / "shards"
    cfg = load_config("tiny", [f"data.sources=[{{kind: folder, path: '{src}', tags: '{tmp_path / 'tags.csv'}'}}]",
                               f"data.output={out}"])
    prepare(cfg, progress=False)
    shards = ShardSet(out)
    tags = {p["id"].rsplit("/", 1)[-1]: p["tags"] for s in ("train", "valid", "test") for p in shards.split(s).pieces()}
    assert tags["piece0"]["tune_type"] == "reel" and tags["piece0"]["key"] == "D:major"
    assert tags["piece2"]["tune_type"] == "jig" and "key" not in tags["piece2"]  # an empty cell is no tag
    assert "tune_type" not in tags["piece1"] and tags["piece1"]["folder"] == "."
    (tmp_path / "typo.csv").write_text("path,tune_type\npiece9.mid,reel\n")
    with pytest.raises(SourceError, match=r"1 path\(s\) name no MIDI file of the folder, e.g. 'piece9.mid'"):
        list(iter_pieces({"kind": "folder", "path": src, "tags": tmp_path / "typo.csv"}))
    (tmp_path / "clash.csv").write_text("path,folder\npiece0.mid,x\n")
    with pytest.raises(SourceError, match="folder are set by the folder source"):
        list(iter_pieces({"kind": "folder", "path": src, "tags": tmp_path / "clash.csv"}))
    (tmp_path / "nopath.csv").write_text("file,tune_type\npiece0.mid,reel\n")
    with pytest.raises(SourceError, match="needs a 'path' column"):
        list(iter_pieces({"kind": "folder", "path": src, "tags": tmp_path / "nopath.csv"}))


def test_windows_match_direct_encoding(corpus, tmp_path):
    """What the shards hold is exactly the encoder's output for that piece."""
    from midistruct.tokens.encode import PieceEncoder

    cfg = _cfg(corpus, tmp_path / "s")
    prepare(cfg, progress=False)
    shards = ShardSet(tmp_path / "s")
    enc = PieceEncoder(cfg)
    for split in ("train", "valid", "test"):
        arrays = shards.split(split)
        pieces = arrays.pieces()
        for i in range(arrays.n_windows):
            start, end, piece, first_bar = arrays.windows[i]
            direct = enc.encode_file(pieces[piece]["path"])
            window = [w for w in direct.windows if w.bar == first_bar][0]
            ids, bars = arrays.window(i)
            np.testing.assert_array_equal(ids, direct.ids[window.start : window.end])
            assert bars[0] == 0 and bars[-1] == cfg.segments.bars - 1


def test_splits_deterministic_and_grouped(tmp_path):
    cfg = load_config("tiny").splits
    groups = [f"song{i}" for i in range(2000)]
    first = [assign_split(g, cfg) for g in groups]
    assert first == [assign_split(g, cfg) for g in groups]
    share = {s: first.count(s) / len(first) for s in ("train", "valid", "test")}
    assert abs(share["valid"] - cfg.valid) < 0.04 and abs(share["test"] - cfg.test) < 0.04
    assert assign_split("x", cfg.model_copy(update={"seed": 1})) in ("train", "valid", "test")


def test_interrupted_prepare_leaves_no_complete_folder(corpus, tmp_path, monkeypatch):
    import midistruct.prepare as prep

    out = tmp_path / "s"
    calls = {"n": 0}
    real = prep._add_piece

    def boom(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        real(*args, **kwargs)

    monkeypatch.setattr(prep, "_add_piece", boom)
    with pytest.raises(KeyboardInterrupt):
        prepare(_cfg(corpus, out), progress=False)
    assert not out.exists() and not list(tmp_path.glob("s.partial-*"))
    with pytest.raises(ShardError, match="no manifest.json"):
        ShardSet(out)


def test_refuses_other_tokenizer(corpus, tmp_path):
    out = tmp_path / "s"
    prepare(_cfg(corpus, out), progress=False)
    with pytest.raises(ShardError, match="another tokenizer config"):
        prepare(_cfg(corpus, out, "tokenizer.use_velocities=true"), progress=False)
    other = tmp_path / "v"
    prepare(_cfg(corpus, other, "tokenizer.use_velocities=true"), progress=False)
    with pytest.raises(ShardError, match="cannot be mixed"):
        open_shards([out, other])
    prepare(_cfg(corpus, out, "tokenizer.use_velocities=true"), overwrite=True, progress=False)
    assert ShardSet(out).tokenizer_hash == ShardSet(other).tokenizer_hash


def test_dataset_and_collate(corpus, tmp_path):
    out = tmp_path / "s"
    prepare(_cfg(corpus, out, "splits.valid=0", "splits.test=0"), progress=False)
    ds = WindowDataset([out], "train")
    item = ds[0]
    assert item["input_ids"][-1] == EOS_ID and item["input_ids"].dtype == torch.long
    assert len(item["bar_ids"]) == len(item["input_ids"])
    batch = collate([ds[i] for i in range(3)])
    lengths = [len(ds[i]["input_ids"]) for i in range(3)]
    assert batch["input_ids"].shape == (3, max(lengths))
    assert batch["attention_mask"].sum(1).tolist() == lengths
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_transposition_shifts_pitches_only(corpus, tmp_path):
    out = tmp_path / "s"
    prepare(_cfg(corpus, out, "splits.valid=0", "splits.test=0"), progress=False)
    plain = WindowDataset([out], "train")
    moved = WindowDataset([out], "train", transpose=(-3, 3), seed=1)
    vocab = plain.sets[0].tokenizer().vocab
    names = {i: t for t, i in vocab.items()}
    shifts = set()
    for i in range(len(plain)):
        a, b = plain[i]["input_ids"].tolist(), moved[i]["input_ids"].tolist()
        diffs = {int(names[y].split("_")[1]) - int(names[x].split("_")[1]) for x, y in zip(a, b) if x != y}
        assert all(names[x].startswith("Pitch_") for x, y in zip(a, b) if x != y)
        assert len(diffs) <= 1
        shifts |= diffs
    assert shifts and shifts <= {-3, -2, -1, 1, 2, 3}
    assert moved[0]["input_ids"].tolist() == WindowDataset([out], "train", transpose=(-3, 3), seed=1)[0]["input_ids"].tolist()


def test_pitch_shifts_clip_to_range():
    from midistruct.config import TokenizerSettings
    from midistruct.tokens.remi import RemiVocab
    from midistruct.tokens.tokenizer import build_tokenizer

    vocab = RemiVocab(build_tokenizer(TokenizerSettings(pitch_range=(21, 108))))
    low, second, high, bar = vocab.id("Pitch_21"), vocab.id("Pitch_22"), vocab.id("Pitch_108"), vocab.bar_id
    assert vocab.allowed_shifts(np.array([bar, low]), -5, 5) == (0, 5)
    assert vocab.allowed_shifts(np.array([bar, high]), -5, 5) == (-5, 0)
    assert vocab.allowed_shifts(np.array([bar]), -5, 5) == (0, 0)
    assert vocab.shift_pitches(np.array([bar, low]), 1).tolist() == [bar, second]


def test_cli_prepare_and_errors(corpus, tmp_path, capsys):
    out = tmp_path / "s"
    args = ["prepare", "--config", "tiny", "--quiet", "--json", "--set", f"data.sources=[{{kind: folder, path: '{corpus}'}}]",
            "--set", f"data.output={out}"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["files_read"] == 10 and summary["tokens_per_bar"] > 0
    assert main(["prepare", "--config", "nope"]) == 2
    assert "named configs:" in capsys.readouterr().err
    assert main(["prepare", "--config", "tiny", "--set", "segments.barz=2"]) == 2
    assert "valid: bars, hop" in capsys.readouterr().err
    assert main(["prepare", "--config", "tiny", "--set", f"data.sources=[{{kind: folder, path: '{tmp_path}/no'}}]"]) == 2
    assert "is not a folder" in capsys.readouterr().err


@pytest.mark.shared_data
def test_prepare_real_mixed_folder(shared_datasets, tmp_path):
    """MidiTok's test files (incl. the corrupted one and empty.mid): no crash, every skip has a reason."""
    src = shared_datasets / "miditok-test-midis"
    out = tmp_path / "s"
    summary = prepare(_cfg(src, out, "data.workers=2", "segments.max_tokens=1024"), progress=False).as_dict()
    rows = (out / "report.tsv").read_text().splitlines()[1:]
    assert len(rows) == summary["skipped"] >= 2
    reasons = {r.split("\t")[2] for r in rows}
    assert any(r.startswith("unreadable MIDI") for r in reasons) and "no notes" in reasons
    assert summary["files_read"] == 30
    assert sum(c["pieces"] for c in summary["splits"].values()) + summary["skipped"] == 30


def test_bpe_shards_decode_like_base(corpus, tmp_path):
    """BPE windows hold the same music as base windows; bar ids stay aligned to bar lines."""
    from midistruct.tokens.tokenizer import decode_ids

    base_out, bpe_out = tmp_path / "base", tmp_path / "bpe"
    prepare(_cfg(corpus, base_out, "splits.valid=0", "splits.test=0"), progress=False)
    summary = prepare(_cfg(corpus, bpe_out, "splits.valid=0", "splits.test=0", "tokenizer.bpe_vocab_size=400"),
                      progress=False).as_dict()
    base, bpe = ShardSet(base_out), ShardSet(bpe_out)
    tok_base, tok_bpe = base.tokenizer(), bpe.tokenizer()
    assert tok_bpe.is_trained and tok_bpe.vocab_size == 400
    assert base.tokenizer_hash != bpe.tokenizer_hash
    a, b = base.split("train"), bpe.split("train")
    assert a.n_windows == b.n_windows and b.n_tokens < a.n_tokens
    assert summary["splits"]["train"]["tokens"] == b.n_tokens
    for i in range(a.n_windows):
        ids_a, _ = a.window(i)
        ids_b, bars_b = b.window(i)
        assert bars_b[0] == 0 and bars_b[-1] == 1 and (np.diff(bars_b) >= 0).all()
        assert [str(n) for t in decode_ids(tok_bpe, ids_b).tracks for n in t.notes] == \
               [str(n) for t in decode_ids(tok_base, ids_a).tracks for n in t.notes]
    with pytest.raises(ShardError, match="BPE"):
        WindowDataset([bpe_out], "train", transpose=(-2, 2))


def _pop909_cfg(shared_datasets, out, limit):
    root, phrases = shared_datasets / "pop909", shared_datasets / "pop909-phrases"
    return load_config("pop909", [
        f"data.sources=[{{kind: pop909, path: '{root}', phrases_path: '{phrases}', limit: {limit}}}]",
        f"data.output={out}", "data.workers=2"])


@pytest.mark.shared_data
@pytest.mark.parametrize("limit", [
    pytest.param(120, id="120-songs"),
    pytest.param(None, id="all-909-songs", marks=pytest.mark.slow),  # ~30-50 s: pytest -m slow
])
def test_prepare_pop909(shared_datasets, tmp_path, limit):
    """POP909 songs and their versions: no crash, versions share their song's split, 4/4 bars."""
    summary = prepare(_pop909_cfg(shared_datasets, tmp_path / "pop", limit or "null"), progress=False).as_dict()
    kept = sum(c["pieces"] for c in summary["splits"].values())
    assert kept + summary["skipped"] == summary["files_read"] and kept > 0.85 * summary["files_read"]
    assert len((tmp_path / "pop" / "report.tsv").read_text().splitlines()) == summary["skipped"] + 1
    if limit is None:
        assert summary["files_read"] == 2898
    shards = ShardSet(tmp_path / "pop")
    split_of_song = {}
    for split in ("train", "valid", "test"):
        for rec in shards.split(split).pieces():
            assert split_of_song.setdefault(rec["tags"]["song"], split) == split
            assert rec["tags"]["time_signature"] in ("4/4", "3/4", "6/8", "9/8")
    assert len(split_of_song) == (limit or 909)
    tok = shards.tokenizer()
    ids, _ = shards.split("train").window(0)
    assert tok[int(ids[1])] in ("TimeSig_4/4", "TimeSig_3/4", "TimeSig_6/8", "TimeSig_9/8")
    assert 4 <= summary["notes"] / summary["bars"] <= 40  # a 4/4 pop bar, not a 1/4 one
    # bar lines on the songs' downbeats: onsets on the 16th grid (even positions at 8 per beat):
    # 88 % of these songs', 95 % of all valid songs'; from tick 0 instead, 52 % (the first beat is not at 0)
    names = [tok[int(i)] for i in shards.split("train").tokens[:200_000]]
    positions = np.array([int(n.split("_")[1]) for n in names if n.startswith("Position_")])
    assert np.mean(positions % 2 == 0) > 0.8


@pytest.mark.shared_data
def test_prepare_nottingham_full(shared_datasets, tmp_path):
    cfg = load_config("nottingham", [f"data.sources=[{{kind: nottingham, path: '{shared_datasets / 'nottingham'}'}}]",
                                     f"data.output={tmp_path / 'n'}", "data.workers=2"])
    summary = prepare(cfg, progress=False).as_dict()
    assert summary["files_read"] == 1034
    kept = sum(c["pieces"] for c in summary["splits"].values())
    assert kept + summary["skipped"] == 1034 and kept > 1000
    assert summary["skipped_by_reason"].keys() <= {"duplicate", "too few notes", "shorter than one window"}
    pieces = [p for s in ("train", "valid", "test") for p in ShardSet(tmp_path / "n").split(s).pieces()]
    signatures = Counter(p["tags"].get("key_signature") for p in pieces)
    assert signatures["1#"] > 300 and signatures["2#"] > 300 and signatures[None] == 0  # G and D tunes lead

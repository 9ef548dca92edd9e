"""Issue 14, item 2: key apart from content. ``augment.key: canonical`` moves every piece to C major / A minor by
the key heard in all of it (``midistruct.tokens.key``), for training and for every piece a model encodes; the
latents keep the shift and decoding undoes it, so the music comes back in its own key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from midistruct.config import ConfigError, load_config
from midistruct.evaluation.statistics import sample_statistics
from midistruct.evaluation.tag_control import _real_keys, control, fit_judge
from midistruct.generation.latents import PieceLatents
from midistruct.generation.pipeline import InputError, MidiStruct
from midistruct.prepare import prepare
from midistruct.shards.dataset import WindowDataset, piece_shifts
from midistruct.shards.reader import ShardSet
from midistruct.tags import PITCH_CLASSES
from midistruct.tokens.key import canonical_key_of, canonical_shift, fitted_shift, key_of, to_canonical
from midistruct.tokens.encode import PieceEncoder
from midistruct.tokens.remi import RemiVocab
from midistruct.tokens.tokenizer import build_tokenizer
from midistruct.tokens.validate import load_score
from midistruct.training.finetune import open_init, train_config
from midistruct.training.loop import Trainer
from scores import make_key_score

KEYS = [(2, "major"), (7, "major"), (4, "minor"), (11, "minor"), (5, "major"), (0, "minor")]


def test_canonical_shift_takes_the_nearer_way_to_c_major_or_a_minor():
    assert canonical_shift((0, "major")) == 0 and canonical_shift((9, "minor")) == 0
    assert canonical_shift((2, "major")) == -2  # D -> C
    assert canonical_shift((7, "major")) == 5  # G -> C up a fourth, not down a fifth
    assert canonical_shift((4, "minor")) == 5  # E minor -> A minor
    assert canonical_shift((11, "minor")) == -2  # B minor -> A minor
    assert canonical_shift((6, "major")) == -6 and canonical_shift(None) == 0
    assert all(-6 <= canonical_shift((t, m)) <= 5 for t in range(12) for m in ("major", "minor"))


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    """Twelve 8-bar melodies, two in each of six keys, prepared into 2-bar windows; and a tiny model trained two
    steps on them with ``augment.key: canonical``."""
    root = tmp_path_factory.mktemp("keyed")
    (root / "midi").mkdir()
    rows = ["path,key"]
    for i, (tonic, mode) in enumerate(KEYS * 2):
        name = f"tune{i:02d}_{tonic}{mode}.mid"
        make_key_score(tonic, mode, seed=i).dump_midi(str(root / "midi" / name))
        rows.append(f"{name},{PITCH_CLASSES[tonic]} {mode}")
    (root / "tags.csv").write_text("\n".join(rows) + "\n")
    source = f"{{kind: folder, path: '{root / 'midi'}', tags: '{root / 'tags.csv'}'}}"
    cfg = load_config("tiny", [f"data.sources=[{source}]",
                               f"data.output={root / 'data'}", f"train.run_dir={root / 'run'}", "train.threads=1",
                               "segments.bars=2", "splits.valid=0.2", "splits.test=0", "augment.key=canonical",
                               "train.max_steps=2", "train.eval_every=2", "train.save_every=2"])
    prepare(cfg, progress=False)
    Trainer(cfg, progress=False).run()
    return root


def _piece_key(ds: WindowDataset, piece: int):
    rows = np.flatnonzero(ds.arrays[0].windows[:, 2] == piece)
    return key_of([ds[int(i)]["input_ids"][:-1].numpy() for i in rows], ds.vocab)


def test_key_finder_hears_each_synthetic_key(keyed):
    arrays = ShardSet(keyed / "data").split("train")
    vocab = RemiVocab(ShardSet(keyed / "data").tokenizer())
    for p, record in enumerate(arrays.pieces()):
        rows = np.flatnonzero(arrays.windows[:, 2] == p)
        tonic, mode = (int(record["id"].split("_")[1][:-5]), record["id"][-5:])
        assert key_of([arrays.window(int(i))[0] for i in rows], vocab) == (tonic, mode), record["id"]


def test_dataset_reads_every_piece_in_c_major_or_a_minor(keyed):
    absolute = WindowDataset([keyed / "data"], "train")
    canonical = WindowDataset([keyed / "data"], "train", key="canonical")
    pieces = canonical.arrays[0].pieces()
    assert len(pieces) >= 6
    for p, record in enumerate(pieces):
        key = _piece_key(canonical, p)
        assert key in ((0, "major"), (9, "minor")), (record["id"], key)
        assert key[1] == record["id"][-5:]  # the mode is kept
    # the move is one shift per piece, the same as piece_shifts says, and changes only pitches
    shifts = piece_shifts(canonical.arrays[0], canonical.vocab)
    for i in range(len(canonical)):
        piece = int(canonical.arrays[0].windows[i][2])
        a, c = absolute[i]["input_ids"].numpy(), canonical[i]["input_ids"].numpy()
        assert np.array_equal(canonical.vocab.shift_pitches(a[:-1], int(shifts[piece])), c[:-1])
    assert set(shifts.tolist()) - {0}  # the keys were not all C major / A minor already


def test_canonical_refuses_random_transposition():
    with pytest.raises(ConfigError, match="key: canonical"):
        load_config("tiny", ["augment.key=canonical", "augment.transpose=[-5,6]"])


def test_fitted_shift_stays_in_range(keyed):
    vocab = RemiVocab(ShardSet(keyed / "data").tokenizer())
    top = vocab.shift_pitches(np.asarray([vocab.bar_id, vocab._id["Pitch_60"]]), 0)
    high = int(np.flatnonzero(vocab._pitch_id >= 0)[-1])
    window = top.copy()
    window[1] = vocab._pitch_id[high - 1]  # one semitone under the top of the range
    assert fitted_shift([window], 5, vocab) == -7  # up a fourth leaves the range: down a fifth instead
    assert fitted_shift([window], 1, vocab) == 1
    # folding: a note that would leave the range moves by an octave more, the others as asked
    low = int(np.flatnonzero(vocab._pitch_id >= 0)[0])
    both = np.asarray([vocab.bar_id, vocab._pitch_id[high - 1], vocab._pitch_id[low + 1], vocab._pitch_id[60]])
    moved = vocab.pitch_of[vocab.shift_pitches(both, 5, fold=True)][1:]
    assert moved.tolist() == [high - 1 + 5 - 12, low + 1 + 5, 65]
    moved = vocab.pitch_of[vocab.shift_pitches(both, -5, fold=True)][1:]
    assert moved.tolist() == [high - 1 - 5, low + 1 - 5 + 12, 55]


def test_a_canonical_model_encodes_in_c_and_decodes_back(keyed):
    ms = MidiStruct.from_pretrained(keyed / "run" / "last")
    assert ms.canonical
    d_major = make_key_score(2, "major", bars=4, seed=99)
    windows = ms.windows(d_major)
    moved, shifts = ms.to_model_key(windows)
    assert shifts == [-2] * len(windows)
    assert key_of(moved, ms.vocab) == (0, "major")
    z = ms.encode(d_major)
    assert z.shifts == [-2] * len(z)
    # decoding moves the model's output back by the shift: the same greedy tokens, 2 semitones up
    plain = ms.generate_tokens(PieceLatents(z.z_bar, z.z_segment, z.bars, z.time_signatures, z.tempo))
    back = ms.generate_tokens(z)
    for p, b in zip(plain, back):
        assert np.array_equal(ms.vocab.shift_pitches(np.asarray(p), 2, fold=True), b)
    # explicit shifts per window (windows of several pieces): each window moved by its own
    moved, fitted = ms.to_model_key(windows[:2], [5, -3])
    assert fitted == [5, -3]
    assert np.array_equal(moved[1], ms.vocab.shift_pitches(windows[1], -3))
    # latents files keep the shifts
    path = z.save(keyed / "z.npz")
    assert PieceLatents.load(path).shifts == z.shifts


def test_samples_move_from_their_canonical_tonic(keyed):
    """`in_tonic` moves what a canonical model wrote from C (a major key asked) or A (a minor key asked) to the
    tonic asked; for a tonic alone, from C or A by which of C major and A minor the notes are nearer."""
    ms = MidiStruct.from_pretrained(keyed / "run" / "last")
    c_major = ms.windows(make_key_score(0, "major", bars=2, seed=5))[0]
    a_minor = ms.windows(make_key_score(9, "minor", bars=2, seed=6))[0]
    assert canonical_key_of([c_major], ms.vocab) == (0, "major")
    assert canonical_key_of([a_minor], ms.vocab) == (9, "minor")
    assert canonical_key_of([c_major[:1]], ms.vocab) is None  # no notes

    def step(before, after):
        pitches = ms.vocab.pitch_of[before] >= 0
        found = set((ms.vocab.pitch_of[np.asarray(after)] - ms.vocab.pitch_of[before])[pitches] % 12)
        assert len(found) == 1
        return found.pop()

    assert step(c_major, ms.in_tonic(c_major, (7, "major"))) == 7  # C major -> G major
    assert key_of([np.asarray(ms.in_tonic(c_major, (7, "major")))], ms.vocab) == (7, "major")
    assert step(a_minor, ms.in_tonic(a_minor, (7, "minor"))) == 10  # A minor -> G minor
    assert step(a_minor, ms.in_tonic(a_minor, (2, None))) == 5  # heard as A minor: A -> D
    assert step(c_major, ms.in_tonic(c_major, (2, None))) == 2  # heard as C major: C -> D
    # a minor key asked of notes written in C major moves them from A all the same: the mode is the codes' job
    assert step(c_major, ms.in_tonic(c_major, (7, "minor"))) == 10
    assert ms.sample_tonic({"key": "G minor", "tune_type": "jig"}) == ({"tune_type": "jig"}, (7, "minor"))
    assert ms.sample_tonic({"tonic": "Eb"}) == ({}, (3, None))
    assert ms.sample_tonic({"tonic": "Eb", "mode": "minor"}) == ({"mode": "minor"}, (3, "minor"))


def test_an_absolute_model_keeps_no_shift(checkpoint):
    ms = MidiStruct.from_pretrained(checkpoint)
    assert not ms.canonical
    z = ms.encode(make_key_score(2, "major", bars=4, seed=1))
    assert z.shifts == [] and z.window_shifts() == [0] * len(z)


def test_prior_fitted_on_canonical_codes(keyed):
    ms = MidiStruct.from_pretrained(keyed / "run" / "last")
    arrays = ShardSet(keyed / "data").split("train")
    ids = [p["id"] for p in arrays.pieces()]
    shifts = ms.corpus_shifts(keyed / "data", "train", ids)
    assert shifts == piece_shifts(arrays, ms.vocab).tolist()
    prior = ms.fit_prior(keyed / "data", windows=200, rank=4, tags=("tonic", "key", "mode"), min_tag_windows=1)
    assert "mode" in prior.tags and not {"tonic", "key"} & set(prior.tags)  # the codes hold no key
    assert torch.isfinite(ms.sample_latents(2).z_bar).all()
    # a tonic is reached by transposing each sample: the same codes as untagged samples, the notes moved from
    # the canonical tonic (C or A, whichever key the sample is nearer) to the tonic asked
    plain = [ms.piece_encoder.tokenize(s) for s in ms.sample(3, seed=0, temperature=0.0)]
    for tonic, tags in ((2, {"tonic": "D"}), (11, {"tonic": "B"})):
        for ids, score in zip(plain, ms.sample(3, tags=tags, seed=0, temperature=0.0)):
            moved = ms.piece_encoder.tokenize(score)
            if not ms.vocab.count_notes(ids):
                continue
            source = canonical_key_of([ids], ms.vocab)[0]
            step = (ms.vocab.pitch_of[moved] - ms.vocab.pitch_of[ids])[ms.vocab.pitch_of[ids] >= 0]
            assert len(moved) == len(ids) and set(step % 12) == {(tonic - source) % 12}, tags
    with pytest.raises(InputError, match="names no key"):
        ms.sample(1, tags={"tonic": "H"})
    # statistics of samples against real windows: each sample is moved to its reference window's key
    asked = []  # the prior scale and the nucleus reach the draw and the decoder
    draw, decode = ms.sample_latents, ms.generate_tokens
    ms.sample_latents = lambda n, **kw: asked.append(("scale", kw.get("scale"))) or draw(n, **kw)
    ms.generate_tokens = lambda z, **kw: asked.append(("top_p", kw.get("top_p"))) or decode(z, **kw)
    found = sample_statistics(ms, keyed / "data", n=8, split="train", temperature=1.0, prior_scale=0.5, top_p=0.9)
    del ms.sample_latents, ms.generate_tokens
    assert asked == [("scale", 0.5), ("top_p", 0.9)] and (found["prior_scale"], found["top_p"]) == (0.5, 0.9)
    assert 0.0 <= found["scale_consistency.generated_mean"] <= 1.0
    assert found["scale_consistency.reference_mean"] == pytest.approx(1.0)  # the tunes keep to their scales


@pytest.mark.shared_data
def test_real_tunes_move_to_c_major_or_a_minor(shared_datasets, tmp_path):
    files = sorted((shared_datasets / "nottingham" / "midi" / "melody").glob("*.mid"))[:12]
    assert files, "no Nottingham melodies found"
    cfg = load_config("tiny", [f"data.sources=[{{kind: folder, path: '{files[0].parent}'}}]", "segments.bars=2"])
    encoder = PieceEncoder(cfg, build_tokenizer(cfg.tokenizer))
    ms_vocab = encoder.vocab
    moved_any = 0
    for path in files:
        ids = encoder.tokenize(load_score(path))
        before = key_of([ids], ms_vocab)
        moved, shift = to_canonical([ids], ms_vocab)
        after = key_of(moved, ms_vocab)
        assert after in ((0, "major"), (9, "minor")), (path.name, before, shift)
        assert after[1] == before[1]
        assert np.array_equal(ms_vocab.shift_pitches(moved[0], -shift), ids)  # nothing but the pitches moved
        moved_any += shift != 0
    assert moved_any >= 6  # most of these tunes are not in C major / A minor


def test_tonic_control_of_a_canonical_model(keyed, checkpoint):
    """tag_control asks a canonical model for a tonic the way `sample --tag` does (transposing its samples; its
    prior keeps no tonic), and reports a share for each tonic judged."""
    ms = MidiStruct.from_pretrained(keyed / "run" / "last")
    ms.fit_prior(keyed / "data", windows=200, rank=4, tags=("mode",), min_tag_windows=1)
    arrays = ShardSet(keyed / "data").split("train")
    windows = [arrays.window(i)[0] for i in range(arrays.n_windows)]
    tonics = [PITCH_CLASSES[int(arrays.pieces()[int(arrays.windows[i][2])]["id"].split("_")[1][:-5])]
              for i in range(arrays.n_windows)]
    values = sorted(set(tonics), key=tonics.count)[-2:]  # the two tonics with the most training windows
    judge = fit_judge(ms, windows, tonics, values)
    held_out = [(w, t) for w, t in zip(windows, tonics) if t in values]
    found = control(ms, judge, "tonic", held_out=held_out, n=6, temperature=1.0)
    assert set(found["values"]) == set(values)
    for value in values:
        assert 0.0 <= found["values"][value]["controlled"] <= 1.0
    # samples asked for another tag are judged in the keys of real windows of that value, not in C major / A minor
    keys = _real_keys(ms, held_out, seed=0)
    own = dict(zip(range(len(held_out)), ms.own_key_shifts([w for w, _ in held_out])))
    for value in values:
        z = keys(ms.sample_latents(8), value)
        assert len(z.shifts) == 8 and set(z.shifts) <= {own[i] for i, (_, v) in enumerate(held_out) if v == value}
    assert _real_keys(MidiStruct.from_pretrained(checkpoint), held_out, seed=0)(z, None) is z  # absolute: as it is


def test_fine_tuning_keeps_the_checkpoints_key(keyed, checkpoint):
    """``train --init`` reads pitch as the checkpoint learnt to: a canonical model stays canonical (without random
    transposition) under a config that asks otherwise, an absolute one stays absolute, and the note says so."""
    cfg, ignored = train_config(load_config("tiny", ["augment.transpose=[-5,6]"]), open_init(keyed / "run" / "last"))
    assert cfg.augment.key == "canonical" and cfg.augment.transpose == (0, 0)
    assert any(n.startswith("augment.key='absolute'") for n in ignored)
    assert any(n.startswith("augment.transpose=[-5, 6]") for n in ignored)
    cfg, ignored = train_config(load_config("tiny", ["augment.key=canonical"]), open_init(checkpoint))
    assert cfg.augment.key == "absolute" and any(n.startswith("augment.key='canonical'") for n in ignored)


def test_a_tonic_tag_transposes_the_inputs_of_a_canonical_model(keyed, tmp_path):
    """`reconstruct`, `interpolate` and `continue --tag tonic=E` on a model that reads a canonical key: the notes
    are moved to E before encoding, so the shift beside the codes is E major's (-4) and the primer comes back in E."""
    ms = MidiStruct.from_pretrained(keyed / "run" / "last")
    d_major, g_major = tmp_path / "d.mid", tmp_path / "g.mid"
    make_key_score(2, "major", bars=4, seed=5).dump_midi(str(d_major))
    make_key_score(7, "major", bars=4, seed=6).dump_midi(str(g_major))
    za, zb = ms._aligned([d_major, g_major], tags={"tonic": "E"})
    assert set(za.shifts) == {-4} and set(zb.shifts) == {-4}
    assert set(ms.encode(d_major).shifts) == {-2}  # without the tag, D major's own
    out = ms.continue_(d_major, 2, tags={"tonic": "E"}, seed=0)
    primer = sorted(n.pitch for n in load_score(d_major).tracks[0].notes[:8])
    continued = sorted(n.pitch for n in out.tracks[0].notes[:8])
    assert continued == [p + 2 for p in primer]
    assert len(ms.interpolate(d_major, g_major, 2, tags={"tonic": "E"})) == 2
    assert len(ms.reconstruct(d_major, tags={"key": "E major"}).tracks) == 1


def test_tags_command_says_a_canonical_model_takes_any_tonic(keyed, tmp_path, capsys):
    import shutil

    from midistruct.cli import main
    from midistruct.model.prior import PRIOR_FILE

    folder = Path(shutil.copytree(keyed / "run" / "last", tmp_path / "model"))
    ms = MidiStruct.from_pretrained(folder)
    ms.fit_prior(keyed / "data", windows=200, rank=4, tags=("mode",), min_tag_windows=1).save(folder / PRIOR_FILE)
    assert main(["tags", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "mode: " in out and "tonic, key: any" in out
    # the command line takes the tonic too (its meter is chosen without it): the samples of `--tag mode=major`,
    # moved from C (their canonical tonic in a major key) to E (greedy, so the same notes either way)
    for name, tags in (("plain", ["--tag", "mode=major"]), ("in_e", ["--tag", "tonic=E", "--tag", "mode=major"])):
        assert main(["sample", str(folder), "-n", "3", *tags, "--seed", "0", "--temperature", "0",
                     "-o", str(tmp_path / name), "--device", "cpu"]) == 0
    files = sorted((tmp_path / "plain").glob("*.mid"))
    assert len(files) == 3
    for path in files:
        ids = ms.piece_encoder.tokenize(load_score(path))
        moved = ms.piece_encoder.tokenize(load_score(tmp_path / "in_e" / path.name))
        if ms.vocab.count_notes(ids):
            notes = ms.vocab.pitch_of[ids] >= 0
            step = set((ms.vocab.pitch_of[moved] - ms.vocab.pitch_of[ids])[notes] % 12)
            assert step == {4}, path.name  # from C: a major key is written in C major


def test_the_checkpoint_says_how_it_reads_pitch(keyed, checkpoint):
    """`evaluate`, the peer's `evaluate-main` and `tags` read the key mode from the checkpoint; one from before the
    option reads pitches as written."""
    import json

    from midistruct.model.checkpoint import META_FILE, key_mode

    assert key_mode(json.loads((keyed / "run" / "last" / META_FILE).read_text())) == "canonical"
    assert key_mode(json.loads((checkpoint / META_FILE).read_text())) == "absolute"
    assert key_mode({"run_config": {"augment": {"transpose": [-5, 6]}}}) == "absolute"


def test_the_swap_measure_reads_each_window_in_its_own_key(keyed, monkeypatch):
    """`evaluation.blocks` scores windows of many pieces: a canonical model moves each by its own key (read as one
    piece, windows in D and G would share one key)."""
    from midistruct.evaluation.blocks import measure_reconstruction, measure_swaps

    ms = MidiStruct.from_pretrained(keyed / "run" / "last")
    d_major = ms.windows(make_key_score(2, "major", bars=2, seed=3))[0]
    g_major = ms.windows(make_key_score(7, "major", bars=2, seed=4))[0]
    assert ms.own_key_shifts([d_major, g_major]) == [-2, 5]
    encoded, encode = [], ms.encode_windows

    def recording(windows, **kw):
        z = encode(windows, **kw)
        encoded.append(z.shifts)
        return z

    monkeypatch.setattr(ms, "encode_windows", recording)
    monkeypatch.setattr(ms, "blocks", lambda: {"arrangement": slice(0, 4)})
    measure_reconstruction(ms, [d_major, g_major])
    assert encoded == [[-2, 5]]
    measure_swaps(ms, [(d_major, g_major), (g_major, d_major)])
    assert encoded[1:] == [[-2, 5], [5, -2]]

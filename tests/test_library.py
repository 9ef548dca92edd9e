"""A library of pieces and a radio (issue 17, midistruct.library): the histogram baseline, embedding a folder
with its content-hash cache and skipped files, exact nearest neighbours, the radio's ordering, the CLI, and
real Nottingham tunes embedded with the shipped model."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import torch
import pytest
import symusic
from scores import make_score

from midistruct.cli import main
from midistruct.library import LibraryError
from midistruct.library.features import PieceCodes, file_key, histogram, histogram_features, score_key
from midistruct.library.radio import radio
from midistruct.library.search import Space
from midistruct.library.store import Library, embed_folder
from midistruct.tokens.key import signature_closeness, signature_of

TPQ = 480


def scale_piece(pitches, *, duration=1.0, bars=4) -> symusic.Score:
    """4/4, one note per beat cycling through ``pitches``, each ``duration`` quarters long."""
    score = symusic.Score(TPQ)
    score.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    track = symusic.Track(name="melody", program=0)
    step = int(duration * TPQ)
    for i, t in enumerate(range(0, bars * 4 * TPQ, step)):
        track.notes.append(symusic.Note(t, step, pitches[i % len(pitches)], 80))
    score.tracks.append(track)
    return score


# --------------------------------------------------------------------------- features


def test_histogram_weights_pitch_classes_by_duration_and_counts_durations():
    h = histogram(np.array([60, 72, 67]), np.array([1.0, 1.0, 2.0]))  # C, C, G; quarters, then a half note
    assert h.shape == (20,) and h[:12].sum() == pytest.approx(1) and h[12:].sum() == pytest.approx(1)
    assert h[0] == pytest.approx(0.5) and h[7] == pytest.approx(0.5)  # C 2 quarters, G a half: equal weight
    assert h[12 + 3] == pytest.approx(2 / 3) and h[12 + 4] == pytest.approx(1 / 3)  # bins (0.75,1.5], (1.5,3]


def test_histogram_features_give_one_vector_per_bar(tmp_path):
    path = tmp_path / "c.mid"
    scale_piece([60, 62, 64, 65], bars=3).dump_midi(str(path))
    piece = histogram_features()(path)
    assert piece.vector.shape == (20,) and piece.bars.shape == (3, 20)
    assert piece.bars[0, [0, 2, 4, 5]] == pytest.approx([0.25] * 4)


def test_histogram_features_refuse_a_file_that_is_not_midi(tmp_path):
    from midistruct.generation.pipeline import InputError

    bad = tmp_path / "bad.mid"
    bad.write_text("not midi")
    with pytest.raises(InputError, match="bad.mid"):
        histogram_features()(bad)


# --------------------------------------------------------------------------- store


def folder_of(tmp_path, n=4):
    folder = tmp_path / "lib"
    (folder / "sub").mkdir(parents=True)
    for i in range(n):
        target = folder / ("sub" if i % 2 else "") / f"p{i}.mid"
        scale_piece([60 + i, 64 + i, 67 + i], bars=2 + i).dump_midi(str(target))
    return folder


def counting(encode):
    calls = []
    return (lambda path: calls.append(path.name) or encode(path)), calls


def test_embed_caches_by_content_and_lists_bad_files(tmp_path):
    folder = folder_of(tmp_path)
    (folder / "broken.mid").write_bytes(b"MThd garbage")
    encode, calls = counting(histogram_features())
    first = embed_folder(folder, encode, model="none", features="histogram", progress=False)
    assert first.paths == ["p0.mid", "p2.mid", "sub/p1.mid", "sub/p3.mid"] and len(calls) == 5
    assert list(first.skipped) == ["broken.mid"] and "broken.mid" in first.skipped["broken.mid"]
    assert first.vectors.shape == (4, 20) and [len(first.piece_bars(i)) for i in range(4)] == [2, 4, 3, 5]
    saved = Library.load(first.save(tmp_path / "lib.npz"))
    np.testing.assert_array_equal(saved.vectors, first.vectors)
    np.testing.assert_allclose(saved.bars, first.bars, rtol=1e-3, atol=1e-4)  # kept in float16
    assert saved.bars.dtype == np.float32
    assert saved.paths == first.paths and saved.hashes == first.hashes and saved.skipped == first.skipped
    # the folder grows and a file moves: only the new file is encoded (the broken one is tried again)
    (folder / "sub" / "p1.mid").rename(folder / "moved.mid")
    scale_piece([70, 71], bars=2).dump_midi(str(folder / "new.mid"))
    calls.clear()
    second = embed_folder(folder, encode, model="none", features="histogram", previous=saved, progress=False)
    assert sorted(calls) == ["broken.mid", "new.mid"] and second.encoded == 1 and len(second) == 5
    np.testing.assert_array_equal(second.vectors[second.index_of("moved.mid")], first.vectors[2])
    # another model's library is not reused
    calls.clear()
    embed_folder(folder, encode, model="other@abc", features="histogram", previous=saved, progress=False)
    assert len(calls) == 6


def test_embed_saves_as_it_goes(tmp_path):
    folder = folder_of(tmp_path, n=5)
    saved = []
    embed_folder(folder, histogram_features(), model="none", features="histogram", progress=False,
                 save=lambda lib: saved.append(len(lib)), save_every=2)
    assert saved == [2, 4]


def test_embed_refuses_an_empty_or_hopeless_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LibraryError, match="no MIDI files"):
        embed_folder(tmp_path / "empty", histogram_features(), model="none", features="histogram")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.mid").write_text("nope")
    with pytest.raises(LibraryError, match="none of 1 MIDI files"):
        embed_folder(tmp_path / "bad", histogram_features(), model="none", features="histogram", progress=False)


def test_load_refuses_a_file_that_is_not_a_library(tmp_path):
    other = tmp_path / "z.npz"
    np.savez(other, z=np.zeros(3))
    with pytest.raises(LibraryError, match="not a library written by `midistruct embed`"):
        Library.load(other)
    with pytest.raises(LibraryError, match="ends in .npz"):
        Library("r", "none", "histogram", [], [], np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(1)).save(
            tmp_path / "x.json")


# --------------------------------------------------------------------------- search and radio


def test_nearest_is_exact_cosine_after_standardising():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(200, 8)).astype(np.float32)
    space = Space(vectors)
    query = vectors[17] + 0.01
    found = space.nearest(query, k=5, exclude={3})
    expect = np.argsort(-space.similarity(query))
    assert [i for i, _ in found] == [i for i in expect if i != 3][:5] and found[0][0] == 17
    assert all(a[1] >= b[1] for a, b in zip(found, found[1:]))
    assert len(space.nearest(query, k=500)) == 200


def chain_library(n=6, dim=4):
    """Pieces whose whole vectors are equally like the seed, but piece i ends the way piece i+1 starts
    (a one-hot "key" at each end), shuffled; the seed ends the way piece 0 starts."""
    keys = np.eye(n + 1, dtype=np.float32)
    order = [3, 0, 5, 1, 4, 2]
    bars = [np.stack([keys[i], keys[i], keys[i + 1], keys[i + 1]]) for i in order]
    vectors = np.stack([np.r_[np.ones(dim), 0.01 * np.eye(n)[k]] for k in order]).astype(np.float32)
    library = Library("root", "none", "histogram", [f"piece{i}.mid" for i in order], [str(i) for i in order],
                      vectors, np.concatenate(bars), np.cumsum([0, *(len(b) for b in bars)]))
    seed = PieceCodes(np.r_[np.ones(dim), np.zeros(n)].astype(np.float32), np.stack([keys[n], keys[0]]))
    return library, seed


def test_radio_follows_the_transitions_when_smoothness_is_one():
    library, seed = chain_library()
    steps = radio(library, seed, n=6, smoothness=1.0, edge_bars=1)
    assert [s.path for s in steps] == [f"piece{i}.mid" for i in range(6)]
    assert [s.transition for s in steps[1:]] == pytest.approx([max(s.transition for s in steps)] * 5)
    assert len({s.path for s in steps}) == 6  # nothing twice


def test_radio_ranks_by_likeness_when_smoothness_is_zero_and_respects_n_and_exclude():
    library, seed = chain_library()
    steps = radio(library, seed, n=3, smoothness=0.0, exclude={library.index_of("piece0.mid")})
    sims = [s.similarity for s in steps]
    assert len(steps) == 3 and sims == sorted(sims, reverse=True) and "piece0.mid" not in [s.path for s in steps]
    with pytest.raises(LibraryError, match="smoothness must be between 0 and 1"):
        radio(library, seed, smoothness=2)


def test_key_signatures_and_their_closeness_on_the_circle_of_fifths():
    assert signature_of((2, "major")) == signature_of((11, "minor")) == 2  # D major, B minor: two sharps
    assert signature_of((9, "minor")) == 0 and signature_of(None) == -1
    close = signature_closeness
    assert close(0, 0) == pytest.approx(1.0) and close(0, 7) == pytest.approx(np.cos(np.pi / 6))  # C, G: a sharp
    assert close(0, 5) == pytest.approx(np.cos(np.pi / 6)) and close(0, 2) == pytest.approx(0.5)  # F; D: two
    assert close(0, 6) == pytest.approx(-1.0) and close(3, -1) == 0.0  # F# is furthest; unknown: nothing
    assert close(0, np.array([0, 7, 6])).tolist() == pytest.approx([1.0, np.cos(np.pi / 6), -1.0])


def test_pieces_carry_the_key_signature_the_finder_hears(tmp_path):
    d_major = scale_piece([62, 66, 69, 74, 62, 64, 66, 67, 69, 71, 73, 74])  # D major triad and scale
    assert score_key(d_major) == 2
    d_major.dump_midi(str(tmp_path / "d.mid"))
    assert file_key(tmp_path / "d.mid") == 2 and file_key(tmp_path / "d.mid", tracks="drums") == -1
    assert histogram_features()(tmp_path / "d.mid").key == 2
    empty = symusic.Score(TPQ)
    assert score_key(empty) == -1


def test_libraries_keep_keys_and_read_them_for_pieces_embedded_before(tmp_path):
    folder = folder_of(tmp_path)  # scales on C, C#, D, D# major triads
    lib = embed_folder(folder, histogram_features(), model="none", features="histogram", progress=False)
    assert lib.keys.tolist() == [0, 2, 1, 3]  # p0, p2, sub/p1, sub/p3
    saved = Library.load(lib.save(tmp_path / "lib.npz"))
    assert saved.keys.tolist() == lib.keys.tolist()
    # a library saved before keys: loads without them, and a second embed reads them from the files
    old = tmp_path / "old.npz"
    with np.load(tmp_path / "lib.npz") as f:
        np.savez(old, **{k: f[k] for k in f.files if k != "keys"})
    assert Library.load(old).keys is None
    encode, calls = counting(histogram_features())
    again = embed_folder(folder, encode, model="none", features="histogram", previous=Library.load(old),
                         progress=False)
    assert calls == [] and again.keys.tolist() == lib.keys.tolist()


def test_the_radio_weighs_key_signatures_beside_the_codes():
    """Equal codes everywhere: with a key weight the radio starts with the seed's own key signature and walks the
    circle of fifths one step at a time; without one the keys change nothing; a library without keys ignores it."""
    n = 6
    order = [6, 1, 0, 7, 2, 4]  # F# (the furthest from C), C#, C, G, D, E
    vectors = np.ones((n, 3), dtype=np.float32) + 1e-3 * np.random.default_rng(0).normal(size=(n, 3)).astype(np.float32)
    bars = np.ones((2 * n, 2), dtype=np.float32)
    library = Library("root", "none", "histogram", [f"k{k}.mid" for k in order], [str(k) for k in order], vectors,
                      bars, np.arange(0, 2 * n + 1, 2), keys=np.array(order))
    seed = PieceCodes(np.ones(3, dtype=np.float32), np.ones((2, 2), dtype=np.float32), key=0)
    steps = radio(library, seed, n=3, smoothness=1.0, edge_bars=1, key_weight=0.5)
    assert [s.path for s in steps] == ["k0.mid", "k7.mid", "k2.mid"]  # C, then G (one sharp), then D
    assert [s.key for s in steps] == pytest.approx([1.0, np.cos(np.pi / 6), np.cos(np.pi / 6)])
    plain = radio(library, seed, n=6, smoothness=1.0, edge_bars=1, key_weight=0.0)
    assert [s.score for s in plain] == pytest.approx([plain[0].score] * 6)  # the keys change nothing
    library.keys = None
    assert [s.key for s in radio(library, seed, n=3, key_weight=0.5)] == [0.0] * 3
    with pytest.raises(LibraryError, match="key_weight must be between 0 and 1"):
        radio(library, seed, key_weight=1.5)


# --------------------------------------------------------------------------- command line


def test_embed_and_radio_commands_with_histograms(tmp_path, capsys):
    folder = folder_of(tmp_path)
    lib = tmp_path / "lib.npz"
    assert main(["embed", str(folder), "-o", str(lib), "--quiet"]) == 0
    assert "4 pieces (4 encoded, 0 from the cache), 0 skipped" in capsys.readouterr().out
    assert main(["embed", str(folder), "-o", str(lib), "--quiet"]) == 0
    assert "4 pieces (0 encoded, 4 from the cache)" in capsys.readouterr().out
    out = tmp_path / "play" / "radio"
    assert main(["radio", str(folder / "p0.mid"), "--library", str(lib), "-n", "2", "-o", str(out)]) == 0
    playlist = json.loads(out.with_suffix(".json").read_text())
    assert len(playlist["playlist"]) == 2 and "p0.mid" not in [s["path"] for s in playlist["playlist"]]
    m3u = out.with_suffix(".m3u").read_text().splitlines()
    assert m3u[0] == "#EXTM3U" and all((folder / s["path"]).resolve().as_posix() in m3u
                                       for s in playlist["playlist"])


def test_radio_refuses_a_library_of_another_model(checkpoint, tmp_path, capsys):
    folder = folder_of(tmp_path)
    lib = tmp_path / "lib.npz"
    assert main(["embed", str(folder), "-o", str(lib), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["radio", str(checkpoint), str(folder / "p0.mid"), "--library", str(lib), "--device", "cpu"]) == 2
    assert "holds histogram features, made without a model" in capsys.readouterr().err
    assert main(["embed", str(tmp_path / "nowhere"), "-o", str(lib)]) == 2
    assert "not a folder" in capsys.readouterr().err


def embedded_with(checkpoint, tmp_path):
    """Three synthetic 4-bar pieces in tmp_path/midi embedded with ``checkpoint``: (folder, library file)."""
    folder = tmp_path / "midi"
    folder.mkdir()
    for i in range(3):
        make_score((4, 4), bars=4, seed=i).dump_midi(str(folder / f"s{i}.mid"))
    lib = tmp_path / "codes.npz"
    assert main(["embed", str(checkpoint), str(folder), "-o", str(lib), "--quiet", "--device", "cpu"]) == 0
    return folder, lib


def test_embed_with_a_model_and_its_cache(checkpoint, tmp_path, capsys):
    folder, lib = embedded_with(checkpoint, tmp_path)
    library = Library.load(lib)
    assert library.features == "codes" and re.fullmatch(r".+@[0-9a-f]{12}", library.model) and len(library) == 3
    assert library.vectors.shape[1] > library.bars.shape[1] and len(library.piece_bars(0)) == 4
    capsys.readouterr()
    assert main(["radio", str(checkpoint), str(folder / "s0.mid"), "--library", str(lib), "-n", "5",
                 "-o", str(tmp_path / "r"), "--device", "cpu"]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["playlist"][0]["path"] in ("s1.mid", "s2.mid")


# --------------------------------------------------------------------------- real music


def jigs_and_reels(shared_datasets, tmp_path):
    """A folder of Nottingham's first 20 jigs and 20 reels (A-C)."""
    melody = shared_datasets / "nottingham" / "midi" / "melody"
    folder = tmp_path / "tunes"
    folder.mkdir()
    for kind in ("jigs", "reelsa-c"):
        for i in range(1, 21):
            shutil.copy(melody / f"{kind}{i}.mid", folder / f"{kind}{i}.mid")
    return folder


@pytest.mark.shared_data
def test_shipped_codes_tell_jigs_from_reels_better_than_histograms(shared_datasets, tmp_path):
    """20 Nottingham jigs and 20 reels (cross-corpus for folk-2bar): leave-one-out 3-nearest-neighbour tune
    type. The codes must beat the histogram baseline and chance (0.5)."""
    folder = jigs_and_reels(shared_datasets, tmp_path)
    assert main(["embed", "folk-2bar", str(folder), "-o", str(tmp_path / "c.npz"), "--quiet", "--device", "cpu",
                 "--threads", "1"]) == 0
    assert main(["embed", str(folder), "-o", str(tmp_path / "h.npz"), "--quiet"]) == 0

    def accuracy(lib):
        labels = np.array([p.startswith("jigs") for p in lib.paths])
        space = Space(lib.vectors)
        hits = [(labels[[j for j, _ in space.nearest(lib.vectors[i], k=3, exclude={i})]].mean() > 0.5) == labels[i]
                for i in range(len(lib))]
        return float(np.mean(hits))

    codes, hist = accuracy(Library.load(tmp_path / "c.npz")), accuracy(Library.load(tmp_path / "h.npz"))
    print(f"3-NN tune type: codes {codes:.3f}, histogram {hist:.3f}")
    assert codes > max(hist, 0.75), (codes, hist)


# --------------------------------------------------------------------------- medley


def test_concatenate_starts_each_part_on_its_own_bar_line():
    from midistruct.library.medley import bar_end, concatenate

    a, b = scale_piece([60, 62], duration=1.0, bars=3), scale_piece([70], duration=0.5, bars=1)
    b = b.resample(960, min_dur=1)  # another resolution: brought to the first part's
    b.time_signatures[0] = symusic.TimeSignature(0, 3, 4)
    out = concatenate([a, b], names=["a", "b"])
    assert out.tpq == TPQ and bar_end(a) == 3 * 4 * TPQ
    assert [(m.time, m.text) for m in out.markers] == [(0, "a"), (3 * 4 * TPQ, "b")]
    assert [(s.time, s.numerator) for s in out.time_signatures] == [(0, 4), (3 * 4 * TPQ, 3)]
    notes = out.tracks[0].notes
    assert len(out.tracks) == 1 and len(notes) == 12 + len(b.tracks[0].notes)
    assert notes[12].time == 3 * 4 * TPQ and notes[12].pitch == 70 and notes[12].duration == TPQ // 2


def test_bridge_decodes_full_windows_between_two_pieces(checkpoint, tmp_path):
    from midistruct.generation.pipeline import InputError, MidiStruct

    ms = MidiStruct.from_pretrained(checkpoint)
    a, b = tmp_path / "a.mid", tmp_path / "b.mid"
    make_score((4, 4), bars=4, seed=1).dump_midi(str(a))
    make_score((3, 4), bars=4, seed=2).dump_midi(str(b))
    generated = []
    real = ms.decode
    ms.decode = lambda latents, **kw: generated.append(latents) or real(latents, **kw)
    ms.bridge(a, b, windows=3)
    (z,) = generated
    assert len(z) == 3 and z.bars == [ms.bars] * 3 and z.time_signatures == ["4/4", "4/4", "3/4"]
    za, zb = ms.encode(a), ms.encode(b)
    assert not torch.equal(z.z_segment[1], za.z_segment[-1]) and not torch.equal(z.z_segment[1], zb.z_segment[0])
    with pytest.raises(InputError, match="at least 1 window"):
        ms.bridge(a, b, windows=0)


def test_radio_writes_a_medley_with_a_model(checkpoint, tmp_path, capsys):
    folder, lib = embedded_with(checkpoint, tmp_path)
    out = tmp_path / "medley.mid"
    assert main(["radio", str(checkpoint), str(folder / "s0.mid"), "--library", str(lib), "-n", "2", "--quiet",
                 "-o", str(tmp_path / "r"), "--medley", str(out), "--device", "cpu"]) == 0
    score = symusic.Score(str(out))
    texts = [m.text for m in score.markers]
    played = [s["path"] for s in json.loads((tmp_path / "r.json").read_text())["playlist"]]
    assert texts == ["s0", f"bridge to {played[0][:-4]}", played[0][:-4], f"bridge to {played[1][:-4]}",
                     played[1][:-4]]
    originals = sum(len(t.notes) for p in ["s0.mid", *played] for t in symusic.Score(str(folder / p)).tracks)
    assert sum(len(t.notes) for t in score.tracks) >= originals  # every original note, plus what the bridges hold
    assert main(["embed", str(folder), "-o", str(tmp_path / "h.npz"), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["radio", str(folder / "s0.mid"), "--library", str(tmp_path / "h.npz"), "--medley", "m.mid"]) == 2
    assert "--medley needs a model" in capsys.readouterr().err


# --------------------------------------------------------------------------- playlists


def grouped_library(n_per_group=20, dim=16, signal=0.5, seed=0):
    """Two groups whose content vectors differ a little (``signal``) under noise; paths g{group}_{i}.mid."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(2, dim))
    vectors = np.concatenate([signal * centres[g] + rng.normal(size=(n_per_group, dim)) for g in (0, 1)])
    paths = [f"g{g}_{i}.mid" for g in (0, 1) for i in range(n_per_group)]
    bars = np.zeros((2 * n_per_group, 4), dtype=np.float32)
    return Library("root", "none", "histogram", paths, [f"h{i}" for i in range(len(paths))],
                   vectors.astype(np.float32), bars, np.arange(len(paths) + 1))


def test_read_playlists_matches_stems_names_paths_and_hashes(tmp_path):
    from midistruct.library.playlists import read_playlists

    library = grouped_library(n_per_group=3)
    text = "# mine\ng0_0 g0_1.mid h2\n\ng1_0.mid, g1_1 , unknown song\ng1_2\tnowhere\n"
    (tmp_path / "p.txt").write_text(text)
    lists = read_playlists(tmp_path / "p.txt", library)
    assert lists.lists == [[0, 1, 2], [3, 4]] and lists.unknown == ["unknown song", "nowhere"]
    (tmp_path / "none.txt").write_text("a b\nc\n")
    with pytest.raises(LibraryError, match="no playlist names two pieces of the library"):
        read_playlists(tmp_path / "none.txt", library)


def test_playlists_pull_their_pieces_together_and_reach_pieces_in_none():
    from midistruct.library.playlists import HybridSpace

    library = grouped_library()
    rng = np.random.default_rng(1)
    listed = {g: list(range(g * 20, g * 20 + 15)) for g in (0, 1)}  # the last 5 of each group in no playlist
    playlists = [list(rng.choice(listed[g], size=6, replace=False)) for g in (0, 1) for _ in range(40)]
    group = np.repeat([0, 1], 20)

    def knn_accuracy(space, rows):
        return np.mean([np.mean(group[[j for j, _ in space.nearest_unit(space.unit[i], k=5, exclude={i})]]
                                == group[i]) for i in rows])

    items = HybridSpace(library, playlists, weight=1.0)
    again = HybridSpace(library, playlists, weight=1.0)
    np.testing.assert_array_equal(items.unit, again.unit)  # one worker, a fixed seed: the same vectors
    content = Space(library.vectors)
    in_lists = [i for g in (0, 1) for i in listed[g]]
    in_none = [i for i in range(40) if i not in in_lists]
    assert items.seen.sum() == 30 and knn_accuracy(items, in_lists) > 0.95
    assert knn_accuracy(items, in_lists) > knn_accuracy(content, in_lists) + 0.2
    # pieces in no playlist get item vectors from their content: no worse than content alone
    assert knn_accuracy(items, in_none) >= knn_accuracy(content, in_none) - 0.05
    with pytest.raises(LibraryError, match="between 0 and 1"):
        HybridSpace(library, playlists, weight=1.5)


def test_radio_with_playlists_from_the_command_line(tmp_path, capsys):
    folder = folder_of(tmp_path, n=6)
    lib = tmp_path / "lib.npz"
    assert main(["embed", str(folder), "-o", str(lib), "--quiet"]) == 0
    (tmp_path / "lists.txt").write_text("p0 p5 p1\n" * 20 + "p2 p3 p4\n" * 20 + "something-else p5\n")
    capsys.readouterr()
    out = tmp_path / "r"
    assert main(["radio", str(folder / "p0.mid"), "--library", str(lib), "-n", "3", "--smoothness", "0",
                 "--playlists", str(tmp_path / "lists.txt"), "--playlist-weight", "1", "--key-weight", "0",
                 "-o", str(out)]) == 0  # the playlists alone (the scales' keys would pull p2 in: two sharps from C)
    assert "40 used, 6 of 6 pieces in them, 1 items not in the library" in capsys.readouterr().err
    playlist = json.loads(out.with_suffix(".json").read_text())
    assert playlist["key_weight"] == 0.0
    assert playlist["pieces_in_playlists"] == 6
    assert {s["path"] for s in playlist["playlist"][:2]} == {"sub/p5.mid", "sub/p1.mid"}  # p0's playlist mates


def test_a_too_dense_window_costs_the_piece_only_that_window(checkpoint, tmp_path):
    """A 4-bar piece whose last two bars are too dense for the model (256 tokens a window): the pipeline
    refuses it, the library embeds it from its first window."""
    from midistruct.generation.pipeline import InputError, MidiStruct
    from midistruct.library.features import code_features

    ms = MidiStruct.from_pretrained(checkpoint)
    score = scale_piece([60, 64, 67], bars=4)
    track = score.tracks[0]
    for t in range(2 * 4 * TPQ, 4 * 4 * TPQ, TPQ // 8):  # bars 3-4: a 32nd-note chord of four notes
        for pitch in (48, 55, 62, 69):
            track.notes.append(symusic.Note(t, TPQ // 8, pitch, 80))
    path = tmp_path / "dense.mid"
    score.dump_midi(str(path))
    with pytest.raises(InputError, match=r"window 1 \(bars 3-4\) has \d+ tokens"):
        ms.encode(path)
    assert len(ms.encode(path, drop_long=True)) == 1
    piece = code_features(ms)(path)
    assert piece.bars.shape[0] == 2 and np.isfinite(piece.vector).all()


def two_track_piece(melody, bass, *, bars=2) -> symusic.Score:
    """A 'Melody' track cycling through ``melody`` and a 'Bass' track through ``bass``, a note a beat."""
    score = scale_piece(melody, bars=bars)
    score.tracks[0].name = "Melody"
    bass_track = scale_piece(bass, bars=bars).tracks[0]
    bass_track.name = "Bass"
    score.tracks.append(bass_track)
    return score


def test_tracks_choose_what_is_embedded_and_are_kept_in_the_library(tmp_path, capsys):
    from midistruct.generation.pipeline import InputError
    from midistruct.library.features import select_tracks

    folder = tmp_path / "songs"
    folder.mkdir()
    two_track_piece([60, 64, 67], [38, 41]).dump_midi(str(folder / "a.mid"))  # C E G over D F
    two_track_piece([60, 64, 69], [38, 41]).dump_midi(str(folder / "b.mid"))
    only = select_tracks(symusic.Score(str(folder / "a.mid")), "^mel", name="a.mid")
    assert [t.name for t in only.tracks] == ["Melody"]
    with pytest.raises(InputError, match=r"a.mid: no track named like 'piano' \(tracks: 'Melody', 'Bass'\)"):
        select_tracks(symusic.Score(str(folder / "a.mid")), "piano", name="a.mid")
    lib = tmp_path / "lib.npz"
    assert main(["embed", str(folder), "-o", str(lib), "--quiet", "--tracks", "melody"]) == 0
    melody = Library.load(lib)
    assert melody.tracks == "melody" and melody.vectors[0, [2, 5]] == pytest.approx([0, 0])  # no D, F: no bass
    capsys.readouterr()
    assert main(["embed", str(folder), "-o", str(lib), "--quiet"]) == 0  # all tracks now: nothing reused
    assert "2 pieces (2 encoded, 0 from the cache)" in capsys.readouterr().out
    every = Library.load(lib)
    assert every.tracks is None and (every.vectors[0, [2, 5]] > 0).all()


def test_radio_over_a_folder_embeds_it_once_and_keeps_the_library(tmp_path, capsys):
    folder = folder_of(tmp_path, n=5)
    out = tmp_path / "play" / "radio"
    argv = ["radio", str(folder / "p0.mid"), "--library", str(folder), "-n", "3", "-o", str(out), "--quiet"]
    assert main(argv) == 0
    assert "5 pieces (5 encoded)" in capsys.readouterr().err
    kept = Library.load(out.with_suffix(".library.npz"))
    assert len(kept) == 5 and kept.features == "histogram"
    assert main(argv) == 0
    assert "5 pieces (0 encoded)" in capsys.readouterr().err
    assert len(json.loads(out.with_suffix(".json").read_text())["playlist"]) == 3

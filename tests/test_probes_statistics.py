"""Latent probes and sample statistics on inputs whose answers are known, the CLI hook on the tiny
checkpoint, and the baseline features of real Nottingham tunes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from midistruct.evaluation import probes, statistics


def notes(*rows):
    """Note array from (onset, duration, pitch) rows in quarter notes."""
    return np.array(rows, dtype=np.float64).reshape(-1, 3)


def blobs(n: int, k: int, *, dims: int = 8, separation: float = 6.0, seed: int = 0):
    """``n`` points in ``dims`` dimensions from ``k`` classes, class c centred at separation * c on axis 0."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    x = rng.normal(size=(n, dims))
    x[:, 0] += separation * y
    return x, y


# ---- probes ----------------------------------------------------------------------------------

def test_probe_separates_separable_classes_and_not_noise():
    x, y = blobs(800, 3)
    probe = probes.fit_probe(x[:600], y[:600])
    assert np.mean(probe.predict(x[600:]) == y[600:]) == 1.0
    again = probes.fit_probe(x[:600], y[:600])
    assert np.array_equal(probe.weight, again.weight)  # deterministic
    noise = np.random.default_rng(1).normal(size=(800, 32))
    chance = np.mean(probes.fit_probe(noise[:600], y[:600]).predict(noise[600:]) == y[600:])
    assert abs(chance - 1 / 3) < 0.1


def test_probe_ignores_feature_scale():
    x, y = blobs(400, 2)
    x[:, 0] *= 1e-4  # the informative feature is tiny; standardisation must bring it back
    x[:, 1:] *= 1e3
    probe = probes.fit_probe(x[:300], y[:300])
    assert np.mean(probe.predict(x[300:]) == y[300:]) > 0.95


def test_run_probes_scores_and_skips_with_reasons():
    x, y = blobs(600, 2)
    test = probes.piece_test_mask([f"piece{i // 10}" for i in range(600)])  # 60 pieces of 10 windows
    labels = {"sep": [["a", "b"][c] for c in y], "one": ["x"] * 600, "none": [None] * 600,
              "rare": ["r" if i < 3 else "s" for i in range(600)]}
    found = probes.run_probes({"good": x, "noise": np.random.default_rng(2).normal(size=(600, 4))}, labels, test)
    assert found["sep.good_accuracy"] == 1.0 and found["sep.classes"] == 2 and found["sep.labels"] == ["a", "b"]
    assert found["sep.noise_accuracy"] < 0.7
    assert 0.35 < found["sep.majority_accuracy"] < 0.65
    assert found["sep.train_windows"] + found["sep.test_windows"] == found["sep.windows"] == 600
    assert found["skipped.one"].startswith("1 of 1 class")
    assert "tag missing" in found["skipped.none"]
    assert found["skipped.rare"].startswith("1 of 2 class")  # 3 windows of "r" are too few


def test_in_key_probes_read_the_labels_as_a_canonical_model_reads_the_piece():
    """Codes that hold a tune's mode in C (the key signature it has there: "0" or "1b", mixolydian) and nothing of
    its key: the key signature as written is out of their reach (12 shifts), moved by the shift it is theirs. A
    test window whose moved label no training window has counts as a miss, so the windows scored are the plain
    probe's."""
    from midistruct.tags import transpose_tag

    rng = np.random.default_rng(0)
    n = 1200
    modal = rng.random(n) < 0.3
    shifts = rng.integers(-6, 6, n)
    x = rng.normal(size=(n, 6))
    x[:, 0] += 6.0 * modal
    canonical = np.where(modal, "1b", "0").astype(object)
    hist = np.zeros((n, 17))
    hist[:, 12] = 1.0
    hist[np.arange(n), np.where(modal, 10, 11)] = 1.0  # B flat or B, in C
    test = np.arange(n) % 4 == 0
    canonical[np.flatnonzero(test)[:6]] = "3#"  # only in the test windows: no probe can name it
    written = [transpose_tag("key_signature", c, -int(s)) for c, s in zip(canonical, shifts)]
    absolute = np.stack([np.concatenate([np.roll(h[:12], -int(s)), h[12:]]) for h, s in zip(hist, shifts)])
    features = {"latent": x, "histogram": absolute}
    labels = {"key_signature": written, "mode": ["major"] * n}

    found = probes.in_key_probes(features, labels, test, shifts)
    plain = probes.run_probes(features, labels, test)
    scored = plain["key_signature.test_windows"]
    assert found["key_signature.in_key_majority_accuracy"] == pytest.approx(np.mean(canonical[test] == "0"), abs=0.02)
    assert found["key_signature.latent_in_key_accuracy"] > 0.95
    assert found["key_signature.latent_in_key_accuracy"] <= 1 - 6 / scored + 1e-9
    assert found["key_signature.histogram_in_key_accuracy"] > 0.95
    assert plain["key_signature.latent_accuracy"] < 0.2  # the codes alone cannot name the written signature (0.10)
    assert not any(key.startswith("mode.") for key in found)  # a mode does not move with the key


def test_piece_split_keeps_groups_together_and_is_seeded():
    groups = [f"g{i % 200}" for i in range(2000)]
    test = probes.piece_test_mask(groups)
    by_group = {}
    for g, t in zip(groups, test):
        by_group.setdefault(g, set()).add(bool(t))
    assert all(len(sides) == 1 for sides in by_group.values())
    share = np.mean([sides == {True} for sides in by_group.values()])
    assert 0.15 < share < 0.35
    assert np.array_equal(test, probes.piece_test_mask(groups))
    assert not np.array_equal(test, probes.piece_test_mask(groups, seed=1))
    assert np.array_equal(probes.piece_test_mask(groups[:7]), test[:7])  # a group's side ignores the others


def test_labels_from_tags():
    assert probes.parse_key("F# minor") == (6, "minor")
    assert probes.parse_key("B- dorian") == (10, "dorian") and probes.parse_key("Gb:maj") == (6, "major")
    assert probes.parse_key("nonsense") is None and probes.parse_key(None) is None
    tags = {"key": "A# major", "collection": "oneills1850", "tune_type": "reel", "meter": "6/8", "key_signature": "2b"}
    got = {name: f(tags, "music21/oneills1850/1", "4/4") for name, f in probes.TARGETS.items()}
    assert got == {"mode": "major", "key": "Bb major", "tonic": "Bb", "key_signature": "2b", "meter": "4/4",
                   "collection": "oneills1850", "tune_type": "reel", "source": "music21"}
    assert probes.TARGETS["meter"](tags, "x/y", None) == "6/8"  # no TimeSig token: the tag
    assert probes.TARGETS["key"]({}, "x/y", None) is None


def test_baseline_histograms_by_hand():
    # C E G as quarters, an 8th C, a 16th D, a dotted-8th (-> quarter class) E, a whole G
    passage = notes((0, 1, 60), (1, 1, 64), (2, 1, 67), (3, 0.5, 72), (3.5, 0.25, 62), (4, 0.75, 76), (5, 4, 55))
    x = probes.baseline_features(passage)
    want_pc = np.zeros(12)
    want_pc[[0, 2, 4, 7]] = [2, 1, 2, 2]
    assert x[:12] == pytest.approx(want_pc / 7)
    assert x[12:] == pytest.approx(np.array([1, 1, 4, 0, 1]) / 7)  # 16th, 8th, quarter, half, whole
    assert probes.baseline_features(notes()).sum() == 0


# ---- statistics ------------------------------------------------------------------------------

def test_overlap_and_kl_of_identical_close_and_far_samples():
    a = np.random.default_rng(0).normal(size=400)
    oa, kl = statistics.overlap_and_kl(a, a)
    assert oa == pytest.approx(1.0) and kl == pytest.approx(0.0, abs=1e-9)
    oa, kl = statistics.overlap_and_kl(a, np.random.default_rng(1).normal(size=400))
    assert oa > 0.85 and kl < 0.1
    oa, kl = statistics.overlap_and_kl(a, a + 50)
    assert oa < 1e-6 and kl > 10
    assert statistics.overlap_and_kl(np.zeros(5), np.zeros(5)) == pytest.approx((1.0, 0.0))


def test_passage_features_by_hand():
    chord_then_notes = notes((0, 2, 60), (0, 2, 64), (2, 1, 67), (3, 0.5, 69))
    assert statistics.mean_ioi(chord_then_notes) == pytest.approx(1.5)  # distinct onsets 0, 2, 3
    assert statistics.mean_ioi(notes((0, 1, 60))) == 0.0
    assert statistics.feature_matrix([(chord_then_notes, 4.0)], "pitch_range").tolist() == [[9.0]]
    durations = statistics.feature_matrix([(chord_then_notes, 4.0)], "duration_histogram")
    assert durations.tolist() == [[0, 0.25, 0.25, 0.5, 0]]  # 16th, 8th, quarter, half, whole
    with pytest.raises(KeyError, match="valid: pitch_class_histogram"):
        statistics.feature_matrix([], "loudness")


def _melodies(n: int, *, seed: int, low: int = 60, step: float = 0.5):
    """``n`` 4-quarter melodies: random pitches from ``low`` up an octave, one note every ``step``."""
    rng = np.random.default_rng(seed)
    onsets = np.arange(0, 4, step)
    return [(notes(*[(t, step, low + rng.integers(0, 12)) for t in onsets]), 4.0) for _ in range(n)]


def test_compare_same_kind_of_music_overlaps_and_other_music_does_not():
    reference = _melodies(60, seed=0)
    itself = statistics.compare(reference, reference)  # inter-set distances add the 60 zero self-pairs
    assert itself["oa_mean"] > 0.9 and itself["kl_mean"] < 0.05
    same = statistics.compare(reference, _melodies(60, seed=1))
    assert same["reference"] == 60 and same["generated"] == 60
    assert same["pitch_class_histogram.oa"] > 0.8 and same["note_density.oa"] > 0.9
    assert same["note_density.reference_mean"] == same["note_density.generated_mean"] == 2.0
    assert len(same["pitch_class_histogram.generated_mean"]) == 12
    dense_chords = [(notes(*[(t / 4, 0.25, p) for t in range(16) for p in (40, 44, 47, 52, 88)]), 4.0)
                    for _ in range(60)]
    other = statistics.compare(reference, dense_chords)
    for name in ("note_density", "polyphony", "pitch_range", "ioi", "duration_histogram"):
        assert other[f"{name}.oa"] < 0.05 and other[f"{name}.kl"] > 5, name
    assert other["oa_mean"] < same["oa_mean"] and other["kl_mean"] > same["kl_mean"]
    assert other["polyphony.generated_mean"] == pytest.approx(5.0)


# ---- on a checkpoint -------------------------------------------------------------------------

def test_cli_evaluate_probes_and_statistics(checkpoint, capsys):
    from midistruct.cli import main

    assert main(["evaluate", str(checkpoint), "--split", "train", "--windows", "4", "--free-run", "0",
                 "--interpolations", "0", "--probes", "64", "--samples", "6"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["probe.windows"] > 0 and result["probe.pieces"] >= 1
    # synthetic pieces from a folder: no key or collection tags, one meter, one source
    assert "tag missing" in result["probe.skipped.key"] and "tag missing" in result["probe.skipped.collection"]
    assert "of 1 class(es)" in result["probe.skipped.meter"] and "of 1 class(es)" in result["probe.skipped.source"]
    assert not any(k.endswith("_accuracy") for k in result if k.startswith("probe."))
    assert result["statistics.reference"] == result["statistics.generated"] == 6
    assert 0.0 <= result["statistics.oa_mean"] <= 1.0 and result["statistics.kl_mean"] >= 0.0
    assert 0.0 <= result["statistics.generated_empty"] <= 1.0
    assert result["statistics.temperature"] == 1.0


def test_probe_latents_on_two_meters_and_two_sources(checkpoint, tmp_path):
    from scores import write_corpus

    from midistruct.config import load_config
    from midistruct.generation.pipeline import MidiStruct
    from midistruct.prepare import prepare

    write_corpus(tmp_path / "waltzes", n=16, meter=(3, 4), bars=16)
    write_corpus(tmp_path / "marches", n=16, meter=(4, 4), bars=16)
    sources = ", ".join(f"{{kind: folder, path: '{tmp_path / name}'}}" for name in ("waltzes", "marches"))
    prepare(load_config("tiny", [f"data.sources=[{sources}]", f"data.output={tmp_path / 'data'}"]), progress=False)
    found = probes.probe_latents(MidiStruct.from_pretrained(checkpoint), tmp_path / "data", split="train",
                                 targets=["meter", "source", "key"])
    assert found["meter.labels"] == ["3/4", "4/4"] and found["source.labels"] == ["marches", "waltzes"]
    assert found["meter.windows"] == found["windows"] and found["test_pieces"] < found["pieces"]
    for target in ("meter", "source"):
        for feature in ("latent", "bar_latent", "histogram", "majority"):
            assert 0.0 <= found[f"{target}.{feature}_accuracy"] <= 1.0
    assert found["meter.latent_accuracy"] > found["meter.majority_accuracy"]  # the TimeSig token is in the input
    assert "tag missing" in found["skipped.key"]
    with pytest.raises(KeyError, match="valid: mode"):
        probes.probe_latents(None, tmp_path / "data", targets=["genre"])


# ---- real music ------------------------------------------------------------------------------

G_MAJOR = [7, 9, 11, 0, 2, 4, 6]


@pytest.mark.shared_data
def test_nottingham_tunes_in_g_major_have_g_major_histograms(shared_datasets):
    import symusic

    from midistruct.metrics.notes import notes_of

    rows = []
    for path in sorted((shared_datasets / "nottingham" / "midi" / "melody").glob("*.mid")):
        keys = symusic.Score(str(path)).key_signatures
        if [(k.key, k.tonality) for k in keys] == [(1, 0)]:  # one sharp, major, all through: G major
            rows.append(probes.baseline_features(notes_of(symusic.Score(str(path)))))
        if len(rows) == 8:
            break
    x = np.stack(rows)  # (8, 17)
    assert len(x) == 8
    assert x[:, :12].sum(1) == pytest.approx(np.ones(8)) and x[:, 12:].sum(1) == pytest.approx(np.ones(8))
    assert (x[:, G_MAJOR].sum(1) > 0.8).all()  # a tune may borrow notes (ashover1 has F naturals)
    mean = x.mean(0)
    assert mean[G_MAJOR].sum() > 0.9 and mean[6] > mean[5]  # F sharp, not F
    assert mean[12 + 1] + mean[12 + 2] > 0.5  # dance tunes: mostly 8ths and quarters


@pytest.mark.shared_data
def test_the_shipped_canonical_model_names_real_key_signatures_in_key(shared_datasets, tmp_path):
    """Eighty real Nottingham tunes, prepared as `folk-2bar` reads them, probed through the shipped model: the key
    finder moves most of them to C major / A minor, so their signatures as written scatter (the plain majority,
    0.36 here) and gather once moved (the in-key majority, 0.79); read that way the codes keep what the shift
    says (0.82). On Nottingham's whole test split (`midistruct evaluate folk-2bar --data /work/data/nottingham-2bar
    --probes 2000`) in key 0.935 against the histogram of the notes as written 0.752; on these 21 test tunes the
    histogram's 0.69 is near the codes' (on 16 others of the corpus it was above them), so that is not asserted."""
    from midistruct.config import load_config
    from midistruct.generation.pipeline import MidiStruct
    from midistruct.prepare import prepare

    files = sorted((shared_datasets / "nottingham" / "midi" / "melody").glob("*.mid"))[::10][:80]
    assert len(files) == 80, "the Nottingham melodies are missing"
    (tmp_path / "midi").mkdir()
    for path in files:
        (tmp_path / "midi" / path.name).write_bytes(path.read_bytes())
    prepare(load_config("folk-2bar", [f"data.sources=[{{kind: folder, path: '{tmp_path / 'midi'}'}}]",
                                      f"data.output={tmp_path / 'data'}", "splits.valid=0", "splits.test=0"]),
            progress=False)
    found = probes.probe_latents(MidiStruct.from_pretrained("folk-2bar"), tmp_path / "data", split="train",
                                 windows=800, targets=["key_signature"])
    assert found["key_signature.classes"] >= 4 and found["test_pieces"] >= 10
    assert found["key_signature.in_key_majority_accuracy"] > found["key_signature.majority_accuracy"] + 0.2
    assert found["key_signature.latent_in_key_accuracy"] >= found["key_signature.in_key_majority_accuracy"] - 0.05

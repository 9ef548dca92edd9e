"""Tags (issue 18): naming them, the tagged code prior, and generation given tags."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from midistruct.model.prior import PRIOR_FILE, CodePrior
from midistruct.tags import TagError, canonical, parse_tag, parse_tags, transpose_tag, window_tags


def test_tags_are_named_name_equals_value_and_spelt_one_way():
    assert parse_tag("key=D:minor") == ("key", "D minor")
    assert parse_tag(" key = db maj ") == ("key", "C# major")  # enharmonics merged as the data's tags are
    assert parse_tag("tonic=Db") == ("tonic", "C#") and parse_tag("mode=Min") == ("mode", "minor")
    assert parse_tag("tune_type=slip jig") == ("tune_type", "slip jig")
    assert canonical("key", "not a key") == "not a key"  # left for the prior to refuse, with the known values
    for bad in ("key", "=minor", "key=", "key= "):
        with pytest.raises(TagError, match="name=value"):
            parse_tag(bad)
    assert parse_tags(["mode=minor", "tune_type=reel"]) == {"mode": "minor", "tune_type": "reel"}
    with pytest.raises(TagError, match="given twice"):
        parse_tags(["mode=minor", "mode=major"])


def test_a_transposition_moves_the_tonic_and_the_key_signature_by_fifths():
    assert transpose_tag("key", "D major", 5) == "G major" and transpose_tag("key", "B- dorian", 2) == "C dorian"
    assert transpose_tag("tonic", "A", -2) == "G" and transpose_tag("tonic", "C", 12) == "C"
    assert transpose_tag("key_signature", "1#", 5) == "0"  # G major moved up a fourth: C major
    assert transpose_tag("key_signature", "1#", 0) == "1#" and transpose_tag("key_signature", "0", 7) == "1#"
    assert transpose_tag("key_signature", "2#", -2) == "0" and transpose_tag("key_signature", "2#", 3) == "1b"
    assert transpose_tag("key_signature", "3b", -3) == "0"  # E-flat major / C minor down to C major / A minor
    assert transpose_tag("key_signature", "6#", 0) == "6b"  # enharmonic spellings are one class
    for sharps in ("0", "1#", "4#", "5b", "2b"):
        for s in range(-6, 6):
            assert transpose_tag("key_signature", transpose_tag("key_signature", sharps, s), -s) == sharps
    assert transpose_tag("mode", "major", 3) is None and transpose_tag("meter", "6/8", 1) is None
    assert transpose_tag("key_signature", "x", 1) is None and transpose_tag("key", "H minor", 1) is None
    assert transpose_tag("key", None, 1) is None


def test_a_windows_tags_come_from_its_pieces_tags_and_its_meter():
    tags = {"key": "G- major", "tune_type": "reel", "collection": "oneills1850"}
    found = window_tags(tags, "music21/oneills1850/1", "2/2")
    assert found == {"mode": "major", "key": "F# major", "tonic": "F#", "meter": "2/2", "collection": "oneills1850",
                     "tune_type": "reel", "source": "music21"}
    assert window_tags({}, "x/y", None, names=["key", "meter"]) == {}


def _two_values(n: int = 4000, *, seed: int = 0):
    """Codes of two tag values 6 apart along the first axis, spread 1 around each value's mean, plus a third
    value too rare to keep and windows without the tag. Returns z_bar (n, 2, 3), z_segment (n, 4), labels."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 10, generator=g)
    labels = ["major" if i % 2 else "minor" for i in range(n)]
    x[:, 0] += torch.tensor([3.0 if v == "major" else -3.0 for v in labels])
    labels[:5] = ["dorian"] * 5  # fewer than min_windows: not kept
    labels[5:50] = [None] * 45  # no tag: fitted into the overall Gaussian only
    return x[:, :6].reshape(n, 2, 3), x[:, 6:], labels


def test_the_tagged_prior_draws_from_the_codes_of_the_value_asked_for(tmp_path):
    z_bar, z_seg, labels = _two_values()
    meters = ["3/4" if v == "minor" else "4/4" for v in labels]
    prior = CodePrior.fit(z_bar, z_seg, rank=10, tags={"mode": labels, "meter": meters, "only": ["x"] * len(labels)},
                          tag_rank=10, min_windows=20)
    assert set(prior.tags) == {"mode", "meter"}  # a tag with one value says nothing: left out
    group = prior.tags["mode"]
    assert group.values == ["major", "minor"] and sum(group.counts) == 4000 - 50
    assert group.means[0, 0] == pytest.approx(3.0, abs=0.1) and group.means[1, 0] == pytest.approx(-3.0, abs=0.1)
    g = torch.Generator().manual_seed(1)
    s_bar, s_seg = prior.sample(3000, generator=g, tags={"mode": "minor"})
    drawn = torch.cat([s_bar.reshape(3000, -1), s_seg], 1)
    assert drawn[:, 0].mean() == pytest.approx(-3.0, abs=0.1)
    assert drawn[:, 0].std() == pytest.approx(1.0, abs=0.1)  # the spread within a value, not the whole prior's 3.2
    free = torch.cat([t.reshape(3000, -1) for t in prior.sample(3000, generator=g)], 1)
    assert free[:, 0].std() > 2.5
    assert prior.meter_for({"mode": "minor"}) == "3/4" and prior.meter_for({"mode": "major"}) == "4/4"
    # retag: codes of major windows land where minor ones are; minor ones stay put
    x = torch.cat([z_bar.reshape(len(z_bar), -1), z_seg], 1)
    major = x[[i for i, v in enumerate(labels) if v == "major"]]
    moved = prior.retag(major, {"mode": "minor"})
    assert moved[:, 0].mean() == pytest.approx(-3.0, abs=0.15)
    assert torch.allclose(moved[:, 1:], major[:, 1:], atol=0.2)
    assert (group.nearest(moved) == 1).float().mean() > 0.95
    minor = x[[i for i, v in enumerate(labels) if v == "minor"]]
    still = prior.retag(minor, {"mode": "minor"})
    assert (still - minor).abs().max(1).values.median() == 0  # a code already nearest the value moves by nothing
    # errors list what is known
    with pytest.raises(TagError, match="known: major, minor"):
        prior.sample(1, tags={"mode": "dorian"})
    with pytest.raises(TagError, match="its tags: meter, mode"):
        prior.sample(1, tags={"tune_type": "reel"})
    # the file keeps the tags
    back = CodePrior.load(prior.save(tmp_path / PRIOR_FILE))
    assert back.tags["mode"].values == group.values and back.tags["mode"].counts == group.counts
    # without the meter as a tag, the windows' meters still give each value its meter (a prior fitted with
    # `--tags mode` alone sampled every mode in 4/4, which the folk models' training windows are rarely in)
    alone = CodePrior.fit(z_bar, z_seg, rank=10, tags={"mode": labels}, tag_rank=10, min_windows=20, meters=meters)
    assert set(alone.tags) == {"mode"} and alone.meter_for({"mode": "minor"}) == "3/4"
    untold = CodePrior.fit(z_bar, z_seg, rank=10, tags={"mode": labels}, min_windows=20)
    assert untold.meter_for({"mode": "minor"}) is None
    assert torch.equal(back.tags["mode"].means, group.means) and back.tags["meter"].meters == prior.tags["meter"].meters
    assert torch.equal(back.tags["mode"].factor, group.factor)


def test_tags_of_a_prior_are_refused_when_their_labels_do_not_match_the_windows():
    z_bar, z_seg, labels = _two_values(100)
    from midistruct.model.prior import PriorError

    with pytest.raises(PriorError, match="99 labels for 100 windows"):
        CodePrior.fit(z_bar, z_seg, tags={"mode": labels[:99]})


@pytest.fixture
def tagged_checkpoint(checkpoint, tmp_path):
    """The session's tiny checkpoint with a code prior fitted to codes of two made-up modes, 6 apart."""
    from midistruct.generation.pipeline import MidiStruct

    folder = shutil.copytree(checkpoint, tmp_path / "tagged")
    cfg = MidiStruct.from_pretrained(folder).model.config
    n, bars = 400, MidiStruct.from_pretrained(folder).bars
    g = torch.Generator().manual_seed(0)
    z_bar, z_seg = torch.randn(n, bars, cfg.latent_dim_bar, generator=g), torch.randn(n, cfg.latent_dim_segment,
                                                                                         generator=g)
    labels = ["minor" if i % 2 else "major" for i in range(n)]
    z_seg[:, 0] += torch.tensor([3.0 if v == "minor" else -3.0 for v in labels])
    meters = ["3/4" if v == "minor" else "4/4" for v in labels]
    CodePrior.fit(z_bar, z_seg, rank=8, tags={"mode": labels, "meter": meters}).save(folder / PRIOR_FILE)
    return folder


def test_generation_takes_tags_and_refuses_unknown_ones(tagged_checkpoint):
    from midistruct.generation.pipeline import InputError, MidiStruct

    ms = MidiStruct.from_pretrained(tagged_checkpoint)
    assert ms.known_tags() == {"mode": ["major", "minor"], "meter": ["3/4", "4/4"]}
    z = ms.sample_latents(500, tags={"mode": "minor"})
    assert z.z_segment[:, 0].mean() == pytest.approx(3.0, abs=0.2)
    scores = ms.sample(2, seed=0, bars=1, temperature=0.0, tags={"mode": "minor"})
    assert [(ts.numerator, ts.denominator) for ts in scores[0].time_signatures][:1] == [(3, 4)]  # the value's meter
    with pytest.raises(InputError, match="known: major, minor") as err:
        ms.sample(1, tags={"mode": "lydian"})
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="knows no tag 'tune_type'"):
        ms.reconstruct("nowhere.mid", tags={"tune_type": "reel"})  # the tag is checked before the file is read
    # retag moves each window's codes to the asked value's side, and only there
    piece = ms.sample_latents(4, tags={"mode": "major"})
    moved = ms.retag(piece, {"mode": "minor"})
    assert (moved.z_segment[:, 0] - piece.z_segment[:, 0]).mean() == pytest.approx(6.0, abs=0.5)
    assert (moved.z_segment[:, 1:] - piece.z_segment[:, 1:]).abs().max() < 0.6  # the means' noise, 200 windows each
    assert ms.retag(piece, {}) is piece
    plain = MidiStruct.from_pretrained(tagged_checkpoint)
    plain.prior = None
    with pytest.raises(InputError, match="no code prior"):
        plain.sample(1, tags={"mode": "minor"})


def test_cli_tag_options_and_the_tags_command(tagged_checkpoint, tmp_path, capsys):
    from scores import make_score

    from midistruct.cli import main

    midi = tmp_path / "tune.mid"
    make_score((4, 4), bars=4, seed=3).dump_midi(str(midi))
    out = tmp_path / "out"
    assert main(["sample", str(tagged_checkpoint), "-n", "2", "--tag", "mode=minor", "--seed", "0", "--bars", "1",
                 "--device", "cpu", "-o", str(out)]) == 0
    record = json.loads((out / "generation.json").read_text())
    assert record["tags"] == {"mode": "minor"} and record["meter"] == "3/4"
    assert main(["reconstruct", str(tagged_checkpoint), str(midi), "--tag", "mode=Min", "--tag-strength", "0.5",
                 "--device", "cpu", "-o", str(out / "r")]) == 0
    record = json.loads((out / "r" / "generation.json").read_text())
    assert record["tags"] == {"mode": "minor"} and record["tag_strength"] == 0.5
    assert record["outputs"] == ["tune.reconstruct.minor.mid"]
    assert main(["continue", str(tagged_checkpoint), str(midi), "--bars", "1", "--tag", "mode=major", "--seed", "0",
                 "--device", "cpu", "-o", str(out / "c")]) == 0
    capsys.readouterr()
    assert main(["sample", str(tagged_checkpoint), "--tag", "mode=phrygian", "--device", "cpu", "-o",
                 str(out / "x")]) == 2
    assert "known: major, minor" in capsys.readouterr().err and not (out / "x").exists()
    assert main(["sample", str(tagged_checkpoint), "--tag", "mode", "--device", "cpu", "-o", str(out / "x")]) == 2
    assert "name=value" in capsys.readouterr().err
    assert main(["tags", str(tagged_checkpoint)]) == 0
    assert "mode: major (200), minor (200)" in capsys.readouterr().out
    assert main(["tags", str(tagged_checkpoint), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["meter"] == {"3/4": 200, "4/4": 200}


def test_prior_command_fits_tags_from_the_shards(checkpoint, tmp_path, capsys):
    """`midistruct prior` reads each window's tags from its piece: the synthetic corpus's windows carry a meter."""
    from midistruct.cli import main
    from midistruct.model.prior import load_prior

    folder = shutil.copytree(checkpoint, tmp_path / "c")
    assert main(["prior", str(folder), "--device", "cpu", "--rank", "4", "--tags", "meter,key",
                 "--min-tag-windows", "1"]) == 0
    out = capsys.readouterr().out
    prior = load_prior(folder)
    # one meter only in the synthetic corpus: nothing to condition on, and the command says so
    assert "not kept" in out and "meter" in out.split("not kept")[1] and prior.tags == {}
    assert main(["prior", str(folder), "--device", "cpu", "--tags", "colour"]) == 2
    assert "unknown tag 'colour'" in capsys.readouterr().err


def test_note_features_see_key_and_rhythm():
    from midistruct.evaluation.tag_control import N_FEATURES, key_correlations, note_features

    scale = np.array([[i * 0.5, 0.5, p] for i, p in enumerate([62, 64, 65, 67, 69, 70, 72, 74])])  # D minor
    f = note_features(scale, quarters=4.0)
    assert f.shape == (N_FEATURES,) and np.argmax(f[29:53]) in (12 + 2, 5)  # D minor or its relative F major
    corr = key_correlations(np.bincount(scale[:, 2].astype(int) % 12, minlength=12).astype(float))
    assert corr[12 + 2] > corr[2]  # D minor over D major
    triplets = np.array([[i / 3, 1 / 3, 60] for i in range(12)])
    straight = np.array([[i / 2, 0.5, 60] for i in range(8)])
    on = lambda x: note_features(x, quarters=4.0)[17:29]  # noqa: E731 - onset positions within the beat
    assert on(triplets)[4] > 0.3 and on(straight)[4] == 0 and on(straight)[6] == 0.5
    assert not note_features(np.zeros((0, 3)), quarters=4.0).any()


@pytest.mark.shared_data
def test_the_shipped_folk_model_knows_tune_types_and_keys_of_unseen_tunes(shared_datasets):
    """Real music: the shipped folk-2bar prior's tags, fitted on O'Neill's, Ryan's and Aird's (music21), read
    Nottingham tunes it never saw, and sampling with a tonic moves the pitch classes the right way (the model
    reads every tune in C major / A minor, so its prior holds no key and a tonic is reached by transposing)."""
    from midistruct.evaluation.tag_control import note_features
    from midistruct.generation.pipeline import MidiStruct
    from midistruct.metrics.notes import notes_of
    from midistruct.tokens.key import key_of

    ms = MidiStruct.from_pretrained("folk-2bar")
    assert ms.canonical and {"tune_type", "mode"} <= set(ms.known_tags())
    assert not {"key", "tonic"} & set(ms.known_tags())
    melody = shared_datasets / "nottingham" / "midi" / "melody"
    group = ms.prior.tags["tune_type"]
    hits = {}
    # jigs (6/8) and waltzes (3/4): Nottingham writes them in the meters O'Neill's and Aird's do. Its reels and
    # hornpipes are in 4/4, where the training books write 2/2 and 2/4, so their codes (which hold the meter)
    # are called march or air: a difference of notation the test leaves out.
    for kind, book in {"jig": "jigs", "waltz": "waltzes"}.items():
        codes = []
        for i in range(1, 16):
            z = ms.encode(melody / f"{book}{i}.mid")
            full = [w for w, b in enumerate(z.bars) if b == ms.bars]
            codes.append(torch.cat([z.z_bar[full].reshape(len(full), -1), z.z_segment[full]], 1))
        called = group.nearest(torch.cat(codes))
        hits[kind] = float((called == group.values.index(kind)).float().mean())
    # each type's windows are called that type, of 11, far above guessing (measured 0.98 / 0.84; at step 3,000
    # 0.87 / 0.79; the absolute-pitch folk-2bar shipped until 2026-12-07: 0.99 / 0.74)
    assert hits["jig"] > 0.8 and hits["waltz"] > 0.6, hits
    # samples asked for F major or D major are mostly heard in F or D (measured 6 of 8 each: their bars are real
    # bars, snapped to the prior's bank, and a 2-bar fragment is often heard in its dominant, as real ones are)
    for key, pc in (("F:major", 5), ("D:major", 2)):
        scores = ms.sample(8, seed=0, temperature=0.0, prior_scale=0.5, tags={"key": key}, tag_strength=2.0)
        heard = [key_of([ms.piece_encoder.tokenize(s)], ms.vocab) for s in scores]
        assert sum(1 for found in heard if found and found[0] == pc) >= 5, (key, heard)
    # asked for tonic D, samples use F sharp (measured 0.163 of their notes; 0.136 at step 3,000) where those asked for F do not (0.0)
    share = {}
    for tonic in ("F", "D"):
        scores = ms.sample(8, seed=0, temperature=0.0, prior_scale=0.5, tags={"tonic": tonic}, tag_strength=2.0)
        share[tonic] = np.mean([note_features(notes_of(s), quarters=8.0)[:12] for s in scores], axis=0)[6]
    assert share["D"] > 0.05 and share["D"] > 5 * share["F"], share


def test_the_key_finder_judge_hears_all_24_keys_and_misses_the_others():
    """The stricter key judge: a window is called the key whose profile its pitch classes follow best, of all 24;
    one outside the values judged is a miss, not the nearest value."""
    from midistruct.evaluation.tag_control import N_FEATURES, FinderJudge, note_features

    def features(pitches, tonic_weight=4):
        notes = [[i * 0.5, 0.5, p] for i, p in enumerate(pitches)]
        notes += [[8 + i, 1.0, pitches[0]] for i in range(tonic_weight)]  # the tonic held
        return note_features(np.array(notes, dtype=float), quarters=16.0)

    e_minor = features([64, 66, 67, 69, 71, 72, 74, 76])  # E natural minor, its tonic held
    g_major = features([67, 69, 71, 72, 74, 76, 78, 79])
    b_flat = features([70, 72, 74, 75, 77, 79, 81, 82])  # B-flat major: not among the values
    judge = FinderJudge(["G major", "E minor", "D major"])
    silent = np.zeros(N_FEATURES)  # no notes: no key
    assert judge.predict(np.stack([e_minor, g_major, b_flat, silent])) == ["E minor", "G major", "another key",
                                                                           "another key"]
    assert not judge.meters


def test_samples_are_written_in_the_meter_most_training_windows_are_in_unless_told():
    """Untagged samples of the folk models come in 6/8, the meter most of their training windows are in (a 4/4
    default put them where their prior has few real bars: 12 % of folk-2bar's windows, 9 % of folk-16bar's)."""
    from midistruct.generation.pipeline import MidiStruct

    for name in ("folk-2bar", "folk-16bar"):
        ms = MidiStruct.from_pretrained(name)
        trained = ms.training_meters()
        assert max(trained, key=trained.get) == "6/8" and trained["4/4"] < 0.15 * sum(trained.values())
        assert ms.sample_meter() == "6/8" and ms.sample_meter(meter="3/4") == "3/4"
    ms = MidiStruct.from_pretrained("folk-2bar")
    assert ms.sample_meter({"tune_type": "reel"}) != "6/8"  # a tag's own meter still comes first
    (score,) = ms.sample(1, seed=0, temperature=0.0)
    assert [(t.numerator, t.denominator) for t in score.time_signatures][:1] == [(6, 8)]
    assert MidiStruct.from_pretrained("pop909-4bar").sample_meter() == "4/4"


def test_the_shipped_16_bar_model_samples_the_key_asked_for():
    """folk-16bar's prior keeps the mode (issue 18), so a key is its mode plus a transposition: 16-bar samples
    asked for E minor, D major or G major are heard in that key by the key finder over the whole sample (measured
    5, 6 and 6 of 6; before the prior kept each mode's meter they were drawn in 4/4 and heard in other keys)."""
    from midistruct.generation.pipeline import MidiStruct
    from midistruct.tokens.key import key_of

    ms = MidiStruct.from_pretrained("folk-16bar")
    assert ms.canonical and set(ms.known_tags()) == {"mode"} and ms.sample_meter({"key": "E minor"}) == "6/8"
    for key, want, least in (("E:minor", (4, "minor"), 4), ("D:major", (2, "major"), 5), ("G:major", (7, "major"), 5)):
        scores = ms.sample(6, seed=0, temperature=0.0, tags={"key": key}, tag_strength=2.0)
        heard = [key_of([ms.piece_encoder.tokenize(s)], ms.vocab) for s in scores]
        assert sum(found == want for found in heard) >= least, (key, heard)
    # --tries 4: the one E minor sample heard in another key (5 of 6 above) is drawn again until it is E minor
    scores = ms.sample(6, seed=0, temperature=0.0, tags={"key": "E:minor"}, tag_strength=2.0, tries=4)
    assert [key_of([ms.piece_encoder.tokenize(s)], ms.vocab) for s in scores] == [(4, "minor")] * 6


def test_sections_come_from_phrase_labels_placed_at_the_label_bar():
    from midistruct.tags import bar_sections, parse_phrase_labels

    assert parse_phrase_labels("i2 A2\nb1") == [("i", 2), ("A", 2), ("b", 1)]
    assert bar_sections("i2A2b1x1o1") == ["intro", "intro", "A", "A", "bridge", "other", "outro"]
    tags = {"phrases": "i2A4B4", "label_bar": "3"}  # the labels' bar 0 is the tokens' bar 3
    section = lambda bar, n=4: window_tags(tags, "p", None, bar=bar, n_bars=n, names=["section"])  # noqa: E731
    assert section(3) == {"section": "intro"}  # bars 3-6: intro intro A A -> a tie, the earlier wins
    assert section(4) == {"section": "A"}  # intro A A A
    assert section(9) == {"section": "B"} and section(10) == {"section": "B"}  # 10-13: B B B, then past the end
    assert section(11) == {} and section(0) == {}  # half of the window labelled or less
    assert window_tags({"phrases": "i2A4"}, "p", None, bar=3, n_bars=4, names=["section"]) == {}  # not placed
    assert window_tags(tags, "p", None, names=["section"]) == {}  # no bar given: no bar tags


def test_a_label_tick_becomes_the_bar_it_falls_on_once_the_music_is_placed():
    from scores import make_score

    from midistruct.config import load_config
    from midistruct.tokens.encode import PieceEncoder

    encoder = PieceEncoder(load_config("tiny"))
    score = make_score((4, 4), bars=8, seed=1)
    bar = score.tpq * 4
    assert encoder.encode_score(score, label_zero_tick=2 * bar).label_bar == 2
    assert encoder.encode_score(score, label_zero_tick=2 * bar + score.tpq).label_bar is None  # a beat off the line
    assert encoder.encode_score(score).label_bar is None
    # with a downbeat half a bar in, the music moves so that a bar starts there, and the label's bar with it
    moved = encoder.encode_score(score, downbeat=1.0, label_zero_tick=bar + bar // 2)  # 120 qpm: 1 s = 2 beats
    assert moved.label_bar is not None


@pytest.mark.shared_data
def test_pop909_windows_carry_the_section_of_their_bars(shared_datasets, tmp_path):
    """Real music: POP909's phrase labels become each window's section where they can be placed (main files)."""
    from midistruct.config import load_config
    from midistruct.prepare import prepare
    from midistruct.shards.reader import ShardSet
    from midistruct.tags import bar_sections

    source = {"kind": "pop909", "path": str(shared_datasets / "pop909"), "versions": True, "limit": 3,
              "phrases_path": str(shared_datasets / "pop909-phrases")}
    cfg = load_config("pop909-4bar", [f"data.sources=[{json.dumps(source)}]", f"data.output={tmp_path / 'd'}",
                                      "data.workers=1"])
    prepare(cfg, progress=False)
    records = {r["id"]: r for split in ("train", "valid", "test")
               for r in ShardSet(tmp_path / "d").split(split).pieces()}
    song = records["pop909/001"]["tags"]  # 001 is labelled i4A4B8A4A4b4B8 ... and its labels can be placed
    assert "label_bar" in song and not any("label_bar" in r["tags"] for i, r in records.items() if "-v" in i)
    zero, sections = int(song["label_bar"]), bar_sections(song["phrases"])
    assert sections[:10] == ["intro"] * 4 + ["A"] * 4 + ["B"] * 2
    assert window_tags(song, "pop909/001", "4/4", bar=zero + 4, n_bars=4, names=["section"]) == {"section": "A"}
    assert window_tags(song, "pop909/001", "4/4", bar=zero + 8, n_bars=4, names=["section"]) == {"section": "B"}


def _scale_tune(tonic: int = 60, bars: int = 4):
    """A major-scale melody on ``tonic`` (MIDI pitch), eighth notes up and down, 4/4 at 120 qpm."""
    import symusic

    score = symusic.Score(480)
    score.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    score.tempos.append(symusic.Tempo(0, 120.0))
    track = symusic.Track(name="tune", program=0)
    degrees = [0, 2, 4, 5, 7, 9, 11, 12, 11, 9, 7, 5, 4, 2, 0, 7]
    for k in range(bars * 8):
        track.notes.append(symusic.Note(k * 240, 240, tonic + degrees[k % len(degrees)], 90))
    score.tracks.append(track)
    return score


def test_a_tonic_tag_transposes_the_notes_by_the_nearer_interval(tagged_checkpoint):
    from midistruct.generation.pipeline import MidiStruct
    from midistruct.metrics.features import estimated_key
    from midistruct.metrics.notes import notes_of
    from midistruct.tokens.tokenizer import decode_ids

    ms = MidiStruct.from_pretrained(tagged_checkpoint)
    windows = ms.windows(_scale_tune(60))
    pitches = lambda ws: [n for w in ws for n in notes_of(decode_ids(ms.tokenizer, w.tolist()))[:, 2]]  # noqa: E731
    assert estimated_key(np.array([[0, 1, p] for p in pitches(windows)])) == (0, "major")
    for tonic, shift in (("F", 5), ("A", -3), ("F#", -6), ("C", 0)):  # a tritone goes down, as key.nearer_move
        moved, rest = ms.transposed(windows, {"tonic": tonic})
        assert rest == {} and np.array_equal(np.array(pitches(moved)), np.array(pitches(windows)) + shift)
    moved, rest = ms.transposed(windows, {"key": "A minor", "meter": "4/4"})  # the prior knows mode=minor
    assert rest == {"meter": "4/4", "mode": "minor"}
    assert np.array_equal(np.array(pitches(moved)), np.array(pitches(windows)) - 3)
    assert ms.transposed(windows, {"mode": "minor"}) == (windows, {"mode": "minor"})


def test_the_shipped_folk_model_reconstructs_a_tune_in_the_tonic_asked_for():
    from midistruct.generation.pipeline import MidiStruct
    from midistruct.metrics.features import estimated_key
    from midistruct.metrics.notes import notes_of
    from midistruct.model import pretrained

    ms = MidiStruct.from_pretrained("folk-2bar")
    path = str(pretrained.example_paths("folk-2bar")[1])  # let-us-be-drinking, in G major
    assert estimated_key(notes_of(ms.reconstruct(path))) == (7, "major")
    for tonic, pc in (("F", 5), ("D", 2)):
        assert estimated_key(notes_of(ms.reconstruct(path, tags={"tonic": tonic})))[0] == pc


def test_decode_in_key_draws_again_only_what_is_heard_in_another_key_and_at_most_tries_times():
    """``tries``: a sample heard off the canonical key is drawn again (one code per redraw), up to ``tries`` draws
    in all, the last draw kept; every sample is then moved to the key asked for."""
    from midistruct.generation.pipeline import MidiStruct

    class Fake:
        def __init__(self, answers):
            self.answers, self.drawn = iter(answers), []

        def generate_tokens(self, z, **kw):
            return [[next(self.answers)] for _ in range(z)]

        def heard_canonical(self, ids, mode):
            return ids[0] % 2 == 0  # even ids are "in key"

        def in_tonic(self, ids, key):
            return ids + [key[0]]

    def draw(k):
        fake.drawn.append(k)
        return k

    fake = Fake([2, 3, 5, 4, 7, 9, 11])
    out = MidiStruct.decode_in_key(fake, draw, 3, (7, "major"), tries=3)
    # draw 1: 2 (in), 3, 5 (off) -> draw 2 for both: 4 (in), 7 (off) -> draw 3 for the last: 9, kept though off
    assert fake.drawn == [3, 2, 1] and out == [[2, 7], [4, 7], [9, 7]]
    fake = Fake([3, 5])
    assert MidiStruct.decode_in_key(fake, draw, 2, None, tries=4) == [[3], [5]]  # no key asked: as drawn
    fake = Fake([3, 5])
    assert MidiStruct.decode_in_key(fake, draw, 2, (7, "major"), tries=1) == [[3, 7], [5, 7]]


def test_sample_refuses_fewer_than_one_try(checkpoint):
    from midistruct.generation.pipeline import InputError, MidiStruct

    ms = MidiStruct.from_pretrained(checkpoint, device="cpu")
    with pytest.raises(InputError, match="tries"):
        ms.sample(1, tries=0)

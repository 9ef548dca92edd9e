"""Song form (issue 16, midistruct.form): synthetic songs with known sections, the files `midistruct form`
writes, bad input, the codes path with the tiny session checkpoint, and one real POP909 song.

Two kinds of synthetic song: ``phrase_song`` (every bar of a section its own chord and rhythm, as in music,
so a section is found by where it repeats) and ``form_song`` (every bar of a section alike, so a section is
found by where the bars change; what Foote's novelty looks for)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import symusic

from midistruct.cli import main
from midistruct.form import FormError
from midistruct.form.analysis import Settings, analyse
from midistruct.form.bars import bar_grid, note_features
from midistruct.form.codes import window_starts

TPQ = 480
BAR = 4 * TPQ
# Distinct material per section letter: pitches (a different key each) and onsets in beats (a different rhythm).
MATERIAL = {
    "A": ([60, 64, 67, 72], [0, 1, 2, 3]),
    "B": ([61, 66, 69, 73], [0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5]),
    "C": ([62, 65, 70, 74], [0, 1.5, 2, 3.5]),
}


def form_song(plan: str = "ABAC", *, bars: int = 8, pickup: bool = False) -> symusic.Score:
    """A 4/4 song of ``bars``-bar sections in the order of ``plan``; a section's bars alternate two figures of
    its material, so the bars inside a section differ too. ``pickup``: one upbeat note before bar 0's line."""
    score = symusic.Score(TPQ)
    score.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    score.tempos.append(symusic.Tempo(0, 100.0))
    track = symusic.Track(name="piano", program=0)
    for s, letter in enumerate(plan):
        pitches, beats = MATERIAL[letter]
        for k in range(bars):
            start = (s * bars + k) * BAR
            figure = pitches if k % 2 == 0 else pitches[::-1]
            for i, beat in enumerate(beats):
                track.notes.append(symusic.Note(start + int(beat * TPQ), TPQ // 2, figure[i % len(figure)], 80))
            track.notes.append(symusic.Note(start, BAR, pitches[0] - 24, 70))  # a bass note a bar
    if pickup:  # the pickup sits in bar 0 (the file's first bar is the upbeat bar)
        for note in track.notes:
            note.time += BAR
        track.notes.append(symusic.Note(BAR - TPQ, TPQ, 67, 80))
    score.tracks.append(track)
    return score


def phrase_song(plan: str = "ABACAB", *, bars: int = 8, repeats: bool = True) -> symusic.Score:
    """A 4/4 song of ``bars``-bar sections in the order of ``plan``, a melody and a chord track. Each bar has its
    own chord and melody rhythm (drawn from a generator seeded by the section's letter), so the bars inside a
    section differ and a letter's section is the same each time; ``repeats=False`` seeds every section apart
    (a through-composed song: nothing repeats)."""
    score = symusic.Score(TPQ)
    score.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    melody, chords = symusic.Track(name="melody", program=0), symusic.Track(name="chords", program=0)
    for s, letter in enumerate(plan):
        rng = np.random.default_rng(ord(letter) if repeats else 1000 + s)
        for k in range(bars):
            start = (s * bars + k) * BAR
            root = int(rng.integers(0, 12))
            chords.notes.extend(symusic.Note(start, BAR, 48 + root + step, 70) for step in (0, 4, 7))
            for eighth in sorted(rng.choice(8, size=int(rng.integers(3, 7)), replace=False).tolist()):
                pitch = 60 + int(rng.integers(0, 12))
                melody.notes.append(symusic.Note(start + eighth * TPQ // 2, TPQ // 2, pitch, 80))
    score.tracks.extend([melody, chords])
    return score


def bar_labels(form) -> list[str]:
    return [s.label for s in form.sections for _ in range(s.start_bar, s.end_bar)]


def renamed(labels: list[str]) -> list[str]:
    """The labels renamed A, B, C ... in order of first appearance (the pattern, whatever the letters)."""
    names: dict[str, str] = {}
    return [names.setdefault(label, "ABCDEFGH"[len(names)]) for label in labels]


FOOTE = Settings(method="foote")


@pytest.mark.parametrize("features", ["tracks", "notes"])
def test_repetition_finds_the_sections_and_labels_of_abacab(features):
    form = analyse(phrase_song("ABACAB"), settings=Settings(features=features))
    assert form.boundaries == [0, 8, 16, 24, 32, 40, 48]
    assert [s.label for s in form.sections] == ["A", "B", "A", "C", "A", "B"]
    assert [(s.start_qn, s.end_qn) for s in form.sections[:2]] == [(0, 32), (32, 64)]
    assert form.novelty.shape == (48,) and form.novelty.max() == 1 and form.novelty[0] == 0


def test_foote_misses_sections_whose_bars_differ_inside():
    """Why repetition is the default: Foote's novelty sees a change at every chord, not where sections repeat."""
    assert analyse(phrase_song("ABACAB"), settings=FOOTE).boundaries != [0, 8, 16, 24, 32, 40, 48]


def test_a_song_that_never_repeats_is_one_section():
    """Through-composed (every bar new, nothing comes back): no boundaries are invented."""
    form = analyse(phrase_song("ABCDEFGH", repeats=False))
    assert [(s.start_bar, s.end_bar, s.label) for s in form.sections] == [(0, 64, "A")]
    assert not form.novelty.any()


def test_a_pickup_bar_before_the_phrases_is_a_section_of_its_own():
    song = phrase_song("ABACAB").shift_time(BAR)  # the phrases start at bar 1; bar 0 holds an upbeat
    song.tracks[0].notes.append(symusic.Note(BAR - TPQ, TPQ, 67, 80))
    form = analyse(song)
    assert form.boundaries == [0, 1, 9, 17, 25, 33, 41, 49]
    assert renamed([s.label for s in form.sections][1:]) == list("ABACAB")


def test_foote_finds_the_sections_of_abac():
    form = analyse(form_song("ABAC"), settings=FOOTE)
    assert form.boundaries == [0, 8, 16, 24, 32]
    assert [s.label for s in form.sections] == ["A", "B", "A", "C"]
    assert [(s.start_qn, s.end_qn) for s in form.sections] == [(0, 32), (32, 64), (64, 96), (96, 128)]


def test_a_repeated_section_is_one_label_wherever_the_boundaries_fall():
    """A A B A: bars 0-15 and 24-31 are A, bars 16-23 B (whether the two first A's are one section or two)."""
    form = analyse(form_song("AABA"))
    assert bar_labels(form) == ["A"] * 16 + ["B"] * 8 + ["A"] * 8
    assert {16, 24} <= set(form.boundaries)


def test_foote_a_pickup_bar_is_its_own_bar_and_the_sections_follow_it():
    form = analyse(form_song("ABAC", pickup=True), settings=FOOTE)
    assert form.boundaries[1:] == [1, 9, 17, 25, 33] or form.boundaries[1:] == [9, 17, 25, 33]
    assert renamed(bar_labels(form)[1:]) == ["A"] * 8 + ["B"] * 8 + ["A"] * 8 + ["C"] * 8


@pytest.mark.parametrize("method", ["repetition", "foote"])
@pytest.mark.parametrize("plan", ["AAAA", "ABC"])
def test_one_repeated_section_or_no_repetition_gives_an_answer(plan, method):
    """Sections whose bars are all alike: one section repeated is one label; three that differ are three."""
    form = analyse(form_song(plan), settings=Settings(method=method))
    labels = bar_labels(form)
    assert len(labels) == 8 * len(plan)
    if plan == "AAAA":
        assert set(labels) == {"A"}
    else:
        assert labels == ["A"] * 8 + ["B"] * 8 + ["C"] * 8


def test_a_phrase_played_four_times_is_four_sections_of_one_label():
    form = analyse(phrase_song("AAAA"))
    assert form.boundaries == [0, 8, 16, 24, 32] and {s.label for s in form.sections} == {"A"}


def test_meter_change_tempo_change_and_one_bar_songs():
    song = form_song("AB")
    song.time_signatures.append(symusic.TimeSignature(8 * BAR, 3, 4))  # B's bars are 3/4 from bar 8 on
    song.tempos.append(symusic.Tempo(8 * BAR, 140.0))
    grid = bar_grid(song)
    assert grid[8] == 8 * BAR and grid[9] - grid[8] == 3 * TPQ
    assert analyse(song).sections[0].start_bar == 0
    one = symusic.Score(TPQ)
    one.tracks.append(symusic.Track(name="p", program=0))
    one.tracks[0].notes.append(symusic.Note(0, TPQ, 60, 80))
    assert [(s.start_bar, s.end_bar, s.label) for s in analyse(one).sections] == [(0, 1, "A")]


def test_note_features_are_unit_histograms_and_empty_bars_are_zero():
    song = form_song("A", bars=2)
    song.tracks[0].notes.append(symusic.Note(3 * BAR, TPQ, 60, 80))  # bar 2 empty, bar 3 one note
    x = note_features(song, bar_grid(song))
    assert x.shape == (4, 12 + 16)
    assert np.allclose(np.linalg.norm(x[[0, 1, 3], :12], axis=1), 1) and not x[2].any()
    assert x[3, 0] == 1 and x[3, 12] == 1  # pitch class C, onset on the bar line


def test_an_upbeat_counts_in_the_bar_it_leads_into():
    song = symusic.Score(TPQ)
    song.tracks.append(symusic.Track(name="melody", program=0))
    song.tracks[0].notes.extend([symusic.Note(BAR - TPQ // 2, TPQ // 2, 67, 80),  # the last eighth of bar 0
                                 symusic.Note(BAR, TPQ, 60, 80), symusic.Note(2 * BAR - TPQ, TPQ, 64, 80)])
    grid = bar_grid(song)
    assert grid.tolist() == [0, BAR, 2 * BAR]
    plain, shifted = note_features(song, grid), note_features(song, grid, pickup=0.125)
    assert plain[0, 7] == 1 and plain[1, [0, 4]].all()
    assert not shifted[0].any() and shifted[1, [7, 0, 4]].all()  # bar 1 holds the upbeat; E at beat 4 stays
    assert np.flatnonzero(shifted[1, 12:]).tolist() == [0, 2, 14]  # sixteenths from an eighth before the bar line


def test_phrase_boundaries_prefer_4_bar_phrases_and_invent_none():
    from midistruct.form.segment import phrase_boundaries

    curve = np.zeros(16)
    assert phrase_boundaries(curve) == [0, 16]
    curve[[4, 8, 12]] = 1.0
    assert phrase_boundaries(curve) == [0, 4, 8, 12, 16]
    off = np.zeros(16)
    off[5] = 0.3  # gains 0.3 - 0.1 but makes two sections of 5 and 11 bars (0.3 each): not worth it
    assert phrase_boundaries(off) == [0, 16]
    off[5] = 1.0
    assert phrase_boundaries(off) == [0, 5, 16]


def test_track_features_are_each_tracks_histograms_side_by_side():
    song = phrase_song("AB", bars=2)
    song.tracks.append(symusic.Track(name="kit", program=0, is_drum=True))  # drums and empty tracks count for none
    song.tracks[-1].notes.append(symusic.Note(0, TPQ, 36, 100))
    song.tracks.append(symusic.Track(name="empty", program=0))
    grid = bar_grid(song)
    x = note_features(song, grid, per_track=True)
    assert x.shape == (4, 2 * (12 + 16))
    melody, chords = song.copy(), song.copy()
    melody.tracks, chords.tracks = [song.tracks[0]], [song.tracks[1]]
    assert np.array_equal(x, np.concatenate([note_features(melody, grid), note_features(chords, grid)], axis=1))


def test_cli_writes_json_png_and_markers_that_survive_a_reread(tmp_path, capsys):
    path = tmp_path / "song.mid"
    phrase_song("ABAC").dump_midi(str(path))
    assert main(["form", str(path), "-o", str(tmp_path / "out"), "--plot", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    written = json.loads((tmp_path / "out" / "form.json").read_text())
    assert [s["label"] for s in written["sections"]] == ["A", "B", "A", "C"]
    assert written["bars"] == len(written["novelty"]) == 32
    assert written["settings"]["features"] == "tracks" and written["settings"]["method"] == "repetition"
    assert printed["sections"] == written["sections"] and printed["outputs"]["plot"].endswith("form.png")
    assert (tmp_path / "out" / "form.png").read_bytes()[:4] == b"\x89PNG"
    marked = symusic.Score(str(tmp_path / "out" / "song.form.mid"))
    assert [(m.time, m.text) for m in marked.markers] == [(0, "A"), (8 * BAR, "B"), (16 * BAR, "A"), (24 * BAR, "C")]
    assert marked.note_num() == phrase_song("ABAC").note_num()


def test_cli_table_and_time_signature(tmp_path, capsys):
    path = tmp_path / "song.mid"
    form_song("ABAC").dump_midi(str(path))
    assert main(["form", str(path), "-o", str(tmp_path), "--time-signature", "2/4", "--method", "foote",
                 "--features", "notes"]) == 0
    out = capsys.readouterr().out
    assert "64 bars" in out and "A         1-16" in out  # 2/4 bars: twice as many
    assert "notes features, foote boundaries" in out
    assert not (tmp_path / "form.png").exists()


@pytest.mark.parametrize("args, message", [
    (["missing.mid"], "missing.mid: no such file"),
    (["notmidi.mid"], "unreadable MIDI"),
    (["empty.mid"], "empty file"),
    (["drums.mid"], "no pitched notes"),
    (["song.mid", "--time-signature", "4/5"], "bad time signature '4/5'"),
    (["song.mid", "--features", "codes"], "--features codes needs a model"),
    (["a", "b", "c"], "form takes [CHECKPOINT] MIDI, got 3 paths"),
])
def test_bad_input_is_one_line_and_loses_nothing(tmp_path, capsys, args, message):
    (tmp_path / "notmidi.mid").write_text("not a MIDI file")
    (tmp_path / "empty.mid").write_bytes(b"")
    form_song("A", bars=2).dump_midi(str(tmp_path / "song.mid"))
    drums = symusic.Score(TPQ)
    drums.tracks.append(symusic.Track(name="kit", program=0, is_drum=True))
    drums.tracks[0].notes.append(symusic.Note(0, TPQ, 36, 100))
    drums.dump_midi(str(tmp_path / "drums.mid"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "form.json").write_text("an earlier result")
    paths = [str(tmp_path / a) if a.endswith(".mid") else a for a in args]
    assert main(["form", *paths, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert (out / "form.json").read_text() == "an earlier result" and len(list(out.iterdir())) == 1


def test_settings_refuse_unknown_features_and_methods():
    with pytest.raises(FormError, match="unknown features 'chords'; valid: tracks, notes, codes"):
        Settings(features="chords")
    with pytest.raises(FormError, match="unknown method 'kcpd'; valid: repetition, foote"):
        Settings(method="kcpd")


def test_window_starts_cover_every_bar():
    assert window_starts(3, 4, 1) == [0]
    assert window_starts(10, 4, 1) == list(range(7))
    assert window_starts(10, 4, 4) == [0, 4, 6]  # the last window ends at the last bar


def test_codes_average_overlapping_windows(checkpoint, tmp_path, capsys):
    """The tiny session model (4-bar windows): one code per bar, whatever the hop; the CLI runs the codes path."""
    from midistruct.form.codes import bar_codes
    from midistruct.generation.pipeline import MidiStruct

    ms = MidiStruct.from_pretrained(checkpoint)
    song = form_song("ABA", bars=4)
    one, four = bar_codes(ms, song, hop=1).x, bar_codes(ms, song, hop=ms.bars).x
    assert one.shape == four.shape == (12, ms.model.config.latent_dim_bar)
    assert not np.allclose(one, four)  # averaged over other windows
    with_context = bar_codes(ms, song, hop=1, segment_weight=1.0).x
    assert with_context.shape == (12, ms.model.config.latent_dim_bar + ms.model.config.latent_dim_segment)
    path = tmp_path / "song.mid"
    song.dump_midi(str(path))
    assert main(["form", str(checkpoint), str(path), "-o", str(tmp_path / "out"), "--device", "cpu", "--json"]) == 0
    written = json.loads((tmp_path / "out" / "form.json").read_text())
    assert written["bars"] == 12 and written["settings"]["features"] == "codes"
    assert written["settings"]["checkpoint"] == str(checkpoint)


@pytest.mark.shared_data
def test_a_real_pop909_song_against_its_labels(shared_datasets, tmp_path):
    """Song 001, aligned to its phrase labels: each track's notes and the repetition method find the
    annotators' boundaries (the first method, pooled notes and Foote's peaks, only some of them)."""
    from midistruct.corpus.pop909 import read_index
    from midistruct.form.analysis import form_of
    from midistruct.form.evaluate import aligned_score, reference, scores

    pop909, phrases = shared_datasets / "pop909" / "songs", shared_datasets / "pop909-phrases" / "songs"
    ref = reference("001", pop909=pop909, phrases=phrases, index_row=read_index(pop909)["001"])
    assert ref.meter == "4/4" and ref.bars == 71 and ref.bounds[0][:4] == (0, 4, 8, 16)
    score = aligned_score(symusic.Score(str(pop909 / "001" / "001.mid")), ref)
    grid = bar_grid(score, bars=ref.bars)
    settings = Settings()
    x = note_features(score, grid, per_track=True, pickup=settings.pickup)
    form = form_of(x, grid, tpq=score.tpq, settings=settings)
    found = scores(ref, form.boundaries, [s.label for s in form.sections], annotator=0)
    assert found["f_exact"] > 0.9 and found["f_pairwise"] > 0.7
    first = form_of(note_features(score, grid), grid, tpq=score.tpq, settings=Settings(method="foote"))
    found = scores(ref, first.boundaries, [s.label for s in first.sections], annotator=0)
    assert found["f_1bar"] > 0.4 and 0 <= found["f_exact"] <= found["f_1bar"]
    agree = scores(ref, list(ref.bounds[1]), list(ref.letters[1]), annotator=0)
    assert agree["f_1bar"] > 0.8
    assert main(["form", str(pop909 / "001" / "001.mid"), "-o", str(tmp_path), "--time-signature", "4/4"]) == 0


def test_windows_too_long_for_the_model_fall_back_to_bars_alone(checkpoint, monkeypatch):
    """A song denser than the model reads still gets one code per bar, and says how many windows it left out."""
    from midistruct.form.codes import bar_codes
    from midistruct.generation.pipeline import MidiStruct

    ms = MidiStruct.from_pretrained(checkpoint)
    song = form_song("AB", bars=4)
    ids = ms.piece_encoder.tokenize(song)
    per_bar = np.diff(np.append(ms.vocab.bar_starts(ids), len(ids)))
    monkeypatch.setattr(ms.model.config, "max_positions", int(per_bar.max()) + 1)  # one bar fits, two do not
    codes = bar_codes(ms, song, hop=1)
    assert codes.x.shape[0] == 8 and codes.dropped_windows == 8 - ms.bars + 1 and codes.cut_bars == 0
    monkeypatch.setattr(ms.model.config, "max_positions", 4)  # not even a bar fits: every bar is cut short
    codes = bar_codes(ms, song, hop=1)
    assert codes.x.shape[0] == 8 and codes.cut_bars == 8 and np.isfinite(codes.x).all()

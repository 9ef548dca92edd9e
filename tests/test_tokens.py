"""Validation, tokenization round trips and bar windows, on synthetic and real music."""

from __future__ import annotations

import numpy as np
import pytest
import symusic
from scores import make_score, note_tuples

from midistruct.config import load_config
from midistruct.tokens.encode import Encoded, PieceEncoder, Skipped
from midistruct.tokens.segment import bar_start_ticks, cut_windows
from midistruct.tokens.tokenizer import decode_ids
from midistruct.tokens.validate import Skip, clean_score

METERS = [(3, 4), (6, 8), (2, 2), (4, 4)]


def _encoder(*overrides: str) -> PieceEncoder:
    return PieceEncoder(load_config(None, ["segments.bars=2", "segments.min_notes=0", *overrides]))


def assert_windows_round_trip(enc: PieceEncoder, score: symusic.Score) -> int:
    """Every window decodes to exactly the quantized input notes of its bars. Returns #notes checked."""
    encoded = enc.encode_score(score)
    assert isinstance(encoded, Encoded)
    merge = enc.cfg.tokenizer.multitrack == "merge"
    quantized = enc.tokenizer.preprocess_score(clean_score(score, drop_drums=True, merge=merge))
    n_bars = int(encoded.bars[-1]) + 1
    starts = bar_start_ticks(quantized.time_signatures, quantized.tpq, n_bars + 1)
    checked = 0
    for w in encoded.windows:
        decoded = decode_ids(enc.tokenizer, encoded.ids[w.start : w.end])
        bars = enc.cfg.segments.bars
        expected = note_tuples(quantized, start_tick=int(starts[w.bar]), end_tick=int(starts[w.bar + bars]))
        assert note_tuples(decoded) == expected, f"window at bar {w.bar}"
        checked += len(expected)
    return checked


@pytest.mark.parametrize("meter", METERS, ids=lambda m: f"{m[0]}-{m[1]}")
def test_round_trip_synthetic_meters(meter):
    enc = _encoder()
    assert assert_windows_round_trip(enc, make_score(meter, bars=6, seed=1)) > 10


@pytest.mark.parametrize("meter", METERS, ids=lambda m: f"{m[0]}-{m[1]}")
def test_meter_survives_tokenization(meter):
    """/2 and compound meters keep their time signature (miditok maps unlisted ones to 4/4)."""
    enc = _encoder()
    encoded = enc.encode_score(make_score(meter, bars=4))
    decoded = decode_ids(enc.tokenizer, encoded.ids[encoded.windows[0].start : encoded.windows[0].end])
    assert [(ts.numerator, ts.denominator) for ts in decoded.time_signatures] == [meter]


def test_round_trip_multitrack_programs():
    enc = _encoder("tokenizer.multitrack=programs")
    score = make_score((4, 4), bars=4, tracks=3, drums=True)
    assert assert_windows_round_trip(enc, score) > 20
    decoded = decode_ids(enc.tokenizer, enc.encode_score(score).ids)
    assert sorted(t.program for t in decoded.tracks) == [0, 33, 48]  # drums dropped by default


def test_merge_folds_tracks_into_one():
    enc = _encoder()
    score = make_score((4, 4), bars=4, tracks=2)
    decoded = decode_ids(enc.tokenizer, enc.encode_score(score).ids)
    assert len(decoded.tracks) == 1
    assert decoded.tracks[0].note_num() == sum(t.note_num() for t in score.tracks)


def test_bar_index_and_windows():
    vocab = _encoder().vocab
    assert vocab.bar_id == 4  # miditok's REMI: the 4 special tokens, then Bar
    ids = np.array([4, 9, 7, 4, 9, 4, 9, 8, 8, 4, 9, 7])
    assert vocab.bar_starts(ids).tolist() == [0, 3, 5, 9]
    assert vocab.bar_index(ids).tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 3]
    windows = cut_windows(vocab.bar_starts(ids), len(ids), bars=2, step=1)
    assert [(w.bar, w.start, w.end) for w in windows] == [(0, 0, 5), (1, 3, 9), (2, 5, 12)]
    assert [w.bar for w in cut_windows(vocab.bar_starts(ids), len(ids), bars=3, step=2)] == [0]


def test_bar_start_ticks_with_meter_change():
    ts = [symusic.TimeSignature(0, 3, 4), symusic.TimeSignature(2 * 3 * 480, 2, 2)]
    assert bar_start_ticks(ts, 480, 4).tolist() == [0, 1440, 2880, 2880 + 1920]


def test_window_bar_ids_are_relative():
    enc = _encoder("segments.hop=1")
    encoded = enc.encode_score(make_score((3, 4), bars=5))
    assert len(encoded.windows) == 4  # 5 bars, 2-bar windows, hop 1
    for w in encoded.windows:
        rel = encoded.bars[w.start : w.end] - w.bar
        assert rel.min() == 0 and rel.max() == 1
        assert encoded.ids[w.start] == enc.bar_id


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (lambda: symusic.Score(480), "no notes"),
        (lambda: make_score(bars=4, tracks=0, drums=True), "drums only"),
        (lambda: _with_tempo(make_score(bars=4), 2.0), "absurd tempo"),
        (lambda: _with_meter(make_score(bars=4), (5, 16)), "unsupported meter: 5/16"),
        (lambda: make_score(bars=1), "shorter than one window"),
    ],
)
def test_skip_reasons(build, reason):
    enc = _encoder("validation.min_notes=1")
    with pytest.raises(Skip, match=f"^{reason}"):
        enc.encode_score(build())


def test_too_few_notes():
    with pytest.raises(Skip, match=r"^too few notes \(3 < 8\)"):
        _encoder().encode_score(make_score(bars=1))


def test_too_long_is_skipped():
    enc = _encoder("validation.max_seconds=5")
    with pytest.raises(Skip, match="too long"):
        enc.encode_score(make_score(bars=8))  # 8 bars of 4/4 at 120 qpm = 16 s


def test_encode_file_never_raises(tmp_path):
    enc = _encoder()
    (tmp_path / "empty.mid").write_bytes(b"")
    (tmp_path / "junk.mid").write_bytes(b"MThd this is not midi at all")
    assert enc.encode_file(tmp_path / "empty.mid") == Skipped("empty file")
    assert enc.encode_file(tmp_path / "missing.mid").reason.startswith("cannot read file")
    assert enc.encode_file(tmp_path / "junk.mid").reason.startswith("unreadable MIDI")


def _with_tempo(score, qpm):
    score.tempos.append(symusic.Tempo(480, qpm))
    return score


def _with_meter(score, meter):
    score.time_signatures.append(symusic.TimeSignature(480 * 8, *meter))
    return score


# ---- real music -----------------------------------------------------------------


@pytest.mark.shared_data
@pytest.mark.parametrize(
    "rel",
    [
        "nottingham/midi/melody/jigs10.mid",
        "nottingham/midi/melody/ashover1.mid",  # alternating 3/4 and 2/4
        "nottingham/midi/chords/waltzes5.mid",
        "pop909/songs/001/001.mid",
        "miditok-test-midis/MIDIs_one_track/6354774_Macabre Waltz.mid",
    ],
)
def test_round_trip_real_files(shared_datasets, rel):
    enc = _encoder()
    score = symusic.Score(str(shared_datasets / rel))
    assert assert_windows_round_trip(enc, score) > 50


@pytest.mark.shared_data
def test_round_trip_real_multitrack(shared_datasets):
    enc = _encoder("tokenizer.multitrack=programs")
    score = symusic.Score(str(shared_datasets / "miditok-test-midis/MIDIs_multitrack/Funkytown.mid"))
    assert assert_windows_round_trip(enc, score) > 500


@pytest.mark.shared_data
def test_corrupted_file_is_skipped(shared_datasets):
    enc = _encoder()
    for path in (shared_datasets / "miditok-test-midis/MIDIs_corrupted").iterdir():
        result = enc.encode_file(path)
        assert isinstance(result, Skipped) and result.reason.startswith("unreadable MIDI")


def test_time_signature_tag_replaces_file_meters():
    enc = _encoder("segments.bars=1")
    score = make_score((1, 4), bars=16)  # a file that claims 1/4 throughout (as most POP909 files do)
    as_file = enc.encode_score(score)
    fixed = enc.encode_score(score, time_signature="4/4")
    assert len(as_file.windows) == 16 and len(fixed.windows) == 4
    decoded = decode_ids(enc.tokenizer, fixed.ids)
    assert [(t.numerator, t.denominator) for t in decoded.time_signatures] == [(4, 4)]
    assert note_tuples(decoded) == note_tuples(decode_ids(enc.tokenizer, as_file.ids))
    with pytest.raises(Skip, match="bad time_signature"):
        enc.encode_score(score, time_signature="four")


def _token_names(enc, ids) -> list[str]:
    return [enc.tokenizer[int(i)] for i in ids]


def test_chords_in_pitch_order_whatever_the_file_order():
    """Notes starting together (within the quantization step) come out low to high, duplicates once:
    the file's order (time in ticks, then duration) does not leak into the tokens."""
    score = symusic.Score(480)
    score.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    track = symusic.Track(name="p", program=0)
    # a C major chord written top down, each note a few ticks later, with a doubled E
    for k, (pitch, duration) in enumerate([(67, 480), (64, 960), (60, 240), (64, 960)]):
        track.notes.append(symusic.Note(k * 5, duration, pitch, 90))
    score.tracks.append(track)
    for k in range(8):
        track.notes.append(symusic.Note(480 * (k + 1), 240, 72, 90))  # a line so the piece is long enough
    enc = _encoder("segments.bars=1")
    pitches = [t for t in _token_names(enc, enc.encode_score(score).ids) if t.startswith("Pitch_")]
    assert pitches[:3] == ["Pitch_60", "Pitch_64", "Pitch_67"] and pitches.count("Pitch_64") == 1
    enc = _encoder("segments.bars=1", "tokenizer.sort_chords=false")
    unsorted = [t for t in _token_names(enc, enc.encode_score(score).ids) if t.startswith("Pitch_")]
    assert unsorted[:4] != ["Pitch_60", "Pitch_64", "Pitch_64", "Pitch_67"] and unsorted.count("Pitch_64") == 2


def test_sort_chords_off_keeps_the_old_settings_hash():
    """Shards prepared before the option existed were made with it off: their hash must not change."""
    import hashlib
    import json

    from midistruct.tokens.tokenizer import settings_hash

    off = load_config(None, ["tokenizer.sort_chords=false"]).tokenizer
    old = {k: v for k, v in off.model_dump(mode="json").items() if k != "sort_chords"}
    assert settings_hash(off) == hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()[:16]
    assert settings_hash(load_config(None, []).tokenizer) != settings_hash(off)


def test_downbeat_moves_bar_lines_onto_the_beat():
    """A file whose beats sit 40 ticks after the grid (POP909's first beat is at 0.055 s): given the
    first bar line in seconds, 8th-note onsets land on positions 0, 4, ... instead of 1, 5, ..."""
    from midistruct.tokens.downbeat import tick_at as _tick_at

    score = symusic.Score(480)
    score.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    score.tempos.append(symusic.Tempo(0, 90.0))
    track = symusic.Track(name="p", program=0)
    for k in range(16):
        track.notes.append(symusic.Note(40 + 240 * k, 240, 60 + k % 5, 90))
    score.tracks.append(track)
    seconds = 40 / 480 * 60 / 90
    assert _tick_at(score, seconds) == 40
    enc = _encoder("segments.bars=1")
    positions = lambda ids: {int(t.split("_")[1]) for t in _token_names(enc, ids) if t.startswith("Position_")}
    assert positions(enc.encode_score(score).ids) == set(range(1, 32, 4))
    aligned = enc.encode_score(score, downbeat=seconds)
    assert positions(aligned.ids) == set(range(0, 32, 4)) and len(aligned.windows) == 2
    # a beat already on the grid, and a later bar line whose notes would start before 0: moved later
    assert enc.encode_score(score, downbeat=0.0).ids.tolist() == enc.encode_score(score).ids.tolist()
    late = enc.encode_score(score, downbeat=seconds + 4 * 60 / 90)  # the second bar line
    assert positions(late.ids) == set(range(0, 32, 4))


def test_tick_at_follows_a_tempo_change():
    from midistruct.tokens.downbeat import tick_at as _tick_at

    score = symusic.Score(480)
    score.tempos.extend([symusic.Tempo(0, 120.0), symusic.Tempo(960, 60.0)])  # 2 beats at 120, then 60
    assert _tick_at(score, 0.5) == 480 and _tick_at(score, 1.0) == 960 and _tick_at(score, 2.0) == 1440


def _performed(score: symusic.Score, seed: int = 0) -> symusic.Score:
    """``score`` with velocities drawn from 20..120."""
    rng = np.random.default_rng(seed)
    out = score.copy()
    for track in out.tracks:
        for note in track.notes:
            note.velocity = int(rng.integers(20, 121))
    return out


@pytest.mark.parametrize("bins", [16, 32])
def test_velocities_survive_tokenization_within_a_bin(bins):
    """Issue 19 item 4: with velocity tokens, every note's velocity comes back within its bin."""
    cfg = load_config("tiny", ["tokenizer.use_velocities=true", f"tokenizer.num_velocities={bins}"])
    encoder = PieceEncoder(cfg)
    score = _performed(make_score((4, 4), bars=4, seed=2))
    read = encoder.prepared(score)
    back = decode_ids(encoder.tokenizer, encoder.tokenize(score))
    ref = sorted((n.time * back.tpq // read.tpq, n.pitch, n.velocity) for t in read.tracks for n in t.notes)
    got = sorted((n.time, n.pitch, n.velocity) for t in back.tracks for n in t.notes)
    assert [r[:2] for r in ref] == [g[:2] for g in got]
    error = np.abs(np.array([r[2] for r in ref]) - np.array([g[2] for g in got]))
    assert error.max() <= 127 / bins
    assert np.corrcoef([r[2] for r in ref], [g[2] for g in got])[0, 1] > 0.98
    without = PieceEncoder(load_config("tiny"))  # the shipped settings: one velocity for every note
    assert len({n.velocity for t in decode_ids(without.tokenizer, without.tokenize(score)).tracks
                for n in t.notes}) == 1


def test_finer_positions_keep_triplets_the_default_grid_moves():
    """12 positions per beat keep a triplet eighth's onset; the default 8 move it to the nearest 32nd."""
    score = symusic.Score(480)
    score.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    score.tempos.append(symusic.Tempo(0, 120.0))
    track = symusic.Track(name="p", program=0)
    for k in range(12):  # triplet eighths for a bar, then a long note so the piece lasts two bars
        track.notes.append(symusic.Note(k * 160, 160, 60 + k % 5, 90))
    track.notes.append(symusic.Note(1920, 1920, 60, 90))
    score.tracks.append(track)
    onsets = {}
    for res in (8, 12):
        encoder = PieceEncoder(load_config("tiny", [f"tokenizer.beat_res=[[0, 4, {res}], [4, 12, 4]]"]))
        back = decode_ids(encoder.tokenizer, encoder.tokenize(score))
        onsets[res] = sorted(n.time / back.tpq for t in back.tracks for n in t.notes)[:12]
    exact = [k / 3 for k in range(12)]
    assert np.allclose(onsets[12], exact) and not np.allclose(onsets[8], exact)


@pytest.mark.shared_data
def test_a_pop909_songs_velocities_survive_with_velocity_tokens(shared_datasets):
    """Real music (issue 19 item 4): POP909 song 001 as prepare reads it, with 32 velocity bins."""
    from midistruct.corpus import iter_pieces
    from midistruct.metrics.performance import measure

    pieces = list(iter_pieces({"kind": "pop909", "path": str(shared_datasets / "pop909"), "versions": False,
                               "limit": 1}))
    found = measure(load_config("pop909-4bar", ["tokenizer.use_velocities=true"]), pieces, window_tokens=1024)
    shipped = measure(load_config("pop909-4bar"), pieces, window_tokens=1024)
    assert found["songs"] == 1 and found["notes_kept"] > 0.95 and found["velocity_correlation"] > 0.99
    assert shipped["velocity_correlation"] == 0.0 and shipped["velocity_mae"] > 5 * found["velocity_mae"]
    assert 1.2 < found["tokens_per_bar"] / shipped["tokens_per_bar"] < 1.6  # measured 1.39 over 200 songs

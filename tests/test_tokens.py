"""Validation, tokenization round trips and bar windows, on synthetic and real music."""

from __future__ import annotations

import numpy as np
import pytest
import symusic
from scores import make_score, note_tuples

from midistruct.config import load_config
from midistruct.tokens.encode import Encoded, PieceEncoder, Skipped
from midistruct.tokens.segment import bar_index, bar_start_ticks, bar_starts, cut_windows
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
    ids = np.array([4, 9, 7, 4, 9, 4, 9, 8, 8, 4, 9, 7])  # Bar token = 4
    assert bar_starts(ids, 4).tolist() == [0, 3, 5, 9]
    assert bar_index(ids, 4).tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 3]
    windows = cut_windows(bar_starts(ids, 4), len(ids), bars=2, step=1)
    assert [(w.bar, w.start, w.end) for w in windows] == [(0, 0, 5), (1, 3, 9), (2, 5, 12)]
    assert [w.bar for w in cut_windows(bar_starts(ids, 4), len(ids), bars=3, step=2)] == [0]


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

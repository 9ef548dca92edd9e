"""The evaluation metrics on inputs whose values are known by hand."""

from __future__ import annotations

import numpy as np
import pytest
import symusic

from midistruct.evaluation.smoothness import path_smoothness, pianoroll_distance
from midistruct.metrics import features
from midistruct.metrics.notes import notes_of, transcription_f1, window_quarters
from midistruct.metrics.steps import (
    NO_EVENT,
    NOTE_OFF,
    melody_events,
    monotone_hits,
    onset_agreement,
    onset_pitch_hits,
    step_accuracy,
    step_distance,
)


def notes(*rows):
    """Note array from (onset, duration, pitch) rows in quarter notes."""
    return np.array(rows, dtype=np.float64).reshape(-1, 3)


def test_melody_events_by_hand():
    # C4 for a quarter, a quarter's rest, E4 for an eighth, then G4 straight after for an eighth
    events = melody_events(notes((0, 1, 60), (2, 0.5, 64), (2.5, 0.5, 67)), 16)
    want = [60, NO_EVENT, NO_EVENT, NO_EVENT, NOTE_OFF, NO_EVENT, NO_EVENT, NO_EVENT,
            64, NO_EVENT, 67, NO_EVENT, NOTE_OFF, NO_EVENT, NO_EVENT, NO_EVENT]
    assert events.tolist() == want


def test_melody_events_skyline_keeps_the_top_note_and_a_new_onset_ends_the_previous():
    chord_then_note = notes((0, 2, 60), (0, 2, 64), (0, 2, 67), (1, 1, 72))
    events = melody_events(chord_then_note, 8)
    assert events[0] == 67 and events[4] == 72 and events[8 - 1] == NO_EVENT
    assert (events == NOTE_OFF).sum() == 0  # 72 lasts to step 8, the end of the span


def test_step_accuracy_perfect_shifted_and_empty():
    melody = notes((0, 1, 60), (1, 1, 62), (2, 1, 64), (3, 1, 65))  # four quarters, 16 steps
    assert step_accuracy(melody, melody, n_steps=16) == 1.0
    late = melody.copy()
    late[:, 0] += 0.25  # every onset a 16th late: 4 onsets missed + 4 hold steps turned onsets
    assert step_accuracy(melody, late, n_steps=16) == pytest.approx(8 / 16)
    wrong_pitch = melody.copy()
    wrong_pitch[0, 2] = 61
    assert step_accuracy(melody, wrong_pitch, n_steps=16) == pytest.approx(15 / 16)
    assert step_accuracy(melody, notes(), n_steps=16) == pytest.approx(12 / 16)  # the holds match silence
    assert step_distance(melody, wrong_pitch, n_steps=16) == pytest.approx(1 / 16)


def test_transcription_f1_onsets_and_offsets():
    ref = notes((0, 1, 60), (1, 1, 62), (2, 2, 64))
    assert transcription_f1(ref, ref) == 1.0
    assert transcription_f1(ref, ref, offsets=True) == 1.0
    short = ref.copy()
    short[:, 1] /= 2
    assert transcription_f1(ref, short) == 1.0
    assert transcription_f1(ref, short, offsets=True) == 0.0
    one_wrong = ref.copy()
    one_wrong[1, 2] = 63
    assert transcription_f1(ref, one_wrong) == pytest.approx(2 / 3)
    assert transcription_f1(notes(), notes()) == 1.0 and transcription_f1(ref, notes()) == 0.0


def test_score_lengths_follow_the_meter():
    score = symusic.Score(480)
    score.time_signatures.append(symusic.TimeSignature(0, 3, 4))
    track = symusic.Track()
    track.notes.append(symusic.Note(0, 480, 60, 80))
    track.notes.append(symusic.Note(4 * 480, 240, 62, 80))  # in the second 3/4 bar
    score.tracks.append(track)
    assert window_quarters(score, 2) == 6.0
    assert notes_of(score).tolist() == [[0, 1, 60], [4, 0.5, 62]]


def test_attributes_by_hand():
    chord = notes((0, 1, 60), (0, 1, 64), (0, 1, 67), (1.5, 0.5, 72))
    values = features.measure(chord, 4.0)
    assert values["note_density"] == 1.0
    assert values["pitch_range"] == 12
    assert values["mean_pitch"] == pytest.approx((60 + 64 + 67 + 72) / 4)
    assert values["polyphony"] == pytest.approx((4 * 3 + 2 * 1) / 6)  # 4 steps of 3 notes, 2 of 1
    assert values["syncopation"] == 0.5  # onsets at 0 (on the beat) and 1.5 (off it)
    assert values["scale_consistency"] == 1.0  # C E G C: all in C major (and in F and G major)
    b_flat_major = notes(*[(i, 1, p) for i, p in enumerate((70, 72, 74, 75, 77, 79, 81))])
    assert features.scale_consistency(b_flat_major, 7.0) == 1.0  # key-invariant
    chromatic = notes(*[(i, 1, 60 + i) for i in range(12)])
    assert features.scale_consistency(chromatic, 12.0) == pytest.approx(7 / 12)
    assert features.scale_consistency(notes(), 4.0) == 0.0
    with pytest.raises(KeyError, match="valid: note_density"):
        features.attribute("loudness")


def test_path_smoothness_of_a_monotonic_and_of_a_back_and_forth_path():
    a = notes(*[(i, 1, 60) for i in range(8)])
    b = notes(*[(i, 1, 72) for i in range(8)])
    path = []
    for k in range(9):  # step k replaces the first k notes of A with B's
        mixed = a.copy()
        mixed[:k, 2] = 72
        path.append(mixed)
    smooth = path_smoothness(path, a, b)
    assert smooth["spearman_a"] == pytest.approx(1.0) and smooth["spearman_b"] == pytest.approx(-1.0)
    assert smooth["rising_a"] == 1.0 and smooth["falling_b"] == 1.0
    assert smooth["distance_to_a"][0] == 0.0 and smooth["distance_to_b"][-1] == 0.0
    assert smooth["adjacent_over_endpoints"] == pytest.approx(1 / 8)
    jumpy = [path[0], path[8], path[0], path[8]]
    rough = path_smoothness(jumpy, a, b)
    assert rough["rising_a"] == pytest.approx(2 / 3) and rough["adjacent_over_endpoints"] == pytest.approx(1.0)


def test_pianoroll_distance():
    a = notes((0, 1, 60), (0, 1, 64))
    assert pianoroll_distance(a, a) == 0.0
    assert pianoroll_distance(a, notes((0, 1, 62))) == 1.0
    assert pianoroll_distance(a, notes((0, 1, 60))) == pytest.approx(0.5)
    assert pianoroll_distance(notes(), notes(), n_steps=4) == 0.0


def test_transposition_key_matches_transposed_copies_only():
    from midistruct.evaluation.heldout import transposition_key

    pitch_of = np.full(20, -1)
    pitch_of[10:20] = np.arange(60, 70)  # ids 10..19 are pitches 60..69
    melody = np.array([4, 5, 10, 7, 12, 7, 14])
    up_two = np.array([4, 5, 12, 7, 14, 7, 16])
    other = np.array([4, 5, 10, 7, 13, 7, 14])
    assert transposition_key(melody, pitch_of) == transposition_key(up_two, pitch_of)
    assert transposition_key(melody, pitch_of) != transposition_key(other, pitch_of)
    assert transposition_key(np.array([4, 5, 6]), pitch_of) != transposition_key(np.array([4, 5, 7]), pitch_of)


def test_recurring_windows_found_across_splits():
    from midistruct.config import TokenizerSettings
    from midistruct.evaluation.heldout import recurring_windows
    from midistruct.tokens.tokenizer import build_tokenizer

    tokenizer = build_tokenizer(TokenizerSettings())
    v = tokenizer.vocab

    def window(*pitches):
        ids = [v["Bar_None"], v["TimeSig_4/4"]]
        for k, p in enumerate(pitches):
            ids += [v[f"Position_{4 * k}"], v[f"Pitch_{p}"], v["Duration_0.4.8"]]
        return np.array(ids)

    class Split:
        def __init__(self, windows):
            self.windows_, self.n_windows = windows, len(windows)

        def window(self, i):
            return self.windows_[i], None

    class Shards:
        splits = {"train": Split([window(60, 62, 64), window(70, 71, 72)]),
                  "test": Split([window(65, 67, 69), window(60, 62, 65), window(70, 71, 72)])}

        def tokenizer(self):
            return tokenizer

        def split(self, name):
            return self.splits[name]

    assert recurring_windows(Shards(), split="test").tolist() == [True, False, True]


def test_onset_pitch_hits_count_only_the_true_onsets():
    melody = notes((0, 1, 74), (1, 0.5, 72), (1.5, 0.5, 71), (2, 1, 72), (3, 1, 74))  # 5 onsets, 16 steps
    truth = melody_events(melody, 16)
    assert onset_pitch_hits(truth, truth) == (5, 5)
    monotone = melody.copy()
    monotone[:, 2] = 74  # right rhythm, one pitch: 2 of 5 notes right, yet most steps match
    assert onset_pitch_hits(truth, melody_events(monotone, 16)) == (2, 5)
    assert step_accuracy(melody, monotone, n_steps=16) == pytest.approx(13 / 16)
    late = melody.copy()
    late[:, 0] += 0.25  # right pitches a 16th late: no onset matches
    assert onset_pitch_hits(truth, melody_events(late, 16)) == (0, 5)
    assert onset_pitch_hits(truth, melody_events(notes(), 16)) == (0, 5)


def test_monotone_baseline_is_the_most_common_pitch_share():
    melody = notes((0, 1, 74), (1, 0.5, 72), (1.5, 0.5, 71), (2, 1, 72), (3, 1, 74))
    assert monotone_hits(melody_events(melody, 16)) == (2, 5)  # 74 and 72 twice each
    monotone = melody.copy()
    monotone[:, 2] = 72
    assert monotone_hits(melody_events(melody, 16)) == onset_pitch_hits(melody_events(melody, 16),
                                                                        melody_events(monotone, 16))
    assert monotone_hits(melody_events(notes(), 16)) == (0, 0)


def test_onset_agreement_is_the_rhythm_alone():
    melody = notes((0, 1, 60), (1, 1, 62), (2, 1, 64), (3, 1, 65))
    other_pitches = melody.copy()
    other_pitches[:, 2] += 5
    assert onset_agreement(melody_events(melody, 16), melody_events(other_pitches, 16)) == 1.0
    halves = notes((0, 2, 60), (2, 2, 64))  # 2 of the 4 onsets: 2 steps of 16 disagree
    assert onset_agreement(melody_events(melody, 16), melody_events(halves, 16)) == pytest.approx(14 / 16)


def _melody_ids(tokenizer, rows) -> list[int]:
    """REMI ids of a one-track 4/4 melody from (onset, duration, pitch) rows in quarter notes."""
    score = symusic.Score(480)
    score.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    track = symusic.Track(program=0)
    for onset, duration, pitch in rows:
        track.notes.append(symusic.Note(int(onset * 480), int(duration * 480), pitch, 90))
    score.tracks.append(track)
    return list(tokenizer.encode(score)[0].ids)


def test_free_running_scores_a_monotone_by_its_onset_pitches():
    """A reconstruction with the right rhythm and one pitch: step accuracy high, onset pitch accuracy at the
    monotone baseline; the exact copy scores 1 on everything (issue 14's jig opening, two bars)."""
    from midistruct.config import TokenizerSettings
    from midistruct.tokens.tokenizer import build_tokenizer
    from midistruct.training.validation import score_reconstructions, merge_free_runs

    tokenizer = build_tokenizer(TokenizerSettings())
    tune = [(0, 1, 74), (1, 0.5, 72), (1.5, 0.5, 71), (2, 1, 72), (3, 1, 74), (4, 2, 76), (6, 2, 74)]
    reference = _melody_ids(tokenizer, tune)
    monotone = _melody_ids(tokenizer, [(on, d, 74) for on, d, _ in tune])
    same = score_reconstructions(tokenizer, [reference], [reference])
    assert same["onset_pitch_accuracy"] == same["step_accuracy"] == same["onset_accuracy"] == 1.0
    assert same["monotone_onset_pitch_accuracy"] == pytest.approx(3 / 7) and same["onsets"] == 7
    flat = score_reconstructions(tokenizer, [reference], [monotone])
    assert flat["onset_pitch_accuracy"] == pytest.approx(3 / 7) == flat["monotone_onset_pitch_accuracy"]
    assert flat["onset_accuracy"] == 1.0 and flat["step_accuracy"] == pytest.approx(28 / 32)
    both = merge_free_runs([same, flat])  # pooled over the 14 onsets: (7 + 3) / 14
    assert both["onset_pitch_accuracy"] == pytest.approx(10 / 14) and both["windows"] == 2
    assert both["step_accuracy"] == pytest.approx((1 + 28 / 32) / 2)

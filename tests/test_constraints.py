"""RemiGrammar: a random model sampled under it writes only REMI that decodes and loads in every MIDI library."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from miditok import TokSequence
from transformers import LogitsProcessorList

from midistruct.config import TokenizerSettings
from midistruct.generation.constraints import RemiGrammar
from midistruct.model import MidiStructConfig, MidiStructModel
from midistruct.tokens.remi import RemiVocab
from midistruct.tokens.tokenizer import build_tokenizer, decode_ids

SETTINGS = {
    "merge": {},
    "programs": {"multitrack": "programs"},
    "velocities": {"use_velocities": True},
    "tempos": {"use_tempos": True},
}
ROWS = 20  # one generate call over 20 rows, each with its own random latents: 20 independent samples
N_BARS, NEW_TOKENS = 4, 160
PAD, BOS, EOS, MASK = 0, 1, 2, 3


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Generation here is many tiny ops: one thread is as fast and leaves the machine's other cores alone."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=sorted(SETTINGS))
def tokenizer(request):
    return build_tokenizer(TokenizerSettings(**SETTINGS[request.param]))


@pytest.fixture(scope="module")
def merge_tokenizer():
    return build_tokenizer(TokenizerSettings())


def random_model(tokenizer) -> MidiStructModel:
    torch.manual_seed(0)
    config = MidiStructConfig.tiny(vocab_size=tokenizer.vocab_size, bar_token_id=tokenizer.vocab["Bar_None"],
                                   max_positions=512, max_bars=8)
    return MidiStructModel(config).eval()


def sample(tokenizer, grammar: RemiGrammar | None, *, new_tokens: int = NEW_TOKENS, **generate) -> list[list[int]]:
    """``ROWS`` sequences sampled at temperature 1.5 with no top-k from a random model and random latents;
    each without its BOS, cut after its EOS."""
    model = random_model(tokenizer)
    torch.manual_seed(1)
    z_bar, z_segment = torch.randn(ROWS, N_BARS, 8), torch.randn(ROWS, 16)  # (B, NB, Zb), (B, Zs) of tiny()
    options = {"do_sample": True, "temperature": 1.5, "top_k": 0, "max_new_tokens": new_tokens, **generate}
    processors = LogitsProcessorList([grammar] if grammar is not None else [])
    with torch.no_grad():
        out = model.generate(z_bar=z_bar, z_segment=z_segment, logits_processor=processors, **options)
    rows = []
    for row in out[:, 1:].tolist():
        rows.append(row[: row.index(EOS) + 1] if EOS in row else row)
    return rows


def problems(tokenizer, ids: list[int], *, n_bars: int | None) -> list[str]:
    """What is wrong with one generated sequence; empty when it is valid."""
    found = []
    try:
        decode_ids(tokenizer, ids)
    except Exception as err:  # any failure to decode is what the grammar must prevent
        found.append(f"decode: {err!r}")
    errors = tokenizer.tokens_errors(TokSequence(ids=ids))
    if errors:
        found.append(f"tokens_errors: {errors:.3f}")
    bars = ids.count(tokenizer.vocab["Bar_None"])
    if n_bars is not None and bars != n_bars:
        found.append(f"{bars} bars")
    if not ids or ids[-1] != EOS:
        found.append("no EOS")
    if any(i in (PAD, BOS, MASK) for i in ids):
        found.append("special token inside")
    found += [f"{t} outside its bar" for t in positions_past_the_bar(tokenizer, ids)]
    tokens = [tokenizer[i] for i in ids]
    found += [f"{t} mid-bar" for before, t in zip(["BOS", *tokens], tokens)
              if t.startswith("TimeSig") and before != "Bar_None"]
    return found


def positions_past_the_bar(tokenizer, ids: list[int]) -> list[str]:
    """Position tokens at or past the end of their bar (numerator * positions per beat), which miditok accepts."""
    length, past = 4 * tokenizer.config.max_num_pos_per_beat, []
    for token in (tokenizer[i] for i in ids):
        if token.startswith("TimeSig_"):
            length = int(token.split("_")[1].split("/")[0]) * tokenizer.config.max_num_pos_per_beat
        elif token.startswith("Position_") and int(token.split("_")[1]) >= length:
            past.append(token)
    return past


def ids_of(tokenizer, text: str) -> torch.Tensor:
    """(1, T) ids of space-separated tokens, BOS first."""
    return torch.tensor([[BOS] + [tokenizer.vocab[t] for t in text.split()]])


def allowed_tokens(grammar: RemiGrammar, tokenizer, text: str) -> set[str]:
    ok = grammar.allowed(ids_of(tokenizer, text))[0]
    return {tokenizer[int(i)] for i in ok.nonzero().flatten()}


# --------------------------------------------------------------------------- sampling a random model


def test_constrained_samples_are_valid_and_load_everywhere(tokenizer, tmp_path):
    import music21
    import pretty_midi
    import symusic

    rows = sample(tokenizer, RemiGrammar(tokenizer, n_bars=N_BARS, max_new_tokens=NEW_TOKENS))
    with_notes = 0
    for i, ids in enumerate(rows):
        assert problems(tokenizer, ids, n_bars=N_BARS) == [], f"row {i}: {[tokenizer[t] for t in ids]}"
        score = decode_ids(tokenizer, ids)
        path = tmp_path / f"{i}.mid"
        score.dump_midi(path)
        notes = sum(t.note_num() for t in score.tracks)
        with_notes += notes > 0
        assert sum(t.note_num() for t in symusic.Score(path).tracks) == notes
        assert sum(len(inst.notes) for inst in pretty_midi.PrettyMIDI(str(path)).instruments) == notes
        if i < 2:  # music21 takes ~0.2-1 s a file
            assert len(music21.converter.parse(path).flatten().notes) > 0
    assert with_notes >= ROWS // 2  # music, not only bar lines


def test_unconstrained_samples_are_mostly_invalid(tokenizer):
    """The same model and latents without the grammar: the checks above would fail."""
    rows = sample(tokenizer, None)
    invalid = sum(bool(problems(tokenizer, ids, n_bars=N_BARS)) for ids in rows)
    assert invalid >= 0.75 * ROWS


def test_forced_time_signature(merge_tokenizer):
    tokenizer = merge_tokenizer
    rows = sample(tokenizer, RemiGrammar(tokenizer, n_bars=2, time_signature="3/4", max_new_tokens=NEW_TOKENS))
    for ids in rows:
        assert problems(tokenizer, ids, n_bars=2) == []
        tokens = [tokenizer[i] for i in ids]
        assert {t for t in tokens if t.startswith("TimeSig")} == {"TimeSig_3/4"}
        assert all(int(t.split("_")[1]) < 24 for t in tokens if t.startswith("Position"))  # 3 beats * 8
        score = decode_ids(tokenizer, ids)
        assert {(ts.numerator, ts.denominator) for ts in score.time_signatures} == {(3, 4)}
    with pytest.raises(ValueError, match="valid: .*4/4"):
        RemiGrammar(tokenizer, time_signature="5/16")


def test_without_n_bars_every_sample_still_ends_cleanly(merge_tokenizer):
    rows = sample(merge_tokenizer, RemiGrammar(merge_tokenizer, max_new_tokens=40), new_tokens=40)
    for ids in rows:
        assert problems(merge_tokenizer, ids, n_bars=None) == []
        assert len(ids) <= 40


def test_a_prompt_ending_mid_bar_is_continued_validly(merge_tokenizer):
    prompt = ids_of(merge_tokenizer, "Bar_None TimeSig_3/4 Position_20 Pitch_60")  # (1, 5), BOS first
    grammar = RemiGrammar(merge_tokenizer, n_bars=2, prompt_len=prompt.shape[1], max_new_tokens=40)
    rows = sample(merge_tokenizer, grammar, new_tokens=40, input_ids=prompt.expand(ROWS, -1))
    for ids in rows:
        assert ids[:4] == prompt[0, 1:].tolist()
        assert merge_tokenizer[ids[4]].startswith("Duration")
        assert problems(merge_tokenizer, ids, n_bars=2) == []
        assert len(ids) <= 4 + 40


def test_beam_search_rows_stay_valid(merge_tokenizer):
    """Beams reorder rows between steps; the grammar keeps no state across calls, so it does not care."""
    rows = sample(merge_tokenizer, RemiGrammar(merge_tokenizer, n_bars=2, max_new_tokens=30), new_tokens=30,
                  num_beams=2, do_sample=False, temperature=None, top_k=None)
    assert all(problems(merge_tokenizer, ids, n_bars=2) == [] for ids in rows)


# --------------------------------------------------------------------------- state on hand-written sequences


def test_state_tracks_bars_positions_and_meter(merge_tokenizer):
    grammar = RemiGrammar(merge_tokenizer)
    first = "Bar_None TimeSig_3/4 Position_4 Pitch_60 Duration_1.0.8 Position_10 Pitch_62"
    state = grammar.state(ids_of(merge_tokenizer, first))
    assert grammar.kinds[int(state.kind)] == "Pitch"
    assert (int(state.bars), int(state.position), int(state.bar_length)) == (1, 10, 24)
    state = grammar.state(ids_of(merge_tokenizer, first + " Duration_1.0.8 Bar_None TimeSig_6/8"))
    assert (int(state.bars), int(state.position), int(state.bar_length)) == (2, -1, 48)
    batch = torch.cat([ids_of(merge_tokenizer, "Bar_None TimeSig_4/4 Position_31 Pitch_60"),
                       ids_of(merge_tokenizer, "Bar_None TimeSig_2/2 Position_3 Pitch_60")])
    assert grammar.state(batch).position.tolist() == [31, 3]
    assert grammar.state(batch).bar_length.tolist() == [32, 16]


def test_positions_only_move_forward_inside_the_bar(merge_tokenizer):
    grammar = RemiGrammar(merge_tokenizer)
    allowed = allowed_tokens(grammar, merge_tokenizer, "Bar_None TimeSig_3/4 Position_10 Pitch_60 Duration_1.0.8")
    positions = sorted(int(t.split("_")[1]) for t in allowed if t.startswith("Position"))
    assert positions == list(range(11, 24))
    assert {"Bar_None", "EOS_None", "Pitch_61"} <= allowed
    assert not any(t.startswith(("Duration", "TimeSig", "PitchDrum")) for t in allowed)
    # chords low to high (tokenizer.sort_chords): only pitches above 60 may join it at this onset
    assert {t for t in allowed if t.startswith("Pitch_")} == {f"Pitch_{p}" for p in range(61, 110)}
    unordered = build_tokenizer(TokenizerSettings(sort_chords=False))
    again = allowed_tokens(RemiGrammar(unordered), unordered, "Bar_None TimeSig_3/4 Position_10 Pitch_60 Duration_1.0.8")
    assert "Pitch_60" in again and "Pitch_21" in again
    after_next_onset = allowed_tokens(grammar, merge_tokenizer,
                                      "Bar_None TimeSig_3/4 Position_10 Pitch_60 Duration_1.0.8 Position_12")
    assert {"Pitch_21", "Pitch_60"} <= after_next_onset
    assert allowed_tokens(grammar, merge_tokenizer, "") == {"Bar_None"}  # after BOS
    after_bar = allowed_tokens(grammar, merge_tokenizer, "Bar_None")
    assert after_bar == {t for t in merge_tokenizer.vocab if t.startswith("TimeSig")}


def test_notes_are_complete_before_eos(merge_tokenizer):
    grammar = RemiGrammar(merge_tokenizer, n_bars=1)
    after_pitch = allowed_tokens(grammar, merge_tokenizer, "Bar_None TimeSig_4/4 Position_0 Pitch_60")
    assert after_pitch == {t for t in merge_tokenizer.vocab if t.startswith("Duration")}
    after_position = allowed_tokens(grammar, merge_tokenizer, "Bar_None TimeSig_4/4 Position_0")
    assert after_position == {t for t in merge_tokenizer.vocab if t.startswith("Pitch_")}
    velocities = build_tokenizer(TokenizerSettings(use_velocities=True))
    with_velocity = RemiGrammar(velocities, n_bars=1)
    after_pitch = allowed_tokens(with_velocity, velocities, "Bar_None TimeSig_4/4 Position_0 Pitch_60")
    assert after_pitch == {t for t in velocities.vocab if t.startswith("Velocity")}
    after_velocity = allowed_tokens(with_velocity, velocities, "Bar_None TimeSig_4/4 Position_0 Pitch_60 Velocity_63")
    assert after_velocity == {t for t in velocities.vocab if t.startswith("Duration")}


def test_bar_count_decides_between_bar_and_eos(merge_tokenizer):
    one_bar = "Bar_None TimeSig_4/4 Position_0 Pitch_60 Duration_1.0.8"
    two = allowed_tokens(RemiGrammar(merge_tokenizer, n_bars=2), merge_tokenizer, one_bar)
    assert "Bar_None" in two and "EOS_None" not in two
    one = allowed_tokens(RemiGrammar(merge_tokenizer, n_bars=1), merge_tokenizer, one_bar)
    assert "Bar_None" not in one and "EOS_None" in one
    empty_bar = allowed_tokens(RemiGrammar(merge_tokenizer, n_bars=1), merge_tokenizer, "Bar_None TimeSig_4/4")
    assert "EOS_None" in empty_bar


def test_budget_closes_the_piece_in_time(merge_tokenizer):
    """6 tokens so far, 2 left after the next: only Bar (then TimeSig, EOS) still fits two bars in."""
    grammar = RemiGrammar(merge_tokenizer, n_bars=2, max_new_tokens=8)
    prompt = "Bar_None TimeSig_4/4 Position_0 Pitch_60 Duration_1.0.8"
    assert allowed_tokens(grammar, merge_tokenizer, prompt) == {"Bar_None"}
    roomy = RemiGrammar(merge_tokenizer, n_bars=2, max_new_tokens=12)
    assert {"Bar_None", "Pitch_64", "Position_8"} <= allowed_tokens(roomy, merge_tokenizer, prompt)


def test_drum_pitches_only_after_the_drum_program():
    tokenizer = build_tokenizer(TokenizerSettings(multitrack="programs"))
    grammar = RemiGrammar(tokenizer)
    drums = allowed_tokens(grammar, tokenizer, "Bar_None TimeSig_4/4 Position_0 Program_-1")
    piano = allowed_tokens(grammar, tokenizer, "Bar_None TimeSig_4/4 Position_0 Program_0")
    assert drums == {t for t in tokenizer.vocab if t.startswith("PitchDrum_")}
    assert piano == {t for t in tokenizer.vocab if t.startswith("Pitch_")}


def test_time_signatures_only_open_bars():
    """miditok's graph allows Tempo -> TimeSig, a meter change inside a bar; the bar length would be ambiguous."""
    tokenizer = build_tokenizer(TokenizerSettings(use_tempos=True))
    after_tempo = allowed_tokens(RemiGrammar(tokenizer), tokenizer, "Bar_None TimeSig_4/4 Position_0 Tempo_100.97")
    assert "Bar_None" in after_tempo and not any(t.startswith("TimeSig") for t in after_tempo)


def test_special_tokens_are_never_written(merge_tokenizer):
    grammar = RemiGrammar(merge_tokenizer)
    scores = torch.zeros(1, merge_tokenizer.vocab_size + 3)  # a model vocabulary padded past the tokenizer's
    for text in ("", "Bar_None", "Bar_None TimeSig_4/4", "Bar_None TimeSig_4/4 Position_0 Pitch_60 Duration_1.0.8"):
        out = grammar(ids_of(merge_tokenizer, text), scores)
        assert torch.isinf(out[0, [PAD, BOS, MASK]]).all() and torch.isinf(out[0, -3:]).all()
    assert allowed_tokens(grammar, merge_tokenizer, "Bar_None TimeSig_4/4 EOS_None PAD_None") == {"EOS_None"}


@pytest.mark.parametrize("text", [
    "Bar_None TimeSig_4/4 EOS_None",  # finished before its n_bars: generate keeps calling for it
    "Bar_None TimeSig_4/4 EOS_None PAD_None",
    "Bar_None TimeSig_4/4 Bar_None TimeSig_4/4 Bar_None TimeSig_4/4 Position_0",  # more bars than asked
    "Bar_None TimeSig_3/4 Position_23 Pitch_60 Duration_1.0.8",  # the bar's last position taken
    "Bar_None TimeSig_12/8 Position_95",
    "MASK_None",
])
def test_every_state_has_a_way_forward(merge_tokenizer, text):
    """A row of -inf only would make sampling fail on NaN probabilities."""
    for grammar in (RemiGrammar(merge_tokenizer, n_bars=2), RemiGrammar(merge_tokenizer, n_bars=2, max_new_tokens=4)):
        assert grammar.allowed(ids_of(merge_tokenizer, text)).any()


def test_bpe_tokenizers_are_refused():
    tokenizer = build_tokenizer(TokenizerSettings())
    ids = ids_of(tokenizer, "Bar_None TimeSig_4/4 Position_0 Pitch_60 Duration_1.0.8")[0, 1:].numpy()
    tokenizer.train(vocab_size=tokenizer.vocab_size + 3, model="BPE", iterator=[RemiVocab(tokenizer).bar_words(np.tile(ids, 8))])
    assert tokenizer.is_trained
    with pytest.raises(ValueError, match="constrained decoding needs base tokens"):
        RemiGrammar(tokenizer)

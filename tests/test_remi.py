"""RemiVocab: the one reader of miditok's token strings (ids, kinds, values, bars, meters, BPE)."""

from __future__ import annotations

import numpy as np
import pytest

from midistruct.config import TokenizerSettings
from midistruct.tokens.remi import MERGED, RemiVocab
from midistruct.tokens.tokenizer import BOS_ID, EOS_ID, MASK_ID, PAD_ID, build_tokenizer

TEXT = "Bar_None TimeSig_3/4 Position_0 Pitch_60 Duration_1.0.8 Position_8 Pitch_64 Duration_0.4.8"


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(TokenizerSettings())


def ids_of(tokenizer, text: str) -> np.ndarray:
    return np.array([tokenizer.vocab[t] for t in text.split()])


def test_ids_kinds_and_values(tokenizer):
    vocab = RemiVocab(tokenizer)
    assert (vocab.pad_id, vocab.bos_id, vocab.eos_id, vocab.mask_id) == (PAD_ID, BOS_ID, EOS_ID, MASK_ID)
    assert vocab.size == len(tokenizer) and not vocab.is_bpe
    pitch = vocab.id("Pitch_60")
    assert vocab.parse(pitch) == ("Pitch", "60") and vocab.pitch_of[pitch] == 60
    assert vocab.parse(vocab.id("TimeSig_6/8")) == ("TimeSig", "6/8")
    assert vocab.kind(vocab.bar_id) == "Bar" and vocab.kind(EOS_ID) == "EOS"
    assert [vocab.kind(i) for i in vocab.ids_of("Position")] == ["Position"] * len(vocab.ids_of("Position"))
    assert "4/4" in vocab.meters and vocab.time_signature_id("4/4") == vocab.id("TimeSig_4/4")
    with pytest.raises(ValueError, match="valid: .*4/4"):
        vocab.time_signature_id("5/16")


def test_bars_meter_and_notes_of_a_window(tokenizer):
    vocab = RemiVocab(tokenizer)
    ids = np.concatenate([ids_of(tokenizer, TEXT), ids_of(tokenizer, TEXT.replace("3/4", "4/4"))])
    assert vocab.bar_starts(ids).tolist() == [0, 8]
    assert vocab.bar_index(ids).tolist() == [0] * 8 + [1] * 8
    assert vocab.count_bars(ids) == 2 and vocab.count_notes(ids) == 4
    assert vocab.meter(ids) == "3/4" and vocab.meter(ids[8:]) == "4/4" and vocab.meter(ids[2:]) == "4/4"
    assert vocab.from_base(ids)[0].tolist() == ids.tolist() and vocab.to_base(ids).tolist() == ids.tolist()


def test_bpe_ids_map_back_to_base_ids_bar_by_bar(tokenizer):
    """After training, merges stand for runs of base tokens inside one bar; base ids keep their numbers."""
    trained = build_tokenizer(TokenizerSettings())
    base = np.tile(ids_of(trained, TEXT), 8)
    trained.train(vocab_size=len(trained) + 12, model="BPE", iterator=[RemiVocab(trained).bar_words(base)])
    vocab = RemiVocab(trained)
    assert vocab.is_bpe and vocab.size == len(trained)
    ids, bars = vocab.from_base(base)
    assert len(ids) < len(base) and vocab.bar_id not in ids.tolist()
    assert vocab.to_base(ids).tolist() == base.tolist()
    assert bars.tolist() == vocab.bar_index(ids).tolist() and bars.max() == 7
    assert vocab.count_bars(ids) == 8 and vocab.count_notes(ids) == 16 and vocab.meter(ids) == "3/4"
    assert vocab.kind(ids[0]) == MERGED and vocab.bar_opening_ids().tolist()[0] == vocab.bar_id
    with pytest.raises(ValueError, match="transposition needs base ids"):
        vocab.allowed_shifts(ids, -2, 2)
    with pytest.raises(ValueError, match="constrained decoding needs base tokens"):
        vocab.grammar_tables()


def test_grammar_tables(tokenizer):
    tables = RemiVocab(tokenizer).grammar_tables()
    def after(kind: str) -> set[str]:
        return {tokenizer[int(i)].split("_")[0] for i in np.flatnonzero(tables.successors[tables.kinds.index(kind)])}

    assert after("Bar") == {"TimeSig"} and after("BOS") == {"Bar"}
    assert after("Duration") == {"Pitch", "Position", "Bar", "EOS"}  # a note is complete: EOS may come
    assert tables.meters[0] == "none" and tables.meter_length[tables.meters.index("3/4")] == 3 * 8
    assert tables.steps["Pitch"] == 1 and tables.steps["Duration"] == 0 and tables.ascending_chords


def test_other_schemes_are_refused():
    with pytest.raises(ValueError, match="needs a miditok REMI tokenizer"):
        RemiVocab(object())

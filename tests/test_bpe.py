"""BPE keeps bar structure (issue 13): every token the model reads is given its true bar, in training,
in generation and in the pipeline, although with merges the ``Bar`` id itself no longer appears.

The truth is the base tokens: each BPE id stands for a run of base tokens (read from miditok's own
tables here, not from midistruct), and spreading the BPE bar index over them must give the bar index of the
same window prepared without BPE, where every bar opens with ``Bar``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scores import make_score, write_corpus

from midistruct.cli import main
from midistruct.config import load_config
from midistruct.prepare import prepare
from midistruct.shards.dataset import WindowDataset, collate
from midistruct.shards.reader import ShardError, ShardSet
from midistruct.training.loop import model_config


def base_lengths(tokenizer, ids) -> np.ndarray:
    """(L,) how many base tokens each (BPE) id stands for, by miditok's own decoding table."""
    if not tokenizer.is_trained:
        return np.ones(len(ids), dtype=np.int64)
    table = tokenizer._vocab_learned_bytes_to_tokens
    return np.array([len(table[tokenizer._model.id_to_token(int(i))]) for i in ids], dtype=np.int64)


def decoder_bar_index(model, batch: dict) -> torch.Tensor:
    """(B, T) the bar index the model's decoder gives each of its inputs in a teacher-forced forward pass."""
    seen = {}

    def grab(module, args, kwargs):
        seen["bar_index"] = kwargs["bar_index"]

    handle = model.decoder.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            model.eval()(**batch)
    finally:
        handle.remove()
    return seen["bar_index"]


def check_bar_ids(base_folder, bpe_folder, cfg, *, windows: int) -> int:
    """Assert that the first ``windows`` BPE windows get their true bars from the dataset (encoder), the
    decoder (training) and the generation hook; returns the windows checked."""
    from midistruct.model import MidiStructModel

    bars = cfg.segments.bars
    base, bpe = WindowDataset([base_folder], "train"), WindowDataset([bpe_folder], "train")
    tokenizer = ShardSet(bpe_folder).tokenizer()
    assert tokenizer.is_trained and len(base) == len(bpe)
    torch.manual_seed(0)
    model = MidiStructModel(model_config(cfg, tokenizer))
    n = min(windows, len(bpe))
    for start in range(0, n, 8):
        items = [bpe[i] for i in range(start, min(start + 8, n))]
        batch = collate(items)
        decoder = decoder_bar_index(model, batch)
        for row, (item, truth) in enumerate(zip(items, (base[i] for i in range(start, start + len(items))))):
            ids, bar_ids = item["input_ids"].numpy()[:-1], item["bar_ids"].numpy()[:-1]  # without EOS
            spread = np.repeat(bar_ids, base_lengths(tokenizer, ids))
            assert spread.tolist() == truth["bar_ids"].numpy()[:-1].tolist()  # the encoder's bar ids
            real = batch["attention_mask"][row] == 1
            shifted = torch.cat([torch.zeros(1, dtype=torch.long), item["bar_ids"][:-1]])  # [0] + bar_ids[:-1]
            assert decoder[row][real].tolist() == shifted.tolist()  # the decoder's, in training
            assert int(decoder[row].max()) == bars - 1
        bos = torch.full((len(items), 1), 1)
        hook = model.prepare_inputs_for_generation(torch.cat([bos, batch["input_ids"]], dim=1))
        gen = hook["decoder_bar_ids"][:, 1:]  # the bar of each window token as the generator reads it
        assert torch.equal(gen[batch["attention_mask"] == 1], batch["bar_ids"][batch["attention_mask"] == 1])
    return n


def _tiny(src, out, *extra):
    return load_config("tiny", [f"data.sources=[{{kind: folder, path: '{src}'}}]", f"data.output={out}",
                                "splits.valid=0", "splits.test=0", *extra])


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """Base and BPE (400 ids) shards of 8 synthetic 8-bar pieces, 2-bar windows."""
    root = tmp_path_factory.mktemp("bpe")
    write_corpus(root / "midi", n=8)
    prepare(_tiny(root / "midi", root / "base"), progress=False)
    cfg = _tiny(root / "midi", root / "bpe", "tokenizer.bpe_vocab_size=400")
    prepare(cfg, progress=False)
    return root, cfg


def test_bpe_bar_ids_are_true_bars(synthetic):
    root, cfg = synthetic
    tokenizer = ShardSet(root / "bpe").tokenizer()
    ids = ShardSet(root / "bpe").split("train").tokens[:]
    assert (ids == tokenizer.vocab["Bar_None"]).mean() < 0.01  # the premise: merges swallow the Bar id
    assert check_bar_ids(root / "base", root / "bpe", cfg, windows=64) > 16


def test_bpe_pipeline_windows_hold_their_bars(synthetic):
    """``MidiStruct`` cuts a piece into windows of the model's ids (BPE applied) and counts their bars."""
    from midistruct.generation.pipeline import InputError, MidiStruct
    from midistruct.model import MidiStructModel

    root, cfg = synthetic
    tokenizer = ShardSet(root / "bpe").tokenizer()
    model = MidiStructModel(model_config(cfg, tokenizer))
    ms = MidiStruct(model, tokenizer, {"run_config": cfg.model_dump(mode="json")})
    windows = ms.windows(make_score((4, 4), bars=5, seed=3))
    assert [ms.vocab.count_bars(w) for w in windows] == [2, 2, 1]
    assert all(w.max() >= len(tokenizer.vocab) for w in windows)  # BPE ids, not base ones
    z = ms.encode_windows(windows)
    assert z.bars == [2, 2, 1] and z.time_signatures == ["4/4"] * 3
    with pytest.raises(InputError, match="BPE"):  # the grammar reads base tokens: refused in one line
        ms.decode(z)


def test_bpe_vocab_size_at_or_below_the_base_is_one_line(tmp_path, capsys):
    write_corpus(tmp_path / "midi", n=2)
    with pytest.raises(ShardError, match="larger than the base vocabulary"):
        prepare(_tiny(tmp_path / "midi", tmp_path / "s", "tokenizer.bpe_vocab_size=100"), progress=False)
    assert not (tmp_path / "s").exists()
    source = f"data.sources=[{{kind: folder, path: '{tmp_path}/midi'}}]"
    args = ["prepare", "--config", "tiny", "--quiet", "--set", source, "--set", f"data.output={tmp_path / 's'}",
            "--set", "tokenizer.bpe_vocab_size=331"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "bpe_vocab_size 331 must be larger than the base vocabulary" in err and "Traceback" not in err


@pytest.mark.shared_data
def test_bpe_bar_ids_on_pop909(shared_datasets, tmp_path):
    """10 POP909 songs, 4-bar windows, BPE to 600 ids: each window's tokens get bars 0-3 as without BPE."""
    root, phrases = shared_datasets / "pop909", shared_datasets / "pop909-phrases"
    source = f"data.sources=[{{kind: pop909, path: '{root}', phrases_path: '{phrases}', versions: false, limit: 10}}]"
    tiny_model = [f"model.{k}={v}" for k, v in load_config("tiny").model.overrides().items()]
    shared = [source, "data.workers=2", "splits.valid=0", "splits.test=0", *tiny_model]
    base = prepare(load_config("pop909", [*shared, f"data.output={tmp_path / 'base'}"]), progress=False).as_dict()
    cfg = load_config("pop909", [*shared, f"data.output={tmp_path / 'bpe'}", "tokenizer.bpe_vocab_size=600"])
    assert prepare(cfg, progress=False).as_dict()["tokens_per_bar"] < base["tokens_per_bar"]
    assert check_bar_ids(tmp_path / "base", tmp_path / "bpe", cfg, windows=48) == 48

"""Issue 19: functional blocks. The two views of a window (content: melody + a block chord per beat; arrangement:
the other notes by register and rank), a model whose bar codes are [content ; arrangement], ``--init`` into it from a
model without the block, and ``transfer`` (API and CLI)."""

from __future__ import annotations

import glob
import shutil

import numpy as np
import pytest
import symusic
import torch
from scores import TPQ

from midistruct import cli
from midistruct.config import load_config
from midistruct.generation.latents import PieceLatents
from midistruct.generation.pipeline import BlockError, MidiStruct
from midistruct.model import MidiStructConfig, MidiStructModel
from midistruct.model.checkpoint import load_checkpoint, load_grown_weights
from midistruct.shards.dataset import window_batch
from midistruct.tokens.views import CHORD_OCTAVE, melody_and_rest, notes_of, skyline, window_views
from midistruct.training.loop import Trainer

EIGHTH = TPQ // 2


def _score(melody, accompaniment, *, bars: int = 2) -> symusic.Score:
    """Two tracks; each note (onset in eighths, length in eighths, pitch)."""
    score = symusic.Score(TPQ)
    score.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    score.tempos.append(symusic.Tempo(0, 120.0))
    for name, notes in (("melody", melody), ("piano", accompaniment)):
        track = symusic.Track(name=name, program=0)
        for onset, length, pitch in notes:
            track.notes.append(symusic.Note(onset * EIGHTH, length * EIGHTH, pitch, 80))
        score.tracks.append(track)
    return score


MELODY = [(0, 2, 76), (2, 2, 74), (4, 4, 72), (8, 8, 79)]  # two bars of 8 eighths


def _block_chords(chords, pattern):
    """Accompaniment: each bar's chord (pitches) played as ``pattern`` -- "block" (one chord per beat) or
    "oompah" (the lowest note on the beat, the others together on the off-beat eighth)."""
    out = []
    for bar, chord in enumerate(chords):
        for beat in range(4):
            start = bar * 8 + beat * 2
            if pattern == "block":
                out += [(start, 2, p) for p in chord]
            else:
                out += [(start, 1, chord[0])] + [(start + 1, 1, p) for p in chord[1:]]
    return out


@pytest.fixture(scope="module")
def pipeline(checkpoint):
    return MidiStruct.from_pretrained(checkpoint)


def _views(ms, score):
    ids = ms.piece_encoder.tokenize(score)
    return ids, window_views(ids, ms.vocab)


def _notes(ms, view):
    n = notes_of(view, ms.vocab)
    return sorted(zip(n.bar.tolist(), n.position.tolist(), n.pitch.tolist()))


def test_content_view_is_the_melody_and_one_chord_per_beat(pipeline):
    c_major, g_major = (48, 52, 55), (43, 47, 50)
    ids, views = _views(pipeline, _score(MELODY, _block_chords([c_major, g_major], "block")))
    notes = _notes(pipeline, views["content"])
    melody = [n for n in notes if n[2] >= 60]
    assert [(b, p, q) for b, p, q in melody] == [(0, 0, 76), (0, 8, 74), (0, 16, 72), (1, 0, 79)]
    chords = {}
    for bar, position, pitch in notes:
        if pitch < 60:
            assert CHORD_OCTAVE <= pitch < CHORD_OCTAVE + 12 and position % 8 == 0
            chords.setdefault((bar, position), set()).add(pitch % 12)
    assert chords == {**{(0, p): {0, 4, 7} for p in (0, 8, 16, 24)}, **{(1, p): {7, 11, 2} for p in (0, 8, 16, 24)}}
    assert pipeline.vocab.count_bars(views["content"]) == pipeline.vocab.count_bars(ids) == 2


def test_content_view_does_not_see_the_accompaniment_pattern(pipeline):
    chords = [(48, 52, 55), (43, 47, 50)]
    block = _views(pipeline, _score(MELODY, _block_chords(chords, "block")))[1]
    oompah = _views(pipeline, _score(MELODY, _block_chords(chords, "oompah")))[1]
    assert np.array_equal(block["content"], oompah["content"])
    assert not np.array_equal(block["arrangement"], oompah["arrangement"])


def test_arrangement_view_does_not_see_the_harmony(pipeline):
    """The same voicing a whole tone higher (C -> D, inside the octave): another harmony, the same arrangement."""
    c_then_f = _views(pipeline, _score(MELODY, _block_chords([(48, 52, 55), (53, 57, 60)], "oompah")))[1]
    d_then_g = _views(pipeline, _score(MELODY, _block_chords([(50, 54, 57), (55, 59, 62)], "oompah")))[1]
    assert np.array_equal(c_then_f["arrangement"], d_then_g["arrangement"])
    assert not np.array_equal(c_then_f["content"], d_then_g["content"])
    ranks = [p % 12 for _, _, p in _notes(pipeline, c_then_f["arrangement"])]
    assert set(ranks) <= {0, 1}  # the bass alone on the beat, the two upper notes on the off-beat


def test_the_exact_arrangement_view_keeps_the_pitches_and_so_the_harmony(pipeline):
    """arrangement_pitch="exact" (a diagnostic) writes the accompaniment's own pitches: C then F and D then G differ,
    each note where the window has it; the model config carries the choice to every batch (view_options)."""
    windows = [_views(pipeline, _score(MELODY, _block_chords(chords, "oompah")))[0]
               for chords in ([(48, 52, 55), (53, 57, 60)], [(50, 54, 57), (55, 59, 62)])]
    exact = [window_views(w, pipeline.vocab, views=("arrangement",), arrangement_pitch="exact")["arrangement"]
             for w in windows]
    assert not np.array_equal(exact[0], exact[1])
    _, onset, top = melody_and_rest(windows[0], pipeline.vocab)
    notes = notes_of(windows[0], pipeline.vocab)
    assert sorted(p for _, _, p in _notes(pipeline, exact[0])) == sorted(notes.pitch[~top].tolist())
    with pytest.raises(ValueError, match="arrangement_pitch"):
        window_views(windows[0], pipeline.vocab, arrangement_pitch="pitch-class")
    config = MidiStructConfig.tiny(vocab_size=pipeline.vocab.size, arrangement_dim=4, arrangement_pitch="exact",
                                   max_positions=256)
    assert config.view_options()["arrangement_pitch"] == "exact"
    batch = window_batch(windows, pipeline.vocab, **config.view_options())
    assert batch["arrangement_ids"][0, : len(exact[0])].tolist() == exact[0].tolist()
    with pytest.raises(Exception, match="unknown arrangement_pitch 'pitch-class'"):  # the config's class validation
        MidiStructConfig.tiny(vocab_size=pipeline.vocab.size, arrangement_dim=4, arrangement_pitch="pitch-class")


def testskyline_keeps_a_held_melody_note_over_the_figure_under_it():
    onset = np.array([0, 0, 2, 4, 8])
    pitch = np.array([76, 48, 55, 60, 74])
    length = np.array([8, 2, 2, 2, 4])  # 76 is held over the figure 55, 60; 74 starts after it
    assert skyline(onset, pitch, length).tolist() == [True, False, False, False, True]


def test_views_are_cut_to_the_model_window(pipeline):
    ids, _ = _views(pipeline, _score(MELODY, _block_chords([(48, 52, 55), (43, 47, 50)], "block")))
    views = window_views(ids, pipeline.vocab, max_tokens=10)
    assert all(len(v) == 10 for v in views.values())


# ---- the model --------------------------------------------------------------------------------------------------


def _block_model(vocab_size: int, **extra) -> MidiStructModel:
    torch.manual_seed(0)
    return MidiStructModel(MidiStructConfig.tiny(vocab_size=vocab_size, arrangement_dim=6, max_positions=128,
                                                 **extra)).eval()


def _batch(pipeline, scores):
    windows = [pipeline.piece_encoder.tokenize(s) for s in scores]
    return window_batch(windows, pipeline.vocab, views=("content", "arrangement"))


@pytest.mark.parametrize("pooling", ["mean", "flat"])
def test_bar_codes_are_content_then_arrangement_each_from_its_own_view(pipeline, pooling):
    model = _block_model(pipeline.vocab.size, block_pooling=pooling)
    assert (model.arrangement.pool is None) == (pooling == "mean")
    chords = [(48, 52, 55), (43, 47, 50)]
    same_content = _batch(pipeline, [_score(MELODY, _block_chords(chords, "block")),
                                     _score(MELODY, _block_chords(chords, "oompah"))])
    with torch.no_grad():
        z = model.encode_batch(same_content).z_bar
    blocks = model.config.block_slices()
    assert z.shape[-1] == model.config.bar_code_dim == 8 + 6
    assert torch.allclose(z[0, :, blocks["content"]], z[1, :, blocks["content"]], atol=1e-5)
    assert not torch.allclose(z[0, :, blocks["arrangement"]], z[1, :, blocks["arrangement"]], atol=1e-3)
    with pytest.raises(ValueError, match="functional blocks: pass the views content_ids, arrangement_ids"):
        model.encode(same_content["input_ids"])
    with pytest.raises(ValueError, match="bar codes are 8 wide; this model reads 14"):
        model.decoder_forward(same_content["input_ids"][:, :3], z_bar=z[..., :8], z_segment=torch.zeros(2, 16))


@pytest.mark.parametrize("pooling", ["mean", "flat"])
def test_a_block_model_trains_on_its_views(pipeline, pooling):
    model = _block_model(pipeline.vocab.size, conditioning="plan", sequence_head=1.0, sequence_head_memory=2,
                         bag_of_words=1.0, block_pooling=pooling).train()
    batch = _batch(pipeline, [_score(MELODY, _block_chords([(48, 52, 55), (43, 47, 50)], "block"))] * 2)
    out = model(**batch)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert model.arrangement.encoder.embed_tokens.weight.grad is not None
    if pooling == "flat":
        assert model.arrangement.pool.out.weight.grad is not None


def test_sequence_views_ask_each_code_for_its_own_view_in_order(pipeline):
    """``sequence_views``: the content head reads [content code ; segment code] and names the content view slot by
    slot, the arrangement head reads the arrangement code and names the arrangement view; their states at every
    slot are memory the decoder reads, and all of it trains."""
    model = _block_model(pipeline.vocab.size, sequence_head=1.0, sequence_head_memory=2, decoder_memory=3,
                         sequence_views=True, block_pooling="flat").train()
    assert set(model.view_sequence_heads()) == {"content", "arrangement"}
    batch = _batch(pipeline, [_score(MELODY, _block_chords([(48, 52, 55), (43, 47, 50)], "block")),
                              _score(MELODY, _block_chords([(48, 52, 55), (43, 47, 50)], "oompah"))])
    out = model(**batch)
    out.loss.backward()
    assert torch.isfinite(out.seq_loss) and model.view_heads["arrangement"].slots.weight.grad is not None
    assert model.decoder.reads[0].key_value.weight.grad is not None
    model.eval()
    latents = model.encode_batch(batch)
    views = {k: batch[k] for k in model.VIEW_KEYS if k in batch}
    with torch.no_grad():
        base = model.view_sequence_nll(latents, views)
        # the order of a view's tokens is what is scored: the content view's bar 0 reversed scores differently
        ids = views["content_ids"].clone()
        first = (views["content_bar_ids"][0] == 0) & views["content_mask"][0].bool()
        ids[0, first] = ids[0, first].flip(0)
        assert not torch.allclose(model.view_sequence_nll(latents, {**views, "content_ids": ids})[0], base[0])
        # the content head reads no arrangement code
        codes = model.view_codes(latents.z_bar, latents.z_segment)
        moved = latents.z_bar.clone()
        moved[..., model.config.block_slices()["arrangement"]] += 5.0
        other = model.view_codes(moved, latents.z_segment)
        torch.testing.assert_close(other["content"], codes["content"])
        assert not torch.allclose(other["arrangement"], codes["arrangement"])
        memory = model.decoder_memory(latents.z_bar, latents.z_segment)
    cfg = model.config  # the arrangement encoder pools flat (pool_slots), the content encoder by the mean
    assert model.view_memory_slots() == {"content": cfg.sequence_slots, "arrangement": cfg.pool_slots} \
        and cfg.pool_slots < cfg.sequence_slots
    assert memory.shape == (2, latents.z_bar.shape[1], 3 + cfg.sequence_slots + cfg.pool_slots, cfg.d_model)
    with pytest.raises(ValueError, match="pass arrangement_ids"):
        model.view_sequence_nll(latents, {k: v for k, v in views.items() if not k.startswith("arrangement")})
    with pytest.raises(Exception, match="sequence_views needs"):
        MidiStructConfig.tiny(arrangement_dim=4, sequence_head=1.0, sequence_views=True)  # no decoder memory


def test_sequence_views_decode_the_same_with_and_without_the_cache_reading_the_memory_once(pipeline):
    model = _block_model(pipeline.vocab.size, sequence_head=1.0, sequence_head_memory=2, decoder_memory=3,
                         sequence_views=True).eval()
    torch.manual_seed(1)
    for read in model.decoder.reads:  # speak (they start silent)
        torch.nn.init.normal_(read.out.weight, std=0.5)
    z_bar, z_segment = torch.randn(2, 2, model.config.bar_code_dim), torch.randn(2, model.config.latent_dim_segment)
    kwargs = dict(input_ids=torch.tensor([[1], [1]]), max_new_tokens=8, do_sample=False, z_bar=z_bar,
                  z_segment=z_segment, return_dict_in_generate=True, output_logits=True)
    calls = {"heads": 0, "keys": 0}
    hidden, keys = model.sequence_head.hidden, model.decoder.reads[0].keys_values

    def count(name, fn):
        return lambda *a, **k: calls.__setitem__(name, calls[name] + 1) or fn(*a, **k)

    model.sequence_head.hidden = count("heads", hidden)
    model.decoder.reads[0].keys_values = count("keys", keys)
    cached = model.generate(**kwargs, use_cache=True)
    assert calls == {"heads": 1, "keys": 1}  # once per decoding, not once per token
    uncached = model.generate(**kwargs, use_cache=False)
    assert torch.equal(cached.sequences, uncached.sequences)
    torch.testing.assert_close(torch.stack(cached.logits), torch.stack(uncached.logits), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pooling,memory,views", [("mean", 0, False), ("flat", 0, False), ("flat", 3, False),
                                                  ("flat", 3, True)])
def test_grown_weights_decode_as_the_checkpoint_did(checkpoint, tmp_path, pooling, memory, views):
    """--init into a model with an arrangement block (and the decoder's memory reads): the old weights are copied,
    the arrangement columns start at zero and the reads silent, so with the same content code the decoder's logits
    are the checkpoint's whatever the arrangement code."""
    old, _, _ = load_checkpoint(checkpoint)
    heads = {"sequence_head": 1.0, "sequence_head_memory": 2, "sequence_views": True} if views else {}
    cfg = MidiStructConfig(**{**old.config.to_dict(), "arrangement_dim": 5, "block_pooling": pooling,
                              "decoder_memory": memory, "dtype": None, **heads})
    new = MidiStructModel(cfg).eval()
    counts = load_grown_weights(checkpoint, new)
    assert counts["grown"] >= 1 and counts["copied"] > counts["initialised"]
    old_state, new_state = old.state_dict(), new.state_dict()
    for key in [k for k in new_state if k.startswith("arrangement.encoder.")]:
        torch.testing.assert_close(new_state[key], old_state[key.removeprefix("arrangement.")])  # warm start
    z_content, z_segment = torch.randn(1, 2, old.config.latent_dim_bar), torch.randn(1, old.config.latent_dim_segment)
    tokens = torch.tensor([[1, 4, 5, 40, 41, 60]]).clamp(max=old.config.vocab_size - 1)
    with torch.no_grad():
        want = old.eval().decoder_forward(tokens, z_bar=z_content, z_segment=z_segment).logits
        got = new.decoder_forward(tokens, z_bar=torch.cat([z_content, torch.randn(1, 2, 5)], -1),
                                  z_segment=z_segment).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_init_adds_an_arrangement_block_then_resumes(checkpoint, tmp_path):
    data = checkpoint.parent.parent / "data"
    cfg = load_config("tiny", [f"data.output={data}", f"train.run_dir={tmp_path / 'run'}", "train.threads=1",
                               "model.arrangement_dim=4", "model.arrangement_layers=1", "train.max_steps=2",
                               "model.arrangement_pitch=exact", "model.block_pooling=flat",
                               "train.eval_every=2", "train.save_every=2"])
    trainer = Trainer(cfg, init=checkpoint, progress=False)
    assert trainer.model.config.arrangement_dim == 4 and trainer.model.arrangement is not None
    # the new block's keys come from the config, and reach the model and the batches
    assert trainer.model.config.arrangement_pitch == "exact" and trainer.model.arrangement.pool is not None
    assert trainer.train_ds.arrangement_pitch == trainer.valid_ds.arrangement_pitch == "exact"
    assert "content_ids" in trainer.train_ds[0]
    trainer.run()
    resumed = Trainer(cfg.model_copy(update={"train": cfg.train.model_copy(update={"max_steps": 3})}), resume=True,
                      progress=False)
    assert resumed.state["step"] == 2 and resumed.model.config.arrangement_dim == 4
    ms = MidiStruct.from_pretrained(tmp_path / "run" / "last")
    assert set(ms.blocks()) == {"content", "arrangement"}


# ---- transfer ---------------------------------------------------------------------------------------------------


def test_with_block_takes_the_arrangement_bar_by_bar_and_repeats_a_shorter_source():
    target = PieceLatents(torch.zeros(2, 4, 5), torch.zeros(2, 3), [4, 4])
    source = PieceLatents(torch.arange(2 * 5, dtype=torch.float32).view(1, 2, 5), torch.ones(1, 3), [2])
    out = target.with_block(source, slice(3, 5))
    assert torch.equal(out.z_bar[..., :3], target.z_bar[..., :3]) and torch.equal(out.z_segment, target.z_segment)
    assert out.z_bar[1, 3, 3:].tolist() == source.z_bar[0, 1, 3:].tolist()
    assert out.z_bar[0, 2, 3:].tolist() == source.z_bar[0, 0, 3:].tolist()


def test_transfer_needs_an_arrangement_block(pipeline, tmp_path, capsys):
    a = tmp_path / "a.mid"
    _score(MELODY, _block_chords([(48, 52, 55), (43, 47, 50)], "block")).dump_midi(str(a))
    with pytest.raises(BlockError, match="no arrangement block"):
        pipeline.transfer(a, arrangement_from=a)


def test_transfer_cli_writes_the_rearranged_piece(checkpoint, arrangement_model, tmp_path):
    a, b = tmp_path / "a.mid", tmp_path / "b.mid"
    _score(MELODY, _block_chords([(48, 52, 55), (43, 47, 50)], "block")).dump_midi(str(a))
    _score(MELODY, _block_chords([(50, 54, 57), (45, 49, 52)], "oompah")).dump_midi(str(b))
    assert cli.main(["transfer", str(arrangement_model), str(a), "--arrangement-from", str(b),
                     "-o", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "a.arrangement-as.b.mid").is_file()
    plain = tmp_path / "plain"
    shutil.copytree(checkpoint, plain)
    assert cli.main(["transfer", str(plain), str(a), "--arrangement-from", str(b), "-o", str(tmp_path / "o2")]) == 2


# ---- real music -------------------------------------------------------------------------------------------------


@pytest.mark.shared_data
def test_the_content_view_finds_pop909s_sung_melody(shared_datasets, pipeline):
    """The skyline against POP909's MELODY track (10 songs, their merged tracks read in 4/4): most sung notes are in
    the content view's melody (0.81 recall on 30 songs)."""
    songs = sorted(glob.glob(str(shared_datasets / "pop909" / "songs" / "*" / "0[0-9][0-9].mid")))[:10]
    if not songs:
        pytest.skip("no POP909 songs in the shared datasets")
    found = total = 0
    for path in songs:
        score = symusic.Score(path)
        melody = next(t for t in score.tracks if t.name.upper().startswith("MELODY"))
        ids = pipeline.piece_encoder.tokenize(score, time_signature="4/4")
        notes = notes_of(ids, pipeline.vocab)
        onset = notes.bar * pipeline.vocab.positions_per_bar("4/4") + notes.position
        top = skyline(onset, notes.pitch, notes.length)
        sky = set(zip(onset[top].tolist(), notes.pitch[top].tolist()))
        sung = {(round(n.time / score.tpq * pipeline.vocab.positions_per_beat), n.pitch) for n in melody.notes}
        found, total = found + len(sky & sung), total + len(sung)
    assert found / total > 0.7


# ---- the measure (evaluation.blocks) ----------------------------------------------------------------------------


def test_swap_metrics_on_known_windows(pipeline):
    from midistruct.evaluation.blocks import chord_accuracy, melody_f1, melody_scores, moved, window_parts

    c_g = [(48, 52, 55), (43, 47, 50)]
    a = pipeline.piece_encoder.tokenize(_score(MELODY, _block_chords(c_g, "block")))
    other_melody = MELODY[:3] + [(8, 8, 81)]  # the last note higher
    b = pipeline.piece_encoder.tokenize(_score(other_melody, _block_chords([(50, 54, 57), (45, 49, 52)], "oompah")))
    pa, pb = window_parts(a, pipeline.vocab), window_parts(b, pipeline.vocab)
    assert melody_f1(pa["melody"], pa["melody"]) == 1.0
    assert melody_f1(pa["melody"], pb["melody"]) == pytest.approx(0.75)
    # B's melody has A's rhythm, one pitch of four changed: the miss is in the pitch, not the onsets
    assert melody_scores(pa["melody"], pb["melody"]) == pytest.approx(
        {"melody_f1": 0.75, "melody_onset_f1": 1.0, "melody_pitch": 0.75})
    late = {(onset + 1, pitch) for onset, pitch in pa["melody"]}  # every note a position late: nothing shared
    assert melody_scores(pa["melody"], late) == {"melody_f1": 0.0, "melody_onset_f1": 0.0, "melody_pitch": 0.0}
    assert chord_accuracy(pa["chords"], pa["chords"]) == 1.0
    assert chord_accuracy(pa["chords"], pb["chords"]) == 0.0  # C vs D major, G vs A major: no common pitch class
    c_em = pipeline.piece_encoder.tokenize(_score(MELODY, _block_chords([(48, 52, 55), (52, 55, 59)], "block")))
    assert chord_accuracy(pa["chords"], window_parts(c_em, pipeline.vocab)["chords"]) == pytest.approx((4 + 4 * 2 / 4) / 8)  # G vs Em: 2 of 4
    assert pa["texture"]["polyphony"] == 3 and pb["texture"]["polyphony"] == 1.5
    assert pa["texture"]["density"] == 12 and pb["texture"]["density"] == 12
    halfway = {k: (np.asarray(pa["texture"][k]) + np.asarray(pb["texture"][k])) / 2 for k in pa["texture"]}
    got = moved(pa["texture"], pb["texture"], halfway)
    assert got["density"] is None  # A and B agree: not a statistic the swap can move
    assert got["polyphony"] == pytest.approx(0.5) and got["rhythm"] == pytest.approx(0.5)
    assert moved(pa["texture"], pb["texture"], pb["texture"])["register"] == pytest.approx(1.0)


# ---- the performance block --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def velocity_encoder():
    from midistruct.tokens.encode import PieceEncoder

    return PieceEncoder(load_config("tiny", ["tokenizer.use_velocities=true"]))


def _played(score: symusic.Score, velocities) -> symusic.Score:
    """The score with its notes' velocities set in order (cycling through ``velocities``)."""
    out = score.copy()
    k = 0
    for track in out.tracks:
        for note in track.notes:
            note.velocity = velocities[k % len(velocities)]
            k += 1
    return out


def test_performance_view_is_position_and_velocity_only(velocity_encoder):
    vocab = velocity_encoder.vocab
    score = _score(MELODY, _block_chords([(48, 52, 55), (43, 47, 50)], "block"))
    loud, soft = _played(score, [100, 60, 80]), _played(score, [40, 30, 35])
    views = {name: window_views(velocity_encoder.tokenize(s), vocab, views=("content", "arrangement", "performance"))
             for name, s in (("loud", loud), ("soft", soft))}
    assert np.array_equal(views["loud"]["content"], views["soft"]["content"])
    assert np.array_equal(views["loud"]["arrangement"], views["soft"]["arrangement"])
    assert not np.array_equal(views["loud"]["performance"], views["soft"]["performance"])
    kinds = set(vocab.base_kinds[views["loud"]["performance"]].tolist())
    assert kinds == {"Bar", "TimeSig", "Position", "Velocity"}
    up = velocity_encoder.tokenize(_played(_score([(o, d, p + 2) for o, d, p in MELODY],
                                                  _block_chords([(50, 54, 57), (45, 49, 52)], "block")), [100, 60, 80]))
    assert np.array_equal(window_views(up, vocab, views=("performance",))["performance"], views["loud"]["performance"])
    plain = _no_velocity_vocab()
    with pytest.raises(ValueError, match="needs velocity tokens"):
        window_views(np.array([plain.bar_id]), plain, views=("performance",))


def _no_velocity_vocab():
    from midistruct.tokens.encode import PieceEncoder

    return PieceEncoder(load_config("tiny")).vocab


def test_a_model_with_three_blocks_reads_velocity_only_through_the_performance_code(velocity_encoder):
    vocab = velocity_encoder.vocab
    torch.manual_seed(0)
    model = MidiStructModel(MidiStructConfig.tiny(vocab_size=vocab.size, arrangement_dim=6, performance_dim=3,
                                                  max_positions=256)).eval()
    assert model.config.views == ("content", "arrangement", "performance")
    score = _score(MELODY, _block_chords([(48, 52, 55), (43, 47, 50)], "block"))
    windows = [velocity_encoder.tokenize(_played(score, v)) for v in ([100, 60, 80], [40, 30, 35])]
    with torch.no_grad():
        z = model.encode_batch(window_batch(windows, vocab, views=model.config.views)).z_bar
    blocks = model.config.block_slices()
    assert blocks["performance"] == slice(14, 17) and z.shape[-1] == 17
    for name in ("content", "arrangement"):
        assert torch.allclose(z[0, :, blocks[name]], z[1, :, blocks[name]], atol=1e-5)
    assert not torch.allclose(z[0, :, blocks["performance"]], z[1, :, blocks["performance"]], atol=1e-3)
    from huggingface_hub.errors import StrictDataclassClassValidationError

    with pytest.raises(StrictDataclassClassValidationError, match="needs an arrangement block"):
        MidiStructConfig.tiny(performance_dim=3)


def test_init_adds_a_performance_block_and_velocity_tokens(checkpoint, arrangement_model, tmp_path):
    """From a content + arrangement run on data without velocity to one with a performance block on the same music
    with velocity tokens: the old tokens' weights move to their new ids, so before any training the new model's
    logits for the old tokens are the old model's."""
    from midistruct.prepare import prepare

    midi = checkpoint.parent.parent / "midi"
    source = arrangement_model
    sets = [f"data.sources=[{{kind: folder, path: '{midi}'}}]", f"data.output={tmp_path / 'vel'}",
            "tokenizer.use_velocities=true", f"train.run_dir={tmp_path / 'three'}", "train.threads=1",
            "model.arrangement_dim=4", "model.performance_dim=3", "train.max_steps=1", "train.eval_every=1",
            "train.save_every=1"]
    three = load_config("tiny", sets)
    prepare(three, progress=False)
    trainer = Trainer(three, init=source, progress=False)
    new = trainer.model.eval()
    old, old_tokenizer, _ = load_checkpoint(source)
    assert new.config.vocab_size > old.config.vocab_size and new.config.views[-1] == "performance"
    from midistruct.model.checkpoint import vocab_map
    from midistruct.tokens.remi import RemiVocab

    mapping = vocab_map(RemiVocab(old_tokenizer).base_tokens, RemiVocab(trainer.tokenizer).base_tokens)
    old_ids = torch.tensor([[1, 4, 5, 30, 31, 40]]).clamp(max=old.config.vocab_size - 1)
    new_ids = torch.from_numpy(np.array([np.flatnonzero(mapping == i)[0] for i in old_ids[0].tolist()]))[None]
    z_old, z_segment = torch.randn(1, 2, old.config.bar_code_dim), torch.randn(1, old.config.latent_dim_segment)
    z_new = torch.cat([z_old, torch.randn(1, 2, 3)], -1)
    with torch.no_grad():
        want = old.eval().decoder_forward(old_ids, z_bar=z_old, z_segment=z_segment).logits
        got = new.decoder_forward(new_ids, z_bar=z_new, z_segment=z_segment).logits
    known = torch.from_numpy(mapping >= 0)
    torch.testing.assert_close(got[..., known], want[..., torch.from_numpy(mapping[mapping >= 0])], rtol=1e-4,
                               atol=1e-4)
    trainer.run()
    ms = MidiStruct.from_pretrained(tmp_path / "three" / "last")
    a = tmp_path / "a.mid"
    _played(_score(MELODY, _block_chords([(48, 52, 55), (43, 47, 50)], "block")), [100, 60, 80]).dump_midi(str(a))
    assert cli.main(["transfer", str(tmp_path / "three" / "last"), str(a), "--performance-from", str(a),
                     "-o", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "a.performance-as.a.mid").is_file()
    with pytest.raises(BlockError, match="no performance block"):
        MidiStruct.from_pretrained(source).transfer(a, performance_from=a)
    # the swap measure for this block: dynamics moved, and each block probed for the loudness too
    from midistruct.evaluation.blocks import DYNAMICS, measure_swaps, probe_blocks, swap_pairs

    pairs = swap_pairs(tmp_path / "vel", ms.vocab, n=2, bars=ms.bars, split="train")
    assert set(measure_swaps(ms, pairs, block="performance")["moved"]) == set(DYNAMICS)
    probes = probe_blocks(ms, tmp_path / "vel", split="train", windows=40)
    assert {f"{b}->{t}" for b in ("content", "arrangement", "performance")
            for t in ("tonic", "polyphony", "loudness")} | {"windows"} == set(probes)
    assert ms.blocks()["performance"] == slice(old.config.bar_code_dim, old.config.bar_code_dim + 3)
    assert cli.main(["transfer", str(source), str(a), "-o", str(tmp_path / "o3")]) == 2  # no source given


def test_the_swap_measure_runs_on_held_out_windows(checkpoint, arrangement_model):
    """evaluation.blocks end to end on a tiny block model: pairs from different pieces, the swap and no-swap
    decodes scored against both sources, and the cross-block probes (values are the untrained model's)."""
    from midistruct.evaluation.blocks import TEXTURE, measure_reconstruction, measure_swaps, probe_blocks, swap_pairs

    data = checkpoint.parent.parent / "data"
    ms = MidiStruct.from_pretrained(arrangement_model)
    pairs = swap_pairs(data, ms.vocab, n=3, bars=ms.bars, split="train")
    assert len(pairs) == 3 and all(not np.array_equal(a, b) for a, b in pairs)
    result = measure_swaps(ms, pairs)
    assert result["pairs"] == 3 and len(result["rows"]) == 3
    for key in ("melody_f1", "melody_f1_no_swap", "melody_onset_f1", "melody_pitch_style_source", "chord_accuracy",
                "chord_accuracy_style_source"):
        assert 0.0 <= result[key] <= 1.0
    # the bound for any model: its own reconstruction of the content windows, scored the same way
    alone = measure_reconstruction(ms, [a for a, _ in pairs])
    assert alone["windows"] == 3
    assert set(alone) == {"windows", "melody_f1", "melody_onset_f1", "melody_pitch", "chord_accuracy"}
    assert alone["melody_f1"] == pytest.approx(result["melody_f1_no_swap"])  # the same greedy decode
    assert set(result["moved"]) == set(TEXTURE)
    probes = probe_blocks(ms, data, split="train", windows=40)
    assert set(probes) == {"windows", "content->tonic", "content->polyphony", "arrangement->tonic",
                           "arrangement->polyphony"}


def test_dynamics_statistics_for_a_performance_swap(velocity_encoder):
    from midistruct.evaluation.blocks import DYNAMICS, moved, window_parts

    vocab = velocity_encoder.vocab
    score = _score(MELODY, _block_chords([(48, 52, 55), (43, 47, 50)], "block"))
    loud, soft = (window_parts(velocity_encoder.tokenize(_played(score, v)), vocab)["texture"]
                  for v in ([110, 110, 110], [30, 50, 70]))
    assert loud["loudness"] > 100 and loud["spread"] < 5 and 40 < soft["loudness"] < 60 and soft["spread"] > 10
    assert loud["accents"].shape == (32,) and loud["accents"][0] > 100 and loud["accents"][1] == 0
    result = moved(loud, soft, soft, names=DYNAMICS)
    assert result == {"loudness": 1.0, "spread": 1.0, "accents": 1.0, "accent_pattern": 1.0}
    # the accent pattern compares only the positions both play, relative to each window's mean: the same
    # velocities one step louder everywhere are the same pattern, and a position one of them does not play is
    # not a difference
    even = [110, 110, 110]
    louder = window_parts(velocity_encoder.tokenize(_played(score, [120, 120, 120])), vocab)["texture"]
    base = window_parts(velocity_encoder.tokenize(_played(score, even)), vocab)["texture"]
    assert np.nanmax(np.abs(louder["accent_pattern"] - base["accent_pattern"])) < 1.0
    assert np.isnan(loud["accent_pattern"][1]) and soft["accent_pattern"][0] < 0  # bar position 1 has no note
    assert moved(base, soft, louder, names=("accent_pattern",))["accent_pattern"] < 0.1
    assert window_parts(_no_velocity_vocab().bar_id * np.ones(1, dtype=np.int64), _no_velocity_vocab())[
        "texture"]["loudness"] == 0.0


def test_the_model_card_names_the_blocks_and_how_to_swap_them(checkpoint, arrangement_model, tmp_path):
    """An exported model with blocks (issue 19, item 1: documented in the model card): card.json gives each block's
    width, the README says what each holds and shows `midistruct transfer`; a model without blocks says neither."""
    from midistruct.model import pretrained

    card = {"description": "A tiny block model.", "models": "2-bar synthetic pieces", "data": "10 random pieces",
            "licence": "MIT", "metric": {"name": "nothing", "value": 0.0, "command": "none"}}
    written = pretrained.export(arrangement_model, tmp_path / "tiny-blocks", card=card)
    assert written["blocks"] == {"content": 8, "arrangement": 4}
    readme = (tmp_path / "tiny-blocks" / "README.md").read_text()
    assert "| functional blocks (bar code) | content (8 numbers a bar: the melody" in readme
    assert "arrangement (4: the other notes' rhythm" in readme
    assert "midistruct transfer tiny-blocks song.mid --arrangement-from other.mid -o out/" in readme
    plain = pretrained.export(checkpoint, tmp_path / "tiny-plain", card=card)
    assert "blocks" not in plain
    assert "transfer" not in (tmp_path / "tiny-plain" / "README.md").read_text()

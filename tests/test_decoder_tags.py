"""Issue 18, item 2: a decoder that reads tags beside the codes (``model.decoder_tags``), trained with tag dropout
so that every tag is optional. The values come from the training data, reach each window's batch, change what the
decoder predicts, travel through ``generate`` (beams included) and through every generation command, and a value the
decoder does not know is a clear error listing the known ones."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

from midistruct.config import load_config
from midistruct.generation.latents import PieceLatents
from midistruct.model import MidiStructConfig, MidiStructModel
from midistruct.prepare import prepare
from midistruct.shards.dataset import WindowDataset, collate, tag_vocabulary
from midistruct.training.loop import TrainError, Trainer
from scores import make_score, write_corpus

TAGS = {"mode": ["major", "minor"], "tune_type": ["jig", "reel", "waltz"]}


def _tiny(**overrides) -> MidiStructModel:
    torch.manual_seed(0)
    return MidiStructModel(MidiStructConfig.tiny(latent_mode="ae", decoder_tags=TAGS, **overrides)).eval()


def _window(B: int = 3, T: int = 20) -> torch.Tensor:
    ids = torch.randint(5, 50, (B, T), generator=torch.Generator().manual_seed(1))
    ids[:, 0] = 4  # every window opens with a Bar token
    return ids


def test_the_config_names_each_value_by_its_row():
    from huggingface_hub.errors import StrictDataclassClassValidationError as Invalid

    cfg = MidiStructConfig.tiny(decoder_tags=TAGS)
    assert cfg.tag_index("tune_type", "reel") == 2 and cfg.tag_index("mode", None) == 0
    with pytest.raises(KeyError):
        cfg.tag_index("tune_type", "polka")
    with pytest.raises(Invalid, match="no values"):
        MidiStructConfig.tiny(decoder_tags={"mode": []})
    with pytest.raises(Invalid, match="tag_dropout"):
        MidiStructConfig.tiny(decoder_tags=TAGS, tag_dropout=1.5)
    with pytest.raises(Invalid, match="need an encoder"):
        MidiStructConfig.tiny(decoder_tags=TAGS, latent_mode="none")
    assert MidiStructModel(MidiStructConfig.tiny()).tag_codes is None  # no tags, no weights


def test_the_tags_change_what_the_decoder_predicts_and_none_given_is_row_zero():
    model, ids = _tiny(), _window()
    z = model.encode(ids)
    reel = torch.tensor([[0, 2]] * 3)
    logits = {name: model.decoder_forward(ids, z_bar=z.z_bar, z_segment=z.z_segment, tag_ids=t).logits
              for name, t in {"none": None, "zeros": torch.zeros(3, 2, dtype=torch.long), "reel": reel}.items()}
    assert torch.equal(logits["none"], logits["zeros"])
    assert (logits["reel"] - logits["none"]).abs().max() > 1e-4
    with pytest.raises(ValueError, match="reads 2 tags"):
        model.decoder_forward(ids, z_bar=z.z_bar, z_segment=z.z_segment, tag_ids=torch.zeros(3, 1, dtype=torch.long))
    plain = MidiStructModel(MidiStructConfig.tiny(latent_mode="ae")).eval()
    zp = plain.encode(ids)
    with pytest.raises(ValueError, match="reads no decoder tags"):
        plain.decoder_forward(ids, z_bar=zp.z_bar, z_segment=zp.z_segment, tag_ids=reel)


def test_training_hides_tags_at_the_dropout_rate_and_their_vectors_learn():
    model = _tiny(tag_dropout=0.3).train()
    torch.manual_seed(0)
    kept = (model.tag_dropout(torch.ones(4000, 2, dtype=torch.long)) > 0).float().mean()
    assert kept == pytest.approx(0.7, abs=0.03)
    ids = _window()
    out = model(ids, labels=ids, tag_ids=torch.tensor([[1, 1], [2, 3], [1, 2]]))
    out.loss.backward()
    assert model.tag_codes.tables[1].weight.grad.abs().sum() > 0  # the tune type's vectors are trained
    never = _tiny(tag_dropout=1.0).train()
    assert not never.tag_dropout(torch.ones(50, 2, dtype=torch.long)).any()


def test_generate_carries_the_tags_through_beams_and_the_cache():
    model, ids = _tiny(), _window()
    z = model.encode(ids)
    bos = torch.ones(3, 1, dtype=torch.long)
    tags = torch.tensor([[1, 2], [2, 1], [0, 3]])
    kw = dict(input_ids=bos, z_bar=z.z_bar, z_segment=z.z_segment, max_new_tokens=6, do_sample=False,
              pad_token_id=0, eos_token_id=2)
    greedy = model.generate(**kw, tag_ids=tags)
    # the cached greedy path decodes what one full forward pass of the tagged decoder predicts
    full = model.decoder_forward(greedy[:, :-1], z_bar=z.z_bar, z_segment=z.z_segment, tag_ids=tags).logits
    assert torch.equal(full.argmax(-1)[:, -1], greedy[:, -1])
    assert model.generate(**kw, tag_ids=tags, num_beams=2).shape[0] == 3


def test_latents_keep_their_tags_through_a_file(tmp_path):
    z = PieceLatents(torch.zeros(2, 2, 8), torch.zeros(2, 16), [2, 2], ["4/4", "4/4"], tags={"tune_type": "reel"})
    assert z.window(1).tags == z.with_codes(z.z_bar, z.z_segment).tags == {"tune_type": "reel"}
    assert z.with_tags({}).tags == {} and z.tags == {"tune_type": "reel"}
    for suffix in (".safetensors", ".npz"):
        assert PieceLatents.load(z.save(tmp_path / f"z{suffix}")).tags == {"tune_type": "reel"}


@pytest.fixture(scope="module")
def tagged_data(tmp_path_factory):
    """12 synthetic 16-bar pieces: even ones jigs, odd ones reels (a CSV of tags), one with no tune type."""
    root = tmp_path_factory.mktemp("decoder-tags")
    paths = write_corpus(root / "midi", n=12, bars=16)
    with open(root / "tags.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "tune_type"])
        writer.writerows([[p.name, "reel" if i % 2 else "jig"] for i, p in enumerate(paths) if i != 11])
    sets = [f"data.sources=[{{kind: folder, path: '{root / 'midi'}', tags: '{root / 'tags.csv'}'}}]",
            f"data.output={root / 'data'}", "splits.valid=0.2", "splits.test=0"]
    prepare(load_config("tiny", sets), progress=False)
    return root


def test_the_values_come_from_the_training_windows_and_reach_each_batch(tagged_data):
    data = tagged_data / "data"
    assert tag_vocabulary([data], "train", ["tune_type"]) == {"tune_type": ["jig", "reel"]}
    with pytest.raises(ValueError, match="no value of tag"):
        tag_vocabulary([data], "train", ["tune_type"], min_windows=10_000)
    with pytest.raises(ValueError, match="TimeSig"):
        tag_vocabulary([data], "train", ["meter"])
    ds = WindowDataset([data], "train", tags={"tune_type": ["jig", "reel"]})
    pieces = ds.arrays[0].pieces()
    for i in range(len(ds)):
        piece = pieces[int(ds.arrays[0].windows[i][2])]
        number = int(piece["id"].rsplit("piece", 1)[1].split(".")[0])
        want = 0 if number == 11 else 2 if number % 2 else 1
        assert ds[i]["tag_ids"].tolist() == [want], piece["id"]
    assert collate([ds[0], ds[1]])["tag_ids"].shape == (2, 1)
    assert "tag_ids" not in WindowDataset([data], "train")[0]


@pytest.fixture(scope="module")
def tagged_model(tagged_data):
    """A tiny VAE (it samples without a fitted prior) whose decoder reads the tune type, trained 2 steps."""
    run = tagged_data / "run"
    cfg = load_config("tiny", [f"data.output={tagged_data / 'data'}", f"train.run_dir={run}", "train.threads=1",
                               "model.decoder_tags=[tune_type]", "train.max_steps=2", "train.eval_every=2",
                               "train.save_every=2"])
    Trainer(cfg, progress=False).run()
    return run / "last"


def test_training_keeps_the_values_with_the_checkpoint_and_resumes(tagged_model, tagged_data):
    assert json.loads((tagged_model / "config.json").read_text())["decoder_tags"] == {"tune_type": ["jig", "reel"]}
    cfg = load_config("tiny", [f"data.output={tagged_data / 'data'}", f"train.run_dir={tagged_model.parent}",
                               "train.threads=1", "model.decoder_tags=[tune_type]", "train.max_steps=3",
                               "train.eval_every=3", "train.save_every=3"])
    trainer = Trainer(cfg, resume=True, progress=False)
    assert trainer.state["step"] == 2 and trainer.model.tag_codes is not None
    assert "tag_ids" in collate([trainer.train_ds[0]])
    canonical = load_config("tiny", [f"data.output={tagged_data / 'data'}", "augment.key=canonical",
                                     "augment.transpose=[0, 0]", "model.decoder_tags=[key]",
                                     f"train.run_dir={tagged_data / 'other'}"])
    with pytest.raises(TrainError, match="give mode instead"):
        Trainer(canonical, progress=False)


def test_every_command_hands_the_decoder_its_tags(tagged_model, tmp_path, monkeypatch, capsys):
    import midistruct.generation.pipeline as pipeline
    from midistruct.cli import main

    ms = pipeline.MidiStruct.from_pretrained(tagged_model)
    assert ms.known_tags() == {"tune_type": ["jig", "reel"]}  # no prior: the decoder's tags alone
    assert ms.decoder_tag_ids({"tune_type": "reel", "mode": "minor"}).tolist() == [[2]]
    seen = []
    real = pipeline.generate_windows

    def spy(*args, tag_ids=None, **kw):
        seen.append(None if tag_ids is None else tag_ids.tolist())
        return real(*args, tag_ids=tag_ids, **kw)

    monkeypatch.setattr(pipeline, "generate_windows", spy)
    midi = tmp_path / "tune.mid"
    make_score((4, 4), bars=4, seed=3).dump_midi(str(midi))
    ms.sample(2, seed=0, bars=1, tags={"tune_type": "reel"})
    assert seen[-1] == [[2], [2]]
    ms.reconstruct(midi, tags={"tune_type": "jig"})
    assert seen[-1] and all(row == [1] for row in seen[-1])
    ms.interpolate(midi, midi, steps=2, tags={"tune_type": "reel"})
    assert all(row == [2] for row in seen[-1])
    ms.continue_(midi, 1, seed=0, tags={"tune_type": "jig"})
    assert seen[-1] == [[1]]
    ms.reconstruct(midi)
    assert all(row == [0] for row in seen[-1])  # no tag given: row 0, as training's hidden tags
    with pytest.raises(pipeline.InputError, match="knows no tune_type 'polka'; its values: jig, reel"):
        ms.sample(1, tags={"tune_type": "polka"})
    out = tmp_path / "out"
    assert main(["sample", str(tagged_model), "-n", "1", "--bars", "1", "--tag", "tune_type=reel", "--device", "cpu",
                 "-o", str(out)]) == 0
    assert seen[-1] == [[2]]
    capsys.readouterr()
    assert main(["sample", str(tagged_model), "--tag", "tune_type=polka", "--device", "cpu", "-o",
                 str(tmp_path / "x")]) == 2
    assert "its values: jig, reel" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert main(["tags", str(tagged_model)]) == 0
    assert "tune_type (the decoder reads it): jig, reel" in capsys.readouterr().out
    assert main(["tags", str(tagged_model), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"tune_type": {"jig": None, "reel": None}}
    both = Path(shutil.copytree(tagged_model, tmp_path / "with-prior"))  # a prior that knows the tag as well
    assert main(["prior", str(both), "--tags", "tune_type", "--min-tag-windows", "1", "--threads", "1"]) == 0
    capsys.readouterr()
    assert main(["tags", str(both)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("tune_type")]
    assert len(lines) == 1 and lines[0].startswith("tune_type (the decoder reads it too): jig (")


def test_evaluate_gives_the_decoder_each_windows_own_tags_when_asked(tagged_model, tagged_data, checkpoint,
                                                                       monkeypatch):
    import midistruct.generation.pipeline as pipeline
    from midistruct.evaluation.evaluate import evaluate_checkpoint

    seen = []
    real = pipeline.generate_windows

    def spy(*args, tag_ids=None, **kw):
        seen.append(None if tag_ids is None else tag_ids[:, 0].tolist())
        return real(*args, tag_ids=tag_ids, **kw)

    monkeypatch.setattr(pipeline, "generate_windows", spy)
    kw = dict(data=str(tagged_data / "data"), split="valid", windows=8, free_run=4, sample_temperature=0.0)
    found = evaluate_checkpoint(tagged_model, tags=True, **kw)
    assert found["decoder_tags_given"] and found["free_onset_f1"] >= 0
    given = [t for row in seen if row is not None for t in row]
    assert given and set(given) <= {0, 1, 2} and set(given) - {0}  # the windows' jig / reel, not all "not given"
    seen.clear()
    assert not evaluate_checkpoint(tagged_model, **kw)["decoder_tags_given"] and seen and seen == [None] * len(seen)
    with pytest.raises(pipeline.InputError, match="reads no tags"):
        evaluate_checkpoint(checkpoint, tags=True, windows=4, free_run=2)


def test_init_adds_tags_to_a_trained_model_and_keeps_its_weights(tagged_data, tmp_path):
    """`train --init MODEL --set model.decoder_tags=[tune_type]`: a model trained without tags grows them (the
    shipped ones can learn a user's tags), every other weight copied."""
    from safetensors.torch import load_file

    plain_run = tmp_path / "plain"
    base = [f"data.output={tagged_data / 'data'}", "train.threads=1", "train.max_steps=1", "train.eval_every=1",
            "train.save_every=1"]
    Trainer(load_config("tiny", [*base, f"train.run_dir={plain_run}"]), progress=False).run()
    grown = Trainer(load_config("tiny", [*base, f"train.run_dir={tmp_path / 'grown'}",
                                         "model.decoder_tags=[tune_type]", "model.tag_dropout=0.25"]),
                    init=plain_run / "last", progress=False)
    assert grown.model.config.decoder_tags == {"tune_type": ["jig", "reel"]} and grown.model.config.tag_dropout == 0.25
    saved = load_file(str(plain_run / "last" / "model.safetensors"))
    state = grown.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items() if k in state)
    assert [k for k in state if k not in saved and k != "lm_head.weight"] == ["tag_codes.tables.0.weight"]  # tied


def test_tag_control_routes_say_who_is_told_the_tag(tagged_model, tagged_data, monkeypatch):
    """`tag_control.control(route=...)`: "both" tells the prior and the decoder, "prior" and "meter" leave the decoder
    untold, "decoder" tells it alone; an unknown route is refused."""
    import midistruct.generation.pipeline as pipeline
    from midistruct.evaluation.tag_control import control, fit_judge
    from midistruct.shards.reader import ShardSet

    ms = pipeline.MidiStruct.from_pretrained(tagged_model)
    ms.fit_prior(tagged_data / "data", windows=200, rank=4, tags=("tune_type",), min_tag_windows=1, bank=0)
    arrays = ShardSet(tagged_data / "data").split("train")
    ds = WindowDataset([tagged_data / "data"], "train", tags={"tune_type": ["jig", "reel"]})
    rows = [(arrays.window(i)[0], ["jig", "reel"][int(ds[i]["tag_ids"][0]) - 1])
            for i in range(arrays.n_windows) if int(ds[i]["tag_ids"][0])]
    judge = fit_judge(ms, [w for w, _ in rows], [v for _, v in rows], ["jig", "reel"])
    seen = []
    real = pipeline.generate_windows

    def spy(*args, tag_ids=None, **kw):
        seen.append(sorted({int(t) for t in tag_ids[:, 0]}))
        return real(*args, tag_ids=tag_ids, **kw)

    monkeypatch.setattr(pipeline, "generate_windows", spy)
    told = {}
    for route in ("both", "prior", "decoder", "meter"):
        seen.clear()
        found = control(ms, judge, "tune_type", held_out=rows[:6], n=3, temperature=0.0, route=route)
        assert found["route"] == route and 0 <= found["mean_controlled"] <= 1
        told[route] = sorted({t for call in seen for t in call})
    assert told["both"] == told["decoder"] == [0, 1, 2]  # the free samples untold, each value's told
    assert told["prior"] == told["meter"] == [0]
    with pytest.raises(ValueError, match="unknown route"):
        control(ms, judge, "tune_type", held_out=rows[:6], n=1, route="encoder")
    # snap=False draws every sample from the Gaussian alone (sample's --no-snap), the free ones included
    snaps = []
    for method in ("sample_latents", "sample_latents_in_meters"):
        original = getattr(ms, method)
        monkeypatch.setattr(ms, method, lambda *a, _f=original, **kw: snaps.append(kw.get("snap", True)) or _f(*a, **kw))
    for snap in (True, False):
        snaps.clear()
        assert control(ms, judge, "tune_type", held_out=rows[:6], n=2, temperature=0.0, snap=snap)["snap"] is snap
        assert len(snaps) >= 3 and set(snaps) == {snap}


def test_the_adversary_reverses_its_gradient_into_the_encoder_and_validation_reports_it():
    """``model.tag_adversary: W``: heads name the given tags from the codes; the encoder gets their gradient times -W,
    the heads their own; windows without a tag teach nothing."""
    from huggingface_hub.errors import StrictDataclassClassValidationError as Invalid

    from midistruct.training.validation import teacher_forced

    with pytest.raises(Invalid, match="needs decoder_tags"):
        MidiStructConfig.tiny(tag_adversary=1.0)
    model, ids = _tiny(tag_adversary=2.0).train(), _window(4)
    tags = torch.tensor([[1, 2], [2, 0], [0, 3], [1, 1]])

    def grads(scale: float):
        model.tag_adversary.scale = scale
        model.zero_grad()
        out = model(ids, labels=ids, tag_ids=tags)
        out.tag_adversary_loss.backward()
        named = dict(model.named_parameters())
        return named["encoder.blocks.0.ffn.up.weight"].grad.clone(), named["tag_adversary.heads.0.0.weight"].grad.clone()

    encoder, head = grads(2.0)
    plain_encoder, plain_head = grads(-1.0)  # a "reversal" by -1: the plain gradient
    assert torch.allclose(encoder, -2.0 * plain_encoder, atol=1e-7) and encoder.abs().sum() > 0
    assert torch.allclose(head, plain_head)
    untagged = model(ids, labels=ids, tag_ids=torch.zeros_like(tags))
    assert float(untagged.tag_adversary_loss.detach()) == 0.0 and int(untagged.tag_adversary_right.sum()) == 0
    model.eval()
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids, "tag_ids": tags}
    found = teacher_forced(model, [batch], device="cpu", autocast=lambda: torch.autocast("cpu", enabled=False))
    assert set(found) >= {"tag_adversary_accuracy.mode", "tag_adversary_accuracy.tune_type"}
    assert all(0.0 <= found[f"tag_adversary_accuracy.{t}"] <= 1.0 for t in TAGS)

"""Issue 18, item 5: sections as supervision. ``model.section_head`` asks each bar's content code which section
(``midistruct.tags.SECTION_CLASSES``) the bar is in, from the pieces' phrase labels: the labels reach each bar of
a window, the loss trains the encoder, validation says how often the head names the section, and a trained
model grows the head with ``--init``."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from midistruct.config import load_config
from midistruct.model import MidiStructConfig
from midistruct.prepare import prepare
from midistruct.shards.dataset import WindowDataset, collate
from midistruct.tags import SECTION_CLASSES, bar_section_classes
from midistruct.training.loop import TrainError, Trainer
from scores import write_corpus


def test_each_bar_gets_its_section_class():
    tags = {"phrases": "i2A4B4E2x1", "label_bar": "1"}
    a, b, intro, other = (SECTION_CLASSES.index(n) for n in ("A", "B", "intro", "other"))
    # bar 0 precedes the labels, E is no class, bar 14 is past them
    assert bar_section_classes(tags, 0, 15) == [-100, intro, intro, a, a, a, a, b, b, b, b, -100, -100, other, -100]
    assert bar_section_classes({}, 3, 4) == [-100] * 4
    assert bar_section_classes({"phrases": "not labels", "label_bar": "0"}, 0, 2) == [-100, -100]
    assert MidiStructConfig().section_classes == len(SECTION_CLASSES)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """8 synthetic 8-bar pieces whose CSV tags give phrase labels: A for bars 0-3, B for bars 4-7."""
    root = tmp_path_factory.mktemp("sections")
    paths = write_corpus(root / "midi", n=8, bars=8)
    with open(root / "tags.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "phrases", "label_bar"])
        writer.writerows([[p.name, "A4B4", "0"] for p in paths])
    sets = [f"data.sources=[{{kind: folder, path: '{root / 'midi'}', tags: '{root / 'tags.csv'}'}}]",
            f"data.output={root / 'data'}", "splits.valid=0.25", "splits.test=0"]
    prepare(load_config("tiny", sets), progress=False)
    return root


def test_windows_carry_each_bars_section(labelled):
    ds = WindowDataset([labelled / "data"], "train", sections=True)
    items = [ds[i] for i in range(len(ds))]
    assert all(len(it["section_ids"]) == int(it["bar_ids"].max()) + 1 for it in items)
    a, b = SECTION_CLASSES.index("A"), SECTION_CLASSES.index("B")
    for i, it in enumerate(items):  # each bar its own label: bars 0-3 of a piece are A, 4-7 B
        first_bar = int(ds.arrays[0].windows[i][3])
        assert it["section_ids"].tolist() == [a if first_bar + k < 4 else b for k in range(len(it["section_ids"]))]
    seen = torch.cat([it["section_ids"] for it in items])
    assert set(seen.tolist()) == {a, b}
    counts = ds.section_counts()
    assert set(counts) == {"A", "B"} and sum(counts.values()) == len(seen)
    batch = collate(items[:3])
    assert batch["section_ids"].shape == (3, max(len(it["section_ids"]) for it in items[:3]))
    assert "section_ids" not in WindowDataset([labelled / "data"], "train")[0]


def test_the_section_loss_trains_the_encoder_and_validation_reports_it(labelled, tmp_path):
    cfg = load_config("tiny", [f"data.output={labelled / 'data'}", f"train.run_dir={tmp_path / 'run'}",
                               "train.threads=1", "model.section_head=1.0", "train.max_steps=2", "train.eval_every=2",
                               "train.save_every=2"])
    trainer = Trainer(cfg, progress=False)
    model = trainer.model
    batch = collate([trainer.train_ds[i] for i in range(4)])
    out = model(**batch)
    assert out.section_loss is not None and float(out.section_loss.detach()) > 0
    model.zero_grad()
    out.section_loss.backward()  # the head's loss reaches the encoder, not the decoder
    assert model.section_head.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters()
               if n.startswith("encoder."))
    assert all(p.grad is None or p.grad.abs().sum() == 0 for n, p in model.named_parameters()
               if n.startswith("decoder."))
    assert sum(1 for n, _ in model.named_parameters() if n.startswith("decoder.")) > 10
    logs = trainer.run()
    assert "section_loss" in logs[-1]
    valid = [json_row for json_row in _metrics(tmp_path / "run") if json_row.get("split") == "valid"]
    assert valid and 0.0 <= valid[-1]["section_accuracy"] <= 1.0 and valid[-1]["section_bars"] > 0
    # the saved model keeps its head and reads music as any other (form_eval.py --model reads its codes)
    from midistruct.generation.pipeline import MidiStruct

    ms = MidiStruct.from_pretrained(tmp_path / "run" / "last")
    assert ms.model.section_head is not None
    torch.testing.assert_close(ms.model.section_head.weight, model.section_head.weight.to(ms.model.section_head.weight))
    piece = sorted((labelled / "midi").glob("*.mid"))[0]
    assert ms.encode(piece).z_bar.shape[-1] == ms.model.config.bar_code_dim


def _metrics(run):
    import json

    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_model_without_labels_is_refused_and_init_grows_the_head(checkpoint, tmp_path, labelled):
    data = checkpoint.parent.parent / "data"  # the tiny corpus has no phrase labels
    cfg = load_config("tiny", [f"data.output={data}", f"train.run_dir={tmp_path / 'a'}", "train.threads=1",
                               "model.section_head=1.0", "train.max_steps=1"])
    with pytest.raises(TrainError, match="no bar of .* has one"):
        Trainer(cfg, progress=False)
    # grown from a checkpoint without the head: its weights kept, the head new
    cfg = load_config("tiny", [f"data.output={labelled / 'data'}", f"train.run_dir={tmp_path / 'b'}",
                               "train.threads=1", "model.section_head=0.5", "train.max_steps=1"])
    grown = Trainer(cfg, init=checkpoint, progress=False).model
    assert grown.config.section_head == 0.5 and grown.section_head is not None
    from midistruct.model.checkpoint import load_checkpoint

    old = load_checkpoint(checkpoint)[0]
    assert torch.equal(old.state_dict()["lm_head.weight"], grown.state_dict()["lm_head.weight"])


@pytest.mark.shared_data
def test_pop909_phrase_labels_reach_the_bars(shared_datasets, tmp_path):
    """Real labels: 6 POP909 songs prepared with their phrase annotations; most bars of the 4-bar windows get a
    section, and the labelled classes include a melodic section and one without melody."""
    root, phrases = shared_datasets / "pop909", shared_datasets / "pop909-phrases"
    source = f"data.sources=[{{kind: pop909, path: '{root}', phrases_path: '{phrases}', versions: false, limit: 6}}]"
    tiny_model = [f"model.{k}={v}" for k, v in load_config("tiny").model.overrides().items()]
    cfg = load_config("pop909", [source, "data.workers=1", "splits.valid=0", "splits.test=0", *tiny_model,
                                 f"data.output={tmp_path / 'data'}"])
    prepare(cfg, progress=False)
    ds = WindowDataset([tmp_path / "data"], "train", sections=True)
    sections = np.concatenate([ds[i]["section_ids"].numpy() for i in range(len(ds))])
    assert (sections >= 0).mean() > 0.7
    named = {SECTION_CLASSES[c] for c in sections[sections >= 0]}
    assert "A" in named and named & {"intro", "outro", "bridge", "other"}

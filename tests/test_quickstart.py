"""The main job end to end on a tiny config: with a shipped model, interpolate its two examples and train
nothing; without one (or with --train), prepare, train, interpolate; either way MIDI, PNG, WAVs and the page."""

from __future__ import annotations

import json
import time

import pytest
import symusic
from scores import make_score, write_corpus

from midistruct.cli import main
from midistruct.config import ConfigError, QuickstartConfig, load_config
from midistruct.model import pretrained

CARD = {"description": "A tiny test model.", "models": "2-bar synthetic melodies", "data": "10 random pieces",
        "licence": "MIT", "metric": {"name": "onset F1", "value": 0.25, "command": "midistruct evaluate tiny"}}


def _sets(tmp_path, *more: str) -> list[str]:
    """quickstart's arguments for the tiny config on a synthetic corpus, every folder in ``tmp_path``."""
    sets = ["--config", "tiny", "--set", f"data.sources=[{{kind: folder, path: '{tmp_path / 'midi'}'}}]",
            "--set", f"data.output={tmp_path / 'data'}", "--set", f"train.run_dir={tmp_path / 'run'}",
            "--set", "train.max_steps=4", "--set", "train.eval_every=2", "--set", "train.save_every=2",
            "-o", str(tmp_path / "out"), "--quiet"]
    return [*sets, *(x for m in more for x in ("--set", m))]


def _ship(shippable, registry, tmp_path, name: str = "tiny-folk") -> list:
    """Export the tiny model into the registry with two 6-bar example pieces (reel.mid, jig.mid)."""
    examples = []
    for seed, stem in enumerate(("reel", "jig")):
        path = tmp_path / "examples-in" / f"{stem}.mid"
        path.parent.mkdir(exist_ok=True)
        make_score((4, 4), bars=6, seed=10 + seed).dump_midi(str(path))
        examples.append(path)
    pretrained.export(shippable, registry / name, card=CARD, examples=examples)
    return examples


def test_the_quickstart_config_names_the_shipped_model():
    assert load_config("quickstart").quickstart == QuickstartConfig(pretrained="folk-2bar", bars=4, steps=8)
    assert load_config("tiny").quickstart.pretrained is None  # the other configs train
    with pytest.raises(ConfigError, match=r"quickstart\.steps: must be >= 2 \(got 1\)"):
        load_config("quickstart", ["quickstart.steps=1"])


def test_quickstart_with_a_shipped_model_trains_nothing(shippable, registry, tmp_path, capsys, monkeypatch):
    examples = _ship(shippable, registry, tmp_path)

    def refuse(*args, **kwargs):
        raise AssertionError("quickstart prepared or trained although the shipped model is installed")

    monkeypatch.setattr("midistruct.prepare.prepare", refuse)
    monkeypatch.setattr("midistruct.training.loop.Trainer", refuse)
    started = time.monotonic()
    assert main(["quickstart", *_sets(tmp_path, "quickstart.pretrained=tiny-folk")]) == 0
    elapsed = time.monotonic() - started
    printed, out = capsys.readouterr().out, tmp_path / "out"
    summary = json.loads((out / "quickstart.json").read_text())
    assert summary["checkpoint"] == summary["pretrained"] == "tiny-folk" and summary["data"] is None
    assert summary["trained_steps"] == 2  # the shipped model's own steps; none here
    assert not (tmp_path / "data").exists() and not (tmp_path / "run").exists()
    assert (summary["a"], summary["b"]) == ("reel", "jig")
    assert summary["midi"] == ["A.reel.mid", *(f"step{i:02d}.mid" for i in range(8)), "B.jig.mid"]
    # A is the first example cut to 4 of its 6 bars (4/4, 480 ticks per quarter)
    original, cut = symusic.Score(str(examples[0])), symusic.Score(str(out / "A.reel.mid"))
    want = sorted((n.time, n.pitch) for n in original.tracks[0].notes if n.time < 4 * 4 * original.tpq)
    assert sorted((n.time * original.tpq // cut.tpq, n.pitch) for t in cut.tracks for n in t.notes) == want
    assert all(symusic.Score(str(out / name)).note_num() > 0 for name in summary["midi"])
    page = (out / "index.html").read_text()
    assert page.count("data:audio/wav;base64,") == page.count("data:image/png;base64,") == 10
    assert "example pieces of tiny-folk" in page and summary["page"] == str(out / "index.html")
    assert printed.startswith("[1/1] interpolating between the two example pieces of the shipped model tiny-folk")
    assert summary["page"] in printed and "nothing trained here" in printed and "quickstart --train" in printed
    assert "[2/3]" not in printed and summary["seconds"] < 60 and elapsed < 90


def test_quickstart_train_trains_even_with_a_shipped_model(shippable, registry, tmp_path, capsys):
    _ship(shippable, registry, tmp_path)
    write_corpus(tmp_path / "midi", n=24, bars=6)
    assert main(["quickstart", "--train", *_sets(tmp_path, "quickstart.pretrained=tiny-folk")]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((tmp_path / "out" / "quickstart.json").read_text())
    assert "pretrained" not in summary and summary["trained_steps"] == 4
    assert summary["checkpoint"] == str(tmp_path / "run" / "best") and summary["data"] == str(tmp_path / "data")
    assert printed.startswith("[1/3] preparing") and "[2/3] training" in printed and "no shipped model" not in printed


def test_quickstart_with_a_shipped_model_but_too_few_examples_is_one_line(shippable, registry, tmp_path, capsys):
    pretrained.export(shippable, registry / "no-examples", card=CARD)
    assert main(["quickstart", *_sets(tmp_path, "quickstart.pretrained=no-examples")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has 0 example pieces and quickstart needs two" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "run").exists()


def test_quickstart_runs_end_to_end_and_resumes(registry, tmp_path, capsys):
    write_corpus(tmp_path / "midi", n=24, bars=6)
    sets = _sets(tmp_path, "quickstart.pretrained=no-such-model")  # not shipped: it says so and trains
    assert main(["quickstart", *sets]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("no shipped model no-such-model in this install; training one (up to 4 steps)\n[1/3]")
    assert "[3/3]" in printed and "next:" in printed and str(tmp_path / "out") in printed
    summary = json.loads((tmp_path / "out" / "quickstart.json").read_text())
    assert summary["trained_steps"] == 4 and len(summary["midi"]) == 8 + 2  # A, 8 steps, B
    for name in summary["midi"]:
        assert symusic.Score(str(tmp_path / "out" / name)).note_num() > 0
    png = (tmp_path / "out" / summary["plot"]).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # a WAV per piece and one page with every piece's piano roll and player, its path printed
    assert summary["audio"]["files"] == [name.removesuffix(".mid") + ".wav" for name in summary["midi"]]
    assert all((tmp_path / "out" / wav).stat().st_size > 1000 for wav in summary["audio"]["files"])
    page = (tmp_path / "out" / "index.html").read_text()
    assert summary["page"] == str(tmp_path / "out" / "index.html") and summary["page"] in printed
    assert page.count("data:audio/wav;base64,") == page.count("data:image/png;base64,") == 10
    assert main(["quickstart", *sets]) == 0  # a second run resumes the finished run: no more steps
    assert json.loads((tmp_path / "out" / "quickstart.json").read_text())["trained_steps"] == 4
    assert "resuming" in capsys.readouterr().out
    # data and run made by an older midistruct, whose tokenizer settings differ: remade, not an error
    manifest = tmp_path / "data" / "manifest.json"
    old = json.loads(manifest.read_text()) | {"settings_hash": "0123456789abcdef"}
    manifest.write_text(json.dumps(old))
    assert main(["quickstart", *sets]) == 0
    printed = capsys.readouterr().out
    assert "other tokenizer settings" in printed and "resuming" not in printed
    assert json.loads(manifest.read_text())["settings_hash"] != "0123456789abcdef"

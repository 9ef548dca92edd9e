"""Attribute vectors: directions from measured attributes, shifting codes, the CLI, real tunes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import symusic
import torch

from midistruct.cli import main
from midistruct.generation import attributes
from midistruct.generation.attributes import AttributeVectors, directions, shift
from midistruct.generation.pipeline import MidiStruct
from midistruct.metrics import features
from midistruct.metrics.features import note_density


@pytest.fixture(scope="module")
def ms(checkpoint):
    torch.manual_seed(0)
    return MidiStruct.from_pretrained(checkpoint)


def test_direction_points_along_the_latent_unit_that_carries_the_attribute():
    rng = np.random.default_rng(0)
    z = torch.from_numpy(rng.standard_normal((400, 8))).float()
    values = z[:, 3].numpy() * 2 + 0.1 * rng.standard_normal(400)
    seg, bar, low, high = directions(z, z[:, :4], values)
    assert int(seg.abs().argmax()) == 3 and seg[3] > 2.0  # top quarter minus bottom quarter of a N(0,1)
    assert torch.allclose(bar, seg[:4]) and low < 0 < high
    flat = directions(z, z, np.zeros(400))  # a constant attribute: random groups, no direction to speak of
    assert float(flat[0].norm()) < 1.0 and flat[2] == flat[3] == 0.0


def test_shift_adds_the_vector_and_files_round_trip(tmp_path, ms):
    vectors = AttributeVectors(["note_density", "mean_pitch"], torch.ones(2, 16), torch.full((2, 8), 2.0),
                               [1.0, 60.0], [3.0, 70.0], 100)
    z = ms.sample_latents(3, bars=2)
    moved = shift(z, vectors, {"mean_pitch": -0.5})
    assert torch.allclose(moved.z_segment, z.z_segment - 0.5) and torch.allclose(moved.z_bar, z.z_bar - 1.0)
    with pytest.raises(KeyError, match="has: note_density, mean_pitch"):
        shift(z, vectors, {"polyphony": 1.0})
    back = AttributeVectors.load(vectors.save(tmp_path / "v.safetensors"))
    assert back.names == vectors.names and torch.equal(back.bar, vectors.bar) and back.high == [3.0, 70.0]
    z.save(tmp_path / "not-vectors.safetensors")
    with pytest.raises(ValueError, match="not an attribute-vectors file"):
        AttributeVectors.load(tmp_path / "not-vectors.safetensors")


def test_compute_over_the_checkpoint_corpus(ms):
    vectors = ms.attribute_vectors(windows=40)
    assert vectors.names[0] == "note_density" and vectors.windows == 24  # all the train windows there are
    assert vectors.segment.shape == (len(features.ATTRIBUTES), ms.model.config.latent_dim_segment)
    assert vectors.bar.shape == (len(features.ATTRIBUTES), ms.model.config.latent_dim_bar)
    assert all(lo <= hi for lo, hi in zip(vectors.low, vectors.high))
    assert vectors.low[0] < vectors.high[0]  # synthetic pieces differ in density


def test_sweep_reports_measured_values_per_amount(ms):
    vectors = ms.attribute_vectors(windows=40, names=["note_density"])
    z = ms.encode_windows(attributes.corpus_windows(ms.cfg.data.output, split="test", limit=2))
    result = attributes.sweep(ms, [z.window(0), z.window(1)], vectors, "note_density", [-1.0, 0.0, 1.0])
    assert np.array(result["measured"]).shape == (3, 2) and -1.0 <= result["spearman"] <= 1.0


def test_cli_attributes_then_shifted_reconstruct_and_sample(ms, checkpoint, tmp_path, capsys):
    vec = tmp_path / "attrs.safetensors"
    assert main(["attributes", str(checkpoint), "--windows", "30", "--names", "note_density,syncopation",
                 "-o", str(vec), "--sweep", "2"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("Spearman") == 2 and "sweep of 2 test windows" in printed  # one line per attribute
    midi = tmp_path / "in.mid"
    from scores import make_score

    make_score((4, 4), bars=4, seed=5).dump_midi(str(midi))
    out = tmp_path / "out"
    assert main(["reconstruct", str(checkpoint), str(midi), "--vectors", str(vec), "--shift", "note_density=1.5",
                 "-o", str(out)]) == 0
    record = json.loads((out / "generation.json").read_text())
    assert record["shift"] == ["note_density=1.5"] and record["outputs"] == ["in.reconstruct.note_density1.5.mid"]
    assert symusic.Score(str(out / record["outputs"][0])).note_num() > 0
    assert main(["sample", str(checkpoint), "-n", "2", "--vectors", str(vec), "--shift", "syncopation=-1",
                 "--seed", "1", "-o", str(tmp_path / "s")]) == 0


@pytest.mark.parametrize("argv, message", [
    (["--shift", "note_density=1"], "needs --vectors"),
    (["--vectors", "VEC", "--shift", "note_density"], "expected NAME=AMOUNT"),
    (["--vectors", "VEC", "--shift", "tempo=1"], "no such attribute"),
    (["--vectors", "missing.safetensors", "--shift", "note_density=1"], "no such file"),
])
def test_cli_shift_errors_are_one_line(checkpoint, tmp_path, capsys, argv, message):
    vec = tmp_path / "v.safetensors"
    AttributeVectors(["note_density"], torch.zeros(1, 16), torch.zeros(1, 8), [1.0], [2.0], 10).save(vec)
    midi = tmp_path / "in.mid"
    from scores import make_score

    make_score((4, 4), bars=2, seed=1).dump_midi(str(midi))
    argv = [str(vec) if a == "VEC" else a for a in argv]
    assert main(["reconstruct", str(checkpoint), str(midi), *argv, "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


@pytest.mark.shared_data
def test_measured_attributes_of_real_tunes_match_their_files(ms, shared_datasets):
    """Each window's note density, measured from its tokens, is the file's notes in those bars."""
    files = sorted((shared_datasets / "nottingham" / "midi" / "melody").glob("*.mid"))[:5]
    assert files, "no Nottingham melodies found"
    for path in files:
        windows = ms.windows(str(path))[:3]
        measured = attributes.measure_windows(ms.tokenizer, windows, ["note_density"])[:, 0]
        score = symusic.Score(str(path))
        bar_ticks = score.time_signatures[0].numerator * score.tpq * 4 // score.time_signatures[0].denominator
        window_ticks = bar_ticks * ms.bars
        onsets = np.array([n.time for t in score.tracks for n in t.notes])
        for w, value in enumerate(measured[: len(windows) - 1]):  # full windows only
            count = int(((onsets >= w * window_ticks) & (onsets < (w + 1) * window_ticks)).sum())
            want = note_density(np.zeros((count, 3)), window_ticks / score.tpq)
            assert value == pytest.approx(want), (path.name, w)

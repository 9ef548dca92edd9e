"""The supervised song-form boundary head (issue 16, "tags as supervision"; midistruct.form.supervised): the
shipped head loads and gives probabilities, `midistruct form --method supervised` end to end, one real POP909
song, and the head never learnt from an evaluated song."""

from __future__ import annotations

import json

import numpy as np
import pytest
import symusic
from test_form import phrase_song

from midistruct.cli import main
from midistruct.config import SplitConfig
from midistruct.form import FormError, supervised
from midistruct.form.analysis import Settings, analyse
from midistruct.form.bars import POSITIONS, bar_grid, note_features
from midistruct.form.evaluate import song_role
from midistruct.form.segment import self_similarity
from midistruct.shards.splits import assign_split

SUPERVISED = Settings(method="supervised")


def test_the_shipped_head_gives_a_probability_per_bar():
    head = supervised.load_head()
    song = phrase_song("ABACAB")
    x = note_features(song, bar_grid(song), per_track=True)
    inputs = supervised.bar_inputs(x, self_similarity(x), block=12 + POSITIONS)
    assert inputs.shape == (48, len(supervised.INPUTS)) and np.isfinite(inputs).all()
    p = supervised.probabilities(inputs, head)
    assert p.shape == (48,) and p[0] == 0 and ((p >= 0) & (p <= 1)).all()
    assert p[[8, 16, 24]].mean() > np.delete(p, [0, 8, 16, 24, 32, 40]).mean()  # section starts stand out
    assert set(head["decode"]) == {"period", "cost", "off_period"} and head["trained"]["songs"] > 500


def test_a_head_for_other_inputs_is_refused(tmp_path):
    path = tmp_path / "head.json"
    path.write_text(json.dumps({"inputs": ["rep4"], "layers": []}))
    with pytest.raises(FormError, match="other inputs"):
        supervised.load_head(path)


def test_supervised_finds_the_sections_of_abacab():
    form = analyse(phrase_song("ABACAB"), settings=SUPERVISED)
    assert form.boundaries == [0, 8, 16, 24, 32, 40, 48]
    assert [s.label for s in form.sections] == ["A", "B", "A", "C", "A", "B"]
    assert form.novelty.shape == (48,) and 0 <= form.novelty.min() and form.novelty.max() <= 1


def test_cli_form_method_supervised(tmp_path, capsys):
    path = tmp_path / "song.mid"
    phrase_song("ABACAB").dump_midi(str(path))
    assert main(["form", str(path), "--method", "supervised", "-o", str(tmp_path / "out"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["settings"]["method"] == "supervised"
    assert [s["start_bar"] for s in printed["sections"]] == [0, 8, 16, 24, 32, 40]
    assert (tmp_path / "out" / "form.json").exists()


def test_the_head_never_learnt_from_an_evaluated_song():
    """song_role is the split the evaluation and the training share: eval songs are exactly the test and valid
    split; every song the shipped head records as trained on is a train-split song."""
    cfg = SplitConfig()
    songs = [f"{k:03d}" for k in range(1, 910)]
    roles = {song: song_role(song, cfg) for song in songs}
    assert all((roles[s] == "eval") == (assign_split(f"pop909/{s}", cfg) in ("test", "valid")) for s in songs)
    assert 60 < sum(r == "eval" for r in roles.values()) < 130
    trained = supervised.load_head()["trained_on"]
    assert len(trained) == supervised.load_head()["trained"]["songs"]
    assert all(roles[song] == "train" for song in trained)


@pytest.mark.shared_data
def test_a_real_pop909_song_gets_supervised_boundaries(shared_datasets):
    """Song 001 is a train-split song: the head should find most of its annotated starts within a bar."""
    from midistruct.corpus.pop909 import read_index
    from midistruct.form.analysis import form_of
    from midistruct.form.evaluate import aligned_score, reference, scores

    pop909, phrases = shared_datasets / "pop909" / "songs", shared_datasets / "pop909-phrases" / "songs"
    ref = reference("001", pop909=pop909, phrases=phrases, index_row=read_index(pop909)["001"])
    score = aligned_score(symusic.Score(str(pop909 / "001" / "001.mid")), ref)
    grid = bar_grid(score, bars=ref.bars)
    x = note_features(score, grid, per_track=True, pickup=SUPERVISED.pickup)
    form = form_of(x, grid, tpq=score.tpq, settings=SUPERVISED)
    assert form.boundaries[0] == 0 and form.boundaries[-1] == ref.bars and len(form.sections) > 5
    found = scores(ref, form.boundaries, [s.label for s in form.sections], annotator=0)
    assert found["f_1bar"] > 0.7

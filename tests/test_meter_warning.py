"""A meter the model hardly saw is said, with what to do (POP909's files declare 1/4 or 2/4 over 4/4 music, and
the shipped piano model then decodes them sparse): the pipeline's warning, the CLI's one line, the library's
summary, and ``time_signature`` wherever music is read."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
import torch
from scores import make_score

from midistruct.cli import main
from midistruct.errors import MidiStructWarning
from midistruct.model.prior import PRIOR_FILE, CodePrior


def prior_with_meters(ms, meters: list[str]) -> CodePrior:
    """A prior over ``ms``'s codes fitted to random codes of windows in ``meters`` (one per window), tagged
    with a key so that it counts them."""
    cfg = ms.model.config
    n = len(meters)
    g = torch.Generator().manual_seed(0)
    z_bar = torch.randn(n, ms.bars, cfg.latent_dim_bar, generator=g)
    z_segment = torch.randn(n, cfg.latent_dim_segment, generator=g)
    keys = ["C major" if i % 2 else "A minor" for i in range(n)]
    return CodePrior.fit(z_bar, z_segment, rank=4, tags={"key": keys, "meter": meters}, min_windows=2)


def test_meter_counts_come_from_the_tagged_windows():
    z_bar, z_segment = torch.randn(30, 2, 3), torch.randn(30, 4)
    meters = ["4/4"] * 20 + ["3/4"] * 9 + ["6/8"]
    prior = CodePrior.fit(z_bar, z_segment, rank=2, tags={"key": ["C major", "G major"] * 15, "meter": meters},
                          min_windows=2)
    assert prior.meter_counts() == {"4/4": 20, "3/4": 9, "6/8": 1}
    assert CodePrior.fit(z_bar, z_segment, rank=2).meter_counts() == {}  # no tags: nothing known


@pytest.fixture
def own_checkpoint(checkpoint, tmp_path):
    """A copy of the session's tiny checkpoint with a prior fitted to 4/4 windows only (one 3/4 window in 200:
    rarer than the 1 % threshold)."""
    from midistruct.generation.pipeline import MidiStruct

    folder = shutil.copytree(checkpoint, tmp_path / "copy")
    prior_with_meters(MidiStruct.from_pretrained(folder), ["4/4"] * 199 + ["3/4"]).save(folder / PRIOR_FILE)
    return folder


def test_a_rare_meter_warns_with_the_remedy_and_a_given_meter_does_not(own_checkpoint, tmp_path):
    from midistruct.generation.pipeline import MidiStruct

    ms = MidiStruct.from_pretrained(own_checkpoint)
    waltz, common = tmp_path / "waltz.mid", tmp_path / "common.mid"
    make_score((3, 4), bars=4, seed=1).dump_midi(str(waltz))
    make_score((4, 4), bars=4, seed=1).dump_midi(str(common))
    assert set(ms.training_meters()) == {"4/4"}  # the trainer counted its windows: the tiny corpus is 4/4
    with pytest.warns(MidiStructWarning) as caught:
        ms.encode(waltz)
    (message,) = [str(w.message) for w in caught]
    assert "waltz.mid: 3/4 in 2 of its 2 windows (0.0 % of the model's training windows)" in message
    assert "mostly 4/4 (100 %) and" in message and "--time-signature 4/4" in message and "\n" not in message
    del ms.meta["meters"]  # a checkpoint from before the trainer counted: the code prior's counts
    with pytest.warns(MidiStructWarning, match=r"3/4 in 2 of its 2 windows \(0.5 % of the model's training"):
        ms.encode(waltz)
    ms.meta["meters"] = {"6/8": 50, "2/2": 40, "3/8": 9, "3/4": 1}
    with warnings.catch_warnings():
        warnings.simplefilter("error", MidiStructWarning)
        ms.encode(waltz)  # 1 % of the training windows is not rare
    ms.meta["meters"] = {"6/8": 50, "2/2": 40, "3/8": 10}  # several meters: the user must say which
    with pytest.warns(MidiStructWarning) as caught:
        ms.encode(waltz)
    (message,) = [str(w.message) for w in caught]
    assert "mostly 6/8 (50 %), 2/2 (40 %), 3/8 (10 %) and" in message and "--time-signature N/D" in message
    del ms.meta["meters"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", MidiStructWarning)
        ms.encode(common)  # its meter is the model's own
        z = ms.encode(waltz, time_signature="4/4")  # the user said what the bars are
        assert set(z.time_signatures) == {"4/4"}
        ms.prior = None  # no counts at all: nothing is claimed
        ms.encode(waltz)


def test_the_trainer_counts_its_windows_meters(checkpoint):
    """``meters`` in every checkpoint's midistruct.json: each training window's meter (the tiny corpus: 4/4)."""
    from midistruct.model.checkpoint import check_checkpoint
    from midistruct.shards.dataset import WindowDataset

    train = WindowDataset([checkpoint.parent.parent / "data"], "train")
    assert check_checkpoint(checkpoint)["meters"] == {"4/4": len(train)}
    assert train.meter_counts(limit=3) == {"4/4": 3}


def test_the_cli_prints_the_warning_as_one_line_and_every_reading_command_takes_the_meter(own_checkpoint, tmp_path,
                                                                                           capsys):
    waltz = tmp_path / "waltz.mid"
    make_score((3, 4), bars=4, seed=1).dump_midi(str(waltz))
    common = ["--device", "cpu", "--temperature", "0"]
    assert main(["reconstruct", str(own_checkpoint), str(waltz), "-o", str(tmp_path / "r"), *common]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warned) == 1 and warned[0].startswith("midistruct: warning: ")  # one line, the CLI's own
    assert "waltz.mid: 3/4 in 2 of its 2 windows" in warned[0] and "--time-signature 4/4" in warned[0]
    for command in (["interpolate", str(waltz), str(waltz), "--steps", "2", "--no-audio"],
                    ["continue", str(waltz), "--bars", "1"]):
        assert main([command[0], str(own_checkpoint), *command[1:], "-o", str(tmp_path / command[0]),
                     "--time-signature", "4/4", *common]) == 0, command
        assert "warning" not in capsys.readouterr().err
        written = sorted((tmp_path / command[0]).glob("*.mid"))
        import symusic

        assert written and all({(t.numerator, t.denominator) for t in symusic.Score(str(p)).time_signatures}
                               == {(4, 4)} for p in written)
    assert main(["interpolate", str(own_checkpoint), str(waltz), str(waltz), "--steps", "2", "--no-audio",
                 "-o", str(tmp_path / "i2"), *common]) == 0
    assert "midistruct: warning: " in capsys.readouterr().err


def test_a_library_sums_the_warnings_up_and_keys_its_cache_on_the_meter(own_checkpoint, tmp_path, capsys):
    from midistruct.library.store import Library

    folder = tmp_path / "midi"
    folder.mkdir()
    for i in range(3):
        make_score((3, 4) if i else (4, 4), bars=4, seed=i).dump_midi(str(folder / f"s{i}.mid"))
    lib = tmp_path / "lib.npz"
    assert main(["embed", str(own_checkpoint), str(folder), "-o", str(lib), "--quiet", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert err.count("midistruct: warning:") == 1 and "2 of the 3 files encoded now" in err
    assert f"the first: {folder / 's1.mid'}: 3/4 in" in err  # the file named, not "score'
    assert Library.load(lib).time_signature is None
    assert main(["embed", str(own_checkpoint), str(folder), "-o", str(lib), "--quiet", "--device", "cpu",
                 "--time-signature", "4/4"]) == 0
    out = capsys.readouterr()
    assert "3 encoded, 0 from the cache" in out.out and "warning" not in out.err  # another meter: nothing reused
    assert Library.load(lib).time_signature == "4/4"
    assert main(["embed", str(own_checkpoint), str(folder), "-o", str(lib), "--quiet", "--device", "cpu",
                 "--time-signature", "4/4"]) == 0
    assert "0 encoded, 3 from the cache" in capsys.readouterr().out


def test_histogram_bars_follow_the_given_meter(tmp_path):
    from midistruct.generation.pipeline import InputError
    from midistruct.library.features import histogram_features

    path = tmp_path / "p.mid"
    make_score((4, 4), bars=4, seed=0).dump_midi(str(path))
    own, halves = histogram_features()(path), histogram_features(time_signature="2/4")(path)
    assert len(halves.bars) == 2 * len(own.bars) and np.array_equal(own.vector, halves.vector)
    with pytest.raises(InputError, match="expected N/D"):
        histogram_features(time_signature="four")
    from midistruct.library.features import code_features

    with pytest.raises(InputError, match="expected N/D"):
        code_features(None, time_signature="4:4")  # refused before any model or file is touched


@pytest.mark.shared_data
def test_pop909_files_in_one_or_two_four_warn_with_the_shipped_piano_model(shared_datasets):
    """POP909 declares 1/4 or 2/4 in most files; pop909-4bar, trained on them read as 4/4, never saw 2/4."""
    from midistruct.generation.pipeline import MidiStruct

    song = shared_datasets / "pop909" / "songs" / "021" / "021.mid"
    if not song.exists():
        pytest.skip(f"{song} is not there")
    ms = MidiStruct.from_pretrained("pop909-4bar")
    with pytest.warns(MidiStructWarning, match=r"021.mid: 2/4 in \d+ of its \d+ windows \(0.0 %"):
        ms.windows(song)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MidiStructWarning)
        assert {ms.vocab.meter(w) for w in ms.windows(song, time_signature="4/4")} == {"4/4"}


def test_a_transfer_source_in_a_rare_meter_is_told_its_own_option(arrangement_model, tmp_path):
    """transfer reads each source with its own placing (--arrangement-time-signature ...): the warning for a
    source names that option, not the content's --time-signature."""
    from midistruct.generation.pipeline import MidiStruct

    ms = MidiStruct.from_pretrained(arrangement_model)
    waltz, common = tmp_path / "waltz.mid", tmp_path / "common.mid"
    make_score((3, 4), bars=4, seed=1).dump_midi(str(waltz))
    make_score((4, 4), bars=4, seed=1).dump_midi(str(common))
    with pytest.warns(MidiStructWarning) as caught:
        ms.transfer(common, arrangement_from=waltz, temperature=0)
    (message,) = [str(w.message) for w in caught]
    assert message.startswith(f"{waltz}: 3/4") and "--arrangement-time-signature 4/4" in message
    assert "arrangement_placing['time_signature']='4/4' in Python" in message and " --time-signature" not in message
    with warnings.catch_warnings():
        warnings.simplefilter("error", MidiStructWarning)
        ms.transfer(common, arrangement_from=waltz, arrangement_placing={"time_signature": "4/4"}, temperature=0)

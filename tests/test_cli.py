"""The command line's shape: one output option name, help on every argument, --device on every command
that runs the model, and the deprecated --out-dir spelling (issue 13, item 6)."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from scores import make_score

from midistruct import cli
from midistruct.errors import MidiStructError
from midistruct.fsutil import replace_dir
from midistruct.generation.latents import PieceLatents
from midistruct.training.distributed import DeviceError, choose_device

# the fewest arguments each command parses with (nothing runs)
MINIMAL = {
    "prepare": ["--config", "tiny"],
    "train": ["--config", "tiny"],
    "quickstart": [],
    "reconstruct": ["CK", "a.mid"],
    "interpolate": ["CK", "a.mid", "b.mid"],
    "grid": ["CK", "a.mid", "b.mid", "c.mid", "d.mid"],
    "continue": ["CK", "a.mid"],
    "transfer": ["CK", "a.mid", "--arrangement-from", "b.mid"],
    "sample": ["CK"],
    "encode": ["CK", "a.mid", "-o", "z.safetensors"],
    "decode": ["CK", "z.safetensors", "-o", "x.mid"],
    "attributes": ["CK"],
    "prior": ["CK"],
    "evaluate": ["CK"],
    "models": [],
    "tags": ["CK"],
    "form": ["CK", "a.mid"],
    "embed": ["CK", "dir"],
    "radio": ["CK", "a.mid", "--library", "l.npz"],
    "map": ["CK", "dir"],
    "export": ["CK", "-o", "src/midistruct/pretrained/NAME", "--card", "card.yaml"],
}
WRITES_FOLDER = {"quickstart": "out/quickstart", **{c: "out" for c in ("reconstruct", "interpolate", "grid",
                                                                        "continue", "sample", "form", "transfer")}}
RUNS_MODEL = ["reconstruct", "transfer", "interpolate", "grid", "continue", "sample", "encode", "decode", "attributes", "evaluate",
             "form", "prior", "embed", "radio", "map", "train", "quickstart"]
# --device / --threads default to (and override) the config's section: train.device, train.threads
CONFIG_DEVICE = {"train", "quickstart"}


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action | None:
    return next((a for a in parser._actions if flag in a.option_strings), None)


def test_every_command_is_covered_here():
    assert set(_subparsers()) == set(MINIMAL)


def test_every_option_and_positional_has_help():
    parsers = {"midistruct": cli.build_parser(), **_subparsers()}
    missing = [f"{name} {a.option_strings or a.dest}" for name, p in parsers.items() for a in p._actions
               if not a.help or a.help == argparse.SUPPRESS]
    assert missing == []


@pytest.mark.parametrize("command", sorted(MINIMAL))
def test_every_writing_command_takes_dash_o_output(command):
    parser = _subparsers()[command]
    if command in ("prepare", "train", "evaluate", "models", "tags"):  # they write where the config says, or to stdout
        assert _option(parser, "--output") is None and _option(parser, "--out-dir") is None
        return
    assert _option(parser, "-o") is _option(parser, "--output") is not None
    argv = [command, *MINIMAL[command]]
    if command in WRITES_FOLDER:
        assert cli.build_parser().parse_args(argv).output == WRITES_FOLDER[command]
    assert cli.build_parser().parse_args([*argv, "--output", "elsewhere"]).output == "elsewhere"


@pytest.mark.parametrize("command", sorted(WRITES_FOLDER))
def test_out_dir_is_a_deprecated_alias_that_warns(command, capsys):
    args = cli.build_parser().parse_args([command, *MINIMAL[command], "--out-dir", "old"])
    assert args.output == "old" and not hasattr(args, "out_dir")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out-dir is deprecated" in err and "-o/--output" in err
    cli.build_parser().parse_args([command, *MINIMAL[command], "-o", "new"])
    assert capsys.readouterr().err == ""  # the new spelling is silent


@pytest.mark.parametrize("command", RUNS_MODEL)
def test_every_model_command_takes_device(command):
    parser = _subparsers()[command]
    device = _option(parser, "--device")
    assert device is not None and tuple(device.choices) == cli.DEVICES
    assert device.default == (None if command in CONFIG_DEVICE else "auto")
    assert cli.build_parser().parse_args([command, *MINIMAL[command], "--device", "cpu"]).device == "cpu"
    with pytest.raises(SystemExit) as stop:
        cli.build_parser().parse_args([command, *MINIMAL[command], "--device", "tpu"])
    assert stop.value.code == 2


def test_train_device_and_threads_set_the_train_section(monkeypatch):
    """train's --device / --threads land in train.device / train.threads (the trainer reads them there); without
    them the config's values stand."""
    from midistruct.training import loop

    class Stop(Exception):
        pass

    def trainer(cfg, **kwargs):
        raise Stop(cfg)

    monkeypatch.setattr(loop, "Trainer", trainer)
    before = torch.get_num_threads()
    try:
        with pytest.raises(Stop) as given:
            cli.main(["train", "--config", "tiny", "--device", "cpu", "--threads", "1"])
    finally:
        torch.set_num_threads(before)
    assert (given.value.args[0].train.device, given.value.args[0].train.threads) == ("cpu", 1)
    with pytest.raises(Stop) as default:
        cli.main(["train", "--config", "tiny", "--set", "train.device=cpu"])
    assert default.value.args[0].train.device == "cpu"
    assert cli.main(["train", "--config", "tiny", "--threads", "0"]) == 2


def test_encode_takes_only_the_options_it_uses():
    """encode decodes nothing: no --temperature / --top-p (its --seed is for --sample); decode samples with them."""
    encode, decode = _subparsers()["encode"], _subparsers()["decode"]
    assert _option(encode, "--temperature") is None and _option(encode, "--top-p") is None
    assert _option(encode, "--seed") is not None and _option(encode, "--sample") is not None
    assert all(_option(decode, flag) is not None for flag in ("--temperature", "--top-p", "--seed"))


def test_choose_device_names_the_setting_of_an_absent_device():
    assert choose_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        assert choose_device("auto").type in ("cpu", "mps")
        with pytest.raises(DeviceError, match=r"^--device=cuda but no CUDA device"):
            choose_device("cuda", name="--device")
        assert issubclass(DeviceError, MidiStructError)
    if not torch.backends.mps.is_available():
        with pytest.raises(DeviceError, match=r"^train.device=mps but no MPS device"):
            choose_device("mps")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("command", RUNS_MODEL)
def test_an_absent_device_is_one_line_exit_2(command, checkpoint, tmp_path, capsys):
    midi = tmp_path / "a.mid"
    make_score((4, 4), bars=2, seed=1).dump_midi(str(midi))
    latents = PieceLatents(torch.zeros(1, 2, 8), torch.zeros(1, 16), [2], ["4/4"]).save(tmp_path / "z.safetensors")
    argv = [a.replace("CK", str(checkpoint)).replace("a.mid", str(midi)).replace("z.safetensors", str(latents))
            .replace("x.mid", str(tmp_path / "x.mid")) for a in MINIMAL[command]]
    assert cli.main([command, *argv, "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err == "midistruct: error: --device=cuda but no CUDA device is available; use auto or cpu\n"


def test_reconstruct_with_the_old_spelling_still_writes(checkpoint, tmp_path, capsys):
    midi = tmp_path / "a.mid"
    make_score((4, 4), bars=2, seed=1).dump_midi(str(midi))
    out = tmp_path / "old"
    assert cli.main(["reconstruct", str(checkpoint), str(midi), "--device", "cpu", "--out-dir", str(out)]) == 0
    assert json.loads((out / "generation.json").read_text())["outputs"] == ["a.reconstruct.mid"]
    assert "--out-dir is deprecated" in capsys.readouterr().err


def test_replace_dir_swaps_a_whole_folder(tmp_path):
    final, tmp = tmp_path / "final", tmp_path / "final.tmp"
    for folder, text in ((final, "old"), (tmp, "new")):
        folder.mkdir()
        (folder / "f.txt").write_text(text)
    replace_dir(tmp, final)
    assert (final / "f.txt").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["final"]
    replace_dir(tmp_path / "final", tmp_path / "moved")  # nothing there yet: a plain move
    assert (tmp_path / "moved" / "f.txt").read_text() == "new"


@pytest.mark.parametrize("command", RUNS_MODEL)
def test_every_model_command_takes_threads(command):
    assert _option(_subparsers()[command], "--threads") is not None
    assert cli.build_parser().parse_args([command, *MINIMAL[command], "--threads", "1"]).threads == 1


def test_threads_sets_torch_and_refuses_zero(capsys):
    before = torch.get_num_threads()
    try:
        args = cli.build_parser().parse_args(["reconstruct", *MINIMAL["reconstruct"], "--threads", "1"])
        assert cli._device(args).type in ("cpu", "cuda", "mps") and torch.get_num_threads() == 1
        args.threads = 0
        with pytest.raises(cli.UserError, match=r"^--threads must be at least 1, got 0$"):
            cli._device(args)
    finally:
        torch.set_num_threads(before)


def test_a_reader_that_leaves_early_gets_no_traceback(checkpoint):
    """`midistruct tags MODEL | head -1`: the pipe closes before the output is written; the command stops
    quietly with the shell's SIGPIPE status instead of Python's 'Exception ignored ... BrokenPipeError'."""
    import subprocess
    import sys

    run = subprocess.Popen([sys.executable, "-m", "midistruct", "tags", str(checkpoint)], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    run.stdout.close()  # the reader is gone before the command writes
    err = run.stderr.read().decode()
    assert run.wait() == 141 and err == ""

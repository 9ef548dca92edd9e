"""Bad and odd MIDI files, built in code, through every command that reads MIDI (issue 20).

Every bad input must give exit code 2, no traceback, and the file's name in the message; odd but
valid inputs (3/4, a unicode name with spaces, an upper-case .MIDI, velocity-0 note-offs, many
tempo changes) must work. Multi-file commands must write every good file and name every bad one.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
import symusic
from scores import make_score

from midistruct import cli

TPQ = 480


# ---- raw MIDI, so that files symusic would never write can be built --------------------------------------------


def _vlq(n: int) -> bytes:
    out = [n & 0x7F]
    while n > 0x7F:
        n >>= 7
        out.append((n & 0x7F) | 0x80)
    return bytes(reversed(out))


def _track(events: list[tuple[int, bytes]]) -> bytes:
    body = b"".join(_vlq(delta) + data for delta, data in events) + b"\x00\xff\x2f\x00"
    return b"MTrk" + struct.pack(">I", len(body)) + body


def _midi(tracks: list[list[tuple[int, bytes]]], *, fmt: int = 1, division: int = TPQ) -> bytes:
    header = b"MThd" + struct.pack(">IHHH", 6, fmt, len(tracks), division & 0xFFFF)
    return header + b"".join(_track(t) for t in tracks)


def _tempo(qpm: float) -> bytes:
    return b"\xff\x51\x03" + int(round(60_000_000 / qpm)).to_bytes(3, "big")


def _meter(num: int, den_power: int) -> bytes:
    return b"\xff\x58\x04" + bytes([num, den_power, 24, 8])


def _melody(pitches=(60, 62, 64, 65, 67, 69, 71, 72), *, length: int = TPQ, bars: int = 8) -> list[tuple[int, bytes]]:
    """Quarter notes (``length`` ticks held) on every beat of ``bars`` 4/4 bars."""
    events, rest = [], 0
    for i in range(bars * 4):
        pitch = pitches[i % len(pitches)]
        events.append((rest, bytes([0x90, pitch, 90])))
        held = max(length, 0)
        events.append((held, bytes([0x80, pitch, 0])))
        rest = TPQ - held if held <= TPQ else 0
    return events


def _off_then_on(pitch: int) -> list[tuple[int, bytes]]:
    """A note-off before its note-on, and the note-on never closed."""
    return [(0, bytes([0x80, pitch, 0])), (TPQ, bytes([0x90, pitch, 90]))]


def _conductor(qpm: float = 120.0, meter=(4, 2)) -> list[tuple[int, bytes]]:
    return [(0, _tempo(qpm)), (0, _meter(*meter))]


def _score_bytes(score: symusic.Score, tmp: Path) -> bytes:
    path = tmp / "_tmp.mid"
    score.dump_midi(str(path))
    data = path.read_bytes()
    path.unlink()
    return data


def _bad_inputs(tmp: Path) -> dict[str, bytes | str]:
    """name -> file bytes, or "dir" / "symlink" for things that are not plain files."""
    good = _midi([_conductor(), _melody()])
    drums = make_score(bars=4, drums=True)
    drums.tracks = [t for t in drums.tracks if t.is_drum]
    return {
        "empty.mid": b"",
        "random.mid": bytes((i * 7919 + 13) % 256 for i in range(3000)),
        **{f"truncated{k}.mid": good[:k] for k in (10, 14, 20, 30, 60, 200, len(good) - 5)},
        "header_only.mid": good[:14],
        "zero_tempo.mid": _midi([[(0, b"\xff\x51\x03\x00\x00\x00"), (0, _meter(4, 2))], _melody()]),
        "absurd_tempo.mid": _midi([_conductor(qpm=4000.0), _melody()]),
        "no_notes.mid": _midi([_conductor()]),
        "drums_only.mid": _score_bytes(drums, tmp),
        "zero_length.mid": _midi([_conductor(), _melody(length=0)]),
        "off_before_on.mid": _midi([_conductor(), [e for p in range(60, 80) for e in _off_then_on(p)]]),
        "pitch_0_127.mid": _midi([_conductor(), _melody(pitches=(0, 127))]),
        "meter_255_1.mid": _midi([[(0, _tempo(120)), (0, _meter(255, 0))], _melody()]),
        "far_note.mid": _midi([_conductor(), [(250_000_000, b"\xff\x01\x00")] * 8 + _melody(bars=1)]),
        "text.mid": b"these are not the notes you are looking for\n" * 20,
        "musicxml.mid": b'<?xml version="1.0"?><score-partwise version="3.1"><part-list/></score-partwise>',
        "smpte.mid": _midi([_conductor(), _melody()], division=0xE728),
        "dir.mid": "dir",
        "broken_link.mid": "symlink",
    }


def _odd_inputs() -> dict[str, bytes]:
    """Valid files a careful user may have (each a different tune, so none is a duplicate): each must work."""
    def tune(k: int) -> tuple[int, ...]:
        return tuple(p + k for p in (60, 62, 64, 65, 67, 69, 71, 72))

    off_as_velocity0 = []
    for delta, data in _melody(tune(3)):
        off_as_velocity0.append((delta, bytes([0x90, data[1], 0]) if data[0] == 0x80 else data))
    tempi = [(0, _meter(4, 2))] + [(1 if i else 0, _tempo(100 + i % 50)) for i in range(10_000)]
    return {
        "waltz 3-4.mid": _midi([_conductor(meter=(3, 2)), _melody(tune(0), bars=10)]),
        "tune ünï cödé.mid": _midi([_conductor(), _melody(tune(1))]),
        "UPPER.MIDI": _midi([_conductor(), _melody(tune(2))]),
        "velocity0_offs.mid": _midi([_conductor(), off_as_velocity0]),
        "many_tempi.mid": _midi([tempi, _melody(tune(4))]),
    }


def _write(folder: Path, files: dict[str, bytes | str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in files.items():
        path = folder / name
        if data == "dir":
            path.mkdir()
        elif data == "symlink":
            os.symlink(folder / "does-not-exist.mid", path)
        else:
            path.write_bytes(data)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    bad = _write(root / "bad", _bad_inputs(root))
    odd = _write(root / "odd", _odd_inputs())
    return {"root": root, "bad": bad, "odd": odd, "good": odd[1]}


@pytest.fixture
def cached_pipeline(checkpoint, monkeypatch):
    """Load the checkpoint once for the many calls below (loading is tested on its own elsewhere)."""
    ms = cli._pipeline(type("A", (), {"checkpoint": checkpoint, "device": "cpu"})())
    monkeypatch.setattr(cli, "_pipeline", lambda args: ms)
    return ms


def _run(capsys, argv: list[str]) -> tuple[int, str]:
    rc = cli.main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def _assert_refused(rc: int, err: str, path: Path) -> None:
    assert rc == 2, f"{path.name}: exit {rc}, stderr {err!r}"
    assert "Traceback" not in err
    assert path.name in err, f"{path.name} not named in {err!r}"


def test_reconstruct_writes_every_good_file_and_names_every_bad_one(checkpoint, inputs, tmp_path, capsys):
    good = inputs["odd"]
    mixed = [p for pair in zip(inputs["bad"], good * 10) for p in pair]
    rc, err = _run(capsys, ["reconstruct", checkpoint, *mixed, "-o", tmp_path])
    assert rc == 2 and "Traceback" not in err
    for path in inputs["bad"]:
        assert path.name in err, f"{path.name} not named"
    written = {p.name for p in tmp_path.glob("*.mid")}
    assert written == {f"{p.stem}.reconstruct.mid" for p in good}


def _argv(command: str, checkpoint: Path, path: Path, good: Path, out: Path) -> list:
    """The command line that gives ``path`` to ``command`` (``good`` fills the other inputs)."""
    return {
        "reconstruct": ["reconstruct", checkpoint, path, "-o", out],
        "encode": ["encode", checkpoint, path, "-o", out / "z.safetensors"],
        "continue": ["continue", checkpoint, path, "--bars", 1, "-o", out],
        "interpolate-a": ["interpolate", checkpoint, path, good, "--steps", 2, "-o", out],
        "interpolate-b": ["interpolate", checkpoint, good, path, "--steps", 2, "-o", out],
        "grid": ["grid", checkpoint, good, path, good, good, "--steps", 2, "-o", out],
    }[command]


COMMANDS = ["reconstruct", "encode", "continue", "interpolate-a", "interpolate-b", "grid"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_bad_file_is_one_line_exit_2(command, cached_pipeline, checkpoint, inputs, tmp_path, capsys):
    for path in inputs["bad"]:
        _assert_refused(*_run(capsys, _argv(command, checkpoint, path, inputs["good"], tmp_path)), path)
    assert not list(tmp_path.glob("*.mid")), "nothing is written for a bad input"


@pytest.mark.parametrize("command", COMMANDS)
def test_odd_but_valid_files_work(command, cached_pipeline, checkpoint, inputs, tmp_path, capsys):
    for path in inputs["odd"]:
        rc, err = _run(capsys, _argv(command, checkpoint, path, inputs["good"], tmp_path))
        assert rc == 0, f"{path.name}: {err}"


def test_pieces_shorter_than_a_window_interpolate(cached_pipeline, checkpoint, tmp_path, capsys):
    """A one-bar piece against a long one: both are cut to one bar (this crashed with a shape error)."""
    short, long = tmp_path / "short.mid", tmp_path / "long.mid"
    make_score(bars=1, seed=3).dump_midi(str(short))
    make_score(bars=9, seed=4).dump_midi(str(long))
    for a, b in ((short, long), (long, short)):
        rc, err = _run(capsys, ["interpolate", checkpoint, a, b, "--steps", 3, "-o", tmp_path / "out"])
        assert rc == 0, err
    steps = sorted((tmp_path / "out").glob("long_to_short.*.mid"))
    assert len(steps) == 3
    assert all(symusic.Score(str(p)).note_num() > 0 for p in steps)
    rc, err = _run(capsys, ["grid", checkpoint, short, long, long, short, "--steps", 2, "-o", tmp_path / "g"])
    assert rc == 0, err


@pytest.mark.parametrize("argv", [
    ["interpolate", "CK", "a.mid", "b.mid", "--steps", "1"],
    ["grid", "CK", "a.mid", "b.mid", "c.mid", "d.mid", "--steps", "0"],
    ["sample", "CK", "-n", "0"],
    ["sample", "CK", "--bars", "-1"],
    ["reconstruct", "CK", "a.mid", "--temperature", "-1"],
    ["reconstruct", "CK", "a.mid", "--top-p", "0"],
    ["reconstruct", "CK", "a.mid", "--top-p", "nan"],
    ["continue", "CK", "a.mid", "--bars", "0"],
    ["evaluate", "CK", "--windows", "0"],
    ["evaluate", "CK", "--free-run", "-3"],
    ["attributes", "CK", "--windows", "0"],
])
def test_bad_option_values_are_refused_before_any_work(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    assert argv[-2] in err  # the option is named


def test_sample_with_a_meter_outside_the_vocabulary(cached_pipeline, checkpoint, tmp_path, capsys):
    rc, err = _run(capsys, ["sample", checkpoint, "--meter", "7/3", "-o", tmp_path])
    assert rc == 2 and "7/3" in err and "4/4" in err  # the valid ones are listed
    assert not list(tmp_path.glob("*.mid"))


def test_a_new_run_never_replaces_another_run(tmp_path, capsys):
    """`train` into a run folder that holds a run: refused (exit 2) unless --resume or --overwrite."""
    from scores import write_corpus

    write_corpus(tmp_path / "midi", n=10, bars=8)
    sets = ["--set", f"data.sources=[{{kind: folder, path: '{tmp_path / 'midi'}'}}]", "--set",
            f"data.output={tmp_path / 'data'}", "--set", f"train.run_dir={tmp_path / 'run'}", "--set", "train.max_steps=2",
            "--set", "train.eval_every=2", "--set", "train.save_every=2", "--set", "train.threads=1"]
    assert cli.main(["prepare", "--config", "tiny", "--quiet", *sets]) == 0
    assert cli.main(["train", "--config", "tiny", "--quiet", *sets]) == 0
    weights = (tmp_path / "run" / "last" / "model.safetensors").read_bytes()
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    capsys.readouterr()
    rc, err = _run(capsys, ["train", "--config", "tiny", "--quiet", *sets, "--set", "train.seed=5"])
    assert rc == 2 and "--resume" in err and str(tmp_path / "run") in err and "Traceback" not in err
    assert (tmp_path / "run" / "last" / "model.safetensors").read_bytes() == weights
    assert cli.main(["train", "--config", "tiny", "--quiet", "--overwrite", *sets, "--set", "train.seed=5"]) == 0
    assert (tmp_path / "run" / "last" / "model.safetensors").read_bytes() != weights
    again = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(again) == len(metrics) and again != metrics, "the old run's metrics were replaced, not appended to"


def test_prepare_reports_every_bad_file_and_keeps_every_good_one(inputs, tmp_path, capsys):
    """The same bad files beside the odd ones in one source folder: each bad one has a row in report.tsv."""
    import csv

    folder = tmp_path / "corpus"
    _write(folder, {**_bad_inputs(tmp_path), **_odd_inputs()})
    out = tmp_path / "data"
    rc, err = _run(capsys, ["prepare", "--config", "tiny", "--quiet", "--set",
                            f"data.sources=[{{kind: folder, path: '{folder}'}}]", "--set", f"data.output={out}",
                            "--set", "splits.valid=0", "--set", "splits.test=0"])
    assert rc == 0, err
    with open(out / "report.tsv") as f:
        reasons = {Path(row["path"]).name: row["reason"] for row in csv.DictReader(f, delimiter="\t")}
    bad = set(_bad_inputs(tmp_path)) - {"dir.mid"}  # a folder named x.mid is searched, not read as a file
    assert bad <= set(reasons), f"not reported: {sorted(bad - set(reasons))}"
    assert not set(_odd_inputs()) & set(reasons), f"good files skipped: {reasons}"
    assert all(reason and "Traceback" not in reason for reason in reasons.values())

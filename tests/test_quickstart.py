"""The main job end to end on a tiny config: prepare, train, interpolate, write MIDI, PNG, WAVs and the page."""

from __future__ import annotations

import json

import symusic
from scores import write_corpus

from midistruct.cli import main


def test_quickstart_runs_end_to_end_and_resumes(tmp_path, capsys):
    write_corpus(tmp_path / "midi", n=24, bars=6)
    sets = ["--config", "tiny", "--set", f"data.sources=[{{kind: folder, path: '{tmp_path / 'midi'}'}}]",
            "--set", f"data.output={tmp_path / 'data'}", "--set", f"train.run_dir={tmp_path / 'run'}",
            "--set", "train.max_steps=4", "--set", "train.eval_every=2", "--set", "train.save_every=2",
            "-o", str(tmp_path / "out"), "--quiet"]
    assert main(["quickstart", *sets]) == 0
    printed = capsys.readouterr().out
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

"""The main job, end to end: prepare a corpus slice, train briefly, interpolate two held-out pieces.

``midistruct quickstart`` (``make demo``) runs :func:`run` with the ``quickstart`` config: the data
flow of the whole package in one call, writing MIDI files, a piano-roll PNG, WAVs and ``index.html``
(one page to look at and listen to every step) to ``out_dir``.
A second run reuses the shards and resumes the run folder (a finished run trains no further).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from midistruct.config import Config


def run(cfg: Config, *, out_dir: str | Path = "out/quickstart", steps: int = 8, bars: int = 4,
        progress: bool = True) -> dict:
    """Prepare, train, then interpolate from one held-out piece to another in ``steps`` steps.

    The two pieces are the first two of the test split (by id) that span ``bars`` bars; both are
    cut to their first ``bars`` bars. Returns a summary (also written as ``quickstart.json``).
    """
    from midistruct.model.checkpoint import has_state
    from midistruct.prepare import prepare
    from midistruct.training.loop import Trainer

    started = time.monotonic()
    _say(f"[1/3] preparing {cfg.data.output} (the first run converts the music21 pieces once)")
    stale = _stale(cfg)  # the data folder and run are quickstart's own: remade when the tokenizer changed
    if stale:
        _say(f"      {stale}: made with other tokenizer settings (an older midistruct); preparing and training afresh")
    data = prepare(cfg, overwrite=bool(stale), progress=progress).as_dict()
    _say(f"      {data['files_read']} pieces read, {sum(s['windows'] for s in data['splits'].values())} windows")
    run_dir = Path(cfg.train.run_dir)
    resume = has_state(run_dir / "last") and not stale
    _say(f"[2/3] training {run_dir} for up to {cfg.train.max_minutes:g} minutes"
         + (" (resuming the run there)" if resume else ""))
    trainer = Trainer(cfg, resume=resume, overwrite=not resume, progress=progress)  # quickstart's own run folder
    trainer.run()
    _say("[3/3] interpolating between two held-out pieces")
    summary = interpolate_held_out(run_dir / "best", Path(cfg.data.output), Path(out_dir), steps=steps, bars=bars)
    _say(f"      {len(summary['midi'])} WAV files ({summary['audio']['backend']}); "
         f"listen to every step on one page: {summary['page']}")
    summary.update({"data": data["output"], "checkpoint": str(run_dir / "best"), "trained_steps": trainer.state["step"],
                    "minutes": round((time.monotonic() - started) / 60, 1)})
    (Path(out_dir) / "quickstart.json").write_text(json.dumps(summary, indent=2))
    return summary


def _stale(cfg: Config) -> str:
    """The quickstart folder (data or run) made with other tokenizer settings, else ''."""
    from midistruct.tokens.tokenizer import settings_hash

    want = settings_hash(cfg.tokenizer)
    manifest = Path(cfg.data.output) / "manifest.json"
    if manifest.is_file() and json.loads(manifest.read_text()).get("settings_hash") != want:
        return str(cfg.data.output)
    meta = Path(cfg.train.run_dir) / "last" / "midistruct.json"  # its hash as saved (quickstart has no BPE)
    if meta.is_file() and json.loads(meta.read_text()).get("tokenizer_hash") != want:
        return str(cfg.train.run_dir)
    return ""


def held_out_pieces(data: Path, *, n: int = 2, bars: int = 4) -> list[dict]:
    """The first ``n`` test-split pieces (by id) of a shard folder with at least ``bars`` bars."""
    from midistruct.shards.reader import ShardSet

    pieces = sorted(ShardSet(data).split("test").pieces(), key=lambda p: p["id"])
    chosen = [p for p in pieces if p.get("bars", 0) >= bars and Path(p.get("path", "")).is_file()][:n]
    if len(chosen) < n:
        raise ValueError(f"{data}: fewer than {n} test pieces of {bars}+ bars; prepare more data")
    return chosen


def interpolate_held_out(checkpoint: Path, data: Path, out_dir: Path, *, steps: int = 8, bars: int = 4) -> dict:
    """Interpolate between the first ``bars`` bars of two held-out pieces; write MIDI, PNG, a WAV per piece and
    index.html (every piece's piano roll and player on one page), inputs included."""
    from midistruct.generation.pipeline import MidiStruct
    from midistruct.render import plot_pianorolls, render_outputs, write_outputs_page
    from midistruct.tokens.segment import crop_bars

    ms = MidiStruct.from_pretrained(checkpoint)
    a, b = (crop_bars(ms.load(p["path"]), bars) for p in held_out_pieces(data, bars=bars))
    names = [_slug(p["id"]) for p in held_out_pieces(data, bars=bars)]
    path = ms.interpolate(a, b, steps=steps, method="slerp")
    out_dir.mkdir(parents=True, exist_ok=True)
    scores = {f"A.{names[0]}": a, **{f"step{i:02d}": s for i, s in enumerate(path)}, f"B.{names[1]}": b}
    for name, score in scores.items():
        score.dump_midi(str(out_dir / f"{name}.mid"))
    titles = [f"A: {names[0]}", *(f"step {i}" for i in range(steps)), f"B: {names[1]}"]
    png = plot_pianorolls(list(scores.values()), out_dir / "interpolation.png", titles=titles)
    audio = render_outputs(scores, out_dir, audio=True)["audio"]
    notes = [f"A and B: the held-out originals, cut to {bars} bars; steps 0 to {steps - 1}: decoded by {checkpoint}",
             f"audio: {audio['backend']}"]
    page = write_outputs_page(list(scores), out_dir, titles=titles, notes=notes,
                              title=f"{names[0]} to {names[1]}: slerp in {steps} steps")
    return {"a": names[0], "b": names[1], "out_dir": str(out_dir), "midi": [f"{n}.mid" for n in scores],
            "plot": str(png.name), "audio": audio, "page": str(page)}


def _slug(piece_id: str) -> str:
    return piece_id.replace("/", "-").replace(" ", "_")


def _say(line: str) -> None:
    print(line, flush=True)

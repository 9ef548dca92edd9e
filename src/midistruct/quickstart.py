"""The main job, end to end: interpolate two pieces with a shipped model, or prepare, train and interpolate.

``midistruct quickstart`` (``make demo``) runs :func:`run` with the ``quickstart`` config. When the shipped model
that ``quickstart.pretrained`` names is in this install (:mod:`midistruct.model.pretrained`), it interpolates
between that model's two example pieces in seconds (:func:`run_pretrained`); otherwise, or with ``--train``, it
prepares a corpus slice, trains briefly and interpolates two held-out pieces (:func:`run_training`). Either way
:func:`interpolate_pieces` writes MIDI files, a piano-roll PNG, WAVs and ``index.html`` (one page to look at and
listen to every step) to ``out_dir``, and ``quickstart.json`` records it. A second training run reuses the
shards and resumes the run folder (a finished run trains no further).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from midistruct.config import Config


def run(cfg: Config, *, out_dir: str | Path = "out/quickstart", train: bool = False, progress: bool = True) -> dict:
    """The main job: :func:`run_pretrained` when ``cfg.quickstart.pretrained`` is shipped in this install and
    ``train`` is false, else :func:`run_training` (saying so when a model was named but is not installed).
    Returns the summary, also written as ``out_dir/quickstart.json``."""
    from midistruct.model import pretrained

    name = cfg.quickstart.pretrained
    if name and not train:
        if name in pretrained.names():
            return run_pretrained(cfg, out_dir=Path(out_dir))
        _say(f"no shipped model {name} in this install; training one ({_training_time(cfg)})")
    return run_training(cfg, out_dir=Path(out_dir), progress=progress)


def run_pretrained(cfg: Config, *, out_dir: Path) -> dict:
    """Interpolate between the first two example pieces of the shipped model ``cfg.quickstart.pretrained``
    (cut to ``cfg.quickstart.bars`` bars, in ``cfg.quickstart.steps`` steps); no data, no training."""
    from midistruct.model import pretrained

    started, name, q = time.monotonic(), cfg.quickstart.pretrained, cfg.quickstart
    examples = pretrained.example_paths(name)
    if len(examples) < 2:
        raise pretrained.PretrainedError(
            f"shipped model {name!r} has {len(examples)} example pieces and quickstart needs two; export it with "
            "--examples A.mid B.mid, or train one: midistruct quickstart --train")
    _say(f"[1/1] interpolating between the two example pieces of the shipped model {name} "
         "(nothing to prepare or train; `midistruct quickstart --train` trains a model here instead)")
    summary = interpolate_pieces(name, *examples[:2], out_dir, steps=q.steps, bars=q.bars,
                                 origin=f"example pieces of {name}, none of them trained on",
                                 device=_device(cfg))
    summary.update({"data": None, "checkpoint": name, "pretrained": name,
                    "trained_steps": pretrained.describe(name).get("steps") or 0})
    return _finish(summary, out_dir, started)


def _device(cfg: Config):
    """Where the interpolation runs: ``cfg.train.device`` (``quickstart --device``), as training does."""
    from midistruct.training.distributed import choose_device

    return choose_device(cfg.train.device)


def run_training(cfg: Config, *, out_dir: Path, progress: bool = True) -> dict:
    """Prepare, train, then interpolate from one held-out piece to another (:func:`interpolate_held_out`)."""
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
    summary = interpolate_held_out(run_dir / "best", Path(cfg.data.output), out_dir, device=_device(cfg),
                                   steps=cfg.quickstart.steps, bars=cfg.quickstart.bars)
    summary.update({"data": data["output"], "checkpoint": str(run_dir / "best"),
                    "trained_steps": trainer.state["step"]})
    return _finish(summary, out_dir, started)


def _finish(summary: dict, out_dir: Path, started: float) -> dict:
    """Say where the page is, add the time taken, write ``quickstart.json``."""
    _say(f"      {len(summary['midi'])} WAV files ({summary['audio']['backend']}); "
         f"listen to every step on one page: {summary['page']}")
    seconds = time.monotonic() - started
    summary.update({"seconds": round(seconds, 1), "minutes": round(seconds / 60, 1)})
    (out_dir / "quickstart.json").write_text(json.dumps(summary, indent=2))
    return summary


def _training_time(cfg: Config) -> str:
    t = cfg.train
    return f"~{t.max_minutes:g} min" if t.max_minutes else f"up to {t.max_steps} steps"


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


def interpolate_held_out(checkpoint: Path, data: Path, out_dir: Path, *, steps: int = 8, bars: int = 4,
                         device="cpu") -> dict:
    """:func:`interpolate_pieces` between the first two held-out pieces of the shard folder ``data``
    (:func:`held_out_pieces`), named by their piece ids."""
    a, b = held_out_pieces(data, bars=bars)
    return interpolate_pieces(checkpoint, Path(a["path"]), Path(b["path"]), out_dir, steps=steps, bars=bars,
                              names=(_slug(a["id"]), _slug(b["id"])), origin="the held-out originals", device=device)


def interpolate_pieces(checkpoint: str | Path, a: Path, b: Path, out_dir: Path, *, steps: int = 8, bars: int = 4,
                       names: tuple[str, str] | None = None, origin: str = "the inputs", device="cpu") -> dict:
    """Interpolate by slerp in ``steps`` steps between the first ``bars`` bars of the MIDI files ``a`` and ``b``
    with ``checkpoint`` (a folder or a shipped model's name).

    Writes into ``out_dir``: ``A.<name>.mid``, ``step00.mid`` ... and ``B.<name>.mid`` (the cut inputs around
    the path), ``interpolation.png``, a WAV per piece and ``index.html`` (every piece's piano roll and player).
    ``names`` default to the files' stems; ``origin`` says on the page what A and B are; the model runs on
    ``device``. Returns ``{"a", "b", "out_dir", "midi", "plot", "audio", "page"}`` for quickstart.json.
    """
    from midistruct.generation.pipeline import MidiStruct
    from midistruct.tokens.segment import crop_bars

    ms = MidiStruct.from_pretrained(checkpoint, device=device)
    names = names or (_slug(Path(a).stem), _slug(Path(b).stem))
    first, last = (crop_bars(ms.load(p), bars) for p in (a, b))
    path = ms.interpolate(first, last, steps=steps, method="slerp")
    scores = {f"A.{names[0]}": first, **{f"step{i:02d}": s for i, s in enumerate(path)}, f"B.{names[1]}": last}
    titles = [f"A: {names[0]}", *(f"step {i}" for i in range(steps)), f"B: {names[1]}"]
    notes = [f"A and B: {origin}, cut to {bars} bars; steps 0 to {steps - 1}: decoded by {checkpoint}"]
    record = _write_pieces(scores, Path(out_dir), titles=titles, notes=notes,
                           title=f"{names[0]} to {names[1]}: slerp in {steps} steps")
    return {"a": names[0], "b": names[1], "out_dir": str(out_dir), **record}


def _write_pieces(scores: dict, out_dir: Path, *, titles: list[str], notes: list[str], title: str) -> dict:
    """Each score as ``<name>.mid`` and ``<name>.wav``, all of them in interpolation.png and index.html."""
    from midistruct.render import plot_pianorolls, render_outputs, write_outputs_page

    out_dir.mkdir(parents=True, exist_ok=True)
    for name, score in scores.items():
        score.dump_midi(str(out_dir / f"{name}.mid"))
    png = plot_pianorolls(list(scores.values()), out_dir / "interpolation.png", titles=titles)
    audio = render_outputs(scores, out_dir, audio=True)["audio"]
    page = write_outputs_page(list(scores), out_dir, titles=titles, notes=[*notes, f"audio: {audio['backend']}"],
                              title=title)
    return {"midi": [f"{n}.mid" for n in scores], "plot": str(png.name), "audio": audio, "page": str(page)}


def _slug(piece_id: str) -> str:
    return piece_id.replace("/", "-").replace(" ", "_")


def _say(line: str) -> None:
    print(line, flush=True)

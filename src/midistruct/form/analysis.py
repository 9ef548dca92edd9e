"""``analyse``: a song (MIDI file or symusic Score) in, its :class:`Form` out.

    form = analyse("song.mid")                                   # each track's notes, no model
    form = analyse("song.mid", model=MidiStruct.from_pretrained("runs/pop909-4bar/best"),
                   settings=Settings(features="codes"))
    [(s.label, s.start_bar, s.end_bar) for s in form.sections]    # [("A", 0, 8), ("B", 8, 16), ...]

Bars are counted from tick 0 under the score's time signatures (or the one ``Settings.time_signature``
names), 0-based; a section's ``end_bar`` is the first bar after it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from midistruct.form import FormError
from midistruct.form import bars as bar_features
from midistruct.form import segment
from midistruct.form import supervised
from midistruct.tokens.validate import Skip, load_score

FEATURES = ("tracks", "notes", "codes")


@dataclass(frozen=True)
class Settings:
    """How a form is found; defaults chosen on POP909 songs outside the evaluated ones (form_eval.py)."""

    # "tracks": pitch-class + onset histograms of each track's notes; "notes": of all notes together;
    # "codes": a model's bar codes
    features: str = "tracks"
    method: str = "repetition"  # boundaries: "repetition" (repetitions + novelty, 4-bar phrases), "foote", or
    # "supervised" (a head learnt from POP909's phrase labels reads the curves, then the 4-bar phrase program)
    pickup: float = 0.125  # tracks, notes: notes in the last eighth of a bar count in the next (upbeats)
    half: int = 4  # bars on each side of a bar line that the novelty kernel compares
    min_bars: int = 2  # shortest section
    threshold: float = 0.2  # foote: least prominence of a novelty peak (the largest is 1)
    floor: float = 0.8  # repetition: least evidence (repetition + half the novelty) for a boundary
    period: int = 4  # repetition: section lengths (in bars) that are multiples of this cost nothing ...
    off_period: float = 0.3  # ... the others this much (the evidence is 0..1)
    boundary_cost: float = 0.1  # repetition: what each boundary costs
    label_threshold: float = 0.5  # least mean aligned similarity for a section to repeat an earlier one
    center: bool = True  # subtract the song's mean vector before the cosine similarity
    hop: int = 1  # "codes": bars between window starts
    segment_weight: float = 0.0  # "codes": weight of the windows' segment codes appended to the bar codes
    time_signature: str | None = None  # "4/4": replaces the file's meters (POP909's files mostly say 1/4)

    def __post_init__(self):
        if self.features not in FEATURES:
            raise FormError(f"unknown features {self.features!r}; valid: {', '.join(FEATURES)}")
        if self.method not in segment.METHODS:
            raise FormError(f"unknown method {self.method!r}; valid: {', '.join(segment.METHODS)}")


@dataclass(frozen=True)
class Section:
    """Bars ``start_bar`` .. ``end_bar - 1`` (0-based), in quarter notes from the file start, and a label."""

    start_bar: int
    end_bar: int
    start_qn: float
    end_qn: float
    label: str


@dataclass
class Form:
    """A song's sections and what they were found from: ``ssm`` (NB, NB), ``novelty`` (NB,) the boundary
    evidence the method picked the boundaries from (0..1), ``grid`` (NB + 1,) the bar lines in ticks (``tpq``
    a quarter note)."""

    sections: list[Section]
    ssm: np.ndarray
    novelty: np.ndarray
    grid: np.ndarray
    tpq: int
    settings: Settings
    source: str = "score"
    extra: dict = field(default_factory=dict)  # recorded in form.json's settings (e.g. the model)

    @property
    def boundaries(self) -> list[int]:
        """Section starts and the end: [0, ..., NB]."""
        return [s.start_bar for s in self.sections] + [len(self.novelty)]

    def as_dict(self) -> dict:
        """form.json: source, bars, sections, bar_starts_qn, novelty (per bar), settings."""
        return {"source": self.source, "bars": len(self.novelty), "sections": [asdict(s) for s in self.sections],
                "bar_starts_qn": [round(float(t) / self.tpq, 4) for t in self.grid[:-1]],
                "novelty": [round(float(v), 4) for v in self.novelty],
                "settings": {**asdict(self.settings), **self.extra}}


def analyse(midi, *, settings: Settings = Settings(), model=None, name: str | None = None) -> Form:
    """The form of ``midi`` (a path or a symusic Score, ``name`` naming it in messages and form.json). ``model``
    (a :class:`~midistruct.generation.pipeline.MidiStruct`) is needed for ``settings.features == "codes"``.
    Raises :class:`FormError` (one line) for music that cannot be analysed."""
    name = name or (str(midi) if isinstance(midi, (str, Path)) else "score")
    score = with_meter(load(midi), settings.time_signature)
    if not len(bar_features.pitched_notes(score)):
        raise FormError(f"{name}: no pitched notes")
    x, grid, notes = _features(score, settings, model=model, name=name)
    form = form_of(x, grid, tpq=score.tpq, settings=settings, source=name)
    form.extra.update(notes)
    return form


def form_of(x: np.ndarray, grid: np.ndarray, *, tpq: int, settings: Settings, source: str = "score") -> Form:
    """The form of bars with vectors ``x`` (NB, D) and bar lines ``grid`` (NB + 1,) in ticks."""
    ssm = segment.self_similarity(x, center=settings.center)
    curve, bounds = find_boundaries(ssm, settings, x=x)
    letters = segment.labels(ssm, bounds, threshold=settings.label_threshold)
    sections = [Section(a, b, round(float(grid[a]) / tpq, 4), round(float(grid[b]) / tpq, 4), label)
                for a, b, label in zip(bounds[:-1], bounds[1:], letters)]
    return Form(sections, ssm, curve, grid, tpq, settings, source)


def find_boundaries(ssm: np.ndarray, settings: Settings, *, x: np.ndarray | None = None
                    ) -> tuple[np.ndarray, list[int]]:
    """The boundary evidence per bar line (NB,) and the section bounds [0, ..., NB] by ``settings.method``;
    ``supervised`` also reads the bar vectors ``x`` (NB, D)."""
    if settings.method == "supervised":
        block = None if settings.features == "codes" else 12 + bar_features.POSITIONS  # one track's histograms
        return supervised.boundaries(ssm if x is None else x, ssm, block=block, min_bars=settings.min_bars)
    if settings.method == "foote":
        curve = segment.relative(segment.novelty(ssm, half=settings.half))
        return curve, segment.boundaries(curve, min_bars=settings.min_bars, threshold=settings.threshold)
    curve = segment.evidence(ssm, half=settings.half, floor=settings.floor)
    return curve, segment.phrase_boundaries(curve, period=settings.period, off_period=settings.off_period,
                                            cost=settings.boundary_cost, min_bars=settings.min_bars)


def _features(score, settings: Settings, *, model, name: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """Bar vectors (NB, D), bar lines (NB + 1,) and what form.json should note about them."""
    if settings.features in ("notes", "tracks"):
        grid = bar_features.bar_grid(score)
        x = bar_features.note_features(score, grid, per_track=settings.features == "tracks", pickup=settings.pickup)
        return x, grid, {}
    if model is None:
        raise FormError('features "codes" need a model (a checkpoint folder or a shipped model name)')
    from midistruct.form.codes import bar_codes  # (imports torch: kept local)

    codes = bar_codes(model, score, hop=settings.hop, segment_weight=settings.segment_weight, name=name)
    notes = {"windows_too_long": codes.dropped_windows, "bars_cut": codes.cut_bars} if codes.dropped_windows else {}
    return codes.x, bar_features.bar_grid(score, bars=len(codes.x)), notes


def load(midi):
    """A symusic Score from a path (or the Score given); :class:`FormError` naming the file and the reason."""
    if not isinstance(midi, (str, Path)):
        return midi
    if not (Path(midi).exists() or Path(midi).is_symlink()):
        raise FormError(f"{midi}: no such file")
    try:
        return load_score(Path(midi))
    except Skip as skip:
        raise FormError(f"{midi}: {skip}") from None


def with_meter(score, time_signature: str | None):
    """``score`` with one time signature from tick 0 (``"4/4"``), or as it is when None."""
    if not time_signature:
        return score
    import symusic

    num, _, den = time_signature.partition("/")
    if not (num.isdigit() and den.isdigit() and int(num) > 0 and int(den) in (1, 2, 4, 8, 16, 32)):
        raise FormError(f"bad time signature {time_signature!r}: expected e.g. 4/4, 3/4, 6/8")
    out = score.copy()
    out.time_signatures = [symusic.TimeSignature(0, int(num), int(den))]
    return out

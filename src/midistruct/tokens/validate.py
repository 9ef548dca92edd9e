"""Load a MIDI file and decide whether it can be used; every refusal has a one-line reason.

One owner for the rules, used by ``prepare`` (through :class:`~midistruct.tokens.encode.PieceEncoder`)
and by generation alike: :func:`usable_score` checks a loaded score and returns the copy that
tokenization reads. Notes that cannot sound or cannot be tokenized (zero or negative length,
pitch outside the tokenizer's range) are dropped, never given a length: tokenization must not
invent notes. A file left without such notes is refused with its own reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from midistruct.config import Config, ValidationConfig
from midistruct.errors import one_line


class Skip(Exception):
    """This file is not used; ``str(exc)`` is the one-line reason shown in reports."""


def load_score(path: Path):
    """Read a MIDI file (or, named ``*.abc``, an ABC tune) with symusic, turning every failure into :class:`Skip`.

    A file is read as MIDI by its content, whatever its name (``tune.MID``, ``song.kar``, a download without
    a suffix). Reasons: ``broken link`` (a symbolic link to nothing), ``not a file`` (a folder),
    ``cannot read file``, ``empty file``, ``unreadable MIDI`` (bad bytes: text, MusicXML, no MThd header...).
    """
    import symusic

    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise Skip("broken link")
    if path.is_dir():
        raise Skip("not a file (a folder)")
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as err:
        raise Skip(f"cannot read file: {err.strerror}") from None
    if size == 0:
        raise Skip("empty file")
    fmt = "abc" if path.suffix.lower() == ".abc" else "midi"
    if fmt == "midi" and head != b"MThd":
        raise Skip("unreadable MIDI: not a MIDI file (it does not start with the MThd header)")
    try:
        score = symusic.Score.from_file(str(path), fmt=fmt)
    except Exception as err:  # symusic raises RuntimeError/ValueError/IndexError on bad bytes
        raise Skip(f"unreadable MIDI: {one_line(err, 160)}") from None
    if score.tpq <= 0:
        raise Skip(f"unreadable MIDI: ticks per quarter {score.tpq}")
    return score


def usable_score(score, cfg: Config, *, meters: set[tuple[int, int]]):
    """The copy of ``score`` that tokenization reads, after every check prepare applies.

    Args:
        score: a loaded ``symusic.Score`` (ticks); left unchanged.
        cfg: the run config: ``cfg.validation`` limits, ``cfg.tokenizer`` pitch range and track mode.
        meters: the ``(numerator, denominator)`` meters the tokenizer has (``tokenizer.time_signatures``).

    Returns:
        A cleaned copy (see :func:`clean_score`). Raises :class:`Skip` with the reason when unusable.
    """
    check_score(score, cfg.validation, meters=meters, pitch_range=cfg.tokenizer.pitch_range)
    return clean_score(score, drop_drums=cfg.validation.drop_drums, merge=cfg.tokenizer.multitrack == "merge",
                       pitch_range=cfg.tokenizer.pitch_range)


def check_score(score, limits: ValidationConfig, *, meters: set[tuple[int, int]],
                pitch_range: tuple[int, int] | None = None) -> None:
    """Raise :class:`Skip` when the score is empty, drums only, has no usable notes, too few of
    them, is too long or has an odd tempo/meter.

    Usable notes are those of pitched tracks that last (duration > 0) and lie in ``pitch_range``
    (inclusive, as miditok reads it; None: any pitch). ``limits.min_notes`` counts usable notes.
    """
    pitched = [t for t in score.tracks if not t.is_drum]
    if sum(t.note_num() for t in pitched) == 0:
        raise Skip("drums only" if any(t.note_num() for t in score.tracks) else "no notes")
    n_usable = _usable_notes(pitched, pitch_range)
    if n_usable < limits.min_notes:
        raise Skip(f"too few notes ({n_usable} < {limits.min_notes})")
    seconds = score.to("second").end()
    if seconds > limits.max_seconds:
        raise Skip(f"too long ({seconds:.0f} s > {limits.max_seconds:.0f} s)")
    for tempo in score.tempos:
        if not limits.min_tempo <= tempo.qpm <= limits.max_tempo:
            raise Skip(f"absurd tempo: {tempo.qpm:.1f} qpm")
    for ts in score.time_signatures:
        if (ts.numerator, ts.denominator) not in meters:
            known = ", ".join(f"{n}/{d}" for n, d in sorted(meters, key=lambda m: (m[1], m[0])))
            raise Skip(f"unsupported meter: {ts.numerator}/{ts.denominator} (the tokenizer reads {known})")


def _usable_notes(tracks, pitch_range: tuple[int, int] | None) -> int:
    """How many notes of ``tracks`` (at least one note in all) tokenization keeps; :class:`Skip`
    with ``zero-length notes`` or ``no notes in the tokenizer's pitch range`` when none."""
    notes = [t.notes.numpy() for t in tracks]
    duration = np.concatenate([n["duration"] for n in notes])
    pitch = np.concatenate([n["pitch"] for n in notes]).astype(np.int64)[duration > 0]
    if len(pitch) == 0:
        raise Skip(f"zero-length notes (all {len(duration)} notes last 0 ticks or less)")
    if pitch_range is None:
        return len(pitch)
    low, high = pitch_range
    inside = int(((pitch >= low) & (pitch <= high)).sum())
    if inside == 0:
        raise Skip(f"no notes in the tokenizer's pitch range {low}-{high} "
                   f"(all {len(pitch)} notes outside it: lowest {pitch.min()}, highest {pitch.max()})")
    return inside


def clean_score(score, *, drop_drums: bool, merge: bool, pitch_range: tuple[int, int] | None = None):
    """A copy of ``score`` without drum tracks (with ``drop_drums``), without the pitched notes that
    do not last (duration <= 0) or lie outside ``pitch_range`` (inclusive; None: keep all pitches),
    and without empty tracks. With ``merge`` all pitched tracks are folded into one piano track.

    Merging always drops drums: a single pitched stream has no place for them.
    """
    import symusic

    tracks = [t if t.is_drum else _sounding(t, pitch_range) for t in score.tracks
              if not ((drop_drums or merge) and t.is_drum)]
    tracks = [t for t in tracks if t.note_num()]
    if merge:
        merged = symusic.Track(name="merged", program=0, is_drum=False)
        for track in tracks:
            merged.notes.extend(track.notes)
        merged.notes.sort()
        tracks = [merged]
    out = score.copy()
    out.tracks = tracks
    return out


def _sounding(track, pitch_range: tuple[int, int] | None):
    """A copy of a pitched track keeping the notes that last and lie in ``pitch_range``."""
    import symusic

    notes = track.notes.numpy()
    keep = notes["duration"] > 0
    if pitch_range is not None:
        keep &= (notes["pitch"] >= pitch_range[0]) & (notes["pitch"] <= pitch_range[1])
    if keep.all():
        return track
    out = track.copy()
    out.notes = symusic.Note.from_numpy(**{k: v[keep] for k, v in notes.items()})
    return out

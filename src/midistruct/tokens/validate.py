"""Load a MIDI file and decide whether it can be used; every refusal has a one-line reason."""

from __future__ import annotations

from pathlib import Path

from midistruct.config import ValidationConfig


class Skip(Exception):
    """This file is not used; ``str(exc)`` is the one-line reason shown in reports."""


def load_score(path: Path):
    """Read a MIDI file with symusic, turning every failure into :class:`Skip`."""
    import symusic

    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as err:
        raise Skip(f"cannot read file: {err.strerror}") from None
    if size == 0:
        raise Skip("empty file")
    try:
        score = symusic.Score(str(path))
    except Exception as err:  # symusic raises RuntimeError/ValueError/IndexError on bad bytes
        raise Skip(f"unreadable MIDI: {_one_line(err)}") from None
    if score.tpq <= 0:
        raise Skip(f"unreadable MIDI: ticks per quarter {score.tpq}")
    return score


def check_score(score, limits: ValidationConfig, *, meters: set[tuple[int, int]]) -> None:
    """Raise :class:`Skip` when the score is empty, drums only, too long or has odd tempo/meter."""
    pitched = [t for t in score.tracks if not t.is_drum]
    n_pitched = sum(t.note_num() for t in pitched)
    if n_pitched == 0:
        raise Skip("drums only" if any(t.note_num() for t in score.tracks) else "no notes")
    if n_pitched < limits.min_notes:
        raise Skip(f"too few notes ({n_pitched} < {limits.min_notes})")
    seconds = score.to("second").end()
    if seconds > limits.max_seconds:
        raise Skip(f"too long ({seconds:.0f} s > {limits.max_seconds:.0f} s)")
    for tempo in score.tempos:
        if not limits.min_tempo <= tempo.qpm <= limits.max_tempo:
            raise Skip(f"absurd tempo: {tempo.qpm:.1f} qpm")
    for ts in score.time_signatures:
        if (ts.numerator, ts.denominator) not in meters:
            raise Skip(f"unsupported meter: {ts.numerator}/{ts.denominator}")


def clean_score(score, *, drop_drums: bool, merge: bool):
    """Drop drum tracks and, with ``merge``, fold all pitched tracks into one piano track.

    Merging always drops drums: a single pitched stream has no place for them.
    """
    import symusic

    tracks = [t for t in score.tracks if not ((drop_drums or merge) and t.is_drum) and t.note_num()]
    if merge:
        merged = symusic.Track(name="merged", program=0, is_drum=False)
        for track in tracks:
            merged.notes.extend(track.notes)
        merged.notes.sort()
        tracks = [merged]
    out = score.copy()
    out.tracks = tracks
    return out


def _one_line(err: Exception) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text[:160]

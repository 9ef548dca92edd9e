"""A medley: a playlist's pieces laid end to end in one MIDI file, each join crossed by a few bars the model
writes on the path between the end of one piece and the start of the next
(:meth:`~midistruct.generation.pipeline.MidiStruct.bridge`).

Every part starts on a bar line of its own meter (a part's end is rounded up to its next bar line); tracks
are merged by (program, drum); tempo and time-signature changes and a marker naming each part are kept.
"""

from __future__ import annotations

from pathlib import Path

import symusic


def medley(ms, paths: list[str | Path], *, bridge_windows: int = 1, progress: bool = True) -> symusic.Score:
    """The pieces at ``paths`` in order with a bridge of ``bridge_windows`` model windows between neighbours
    (none with 0). ``ms`` a :class:`~midistruct.generation.pipeline.MidiStruct`."""
    from tqdm import tqdm

    parts, names = [], []
    for i, path in enumerate(tqdm(paths, desc="medley", unit="piece", disable=not progress)):
        if i and bridge_windows:
            parts.append(ms.bridge(paths[i - 1], path, windows=bridge_windows, temperature=0.0))
            names.append(f"bridge to {Path(path).stem}")
        parts.append(ms.load(path))
        names.append(Path(path).stem)
    return concatenate(parts, names=names)


def concatenate(parts: list[symusic.Score], *, names: list[str]) -> symusic.Score:
    """One score: each part after the previous part's last bar line, at the first part's resolution."""
    tpq = parts[0].tpq
    out = symusic.Score(tpq)
    tracks: dict[tuple[int, bool], symusic.Track] = {}
    offset = 0
    for part, name in zip(parts, names):
        part = part if part.tpq == tpq else part.resample(tpq, min_dur=1)
        out.markers.append(symusic.TextMeta(offset, name))
        for sig in part.time_signatures or [symusic.TimeSignature(0, 4, 4)]:
            out.time_signatures.append(symusic.TimeSignature(sig.time + offset, sig.numerator, sig.denominator))
        for tempo in part.tempos:
            out.tempos.append(symusic.Tempo(tempo.time + offset, tempo.qpm))
        for track in part.tracks:
            key = (track.program, track.is_drum)
            if key not in tracks:
                tracks[key] = symusic.Track(name=track.name, program=track.program, is_drum=track.is_drum)
                out.tracks.append(tracks[key])
                tracks[key] = out.tracks[-1]
            for n in track.notes:
                tracks[key].notes.append(symusic.Note(n.time + offset, n.duration, n.pitch, n.velocity))
        offset += bar_end(part)
    return out


def bar_end(score: symusic.Score) -> int:
    """Ticks from the score's start to the first bar line at or after its last note ends (its last meter)."""
    end = score.end()
    sigs = list(score.time_signatures) or [symusic.TimeSignature(0, 4, 4)]
    last = sigs[-1]
    bar = last.numerator * score.tpq * 4 // last.denominator
    return last.time + max(0, -(-(end - last.time) // bar)) * bar

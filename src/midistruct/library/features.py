"""What a piece becomes in a library: :class:`PieceCodes`, from a model's codes or from a histogram.

A model's piece vector is ``[mean bar code ; mean segment code]`` over the windows the pipeline cuts (the
model's bar count, from the first bar; windows too dense for the model are left out); the bar codes are kept,
in order, for transitions (a piece's start and end). The baseline (issue 17's "pitch-class + duration histogram") is 12 pitch classes weighted by
duration and 8 duration bins, each part summing to 1; its "bar codes" are the same histogram per bar.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from midistruct.tokens.downbeat import AUTO, downbeat_tick
from midistruct.tokens.key import key_of_histogram, signature_of
from midistruct.tokens.validate import Skip, load_score

FEATURES = ("codes", "histogram")
DURATION_EDGES = np.array([0.1875, 0.375, 0.75, 1.5, 3.0, 6.0, 12.0])  # quarters; 8 bins around 16th..whole


class PieceCodes(NamedTuple):
    """``vector`` (D,) the piece; ``bars`` (NB, Zb) one vector per bar in order; ``key`` its key signature
    (:func:`score_key`; -1 unknown), which the radio weighs beside the codes: a model that reads a canonical key
    (issue 14) holds none in its codes."""

    vector: np.ndarray
    bars: np.ndarray
    key: int = -1


def score_pitch_classes(score) -> np.ndarray:
    """(12,) the pitch classes of all the pitched notes of ``score`` (a symusic Score), weighted by duration (in the
    score's time unit; zeros without notes)."""
    weights = np.zeros(12)
    for track in score.tracks:
        if track.is_drum or not len(track.notes):
            continue
        notes = track.notes.numpy()  # {"time", "duration", "pitch", "velocity"}: arrays
        weights += np.bincount(notes["pitch"] % 12, weights=notes["duration"].astype(float), minlength=12)
    return weights


def score_key(score) -> int:
    """The key signature (:func:`midistruct.tokens.key.signature_of`: the pitch class of its major tonic) that the
    Krumhansl-Schmuckler finder hears in :func:`score_pitch_classes`; -1 without notes."""
    return signature_of(key_of_histogram(score_pitch_classes(score)))


def file_key(path: str | Path, *, tracks: str | None = None) -> int:
    """:func:`score_key` of the tracks of a MIDI file whose name matches ``tracks`` (all for None); -1 when it
    cannot be read or holds none of them."""
    try:
        return score_key(select_tracks(load_score(Path(path)), tracks, name=str(path)))
    except Exception:  # noqa: BLE001 - a key is a hint: a file the encoder read may still fail here
        return -1


def select_tracks(score, pattern: str | None, *, name: str):
    """``score`` with only the tracks whose name matches the regular expression ``pattern`` (case ignored; all
    tracks for None); :class:`~midistruct.generation.pipeline.InputError` naming the tracks when none does."""
    from midistruct.generation.pipeline import InputError  # (imports torch and transformers: kept local)

    if pattern is None:
        return score
    keep = [t for t in score.tracks if re.search(pattern, t.name, flags=re.IGNORECASE)]
    if not keep:
        names = ", ".join(repr(t.name) for t in score.tracks) or "none"
        raise InputError(f"{name}: no track named like {pattern!r} (tracks: {names})")
    out = score.copy()
    out.tracks = keep
    return out


def code_features(ms, *, tracks: str | None = None, time_signature: str | None = None,
                  downbeat: str | None = None) -> Callable[[str | Path], PieceCodes]:
    """Path -> :class:`PieceCodes` from ``ms`` (a :class:`~midistruct.generation.pipeline.MidiStruct`), of the
    tracks whose name matches ``tracks`` (a regular expression; all for None), read in ``time_signature``
    (``"4/4"``) whatever the files declare (None: their own meters), with bar lines where ``downbeat`` ``"auto"``
    estimates them (:mod:`midistruct.tokens.downbeat`; None: the files' own); unreadable input raises its
    :class:`~midistruct.generation.pipeline.InputError`."""
    _check_meter(time_signature)
    _check_downbeat(downbeat)

    def encode(path: str | Path) -> PieceCodes:
        score = select_tracks(ms.load(path), tracks, name=str(path))
        # a few too-dense bars do not cost a piece its place
        latents = ms.encode(score, drop_long=True, time_signature=time_signature, downbeat=downbeat, name=str(path))
        bars = np.concatenate([latents.z_bar[i, :n].numpy() for i, n in enumerate(latents.bars)])  # (NB, Zb)
        segment = latents.z_segment.numpy().mean(0)  # (Zs,)
        return PieceCodes(np.concatenate([bars.mean(0), segment]).astype(np.float32), bars.astype(np.float32),
                          score_key(score))

    return encode


def histogram_features(*, tracks: str | None = None, time_signature: str | None = None,
                       downbeat: str | None = None) -> Callable[[str | Path], PieceCodes]:
    """Path -> :class:`PieceCodes` of pitch-class + duration histograms (the baseline) of the tracks whose name
    matches ``tracks`` (all for None), bars of ``time_signature`` (None: each file's first) from tick 0, or from
    where ``downbeat`` ``"auto"`` estimates a bar line; a file that is not readable MIDI or has no notes raises
    :class:`~midistruct.generation.pipeline.InputError`."""
    from midistruct.generation.pipeline import InputError  # (imports torch and transformers: kept local)

    _check_meter(time_signature)
    _check_downbeat(downbeat)

    def encode(path: str | Path) -> PieceCodes:
        try:
            raw = select_tracks(load_score(Path(path)), tracks, name=str(path))
            score = raw.to("quarter")
        except Skip as skip:
            raise InputError(f"{path}: {skip}") from None
        notes = [(n.time, n.pitch, n.duration) for t in score.tracks if not t.is_drum for n in t.notes]
        if not notes:
            raise InputError(f"{path}: no notes")
        time, pitch, duration = (np.array(c, dtype=np.float64) for c in zip(*notes))
        if downbeat == AUTO:  # the ticks of the file, before .to("quarter"), are what the estimate reads
            time = time - (downbeat_tick(raw, time_signature=time_signature) or 0) / raw.tpq
        bar = _bar_of(score, time, time_signature)
        bar -= min(int(bar.min()), 0)  # notes before the first bar line: a bar of their own
        bars = np.stack([histogram(pitch[bar == b], duration[bar == b]) for b in range(int(bar.max()) + 1)])
        return PieceCodes(histogram(pitch, duration), bars, score_key(score))

    return encode


def histogram(pitch: np.ndarray, duration: np.ndarray) -> np.ndarray:
    """(20,) pitch classes weighted by duration (12) and the duration bins (8), each part summing to 1
    (zeros for no notes)."""
    pcs = np.bincount(pitch.astype(int) % 12, weights=duration, minlength=12)
    durs = np.bincount(np.searchsorted(DURATION_EDGES, duration), minlength=len(DURATION_EDGES) + 1)
    return np.concatenate([pcs / max(pcs.sum(), 1e-9), durs / max(durs.sum(), 1)]).astype(np.float32)


def _check_meter(time_signature: str | None) -> None:
    """:class:`~midistruct.generation.pipeline.InputError` unless ``time_signature`` is None or N/D: said once,
    before a library's thousands of files would each be skipped for it."""
    from midistruct.generation.pipeline import InputError  # (imports torch and transformers: kept local)

    if time_signature is not None and not re.fullmatch(r"[1-9]\d*/(1|2|4|8|16|32|64)", time_signature):
        raise InputError(f"time signature {time_signature!r}: expected N/D, such as 4/4 or 6/8")


def _check_downbeat(downbeat: str | None) -> None:
    """:class:`~midistruct.generation.pipeline.InputError` unless ``downbeat`` is None or ``"auto"``: a library's
    files have bar lines of their own, or each gets its estimate; one number for all of them means nothing."""
    from midistruct.generation.pipeline import InputError  # (imports torch and transformers: kept local)

    if downbeat not in (None, AUTO):
        raise InputError(f"downbeat {downbeat!r}: a library reads each file's own bar lines, or 'auto' estimates "
                         "them file by file")


def _bar_of(score, time: np.ndarray, time_signature: str | None = None) -> np.ndarray:
    """The bar index of each onset (quarters), in bars of ``time_signature`` ("3/4"), else of the score's first
    time signature (4/4 without one)."""
    if time_signature is not None:
        numerator, denominator = (int(x) for x in time_signature.split("/"))
        length = numerator * 4.0 / denominator
    else:
        sig = score.time_signatures[0] if len(score.time_signatures) else None
        length = sig.numerator * 4.0 / sig.denominator if sig is not None else 4.0
    # symusic's float32 quarters can put an onset on a bar line a hair before it
    return np.floor(time / length + 1e-6).astype(int)

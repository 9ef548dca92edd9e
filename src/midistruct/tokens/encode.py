"""One piece from MIDI file to token ids, bar indices and windows (the prepare worker).

Runs inside worker processes: :func:`init_worker` builds the tokenizer once per
process and :func:`encode_file` handles one file, returning an :class:`Encoded`
piece or a :class:`Skipped` record, never raising.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from midistruct.config import Config
from midistruct.tokens.downbeat import AUTO, downbeat_tick, tick_at
from midistruct.tokens.remi import RemiVocab
from midistruct.tokens.segment import Window, cut_windows
from midistruct.tokens.tokenizer import build_tokenizer
from midistruct.tokens.validate import Skip, load_score, usable_score


@dataclass
class Encoded:
    """A tokenized piece: ``ids`` (T,), ``bars`` (T,) bar of each token, kept windows."""

    ids: np.ndarray
    bars: np.ndarray
    windows: list[Window]
    n_notes: int
    content_hash: str
    dropped_windows: dict[str, int] = field(default_factory=dict)
    key_signature: str | None = None  # the file's first key signature: "0", "2#", "3b" (see key_signature())
    label_bar: int | None = None  # the bar (of ``bars``) where a source's labels start (its label_zero_tick)


@dataclass
class Skipped:
    reason: str


class PieceEncoder:
    """Validate, clean, tokenize and segment pieces with one tokenizer (its ids: base ids, never BPE)."""

    def __init__(self, cfg: Config, tokenizer=None):
        self.cfg = cfg
        self.tokenizer = tokenizer if tokenizer is not None else build_tokenizer(cfg.tokenizer)
        self.vocab = RemiVocab(self.tokenizer)
        self.bar_id = self.vocab.bar_id
        self.meters = {tuple(ts) for ts in self.tokenizer.time_signatures}

    def tokenize(self, score, *, time_signature: str | None = None,
                 downbeat: float | str | None = None) -> np.ndarray:
        """Validate, clean and tokenize a whole score: base token ids (T,), without BPE even when the
        tokenizer has merges (:meth:`RemiVocab.from_base` applies them). Raises :class:`Skip`.

        The rules are :func:`~midistruct.tokens.validate.usable_score`'s.

        ``time_signature`` (``"4/4"``) replaces the score's own meters when given; ``downbeat`` (seconds)
        is a bar line: the music is moved by less than a bar so that a bar starts there; ``"auto"`` estimates
        where from the notes (:mod:`midistruct.tokens.downbeat`).
        """
        seq = self.tokenizer.encode(self.prepared(score, time_signature=time_signature, downbeat=downbeat),
                                    encode_ids=False)
        seq = seq[0] if isinstance(seq, list) else seq
        return np.asarray(seq.ids, dtype=np.int64)

    def prepared(self, score, *, time_signature: str | None = None, downbeat: float | str | None = None):
        """The score :meth:`tokenize` reads: meters replaced, moved to the downbeat, checked and cleaned
        (merged, out-of-range and silent notes dropped). Raises :class:`Skip`."""
        return usable_score(_placed(score, time_signature, downbeat)[0], self.cfg, meters=self.meters)

    def encode_score(self, score, *, time_signature: str | None = None, downbeat: float | None = None,
                     label_zero_tick: int | None = None) -> Encoded:
        """Tokenize and cut a score into the training windows; raises :class:`Skip` when unusable.
        ``label_zero_tick`` (a tick of the file) gives :attr:`Encoded.label_bar` when it falls on a bar line."""
        cfg = self.cfg
        ids = self.tokenize(score, time_signature=time_signature, downbeat=downbeat)
        starts = self.vocab.bar_starts(ids)
        if len(starts) > cfg.validation.max_bars:
            raise Skip(f"too many bars ({len(starts)} > {cfg.validation.max_bars})")
        if len(starts) < cfg.segments.bars:
            raise Skip(f"shorter than one window ({len(starts)} < {cfg.segments.bars} bars)")
        windows, dropped = self._keep_windows(ids, starts)
        if not windows:
            raise Skip("no usable window (" + ", ".join(f"{k}: {v}" for k, v in dropped.items()) + ")")
        digest = hashlib.sha1(ids.astype(np.int32).tobytes()).hexdigest()
        return Encoded(ids, self.vocab.bar_index(ids), windows, self.vocab.count_notes(ids), digest, dropped,
                       key_signature(score), _label_bar(score, time_signature, downbeat, label_zero_tick))

    def _keep_windows(self, ids: np.ndarray, starts: np.ndarray) -> tuple[list[Window], dict[str, int]]:
        seg = self.cfg.segments
        notes_before = np.concatenate([[0], np.cumsum(self.vocab.pitches_in[ids])]).tolist()
        kept, dropped = [], {"too many tokens": 0, "too few notes": 0}
        for w in cut_windows(starts, len(ids), bars=seg.bars, step=seg.step):
            if w.end - w.start + 1 > seg.max_tokens:  # +1: the EOS the model appends
                dropped["too many tokens"] += 1
            elif notes_before[w.end] - notes_before[w.start] < seg.min_notes:
                dropped["too few notes"] += 1
            else:
                kept.append(w)
        return kept, {k: v for k, v in dropped.items() if v}

    def encode_file(self, path: Path, *, time_signature: str | None = None, downbeat: float | None = None,
                    label_zero_tick: int | None = None) -> Encoded | Skipped:
        """Load and encode one file; every failure becomes a :class:`Skipped` reason."""
        try:
            return self.encode_score(load_score(path), time_signature=time_signature, downbeat=downbeat,
                                     label_zero_tick=label_zero_tick)
        except Skip as skip:
            return Skipped(str(skip))
        except Exception as err:  # a bug or a miditok corner case must not stop a corpus run
            return Skipped(f"tokenization failed: {type(err).__name__}: {' '.join(str(err).split())[:120]}")


_WORKER: PieceEncoder | None = None


def init_worker(cfg_json: str) -> None:
    """Pool initializer: build this process's encoder once."""
    global _WORKER
    _WORKER = PieceEncoder(Config.model_validate_json(cfg_json))


def encode_file(task: tuple[str, str | None, float | None, int | None]) -> Encoded | Skipped:
    """Pool task: encode one ``(path, time_signature or None, downbeat seconds or None, label_zero_tick or
    None)`` with this process's encoder."""
    assert _WORKER is not None, "init_worker was not called"
    path, time_signature, downbeat, label_zero_tick = task
    return _WORKER.encode_file(Path(path), time_signature=time_signature, downbeat=downbeat,
                               label_zero_tick=label_zero_tick)


def task_of(tags: dict) -> tuple[str | None, float | str | None]:
    """The encode options a piece's tags carry: ``time_signature`` and ``downbeat_seconds`` (seconds, or ``auto``:
    estimated from the notes, :mod:`midistruct.tokens.downbeat`)."""
    downbeat = tags.get("downbeat_seconds")
    if downbeat == AUTO:
        return tags.get("time_signature"), AUTO
    try:
        downbeat = float(downbeat) if downbeat is not None else None
    except ValueError:
        raise ValueError(f"bad downbeat_seconds tag: {downbeat!r}") from None
    return tags.get("time_signature"), downbeat


def label_tick_of(tags: dict) -> int | None:
    """The tick where a source's labels (POP909's phrases) start, from the ``label_zero_tick`` tag."""
    value = tags.get("label_zero_tick")
    try:
        return int(value) if value is not None else None
    except ValueError:
        raise ValueError(f"bad label_zero_tick tag: {value!r}") from None


def _align_downbeat(score, tick: int):
    """A copy of ``score`` whose tracks are moved by less than a bar so that the bar lines (from its
    first time signature, at tick 0) fall on ``tick``: earlier when no note would start before 0, else later.
    Returns it and the shift in ticks."""
    if not score.time_signatures:
        return score, 0
    bar = _bar_ticks(score)
    late = tick % bar  # how far the bar lines sit before the beat
    if late == 0:
        return score, 0
    first = min((int(t.notes.numpy()["time"].min()) for t in score.tracks if len(t.notes)), default=0)
    shift = -late if first >= late else bar - late
    out = score.copy()
    for track in out.tracks:
        track.shift_time(shift, inplace=True)
    return out, shift


def _bar_ticks(score) -> int:
    ts = score.time_signatures[0]
    return score.tpq * 4 * ts.numerator // ts.denominator


def _placed(score, time_signature: str | None, downbeat: float | str | None):
    """``score`` in the meter ``time_signature`` and moved onto the downbeat (seconds, or ``"auto"``: estimated
    from the notes in that meter, :mod:`midistruct.tokens.downbeat`; see ``prepared``), and the shift."""
    if time_signature:
        score = _with_meter(score, time_signature)
    if downbeat is None:
        return score, 0
    if downbeat == AUTO:
        tick = downbeat_tick(score)
        return (score, 0) if tick is None else _align_downbeat(score, tick)
    return _align_downbeat(score, tick_at(score, downbeat))


def _label_bar(score, time_signature: str | None, downbeat: float | None, zero_tick: int | None) -> int | None:
    """The bar of the placed score where the tick ``zero_tick`` of the file falls, when it falls on a bar line
    (within a 32nd note) under the score's first meter; None otherwise."""
    if zero_tick is None:
        return None
    placed, shift = _placed(score, time_signature, downbeat)
    if not placed.time_signatures:
        return None
    bar = _bar_ticks(placed)
    at = (zero_tick + shift) / bar
    return round(at) if abs(at - round(at)) * bar <= placed.tpq / 8 and round(at) >= 0 else None


def key_signature(score) -> str | None:
    """The score's first key signature as its accidentals: ``"0"``, ``"2#"``, ``"3b"``; None without one.

    Only the accidentals count, not the mode MIDI adds to them: converters such as abc2midi (the
    Nottingham files) write every tune as "major", modal and minor tunes included.
    """
    signatures = sorted(score.key_signatures, key=lambda k: k.time)
    if not signatures:
        return None
    sharps = int(signatures[0].key)
    return "0" if sharps == 0 else f"{abs(sharps)}{'#' if sharps > 0 else 'b'}"


def _with_meter(score, text: str):
    """A copy of ``score`` with one time signature, ``"num/den"``, from tick 0."""
    import symusic

    try:
        num, den = (int(x) for x in text.split("/"))
    except ValueError:
        raise Skip(f"bad time_signature tag: {text!r}") from None
    out = score.copy()
    out.time_signatures = [symusic.TimeSignature(0, num, den)]
    return out

"""The REMI token vocabulary and grammar: the one place that reads miditok's token strings.

Every other module asks a :class:`RemiVocab` which id is a bar, a pitch, a position or a time signature,
what may follow what, and which bar each token of a sequence belongs to -- also under BPE (issue 13).

Ids are the model's ids, ``0 .. V-1`` (``V = len(tokenizer)``). Without BPE they are miditok's base ids.
With BPE the first ``Vb`` are still the base tokens (miditok trains from the whole base alphabet; checked
here) and the others are merges, each standing for a run of base tokens inside one bar: prepare learns the
merges with one bar per word (:meth:`RemiVocab.from_base`), so a merge that holds a ``Bar`` starts with it.
The ``Bar`` id itself then almost never appears (``Bar TimeSig`` is among the first merges), which is why
bars are found through :attr:`RemiVocab.bars_in`, never by comparing with ``bar_id``.

Arrays are numpy and indexed by id; nothing here imports torch.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

SPECIAL_KINDS = ("PAD", "BOS", "EOS", "MASK")
DRUM_PROGRAM = "Program_-1"  # a grammar kind of its own: only drum pitches may follow it
MERGED = "Merged"  # the kind of a BPE id that stands for several base tokens (or none: Metaspace's "▁")
UNREACHABLE = 1 << 20  # "infinitely many" tokens, for kinds from which EOS cannot be reached


def parse(token: str) -> tuple[str, str]:
    """A token string's (kind, value): ``"Pitch_60"`` -> ``("Pitch", "60")``, ``"Bar_None"`` -> ``("Bar", "None")``."""
    kind, _, value = token.partition("_")
    return kind, value


class GrammarTables(NamedTuple):
    """What :class:`~midistruct.generation.constraints.RemiGrammar` needs, as numpy arrays over base ids (V,).

    ``kinds`` (K names, sorted) and ``kind`` (V,) each id's index in it; ``successors`` (K, V) bool, the ids
    that may follow a token of each kind; ``steps`` the fewest tokens after a kind before EOS may come;
    ``meters`` (M: ``"none"`` then each TimeSig value) and ``meter`` (V,) each id's index in it (0: not a
    TimeSig); ``meter_length`` (M,) positions per bar; ``position`` / ``pitch`` (V,) values, -1 elsewhere;
    ``ascending_chords``: pitches at one onset must rise (``tokenizer.sort_chords`` with tracks merged).
    """

    kinds: list[str]
    kind: np.ndarray
    successors: np.ndarray
    steps: dict[str, int]
    meters: list[str]
    meter: np.ndarray
    meter_length: np.ndarray
    position: np.ndarray
    pitch: np.ndarray
    ascending_chords: bool


class RemiVocab:
    """The vocabulary of one miditok REMI tokenizer (BPE-trained or not), parsed once (a few ms).

    Attributes (``V`` model ids, ``Vb`` base ids):
        base_tokens: (Vb,) token strings in id order; ``size``: V; ``is_bpe``: whether merges exist.
        pad_id, bos_id, eos_id, mask_id, bar_id: the special ids and the ``Bar`` base id.
        kinds (V,): each id's kind (``"Pitch"``, ``"Bar"``, ``"EOS"`` ...; :data:`MERGED` for a BPE merge).
        pitch_of (V,): MIDI pitch of a ``Pitch`` id, -1 elsewhere (merges included).
        bars_in (V,): ``Bar`` tokens each id stands for (0 or 1); pitches_in (V,): ``Pitch`` tokens.
        meters: the TimeSig values (``"4/4"`` ...) in id order.

    Raises ``ValueError`` for a tokenizer that is not REMI or whose base ids are not its first model ids.
    """

    def __init__(self, tokenizer):
        if type(tokenizer).__name__ != "REMI" or "Bar_None" not in tokenizer.vocab:
            raise ValueError(f"midistruct needs a miditok REMI tokenizer, got {type(tokenizer).__name__}")
        base = tokenizer.vocab
        self.base_tokens = sorted(base, key=base.get)
        self._id = dict(base)
        self.pad_id, self.bos_id, self.eos_id, self.mask_id, self.bar_id = (
            base[f"{k}_None"] for k in (*SPECIAL_KINDS, "Bar"))
        parsed = [parse(t) for t in self.base_tokens]
        self.base_kinds = np.array([k for k, _ in parsed], dtype=object)  # (Vb,)
        self.base_values = np.array([v for _, v in parsed], dtype=object)  # (Vb,)
        self.meters = [v for k, v in parsed if k == "TimeSig"]
        self.positions_per_beat = int(tokenizer.config.max_num_pos_per_beat)
        programs = bool((self.base_kinds == "Program").any())  # per-program chord order is not tracked
        self.ascending_chords = bool(tokenizer.config.remove_duplicated_notes) and not programs
        self.type_graph = {k: set(after) for k, after in tokenizer.tokens_types_graph.items()}
        self._tokenizer = tokenizer
        self.is_bpe = bool(tokenizer.is_trained)
        self.pieces = _pieces(tokenizer)  # (V,) tuples of base ids
        self._set_tables()

    def _set_tables(self) -> None:
        """Per model id: kind, pitch, and the Bar and Pitch tokens it stands for."""
        self.size = len(self.pieces)
        single = np.array([len(p) == 1 for p in self.pieces])
        first = np.array([p[0] if p else 0 for p in self.pieces])  # (V,) a merge may stand for nothing
        self.kinds = np.where(single, self.base_kinds[first], MERGED).astype(object)  # (V,)
        base_pitch = self._numbers("Pitch")
        self.pitch_of = np.where(single, base_pitch[first], -1)  # (V,)
        self.bars_in = np.array([sum(b == self.bar_id for b in p) for p in self.pieces], dtype=np.int64)
        self.pitches_in = np.array([sum(base_pitch[b] >= 0 for b in p) for p in self.pieces], dtype=np.int64)
        self._pitch_id = np.full(128, -1, dtype=np.int64)  # (128,) the Pitch id of each MIDI pitch, -1: none
        self._pitch_id[base_pitch[base_pitch >= 0]] = np.flatnonzero(base_pitch >= 0)
        self.position_of = self._numbers("Position")  # (Vb,) position in the bar, -1 elsewhere
        self.duration_of = self._durations()  # (Vb,) length in positions, -1 elsewhere
        self.velocity_of = self._numbers("Velocity")  # (Vb,) MIDI velocity, -1 elsewhere
        self.has_velocities = bool((self.velocity_of >= 0).any())

    def _durations(self) -> np.ndarray:
        """(Vb,) each ``Duration`` id's length in positions (miditok writes ``beats.ticks.resolution``), -1
        for the others."""
        per_beat = self.positions_per_beat
        out = np.full(len(self.base_tokens), -1, dtype=np.int64)
        for i in self.ids_of("Duration"):
            beats, ticks, resolution = (int(x) for x in str(self.base_values[i]).split("."))
            out[i] = beats * per_beat + round(ticks * per_beat / resolution)
        return out

    def pitch_id(self, pitch: int) -> int:
        """The ``Pitch`` id of a MIDI pitch, clipped into the vocabulary's pitch range."""
        valid = np.flatnonzero(self._pitch_id >= 0)
        return int(self._pitch_id[int(np.clip(pitch, valid[0], valid[-1]))])

    def position_id(self, position: int) -> int:
        """The ``Position`` id of a position in the bar; ``KeyError`` beyond the vocabulary's positions."""
        return self._id[f"Position_{int(position)}"]

    def positions_per_bar(self, meter: str) -> int:
        """Positions in a bar of ``meter`` (``"6/8"``): its beats in quarter notes times ``positions_per_beat``."""
        numerator, denominator = (int(x) for x in meter.split("/"))
        return max(1, round(numerator * 4 / denominator * self.positions_per_beat))

    def _numbers(self, kind: str) -> np.ndarray:
        """(Vb,) the integer value of each base id of ``kind``, -1 for the others."""
        return np.array([int(v) if k == kind else -1 for k, v in zip(self.base_kinds, self.base_values)],
                        dtype=np.int64)

    # ---- one id ---------------------------------------------------------------------------

    def id(self, token: str) -> int:
        """The base id of a token string (``"TimeSig_4/4"``); ``KeyError`` when not in the vocabulary."""
        return self._id[token]

    def kind(self, i: int) -> str:
        """The kind of id ``i``: ``"Pitch"`` for ``Pitch_60``, :data:`MERGED` for a BPE merge."""
        return str(self.kinds[int(i)])

    def value(self, i: int) -> str:
        """The value of base id ``i``: ``"60"`` for ``Pitch_60``, ``"None"`` for ``Bar_None``, ``""`` for a merge."""
        piece = self.pieces[int(i)]
        return str(self.base_values[piece[0]]) if len(piece) == 1 else ""

    def parse(self, i: int) -> tuple[str, str]:
        """``(kind(i), value(i))``."""
        return self.kind(i), self.value(i)

    def ids_of(self, kind: str) -> np.ndarray:
        """The base ids of one kind (``"Pitch"``, ``"TimeSig"`` ...), ascending."""
        return np.flatnonzero(self.base_kinds == kind)

    def time_signature_id(self, meter: str) -> int:
        """The id of ``TimeSig_<meter>``; ``ValueError`` naming the valid meters when there is none."""
        if meter not in self.meters:
            raise ValueError(f"time signature {meter!r} is not in the vocabulary; valid: {', '.join(self.meters)}")
        return self._id[f"TimeSig_{meter}"]

    # ---- sequences: base ids, BPE, bars ---------------------------------------------------

    def to_base(self, ids) -> np.ndarray:
        """The base ids (T',) that model ids (T,) stand for (the same ids without BPE)."""
        ids = np.asarray(ids, dtype=np.int64)
        if not self.is_bpe:
            return ids
        return np.fromiter((b for i in ids.tolist() for b in self.pieces[i]), dtype=np.int64)

    def from_base(self, base_ids) -> tuple[np.ndarray, np.ndarray]:
        """Model ids (T',) and the bar index of each (T',) for base ids (T,) that start at a ``Bar``.

        With BPE each bar is encoded on its own (one pre-tokenized word, as the merges were learned), so
        no id spans two bars; without BPE the ids come back as they are.
        """
        base_ids = np.asarray(base_ids, dtype=np.int64)
        if not self.is_bpe:
            return base_ids, self.bar_index(base_ids)
        encoding = self._tokenizer._model.encode(self.bar_words(base_ids), is_pretokenized=True)
        return np.asarray(encoding.ids, dtype=np.int64), np.asarray(encoding.word_ids, dtype=np.int64)

    def bar_words(self, base_ids) -> list[str]:
        """The base ids of each bar as one string of miditok's byte alphabet (what BPE reads and learns)."""
        base_ids = np.asarray(base_ids, dtype=np.int64)
        starts = np.flatnonzero(base_ids == self.bar_id)
        chunks = np.split(base_ids, starts[1:]) if len(starts) else [base_ids]
        return [self._tokenizer._ids_to_bytes(c.tolist(), as_one_str=True) for c in chunks if len(c)]

    def bar_starts(self, ids) -> np.ndarray:
        """Positions (NB,) of the ids that open a bar, in model ids (T,) with or without BPE."""
        return np.flatnonzero(self.bars_in[np.asarray(ids, dtype=np.int64)] > 0)

    def bar_index(self, ids) -> np.ndarray:
        """The bar of each id (T,): 0 for the first bar (and for ids before it), with or without BPE."""
        opened = np.cumsum(self.bars_in[np.asarray(ids, dtype=np.int64)])
        return np.maximum(opened - 1, 0)

    def count_bars(self, ids) -> int:
        """How many bars the ids (T,) open."""
        return int(self.bars_in[np.asarray(ids, dtype=np.int64)].sum())

    def bar_opening_ids(self) -> np.ndarray:
        """Every id that opens a bar: ``[bar_id]`` without BPE, also each merge starting with ``Bar`` with it."""
        return np.flatnonzero(self.bars_in > 0)

    def count_notes(self, ids) -> int:
        """How many notes (``Pitch`` tokens) the ids (T,) hold."""
        return int(self.pitches_in[np.asarray(ids, dtype=np.int64)].sum())

    def meter(self, ids, *, default: str | None = "4/4") -> str | None:
        """The time signature (``"3/4"``) of a window (T,) starting at a ``Bar``: its first ``TimeSig`` among
        the first four base tokens (REMI writes it right after the ``Bar``); ``default`` when there is none."""
        for i in self.to_base(np.asarray(ids, dtype=np.int64)[:4])[:4].tolist():
            if self.base_kinds[i] == "TimeSig":
                return str(self.base_values[i])
        return default

    # ---- transposition (base ids only) ----------------------------------------------------

    def allowed_shifts(self, ids, low: int, high: int) -> tuple[int, int]:
        """The sub-range of semitone shifts [low, high] that keeps every pitch of base ids (T,) in the
        vocabulary's range ((0, 0) without pitches; low > high when none does)."""
        pitches = self._pitches(ids)
        if len(pitches) == 0:
            return 0, 0
        lo, hi = np.flatnonzero(self._pitch_id >= 0)[[0, -1]].tolist()
        return max(low, lo - int(pitches.min())), min(high, hi - int(pitches.max()))

    def shift_pitches(self, ids, semitones: int, *, fold: bool = False) -> np.ndarray:
        """Base ids (T,) with every ``Pitch`` moved by ``semitones`` (which must be allowed, unless ``fold``: then a
        pitch that would leave the range moves by octaves back into it)."""
        ids = np.asarray(ids, dtype=np.int64)
        self._pitches(ids)  # refuses BPE ids
        if semitones == 0:
            return ids
        pitches = self.pitch_of[ids]
        moved = pitches + semitones
        if fold:
            lo, hi = np.flatnonzero(self._pitch_id >= 0)[[0, -1]].tolist()
            moved = np.where(pitches >= 0, np.where(moved < lo, moved + 12 * -(-(lo - moved) // 12), moved), moved)
            moved = np.where(pitches >= 0, np.where(moved > hi, moved - 12 * -(-(moved - hi) // 12), moved), moved)
        out = ids.copy()
        out[pitches >= 0] = self._pitch_id[moved[pitches >= 0]]
        return out

    def _pitches(self, ids) -> np.ndarray:
        if self.is_bpe:
            raise ValueError("transposition needs base ids: with BPE one id stands for several tokens")
        pitches = self.pitch_of[np.asarray(ids, dtype=np.int64)]
        return pitches[pitches >= 0]

    # ---- grammar --------------------------------------------------------------------------

    def grammar_kind(self, token: str) -> str:
        """A base token's kind in the grammar: its kind, except the drum program (a kind of its own)."""
        return token if token == DRUM_PROGRAM else parse(token)[0]

    def next_kinds(self) -> dict[str, set[str]]:
        """The kinds that may follow a token of each grammar kind: miditok's ``tokens_types_graph``, tightened.

        - a sequence starts with ``Bar``; after EOS (and PAD, in rows already finished) only EOS;
        - PAD, BOS and MASK are never written; EOS only where a Bar could come too (the last note is complete);
        - ``TimeSig`` only right after ``Bar``, so each bar has one and its positions can be counted;
        - drum pitches only after ``Program_-1``, never an ordinary pitch after it (miditok's graph allows both,
          and ``multitrack: merge`` has no drums at all).
        """
        graph: dict[str, set[str]] = {}
        for kind, after in self.type_graph.items():
            if kind in SPECIAL_KINDS:
                continue
            after = {t for t in after if parse(t)[0] not in SPECIAL_KINDS} - {"PitchDrum"}
            if kind != "Bar":
                after.discard("TimeSig")
            graph[kind] = after | ({"EOS"} if "Bar" in after else set())
        if "Program" in graph and DRUM_PROGRAM in self._id:
            drums = "PitchDrum" in self.type_graph["Program"]
            graph[DRUM_PROGRAM] = {"PitchDrum"} if drums else set(graph["Program"])
        graph["BOS"] = {"Bar"}
        graph.update({name: {"EOS"} for name in ("EOS", "PAD", "MASK")})
        return graph

    def grammar_tables(self) -> GrammarTables:
        """The tables of the REMI grammar over base ids; ``ValueError`` under BPE."""
        if self.is_bpe:
            raise ValueError("constrained decoding needs base tokens: this tokenizer is BPE-trained "
                             "(one id stands for several tokens); generate with the base tokenizer")
        graph = self.next_kinds()
        kinds = sorted(graph)
        kind = np.array([kinds.index(self.grammar_kind(t)) for t in self.base_tokens])
        successors = np.array([[parse(t)[0] in graph[k] for t in self.base_tokens] for k in kinds])  # (K, V)
        meters = ["none", *self.meters]
        meter = np.array([meters.index(v) if k == "TimeSig" else 0 for k, v in zip(self.base_kinds, self.base_values)])
        per_beat = self.positions_per_beat
        meter_length = np.array([int(m.split("/")[0]) * per_beat if m != "none" else 4 * per_beat for m in meters])
        return GrammarTables(kinds, kind, successors, steps_to_close(graph), meters, meter, meter_length,
                             self._numbers("Position"), self._numbers("Pitch"), self.ascending_chords)


def steps_to_close(graph: dict[str, set[str]]) -> dict[str, int]:
    """Fewest tokens that must follow a token of each kind before EOS may be written (EOS not counted)."""
    steps = {kind: 0 for kind, after in graph.items() if "EOS" in after}
    for _ in range(len(graph)):  # Bellman-Ford relaxation; the graph has a dozen nodes
        for kind, after in graph.items():
            reachable = [steps[k] for k in graph if k in steps and parse(k)[0] in after]
            if reachable:
                steps[kind] = min(steps.get(kind, UNREACHABLE), 1 + min(reachable))
    return steps


def _pieces(tokenizer) -> list[tuple[int, ...]]:
    """(V,) the base ids each model id stands for; checks that base ids are the first model ids."""
    base = tokenizer.vocab
    if not tokenizer.is_trained:
        return [(i,) for i in range(len(base))]
    model, tokens_of = tokenizer._model, tokenizer._vocab_learned_bytes_to_tokens  # miditok's own BPE decoding
    pieces = [tuple(base[t] for t in tokens_of[model.id_to_token(i)]) for i in range(model.get_vocab_size())]
    if any(pieces[i] != (i,) for i in range(len(base))):
        raise ValueError("this BPE tokenizer renumbers the base tokens; midistruct needs them as its first ids")
    return pieces

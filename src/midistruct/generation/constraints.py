"""Grammar-constrained decoding: a ``LogitsProcessor`` under which a model can only write REMI that decodes.

``RemiGrammar`` sets to -inf, at every step, each next token that would make the sequence invalid: a token
type that may not follow the last one (miditok's own type graph), a position that goes back in time or falls
outside the bar's time signature, a note cut in half by EOS, a bar too many or too few, a special token::

    grammar = RemiGrammar(tokenizer, n_bars=4, max_new_tokens=400)
    ids = model.generate(**latents.codes(), logits_processor=LogitsProcessorList([grammar]),
                         do_sample=True, max_new_tokens=400)

The grammar itself (which kind may follow which, positions, meters) is the vocabulary's:
:meth:`midistruct.tokens.remi.RemiVocab.grammar_tables`; this module applies it to a batch of rows.

Each row's state is recomputed from the whole ``input_ids`` at every call with a fixed number of tensor
operations (no Python loop over rows, steps or the vocabulary), so nothing is carried between calls: beam
search may reorder rows and one instance may serve several ``generate`` calls.

Shape letters: B rows, T tokens so far (prompt included), V vocabulary size, K token kinds, M meters (the
time signatures, after "none" for a bar without one), P the largest Position value, S spare-token counts.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from transformers import LogitsProcessor

from midistruct.tokens.remi import UNREACHABLE, GrammarTables, RemiVocab


class GrammarState(NamedTuple):
    """Where each row stands after its last token; every field is (B,) long."""

    kind: torch.Tensor  # index in ``RemiGrammar.kinds`` of the last token's kind
    bars: torch.Tensor  # Bar tokens so far
    position: torch.Tensor  # last Position value in the current bar, -1 before the bar's first
    meter: torch.Tensor  # index in ``RemiGrammar.meters`` of the current bar's TimeSig; 0: none (4/4)
    bar_length: torch.Tensor  # positions in the current bar: the meter's numerator * positions per beat
    top_pitch: torch.Tensor  # highest pitch already written at the current onset (since its Position), -1: none


class RemiGrammar(LogitsProcessor):
    """Masks every next token that would make a REMI sequence undecodable or malformed.

    Args:
        tokenizer: the miditok REMI tokenizer (base ids, no BPE) whose ids the model writes.
        n_bars: Bar tokens the whole sequence must hold (prompt included): EOS only once there are
            ``n_bars``, never a Bar after that. ``None``: any number, EOS wherever a bar may end.
        time_signature: ``"4/4"``-style; the only TimeSig written after each Bar. ``None``: any in the vocabulary.
            With a tokenizer that writes chords low to high without duplicates (``remove_duplicated_notes``,
            midistruct's ``tokenizer.sort_chords``, tracks merged), each pitch at an onset must be above the
            previous one, as in the training data (miditok counts a repeated pitch as an error).
        prompt_len: tokens in ``input_ids`` before the first generated one (BOS alone by default); only the
            budget below needs it (the state is read from the prompt too, so a prompt may stop mid-piece).
        max_new_tokens: the ``max_new_tokens`` given to ``generate``. With it, the grammar closes the piece in
            time: a token is allowed only if the tokens left still suffice to complete its note, write the
            missing bars and EOS. Without it, a generation cut by the length limit may end mid-note.

    Calling it on ``input_ids`` (B, T) and ``scores`` (B, V) returns the scores with forbidden tokens at -inf;
    ``allowed(input_ids)`` gives the (B, V) mask and ``state(input_ids)`` the per-row state behind it.
    Raises ``ValueError`` for a BPE-trained tokenizer, a non-REMI one, or a time signature outside its vocabulary.
    """

    def __init__(self, tokenizer, *, n_bars: int | None = None, time_signature: str | None = None,
                 prompt_len: int = 1, max_new_tokens: int | None = None):
        vocab = RemiVocab(tokenizer)
        tables = vocab.grammar_tables()  # refuses BPE
        if n_bars is not None and n_bars < 1:
            raise ValueError(f"n_bars must be >= 1, got {n_bars}")
        self.n_bars, self.prompt_len, self.max_new_tokens = n_bars, prompt_len, max_new_tokens
        self.bar_id, self.eos_id = vocab.bar_id, vocab.eos_id
        self.kinds, self.meters = tables.kinds, tables.meters
        self._kind, self._pitch = torch.as_tensor(tables.kind), torch.as_tensor(tables.pitch)  # (V,)
        self._ordered = tables.ascending_chords  # per-program order is not tracked
        self._set_successors(tables, vocab, time_signature=time_signature)
        self._set_time_tables(tables)
        self._set_budget(tables)

    def _set_successors(self, tables: GrammarTables, vocab: RemiVocab, *, time_signature: str | None) -> None:
        """``_successors[phase, k]``: (V,) the tokens that may follow kind k. Phase 0: fewer than ``n_bars`` bars,
        so no EOS yet (but finished rows keep theirs); phase 1: ``n_bars`` reached, so no more Bar. Every row of
        it allows something, so sampling never meets a row of -inf only."""
        successors = torch.as_tensor(tables.successors)  # (K, V)
        if time_signature is not None:
            others = vocab.ids_of("TimeSig")
            successors[:, others[others != vocab.time_signature_id(time_signature)]] = False
        self._successors = successors.repeat(2, 1, 1)  # (2, K, V)
        if self.n_bars is not None:
            ongoing = [k for k, kind in enumerate(self.kinds) if kind not in ("EOS", "PAD", "MASK")]
            self._successors[0, ongoing, self.eos_id] = False
            self._successors[1, :, self.bar_id] = False

    def _set_time_tables(self, tables: GrammarTables) -> None:
        """Per id its Position value (-1: not a Position) and meter (0: not a TimeSig); per meter the bar length
        in positions; ``_ahead[m, p + 1]``: (V,) every token but the Positions not strictly after p inside a
        bar of meter m."""
        self._position = torch.as_tensor(tables.position)  # (V,)
        self._meter = torch.as_tensor(tables.meter)  # (V,)
        self._meter_length = torch.as_tensor(tables.meter_length)  # (M,)
        after = self._position > torch.arange(-1, int(self._position.max()) + 1)[:, None]  # (P + 2, V), p = -1..P
        inside = self._position < self._meter_length[:, None]  # (M, V)
        self._ahead = (self._position < 0) | (after[None] & inside[:, None])  # (M, P + 2, V)

    def _set_budget(self, tables: GrammarTables) -> None:
        """``_budget[s + 1]``: (V,) the tokens after which ``s`` spare tokens suffice to finish, for s >= -1.

        Finishing after a token of kind k takes ``steps[k]`` tokens, then EOS, plus ``tokens_per_bar`` for
        each bar still missing; the spare ``s`` is what is left once the missing bars are paid for (the Bar
        token itself is one of them).
        """
        steps = tables.steps
        self.tokens_per_bar = 1 + steps["Bar"]  # Bar + TimeSig
        cost = {k: steps.get(k, UNREACHABLE) + 1 for k in self.kinds}
        cost["EOS"] = -1  # always affordable
        if self.n_bars is not None:
            cost["Bar"] -= self.tokens_per_bar  # it pays for one of the missing bars
        self._max_cost = max(c for c in cost.values() if c < UNREACHABLE)
        by_kind = torch.tensor([cost[k] for k in self.kinds])[self._kind]  # (V,)
        self._budget = by_kind <= torch.arange(-1, self._max_cost + 1)[:, None]  # (S, V)

    def _to(self, device: torch.device) -> None:
        if self._kind.device != device:
            for name in ("_kind", "_meter", "_position", "_pitch", "_meter_length", "_successors", "_ahead",
                         "_budget"):
                setattr(self, name, getattr(self, name).to(device))

    def state(self, input_ids: torch.Tensor) -> GrammarState:
        """Each row's state after its last token, from the whole sequence (B, T)."""
        self._to(input_ids.device)
        is_bar = input_ids == self.bar_id  # (B, T)
        opened = is_bar.cumsum(1)  # (B, T) bars opened up to each token
        bars = opened[:, -1]
        in_bar = opened == bars[:, None]  # (B, T) the current bar (all tokens before the first Bar, if none)
        position = torch.where(in_bar, self._position[input_ids], -1).amax(1)  # positions only increase in a bar
        meter = torch.where(in_bar, self._meter[input_ids], 0).amax(1)  # the bar's one TimeSig
        kind = self._kind[input_ids[:, -1]]
        step = torch.arange(input_ids.shape[1], device=input_ids.device)
        onset = torch.where(is_bar | (self._position[input_ids] >= 0), step, -1).amax(1)  # (B,) last Bar/Position
        top = torch.where(step > onset[:, None], self._pitch[input_ids], -1).amax(1)
        return GrammarState(kind, bars, position, meter, self._meter_length[meter], top)

    def allowed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, V) bool: the tokens each row (B, T) may write next; never none."""
        s = self.state(input_ids)
        phase = 0 if self.n_bars is None else (s.bars >= self.n_bars).long()
        ok = self._successors[phase, s.kind] & self._ahead[s.meter, s.position + 1]  # (B, V)
        if self._ordered:
            ok &= ~((self._pitch >= 0) & (self._pitch <= s.top_pitch[:, None]))  # chords low to high
        if self.max_new_tokens is not None:
            left = self.prompt_len + self.max_new_tokens - input_ids.shape[1] - 1  # tokens after this one
            ok = self._within_budget(ok, s, left=left)
        return ok

    def _within_budget(self, ok: torch.Tensor, s: GrammarState, *, left: int) -> torch.Tensor:
        """Keep the tokens after which ``left`` tokens suffice to finish; rows where none do keep ``ok``."""
        n_bars = self.n_bars or 0
        if left - self.tokens_per_bar * n_bars >= self._max_cost:
            return ok  # far from the end, whatever bars are missing: every token is affordable
        spare = left - self.tokens_per_bar * (n_bars - s.bars).clamp(min=0)  # (B,) once the missing bars are paid
        tight = ok & self._budget[spare.clamp(min=-1, max=self._max_cost) + 1]  # (B, V)
        return torch.where(tight.any(1, keepdim=True), tight, ok)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        ok = self.allowed(input_ids)  # (B, V)
        extra = scores.shape[-1] - ok.shape[-1]
        if extra < 0:
            raise ValueError(f"scores have {scores.shape[-1]} columns, the tokenizer {ok.shape[-1]} ids")
        if extra:  # a model vocabulary padded past the tokenizer's: those ids are never written
            ok = torch.cat([ok, ok.new_zeros(ok.shape[0], extra)], dim=1)
        return torch.where(ok, scores, float("-inf"))

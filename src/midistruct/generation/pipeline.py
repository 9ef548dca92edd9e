"""``MidiStruct``: a trained checkpoint as a music-in / music-out object.

    ms = MidiStruct.from_pretrained("runs/small/best")
    z = ms.encode("tune.mid")              # PieceLatents, window by window
    ms.decode(z).dump_midi("again.mid")    # symusic Score
    ms.interpolate("a.mid", "b.mid", steps=8)

A piece longer than one window is cut into consecutive windows of the model's bar
count (the last may be shorter); each window is encoded and decoded on its own and the
decoded windows are stitched back with their meters and the source's tempo.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from transformers import LogitsProcessorList

from midistruct.config import Config
from midistruct.errors import MidiStructError, MidiStructWarning
from midistruct.generation import attributes
from midistruct.generation.attributes import corpus_windows_with_pieces
from midistruct.generation.attributes import shift as shift_codes
from midistruct.generation.constraints import RemiGrammar
from midistruct.generation.interpolation import path
from midistruct.generation.latents import PieceLatents
from midistruct.model.checkpoint import load_checkpoint, readable_shards
from midistruct.model.pretrained import resolve
from midistruct.model.prior import CodePrior, PriorError, load_prior
from midistruct.shards.dataset import BOS_ID, window_batch
from midistruct.tags import BAR_TAGS, CONDITIONING_TAGS, TAGS, TagError, known, parse_key, window_tags
from midistruct.tokens.downbeat import AUTO
from midistruct.tokens.encode import PieceEncoder
from midistruct.tokens.key import (CANONICAL_TONIC, canonical_key_of, fitted_shift, fitting_shifts, key_of, nearer_move,
                                   to_canonical)
from midistruct.tokens.segment import bar_start_ticks, cut_windows
from midistruct.tokens.tokenizer import decode_ids, strip_special
from midistruct.tokens.validate import Skip, load_score

# Generation budget per bar: the model's average, (max_positions - 1) / max_bars (training windows hold at
# most segments.max_tokens tokens over segments.bars bars), but at least MIN_TOKENS_PER_BAR so a dense bar
# in a short window (a continuation, a one-bar sample) of a sparse model is not cut. 160 is 1.25 x the
# 128 tokens per bar of most shipped configs and was the fixed budget before it was derived; _generate
# still caps every call at max_positions.
MIN_TOKENS_PER_BAR = 160
# A meter that fewer than this share of the model's training windows were in (MidiStruct.training_meters) is
# likely a file's wrong declaration (POP909's 2/4 songs are 4/4 music); the music then comes back sparse.
RARE_METER = 0.01
# how a user gives a file's meter, named by that warning: (command-line option, Python keyword)
METER_OPTION = ("--time-signature", "time_signature")


class InputError(MidiStructError, ValueError):
    """The music given cannot be used (missing, not MIDI, no notes, too short); one-line message."""


class BlockError(MidiStructError, ValueError):
    """The model has no such functional block (issue 19); one line saying which it has."""


class MidiStruct:
    """Encode, decode, reconstruct and interpolate MIDI with one checkpoint.

    ``model`` is the neural autoencoder (its own ``model.encoder`` is the transformer encoder);
    ``piece_encoder`` is the tokenizer side (:class:`~midistruct.tokens.encode.PieceEncoder`: MIDI -> ids).
    """

    def __init__(self, model, tokenizer, meta: dict, *, device: str | torch.device = "cpu", prior=None):
        self.model, self.tokenizer, self.meta = model.eval(), tokenizer, meta
        self.device = torch.device(device)
        self.cfg = Config.model_validate(meta["run_config"])
        self.cfg.validation.min_notes = 1  # a training filter; any piece with a note can be encoded
        self.piece_encoder = PieceEncoder(self.cfg, tokenizer)
        self.vocab = self.piece_encoder.vocab  # the token vocabulary: bars, meters, BPE
        self.bars = self.cfg.segments.bars
        self.canonical = self.cfg.augment.key == "canonical"  # reads every piece in C major / A minor (issue 14)
        self.prior = None  # a fitted CodePrior for sampling (midistruct.model.prior), when the checkpoint has one
        self.name: str | None = None  # the checkpoint as the user gave it (from_pretrained), for messages
        if prior is not None:
            self.set_prior(prior)

    @classmethod
    def from_pretrained(cls, folder: str | Path, *, device: str | torch.device = "cpu") -> MidiStruct:
        """Load a checkpoint folder (``runs/<name>/best``) or a shipped model by name (``midistruct models``)
        in one call, the model in float32 on ``device``."""
        given, folder = str(folder), resolve(folder)
        model, tokenizer, meta = load_checkpoint(folder, device=device)
        try:
            prior = load_prior(folder)
        except PriorError as err:
            raise InputError(str(err)) from None
        ms = cls(model, tokenizer, meta, device=device, prior=prior)
        ms.name = given
        return ms

    # ---- MIDI -> windows -> latents -------------------------------------------------------

    def load(self, midi) -> "symusic.Score":  # noqa: F821
        """A symusic Score from a path or a Score; errors become :class:`InputError`."""
        if not isinstance(midi, (str, Path)):
            return midi
        if not (Path(midi).exists() or Path(midi).is_symlink()):  # folders and broken links get their own reason
            raise InputError(f"{midi}: no such file")
        try:
            return load_score(Path(midi))
        except Skip as skip:
            raise InputError(f"{midi}: {skip}") from None

    def windows(self, midi, *, time_signature: str | None = None, downbeat: float | str | None = None,
                name: str | None = None, drop_long: bool = False,
                meter_option: tuple[str, str] = METER_OPTION) -> list[np.ndarray]:
        """Consecutive windows of the model's bar count covering the piece (last may be shorter), in the
        model's ids (BPE applied bar by bar, as in the shards).

        ``time_signature`` ("4/4") replaces the file's meters and ``downbeat`` (seconds) is a bar line: the music
        moves by less than a bar so that a bar starts there (what prepare does with POP909's annotations), for
        files whose own bar lines are wrong; ``"auto"`` estimates where from the notes, in that meter
        (:mod:`midistruct.tokens.downbeat`).

        ``name`` labels a Score in error messages (a path names itself). A window with more tokens than the
        model reads is an :class:`InputError`, or with ``drop_long`` left out (an error only if all are).
        ``meter_option``: how the user gives this file's meter, (command-line option, Python keyword), named by the
        rare-meter warning (:meth:`warn_rare_meters`).
        """
        name = name or _name(midi)
        _check_downbeat(downbeat)
        try:
            ids = self.piece_encoder.tokenize(self.load(midi), time_signature=time_signature, downbeat=downbeat)
        except Skip as skip:
            raise _unusable(name, skip, meter_option) from None
        starts = self.vocab.bar_starts(ids)
        if len(starts) == 0:
            raise InputError(f"{name}: no bars")
        full = cut_windows(starts, len(ids), bars=self.bars, step=self.bars)
        out = [ids[w.start : w.end] for w in full]
        covered = len(full) * self.bars
        if covered < len(starts):  # the tail, shorter than a window
            out.append(ids[starts[covered] :])
        out = [self.vocab.from_base(window)[0] for window in out]
        if time_signature is None:
            self.warn_rare_meters(out, name=name, option=meter_option)
        longest = self.model.config.max_positions - 1  # EOS takes a position
        for k, window in enumerate(out):
            if len(window) > longest and not (drop_long and any(len(w) <= longest for w in out)):
                raise InputError(f"{name}: window {k} (bars {k * self.bars + 1}-{(k + 1) * self.bars}) has "
                                 f"{len(window)} tokens; this model reads at most {longest} per window (the music "
                                 "is too dense for it)")
        return [w for w in out if len(w) <= longest]

    def training_meters(self) -> dict[str, int]:
        """Training windows per meter: counted by the trainer (``meters`` in ``midistruct.json``), else by the
        code prior's tags (checkpoints from before the trainer counted them); {} when neither did."""
        if self.meta.get("meters"):
            return dict(self.meta["meters"])
        return self.prior.meter_counts() if self.prior is not None else {}

    def warn_rare_meters(self, windows: list[np.ndarray], *, name: str,
                         option: tuple[str, str] = METER_OPTION) -> None:
        """A :class:`~midistruct.errors.MidiStructWarning` when some of ``windows`` are in a meter under
        :data:`RARE_METER` of the model's training windows (:meth:`training_meters`; nothing is said when they
        are not known): the model has hardly seen such bars and decodes them poorly."""
        trained = self.training_meters()
        total = sum(trained.values())
        if not total:
            return
        meters = [self.vocab.meter(w) for w in windows]
        rare = sorted({m for m in meters if trained.get(m, 0) < RARE_METER * total}, key=meters.index)
        if not rare:
            return
        usual = sorted(trained, key=trained.get, reverse=True)
        seen = ", ".join(f"{m} in {sum(x == m for x in meters)} of its {len(meters)} windows "
                         f"({100 * trained.get(m, 0) / total:.1f} % of the model's training windows)" for m in rare)
        learnt = ", ".join(f"{m} ({100 * trained[m] / total:.0f} %)" for m in usual[:3])
        # one meter most of the training was in is the likely truth; with several, only the user knows
        meter = usual[0] if trained[usual[0]] >= 0.8 * total else None
        flag, keyword = option
        remedy = (f"If the file's bars are really {meter} bars, give the meter: {flag} {meter} "
                  f"({keyword}={meter!r} in Python)" if meter else
                  f"If its bars are in another meter, give it: {flag} N/D ({keyword}='N/D' in Python)")
        warnings.warn(f"{name}: {seen}; this model learnt mostly {learnt} and decodes rare meters poorly. {remedy}",
                      MidiStructWarning, stacklevel=3)

    def encode(self, midi, *, sample: bool = False, max_windows: int | None = None,
               time_signature: str | None = None, downbeat: float | str | None = None,
               drop_long: bool = False, name: str | None = None,
               meter_option: tuple[str, str] = METER_OPTION, tags: dict[str, str] | None = None) -> PieceLatents:
        """Latents of a piece: posterior means, or samples with ``sample=True``.

        ``time_signature`` ("4/4") overrides the file's meters, as POP909's phrase labels require; ``downbeat``
        (seconds) puts a bar line there (see :meth:`windows`).
        ``drop_long`` leaves out windows too dense for the model instead of refusing the piece (the latents
        then cover only the other windows: for a piece's summary, not for decoding it back).
        ``name`` labels the piece in errors and warnings (default: its path; a Score given has none);
        ``meter_option`` as in :meth:`windows`. A ``tonic`` or ``key`` in ``tags`` first transposes the notes to that
        tonic (:meth:`transposed`); other tags are left to :meth:`retag`.
        """
        score = self.load(midi)
        windows = self.windows(score, time_signature=time_signature, downbeat=downbeat, name=name or _name(midi),
                               drop_long=drop_long, meter_option=meter_option)
        if tags:
            windows = self.transposed(windows, tags)[0]
        latents = self.encode_windows(windows[:max_windows], sample=sample)
        latents.tempo = _tempo_of(score)
        return latents

    @torch.no_grad()
    def encode_windows(self, windows: list[np.ndarray], *, sample: bool = False, batch_size: int = 64,
                       shifts: list[int] | None = None) -> PieceLatents:
        """Latents of token windows (each starting at a bar, without BOS/EOS), in batches.

        A model that reads pieces in a canonical key (``augment.key: canonical``) first moves the windows there:
        by ``shifts`` (W,) when given (each window's piece's, e.g. :func:`midistruct.shards.dataset.piece_shifts`),
        else all by the key heard in all of them (they are one piece); the latents keep the shifts, and decoding
        undoes them. Other models ignore ``shifts``."""
        return self._encode_windows(windows, sample=sample, batch_size=batch_size, shifts=shifts)[0]

    @torch.no_grad()
    def _encode_windows(self, windows: list[np.ndarray], *, sample: bool = False, batch_size: int = 64,
                        shifts: list[int] | None = None,
                        variance: bool = False) -> tuple[PieceLatents, tuple[torch.Tensor, torch.Tensor] | None]:
        """:meth:`encode_windows`, and with ``variance`` a VAE's posterior variances ``(W, NB, Zb)``, ``(W, Zs)``
        from the same encoder pass (else None)."""
        windows, moved = self.to_model_key(windows, shifts)
        z_bar, z_segment, spread = [], [], []
        for start in range(0, len(windows), batch_size):
            chunk = windows[start : start + batch_size]
            batch = window_batch(chunk, self.vocab, **self.model.config.view_options())
            latents = self.model.encode_batch({k: v.to(self.device) for k, v in batch.items()}, sample=sample)
            codes = latents.z_bar
            if codes is None:  # a segment-only model: bar codes of width 0 keep every PieceLatents operation uniform
                codes = latents.z_segment.new_zeros(len(chunk), int(batch["bar_ids"].max()) + 1, 0)
            z_bar.append(codes.float().cpu())
            z_segment.append(latents.z_segment.float().cpu())
            if variance:
                bars = codes.new_ones(codes.shape) if latents.logvar_bar is None else latents.logvar_bar.exp()
                spread.append((bars.float().cpu(), latents.logvar_segment.exp().float().cpu()))
        width = max(z.shape[1] for z in z_bar)  # batches may hold fewer bars

        def pad(z):
            return torch.nn.functional.pad(z, (0, 0, 0, width - z.shape[1]))

        out = PieceLatents(z_bar=torch.cat([pad(z) for z in z_bar]), z_segment=torch.cat(z_segment),
                           bars=[self.vocab.count_bars(w) for w in windows],
                           time_signatures=[self.vocab.meter(w) for w in windows], shifts=moved)
        if not variance:
            return out, None
        return out, (torch.cat([pad(b) for b, _ in spread]), torch.cat([v for _, v in spread]))

    def to_model_key(self, windows: list[np.ndarray], shifts: list[int] | None = None) -> tuple[list[np.ndarray], list[int]]:
        """The windows as the model reads them and the shift applied to each (see :meth:`encode_windows`);
        ``(windows, [])`` for a model that reads pitches as written."""
        if not self.canonical:
            return windows, []
        base = [self.vocab.to_base(w) for w in windows]
        if shifts is None:
            moved, shift = to_canonical(base, self.vocab)
            return moved, [shift] * len(base)
        fitted = [fitted_shift([w], int(s), self.vocab) for w, s in zip(base, shifts)]
        return [self.vocab.shift_pitches(w, s) for w, s in zip(base, fitted)], fitted

    def own_key_shifts(self, windows: list[np.ndarray]) -> list[int] | None:
        """Each window's shift to the canonical key by the key heard in that window alone: for windows of pieces
        not at hand (held-out pairs, judged windows); None for a model that reads pitches as written."""
        if not self.canonical:
            return None
        return [self.to_model_key([w])[1][0] for w in windows]

    def from_model_key(self, ids: list[int], shift: int) -> list[int]:
        """Decoded ids moved back by ``-shift`` (a note that would leave the range moves by an octave more)."""
        if not shift:
            return ids
        return self.vocab.shift_pitches(self.vocab.to_base(ids), -int(shift), fold=True).tolist()

    # ---- latents -> tokens -> MIDI ---------------------------------------------------------

    @torch.no_grad()
    def generate_tokens(self, latents: PieceLatents, *, temperature: float = 0.0, top_p: float = 1.0,
                        seed: int | None = None, max_tokens_per_bar: int | None = None,
                        batch_size: int = 64) -> list[list[int]]:
        """Token ids (without BOS/EOS) of every window, decoded from its codes.

        Greedy at ``temperature=0``, else nucleus sampling. Windows are generated in batches
        of equal bar count and meter (at most ``batch_size`` at a time), under the REMI grammar
        (every output decodes), within ``max_tokens_per_bar`` per bar (default :meth:`tokens_per_bar`); a model
        whose decoder reads tags reads ``latents.tags`` with every window.
        """
        max_tokens_per_bar = max_tokens_per_bar or self.tokens_per_bar()
        if seed is not None:
            torch.manual_seed(seed)
        groups: dict[tuple[int, str], list[int]] = {}
        for w, key in enumerate(zip(latents.bars, latents.time_signatures or ["4/4"] * len(latents))):
            groups.setdefault(key, []).append(w)
        out: list[list[int]] = [[] for _ in range(len(latents))]
        chunks = [(key, rows[i : i + batch_size]) for key, rows in groups.items()
                  for i in range(0, len(rows), batch_size)]
        for (bars, meter), rows in chunks:
            idx = torch.tensor(rows)
            tokens = self._generate(latents.z_bar[idx], latents.z_segment[idx], bars=bars, meter=meter,
                                    temperature=temperature, top_p=top_p, max_new=bars * max_tokens_per_bar,
                                    tags=latents.tags)
            for row, ids in zip(rows, tokens):
                out[row] = ids
        if latents.shifts:
            out = [self.from_model_key(ids, shift) for ids, shift in zip(out, latents.shifts)]
        return out

    def tokens_per_bar(self) -> int:
        """The generation budget per bar (see ``MIN_TOKENS_PER_BAR``)."""
        cfg = self.model.config
        return max(MIN_TOKENS_PER_BAR, -(-(cfg.max_positions - 1) // cfg.max_bars))

    def _generate(self, z_bar, z_segment, *, bars: int, meter: str | None, temperature: float, top_p: float,
                  max_new: int, prompt: torch.Tensor | None = None, tags: dict[str, str] | None = None
                  ) -> list[list[int]]:
        tag_ids = self.decoder_tag_ids(tags or {})
        return generate_windows(self.model, self.tokenizer, z_bar=z_bar, z_segment=z_segment, bars=bars,
                                meter=meter, temperature=temperature, top_p=top_p, max_new=max_new, prompt=prompt,
                                tag_ids=None if tag_ids is None else tag_ids.expand(len(z_segment), -1))

    def decoder_tag_ids(self, tags: dict[str, str]) -> torch.Tensor | None:
        """(1, G) the value index of each of the model's decoder tags (``decoder_tags``, issue 18 item 2) in
        ``tags`` ({name: value}; 0 for a tag not given; other names are not the decoder's); None for a model whose
        decoder reads no tags. :class:`InputError` for a value the decoder does not know, listing those it does."""
        known = self.model.config.decoder_tags
        if not known:
            return None
        ids = []
        for name, values in known.items():
            try:
                ids.append(self.model.config.tag_index(name, tags.get(name)))
            except KeyError:
                raise InputError(f"this model's decoder knows no {name} {tags[name]!r}; its values: "
                                 f"{', '.join(values)}") from None
        return torch.tensor([ids], dtype=torch.long)

    def decode(self, latents: PieceLatents, **kw) -> "symusic.Score":  # noqa: F821
        """A symusic Score from latents: every window decoded and stitched (see ``generate_tokens``)."""
        return self.stitch(self.generate_tokens(latents, **kw), tempo=latents.tempo)

    def stitch(self, windows: list[list[int]], *, tempo: float = 120.0) -> "symusic.Score":  # noqa: F821
        """Decode windows and lay them end to end, each starting where the previous one's bars end."""
        import symusic

        out, offset, tracks = None, 0, {}
        for ids in windows:
            part = decode_ids(self.tokenizer, ids)
            out = out or symusic.Score(part.tpq)
            n_bars = max(self.vocab.count_bars(ids), 1)
            for ts in part.time_signatures:
                out.time_signatures.append(symusic.TimeSignature(ts.time + offset, ts.numerator, ts.denominator))
            for track in part.tracks:
                key = (track.program, track.is_drum)
                if key not in tracks:
                    tracks[key] = symusic.Track(name=track.name, program=track.program, is_drum=track.is_drum)
                tracks[key].notes.extend(track.shift_time(offset).notes)
            offset += int(bar_start_ticks(part.time_signatures, part.tpq, n_bars + 1)[-1])
        if out is None:
            raise InputError("nothing to decode")
        out.tempos.append(symusic.Tempo(0, tempo))
        out.tracks = list(tracks.values())
        return out

    def reconstruct(self, midi, *, vectors=None, shift: dict[str, float] | None = None,
                    tags: dict[str, str] | None = None, tag_strength: float = 1.0, time_signature: str | None = None,
                    downbeat: float | str | None = None, **kw) -> "symusic.Score":  # noqa: F821
        """Encode then decode a piece (posterior mean, greedy unless ``temperature`` is given),
        optionally moved along attribute ``vectors`` by ``shift`` ({name: amount}) and to ``tags``
        ({name: value}, :meth:`retag`) in between. ``time_signature`` and ``downbeat`` place the bar lines
        (:meth:`windows`)."""
        self._check_tags(tags or {})
        score = self.load(midi)
        windows = self.windows(score, time_signature=time_signature, downbeat=downbeat, name=_name(midi))
        windows, tags = self.transposed(windows, tags or {})  # a tonic by transposing the notes, not the codes
        z = self.encode_windows(windows)
        z.tempo = _tempo_of(score)
        z = self.retag(z, tags, strength=tag_strength)
        if shift:
            z = shift_codes(z, vectors, shift)
        return self.decode(z, **kw)

    def blocks(self) -> dict[str, slice]:
        """The functional blocks of this model's bar codes (``{"content": ..., "arrangement": ...}``, issue 19)."""
        return self.model.config.block_slices()

    def transfer(self, content, *, arrangement_from=None, performance_from=None, content_placing: dict | None = None,
                 arrangement_placing: dict | None = None, performance_placing: dict | None = None,
                 **kw) -> "symusic.Score":  # noqa: F821
        """``content``'s melody and harmony played with ``arrangement_from``'s arrangement and/or
        ``performance_from``'s performance (issue 19): the pieces are encoded, those blocks of every bar code of
        ``content`` are replaced by the other pieces' (window by window, bar by bar; a shorter source is repeated),
        and the result is decoded (greedy unless ``temperature`` is given). ``*_placing``: ``time_signature`` /
        ``downbeat`` of each file (:meth:`windows`). A block the model lacks is a :class:`BlockError`."""
        sources = {"arrangement": (arrangement_from, arrangement_placing),
                   "performance": (performance_from, performance_placing)}
        sources = {name: given for name, given in sources.items() if given[0] is not None}
        if not sources:
            raise BlockError("transfer needs an arrangement_from or a performance_from piece")
        blocks = self.blocks()
        for name in sources:
            if name not in blocks:
                raise BlockError(f"this model has no {name} block (its bar codes hold: {', '.join(blocks)}); train one "
                                 f"with model.{name}_dim > 0 (configs/pop909-blocks-views-4bar.yaml, "
                                 "configs/pop909-performance-views-4bar.yaml)")
        z = self.encode(content, **(content_placing or {}))
        for name, (piece, placing) in sources.items():
            # each source's meter is its own option (``transfer --performance-time-signature``)
            option = (f"--{name}-time-signature", f"{name}_placing['time_signature']")
            z = z.with_block(self.encode(piece, meter_option=option, **(placing or {})), blocks[name])
        return self.decode(z, **kw)

    def interpolate(self, a, b, steps: int = 8, *, method: str = "slerp", tags: dict[str, str] | None = None,
                    tag_strength: float = 1.0, time_signature: str | None = None, downbeat: float | str | None = None,
                    snap: bool = False, **kw) -> list["symusic.Score"]:  # noqa: F821
        """``steps`` pieces from ``a`` to ``b`` (endpoints included), interpolating bar and segment codes.

        Both are cut to the same number of windows (the shorter piece's) and bars per window;
        each step takes the meters and tempo of the nearer endpoint (A's up to the middle).
        ``tags`` moves both ends to those tag values first (:meth:`retag`). ``time_signature`` and ``downbeat``
        place both pieces' bar lines (:meth:`windows`). ``snap`` moves each inner step's bar codes to the nearest
        real bars' in the code prior's bank (:meth:`snap_bars`): the path then passes through bars the decoder
        knows, which a plain LM finds as likely as the ends (docs/RESULTS.md "Interpolants a language model
        believes"); the ends stay exact.
        """
        if snap:
            self._check_bank()
        self._check_tags(tags or {})
        placing = {"time_signature": time_signature, "downbeat": downbeat}
        keyed = tags if self.canonical else None  # a canonical model reaches a tonic by transposing both pieces
        za, zb = (self.retag(z, tags or {}, strength=tag_strength) for z in self._aligned([a, b], tags=keyed,
                                                                                           **placing))
        bars_path = path(za.z_bar, zb.z_bar, steps, method=method)
        seg_path = path(za.z_segment, zb.z_segment, steps, method=method)
        # each step keeps the meters and tempo of the nearer endpoint, so B's end decodes as B does
        nearer = [za if 2 * i < steps - 1 else zb for i in range(steps)]
        latents = [z.with_codes(zbar, zseg) for z, zbar, zseg in zip(nearer, bars_path, seg_path)]
        if snap:
            latents = [latents[0], *(self.snap_bars(z) for z in latents[1:-1]), latents[-1]]
        return self.decode_many(latents, **kw)

    def _check_bank(self) -> None:
        if self.prior is None or self.prior.bank is None:
            raise InputError("snapping needs a code prior with a bank of real bar codes; fit one with "
                             "`midistruct prior CHECKPOINT --bank 3000`")

    def snap_bars(self, latents: PieceLatents) -> PieceLatents:
        """``latents`` with each window's bar codes moved to the nearest of the prior's bank bars in the window's
        meter (all bank bars where fewer than ``MIN_BANK`` are in it), as ``sample`` places its bars."""
        self._check_bank()
        meters = latents.time_signatures or [None] * len(latents)
        z_bar = torch.cat([self.prior.snap(latents.z_bar[i : i + 1], {"meter": meter} if meter else None)
                           for i, meter in enumerate(meters)])
        return latents.with_codes(z_bar, latents.z_segment)

    def bridge(self, a, b, *, windows: int = 1, method: str = "slerp", **kw) -> "symusic.Score":  # noqa: F821
        """``windows`` new windows leading from the end of ``a`` to the start of ``b``: their codes lie on the path
        from ``a``'s last window's codes to ``b``'s first window's, endpoints left out (a medley's join). Full
        windows of the model's bars, in ``a``'s last meter before the middle and ``b``'s first after it."""
        if windows < 1:
            raise InputError(f"a bridge needs at least 1 window, got {windows}")
        za, zb = self.encode(a), self.encode(b)
        end, start = za.window(len(za) - 1), zb.window(0)
        width = max(end.z_bar.shape[1], start.z_bar.shape[1])  # a last window may hold fewer bars

        def pad(z):
            return torch.nn.functional.pad(z, (0, 0, 0, width - z.shape[1]))

        bars = path(pad(end.z_bar), pad(start.z_bar), windows + 2, method=method)[1:-1]
        segments = path(end.z_segment, start.z_segment, windows + 2, method=method)[1:-1]
        meters = [end.time_signatures[-1] if 2 * i < windows else start.time_signatures[0] for i in range(windows)]
        shifts = [end.window_shifts()[-1] if 2 * i < windows else start.window_shifts()[0] for i in range(windows)]
        latents = PieceLatents(torch.cat(bars), torch.cat(segments), [width] * windows, meters, za.tempo,
                               shifts if self.canonical else [])
        return self.decode(latents, **kw)

    def decode_many(self, latents: list[PieceLatents], **kw) -> list["symusic.Score"]:  # noqa: F821
        """``decode`` of several pieces, their windows generated together in batches (much faster
        than one ``decode`` each: an 8-step interpolation is one ``generate`` call per window shape)."""
        width = max(z.z_bar.shape[1] for z in latents)  # pieces may hold fewer bars per window
        z_bar = [torch.nn.functional.pad(z.z_bar, (0, 0, 0, width - z.z_bar.shape[1])) for z in latents]
        joined = PieceLatents(torch.cat(z_bar), torch.cat([z.z_segment for z in latents]),
                              [b for z in latents for b in z.bars],
                              [t for z in latents for t in (z.time_signatures or ["4/4"] * len(z))],
                              shifts=[s for z in latents for s in z.window_shifts()], tags=latents[0].tags)
        tokens = self.generate_tokens(joined, **kw)
        out, start = [], 0
        for z in latents:
            out.append(self.stitch(tokens[start : start + len(z)], tempo=z.tempo))
            start += len(z)
        return out

    def grid(self, corners: list, steps: int = 5, *, method: str = "slerp", **kw) -> list[list["symusic.Score"]]:  # noqa: F821
        """A ``steps`` x ``steps`` grid between four pieces [top-left, top-right, bottom-left, bottom-right]
        (magenta.js's 4-corner interpolation): each column interpolates between the top and bottom edges."""
        if len(corners) != 4:
            raise InputError(f"a grid needs 4 corner pieces, got {len(corners)}")
        tl, tr, bl, br = self._aligned(corners)
        edges = {}
        for name, (x, y) in {"top": (tl, tr), "bottom": (bl, br)}.items():
            edges[name] = list(zip(path(x.z_bar, y.z_bar, steps, method=method),
                                   path(x.z_segment, y.z_segment, steps, method=method)))
        cells: dict[tuple[int, int], PieceLatents] = {}
        for col, ((tb, ts), (bb, bs)) in enumerate(zip(edges["top"], edges["bottom"])):
            for row, (zb, zs) in enumerate(zip(path(tb, bb, steps, method=method), path(ts, bs, steps, method=method))):
                corner = (tl, tr, bl, br)[2 * (2 * row >= steps - 1) + (2 * col >= steps - 1)]  # the nearest
                cells[row, col] = corner.with_codes(zb, zs)
        scores = dict(zip(cells, self.decode_many(list(cells.values()), **kw)))
        return [[scores[row, col] for col in range(steps)] for row in range(steps)]

    def _aligned(self, pieces: list, *, tags: dict[str, str] | None = None, **placing) -> list[PieceLatents]:
        """Latents of several pieces cut to a common number of windows and bars per window
        (a piece shorter than one window cuts the others to its bars); ``placing``: :meth:`encode`'s
        ``time_signature`` / ``downbeat``, for every piece; ``tags``: a tonic to transpose every piece to."""
        zs, errors = [], []
        for piece in pieces:  # every bad piece is named, not only the first
            try:
                zs.append(self.encode(piece, tags=tags, **placing))
            except InputError as err:
                errors.append(str(err))
        if errors:
            raise InputError("; ".join(errors))
        n = min(len(z) for z in zs)
        bars = [min(col) for col in zip(*(z.bars[:n] for z in zs))]
        return [PieceLatents(z.z_bar[:n, : max(bars)], z.z_segment[:n], list(bars), z.time_signatures[:n], z.tempo,
                             z.shifts[:n]) for z in zs]

    def continue_(self, primer, bars: int, *, temperature: float = 1.0, top_p: float = 1.0,
                  latent: PieceLatents | None = None, seed: int | None = None, tags: dict[str, str] | None = None,
                  tag_strength: float = 1.0, time_signature: str | None = None,
                  downbeat: float | str | None = None) -> "symusic.Score":  # noqa: F821
        """The primer followed by ``bars`` new bars.

        The decoder reads the last bars of the music so far as its prompt (half a window) and
        writes the rest of the window, round after round. Its codes come from ``latent``
        (another piece's ``encode``: the Transformer Autoencoder's style conditioning; its first
        window), else from the primer's own last window, moved to ``tags`` (:meth:`retag`) when given.
        The result keeps the primer's tempo.
        """
        self._check_tags(tags or {})
        if bars < 1:
            raise InputError(f"bars must be >= 1, got {bars}")
        if seed is not None:
            torch.manual_seed(seed)
        placing = {"time_signature": time_signature, "downbeat": downbeat}
        try:
            ids = self.vocab.from_base(self.piece_encoder.tokenize(self.load(primer), **placing))[0]
        except Skip as skip:
            raise _unusable(_name(primer), skip, METER_OPTION) from None
        if self.canonical and tags:  # a canonical model reaches a tonic by transposing the primer (as reconstruct)
            ids = self.transposed([ids], tags)[0][0]
        style = latent if latent is not None else self.encode(primer, tags=tags if self.canonical else None, **placing)
        style = style.window(len(style) - 1) if latent is None else style.window(0)
        style = self.retag(style, tags or {}, strength=tag_strength)
        meter = self.vocab.meter(ids[self.vocab.bar_starts(ids)[-1]:])
        moved, shift = self.to_model_key([ids])  # a canonical model continues the primer in its canonical key
        ids, shift = moved[0], (shift or [0])[0]
        remaining = bars
        while remaining > 0:
            ids, written = self._continue_round(ids, style, remaining, meter=meter, temperature=temperature, top_p=top_p)
            remaining -= written
        score = self.load(primer)
        return self.stitch([self.from_model_key(ids.tolist(), shift)], tempo=_tempo_of(score))

    def _continue_round(self, ids: np.ndarray, style: PieceLatents, remaining: int, *, meter: str,
                        temperature: float, top_p: float) -> tuple[np.ndarray, int]:
        """One window: prompt with the last bars of ``ids``, generate up to ``remaining`` more bars."""
        starts = self.vocab.bar_starts(ids)
        context = min(len(starts), max(1, self.bars // 2), self.bars - 1) if self.bars > 1 else 0
        new = min(remaining, self.bars - context)
        prompt_ids = ids[starts[len(starts) - context]:] if context else ids[:0]
        prompt = torch.tensor([[BOS_ID, *prompt_ids.tolist()]], device=self.device)
        z_bar = style.z_bar[:, : context + new]
        rows = self._generate(z_bar, style.z_segment, bars=context + new, meter=meter, temperature=temperature,
                              top_p=top_p, max_new=new * self.tokens_per_bar(), prompt=prompt, tags=style.tags)
        generated = np.asarray(rows[0][len(prompt_ids):], dtype=np.int64)
        return np.concatenate([ids, generated]), new

    def sample(self, n: int = 1, *, bars: int | None = None, temperature: float = 1.0, meter: str | None = None,
               top_p: float = 1.0, seed: int | None = None, vectors=None, shift: dict[str, float] | None = None,
               prior_scale: float = 1.0, tags: dict[str, str] | None = None,
               tag_strength: float = 1.0, snap: bool = True, tries: int = 1) -> list["symusic.Score"]:  # noqa: F821
        """``n`` pieces of one window each, from codes drawn from the model's prior (:meth:`sample_latents`, with
        ``prior_scale``, ``tags``, ``tag_strength`` and ``snap``), optionally moved along attribute ``vectors`` by
        ``shift`` ({name: amount}). ``meter`` defaults to the one most windows with the given tags are in, else the
        model's most common, else 4/4 (:meth:`sample_meter`). A model that reads a canonical key samples in C major /
        A minor, and reaches a ``tonic`` (or ``key``) tag by transposing each sample from its canonical tonic
        (:meth:`sample_tonic`, :meth:`in_tonic`); with ``tries`` > 1, a sample the key finder hears in another key
        than the canonical one asked for is drawn again, up to ``tries`` draws in all (:meth:`decode_in_key`)."""
        if seed is not None:
            torch.manual_seed(seed)
        tags, key = self.sample_tonic(tags or {})
        self._check_tags(tags)
        meter = self.sample_meter(tags, meter)
        bars = bars or self.bars
        meters = sorted(f"{num}/{den}" for num, den in self.piece_encoder.meters)
        if meter not in meters:
            raise InputError(f"meter {meter!r} is not in this model's vocabulary; valid: {', '.join(meters)}")
        if not 1 <= bars <= self.bars:
            raise InputError(f"bars must be between 1 and {self.bars} (the model's window), got {bars}")
        if tries < 1:
            raise InputError(f"tries must be >= 1, got {tries}")

        def draw(k: int) -> PieceLatents:
            z = self.sample_latents(k, bars=bars, meter=meter, scale=prior_scale, tags=tags,
                                    tag_strength=tag_strength, snap=snap)
            return shift_codes(z, vectors, shift) if shift else z

        tokens = self.decode_in_key(draw, n, key, tries=tries, temperature=temperature, top_p=top_p)
        return [self.stitch([ids]) for ids in tokens]

    def decode_in_key(self, draw, n: int, key: tuple[int, str | None] | None, *, tries: int = 1,
                      temperature: float = 1.0, top_p: float = 1.0) -> list[list[int]]:
        """Ids of ``draw(n)``'s codes decoded (``draw``: count -> :class:`PieceLatents`), moved to ``key`` (from
        :meth:`sample_tonic`; None: as they are). A model that reads a canonical key writes each sample in C major
        or A minor; one the key finder, asked all 24 keys, hears in another key than the canonical key of ``key``'s
        mode (either, for a mode without one) is drawn again with ``draw(1)`` per redraw, up to ``tries`` draws in
        all, the last draw kept whatever it is. Then each is moved to ``key``'s tonic (:meth:`in_tonic`)."""
        tokens = self.generate_tokens(draw(n), temperature=temperature, top_p=top_p)
        if key is None:
            return tokens
        for _ in range(tries - 1):
            off = [i for i, ids in enumerate(tokens) if not self.heard_canonical(ids, key[1])]
            if not off:
                break
            for i, ids in zip(off, self.generate_tokens(draw(len(off)), temperature=temperature, top_p=top_p)):
                tokens[i] = ids
        return [self.in_tonic(ids, key) for ids in tokens]

    def heard_canonical(self, ids: list[int], mode: str | None) -> bool:
        """Whether the key finder (all 24 keys) hears ids written by a model that reads a canonical key in the
        canonical key of ``mode`` (C major, A minor; either for another mode or None); False without notes."""
        found = key_of([self.vocab.to_base(ids)], self.vocab)
        if mode in CANONICAL_TONIC:
            return found == (CANONICAL_TONIC[mode], mode)
        return found in {(tonic, m) for m, tonic in CANONICAL_TONIC.items()}

    def sample_tonic(self, tags: dict[str, str]) -> tuple[dict[str, str], tuple[int, str | None] | None]:
        """For a model that reads a canonical key: ``tags`` without ``tonic`` and ``key`` (its codes hold no key;
        ``key``'s mode stays as ``mode`` when the prior knows that value) and the key they ask for, (tonic pitch
        class, mode: ``key``'s, else the ``mode`` tag's, else None), for :meth:`in_tonic`; None when neither is
        given. Other models: ``(tags, None)``."""
        if not self.canonical or not ({"tonic", "key"} & set(tags)):
            return tags, None
        rest = {k: v for k, v in tags.items() if k not in ("tonic", "key")}
        target = parse_key(tags["key"]) if "key" in tags else parse_key(f"{tags['tonic']} major")
        if target is None:
            given = f"key={tags['key']!r}" if "key" in tags else f"tonic={tags['tonic']!r}"
            raise InputError(f"{given} names no key; give a tonic such as D, F#, Bb (and a mode: 'D minor')")
        if "key" in tags and target[1] in self.known_tags().get("mode", []):
            rest.setdefault("mode", target[1])
        return rest, (target[0], target[1] if "key" in tags else tags.get("mode"))

    def in_tonic(self, ids: list[int], key: tuple[int, str | None]) -> list[int]:
        """Ids a model that reads a canonical key decoded, moved by the nearer way from their canonical tonic to
        ``key``'s tonic (a pitch class; the whole passage an octave the other way where a pitch would leave the
        range, single notes an octave more where no way keeps them all in it). Their canonical tonic is C for a
        major ``key``, A for a minor one (the model reads such pieces in C major or A minor), and otherwise C or A
        by which of the two keys their notes are nearer (:func:`~midistruct.tokens.key.canonical_key_of`; a
        2-bar passage often sounds like the dominant, so the finder is not asked all 24 keys); as they are when
        they hold no notes."""
        tonic, mode = key
        base = self.vocab.to_base(ids)
        found = canonical_key_of([base], self.vocab)
        if found is None:
            return list(ids)
        source = CANONICAL_TONIC.get(mode, found[0])
        step = nearer_move(source, tonic)
        fits = fitting_shifts([base], step, self.vocab)
        return self.vocab.shift_pitches(base, fits[0] if fits else step, fold=True).tolist()

    def sample_meter(self, tags: dict[str, str] | None = None, meter: str | None = None) -> str:
        """The meter :meth:`sample` writes: ``meter`` when given, else the one most training windows with
        ``tags`` are in (the code prior knows), else the one most of all its training windows are in
        (:meth:`training_meters`; 6/8 for the folk models, whose bars in a rare meter the prior has few of), else
        4/4. A canonical model's tonic or key says nothing of the meter."""
        tags = self.prior_tags(self.sample_tonic(tags or {})[0])  # a tag only the decoder reads says nothing of it
        trained = self.training_meters()
        return (meter or (self.prior.meter_for(tags) if tags and self.prior is not None else None)
                or (max(trained, key=trained.get) if trained else None) or "4/4")

    def sample_latents(self, n: int = 1, *, bars: int | None = None, meter: str = "4/4",
                       scale: float = 1.0, tags: dict[str, str] | None = None,
                       tag_strength: float = 1.0, snap: bool = True) -> PieceLatents:
        """``n`` one-window codes (uses torch's global generator): from the fitted code prior when the model has
        one (:attr:`prior`, ``code_prior.safetensors`` in its folder, written by :meth:`fit_prior`), else from a
        VAE's N(0, I). A model with deterministic codes (``latent_mode: ae``) and no fitted prior refuses, as
        N(0, I) says nothing about where its codes lie. Fewer ``bars`` than a window keep the first bars' codes.
        ``scale`` < 1 draws nearer the prior's mean (the truncation trick; 1: the prior as it is). ``tags``
        ({name: value}) draws from the fitted prior's codes of those tag values (issue 18), their offsets from the
        overall mean times ``tag_strength`` (:meth:`midistruct.model.prior.CodePrior.sample`). A fitted prior that
        keeps a bank of real bar codes moves each drawn bar code to the nearest of them, of the bars of windows in
        ``meter`` with ``tags`` where it has enough (:meth:`~midistruct.model.prior.CodePrior.snap`), unless ``snap``
        is False."""
        bars = bars or self.bars
        cfg = self.model.config
        if not scale >= 0:
            raise InputError(f"the prior scale must be >= 0, got {scale}")
        self._check_tags(tags or {})
        if self.prior is not None:
            z_bar, z_segment = self.prior.sample(n, scale=scale, tags=self.prior_tags(tags or {}),
                                                 tag_strength=tag_strength, snap=snap, meter=meter)
            z_bar = z_bar[:, :bars]
        elif cfg.latent_mode == "vae":
            bar_dim = cfg.latent_dim_bar if cfg.bar_latents else 0
            z_bar, z_segment = scale * torch.randn(n, bars, bar_dim), scale * torch.randn(n, cfg.latent_dim_segment)
        else:
            raise InputError(f"this model's codes are deterministic (latent_mode {cfg.latent_mode!r}) and it has "
                             "no fitted code prior to sample from: write one with `midistruct prior CHECKPOINT` "
                             "(reconstruct, interpolate, continue and attribute shifts work without it)")
        return PieceLatents(z_bar, z_segment, [bars] * n, [meter] * n, tags=self.decoder_tags(tags or {}))

    def sample_latents_in_meters(self, meters: list[str], *, scale: float = 1.0, snap: bool = True) -> PieceLatents:
        """One window's codes in each of ``meters``, in that order: :meth:`sample_latents` called once per meter,
        the meters in sorted order (so the draws depend on the mix of meters, not on their order)."""
        parts = {m: self.sample_latents(meters.count(m), meter=m, scale=scale, snap=snap) for m in sorted(set(meters))}
        taken = dict.fromkeys(parts, 0)
        rows = []  # (part, index in it) of each window
        for m in meters:
            rows.append((parts[m], taken[m]))
            taken[m] += 1
        return PieceLatents(torch.stack([part.z_bar[i] for part, i in rows]),
                            torch.stack([part.z_segment[i] for part, i in rows]),
                            [part.bars[i] for part, i in rows], list(meters))

    def set_prior(self, prior) -> None:
        """Use ``prior`` (a :class:`~midistruct.model.prior.CodePrior`) for sampling; :class:`InputError` when it
        describes codes of another shape than this model's window."""
        cfg = self.model.config
        try:
            prior.check(bars=self.bars, bar_dim=cfg.bar_code_dim,  # with blocks, their codes too (what encode gives)
                        segment_dim=cfg.latent_dim_segment)
        except PriorError as err:
            raise InputError(str(err)) from None
        self.prior = prior

    def fit_prior(self, data: str | Path | None = None, *, split: str = "train", windows: int = 20000,
                  rank: int = 128, seed: int = 0, progress: bool = False, tags=CONDITIONING_TAGS,
                  min_tag_windows: int = 20, bank: int = 1000):
        """Fit a :class:`~midistruct.model.prior.CodePrior` to the codes (posterior means) of up to ``windows``
        full-length windows of a shard folder's ``split`` (default: the checkpoint's training data), use it for
        sampling and return it (``prior.save(folder / PRIOR_FILE)`` keeps it with the checkpoint). A VAE's Gaussian
        is the aggregate posterior (the means' covariance plus the posterior's mean variance), so that its ELBO can
        be measured under it (``evaluate --code-length``); its tags and bank keep the means.

        ``tags`` (names of :data:`midistruct.tags.TAGS`; default the musical ones) are read from each window's
        piece and kept in the prior for their values with ``min_tag_windows`` windows, so that :meth:`sample`
        and the other commands can be given tags (issue 18); ``()`` fits no tags. ``bank`` real bar codes (0: none)
        are kept for sampling to snap its bar codes to (:class:`~midistruct.model.prior.CodePrior`)."""
        for name in tags:
            if not known(name):
                raise InputError(f"unknown tag {name!r}; valid: {', '.join([*TAGS, *BAR_TAGS])}")
        if self.canonical:  # its codes hold no key: sample reaches a tonic by transposing (sample_tonic)
            tags = tuple(name for name in tags if name not in ("tonic", "key"))
        folder = data or self.cfg.data.output
        cfg = self.model.config  # a VAE's Gaussian is its aggregate posterior: means plus variances (a model with
        # functional blocks is fitted to its codes: the blocks' extra codes have no variance)
        aggregate = cfg.latent_mode == "vae" and not (cfg.views or cfg.arrangement_dim or cfg.performance_dim)
        full, z, variances = self.corpus_codes(folder, split=split, windows=windows, seed=seed, progress=progress,
                                               variances=aggregate)
        if len(full) < 2:
            raise InputError(f"{folder}: {len(full)} {split} windows of {self.bars} bars; a prior needs at least 2")
        labels = [window_tags(piece.get("tags", {}), piece["id"], self.vocab.meter(ids, default=None), bar=bar,
                              n_bars=self.bars, names=tags) for ids, piece, bar in full]
        columns = {name: [row.get(name) for row in labels] for name in tags}
        meters = [self.vocab.meter(ids, default=None) for ids, _, _ in full]  # the bank snaps within a meter
        try:
            prior = CodePrior.fit(z.z_bar, z.z_segment, rank=rank, tags=columns, min_windows=min_tag_windows,
                                  bank=bank, bank_tags={**columns, "meter": meters}, seed=seed, variances=variances,
                                  meters=meters)
        except PriorError as err:
            raise InputError(str(err)) from None
        self.set_prior(prior)
        return prior

    def corpus_codes(self, folder, *, split: str = "train", windows: int = 20000, seed: int = 0,
                     progress: bool = False, variances: bool = False) -> tuple[list, PieceLatents, tuple | None]:
        """The full-length windows among up to ``windows`` of a shard folder's ``split`` (a seeded random subset;
        ``(ids, piece, bar)`` rows), their codes (posterior means; each piece read in its canonical key by a
        model that reads one) and, with ``variances``, a VAE's posterior variances from the same pass (else None)."""
        self.check_shards(folder)
        rows = corpus_windows_with_pieces(folder, split=split, limit=max(windows, 0), seed=seed)
        full = [row for row in rows if self.vocab.count_bars(row[0]) == self.bars]
        if not full:
            raise InputError(f"{folder}: none of {len(rows)} {split} windows has the model's {self.bars} bars; prepare "
                             f"the data with --init {self.name or 'MODEL'}, which takes its window")
        shifts = self.corpus_shifts(folder, split, [piece["id"] for _, piece, _ in full])
        return (full, *self._encode_in_chunks([ids for ids, _, _ in full], progress=progress, shifts=shifts,
                                              variance=variances))

    def check_shards(self, folder) -> None:
        """:class:`InputError` in one line unless this model can read the shard folder (its tokenizer, its window;
        :func:`~midistruct.model.checkpoint.readable_shards`)."""
        from midistruct.shards.reader import ShardError

        try:
            readable_shards(folder, self.meta, self.model.config, name=self.name)
        except ShardError as err:
            raise InputError(str(err)) from None

    def corpus_shifts(self, folder, split: str, piece_ids: list[str]) -> list[int] | None:
        """Each listed piece's shift to the canonical key (:func:`midistruct.shards.dataset.piece_shifts`, the key
        heard in all its windows of ``split``), for windows read from a shard folder; None for a model that
        reads pitches as written."""
        if not self.canonical:
            return None
        from midistruct.shards.dataset import piece_shifts
        from midistruct.shards.reader import ShardSet

        arrays = ShardSet(folder).split(split)
        by_id = {p["id"]: int(s) for p, s in zip(arrays.pieces(), piece_shifts(arrays, self.vocab))}
        return [by_id.get(piece, 0) for piece in piece_ids]

    def _encode_in_chunks(self, windows: list[np.ndarray], *, progress: bool, chunk: int = 512,
                          shifts: list[int] | None = None,
                          variance: bool = False) -> tuple[PieceLatents, tuple[torch.Tensor, torch.Tensor] | None]:
        from tqdm import tqdm

        parts = [self._encode_windows(windows[start : start + chunk], variance=variance,
                                      shifts=None if shifts is None else shifts[start : start + chunk])
                 for start in tqdm(range(0, len(windows), chunk), desc="encode", unit="chunk", disable=not progress,
                                   file=sys.stderr)]
        codes = [p for p, _ in parts]
        z = PieceLatents(torch.cat([p.z_bar for p in codes]), torch.cat([p.z_segment for p in codes]),
                         [b for p in codes for b in p.bars], [t for p in codes for t in p.time_signatures],
                         shifts=[s for p in codes for s in p.shifts])
        if not variance:
            return z, None
        return z, (torch.cat([v[0] for _, v in parts]), torch.cat([v[1] for _, v in parts]))

    # ---- tags (issue 18) ------------------------------------------------------------------------

    def known_tags(self) -> dict[str, list[str]]:
        """The tags this model can be given and their values: those of its fitted code prior ({} without one) and
        those its decoder reads (``decoder_tags``, issue 18 item 2)."""
        known = {name: list(g.values) for name, g in self.prior.tags.items()} if self.prior is not None else {}
        for name, values in (self.model.config.decoder_tags or {}).items():
            known[name] = sorted(set(known.get(name, [])) | set(values))
        return known

    def decoder_tags(self, tags: dict[str, str]) -> dict[str, str]:
        """Those of ``tags`` the model's decoder reads (``decoder_tags``; {} for a model that reads none)."""
        return {k: v for k, v in tags.items() if k in (self.model.config.decoder_tags or {})}

    def prior_tags(self, tags: dict[str, str]) -> dict[str, str]:
        """Those of ``tags`` that go to the code prior: all but the decoder's tags with a value the prior does not
        know (the decoder alone reads those)."""
        if not tags:
            return {}
        prior = self.prior.tags if self.prior is not None else {}
        decoder = self.decoder_tags(tags)
        return {k: v for k, v in tags.items() if k not in decoder or (k in prior and v in prior[k].values)}

    def _check_tags(self, tags: dict[str, str]) -> None:
        tags = self.sample_tonic(tags)[0]  # a canonical model reaches a tonic by transposing, not through its prior
        self.decoder_tag_ids(tags)  # a value the decoder does not know
        tags = self.prior_tags(tags)
        if not tags:
            return
        if self.prior is None:
            raise InputError("this model has no code prior, so it knows no tags: fit one with `midistruct prior "
                             "CHECKPOINT` (it keeps the tags of the training data)")
        try:
            self.prior.check_tags(tags)
        except TagError as err:
            raise InputError(str(err)) from None

    def transposed(self, windows: list[np.ndarray], tags: dict[str, str]) -> tuple[list[np.ndarray], dict[str, str]]:
        """A piece's windows transposed to the tonic that ``tags`` names (``tonic``, or ``key``'s tonic) from the
        one the Krumhansl-Schmuckler key finder hears in all of them, by the nearer way, or an octave the other
        way where a pitch would leave the range (as they are where neither fits); and the tags left for
        :meth:`retag` (``key`` becomes its ``mode``, when the prior knows that value). Windows under BPE, or
        without a tonic tag, come back as they are."""
        rest = {k: v for k, v in tags.items() if k not in ("tonic", "key")}
        if rest == tags:
            return windows, rest
        target = parse_key(tags["key"]) if "key" in tags else parse_key(f"{tags.get('tonic')} major")
        if "key" in tags and target and target[1] in self.known_tags().get("mode", []):
            rest.setdefault("mode", target[1])
        if target is None or self.vocab.is_bpe:
            return windows, rest
        base = [self.vocab.to_base(w) for w in windows]
        found = key_of(base, self.vocab)
        if found is None:
            return windows, rest
        fits = fitting_shifts(base, nearer_move(found[0], target[0]), self.vocab)
        if not fits:
            return windows, rest
        return [self.vocab.shift_pitches(w, fits[0]) for w in base], rest

    def retag(self, latents: PieceLatents, tags: dict[str, str], *, strength: float = 1.0) -> PieceLatents:
        """Every window's codes moved from the tag values they lie nearest to those of ``tags``
        (:meth:`midistruct.model.prior.CodePrior.retag`): "this tune, in D minor" (issue 18). A model that reads a
        canonical key leaves ``tonic`` and ``key`` to the notes (:meth:`transposed`, before encoding) and moves only
        the rest (``key``'s mode) here."""
        tags = self.sample_tonic(tags)[0]
        self._check_tags(tags)
        if self.decoder_tags(tags):  # the decoder reads these beside the codes (decoder_tags, issue 18 item 2)
            latents = latents.with_tags(self.decoder_tags(tags))
        tags = self.prior_tags(tags)
        if not tags:
            return latents
        width = latents.z_bar.shape[1]
        z_bar = torch.nn.functional.pad(latents.z_bar, (0, 0, 0, self.prior.bars - width))  # (W, NB, Zb)
        x = torch.cat([z_bar.reshape(len(latents), -1), latents.z_segment], dim=1)  # (W, D)
        moved_bar, moved_segment = self.prior.split(self.prior.retag(x, tags, strength=strength))
        return latents.with_codes(moved_bar[:, :width], moved_segment)

    def attribute_vectors(self, data: str | Path | None = None, *, split: str = "train", windows: int = 2000,
                          names: list[str] | None = None, seed: int = 0) -> "AttributeVectors":  # noqa: F821
        """Attribute vectors measured over ``windows`` windows of a shard folder (default: the
        checkpoint's training data); see :mod:`midistruct.generation.attributes`."""
        folder = data or self.cfg.data.output
        self.check_shards(folder)
        rows = attributes.corpus_windows_with_pieces(folder, split=split, limit=windows, seed=seed)
        return attributes.compute(self, [ids for ids, _, _ in rows], names=names,
                                  shifts=self.corpus_shifts(folder, split, [piece["id"] for _, piece, _ in rows]))


@torch.no_grad()
def generate_windows(model, tokenizer, *, z_bar, z_segment, bars: int, meter: str | None, max_new: int,
                     temperature: float = 0.0, top_p: float = 1.0, num_beams: int = 1,
                     prompt: torch.Tensor | None = None, tag_ids: torch.Tensor | None = None) -> list[list[int]]:
    """The grammar-constrained decoder (one for the pipeline and the evaluation alike): token ids, without
    specials, of each row of codes ``z_bar`` (B, NB, Zb; None or Zb = 0 without bar latents) and ``z_segment``
    (B, Zs), every row with ``bars`` bars in ``meter`` (None: any). Greedy at ``temperature=0``, else nucleus
    sampling; beam search over ``num_beams`` beams when > 1 at ``temperature=0`` (the grammar reads each beam's
    state from its own ids); ``prompt`` (B, T) ids to continue, BOS alone by default; ``tag_ids`` (B, G) the decoder
    tags of a model that reads them (``MidiStructModel.decoder_forward``; None: none given)."""
    if tokenizer.is_trained:  # the grammar is written over base tokens (issue 13: BPE trains and encodes only)
        raise InputError("decoding a model trained with BPE is not supported yet (the REMI grammar reads base "
                         "tokens); encode works, or train without tokenizer.bpe_vocab_size")
    cfg, device = model.config, model.device
    sampling = temperature > 0
    prompt_len = 1 if prompt is None else prompt.shape[1]
    max_new = min(max_new, cfg.max_positions - prompt_len)
    grammar = RemiGrammar(tokenizer, n_bars=bars, time_signature=meter, prompt_len=prompt_len,
                          max_new_tokens=max_new)
    has_bars = z_bar is not None and z_bar.shape[-1] > 0
    out = model.generate(
        input_ids=prompt, z_bar=z_bar.to(device) if has_bars else None, z_segment=z_segment.to(device),
        **({} if tag_ids is None else {"tag_ids": tag_ids.to(device)}),
        max_new_tokens=max_new,
        do_sample=sampling, temperature=temperature if sampling else None, top_p=top_p if sampling else None,
        top_k=0 if sampling else None, eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id,
        num_beams=1 if sampling else max(1, num_beams), logits_processor=LogitsProcessorList([grammar]))
    return [strip_special(row) for row in out]


def _tempo_of(score) -> float:
    """The score's first tempo (qpm), 120 without one."""
    return float(score.tempos[0].qpm) if len(score.tempos) else 120.0


def _unusable(name: str, skip: Skip, meter_option: tuple[str, str]) -> InputError:
    """The :class:`InputError` for a piece the tokenizer refused; a meter it cannot read names the option that
    reads the piece in another (``meter_option``: command-line option, Python keyword)."""
    hint = (f"; read it in a meter it knows with {meter_option[0]} 4/4 (Python: {meter_option[1]}=\"4/4\")"
            if str(skip).startswith("unsupported meter") else "")
    return InputError(f"{name}: {skip}{hint}")


def _name(midi) -> str:
    return str(midi) if isinstance(midi, (str, Path)) else "score"


def _check_downbeat(downbeat) -> None:
    """:class:`InputError` unless ``downbeat`` is None, seconds >= 0 or ``"auto"``."""
    if downbeat is None or downbeat == AUTO:
        return
    if isinstance(downbeat, str) or not downbeat >= 0:
        raise InputError(f"downbeat {downbeat!r}: give the seconds where a bar line falls (>= 0), or 'auto' to "
                         "estimate it from the notes")

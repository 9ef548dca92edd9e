"""Does generation obey a tag? (issue 18, item 4) A judge trained on real music says.

For one tag (``mode``, ``tune_type``, ...) a judge, softmax regression on features of a window's notes (not on
our codes: pitch-class, duration and onset-position histograms, the pitch classes' correlation with the 24
Krumhansl-Kessler key profiles, notes per beat, and the meter), is fitted to real training windows labelled with
their piece's tag (:mod:`midistruct.tags`), the same number of windows of each value (so that a rare value is
not simply never called). Its balanced accuracy on real held-out windows is its ceiling. Then, for each value
``v``:

- ``controlled``: the share of windows sampled with ``--tag name=v`` that the judge calls ``v``;
- ``unconditioned``: the share of samples drawn without tags that it calls ``v`` (what chance gives);
- ``retagged``: held-out windows of other values, reconstructed with ``--tag name=v`` (and the same strength;
  a tonic or key by transposing the notes, as ``reconstruct`` does), called ``v``;
- ``real``: held-out windows of value ``v`` called ``v`` (the judge's recall there, its ceiling for ``v``).

A model that reads a canonical key (``augment.key: canonical``) writes its samples in C major / A minor; since the
judge hears pitch classes, each sample is moved to the key of a real held-out window of the value asked (of any
value when unconditioned), drawn at random; a ``tonic`` or ``key`` tag it reaches by transposing its samples
(:meth:`MidiStruct.sample_tonic`), as ``sample`` does.

A model whose decoder reads tags (``model.decoder_tags``, issue 18 item 2) is told the tag two ways, as ``sample``
tells it: its code prior draws codes of the value and its decoder reads the value. ``route`` keeps one of them to
say which does the work: ``"prior"`` (the decoder is not told), ``"decoder"`` (untagged codes, in the meter the
value's windows are mostly in, and the decoder told), ``"both"`` (the default, what the commands do), and the
control ``"meter"`` (untagged codes in that meter, nobody told: what the meter alone gives).

Shapes: ``features`` (W, F) for W windows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from midistruct.evaluation.probes import Probe, fit_probe
from midistruct.evaluation.statistics import duration_histogram, pitch_class_histogram
from midistruct.metrics.features import key_correlations
from midistruct.metrics.notes import notes_of, window_quarters
from midistruct.tokens.tokenizer import decode_ids

ONSET_BINS = 12  # onset position within the beat (a quarter note), in twelfths: straight and triplet grids
N_FEATURES = 12 + 5 + ONSET_BINS + 24 + 2


def note_features(notes: np.ndarray, *, quarters: float) -> np.ndarray:
    """(N_FEATURES,) pitch-class histogram (12), duration histogram (5), onset position within the quarter
    note (12), key-profile correlations (24), notes per quarter note and the mean pitch / 128 of a window's
    notes (N, 3) that lasts ``quarters``."""
    if len(notes) == 0:
        return np.zeros(N_FEATURES)
    position = np.floor((notes[:, 0] % 1.0) * ONSET_BINS + 1e-6).astype(np.int64) % ONSET_BINS
    onsets = np.bincount(position, minlength=ONSET_BINS) / len(notes)
    extra = [len(notes) / max(quarters, 1e-6), notes[:, 2].mean() / 128]
    pcs = pitch_class_histogram(notes)
    return np.concatenate([pcs, duration_histogram(notes), onsets, key_correlations(pcs), extra])


@dataclass
class Judge:
    """A fitted tag classifier over :func:`window_features`."""

    values: list[str]
    meters: list[str]  # the meters one-hot encoded as features (the rest: all zeros)
    probe: Probe

    def predict(self, features: np.ndarray) -> list[str]:
        return [self.values[i] for i in self.probe.predict(features)]


@dataclass
class FinderJudge:
    """The Krumhansl-Schmuckler key finder as a judge of ``key`` values (a stricter one than a fitted judge, which
    chooses among the values judged only): a window is called the key, of all 24 major and minor keys, whose
    profile its pitch classes correlate with best (:func:`~midistruct.tokens.key.key_of_histogram`), and a key
    that is not one of ``values``, or a window without notes, is a miss. Nothing is fitted; a modal value ("A
    dorian") is never heard."""

    values: list[str]
    meters: tuple[str, ...] = ()  # no meter features

    def predict(self, features: np.ndarray) -> list[str]:
        from midistruct.tags import parse_key
        from midistruct.tokens.key import key_of_histogram

        by_key = {parse_key(v): v for v in self.values}
        heard = [key_of_histogram(row[:12]) for row in features]  # the pitch-class histogram; None: no notes
        return [by_key.get(found, "another key") for found in heard]


def window_features(ms, windows: list[np.ndarray], meters: list[str]) -> np.ndarray:
    """(W, N_FEATURES + M) :func:`note_features` of each token window (decoded with ``ms``'s tokenizer), then its
    meter one-hot over ``meters`` (its TimeSig token)."""
    rows = []
    for ids in windows:
        score = decode_ids(ms.tokenizer, list(ids))
        quarters = window_quarters(score, max(ms.vocab.count_bars(ids), 1))
        meter = ms.vocab.meter(ids, default=None)
        rows.append(np.concatenate([note_features(notes_of(score), quarters=quarters),
                                    [float(meter == m) for m in meters]]))
    return np.array(rows).reshape(len(windows), -1)


def fit_judge(ms, windows: list[np.ndarray], labels: list[str], values: list[str], *, per_value: int = 500,
              seed: int = 0) -> Judge:
    """A :class:`Judge` of ``values`` fitted on the labelled ``windows``: the same number of each value (the
    rarest value's count, at most ``per_value``, a seeded draw); windows of other labels are left out."""
    rng = np.random.default_rng(seed)
    rows = {v: [i for i, label in enumerate(labels) if label == v] for v in values}
    take = min(per_value, *(len(r) for r in rows.values()))
    if take < 2:
        raise ValueError(f"a judge needs at least 2 windows of each value; counts: "
                         f"{ {v: len(r) for v, r in rows.items()} }")
    keep = sorted(i for r in rows.values() for i in rng.choice(r, take, replace=False))
    meters = sorted({ms.vocab.meter(windows[i], default=None) or "" for i in keep} - {""})
    x = window_features(ms, [windows[i] for i in keep], meters)
    y = np.array([values.index(labels[i]) for i in keep])
    return Judge(list(values), meters, fit_probe(x, y))


def judge_windows(judge: Judge, ms, windows: list[np.ndarray]) -> list[str]:
    return judge.predict(window_features(ms, windows, judge.meters))


def _free_latents(ms, n: int, *, scale: float = 1.0, snap: bool = True):
    """``n`` one-window codes drawn without tags, their meters in the training windows' proportions (the
    prior's ``meter`` tag, else the trainer's counts; all 4/4 without either); ``snap`` as
    :meth:`MidiStruct.sample_latents`."""
    group = ms.prior.tags.get("meter") if ms.prior is not None else None
    trained = ms.training_meters()
    if group is not None:
        meters, weights = group.values, np.array(group.counts)
    elif trained:  # a prior fitted without the meter tag: the trainer's counts
        meters, weights = sorted(trained), np.array([trained[m] for m in sorted(trained)])
    else:
        return ms.sample_latents(n, meter="4/4", scale=scale, snap=snap)
    counts = np.random.default_rng(0).multinomial(n, weights / weights.sum())
    return ms.sample_latents_in_meters([meter for meter, k in zip(meters, counts) for _ in range(int(k))],
                                       scale=scale, snap=snap)


def _real_keys(ms, held_out: list[tuple[np.ndarray, str]], *, seed: int):
    """``keys(z, value)``: for a model that reads a canonical key, ``z`` with each sample given the shift of a real
    held-out window of ``value`` (any value for None), drawn at random, so that samples written in C major / A
    minor are judged in the keys real windows of that value are in (the judge hears pitch classes); ``z`` as it
    is for other models."""
    if not ms.canonical:
        return lambda z, value: z
    rng = np.random.default_rng(seed)
    own = ms.own_key_shifts([w for w, _ in held_out])
    by_value: dict = {}
    for shift, (_, v) in zip(own, held_out):
        by_value.setdefault(v, []).append(shift)
        by_value.setdefault(None, []).append(shift)

    def keys(z, value):
        pool = by_value.get(value) or by_value.get(None) or [0]
        z.shifts = [int(s) for s in rng.choice(pool, len(z))]
        return z

    return keys


ROUTES = ("both", "prior", "decoder", "meter")


def _routed(ms, z, tags: dict[str, str], route: str):
    """``z`` with the decoder told ``tags`` (those it reads) unless ``route`` is "prior" or "meter"."""
    return z.with_tags({} if route in ("prior", "meter") else ms.decoder_tags(tags))


def _retagged(ms, windows: list[np.ndarray], name: str, value: str, *, strength: float, route: str = "both"):
    """Codes of ``windows`` moved to ``name=value`` as ``reconstruct --tag`` moves a piece's: a tonic or key by
    transposing each window's notes (:meth:`MidiStruct.transposed`), any other tag by moving its codes (not with
    ``route`` "decoder": the codes stay and the decoder is told)."""
    if name not in ("tonic", "key"):
        z = ms.encode_windows(windows, shifts=ms.own_key_shifts(windows))
        z = z if route in ("decoder", "meter") else ms.retag(z, {name: value}, strength=strength)
        return _routed(ms, z, {name: value}, route)
    moved = [ms.transposed([w], {name: value}) for w in windows]
    ws = [w[0] for w, _ in moved]
    return ms.retag(ms.encode_windows(ws, shifts=ms.own_key_shifts(ws)), moved[0][1], strength=strength)


def control(ms, judge: Judge, name: str, *, held_out: list[tuple[np.ndarray, str]], n: int = 50,
            temperature: float = 1.0, prior_scale: float = 1.0, tag_strength: float = 1.0, seed: int = 0,
            route: str = "both", snap: bool = True, tries: int = 1) -> dict:
    """The four shares of the module docstring for every value of ``judge``; ``held_out`` are real windows
    with their value of tag ``name``. Samples are ``n`` per value (and ``n`` without tags), full windows, drawn
    at ``prior_scale`` and ``tag_strength`` (their bar codes snapped to the prior's bank of real bars, as
    ``sample`` does, unless ``snap`` is False) and decoded at ``temperature`` (reconstructions greedily);
    ``route`` says who is told the tag (module docstring); ``tries`` > 1 draws a canonical model's sample again
    while the key finder hears it in another key than the one asked (:meth:`MidiStruct.decode_in_key`)."""
    import torch

    if route not in ROUTES:
        raise ValueError(f"unknown route {route!r}; valid: {', '.join(ROUTES)}")
    torch.manual_seed(seed)
    keys = _real_keys(ms, held_out, seed=seed)
    free = ms.generate_tokens(keys(_free_latents(ms, n, scale=prior_scale, snap=snap), None), temperature=temperature)
    free_calls = judge_windows(judge, ms, free)
    real_calls = judge_windows(judge, ms, [w for w, _ in held_out])
    recall = [np.mean([c == value for c, (_, v) in zip(real_calls, held_out) if v == value])
              for value in judge.values if any(v == value for _, v in held_out)]
    out: dict = {"tag": name, "values": {}, "samples_per_value": n, "temperature": temperature,
                 "prior_scale": prior_scale, "tag_strength": tag_strength, "route": route, "snap": snap, "tries": tries,
                 "ceiling": float(np.mean(recall)), "held_out": len(held_out)}
    for value in judge.values:
        tags, key = ms.sample_tonic({name: value})  # a canonical model reaches a tonic by transposing its samples
        if tags:
            meter = ms.prior.meter_for(ms.prior_tags(tags)) or "4/4"
            drawn = None if route in ("decoder", "meter") else tags

            def draw(k, tags=tags, meter=meter, drawn=drawn):
                return _routed(ms, ms.sample_latents(k, meter=meter, tags=drawn, scale=prior_scale,
                                                     tag_strength=tag_strength, snap=snap), tags, route)
        else:  # the tonic alone, from a canonical model: untagged codes, meters in the training proportions
            meter = "mixed"

            def draw(k):
                return _free_latents(ms, k, scale=prior_scale, snap=snap)
        if key is None:
            tokens = ms.generate_tokens(keys(draw(n), value), temperature=temperature)
        else:
            tokens = ms.decode_in_key(draw, n, key, tries=tries, temperature=temperature)
        calls = judge_windows(judge, ms, tokens)
        others = [w for w, v in held_out if v != value][:n]
        moved = _retagged(ms, others, name, value, strength=tag_strength, route=route) if others else None
        retag_calls = judge_windows(judge, ms, ms.generate_tokens(moved, temperature=0.0)) if others else []
        mine = [c for c, (_, v) in zip(real_calls, held_out) if v == value]
        out["values"][value] = {
            "controlled": float(np.mean([c == value for c in calls])),
            "unconditioned": float(np.mean([c == value for c in free_calls])),
            "retagged": float(np.mean([c == value for c in retag_calls])) if retag_calls else None,
            "real": float(np.mean([c == value for c in mine])) if mine else None,
            "real_windows": len(mine), "meter": meter,
        }
    shares = out["values"].values()
    out["mean_controlled"] = float(np.mean([s["controlled"] for s in shares]))
    out["mean_unconditioned"] = float(np.mean([s["unconditioned"] for s in shares]))
    retagged = [s["retagged"] for s in shares if s["retagged"] is not None]
    out["mean_retagged"] = float(np.mean(retagged)) if retagged else None
    return out

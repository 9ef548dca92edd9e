"""Issue 19's measure of functional blocks: swap the arrangement code between held-out windows, then check that the
content stayed and the arrangement moved; probe each block's codes for the other block's attributes.

For a pair (content window A, arrangement window B, from different pieces), the model decodes A's codes with B's
arrangement part (``PieceLatents.with_block``), greedy. Read as the content view reads music
(:func:`midistruct.tokens.views.melody_and_rest`: the melody is the skyline, the rest is the accompaniment):

- **content kept**: melody F1 -- the output's melody notes (onset position and pitch, exact) against A's, split
  into its rhythm (the F1 of the melody's onsets alone) and its pitch (at A's melody onsets the output also has,
  the share where the output's melody has A's pitch) -- and chord accuracy -- per beat, the Jaccard overlap of the
  accompaniment's pitch classes with A's (two empty beats agree). Beside them the same against B (what copying B
  would score) and for A decoded without a swap; :func:`measure_reconstruction` gives the no-swap scores for any
  model, one without blocks too (what the content can keep at best).
- **arrangement moved** (``block="arrangement"``): texture statistics of the accompaniment: ``polyphony`` (notes per onset), ``density``
  (notes per bar), ``register`` (mean pitch), ``length`` (mean duration in positions) and ``rhythm`` (the
  histogram of onset positions within the bar). For each, ``moved = |out - A| / (|out - A| + |out - B|)``
  (an L1 distance for the histogram): 0 is A's, 1 is B's, 0.5 halfway. Pairs where A and B agree on a statistic
  are left out of it. With ``block="performance"`` (velocity tokens), the statistics are every note's
  :data:`DYNAMICS`: mean velocity, its spread, the mean velocity at each position of the bar, and the accent
  pattern (at each position with notes, their velocity above the window's mean; compared where both have notes).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from midistruct.evaluation.probes import fit_probe, piece_test_mask
from midistruct.metrics.features import estimated_key
from midistruct.shards.reader import ShardSet
from midistruct.tokens.views import bar_grid, melody_and_rest

TEXTURE = ("polyphony", "density", "register", "length", "rhythm")
# the performance block's statistics (every note, tokenizers with velocity): mean and spread of the velocities,
# the mean velocity at each position of the bar (positions without notes count 0, so this also says where notes
# fall), and the accent pattern proper: at each position that has notes, how much louder than the window's mean
# its notes are (positions without notes are left out of the comparison)
DYNAMICS = ("loudness", "spread", "accents", "accent_pattern")
STATISTICS = {"arrangement": TEXTURE, "performance": DYNAMICS}


def window_parts(ids, vocab) -> dict[str, Any]:
    """``melody`` (set of (onset, pitch)), ``chords`` (list of frozensets of pitch classes per beat) and the
    ``texture`` statistics: :data:`TEXTURE` of the accompaniment, :data:`DYNAMICS` of every note (0 without
    velocity tokens)."""
    notes, onset, top = melody_and_rest(ids, vocab)
    n_bars = max(len(notes.bar_meters), 1)
    per_beat, bar = vocab.positions_per_beat, int(max(bar_grid(notes, vocab)[0], default=1))  # the longest bar
    rest = ~top
    span = int(max(n_bars * bar, (onset.max() + 1) if len(onset) else 0))
    starts, ends = onset[rest], onset[rest] + np.maximum(notes.length[rest], 1)
    classes = notes.pitch[rest] % 12
    chords = [frozenset(classes[(starts < b + per_beat) & (ends > b)].tolist()) for b in range(0, span, per_beat)]
    rhythm = np.bincount(notes.position[rest], minlength=bar).astype(float)
    onsets = len(np.unique(starts))
    texture = {
        "polyphony": rest.sum() / onsets if onsets else 0.0,
        "density": rest.sum() / n_bars,
        "register": float(notes.pitch[rest].mean()) if rest.any() else 0.0,
        "length": float(notes.length[rest].mean()) if rest.any() else 0.0,
        "rhythm": rhythm / rhythm.sum() if rhythm.sum() else rhythm,
    }
    velocity = vocab.velocity_of[np.maximum(notes.velocity_id, 0)] if len(onset) else np.zeros(0)
    played = notes.velocity_id >= 0
    accents = np.bincount(notes.position[played], weights=velocity[played], minlength=bar)
    counts = np.bincount(notes.position[played], minlength=bar)
    loudness = float(velocity[played].mean()) if played.any() else 0.0
    texture.update({
        "loudness": loudness,
        "spread": float(velocity[played].std()) if played.any() else 0.0,
        "accents": accents / np.maximum(counts, 1),
        "accent_pattern": np.where(counts > 0, accents / np.maximum(counts, 1) - loudness, np.nan),
    })
    return {"melody": set(zip(onset[top].tolist(), notes.pitch[top].tolist())), "chords": chords, "texture": texture}


def melody_f1(reference: set, estimate: set) -> float:
    """F1 of (onset, pitch) notes; 1 when both are empty."""
    if not reference and not estimate:
        return 1.0
    hits = len(reference & estimate)
    return 2 * hits / (len(reference) + len(estimate))


def melody_scores(reference: set, estimate: set) -> dict[str, float]:
    """``melody_f1`` (:func:`melody_f1`), ``melody_onset_f1`` (the F1 of the two melodies' onsets) and
    ``melody_pitch`` (at the reference's onsets the estimate shares, the share of equal pitches; 0 when none)."""
    want, got = dict(reference), dict(estimate)  # onset -> pitch (a melody has one note per onset)
    shared = want.keys() & got.keys()
    return {"melody_f1": melody_f1(reference, estimate),
            "melody_onset_f1": melody_f1(set(want), set(got)),
            "melody_pitch": sum(want[o] == got[o] for o in shared) / len(shared) if shared else 0.0}


def chord_accuracy(reference: list, estimate: list) -> float:
    """Mean over the reference's beats of the Jaccard overlap of pitch-class sets (missing beats are empty)."""
    scores = []
    for i, want in enumerate(reference):
        got = estimate[i] if i < len(estimate) else frozenset()
        scores.append(1.0 if not want and not got else len(want & got) / len(want | got))
    return float(np.mean(scores)) if scores else 1.0


def _distance(a, b) -> float:
    """L1 distance; for arrays with NaN (``accent_pattern``: positions without notes), the mean absolute
    difference over the positions both have (0 when they share none)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if np.isnan(a).any() or np.isnan(b).any():
        both = ~np.isnan(a) & ~np.isnan(b)
        return float(np.abs(a[both] - b[both]).mean()) if both.any() else 0.0
    return float(np.abs(a - b).sum())


def moved(content: dict, style: dict, out: dict, *, floor: float = 1e-6,
          names: tuple[str, ...] = TEXTURE) -> dict[str, float | None]:
    """Per statistic in ``names``, where ``out`` lies from ``content`` (0) to ``style`` (1); None where the two
    agree."""
    result = {}
    for name in names:
        to_content, to_style = _distance(out[name], content[name]), _distance(out[name], style[name])
        apart = _distance(content[name], style[name])
        result[name] = None if apart <= floor else to_content / max(to_content + to_style, floor)
    return result


def swap_pairs(folder, vocab, *, n: int = 100, bars: int, split: str = "test", seed: int = 0
               ) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` pairs of full 4/4 windows of ``bars`` bars from a shard split, the two of each pair from different
    pieces, each window used once."""
    arrays = ShardSet(folder).split(split)
    rng = np.random.default_rng(seed)
    pieces = np.asarray(arrays.windows[:, 2])
    picked: list[tuple[int, np.ndarray]] = []
    for i in rng.permutation(arrays.n_windows):
        ids = arrays.window(int(i))[0]
        if vocab.count_bars(ids) == bars and vocab.meter(ids) == "4/4":
            picked.append((int(pieces[i]), ids))
        if len(picked) >= 4 * n:
            break
    pairs, used = [], set()
    for k, (piece, ids) in enumerate(picked):
        if k in used:
            continue
        other = next((j for j in range(k + 1, len(picked)) if j not in used and picked[j][0] != piece), None)
        if other is None:
            continue
        used.update({k, other})
        pairs.append((ids, picked[other][1]))
        if len(pairs) == n:
            break
    return pairs


def _content_scores(reference: dict, estimate: dict, suffix: str = "") -> dict[str, float]:
    """The melody scores (:func:`melody_scores`) and chord accuracy of ``estimate``'s parts against
    ``reference``'s, each key with ``suffix``."""
    scores = {**melody_scores(reference["melody"], estimate["melody"]),
              "chord_accuracy": chord_accuracy(reference["chords"], estimate["chords"])}
    return {key + suffix: value for key, value in scores.items()}


def measure_reconstruction(ms, windows: list[np.ndarray]) -> dict[str, Any]:
    """Decode each window from its own codes (greedy) and score the content against it: the means of
    :func:`_content_scores` over the windows. Any model, with or without blocks: what a swap can keep at best."""
    decoded = ms.generate_tokens(ms.encode_windows(windows, shifts=ms.own_key_shifts(windows)))  # windows of many pieces
    rows = [_content_scores(window_parts(a, ms.vocab), window_parts(out, ms.vocab)) for a, out in zip(windows, decoded)]
    return {"windows": len(rows), **{key: float(np.mean([r[key] for r in rows])) for key in rows[0]}} if rows else {}


def measure_swaps(ms, pairs: list[tuple[np.ndarray, np.ndarray]], *, block: str = "arrangement") -> dict[str, Any]:
    """Decode every pair's content window with the other's ``block`` codes and without a swap (greedy); the
    summary (means, medians, shares) and one row per pair."""
    contents, styles = [a for a, _ in pairs], [b for _, b in pairs]
    # each window of its own piece: a model that reads a canonical key moves each by its own key (and the swap is
    # decoded in the content's)
    z_content = ms.encode_windows(contents, shifts=ms.own_key_shifts(contents))
    z_style = ms.encode_windows(styles, shifts=ms.own_key_shifts(styles))
    swapped = ms.generate_tokens(z_content.with_block(z_style, ms.blocks()[block]))
    plain = ms.generate_tokens(z_content)
    rows = []
    for a, b, out, again in zip(contents, styles, swapped, plain):
        pa, pb, po, pr = (window_parts(x, ms.vocab) for x in (a, b, out, again))
        rows.append({
            **_content_scores(pa, po), **_content_scores(pa, pr, "_no_swap"), **_content_scores(pa, pb, "_style_source"),
            "moved": moved(pa["texture"], pb["texture"], po["texture"], names=STATISTICS[block]),
            "moved_no_swap": moved(pa["texture"], pb["texture"], pr["texture"], names=STATISTICS[block]),
        })
    return {"pairs": len(rows), "block": block, **summarise(rows, names=STATISTICS[block]), "rows": rows}


def summarise(rows: list[dict], *, names: tuple[str, ...] = TEXTURE) -> dict[str, Any]:
    """Means of the content scores; per texture statistic the median and mean of ``moved`` and the share of pairs
    past halfway, with and without the swap."""
    out: dict[str, Any] = {}
    for key in rows[0] if rows else []:
        if not key.startswith("moved"):
            out[key] = float(np.mean([r[key] for r in rows]))
    for key in ("moved", "moved_no_swap"):
        stats = {}
        for name in names:
            values = np.array([r[key][name] for r in rows if r[key][name] is not None], dtype=float)
            stats[name] = {"median": float(np.median(values)) if len(values) else None,
                           "mean": float(values.mean()) if len(values) else None,
                           "past_halfway": float((values > 0.5).mean()) if len(values) else None,
                           "pairs": len(values)}
        out[key] = stats
    return out


def probe_blocks(ms, folder, *, split: str = "test", windows: int = 1500, seed: int = 0) -> dict[str, Any]:
    """Does each block hold the other's attributes? Linear probes (``evaluation.probes``, split by piece) from each
    block's bar codes (averaged over the window) to a content attribute -- the window's tonic (Krumhansl) -- and
    an arrangement attribute -- its accompaniment's polyphony, in three classes (the corpus's terciles) -- and,
    where the tokens carry velocity, a performance attribute -- the mean velocity of its notes, in terciles too;
    with each probe's majority-class rate (chance)."""
    arrays = ShardSet(folder).split(split)
    rng = np.random.default_rng(seed)
    pieces = np.asarray(arrays.windows[:, 2])
    picks = rng.permutation(arrays.n_windows)[:windows]
    ids = [arrays.window(int(i))[0] for i in picks]
    z = ms.encode_windows(ids).z_bar.numpy()  # (W, NB, Zb)
    bars = np.array([max(ms.vocab.count_bars(w), 1) for w in ids])
    mask = np.arange(z.shape[1])[None, :] < bars[:, None]
    mean_code = (z * mask[..., None]).sum(1) / bars[:, None]  # (W, Zb)
    tonic, polyphony, loudness = [], [], []
    for w in ids:
        notes, onset, _ = melody_and_rest(w, ms.vocab)
        table = np.stack([onset, np.maximum(notes.length, 1), notes.pitch], axis=1).astype(float)  # (N, 3)
        key = estimated_key(table)
        tonic.append(None if key is None else key[0])
        texture = window_parts(w, ms.vocab)["texture"]
        polyphony.append(texture["polyphony"])
        loudness.append(texture["loudness"])
    terciles = (lambda values: np.digitize(values, np.quantile(values, [1 / 3, 2 / 3])))
    labels = {"tonic": np.array([-1 if t is None else t for t in tonic]), "polyphony": terciles(polyphony)}
    if ms.vocab.has_velocities:
        labels["loudness"] = terciles(loudness)
    test = piece_test_mask([str(p) for p in pieces[picks]])
    out: dict[str, Any] = {"windows": len(ids)}
    for block, part in ms.blocks().items():
        for target, y in labels.items():
            keep = y >= 0
            train, held = keep & ~test, keep & test
            probe = fit_probe(mean_code[train][:, part], y[train])
            accuracy = float((probe.predict(mean_code[held][:, part]) == y[held]).mean())
            chance = float(np.bincount(y[held]).max() / held.sum())
            out[f"{block}->{target}"] = {"accuracy": accuracy, "chance": chance}
    return out

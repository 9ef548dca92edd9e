"""How smoothly an interpolation moves from A to B (MusicVAE, Roberts et al. 2018, Fig. 5).

Along the path x_0 .. x_{S-1} decoded between inputs A and B, a musical distance to A should
rise and the distance to B fall, and neighbouring steps should differ less than A and B do.
Distances: ``steps`` (normalised Hamming distance of the 16th-step melody events, MusicVAE's
measure) or ``pianoroll`` (1 - intersection/union of the 16th-step piano rolls; sees polyphony).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from midistruct.metrics.notes import notes_of, window_quarters
from midistruct.metrics.steps import STEPS_PER_QUARTER, n_steps_of, step_accuracy, step_distance
from midistruct.shards.reader import ShardSet
from midistruct.tokens.tokenizer import decode_ids


def pianoroll_distance(a: np.ndarray, b: np.ndarray, *, n_steps: int | None = None) -> float:
    """1 - |A & B| / |A | B| over the (step, pitch) cells the notes sound in (0 for two silences)."""
    n = n_steps or n_steps_of(a, b)
    ra, rb = _roll(a, n), _roll(b, n)
    union = (ra | rb).sum()
    return float(1.0 - (ra & rb).sum() / union) if union else 0.0


def _roll(notes: np.ndarray, n: int) -> np.ndarray:
    roll = np.zeros((n, 128), dtype=bool)
    for onset, duration, pitch in notes:
        start = int(round(onset * STEPS_PER_QUARTER))
        end = max(int(round((onset + duration) * STEPS_PER_QUARTER)), start + 1)
        roll[start:min(end, n), int(pitch)] = True
    return roll


DISTANCES: dict[str, Callable[..., float]] = {"steps": step_distance, "pianoroll": pianoroll_distance}


def path_smoothness(path: list[np.ndarray], a: np.ndarray, b: np.ndarray, *, distance: str = "steps",
                    n_steps: int | None = None) -> dict:
    """Smoothness figures of an interpolation ``path`` (note arrays, A's end first) between ``a`` and ``b``.

    Returns distances to A and B along the path; ``rising_a`` / ``falling_b``: the fraction of
    consecutive steps where the distance to A does not fall / to B does not rise;
    ``spearman_a`` / ``spearman_b``: rank correlation of each distance with the step index (+1 and -1
    for a perfectly monotonic path); ``adjacent_mean``: mean distance between neighbouring steps;
    ``endpoint_distance``: d(A, B); ``adjacent_over_endpoints``: their ratio (below 1 is smooth).
    """
    from scipy.stats import spearmanr

    if distance not in DISTANCES:
        raise KeyError(f"unknown distance {distance!r}; valid: {', '.join(DISTANCES)}")
    dist = DISTANCES[distance]
    n = n_steps or n_steps_of(a, b, *path)
    d_a = np.array([dist(x, a, n_steps=n) for x in path])
    d_b = np.array([dist(x, b, n_steps=n) for x in path])
    adjacent = np.array([dist(x, y, n_steps=n) for x, y in zip(path, path[1:])])
    d_ab = dist(a, b, n_steps=n)
    index = np.arange(len(path))
    return {
        "distance": distance, "steps": len(path),
        "distance_to_a": d_a.round(4).tolist(), "distance_to_b": d_b.round(4).tolist(),
        "rising_a": float(np.mean(np.diff(d_a) >= 0)), "falling_b": float(np.mean(np.diff(d_b) <= 0)),
        "spearman_a": _rho(spearmanr, index, d_a), "spearman_b": _rho(spearmanr, index, d_b),
        "adjacent_mean": float(adjacent.mean()), "endpoint_distance": float(d_ab),
        "adjacent_over_endpoints": float(adjacent.mean() / d_ab) if d_ab else float("nan"),
    }


def _rho(spearmanr, x, y) -> float:
    if np.ptp(y) == 0:
        return 0.0
    return float(spearmanr(x, y).statistic)


def measure_interpolations(ms, pairs: list[tuple[np.ndarray, np.ndarray]], *, steps: int = 8,
                           method: str = "slerp", judge=None, snap: bool = False) -> dict:
    """Interpolate between the token windows of each pair with ``ms`` (a ``MidiStruct``) and measure.

    Greedy decoding. Returns the mean of :func:`path_smoothness` figures over pairs for both distances,
    ``smooth_pairs`` (the fraction whose neighbouring steps differ less than A and B do),
    ``valid`` (the fraction of decoded steps with at least one note: every one decodes by
    construction) and ``endpoint_accuracy`` (the step accuracy of path ends against A and B).
    With a ``judge`` (a model such as the plain-LM peer, ``latent_mode="none"``), also its NLL per
    token of the inputs, of the path ends and of the inner steps (``judge_nll_*``): interpolants
    that stay on the data manifold score about as the ends do. ``snap``: the inner steps' bar codes moved to the
    nearest real bars' of the code prior's bank, as ``interpolate --snap`` does.
    """
    from midistruct.generation.interpolation import path as latent_path  # (imports torch: kept local)

    windows = [w for pair in pairs for w in pair]
    z = ms.encode_windows(windows, shifts=ms.own_key_shifts(windows))  # windows of many pieces: each its own key
    latents = []
    for k in range(len(pairs)):
        za, zb = z.window(2 * k), z.window(2 * k + 1)
        for i, (zbar, zseg) in enumerate(zip(latent_path(za.z_bar, zb.z_bar, steps, method=method),
                                             latent_path(za.z_segment, zb.z_segment, steps, method=method))):
            nearer = za if 2 * i < steps - 1 else zb  # its meter, and its key for a canonical model (as interpolate)
            step = nearer.with_codes(zbar, zseg)
            latents.append(ms.snap_bars(step) if snap and 0 < i < steps - 1 else step)
    import torch

    from midistruct.generation.latents import PieceLatents  # (imports torch: kept local)

    joined = PieceLatents(torch.cat([z.z_bar for z in latents]), torch.cat([z.z_segment for z in latents]),
                          [b for z in latents for b in z.bars], [t for z in latents for t in z.time_signatures],
                          shifts=[s for z in latents for s in z.shifts])
    tokens = ms.generate_tokens(joined)  # one window per step
    decoded = [notes_of(ms.stitch([ids])) for ids in tokens]
    rows = {name: [] for name in DISTANCES}
    ends, valid = [], 0
    for k, (wa, wb) in enumerate(pairs):
        a_score = decode_ids(ms.tokenizer, wa)
        a, b = notes_of(a_score), notes_of(decode_ids(ms.tokenizer, wb))
        n = n_steps_of(quarters=window_quarters(a_score, ms.vocab.count_bars(wa)))
        path = decoded[k * steps : (k + 1) * steps]
        valid += sum(len(x) > 0 for x in path)
        for name in DISTANCES:
            rows[name].append(path_smoothness(path, a, b, distance=name, n_steps=n))
        ends += [step_accuracy(a, path[0], n_steps=n), step_accuracy(b, path[-1], n_steps=n)]
    out = {"pairs": len(pairs), "steps": steps, "method": method, "snap": snap, "valid": valid / (len(pairs) * steps),
           "endpoint_accuracy": float(np.mean(ends))}
    for name, results in rows.items():
        for key in ("spearman_a", "spearman_b", "rising_a", "falling_b", "adjacent_mean", "endpoint_distance"):
            out[f"{name}.{key}"] = float(np.nanmean([r[key] for r in results]))
        out[f"{name}.smooth_pairs"] = float(np.mean([r["adjacent_mean"] < r["endpoint_distance"] for r in results]))
    if judge is not None:
        inner = [ids for i, ids in enumerate(tokens) if 0 < i % steps < steps - 1]
        ends = [ids for i, ids in enumerate(tokens) if i % steps in (0, steps - 1)]
        windows = {"inputs": [w for pair in pairs for w in pair], "ends": ends, "inner": inner}
        out.update({f"judge_nll_{k}": token_nll(judge, v, vocab=ms.vocab) for k, v in windows.items()})
    return out


def token_nll(model, windows: list, *, vocab, batch_size: int = 64) -> float:
    """Mean NLL per token (nats, EOS included) of token ``windows`` under ``model`` (its own latents);
    ``vocab`` is the :class:`~midistruct.tokens.remi.RemiVocab` of the windows' (and the model's) tokenizer."""
    import torch

    from midistruct.shards.dataset import window_batch  # (imports torch: kept local)

    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(windows), batch_size):
            batch = window_batch(windows[start : start + batch_size], vocab, **model.config.view_options())
            batch = {k: v.to(model.device) for k, v in batch.items()}  # the model's device (evaluate --device)
            out = model.eval()(**batch, beta=1.0)
            tokens = int((batch["labels"] != -100).sum())
            total += float(out.token_nll) * tokens
            count += tokens
    return total / max(count, 1)


def held_out_pairs(ms, folder, *, n: int = 32, split: str = "test", seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` pairs of full windows of one shard ``split``, from different pieces, each pair in one meter."""
    ms.check_shards(folder)
    arrays = ShardSet(folder).split(split)
    rng = np.random.default_rng(seed)
    by_meter: dict[str, list[tuple[int, np.ndarray]]] = {}
    for i in rng.permutation(arrays.n_windows)[: 40 * n]:
        ids = arrays.window(int(i))[0]
        if ms.vocab.count_bars(ids) == ms.bars:
            by_meter.setdefault(ms.vocab.meter(ids), []).append((int(arrays.windows[i][2]), ids))
    pairs = []
    for windows in by_meter.values():
        for (piece_a, a), (piece_b, b) in zip(windows[0::2], windows[1::2]):
            if piece_a != piece_b:
                pairs.append((a, b))
    return pairs[:n]

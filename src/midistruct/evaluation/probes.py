"""What the latent knows: linear probes from a window's segment code (and its mean bar code) to
labels of its piece (mode, key, meter, collection, tune type, source), beside the same probe on a
plain baseline feature of the window's notes (pitch-class histogram + duration histogram).

A probe is multinomial logistic regression on standardised features, fitted on the windows of
three quarters of the pieces and scored on the windows of the rest (split by piece group, so
overlapping windows of one piece never sit on both sides). A latent that beats the histogram
knows more than which notes and note values a window uses.

Shapes: ``x`` (W, F) features of W windows, ``y`` (W,) integer classes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from midistruct.evaluation.statistics import duration_histogram, pitch_class_histogram
from midistruct.metrics.notes import notes_of
from midistruct.shards.reader import ShardSet
from midistruct.tags import PITCH_CLASSES, TAGS, parse_key  # noqa: F401 - re-exported
from midistruct.tokens.tokenizer import decode_ids

TARGETS = TAGS  # the probes' targets are the tags (midistruct.tags owns them)


# ---- features and labels -----------------------------------------------------------------

def baseline_features(notes: np.ndarray) -> np.ndarray:
    """(17,) the passage's pitch-class histogram (12) then its duration histogram (5), each summing
    to 1 (zeros without notes); see :mod:`midistruct.evaluation.statistics`."""
    return np.concatenate([pitch_class_histogram(notes), duration_histogram(notes)])


def piece_test_mask(groups: list[str], *, test_fraction: float = 0.25, seed: int = 0) -> np.ndarray:
    """(W,) bool, True for windows whose group falls in the probe-test part: a seeded hash of the
    group, so every window of a group lands on the same side, whatever else is in the list."""
    def unit(group: str) -> float:
        digest = hashlib.blake2b(f"{seed}:{group}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    cache: dict[str, bool] = {}
    return np.array([cache.setdefault(g, unit(g) < test_fraction) for g in groups], dtype=bool)


# ---- the probe -------------------------------------------------------------------------------

@dataclass
class Probe:
    """A fitted softmax regression: ``predict(x)`` (W, F) -> (W,) class indices."""

    mean: np.ndarray  # (F,)
    scale: np.ndarray  # (F,)
    weight: np.ndarray  # (F, K)
    bias: np.ndarray  # (K,)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.argmax(((x - self.mean) / self.scale) @ self.weight + self.bias, axis=1)


def fit_probe(x: np.ndarray, y: np.ndarray, *, l2: float = 1e-3, max_iter: int = 500) -> Probe:
    """Multinomial logistic regression of classes ``y`` (W,) in 0..K-1 on features ``x`` (W, F).

    Features are standardised with the training mean and std; the loss is the mean cross-entropy
    plus ``l2`` times the squared weights (not the bias), minimised by L-BFGS from zero weights:
    deterministic. (``l2=1e-3`` is about scikit-learn's default C=1 for 500 windows.)
    """
    from scipy.optimize import minimize

    x = np.asarray(x, dtype=np.float64)
    mean, scale = x.mean(0), x.std(0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    xs = (x - mean) / scale  # (W, F)
    n, f = xs.shape
    k = int(y.max()) + 1
    onehot = np.eye(k)[y]  # (W, K)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[: f * k].reshape(f, k), theta[f * k :]
        logits = xs @ w + b  # (W, K)
        logits -= logits.max(1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        residual = (np.exp(logp) - onehot) / n  # (W, K)
        value = -(onehot * logp).sum() / n + l2 * (w**2).sum()
        return value, np.concatenate([(xs.T @ residual + 2 * l2 * w).ravel(), residual.sum(0)])

    found = minimize(loss, np.zeros(f * k + k), jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
    return Probe(mean, scale, found.x[: f * k].reshape(f, k), found.x[f * k :])


def run_probes(features: dict[str, np.ndarray], labels: dict[str, list[str | None]], test: np.ndarray, *,
               min_windows: int = 5) -> dict:
    """Probe every target in ``labels`` ({target: (W,) label or None}) with every feature set in
    ``features`` ({name: (W, F)}), training on ``~test`` windows and scoring on ``test`` (W,).

    A target keeps the classes with at least ``min_windows`` windows on both sides (the others'
    windows are left out) and is skipped when fewer than 2 remain. Returns flat keys per target
    ``t``: ``t.windows``, ``t.train_windows``, ``t.test_windows``, ``t.classes``, ``t.labels``,
    ``t.majority_accuracy`` (always answering the training side's most frequent class) and
    ``t.<feature>_accuracy``; ``skipped.t``: why a target was skipped.
    """
    out: dict = {}
    for target, column in labels.items():
        keep, reason = usable_labels(np.array(column, dtype=object), test, min_windows)
        if reason:
            out[f"skipped.{target}"] = reason
            continue
        names = sorted({column[i] for i in np.flatnonzero(keep)})
        y = np.array([names.index(column[i]) for i in np.flatnonzero(keep)])
        train, held = ~test[keep], test[keep]
        out.update({f"{target}.windows": int(keep.sum()), f"{target}.train_windows": int(train.sum()),
                    f"{target}.test_windows": int(held.sum()), f"{target}.classes": len(names),
                    f"{target}.labels": names,
                    f"{target}.majority_accuracy": float(np.mean(y[held] == np.bincount(y[train]).argmax()))})
        for name, x in features.items():
            probe = fit_probe(x[keep][train], y[train])
            out[f"{target}.{name}_accuracy"] = float(np.mean(probe.predict(x[keep][held]) == y[held]))
    return out


def usable_labels(column: np.ndarray, test: np.ndarray, min_windows: int) -> tuple[np.ndarray, str]:
    """(W,) windows of the classes with ``min_windows`` on both sides, and a reason when < 2 classes."""
    labelled = np.array([v is not None for v in column])
    if not labelled.any():
        return labelled, "no window has this label (tag missing)"
    classes = {}
    for value in set(column[labelled]):
        here = column == value
        classes[value] = min(int((here & ~test).sum()), int((here & test).sum()))
    kept = [v for v, count in classes.items() if count >= min_windows]
    if len(kept) < 2:
        return labelled, (f"{len(kept)} of {len(classes)} class(es) have >= {min_windows} windows in both "
                          f"probe-train and probe-test; need 2")
    return np.isin(column, kept) & labelled, ""


# ---- on a checkpoint ------------------------------------------------------------------------

@dataclass
class ProbeWindows:
    """The windows a probe reads: their ids, each one's labels per target, and which are test windows."""

    ids: list[np.ndarray]
    labels: dict[str, list[str | None]]
    test: np.ndarray  # (W,) bool: the windows of the test pieces
    groups: list[str]
    pieces: list[str] = field(default_factory=list)  # (W,) each window's piece id

    def counts(self) -> dict[str, int]:
        return {"windows": len(self.ids), "pieces": len(set(self.groups)),
                "test_pieces": len(set(np.array(self.groups)[self.test])) if self.ids else 0}


def checked_targets(targets: list[str] | None) -> list[str]:
    """``targets`` (default: all of :data:`TARGETS`); a ``KeyError`` naming the valid ones for an unknown one."""
    targets = list(targets or TARGETS)
    for target in targets:
        if target not in TARGETS:
            raise KeyError(f"unknown probe target {target!r}; valid: {', '.join(TARGETS)}")
    return targets


def probe_windows(vocab, folder, *, split: str = "test", windows: int = 2000, targets: list[str] | None = None,
                  seed: int = 0) -> ProbeWindows:
    """A seeded random subset of ``windows`` windows of the shard folder's ``split``, labelled for ``targets``
    (default: all of :data:`TARGETS`; ``vocab`` reads each window's meter), its pieces split 75/25 by a hash of
    their group and ``seed`` (:func:`piece_test_mask`). :func:`probe_latents` and the scripts that probe other
    features of the same windows read them from here."""
    targets = checked_targets(targets)
    arrays = ShardSet(folder).split(split)
    pieces = arrays.pieces()
    pick = np.sort(np.random.default_rng(seed).permutation(arrays.n_windows)[:windows])
    ids = [arrays.window(int(i))[0] for i in pick]
    owners = [pieces[int(arrays.windows[i][2])] for i in pick]
    groups = [p.get("group") or p["id"] for p in owners]
    meters = [vocab.meter(w) for w in ids]
    labels = {t: [TARGETS[t](p.get("tags", {}), p["id"], m) for p, m in zip(owners, meters)] for t in targets}
    return ProbeWindows(ids, labels, piece_test_mask(groups, seed=seed), groups, [p["id"] for p in owners])


def probe_latents(ms, folder, *, split: str = "test", windows: int = 2000, targets: list[str] | None = None,
                  seed: int = 0) -> dict:
    """Probe ``ms``'s codes (posterior means) of :func:`probe_windows`'s windows against the baseline histogram
    (:func:`run_probes`): ``<target>.latent_accuracy`` (the segment code), ``<target>.bar_latent_accuracy`` (the
    mean of the window's bar codes) and ``<target>.histogram_accuracy`` (:func:`baseline_features`). A model that
    reads pieces in a canonical key (issue 14) encodes each window moved by its piece's shift, and its probes also
    read ``<target>.latent_shift_accuracy``: the segment code beside the shift (one-hot of its pitch class), the
    side variable that holds the key, and :func:`in_key_probes`: the codes alone against each transposable label
    moved by the shift, as the model reads the piece. Also returns ``windows``, ``pieces`` and ``test_pieces``.
    """
    targets = checked_targets(targets)
    ms.check_shards(folder)
    chosen = probe_windows(ms.vocab, folder, split=split, windows=windows, targets=targets, seed=seed)
    ids, out = chosen.ids, chosen.counts()
    if not ids:
        return out | {f"skipped.{t}": "no windows" for t in chosen.labels}
    z = ms.encode_windows(ids, shifts=ms.corpus_shifts(folder, split, chosen.pieces))
    real = np.arange(z.z_bar.shape[1])[None, :] < np.array(z.bars)[:, None]  # (W, NB) bars the window has
    features = {"latent": z.z_segment.numpy().astype(np.float64),
                "bar_latent": (z.z_bar.numpy() * real[..., None]).sum(1) / real.sum(1, keepdims=True),
                "histogram": np.stack([baseline_features(notes_of(decode_ids(ms.tokenizer, w))) for w in ids])}
    if not z.z_bar.shape[-1]:  # a segment-only model has no bar codes to probe
        del features["bar_latent"]
    if z.shifts:  # the key lies in the shift, not in the codes
        features["latent_shift"] = np.concatenate([features["latent"], np.eye(12)[np.mod(z.shifts, 12)]], axis=1)
        out |= in_key_probes(features, chosen.labels, chosen.test, np.asarray(z.shifts))
    return out | run_probes(features, chosen.labels, chosen.test)


def in_key_probes(features: dict[str, np.ndarray], labels: dict[str, list[str | None]], test: np.ndarray,
                  shifts: np.ndarray, *, min_windows: int = 5) -> dict:
    """Probes of a canonical-key model's codes as the model reads them: the codes hold the piece moved by its
    shift, so a transposable label (:data:`~midistruct.tags.TRANSPOSABLE_TAGS`: key, tonic, key signature) is
    probed moved by the same shift (a tune in G major, 1#, moved up 5 to C major is labelled C major, 0), from
    the codes alone. The shift is known, so a label named in the canonical key names the piece's own label by
    moving it back: the accuracy is the same. The pitch-class histogram of the moved notes is probed the same
    way as its baseline. ``features`` as :func:`probe_latents` builds them, ``shifts`` (W,) each window's.

    Scored on the windows :func:`run_probes` scores for the same target, so the numbers compare: the probe
    learns the moved labels with ``min_windows`` training windows, and a test window whose moved label is not
    one of them counts as a miss. Returns ``<target>.latent_in_key_accuracy``,
    ``<target>.histogram_in_key_accuracy`` and ``<target>.in_key_majority_accuracy`` (always the most frequent
    moved label: about the share of windows the key finder moved to the key their label names), or
    ``skipped.<target>.in_key``.
    """
    from midistruct.tags import TRANSPOSABLE_TAGS, transpose_tag

    histogram = features["histogram"]  # (W, 17): pitch classes (12), then durations
    rolled = np.stack([np.concatenate([np.roll(h[:12], int(s)), h[12:]]) for h, s in zip(histogram, shifts)])
    moved_features = {"latent_in_key": features["latent"], "histogram_in_key": rolled}
    out: dict = {}
    for target in (t for t in TRANSPOSABLE_TAGS if t in labels):
        keep, reason = usable_labels(np.array(labels[target], dtype=object), test, min_windows)
        if reason:
            out[f"skipped.{target}.in_key"] = reason
            continue
        moved = np.array([transpose_tag(target, v, int(s)) for v, s in zip(labels[target], shifts)], dtype=object)
        train, held = keep & ~test, keep & test
        counts: dict[str, int] = {}
        for value in moved[train]:
            if value is not None:
                counts[value] = counts.get(value, 0) + 1
        names = sorted(v for v, c in counts.items() if c >= min_windows)
        if not names:
            out[f"skipped.{target}.in_key"] = f"no moved label has >= {min_windows} training windows"
            continue
        majority = max(names, key=lambda v: counts[v])
        out[f"{target}.in_key_majority_accuracy"] = float(np.mean(moved[held] == majority))
        fit = train & np.isin(moved, names)
        y = np.array([names.index(v) for v in moved[fit]])
        for name, x in moved_features.items():
            if len(names) < 2:
                guess = np.full(int(held.sum()), majority, dtype=object)
            else:
                guess = np.array(names, dtype=object)[fit_probe(x[fit], y).predict(x[held])]
            out[f"{target}.{name}_accuracy"] = float(np.mean(guess == moved[held]))
    return out

"""A radio: pieces that go with a seed, ordered so that each step is a smooth transition.

Candidates are the seed's nearest pieces (:class:`~midistruct.library.search.Space`). The playlist is built
greedily: after piece A comes the candidate B with the best ``smoothness * transition(A, B) +
(1 - smoothness) * similarity(seed, B)``, where ``transition`` is the cosine between the mean bar vector of
A's last ``edge_bars`` bars and of B's first ones (end of one into the start of the next, not only whole-piece
likeness). With ``key_weight`` w > 0 and the pieces' keys known (``Library.keys``), each of the two is
``(1 - w) * cosine + w * closeness`` of the two pieces' key signatures on the circle of fifths
(:func:`midistruct.tokens.key.signature_closeness`), as a DJ mixes in compatible keys: the codes of a model that
reads a canonical key (issue 14) hold no key, so without it a tune in D may follow one in E flat. Every step
records the cosines and the key closeness apart.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from midistruct.library import KEY_WEIGHT, LibraryError
from midistruct.library.features import PieceCodes
from midistruct.library.search import Space
from midistruct.library.store import Library
from midistruct.tokens.key import signature_closeness


@dataclass
class Step:
    """One playlist entry: ``path`` relative to the library root; its cosine to the seed; the transition
    cosine from the entry before it (from the seed for the first); ``key`` the closeness of its key signature to
    that entry's (0 where a key is unknown); ``score`` what chose it."""

    path: str
    similarity: float
    transition: float
    score: float
    key: float = 0.0


def with_keys(cosines: np.ndarray, keys_a, keys_b, weight: float) -> np.ndarray:
    """``(1 - weight) * cosines + weight * closeness`` of key signatures ``keys_a`` and ``keys_b`` (broadcast
    against ``cosines``; :func:`midistruct.tokens.key.signature_closeness`, 0 where a key is unknown)."""
    return (1 - weight) * cosines + weight * signature_closeness(keys_a, keys_b)


def edges(bars: np.ndarray, edge_bars: int) -> tuple[np.ndarray, np.ndarray]:
    """(start, end): the mean bar vector of the first and of the last ``edge_bars`` bars of (NB, Zb)."""
    return bars[:edge_bars].mean(0), bars[-edge_bars:].mean(0)


def radio(library: Library, seed: PieceCodes, *, n: int = 12, smoothness: float = 0.5, edge_bars: int = 2,
          pool: int | None = None, seed_index: int | None = None, exclude: set[int] = frozenset(),
          space: Space | None = None, key_weight: float = KEY_WEIGHT) -> list[Step]:
    """Up to ``n`` steps after ``seed`` (a piece's codes); ``seed_index`` its row when it is in the library
    (left out of the playlist), ``exclude`` more rows to leave out. ``pool`` candidates (default
    ``max(4 n, 50)``). Likeness in ``space`` (default: the library's content vectors; a
    :class:`~midistruct.library.playlists.HybridSpace` to bring in playlists); ``key_weight`` of the key
    signatures' closeness against each cosine (see the module; no effect on a library made before keys)."""
    if not 0.0 <= smoothness <= 1.0:
        raise LibraryError(f"smoothness must be between 0 and 1, got {smoothness}")
    if not 0.0 <= key_weight <= 1.0:
        raise LibraryError(f"key_weight must be between 0 and 1, got {key_weight}")
    if n < 1 or edge_bars < 1:
        raise LibraryError(f"n and edge_bars must be at least 1, got n={n}, edge_bars={edge_bars}")
    pieces, bar_space = space or Space(library.vectors), Space(library.bars, rows=False)
    query = pieces.unit[seed_index] if seed_index is not None else pieces.project(seed.vector)
    exclude = set(exclude) | ({seed_index} if seed_index is not None else set())
    candidates = pieces.nearest_unit(query, k=pool or max(4 * n, 50), exclude=exclude)
    if not candidates:
        return []
    starts, ends = zip(*(edges(library.piece_bars(i), edge_bars) for i, _ in candidates))
    starts, ends = bar_space.project(np.stack(starts)), bar_space.project(np.stack(ends))  # (C, Zb) each
    similarity = np.array([s for _, s in candidates])  # (C,)
    keys = (library.keys[[i for i, _ in candidates]] if library.keys is not None
            else np.full(len(candidates), -1))  # (C,)
    w = key_weight if library.keys is not None else 0.0
    liking = with_keys(similarity, seed.key, keys, w)  # (C,)
    current_end, current_key = bar_space.project(edges(seed.bars, edge_bars)[1]), seed.key
    left, steps = list(range(len(candidates))), []
    while left and len(steps) < n:
        transition = starts[left] @ current_end  # (L,)
        score = smoothness * with_keys(transition, current_key, keys[left], w) + (1 - smoothness) * liking[left]
        best = int(np.argmax(score))
        c = left.pop(best)
        steps.append(Step(library.paths[candidates[c][0]], float(similarity[c]), float(transition[best]),
                          float(score[best]), float(signature_closeness(current_key, keys[c]))))
        current_end, current_key = ends[c], keys[c]
    return steps


def write_playlist(steps: list[Step], library: Library, output: str | Path, *, seed: str,
                   settings: dict) -> tuple[Path, Path]:
    """``<output>.m3u`` (absolute paths, playable as they are) and ``<output>.json`` (seed, settings, the
    scores of every step)."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    m3u, js = output.with_suffix(".m3u"), output.with_suffix(".json")
    root = Path(library.root)
    lines = ["#EXTM3U", *(f"#EXTINF:-1,{Path(s.path).stem} (transition {s.transition:.3f})\n{root / s.path}"
                          for s in steps)]
    m3u.write_text("\n".join(lines) + "\n")
    js.write_text(json.dumps({"seed": seed, "library": library.root, "model": library.model,
                              "features": library.features, **settings,
                              "playlist": [asdict(s) for s in steps]}, indent=2) + "\n")
    return m3u, js

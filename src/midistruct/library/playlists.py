"""Playlists as sentences (issue 17, item 4): item vectors learnt from a user's playlists with gensim's
Word2Vec (skip-gram: pieces that share playlists get near vectors; Grbovic et al. 2015, "prod2vec"), joined
with the content vectors so that a piece in no playlist still gets neighbours, in the Meta-Prod2Vec spirit
(Vasile et al. 2016: side information where co-occurrence is missing): a ridge map from content vectors to
item vectors, fitted on the pieces that have both, gives every other piece an item vector.

Skip-gram makes pieces alike when they share playlist neighbours (second-order): two pieces that only ever
appear together in two-piece playlists are not pulled together; playlists of three or more pieces are.
Only as good as the playlists: with none, or playlists unrelated to how pieces go together, it learns nothing
useful, and the content vectors alone are the better guide.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from midistruct.library import LibraryError
from midistruct.library.search import Space, unit
from midistruct.library.store import Library


class Playlists(NamedTuple):
    """``lists`` of library indices (one per playlist, order kept); ``unknown`` items no piece matched."""

    lists: list[list[int]]
    unknown: list[str]


def read_playlists(path: str | Path, library: Library) -> Playlists:
    """One playlist per line; items separated by commas, tabs or spaces... unless the line holds commas or
    tabs, then by those only (file names with spaces). An item is a library path, a file name, a file stem or
    a content hash. Blank lines and lines starting with # are skipped."""
    names = _names(library)
    lists, unknown = [], []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        sep = "," if "," in line else "\t" if "\t" in line else None
        items = [x.strip() for x in line.split(sep) if x.strip()]
        found = [names.get(x) for x in items]
        unknown += [x for x, i in zip(items, found) if i is None]
        kept = [i for i in found if i is not None]
        if len(kept) >= 2:
            lists.append(kept)
    if not lists:
        raise LibraryError(f"{path}: no playlist names two pieces of the library ({len(unknown)} unknown items)")
    return Playlists(lists, unknown)


def _names(library: Library) -> dict[str, int]:
    names: dict[str, int] = {}
    for i, (rel, digest) in enumerate(zip(library.paths, library.hashes)):
        for key in (Path(rel).stem, Path(rel).name, rel, digest):  # the most specific spelling wins
            names[key] = i
    return names


def item_vectors(playlists: list[list[int]], n: int, *, dim: int = 32, window: int = 5, epochs: int = 30,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(vectors (n, dim), seen (n,) bool): skip-gram vectors of the pieces that occur in ``playlists``
    (zeros elsewhere). One worker, so the same playlists and seed give the same vectors."""
    from gensim.models import Word2Vec

    sentences = [[str(i) for i in p] for p in playlists]
    # sample=0: no down-sampling of frequent items; it is meant for "the" in text, and with a few hundred
    # pieces every piece counts as frequent (on 80 two-group playlists of 30 pieces the default 1e-3 left
    # 5-nearest-neighbour group accuracy at 0.62, sample=0 gave 1.0; tests/test_library.py)
    model = Word2Vec(sentences, vector_size=dim, window=window, min_count=1, sg=1, negative=5, epochs=epochs,
                     sample=0, seed=seed, workers=1, hashfxn=_stable_hash)
    vectors, seen = np.zeros((n, dim), dtype=np.float32), np.zeros(n, dtype=bool)
    for key in model.wv.index_to_key:
        vectors[int(key)], seen[int(key)] = model.wv[key], True
    return vectors, seen


class HybridSpace(Space):
    """A :class:`~midistruct.library.search.Space` whose rows are ``[sqrt(1 - weight) * content ;
    sqrt(weight) * items]``, each part a unit vector, so a cosine is ``(1 - weight) * content cosine + weight
    * item cosine``. Pieces in no playlist (and queries from outside the library) get the item vector that a
    ridge map predicts from their content vector."""

    def __init__(self, library: Library, playlists: list[list[int]], *, weight: float = 0.5, ridge: float = 1.0,
                 **w2v):
        if not 0.0 <= weight <= 1.0:
            raise LibraryError(f"the playlist weight must be between 0 and 1, got {weight}")
        self.content, self.weight = Space(library.vectors), weight
        items, self.seen = item_vectors(playlists, len(library), **w2v)
        self.map = ridge_map(self.content.unit[self.seen], items[self.seen], ridge=ridge)  # (D, dim)
        items[~self.seen] = self.content.unit[~self.seen] @ self.map
        self.unit = self._join(self.content.unit, items)  # (N, D + dim)

    def project(self, x: np.ndarray) -> np.ndarray:
        content = self.content.project(x)
        return self._join(content, content @ self.map)

    def _join(self, content: np.ndarray, items: np.ndarray) -> np.ndarray:
        return np.concatenate([np.sqrt(1 - self.weight) * content, np.sqrt(self.weight) * unit(items)],
                              axis=-1).astype(np.float32)


def _stable_hash(text: str) -> int:
    """gensim seeds each word's first vector from ``hashfxn(word + seed)``; Python's ``hash`` of a str changes
    from one process to the next, this does not."""
    return zlib.crc32(text.encode())


def ridge_map(x: np.ndarray, y: np.ndarray, *, ridge: float) -> np.ndarray:
    """(D, dim) W minimising |x W - y|^2 + ridge |W|^2."""
    return np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ y)

"""A library's piece vectors on proxies of "what goes well together" (issue 17): Nottingham tune types by
leave-one-out k-nearest-neighbour accuracy, and POP909's alternative arrangements finding their song (MRR,
recall@1/10 of the 909 originals ranked for each of the 1,989 versions, by the pieces' mean vectors and by
matching their bars, ``bars_matched``). The codes of a model against the
pitch-class + duration histogram baseline, chance, and (Nottingham) the meter alone. Prints one JSON.

    python docs/scripts/library_eval.py --model folk-2bar --work /tmp/lib     # about 35 min on one core
    python docs/scripts/library_eval.py --speed --work /tmp/lib              # + radio time at 10,000 pieces
    python docs/scripts/library_eval.py --corpora pop909 --tracks melody    # POP909's melody track alone
    python docs/scripts/library_eval.py --corpora pop909 --time-signature 4/4 --downbeat auto   # bar lines estimated
    python docs/scripts/library_eval.py --corpora music21     # the music21 collections prepare converted
    python docs/scripts/library_eval.py --model RUN/best --corpora pop909 --blocks   # each block of a model with blocks

Libraries are embedded with ``midistruct.library`` exactly as ``midistruct embed`` does and kept in ``--work``
(``<corpus>-<features>.npz``), so a second run only measures. Nottingham is GPL-3: evaluation only.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

from midistruct.library import KEY_WEIGHT
from midistruct.library.features import code_features, histogram_features
from midistruct.library.radio import radio, with_keys
from midistruct.library.search import Space
from midistruct.library.store import Library, embed_folder, model_id

DATASETS = Path(__file__).resolve().parents[3] / "shared" / "datasets"


def library(corpus: str, folder: Path, features: str, args) -> Library:
    """The cached library of ``folder``, embedded (and saved as it goes) if it is not complete yet."""
    suffix = (f"-{args.tracks}" if args.tracks else "") + (f"-{args.time_signature.replace('/', '')}"
                                                            if args.time_signature else "") \
        + ("-downbeat" if args.downbeat else "")
    path = Path(args.work) / f"{corpus}-{features}{suffix}.npz"
    previous = Library.load(path) if path.exists() else None
    if features == "histogram":
        encode, model = histogram_features(tracks=args.tracks, time_signature=args.time_signature,
                                           downbeat=args.downbeat), "none"
    else:
        from midistruct.generation.pipeline import MidiStruct

        ms = MidiStruct.from_pretrained(args.model)
        encode = code_features(ms, tracks=args.tracks, time_signature=args.time_signature, downbeat=args.downbeat)
        model = model_id(args.model)
    lib = embed_folder(folder, encode, model=model, features=features, tracks=args.tracks,
                       time_signature=args.time_signature, downbeat=args.downbeat, previous=previous,
                       save=lambda partial: partial.save(path), progress=True)
    lib.save(path)
    return lib


def tune_type(path: str) -> str:
    """Nottingham's tune type from the file name; the reels books are one type, slip jigs are jigs."""
    kind = re.sub(r"\d+\.mid$", "", Path(path).name)
    return "reels" if kind.startswith("reels") else "jigs" if kind == "slip" else kind


def knn_accuracy(vectors: np.ndarray, labels: np.ndarray, k: int, *, groups: np.ndarray | None = None,
                 keys: np.ndarray | None = None, key_weight: float = 0.0) -> float:
    """Leave-one-out majority vote of the k most cosine-similar (ties: the nearest's label); with ``groups``,
    neighbours only from the piece's own group (its meter: does the vector know more than the meter?); with
    ``keys``, the cosines blended with the key signatures' closeness as the radio blends them."""
    space = Space(vectors)
    sims = space.unit @ space.unit.T
    if keys is not None:
        sims = with_keys(sims, keys[:, None], keys[None, :], key_weight)  # as the radio blends them
    if groups is not None:
        sims[groups[:, None] != groups[None, :]] = -np.inf
    np.fill_diagonal(sims, -np.inf)
    nearest = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    votes = [collections.Counter(labels[row]).most_common() for row in nearest]
    predicted = [v[0][0] if len(v) == 1 or v[0][1] > v[1][1] else labels[row[0]] for v, row in zip(votes, nearest)]
    return float(np.mean(np.array(predicted) == labels))


def meters_of(lib: Library) -> np.ndarray:
    import symusic

    return np.array([_meter(symusic.Score(str(Path(lib.root) / p))) for p in lib.paths])


def meter_baseline(meters: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of naming the most common tune type of the piece's meter (leave-one-out)."""
    hits = []
    for i in range(len(labels)):
        same = (meters == meters[i]) & (np.arange(len(labels)) != i)
        hits.append(collections.Counter(labels[same]).most_common(1)[0][0] == labels[i] if same.any() else False)
    return float(np.mean(hits))


def _meter(score) -> str:
    sig = score.time_signatures[0] if len(score.time_signatures) else None
    return f"{sig.numerator}/{sig.denominator}" if sig is not None else "4/4"


def continuation(lib: Library, pieces: list[int], *, edge: int = 2) -> dict:
    """The radio's transition on its own: each piece is cut at its middle bar m; the mean of bars m-edge..m
    (the end of the first half) ranks the starts (bars m..m+edge) of every piece's second half, by cosine in
    the space of all bar vectors. MRR and recall@10 of the piece's own second half."""
    from midistruct.library.search import Space as S

    kept = [i for i in pieces if len(lib.piece_bars(i)) >= 2 * edge + 2]
    ends, starts = [], []
    for i in kept:
        bars = lib.piece_bars(i)
        m = len(bars) // 2
        ends.append(bars[m - edge : m].mean(0))
        starts.append(bars[m : m + edge].mean(0))
    space = S(lib.bars)
    sims = space.project(np.stack(ends)) @ space.project(np.stack(starts)).T  # (P, P)
    ranks = 1 + (sims > np.diag(sims)[:, None]).sum(1)
    return {"mrr": float(np.mean(1 / ranks)), "recall@10": float(np.mean(ranks <= 10)), "pieces": len(kept)}


def labelled(corpus: str, folder: Path, features: list[str], args, label_of, *, playlists: bool = False) -> dict:
    """A corpus whose pieces carry a label (``label_of(path)``): k-NN label accuracy (also within a meter), the
    continuation proxy and, with ``playlists``, generated playlists; against the majority and the meter alone."""
    out = {}
    for f in features:
        lib = library(corpus, folder, f, args)
        labels = np.array([label_of(p) for p in lib.paths])
        meters = meters_of(lib)
        out[f] = {f"knn{k}": knn_accuracy(lib.vectors, labels, k) for k in (1, 5, 10)}
        out[f]["knn5_same_meter"] = knn_accuracy(lib.vectors, labels, 5, groups=meters)
        out[f]["continuation"] = continuation(lib, list(range(len(lib))))
        if lib.keys is not None:
            out[f]["with_keys"] = {"key_weight": KEY_WEIGHT, "knn5": knn_accuracy(lib.vectors, labels, 5, keys=lib.keys,
                                                                                  key_weight=KEY_WEIGHT)}
        if playlists:
            out[f]["generated_playlists"] = playlists_proxy(lib, labels)
        out[f]["pieces"] = len(lib)
    counts = collections.Counter(labels)
    out["majority"] = counts.most_common(1)[0][1] / len(labels)
    out["meter_alone"] = meter_baseline(meters, labels)
    out["labels"] = dict(counts.most_common())
    return out


def nottingham(features: list[str], args) -> dict:
    return labelled("nottingham", DATASETS / "nottingham" / "midi" / "melody", features, args, tune_type,
                    playlists=True)


def playlists_proxy(lib: Library, labels: np.ndarray, *, held_out: float = 0.2, n_lists: int = 500,
                    length: int = 8, seed: int = 0) -> dict:
    """Playlists generated from a known grouping (the tune types): ``n_lists`` playlists of ``length`` pieces
    of one type, drawn from all but a ``held_out`` share of the pieces. 5-NN type accuracy of the pieces in
    playlists and of those in none, by the content vectors alone and by the hybrid (weight 0.5)."""
    from midistruct.library.playlists import HybridSpace

    rng = np.random.default_rng(seed)
    none = rng.random(len(lib)) < held_out
    types = [t for t in np.unique(labels) if ((labels == t) & ~none).sum() >= length]
    share = np.array([((labels == t) & ~none).sum() for t in types], dtype=float)
    lists = []
    for _ in range(n_lists):  # a type as often as its pieces, so that most of them appear in some playlist
        t = types[rng.choice(len(types), p=share / share.sum())]
        lists.append(list(rng.choice(np.nonzero((labels == t) & ~none)[0], size=length, replace=False)))
    hybrid, content = HybridSpace(lib, lists, weight=0.5), Space(lib.vectors)

    def accuracy(space, rows):
        return float(np.mean([collections.Counter(labels[[j for j, _ in space.nearest_unit(space.unit[i], k=5,
                     exclude={i})]]).most_common(1)[0][0] == labels[i] for i in rows]))

    listed, unlisted = np.nonzero(hybrid.seen)[0], np.nonzero(~hybrid.seen)[0]
    return {"playlists": n_lists, "length": length, "pieces_in_playlists": len(listed),
            "pieces_in_none": len(unlisted),
            "content": {"in_playlists": accuracy(content, listed), "in_none": accuracy(content, unlisted)},
            "hybrid": {"in_playlists": accuracy(hybrid, listed), "in_none": accuracy(hybrid, unlisted)}}


def music21_collections(features: list[str], args) -> dict:
    """The music21 collections already converted to MIDI in midistruct's cache (``prepare`` of a music21 source
    writes them; here O'Neill's, Ryan's and Aird's, which folk-2bar was trained on: in-corpus), each tune's
    collection named by leave-one-out k-NN, against the meter alone."""
    import music21

    from midistruct.corpus.music21_corpus import default_cache_root

    folder = default_cache_root() / "music21" / music21.__version__
    return labelled("music21", folder, features, args, lambda path: path.split("/")[0])


def version_ranks(vectors: np.ndarray | list[np.ndarray], song: np.ndarray, originals: list[int],
                  versions: list[int], *, keys: np.ndarray | None = None, key_weight: float = 0.0) -> dict:
    """Each version ranks the originals by cosine similarity: MRR, recall@1, recall@10 of its own song. A list
    of vector sets (the same pieces, in the same order) ranks by the mean of their cosines; with ``keys``, blended
    with the key signatures' closeness as the radio blends them."""
    sets = vectors if isinstance(vectors, list) else [vectors]
    spaces = [Space(x[originals]) for x in sets]
    ranks = []
    for v in versions:
        sims = sum(sp.similarity(x[v]) for sp, x in zip(spaces, sets)) / len(sets)
        if keys is not None:
            sims = with_keys(sims, keys[v], keys[originals], key_weight)  # as the radio blends them
        order = np.argsort(-sims, kind="stable")
        ranks.append(int(np.nonzero(song[originals][order] == song[v])[0][0]) + 1)
    return rank_summary(ranks)


def rank_summary(ranks: list[int]) -> dict:
    """MRR, recall@1 and recall@10 of each query's rank (1 = first) of its own song."""
    ranks = np.array(ranks)
    return {"mrr": float(np.mean(1 / ranks)), "recall@1": float(np.mean(ranks <= 1)),
            "recall@10": float(np.mean(ranks <= 10)), "queries": len(ranks)}


def matched_version_ranks(lib: Library, song: np.ndarray, originals: list[int], versions: list[int]) -> dict:
    """Version retrieval by matching bars instead of comparing piece means: each version scores an original by
    the mean, over its bars, of the best cosine to any of the original's bars, averaged with the same from the
    original's side (a symmetric Chamfer similarity, in the library's bar space). MRR, recall@1/10 as
    :func:`version_ranks`."""
    space = Space(lib.bars, rows=False)
    bars = [space.project(lib.piece_bars(i).astype(np.float32)) for i in range(len(lib))]
    pool = np.concatenate([bars[o] for o in originals])  # (all originals' bars, D)
    starts = np.r_[0, np.cumsum([len(bars[o]) for o in originals])]
    ranks = []
    for v in versions:
        sims = bars[v] @ pool.T  # (version bars, originals' bars)
        forward = np.maximum.reduceat(sims, starts[:-1], axis=1).mean(0)  # each version bar's best, per original
        backward = np.add.reduceat(sims.max(0), starts[:-1]) / np.diff(starts)  # each original bar's best
        order = np.argsort(-(forward + backward) / 2, kind="stable")
        ranks.append(int(np.nonzero(song[originals][order] == song[v])[0][0]) + 1)
    return rank_summary(ranks)


def block_versions(lib: Library, song: np.ndarray, originals: list[int], versions: list[int], args) -> dict:
    """Version retrieval from each functional block of a model with blocks (issue 19): a piece's vector from that
    block's part of its bar codes alone (mean over bars; the content block with the segment code, which the
    content encoder writes too)."""
    from midistruct.model.checkpoint import checkpoint_config
    from midistruct.model.pretrained import resolve

    cfg = checkpoint_config(resolve(args.model))
    width = cfg.bar_code_dim
    out = {}
    for name, part in cfg.block_slices().items():
        vectors = np.stack([np.concatenate([lib.piece_bars(i)[:, part].mean(0),
                                            lib.vectors[i][width:] if name == "content" else []])
                            for i in range(len(lib))])
        out[name] = version_ranks(vectors, song, originals, versions)
    return out


def songs_and_versions(paths: list[str]) -> tuple[np.ndarray, list[int], list[int]]:
    """POP909 library paths -> (each path's song, the originals' rows, the rows of the versions whose original is
    there: a version whose original was skipped, too dense for the model, has no answer)."""
    song = np.array([p.split("/")[0] for p in paths])
    originals = [i for i, p in enumerate(paths) if "/versions/" not in p]
    have = set(song[originals])
    return song, originals, [i for i, p in enumerate(paths) if "/versions/" in p and song[i] in have]


def pop909(features: list[str], args) -> dict:
    folder = DATASETS / "pop909" / "songs"
    out, libs = {}, {}
    for f in features:
        lib = library("pop909", folder, f, args)
        song, originals, versions = songs_and_versions(lib.paths)
        out[f] = {**version_ranks(lib.vectors, song, originals, versions), "originals": len(originals),
                  "bars_matched": matched_version_ranks(lib, song, originals, versions),
                  "continuation": continuation(lib, originals)}
        if lib.keys is not None:
            out[f]["with_keys"] = {"key_weight": KEY_WEIGHT, **version_ranks(lib.vectors, song, originals, versions,
                                                                             keys=lib.keys, key_weight=KEY_WEIGHT)}
        if f == "codes" and args.blocks:
            out[f]["blocks"] = block_versions(lib, song, originals, versions, args)
        libs[f] = lib
    if {"codes", "histogram"} <= set(libs):  # ranked by the mean of the codes' and the histogram's cosines
        codes, hist = libs["codes"], libs["histogram"]
        row = {h: i for i, h in enumerate(hist.hashes)}
        both = [i for i, h in enumerate(codes.hashes) if h in row]
        song, originals, versions = songs_and_versions([codes.paths[i] for i in both])
        out["codes+histogram"] = version_ranks([codes.vectors[both], hist.vectors[[row[codes.hashes[i]] for i in both]]],
                                               song, originals, versions)
    n = out[features[0]]["originals"]
    out["chance"] = {"mrr": float(np.mean(1 / np.arange(1, n + 1))), "recall@1": 1 / n, "recall@10": 10 / n}
    return out


def speed(args) -> dict:
    """Seconds for one radio answer (12 pieces) from 10,000 pieces: the Nottingham codes tiled with noise."""
    lib = Library.load(Path(args.work) / "nottingham-codes.npz")
    rng = np.random.default_rng(0)
    reps = -(-10_000 // len(lib))
    pick = np.arange(10_000) % len(lib)
    big = Library(lib.root, lib.model, lib.features, [f"{i}.mid" for i in range(10_000)],
                  [str(i) for i in range(10_000)],
                  lib.vectors[pick] + rng.normal(scale=0.01, size=(10_000, lib.vectors.shape[1])).astype(np.float32),
                  np.concatenate([lib.piece_bars(i) for i in pick]),
                  np.cumsum([0, *(lib.offsets[i + 1] - lib.offsets[i] for i in pick)]))
    from midistruct.library.features import PieceCodes

    seed = PieceCodes(lib.vectors[0], lib.piece_bars(0))
    start = time.perf_counter()
    for _ in range(5):
        radio(big, seed, n=12)
    return {"pieces": len(big), "tiles": reps, "radio_seconds": (time.perf_counter() - start) / 5}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="folk-2bar")
    p.add_argument("--work", default="/tmp/lib", help="where the libraries are kept")
    p.add_argument("--features", default="codes,histogram")
    p.add_argument("--corpora", default="nottingham,pop909")
    p.add_argument("--speed", action="store_true")
    p.add_argument("--tracks", default=None, help="embed only the tracks whose name matches (e.g. melody)")
    p.add_argument("--time-signature", default=None, metavar="N/D",
                   help="read every file in this meter (4/4 for POP909, whose files declare 1/4 or 2/4)")
    p.add_argument("--downbeat", choices=["auto"], default=None,
                   help="auto: each file's bar lines where its notes say (midistruct.tokens.downbeat)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    p.add_argument("--blocks", action="store_true",
                   help="POP909 with a model with functional blocks: version retrieval from each block alone too")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    features = args.features.split(",")
    result = {"model": args.model}
    for corpus in args.corpora.split(","):
        result[corpus] = {"nottingham": nottingham, "pop909": pop909, "music21": music21_collections}[corpus](
            features, args)
    if args.speed:
        result["speed"] = speed(args)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

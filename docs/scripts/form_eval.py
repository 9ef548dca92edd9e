"""Song form against POP909's human phrase labels (issue 16): boundary F at the exact bar and within one bar,
and pairwise label F, for a boundary every 4 bars, the note features (each track's, or all tracks pooled),
a model's bar codes, by either boundary method, and the two annotators against each other. Prints one JSON
table.

    python docs/scripts/form_eval.py                                  # the eval songs, notes and tracks features
    python docs/scripts/form_eval.py --model runs/pop909-4bar/best    # + the model's codes
    python docs/scripts/form_eval.py --songs dev --set floor=0.6      # the songs settings are chosen on

Methods are FEATURES-SEGMENTER: features ``tracks``, ``notes`` or ``codes``; segmenter ``repetition`` (the
default of `midistruct form`), ``foote``, ``supervised`` (the learnt head, form_train_head.py), or the
alternatives ``kcpd`` and ``agglo``.

    python docs/scripts/form_eval.py --methods tracks-repetition,tracks-supervised    # unsupervised vs supervised

Songs: ``eval`` are the POP909 songs of the test and valid splits (the project's deterministic song split,
seed 0, 5 % + 5 %, or the model's own split settings with --model), none of which a model trained on; ``dev``
are the first 40 train-split songs, on which the settings were chosen; ``train`` the other train-split songs,
which the supervised head learns from (midistruct.form.evaluate.song_role splits them; the head was trained
under the default split, so with a --model of other split settings its eval songs may include head-training
songs). All keep only the songs whose labels align to the MIDI (midistruct.form.evaluate). Scores are each annotator's and their mean, averaged over songs.

Every choice was made on the dev songs (mean of the annotators, F exact / within one bar / pairwise):

    python docs/scripts/form_eval.py --songs dev                   # 2 s
        notes-foote        0.223 / 0.560 / 0.522    (4-bar grid 0.335 / 0.569 / 0.186)
        tracks-foote       0.428 / 0.655 / 0.619
        notes-repetition   0.591 / 0.732 / 0.639
        tracks-repetition  0.684 / 0.806 / 0.728    (the default; annotators 0.827 / 0.883 / 0.902)
    python docs/scripts/form_eval.py --songs dev --set pickup=0    # bars without the upbeat shift
        notes-foote 0.224 / 0.562 / 0.524, tracks-repetition 0.627 / 0.802 / 0.708

The repetition method's settings (floor 0.8, boundary_cost 0.1, off_period 0.3, min_bars 2, half 4, pickup
0.125, label_threshold 0.5) sit on a plateau: moving any one of them (floor 0.6 / 1.0, boundary_cost 0.05 /
0.2, off_period 0.15 / 0.5, min_bars 3 / 4, half 2 / 8, pickup 0.1875 / 0.25, label_threshold 0.4 / 0.6)
changes tracks-repetition's exact F by -0.07 to +0.003. Segmenters measured against it on tracks features
(one-off scripts; F exact / within one bar / pairwise): Serra et al.'s time-lag novelty 0.156 / 0.438 /
0.525; Foote's novelty picked by the same phrase dynamic program 0.456 / 0.637 / 0.612; the repetition
evidence without Foote's 0.632 / 0.745 / 0.688, or picked as peaks instead of by the program 0.629 / 0.804 /
0.693. Foote was chosen first over ruptures' kernel change points and librosa's agglomerative segmentation
(``pip install ruptures librosa``, which midistruct does not depend on; notes features, the first labels,
no upbeat shift):

    python docs/scripts/form_eval.py --songs dev --methods notes-foote,notes-agglo --set pickup=0
        notes-foote 0.224 / 0.562, notes-agglo (librosa) 0.208 / 0.381
    python docs/scripts/form_eval.py --songs dev --methods notes-kcpd --set threshold=0.1 --set min_bars=4 --set pickup=0
        notes-kcpd (ruptures, its best) 0.212 / 0.552
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, fields, replace
from pathlib import Path

import numpy as np

from midistruct.form import FormError, segment
from midistruct.form.analysis import FEATURES, Settings, form_of
from midistruct.form.bars import bar_grid, note_features
from midistruct.form.evaluate import Reference, aligned_score, reference, scores

DATASETS = Path(__file__).resolve().parents[3] / "shared" / "datasets"
DEV_SONGS = 40
SEGMENTERS = (*segment.METHODS, "kcpd", "agglo")


def song_list(which: str, split_cfg, *, pop909: Path, phrases: Path) -> tuple[list[Reference], dict[str, str]]:
    """The aligned references of the ``eval``, ``dev`` or ``train`` songs, and why the others were left out
    (song -> reason). ``dev``: the first DEV_SONGS aligned train-split songs; ``train``: the other aligned
    train-split songs (what the supervised head learns from, form_train_head.py)."""
    from midistruct.corpus.pop909 import read_index
    from midistruct.form.evaluate import song_role

    index = read_index(pop909)
    refs, skipped, seen = [], {}, 0
    for song in sorted(d.name for d in phrases.iterdir() if d.is_dir()):
        if song_role(song, split_cfg) != ("eval" if which == "eval" else "train"):
            continue
        try:
            ref = reference(song, pop909=pop909, phrases=phrases, index_row=index.get(song, {}))
        except FormError as err:
            skipped[song] = str(err).split(": ", 1)[1]
            continue
        seen += 1
        if which != "train" or seen > DEV_SONGS:
            refs.append(ref)
        if which == "dev" and len(refs) == DEV_SONGS:
            break
    return refs, skipped


def grid_form(n: int, every: int = 4) -> tuple[list[int], list[str]]:
    """A boundary every ``every`` bars, each section its own letter (the grid says nothing of repetition)."""
    bounds = list(range(0, n, every)) + [n]
    return bounds, [f"S{i}" for i in range(len(bounds) - 1)]


def features(method: str, score, ref: Reference, ms, settings: Settings) -> np.ndarray:
    """(NB, D) bar vectors of the aligned ``score`` for ``method``'s features, cut or padded to the labels' bars."""
    kind = method.partition("-")[0]
    if kind == "codes":
        from midistruct.form.codes import bar_codes

        x = bar_codes(ms, score, hop=settings.hop, segment_weight=settings.segment_weight, name=ref.song).x
    else:
        x = note_features(score, bar_grid(score, bars=ref.bars), per_track=kind == "tracks", pickup=settings.pickup)
    return np.pad(x[: ref.bars], ((0, max(ref.bars - len(x), 0)), (0, 0)))


def estimate(method: str, x: np.ndarray, grid: np.ndarray, settings: Settings) -> tuple[list[int], list[str]]:
    """Section bounds and letters of one song by ``method``, FEATURES[-SEGMENTER]: features ``tracks``, ``notes``
    or ``codes``; segmenter ``repetition``, ``foote`` or ``supervised`` (the shipped path; ``settings.method`` when none is
    named), ``kcpd`` (ruptures KernelCPD, cosine kernel, penalty ``settings.threshold``) or ``agglo``
    (librosa.segment.agglomerative, one section per 8 bars), the two alternatives measured against Foote;
    they need ``pip install ruptures librosa``, which midistruct does not depend on."""
    segmenter = method.partition("-")[2] or settings.method
    if segmenter in ("kcpd", "agglo"):
        ssm = segment.self_similarity(x, center=settings.center)
        bounds = _alternative(segmenter, x, settings)
        return bounds, segment.labels(ssm, bounds, threshold=settings.label_threshold)
    kind = method.partition("-")[0]
    form = form_of(x, grid, tpq=1, settings=replace(settings, method=segmenter, features=kind or settings.features))
    return form.boundaries, [s.label for s in form.sections]


def _alternative(segmenter: str, x: np.ndarray, settings: Settings) -> list[int]:
    n = len(x)
    centred = x - x.mean(axis=0) if settings.center else x
    if segmenter == "kcpd":
        import ruptures

        found = ruptures.KernelCPD(kernel="cosine", min_size=settings.min_bars).fit(centred).predict(
            pen=settings.threshold)
        return [0, *found[:-1], n]
    import librosa

    k = max(2, round(n / 8))  # POP909 phrases last 4 or 8 bars
    return sorted({0, *librosa.segment.agglomerative(centred.T, k).tolist(), n})


def evaluate(refs: list[Reference], methods: list[str], *, ms, settings: Settings, pop909: Path) -> dict:
    """Mean scores per method and annotator over ``refs``; "annotators": annotator 2 against annotator 1."""
    import symusic

    table: dict[str, list[dict]] = {m: [] for m in ["annotators", "grid4", *methods]}
    for ref in refs:
        score = aligned_score(symusic.Score(str(pop909 / ref.song / f"{ref.song}.mid")), ref)
        grid = np.arange(ref.bars + 1)
        forms = {"annotators": (list(ref.bounds[1]), list(ref.letters[1])), "grid4": grid_form(ref.bars)}
        vectors: dict[str, np.ndarray] = {}  # per kind of features: codes are encoded once per song
        for method in methods:
            kind = method.partition("-")[0]
            if kind not in vectors:
                vectors[kind] = features(kind, score, ref, ms, settings)
            forms[method] = estimate(method, vectors[kind], grid, settings)
        for method, (bounds, letters) in forms.items():
            annotators = [0] if method == "annotators" else [0, 1]
            table[method].append({k: scores(ref, bounds, letters, annotator=k) for k in annotators})
    return {m: _mean(rows) for m, rows in table.items()}


def _mean(rows: list[dict]) -> dict:
    out = {}
    for k, name in ((0, "annotator1"), (1, "annotator2")):
        if k in rows[0]:
            out[name] = {m: round(float(np.mean([r[k][m] for r in rows])), 3) for m in rows[0][k]}
    if len(out) == 2:
        out["mean"] = {m: round((out["annotator1"][m] + out["annotator2"][m]) / 2, 3) for m in out["annotator1"]}
    return out


def _settings(items: list[str]) -> Settings:
    """Settings from ``KEY=VALUE`` strings, each value read as the type of the field's default."""
    defaults, names = Settings(), [f.name for f in fields(Settings)]
    values = {}
    for item in items:
        key, _, text = item.partition("=")
        if key not in names:
            raise SystemExit(f"form_eval: unknown setting {key!r}; valid: {', '.join(names)}")
        default = getattr(defaults, key)
        if isinstance(default, bool):
            values[key] = text.lower() in ("1", "true", "yes")
        else:
            values[key] = text if default is None or isinstance(default, str) else type(default)(text)
    return replace(defaults, **values)


def _methods(text: str | None, *, with_codes: bool) -> list[str]:
    """The --methods list, checked: FEATURES[-SEGMENTER] each."""
    if not text:
        kinds = ["notes", "tracks"] + (["codes"] if with_codes else [])
        return [f"{kind}-{segmenter}" for segmenter in ("foote", "repetition") for kind in kinds]
    methods = text.split(",")
    for method in methods:
        kind, _, segmenter = method.partition("-")
        if kind not in FEATURES or (segmenter and segmenter not in SEGMENTERS):
            raise SystemExit(f"form_eval: unknown method {method!r}; FEATURES[-SEGMENTER], features of "
                             f"{', '.join(FEATURES)}, segmenter of {', '.join(SEGMENTERS)}")
        if kind == "codes" and not with_codes:
            raise SystemExit(f"form_eval: {method} needs --model")
    return methods


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", type=Path, default=DATASETS, help=f"default: {DATASETS}")
    parser.add_argument("--songs", choices=["eval", "dev", "train"], default="eval",
                        help="eval: test + valid split songs; dev: the first 40 train-split songs (settings are "
                             "chosen on them); train: the other train-split songs (the supervised head learns on them)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many songs")
    parser.add_argument("--model", default=None, help="checkpoint or shipped model name: adds the codes features")
    parser.add_argument("--methods", default=None,
                        help="comma-separated FEATURES[-SEGMENTER], features of tracks, notes, codes (needs --model), "
                             f"segmenter of {', '.join(SEGMENTERS)} (default: the --set method); default: "
                             "notes-foote, tracks-foote, notes-repetition, tracks-repetition, and the two codes-* "
                             "with --model")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="a midistruct.form.analysis.Settings field, e.g. threshold=0.2 (repeatable)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    ms, split_cfg = None, None
    if args.model:
        from midistruct.generation.pipeline import MidiStruct

        ms = MidiStruct.from_pretrained(args.model)
        split_cfg = ms.cfg.splits
    if split_cfg is None:
        from midistruct.config import SplitConfig

        split_cfg = SplitConfig()
    settings = _settings(args.settings)
    methods = _methods(args.methods, with_codes=ms is not None)
    pop909, phrases = args.datasets / "pop909" / "songs", args.datasets / "pop909-phrases" / "songs"
    refs, skipped = song_list(args.songs, split_cfg, pop909=pop909, phrases=phrases)
    refs = refs[: args.limit]
    results = evaluate(refs, methods, ms=ms, settings=settings, pop909=pop909)
    print(json.dumps({"songs": args.songs, "n_songs": len(refs), "song_ids": [r.song for r in refs],
                      "left_out": skipped, "model": args.model, "settings": asdict(settings),
                      "results": results, "seconds": round(time.perf_counter() - started, 1)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A 2-D map of a library (issue 17): coordinates, tags per piece, a PNG and one self-contained HTML page.

Pieces are placed from their vectors in the library's own cosine geometry (:class:`~.search.Space`) by one
of :data:`METHODS`; t-SNE is the default because it kept the most neighbours on 1,034 Nottingham tunes
(``python docs/scripts/map_projection.py``, README "A library and a radio"). Each piece gets tags that the
map can be coloured by: ``folder`` (first path component), ``meter`` (first time signature), ``key``
(Krumhansl-Schmuckler on the duration-weighted pitch classes) and any columns of a user's CSV.

Shapes: N pieces, D piece-vector width.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from midistruct.corpus import SourceError
from midistruct.corpus.folder import read_tags_csv
from midistruct.library import LibraryError
from midistruct.library.features import score_pitch_classes
from midistruct.library.search import Space
from midistruct.library.store import Library
from midistruct.tokens.key import key_of_histogram
from midistruct.tokens.validate import Skip, load_score

METHODS = ("tsne", "umap", "pca")
MAX_EMBEDDED = 2000  # pieces whose MIDI bytes go into the page; a larger library links to the files
UNKNOWN = "unknown"
OTHER = "other"
# Tableau 20, the strong colours first; values beyond the 20 most frequent share OTHER_COLOUR
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
           "#7f7f7f", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#9edae5",
           "#dbdb8d", "#393b79")
OTHER_COLOUR = "#cccccc"

# Krumhansl & Kessler (1982) key profiles, tonic first; used by Krumhansl-Schmuckler key finding
MAJOR_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MINOR_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")


# --------------------------------------------------------------------------- coordinates


def project(vectors: np.ndarray, *, method: str = "tsne", seed: int = 0, threads: int = 1) -> np.ndarray:
    """(N, D) piece vectors -> (N, 2) map coordinates, the same for the same ``seed`` and ``threads``.

    The vectors are first put in the library's cosine geometry (:class:`Space`), where search works. Fewer
    than 4 pieces are too few for t-SNE or UMAP and are placed by PCA. ``threads`` caps the native thread
    pools: with more than one, t-SNE's sums run in another order and the map can differ in its last digits."""
    if method not in METHODS:
        raise LibraryError(f"unknown map method {method!r}; choose one of {', '.join(METHODS)}")
    x = Space(vectors).unit.astype(np.float64)  # (N, D)
    fit = {"pca": lambda: _pca, "tsne": _tsne, "umap": _umap}["pca" if len(x) < 4 else method]()
    from threadpoolctl import threadpool_limits

    # after the import: a thread pool loaded inside the block is not limited (2 OpenMP threads on 2 busy
    # cores made t-SNE 13x slower, 44 s instead of 3.3 s on 1,034 pieces)
    with threadpool_limits(limits=threads):
        return fit(x, seed=seed).astype(np.float32)


def _pca(x: np.ndarray, *, seed: int) -> np.ndarray:
    """The first two principal components; each axis's sign fixed so its largest loading is positive."""
    centred = x - x.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)  # vt (min(N, D), D)
    axes = vt[:2] * np.sign(vt[:2][np.arange(len(vt[:2])), np.abs(vt[:2]).argmax(1)])[:, None]
    out = centred @ axes.T  # (N, <=2)
    return np.pad(out, ((0, 0), (0, 2 - out.shape[1])))


def _tsne():
    """scikit-learn's Barnes-Hut t-SNE from the PCA layout; perplexity 30, less for small libraries."""
    from sklearn.manifold import TSNE

    def fit(x: np.ndarray, *, seed: int) -> np.ndarray:
        perplexity = float(min(30.0, (len(x) - 1) / 3))
        return TSNE(n_components=2, perplexity=perplexity, init=_pca(x, seed=seed), random_state=seed,
                    n_jobs=1).fit_transform(x)

    return fit


def _umap():
    """umap-learn with its defaults (15 neighbours, min_dist 0.1); an optional install (pip install umap-learn)."""
    try:
        import umap
    except ImportError:
        raise LibraryError("--method umap needs umap-learn: pip install umap-learn") from None

    def fit(x: np.ndarray, *, seed: int) -> np.ndarray:
        return umap.UMAP(n_neighbors=min(15, len(x) - 1), random_state=seed, n_jobs=1).fit_transform(x)

    return fit


def neighbours_kept(high: np.ndarray, low: np.ndarray, *, k: int = 10) -> float:
    """Mean fraction of each piece's ``k`` nearest neighbours in ``high`` (N, D), by cosine in its
    :class:`Space`, that are among its ``k`` nearest in the map ``low`` (N, 2), by Euclidean distance."""
    unit = Space(high).unit
    near_high = _knn(-(unit @ unit.T), k)
    near_low = _knn(((low[:, None, :] - low[None, :, :]) ** 2).sum(-1), k)
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(near_high, near_low)]))


def _knn(distance: np.ndarray, k: int) -> np.ndarray:
    """(N, k) indices of each row's ``k`` smallest distances, itself left out."""
    distance = distance.astype(np.float64).copy()
    np.fill_diagonal(distance, np.inf)
    return np.argsort(distance, axis=1, kind="stable")[:, :k]


# --------------------------------------------------------------------------- tags


def estimate_key(pitch_classes: np.ndarray) -> str:
    """``"D major"``: the Krumhansl-Schmuckler key of a (12,) duration-weighted pitch-class histogram, the
    key profile (24 rotations) that correlates best with it; :data:`UNKNOWN` for an empty histogram."""
    key = key_of_histogram(pitch_classes) if np.any(pitch_classes > 0) else None
    if key is None:
        return UNKNOWN
    tonic, mode = key
    return f"{(MAJOR_NAMES if mode == 'major' else MINOR_NAMES)[tonic]} {mode}"


def file_tags(path: Path) -> dict[str, str]:
    """``meter`` (the first time signature; 4/4, the MIDI default, without one) and ``key`` of a MIDI file;
    both :data:`UNKNOWN` when it cannot be read."""
    try:
        score = load_score(path).to("quarter")
    except Skip:
        return {"meter": UNKNOWN, "key": UNKNOWN}
    sig = score.time_signatures[0] if len(score.time_signatures) else None
    return {"meter": f"{sig.numerator}/{sig.denominator}" if sig is not None else "4/4",
            "key": estimate_key(score_pitch_classes(score))}


def read_tags(path: str | Path) -> dict[str, dict[str, str]]:
    """A user's CSV: a ``path`` column (relative to the library root) and any other columns, as
    ``{path: {column: value}}``; empty cells are left out. The format of a folder source's ``tags`` file
    (:func:`midistruct.corpus.folder.read_tags_csv`); its errors become :class:`LibraryError`."""
    try:
        return read_tags_csv(path)
    except SourceError as err:
        raise LibraryError(str(err)) from None


def piece_tags(library: Library, *, user: dict[str, dict[str, str]] | None = None) -> list[dict[str, str]]:
    """One dict per piece: ``folder``, ``meter``, ``key`` and the user's columns (which win on a clash);
    a user column that a piece lacks reads :data:`UNKNOWN`."""
    user = user or {}
    columns = sorted({c for row in user.values() for c in row})
    tags = []
    for rel in library.paths:
        parts = Path(rel).parts
        row = {"folder": parts[0] if len(parts) > 1 else ".", **file_tags(Path(library.root) / rel)}
        row.update({c: UNKNOWN for c in columns if c not in row})
        row.update(user.get(rel, {}))
        tags.append(row)
    return tags


def colours(values: list[str]) -> dict[str, str]:
    """value -> colour: the most frequent values (ties by name) take :data:`PALETTE` in order, the rest and
    :data:`UNKNOWN` share a grey."""
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    ranked = sorted((v for v in counts if v != UNKNOWN), key=lambda v: (-counts[v], v))
    return {v: PALETTE[i] if i < len(PALETTE) else OTHER_COLOUR for i, v in enumerate(ranked)} | (
        {UNKNOWN: OTHER_COLOUR} if UNKNOWN in counts else {})


# --------------------------------------------------------------------------- outputs


def default_colour_tag(record: dict) -> str:
    """The first of ``record``'s tags whose value is not the same for every piece (a library without
    subfolders is not coloured by folder), else the first tag."""
    varied = [t for t in record["tags"] if len({p["tags"].get(t) for p in record["points"]}) > 1]
    return (varied or record["tags"])[0]


def map_record(library: Library, xy: np.ndarray, tags: list[dict[str, str]], *, method: str) -> dict:
    """What map.json holds: the library's provenance, the tag names and one point (path, x, y, tags) per piece."""
    names = sorted({k for row in tags for k in row}, key=lambda k: (k not in ("folder", "meter", "key"), k))
    points = [{"path": p, "x": round(float(x), 4), "y": round(float(y), 4), "tags": t}
              for p, (x, y), t in zip(library.paths, xy, tags)]
    return {"method": method, "root": library.root, "model": library.model, "features": library.features,
            "tags": names, "points": points}


def write_png(record: dict, path: str | Path, *, color_by: str) -> Path:
    """A scatter plot of ``record``'s points coloured by the tag ``color_by``, with a legend (the 20 most
    frequent values; the rest grey). A bare ``Figure`` on the Agg canvas, as in midistruct.render: no pyplot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    values = [p["tags"].get(color_by, UNKNOWN) for p in record["points"]]
    palette = colours(values)
    xy = np.array([[p["x"], p["y"]] for p in record["points"]]).reshape(-1, 2)  # (N, 2)
    fig = Figure(figsize=(9, 7), dpi=110, layout="tight")
    ax = fig.add_subplot()
    ax.scatter(xy[:, 0], xy[:, 1], c=[palette[v] for v in values], s=14, linewidths=0)
    shown = [v for v, c in palette.items() if c != OTHER_COLOUR]
    handles = [Line2D([], [], marker="o", ls="", color=palette[v], label=v) for v in shown]
    if len(shown) < len(palette):
        handles.append(Line2D([], [], marker="o", ls="", color=OTHER_COLOUR, label=f"{OTHER} / {UNKNOWN}"))
    ax.legend(handles=handles, title=color_by, fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set(xticks=[], yticks=[], title=f"{len(values)} pieces, {record['method']}, coloured by {color_by}")
    FigureCanvasAgg(fig).print_png(str(path))
    return Path(path)


def write_html(record: dict, path: str | Path, *, color_by: str, max_embedded: int = MAX_EMBEDDED) -> Path:
    """One self-contained page (inline SVG and script, nothing fetched): hover shows a piece's path and tags,
    a select box recolours by any tag, a click downloads the piece's MIDI, embedded as a data: URI when the
    library has at most ``max_embedded`` pieces, else linked as a file:// URI to the library's folder."""
    embed = len(record["points"]) <= max_embedded
    root = Path(record["root"])
    data = {"tags": record["tags"], "colorBy": color_by, "method": record["method"],
            "colours": {t: colours([p["tags"].get(t, UNKNOWN) for p in record["points"]]) for t in record["tags"]},
            "points": [{**p, "href": _midi_href(root / p["path"], embed=embed)} for p in record["points"]]}
    note = ("" if embed else f"{len(record['points'])} pieces: over {max_embedded}, so a click opens the file in "
            f"{html.escape(str(root))} instead of a copy inside this page.")
    script = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")  # no "</script>" inside the data
    page = (PAGE.replace("__TITLE__", html.escape(f"{Path(record['root']).name}: {len(data['points'])} pieces"))
            .replace("__NOTE__", note).replace("__DATA__", script))
    Path(path).write_text(page, encoding="utf-8")
    return Path(path)


def _midi_href(path: Path, *, embed: bool) -> str:
    """A data: URI of the file's bytes, or its file:// URI (also when it cannot be read)."""
    if embed and path.is_file():
        return "data:audio/midi;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    return path.resolve().as_uri()


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body{font:14px system-ui,sans-serif;margin:16px;color:#222}
#map{border:1px solid #ddd;background:#fff;max-width:100%;height:auto}
circle{cursor:pointer;stroke:#fff;stroke-width:.5}
circle:hover{stroke:#000;stroke-width:1.5}
#tip{position:fixed;pointer-events:none;background:#fffffe;border:1px solid #888;padding:6px 8px;
     font-size:12px;display:none;white-space:pre;box-shadow:0 1px 4px #0003}
#legend span{display:inline-block;margin:2px 10px 2px 0}
#legend i{display:inline-block;width:10px;height:10px;border-radius:5px;margin-right:4px}
</style></head><body>
<h1 style="font-size:18px">__TITLE__</h1>
<p>Colour by <select id="tag"></select> &middot; hover a point for the piece, click it to download its MIDI.
<span id="note">__NOTE__</span></p>
<svg id="map" width="900" height="640" viewBox="0 0 900 640"></svg>
<div id="legend"></div><div id="tip"></div>
<script>
const DATA = __DATA__;
const svg = document.getElementById('map'), tip = document.getElementById('tip');
const select = document.getElementById('tag'), legend = document.getElementById('legend');
const W = 900, H = 640, PAD = 20;

function scale(values, size) {
  const lo = Math.min(...values), hi = Math.max(...values), span = hi - lo || 1;
  return v => PAD + (v - lo) / span * (size - 2 * PAD);
}

function tooltip(i) {
  const p = DATA.points[i];
  return [p.path, ...DATA.tags.map(t => t + ': ' + (p.tags[t] ?? 'unknown'))].join('\\n');
}

function download(i) {
  const p = DATA.points[i], a = document.createElement('a');
  a.href = p.href; a.download = p.path.split('/').pop(); document.body.appendChild(a); a.click(); a.remove();
}

function recolour(tag) {
  const palette = DATA.colours[tag], counts = {};
  svg.querySelectorAll('circle').forEach(c => {
    const v = DATA.points[+c.dataset.i].tags[tag] ?? 'unknown';
    c.setAttribute('fill', palette[v] || '#cccccc');
    counts[v] = (counts[v] || 0) + 1;
  });
  legend.textContent = '';
  Object.keys(palette).forEach(v => {
    const s = document.createElement('span'), dot = document.createElement('i');
    dot.style.background = palette[v]; s.append(dot, v + ' (' + counts[v] + ')'); legend.append(s);
  });
  select.value = tag;
}

function draw() {
  const x = scale(DATA.points.map(p => p.x), W), y = scale(DATA.points.map(p => -p.y), H);
  // inline SVG parsed by the HTML parser: no namespace URL needed
  svg.innerHTML = DATA.points.map((p, i) =>
    `<circle cx="${x(p.x).toFixed(1)}" cy="${y(-p.y).toFixed(1)}" r="4" data-i="${i}"></circle>`).join('');
  const index = e => e.target.dataset ? e.target.dataset.i : undefined;
  svg.addEventListener('mouseover', e => {
    if (index(e) === undefined) return;
    tip.textContent = tooltip(+index(e)); tip.style.display = 'block';
    tip.style.left = (e.clientX + 12) + 'px'; tip.style.top = (e.clientY + 12) + 'px';
  });
  svg.addEventListener('mouseout', () => { tip.style.display = 'none'; });
  svg.addEventListener('click', e => { if (index(e) !== undefined) download(+index(e)); });
  DATA.tags.forEach(t => select.add(new Option(t, t)));
  select.addEventListener('change', () => recolour(select.value));
  recolour(DATA.colorBy);
}
draw();
</script></body></html>
"""

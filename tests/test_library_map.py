"""A 2-D map of a library (issue 17, midistruct.library.map): tags (meter, key, folder, a user's CSV), the
projection, the PNG, the self-contained HTML page, the CLI, the page in headless Chromium, and real
Nottingham tunes whose map keeps most of their neighbours."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
import symusic

from midistruct.cli import main
from midistruct.library import LibraryError
from midistruct.library.features import histogram_features
from midistruct.library.map import (estimate_key, file_tags, map_record, neighbours_kept, piece_tags, project,
                                    read_tags, write_html, write_png)
from midistruct.library.store import Library, embed_folder

TPQ = 480
C_MAJOR = [60, 64, 67, 72, 62, 65, 69, 71, 60, 67]  # tonic triad weighted, every scale note
A_MINOR = [57, 60, 64, 69, 59, 62, 65, 67, 57, 64]


def tune(pitches, *, meter=(4, 4), bars=4) -> symusic.Score:
    """One note per beat cycling through ``pitches``; ``meter`` None writes no time signature."""
    score = symusic.Score(TPQ)
    if meter is not None:
        score.time_signatures.append(symusic.TimeSignature(0, *meter))
    track = symusic.Track(name="melody", program=0)
    beats = bars * (meter or (4, 4))[0]
    for i in range(beats):
        track.notes.append(symusic.Note(i * TPQ, TPQ, pitches[i % len(pitches)], 80))
    score.tracks.append(track)
    return score


@pytest.fixture
def folder(tmp_path) -> Path:
    """12 tunes: major/ C major in 4/4, minor/ A minor in 3/4, each with a few transpositions of octave."""
    root = tmp_path / "tunes"
    for sub, pitches, meter in (("major", C_MAJOR, (4, 4)), ("minor", A_MINOR, (3, 4))):
        (root / sub).mkdir(parents=True)
        for i in range(6):
            shifted = [p + 12 * (i % 2) for p in pitches[i:] + pitches[:i]]
            tune(shifted, meter=meter, bars=4 + i).dump_midi(str(root / sub / f"{sub}{i}.mid"))
    return root


@pytest.fixture
def library(folder) -> Library:
    return embed_folder(folder, histogram_features(), model="none", features="histogram", progress=False)


# --------------------------------------------------------------------------- tags


def test_key_estimate_tells_c_major_from_a_minor():
    def pcs(pitches):
        return np.bincount(np.array(pitches) % 12, minlength=12).astype(float)

    assert estimate_key(pcs(C_MAJOR)) == "C major"
    assert estimate_key(pcs(A_MINOR)) == "A minor"
    assert estimate_key(pcs([62, 66, 69, 74, 64, 67, 71, 73])) == "D major"
    assert estimate_key(np.zeros(12)) == "unknown"


def test_file_tags_read_meter_and_key(tmp_path):
    for name, pitches, meter in (("c.mid", C_MAJOR, (4, 4)), ("a.mid", A_MINOR, (6, 8)), ("n.mid", C_MAJOR, None)):
        tune(pitches, meter=meter).dump_midi(str(tmp_path / name))
    assert file_tags(tmp_path / "c.mid") == {"meter": "4/4", "key": "C major"}
    assert file_tags(tmp_path / "a.mid") == {"meter": "6/8", "key": "A minor"}
    assert file_tags(tmp_path / "n.mid")["meter"] == "4/4"  # no time signature: the MIDI default
    (tmp_path / "bad.mid").write_text("not midi")
    assert file_tags(tmp_path / "bad.mid") == {"meter": "unknown", "key": "unknown"}


def test_piece_tags_join_folder_file_and_user_tags(library, tmp_path):
    csv = tmp_path / "tags.csv"
    csv.write_text("path,artist,meter\nmajor/major0.mid,Ann,\nminor/minor1.mid,Bo,9/8\nelsewhere.mid,Cy,\n")
    tags = piece_tags(library, user=read_tags(csv))
    by_path = dict(zip(library.paths, tags))
    assert by_path["major/major0.mid"] == {"folder": "major", "meter": "4/4", "key": "C major", "artist": "Ann"}
    assert by_path["minor/minor1.mid"] == {"folder": "minor", "meter": "9/8", "key": "A minor", "artist": "Bo"}
    assert by_path["major/major2.mid"]["artist"] == "unknown"  # a column a piece lacks
    (tmp_path / "bad.csv").write_text("file,artist\na.mid,Ann\n")
    with pytest.raises(LibraryError, match="'path' column"):
        read_tags(tmp_path / "bad.csv")


# --------------------------------------------------------------------------- coordinates


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_projection_is_two_columns_and_repeats_with_its_seed(method):
    x = np.random.default_rng(0).normal(size=(40, 16)).astype(np.float32)
    a, b = project(x, method=method, seed=3, threads=1), project(x, method=method, seed=3, threads=1)
    assert a.shape == (40, 2) and np.isfinite(a).all() and np.array_equal(a, b)
    assert project(x[:2], method=method).shape == (2, 2)  # too few for t-SNE: placed by PCA
    with pytest.raises(LibraryError, match="tsne, umap, pca"):
        project(x, method="mds")


def test_neighbours_kept_is_one_for_a_faithful_map_and_low_for_a_random_one():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 2)) + 5.0  # far from the origin: cosine order follows the angle
    angle = np.arctan2(x[:, 1] - x[:, 1].mean(), x[:, 0] - x[:, 0].mean())
    assert neighbours_kept(x, np.stack([np.cos(angle), np.sin(angle)], 1), k=5) == pytest.approx(1.0)
    assert neighbours_kept(x, rng.normal(size=(60, 2)), k=5) < 0.3


# --------------------------------------------------------------------------- outputs


@pytest.fixture
def record(library) -> dict:
    xy = project(library.vectors, method="pca")
    return map_record(library, xy, piece_tags(library), method="pca")


def page_data(page: Path) -> dict:
    """The JSON the page's script holds."""
    return json.loads(re.search(r"const DATA = (.*);\n", page.read_text()).group(1).replace("<\\/", "</"))


def test_png_is_written(record, tmp_path):
    png = write_png(record, tmp_path / "map.png", color_by="key")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_html_is_self_contained_with_every_piece_and_its_midi(record, library, tmp_path):
    page = write_html(record, tmp_path / "map.html", color_by="meter")
    text = page.read_text()
    assert not re.search(r"https?://", text) and "<script src" not in text and "<link" not in text
    data = page_data(page)
    assert [p["path"] for p in data["points"]] == library.paths and data["colorBy"] == "meter"
    for point in data["points"]:
        head, payload = point["href"].split(",", 1)
        assert head == "data:audio/midi;base64"
        assert base64.b64decode(payload) == (Path(library.root) / point["path"]).read_bytes()
    assert set(data["colours"]["key"]) == {"C major", "A minor"}


def test_a_library_over_the_cap_links_to_its_files(record, library, tmp_path):
    data = page_data(write_html(record, tmp_path / "map.html", color_by="folder", max_embedded=5))
    assert all(p["href"].startswith("file://") for p in data["points"])
    assert Path(data["points"][0]["href"][len("file://"):]) == Path(library.root) / library.paths[0]
    assert "over 5" in (tmp_path / "map.html").read_text()


# --------------------------------------------------------------------------- CLI


def test_cli_offers_the_projection_methods_the_module_has():
    from midistruct.cli import build_parser
    from midistruct.library.map import METHODS

    (sub,) = [a for a in build_parser()._actions if a.dest == "command"]
    method = next(a for a in sub.choices["map"]._actions if a.dest == "method")
    assert tuple(method.choices) == METHODS and method.default == METHODS[0]


def test_cli_maps_a_folder_and_then_its_library(folder, tmp_path, capsys):
    out = tmp_path / "map"
    (tmp_path / "tags.csv").write_text("path,artist\nmajor/major0.mid,Ann\n")
    argv = ["map", str(folder), "-o", str(out), "--color-by", "artist", "--tags", str(tmp_path / "tags.csv"),
            "--quiet", "--threads", "1"]
    assert main(argv) == 0
    assert {p.name for p in out.iterdir()} == {"map.png", "map.html", "map.json", "library.npz"}
    record = json.loads((out / "map.json").read_text())
    assert record["method"] == "tsne" and record["features"] == "histogram" and len(record["points"]) == 12
    assert record["tags"] == ["folder", "key", "meter", "artist"]
    assert {p["tags"]["meter"] for p in record["points"]} == {"4/4", "3/4"}
    again = tmp_path / "again"
    assert main(["map", str(out / "library.npz"), "-o", str(again), "--method", "pca"]) == 0
    assert len(json.loads((again / "map.json").read_text())["points"]) == 12
    capsys.readouterr()
    assert main(["map", str(out / "library.npz"), "-o", str(again), "--color-by", "mood"]) == 2
    assert "--color-by mood: no such tag; choose one of folder, key, meter" in capsys.readouterr().err
    assert main(["map", "CK", str(out / "library.npz"), "-o", str(again)]) == 2
    assert "leave out CK" in capsys.readouterr().err


# --------------------------------------------------------------------------- a real browser

PROBE = """(() => {
  const circles = [...document.querySelectorAll('#map circle')];
  const select = document.getElementById('tag');
  const fills = {};
  for (const tag of [...select.options].map(o => o.value)) {
    select.value = tag;
    select.dispatchEvent(new Event('change'));
    fills[tag] = circles.map(c => c.getAttribute('fill'));
  }
  const clicked = [];  // a click builds a download link and clicks it: record instead of downloading
  HTMLAnchorElement.prototype.click = function () { clicked.push([this.href.slice(0, 23), this.download]); };
  circles[2].dispatchEvent(new MouseEvent('click', {bubbles: true}));
  const box = circles[2].getBoundingClientRect();
  return {points: circles.length, fills, tooltip: tooltip(2), clicked,
          at: [box.x + box.width / 2, box.y + box.height / 2], legend: document.getElementById('legend').textContent};
})()"""
TIP = "(() => { const t = document.getElementById('tip'); return [getComputedStyle(t).display, t.textContent]; })()"


def run_in_page(page: Path, profile: Path) -> dict:
    """Open ``page`` in headless Chromium, run :data:`PROBE`, then move the mouse onto the third point and
    read the tooltip (:data:`TIP`)."""
    from test_browser import BROWSER, DevTools

    browser = DevTools(BROWSER, profile)
    try:
        session = browser.open(page)

        def evaluate(expression: str):
            result = browser.call("Runtime.evaluate", session, expression=expression, returnByValue=True)
            assert "exceptionDetails" not in result, result["exceptionDetails"]
            return result["result"]["value"]

        found = evaluate(PROBE)
        x, y = found["at"]
        browser.call("Input.dispatchMouseEvent", session, type="mouseMoved", x=x, y=y)
        found["tip"] = evaluate(TIP)
    finally:
        browser.close()
    return found


def test_the_page_draws_hovers_recolours_and_downloads_in_chromium(library, tmp_path):
    from test_browser import BROWSER, BROWSERS

    if BROWSER is None:
        pytest.skip(f"no headless browser found ({', '.join(BROWSERS)}); install one, e.g. apt-get install chromium")
    user = {library.paths[0]: {"artist": "Ann"}, library.paths[7]: {"artist": "Bo"}}
    record = map_record(library, project(library.vectors, method="pca"), piece_tags(library, user=user),
                        method="pca")
    found = run_in_page(write_html(record, tmp_path / "map.html", color_by="folder"), tmp_path / "profile")
    assert found["points"] == len(library) == 12
    assert list(found["fills"]) == ["folder", "key", "meter", "artist"]
    assert found["tooltip"].splitlines() == [library.paths[2], "folder: major", "key: C major", "meter: 4/4",
                                             "artist: unknown"]
    assert found["tip"] == ["block", found["tooltip"]]  # the mouse over the point shows the same text
    folder, meter, artist = (found["fills"][t] for t in ("folder", "meter", "artist"))
    assert len(set(folder)) == 2 and len(set(artist)) == 3  # major/minor; Ann, Bo and the unknown grey
    assert folder != meter and artist != folder  # 3/4 ranks before 4/4: the two groups swap colours
    assert found["legend"] == "Ann (1)Bo (1)unknown (10)"  # the legend follows the last tag chosen
    assert found["clicked"] == [["data:audio/midi;base64,", Path(library.paths[2]).name]]


# --------------------------------------------------------------------------- real music


@pytest.mark.shared_data
def test_a_map_of_jigs_and_reels_keeps_most_neighbours(shared_datasets, tmp_path):
    """20 Nottingham jigs and 20 reels, histogram features: the t-SNE map keeps most of each tune's 10
    nearest neighbours (a random map keeps about 10/39; this one 0.685 when written), and its meter tags tell
    the two types apart."""
    from test_library import jigs_and_reels

    folder = jigs_and_reels(shared_datasets, tmp_path)
    assert main(["map", str(folder), "-o", str(tmp_path / "map"), "--quiet", "--color-by", "meter"]) == 0
    library = Library.load(tmp_path / "map" / "library.npz")
    record = json.loads((tmp_path / "map" / "map.json").read_text())
    xy = np.array([[p["x"], p["y"]] for p in record["points"]])
    kept = neighbours_kept(library.vectors, xy, k=10)
    print(f"40 Nottingham tunes, histogram features, t-SNE: {kept:.3f} of the 10 nearest neighbours kept")
    assert kept > 0.5, kept
    meters = {p["path"][:4]: set() for p in record["points"]}
    for p in record["points"]:
        meters[p["path"][:4]].add(p["tags"]["meter"])
    assert meters["jigs"] == {"6/8"} and "6/8" not in meters["reel"]  # reels: 4/4, a few 2/4


def test_the_default_colour_is_the_first_tag_that_varies():
    from midistruct.library.map import default_colour_tag

    points = [{"tags": {"folder": ".", "key": "D major", "meter": m}} for m in ("6/8", "4/4")]
    assert default_colour_tag({"tags": ["folder", "key", "meter"], "points": points}) == "meter"
    assert default_colour_tag({"tags": ["folder", "key"], "points": points}) == "folder"  # nothing varies

"""The music21 corpus source: one conversion into a cache, stable ids, tags, failures, ABC fixes."""

from __future__ import annotations

from pathlib import Path

import pytest

from midistruct.corpus import SourceError, iter_pieces
from midistruct.corpus import music21_corpus as m21

pytest.importorskip("music21")
symusic = pytest.importorskip("symusic")

COLLECTIONS = ["bach", "essen", "airdsAirs"]

# Bars 2, 4 and 6 are longer than the 2/4 meter: music21's ABC reader splits them and puts one
# shared 2/4 TimeSignature object into each following measure, which then fails to write as MIDI.
ALTERNATING_METER_ABC = """X:1
T:Alternating
M:2/4
L:1/4
K:C
C D | E F G | C D | E F G | C D | E F G | C2 |]
"""


def options(cache: Path, **extra) -> dict:
    return {"collections": COLLECTIONS, "limit_per_collection": 3, "cache_dir": str(cache),
            "workers": 1, "progress": False, **extra}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("m21cache")


@pytest.fixture(scope="module")
def pieces(cache):
    return list(m21.iter_music21(options(cache)))


def test_each_collection_yields_its_limit(pieces):
    for name in COLLECTIONS:
        assert len([p for p in pieces if p.tags["collection"] == name]) == 3


def test_midi_lands_in_the_cache_and_loads_with_notes(pieces, cache):
    for piece in pieces:
        assert piece.path.is_relative_to(cache / "music21")
        score = symusic.Score(str(piece.path))
        assert score.ticks_per_quarter == m21.TICKS_PER_QUARTER
        assert sum(len(track.notes) for track in score.tracks) > 0


def test_tags(pieces):
    for piece in pieces:
        assert {"collection", "title", "key", "meter"} <= set(piece.tags), piece.id
        assert all(isinstance(v, str) and v for v in piece.tags.values())
    bach = [p for p in pieces if p.tags["collection"] == "bach"]
    essen = [p for p in pieces if p.tags["collection"] == "essen"]
    assert all(p.tags["composer"] == "J.S. Bach" for p in bach)
    assert all(p.tags["region"] == "europe/germany/altdeu" for p in essen)
    assert any(p.tags["key"] == "G major" and p.tags["meter"] == "4/2" for p in essen)


def test_multi_tune_abc_file_yields_distinct_tunes(pieces):
    airds = [p for p in pieces if p.tags["collection"] == "airdsAirs"]
    assert [p.id for p in airds] == [f"music21/airdsAirs/book1/{n}" for n in (1, 2, 3)]
    assert len({p.tags["title"] for p in airds}) == 3
    melodies = [symusic.Score(str(p.path)).tracks[0].notes for p in airds]
    assert len({tuple((n.time, n.pitch) for n in notes) for notes in melodies}) == 3


def test_second_call_reads_the_index_and_converts_nothing(pieces, cache, monkeypatch):
    files = sorted((cache / "music21").rglob("*"))
    mtimes = {f: f.stat().st_mtime_ns for f in files}

    def fail(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(m21, "convert_job", fail)
    again = list(iter_pieces({"kind": "music21", **options(cache)}))
    assert [(p.id, p.path, p.group, p.tags) for p in again] == [
        (p.id, p.path, p.group, p.tags) for p in pieces]
    assert sorted((cache / "music21").rglob("*")) == files
    assert {f: f.stat().st_mtime_ns for f in files} == mtimes


def test_failures_are_listed_not_raised(pieces, cache):
    opts = options(cache, max_notes=10, collections=["airdsAirs"])
    assert list(m21.iter_music21(opts)) == []
    failures = m21.conversion_failures(opts)
    assert sorted(failures) == [f"music21/airdsAirs/book1/{n}" for n in (1, 2, 3)]
    assert all("cap 10" in reason for reason in failures.values())
    assert m21.conversion_failures(options(cache)) == {}


def test_parallel_conversion_matches_serial(pieces, tmp_path):
    opts = options(tmp_path, workers=2, collections=["essen"])
    parallel = [(p.id, p.group, p.tags) for p in m21.iter_music21(opts)]
    assert parallel == [(p.id, p.group, p.tags) for p in pieces if p.tags["collection"] == "essen"]


def test_limit_caps_the_total_across_collections(pieces, cache):
    limited = list(m21.iter_music21(options(cache, limit=4)))
    assert [p.id for p in limited] == [p.id for p in pieces[:4]]
    with pytest.raises(SourceError, match="limit must be a non-negative integer"):
        list(m21.iter_music21(options(cache, limit=-1)))


def test_unknown_collection_lists_valid_names():
    with pytest.raises(SourceError, match="valid: bach, essen, oneills1850"):
        list(m21.iter_music21({"collections": ["bach", "mozart"]}))


def test_unknown_option_is_refused():
    with pytest.raises(SourceError, match="collections"):
        list(m21.iter_music21({"collection": ["bach"]}))


def test_unshared_time_signatures_make_alternating_meter_writable(tmp_path):
    from music21 import converter, meter

    score = converter.parse(ALTERNATING_METER_ABC, format="abc")
    m21.unshare_time_signatures(score)
    signatures = list(score.recurse().getElementsByClass(meter.TimeSignature))
    assert len({id(ts) for ts in signatures}) == len(signatures) > 1
    notes, _ = m21.write_midi(score, tmp_path / "alt.mid")
    assert notes == 16


def test_convert_job_applies_the_meter_fix(tmp_path):
    job = m21.Job("alt", "test.abc", ALTERNATING_METER_ABC, {"collection": "test"})
    job_id, entry = m21.convert_job(job, out_dir=str(tmp_path), caps=_caps())
    assert job_id == "alt" and "error" not in entry, entry
    assert entry["fixes"] == ["unshared-time-signatures"]
    assert entry["tags"]["meter"] == "2/4" and entry["tags"]["key"] == "C major"
    assert m21.count_notes(tmp_path / "alt.mid") == entry["notes"] == 16


def _abc(body: str) -> str:
    return f"X:1\nT:t\nM:2/4\nL:1/4\nK:C\n{body}\n"


@pytest.mark.parametrize(("body", "expected"), [
    # music21 reads :|: as an end repeat and a dotted bar, and repeats every :| from the start
    ("C D | E F :|: G A | B c :|: d e | f g :|", "CDEF CDEF GABC GABC DEFG DEFG"),
    ("C D | E F :| G A | B c :| d e | f g :|", "CDEF CDEF GABC GABC DEFG DEFG"),
    ("|: C D |1 E F :|2 F E || G A | B c |1 d e :|2 e d |]", "CDEF CDFE GABC DE GABC ED"),
    ("|: C D | C D | C D || E F :| G A |]", "CDCDCDEF CDCDCDEF GA"),  # || inside |: ... :|
])
def test_implied_repeat_starts_expand_sections_once(body, expected):
    from music21 import converter

    score = converter.parse(_abc(body), format="abc")
    m21.add_implied_repeat_starts(score)
    names = "".join(n.name for n in score.expandRepeats().recurse().notes)
    assert names == expected.replace(" ", "")


def test_malformed_repeats_are_removed(tmp_path):
    job = m21.Job("open", "test.abc", _abc("C D | E F | C D | E F :|\n|: G A | B c | G A | B c |]"))
    _, entry = m21.convert_job(job, out_dir=str(tmp_path), caps=_caps())
    assert entry["fixes"] == ["removed-repeats"] and entry["notes"] == 16


def test_convert_job_records_a_timeout(tmp_path):
    job = m21.Job("alt", "test.abc", ALTERNATING_METER_ABC, {})
    _, entry = m21.convert_job(job, out_dir=str(tmp_path), caps=_caps(time_cap_s=1e-4))
    assert entry["error"].startswith("timeout") and not (tmp_path / "alt.mid").exists()


def test_split_abc_and_fields():
    text = "% header\nX:1\nT:First Reel\nR:reel\nK:G\nGABc|\n\nX: 7\nT:Second\nK:D\nDEF|\n"
    tunes = m21.split_abc(text)
    assert [n for n, _ in tunes] == [1, 7]
    fields = m21.abc_fields(tunes[0][1])
    assert fields == {"X": ["1"], "T": ["First Reel"], "R": ["reel"], "K": ["G"]}


@pytest.mark.parametrize(("rhythm", "title", "expected"), [
    ("double jig", "", "jig"), ("slipjig", "", "slip jig"), ("", "Acacia -- Reel", "reel"),
    ("", "Quick Step. 25th Regt.", "march"), ("", "The Enchanted Valley", ""),
])
def test_tune_type(rhythm, title, expected):
    assert m21.tune_type(rhythm, title) == expected


def test_title_key_ignores_articles_case_and_tune_type():
    assert m21.title_key("Swaggering Jig, The") == "swaggering"
    assert m21.title_key("The swaggering jig") == "swaggering"


def test_groups_join_pieces_sharing_a_key_transitively():
    keys = {"a": ("title:x",), "b": ("oneills:5", "title:x"), "c": ("oneills:5",), "d": ()}
    jobs = {name: m21.Job(name, "", keys=k) for name, k in keys.items()}
    groups = m21.assign_groups(jobs, "folk")
    assert groups["a"] == groups["b"] == groups["c"] == "music21/folk/oneills:5"
    assert groups["d"] == "music21/d"


def _caps(**extra) -> dict:
    return {"time_cap_s": 20.0, "max_notes": 20_000, "ticks_per_quarter": 480, **extra}


def test_time_cap_keeps_an_outer_timer():
    import signal

    previous = signal.signal(signal.SIGALRM, lambda *args: None)
    try:
        signal.setitimer(signal.ITIMER_REAL, 50.0)
        with m21.time_cap(5.0):
            pass
        left, _ = signal.setitimer(signal.ITIMER_REAL, 0)
        assert 45.0 < left <= 50.0
    finally:
        signal.signal(signal.SIGALRM, previous)
